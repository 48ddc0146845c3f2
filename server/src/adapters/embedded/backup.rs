//! `temporal-state-server backup <path>`: a consistent copy of the embedded store, taken while a
//! server may be writing to it.
//!
//! How it coexists with the running writer: the copy is SQLite's `VACUUM INTO`, run on a
//! connection of its own in one read transaction. In WAL mode a reader sees the database as of
//! the moment its transaction began and neither blocks the server's writer nor waits for it, so
//! the copy is one committed state (every append is one transaction: whole batches or none) and
//! writes go on meanwhile. The busy timeout only covers the instant the read transaction
//! starts. While it runs, checkpoints cannot recycle the WAL past its snapshot, so the WAL may
//! grow by what is written during the copy; it shrinks at the next checkpoint after.
//!
//! The copy is written next to `path` under a temporary name, checked (`PRAGMA quick_check`),
//! fsynced, then renamed into place: `path` either does not exist or is a complete backup.
//! Restoring (deploy/README.md): stop the server, put the file at `DATA_DIR/temporal-state.db`,
//! remove any `-wal` and `-shm` files beside it, start the server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::EmbeddedError;
use super::store::DB_FILE;

/// How long the copy's read transaction may wait to start (a checkpoint or recovery holding the
/// WAL index).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The store that was copied.
    pub source: PathBuf,
    /// Size of the copy, in bytes.
    pub bytes: u64,
    /// Events and instances in the copy.
    pub events: i64,
    pub instances: i64,
}

/// Copies the embedded store under `data_dir` to `to`, which must not exist yet.
pub fn backup(data_dir: &Path, to: &Path) -> Result<BackupReport, EmbeddedError> {
    let source = data_dir.join(DB_FILE);
    let unusable = |reason: String| EmbeddedError::Unusable {
        path: to.to_path_buf(),
        reason,
    };
    if !source.is_file() {
        return Err(EmbeddedError::DataDir {
            path: data_dir.to_path_buf(),
            reason: format!("no {DB_FILE} here: nothing to back up"),
        });
    }
    if to.exists() {
        return Err(unusable(
            "already exists; a backup never overwrites a file".into(),
        ));
    }
    let file_name = to
        .file_name()
        .ok_or_else(|| unusable("is not a file path".into()))?;
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let partial = dir.join(format!(".{}.partial", file_name.to_string_lossy()));
    let _ = std::fs::remove_file(&partial);

    let open_error = |error| EmbeddedError::Open {
        path: source.clone(),
        error,
    };
    // Read-write open (a WAL reader needs the shared-memory index; `query_only` would refuse
    // VACUUM INTO), but the only statement run is the copy: the store's own files are read.
    let conn = Connection::open_with_flags(
        &source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    let result = conn
        .execute(
            "VACUUM INTO ?1",
            [partial.to_str().ok_or_else(|| {
                unusable("the path is not valid UTF-8, which SQLite needs".into())
            })?],
        )
        .map_err(EmbeddedError::from);
    drop(conn);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    match check_copy(&partial) {
        Ok((events, instances)) => {
            let file = std::fs::File::open(&partial).map_err(|e| unusable(e.to_string()))?;
            file.sync_all().map_err(|e| unusable(e.to_string()))?;
            let bytes = file.metadata().map_err(|e| unusable(e.to_string()))?.len();
            std::fs::rename(&partial, to).map_err(|e| unusable(e.to_string()))?;
            // The rename itself survives a crash once the directory is synced.
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(BackupReport {
                source,
                bytes,
                events,
                instances,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Checks the copy's integrity and counts what it holds.
fn check_copy(path: &Path) -> Result<(i64, i64), EmbeddedError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|error| {
            EmbeddedError::Open {
                path: path.to_path_buf(),
                error,
            }
        })?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(EmbeddedError::Unusable {
            path: path.to_path_buf(),
            reason: format!("the copy fails quick_check: {check}"),
        });
    }
    let events = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    let instances = conn.query_row("SELECT count(*) FROM instances", [], |r| r.get(0))?;
    Ok((events, instances))
}
