//! The real grpcurl against a real server: reflection lists every service, health answers,
//! and the README walk-through runs exactly as written.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// PATH with the repo's tool folder first, where scripts/ensure-tools.sh puts grpcurl.
fn tool_path() -> String {
    let tools = workspace_root().join("tools/bin");
    format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn grpcurl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("grpcurl")
        .args(args)
        .env("PATH", tool_path())
        .output()
        .expect("grpcurl must be installed: run scripts/ensure-tools.sh (or scripts/test.sh)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_six_services_and_health() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let addr = server.addr.to_string();
    let (ok, out, err) = grpcurl(&["-plaintext", &addr, "list"]);
    assert!(ok, "{err}");
    for service in [
        "temporal_state.v1.EntityTypeService",
        "temporal_state.v1.InstanceService",
        "temporal_state.v1.EventService",
        "temporal_state.v1.QueryService",
        "temporal_state.v1.AnalyticsService",
        "temporal_state.v1.AuthService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            out.lines().any(|l| l.trim() == service),
            "{service} missing from:\n{out}"
        );
    }

    // Descriptions resolve through imports (Struct, Timestamp) too.
    let (ok, out, err) = grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "temporal_state.v1.ApplyEventRequest",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("google.protobuf.Struct payload"), "{out}");
    assert!(out.contains("optional int64 expected_version"), "{out}");

    let (ok, out, err) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service": "temporal_state.v1.EventService"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("SERVING") && !out.contains("NOT_SERVING"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("walkthrough start marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("walkthrough end marker");
    let block = &readme[start..end];
    let script = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.rsplit_once("```"))
        .map(|(body, _)| body)
        .expect("a ```sh block between the markers");

    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("ADDR", server.addr.to_string())
        .env("PATH", tool_path())
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walkthrough failed:\n{stdout}\n{stderr}"
    );

    assert!(
        stdout.contains("temporal_state.v1.EventService"),
        "{stdout}"
    );
    assert!(stdout.contains(r#""name": "player_profile""#), "{stdout}");
    assert!(
        stdout.contains(r#""eventType": "ScoreIncreased""#),
        "{stdout}"
    );
    assert!(stdout.contains(r#""version": "2""#), "{stdout}");
    assert!(stdout.contains(r#""op": "replace""#), "{stdout}");
    // The last call is refused by the schema, naming the path.
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("/score"),
        "{stderr}"
    );
    // The BadRequest details decode through reflection.
    assert!(stderr.contains("fieldViolations"), "{stderr}");

    // What the walk-through left behind, checked directly.
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT version, state FROM instances WHERE external_id = 'player-001'",
            &[],
        )
        .await
        .unwrap();
    let version: i64 = row.get(0);
    let state: serde_json::Value = row.get(1);
    assert_eq!(version, 2);
    assert_eq!(state["score"], json!(150));
    assert_eq!(state["level"], json!(2));

    // The declared ScoreIncreased: previewed, applied once with its recorded change, refused by
    // its guard.
    assert!(stdout.contains(r#""dryRun": true"#), "{stdout}");
    assert!(stdout.contains(r#""change": {"#), "{stdout}");
    assert!(
        stderr.contains("FailedPrecondition") && stderr.contains("at most 1000 points per event"),
        "{stderr}"
    );
    let row = client
        .query_one(
            "SELECT version, state FROM instances WHERE external_id = 'player-002'",
            &[],
        )
        .await
        .unwrap();
    let version: i64 = row.get(0);
    let state: serde_json::Value = row.get(1);
    assert_eq!(version, 2, "the preview and the refusal stored nothing");
    assert_eq!(state["score"], json!(120));
    assert_eq!(state["level"], json!(2));
}
