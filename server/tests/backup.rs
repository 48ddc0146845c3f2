//! Backups of the embedded store (issue 16, item 7): `temporal-state-server backup <path>` run
//! against a live server under write load, then the copy restored as deploy/README.md says (the
//! file as DATA_DIR/temporal-state.db, no -wal/-shm) and served: every instance's history is
//! 1..N without a gap, the state at each version is the fold of the events up to it, the
//! current state is the last of them, and each history is a prefix of what the live store
//! went on to record (one consistent moment, not a torn copy).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::binary::{Binary, SERVER};
use common::procs::free_port;
use common::{Clients, TestServer, js, json};
use temporal_state_proto::v1 as pb;

/// Every event of an instance, in version order, page by page.
async fn history(c: &mut Clients, id: &str) -> Vec<pb::Event> {
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .queries
            .get_history(pb::GetHistoryRequest {
                instance_id: id.into(),
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("history")
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        token = page.next_page_token;
    }
}

fn run_backup(data_dir: &std::path::Path, to: &std::path::Path) -> std::process::Output {
    Command::new(SERVER)
        .env_clear()
        .env("DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        .arg("backup")
        .arg(to)
        .output()
        .expect("run the backup command")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_write_load_restores_to_a_consistent_store() {
    let live = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut server = Binary::spawn(
        live.path(),
        live.path(),
        "live",
        &[
            ("DATA_DIR", live.path().to_str().unwrap()),
            ("GRPC_ADDR", &grpc),
            ("SNAPSHOT_INTERVAL", "7"),
        ],
    );
    let mut c = server.wait_ready(&grpc).await;
    c.create_type("counter", json!({"type": "object"})).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            c.create_instance("counter", &format!("c-{i}"), json!({"n": 0, "tags": {}}))
                .await
                .id,
        );
    }
    // Writers: single events and batches on every instance until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for id in ids.clone() {
        let mut c = c.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let patch = |k: u64| {
                    json!({"n": k, "tags": {format!("t{}", k % 5): k, format!("t{}", (k + 2) % 5): null}})
                };
                if n.is_multiple_of(4) {
                    c.events
                        .apply_events(pb::ApplyEventsRequest {
                            instance_id: id.clone(),
                            events: (0..3)
                                .map(|i| pb::EventInput {
                                    event_type: "Tick".into(),
                                    payload: Some(common::st(patch(n * 10 + i))),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .await
                        .expect("batch");
                } else {
                    c.apply(&id, "Tick", patch(n)).await.expect("event");
                }
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let backups = tempfile::tempdir().unwrap();
    let copy = backups.path().join("tse.db");
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking({
        let (dir, copy) = (live.path().to_path_buf(), copy.clone());
        move || run_backup(&dir, &copy)
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "backup failed:\n{log}");
    assert!(log.contains("backup written"), "{log}");
    // A second backup to the same path is refused: a backup never overwrites.
    let again = run_backup(live.path(), &copy);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut rounds = 0;
    for w in writers {
        rounds += w.await.unwrap();
    }
    // What the live store recorded in the end.
    let mut live_histories = Vec::new();
    for id in &ids {
        live_histories.push(history(&mut c, id).await);
    }
    server.terminate();

    // Restore: the copy as the database file of an empty DATA_DIR, and a server on it.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&copy, restored.path().join("temporal-state.db")).unwrap();
    let server = TestServer::start_embedded(restored.path(), &["--snapshot-interval", "7"]).await;
    let mut r = server.clients().await;
    let mut restored_events = 0;
    let mut cut_before_the_end = 0;
    for (id, live) in ids.iter().zip(&live_histories) {
        let events = history(&mut r, id).await;
        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            (1..=events.len() as i64).collect::<Vec<_>>(),
            "{id}: versions 1..N without a gap"
        );
        // A prefix of the live history: the same events, recorded the same way.
        assert!(events.len() <= live.len());
        for (b, l) in events.iter().zip(live) {
            assert_eq!(
                (&b.id, b.version, js(&b.payload)),
                (&l.id, l.version, js(&l.payload)),
                "{id}: the copy's events are the live store's"
            );
        }
        if events.len() < live.len() {
            cut_before_the_end += 1;
        }
        // The state at each version is the fold of the events up to it.
        let mut state = serde_json::Value::Null;
        for e in &events {
            if e.version == 1 {
                state = js(&e.payload);
            } else {
                json_patch::merge(&mut state, &js(&e.payload));
            }
            let at = r
                .queries
                .get_state_at_version(pb::GetStateAtVersionRequest {
                    instance_id: id.clone(),
                    version: e.version,
                })
                .await
                .expect("state at version")
                .into_inner();
            assert_eq!(js(&at.state), state, "{id}: state at version {}", e.version);
        }
        let current = r
            .instances
            .get_instance(pb::GetInstanceRequest {
                instance_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .instance
            .unwrap();
        assert_eq!(
            current.version,
            events.len() as i64,
            "{id}: current version"
        );
        assert_eq!(js(&current.state), state, "{id}: current state");
        restored_events += events.len();
    }
    assert!(
        cut_before_the_end > 0,
        "the writers went on after the backup, so the copy must be behind the live store"
    );
    assert!(
        restored_events > ids.len(),
        "the copy holds events written under load"
    );
    // The restored store takes writes again, from where the copy ends.
    let next = r.apply(&ids[0], "Tick", json!({"n": -1})).await.unwrap();
    let next = next.event.unwrap().version;
    assert_eq!(next, history(&mut r, &ids[0]).await.len() as i64);
    println!(
        "backup: {took:?} under load of 4 writers ({rounds} rounds); {restored_events} events \
         restored, {} in the live store at the end",
        live_histories.iter().map(Vec::len).sum::<usize>()
    );
    server.stop().await;
}
