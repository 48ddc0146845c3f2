//! examples/player_profile.rs against a real server, twice: on a fresh database, then again on
//! what the first run left (it must reuse, not fail).

mod common;

#[allow(dead_code)]
#[path = "../examples/player_profile.rs"]
mod player_profile;

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
    server.stop().await;
}
