//! examples/player_profile.rs against a real server, twice: on a fresh database, then again on
//! what the first run left (it must reuse, not fail); then the README's five-line example
//! (examples/readme.rs, which must hold exactly the README's lines).

mod common;

#[allow(dead_code)]
#[path = "../examples/player_profile.rs"]
mod player_profile;

#[allow(dead_code)]
#[path = "../examples/readme.rs"]
mod readme;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walks_through_and_can_run_again() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let client = server.client().await;
    player_profile::walkthrough(&client).await.unwrap();
    player_profile::walkthrough(&client).await.unwrap();
    let history = client
        .get_current_state("player_profile", "player-001", &Default::default())
        .await
        .unwrap();
    // Created once, one ScoreIncreased per run (each at the version it saw).
    assert_eq!(history.version, 3);

    readme::readme(&server.endpoint()).await.unwrap();
    let after = client
        .get_current_state("player_profile", "player-001", &Default::default())
        .await
        .unwrap();
    assert_eq!(
        (after.version, after.state["score"].as_i64()),
        (4, Some(150))
    );
    server.stop().await;
}

#[test]
fn the_readme_shows_the_lines_of_examples_readme() {
    let shown = readme_example("### Rust", "rust", "127.0.0.1:50051".parse().unwrap())
        .replace("\"http://127.0.0.1:50051\"", "endpoint");
    let example =
        std::fs::read_to_string(repo_root().join("client-sdk/rust/examples/readme.rs")).unwrap();
    let lines: Vec<&str> = example.lines().map(str::trim).collect();
    for line in shown.lines().map(str::trim) {
        assert!(
            lines.contains(&line),
            "README line {line:?} is not in examples/readme.rs: keep the two the same"
        );
    }
}
