//! What only the embedded store has, beside the store contract (`store.rs`): a directory, a file,
//! and reopening them.

use std::path::Path;

use crate::common::json;
use rusqlite::StatementStatus;
use temporal_state_server::adapters::embedded::{DB_FILE, EmbeddedError, EmbeddedStore, sql};
use temporal_state_server::domain::State;
use temporal_state_server::ports::{
    AppendOutcome, Catalog, EventStore, HistoryReader, StoreError, TypeKey,
};
use uuid::Uuid;

use super::fixture::*;

fn open_err(dir: &Path) -> EmbeddedError {
    match EmbeddedStore::open(dir, 100) {
        Ok(_) => panic!("opening {} should fail", dir.display()),
        Err(e) => e,
    }
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (t, inst, events, snapshot_and_tail) = {
        let store = EmbeddedStore::open(dir.path(), 2).unwrap();
        assert_eq!(
            store.applied_migrations(),
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        assert_eq!(store.path(), dir.path().join(DB_FILE));
        let t = new_type(&store, "player").await;
        let (inst, _) = instance(&store, t.id, "p-1", json!({"n": 0})).await;
        appended(
            &store,
            inst.id,
            vec![
                keyed("k1", "N", json!({"n": 1})),
                keyed("k2", "N", json!({"n": 2})),
            ],
        )
        .await;
        let inst = store.get_instance(inst.id).await.unwrap();
        let events = all_events(&store, inst.id).await;
        let sat = store.snapshot_and_tail(inst.id, 3).await.unwrap();
        (t, inst, events, sat)
    };
    // Reopened, as after a restart: everything is there, and the keys are still recorded.
    let store = EmbeddedStore::open(dir.path(), 2).unwrap();
    assert!(store.applied_migrations().is_empty());
    assert_eq!(
        store
            .get_entity_type(&TypeKey::Name("player".into()))
            .await
            .unwrap(),
        t
    );
    assert_eq!(store.get_instance(inst.id).await.unwrap(), inst);
    assert_eq!(all_events(&store, inst.id).await, events);
    assert_eq!(
        store.snapshot_and_tail(inst.id, 3).await.unwrap(),
        snapshot_and_tail
    );
    assert_eq!(snapshot_and_tail.0.map(|s| s.version), Some(2));
    let retry = append(
        &store,
        inst.id,
        None,
        vec![keyed("k2", "N", json!({"n": 2}))],
    )
    .await
    .unwrap();
    assert!(matches!(retry, AppendOutcome::AlreadyRecorded { ref keys } if keys[0].version == 3));
    let (next, _) = appended(&store, inst.id, vec![ev("N", json!({"n": 3}))]).await;
    assert_eq!(versions(&next), [4]);
}

#[tokio::test]
async fn a_missing_data_dir_is_created() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a").join("b").join("data");
    let store = EmbeddedStore::open(&dir, 100).unwrap();
    assert!(dir.join(DB_FILE).is_file());
    store.ping().await.unwrap();
}

#[test]
fn a_garbage_database_file_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(DB_FILE);
    for garbage in [
        (0..8192_u32)
            .map(|i| (i * 7 + 3) as u8)
            .collect::<Vec<u8>>(),
        b"not a database at all".to_vec(),
    ] {
        std::fs::write(&file, &garbage).unwrap();
        let e = open_err(dir.path());
        let message = e.to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("not a database"), "{message}");
        // Never recreated or overwritten.
        assert_eq!(std::fs::read(&file).unwrap(), garbage);
    }
}

#[test]
fn a_foreign_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(DB_FILE);
    {
        let conn = rusqlite::Connection::open(&file).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
            .unwrap();
    }
    let message = open_err(dir.path()).to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("another application"), "{message}");
    let conn = rusqlite::Connection::open(&file).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(dir.path(), 100).unwrap());
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)",
            [],
        )
        .unwrap();
    }
    let message = open_err(dir.path()).to_string();
    assert!(message.contains("newer"), "{message}");
    assert!(message.contains(DB_FILE), "{message}");
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("data");
    std::fs::write(&file, b"precious").unwrap();
    let message = open_err(&file).to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("not a directory"), "{message}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");

    // A path through a regular file cannot be created either.
    let below = file.join("nested");
    let message = open_err(&below).to_string();
    assert!(message.contains(&below.display().to_string()), "{message}");
}

#[test]
fn a_database_path_that_is_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(DB_FILE)).unwrap();
    let message = open_err(dir.path()).to_string();
    assert!(message.contains(DB_FILE), "{message}");
    assert!(message.contains("not a regular file"), "{message}");
}

/// Root ignores permissions, so where this runs as root the check runs the server binary
/// as `nobody` (through `setpriv`), which is how a misconfigured deployment would meet it.
#[test]
fn an_unwritable_data_dir_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = root.path().join("readonly");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let missing = dir.join("data");
    if std::fs::write(dir.join("probe"), b"").is_err() {
        // Permissions apply to this process: the store itself must refuse.
        for path in [&dir, &missing] {
            let message = open_err(path).to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        return;
    }
    let _ = std::fs::remove_file(dir.join("probe"));
    let as_nobody = |data_dir: &Path| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(crate::common::binary::SERVER)
            .arg("migrate")
            .env_remove("DATABASE_URL")
            .env("DATA_DIR", data_dir)
            .env("RUST_BACKTRACE", "0")
            .output()
    };
    let Ok(probe) = as_nobody(&dir) else {
        eprintln!("skipped: running as root and setpriv is not available");
        return;
    };
    let mut outputs = vec![probe];
    outputs.push(as_nobody(&missing).unwrap());
    for (path, out) in [&dir, &missing].into_iter().zip(outputs) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

/// Another process holding SQLite's write lock past busy_timeout: UNAVAILABLE, not INTERNAL.
#[tokio::test]
async fn a_held_write_lock_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), 100).unwrap();
    let other = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let r = store
        .create_entity_type(Uuid::now_v7(), "player", "", &State::new(), None)
        .await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    other.execute_batch("ROLLBACK").unwrap();
    // Reads never waited, and the store works again once the lock is released.
    store.ping().await.unwrap();
    new_type(&store, "player").await;
}

/// A statement the store keeps prepared is run again as prepared, whatever is bound to it. On
/// a connection without the query planner stability guarantee, SQLite prepared the append's
/// head read (a join on `i.id = ?1`) again at every use, once the statement cache had cleared
/// its bindings: a parse and a plan per append on the writer thread.
#[tokio::test]
async fn kept_statements_are_not_prepared_again_for_new_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), 2).unwrap();
    let t = new_type(&store, "player").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (inst, _) = instance(&store, t.id, &format!("p-{n}"), json!({"n": 0})).await;
        appended(&store, inst.id, vec![ev("N", json!({"n": 1}))]).await;
        appended(&store, inst.id, vec![ev("N", json!({"n": 2}))]).await;
        ids.push(inst.id.to_string());
    }
    let tail = sql::tail_sql();
    let statements = [sql::HEAD_SQL, sql::SNAPSHOT_SQL, tail.as_str()];
    for reader in [true, false] {
        let conn = sql::connect(store.path(), reader).unwrap();
        for _ in 0..2 {
            for id in &ids {
                let version: i64 = conn
                    .prepare_cached(sql::HEAD_SQL)
                    .unwrap()
                    .query_row([id], |r| r.get(1))
                    .unwrap();
                assert_eq!(version, 3);
                let snapshot: i64 = conn
                    .prepare_cached(sql::SNAPSHOT_SQL)
                    .unwrap()
                    .query_row(rusqlite::params![id, 3], |r| r.get(0))
                    .unwrap();
                assert_eq!(snapshot, 2);
                let tail_rows = conn
                    .prepare_cached(&tail)
                    .unwrap()
                    .query_map(rusqlite::params![id, 2, 3], |_| Ok(()))
                    .unwrap()
                    .count();
                assert_eq!(tail_rows, 2);
            }
        }
        for statement in statements {
            let kept = conn.prepare_cached(statement).unwrap();
            assert_eq!(
                kept.get_status(StatementStatus::RePrepare),
                0,
                "prepared again on a {} connection: {statement}",
                if reader { "read" } else { "write" }
            );
        }
    }
}
