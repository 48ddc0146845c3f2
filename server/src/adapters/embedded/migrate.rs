//! Applies the SQL files of `migrations/embedded/` in order, each once, each in its own
//! `BEGIN IMMEDIATE` transaction, recorded in `schema_migrations` like the PostgreSQL ones. The
//! immediate transaction takes SQLite's write lock first, so two servers opening the same
//! DATA_DIR at once apply each migration once: the second waits, then finds nothing to do.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};
use tracing::info;

use super::EmbeddedError;

/// Marks the file as a Temporal State Engine database (`PRAGMA application_id`, "TSE1").
pub const APPLICATION_ID: i32 = 0x5453_4531;

/// The migrations, in order. Their numbers are stored in `schema_migrations`.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../../migrations/embedded/0001_init.sql"),
    ),
    (
        2,
        "analytics_index",
        include_str!("../../../../migrations/embedded/0002_analytics_index.sql"),
    ),
    (
        3,
        "event_content_hash",
        include_str!("../../../../migrations/embedded/0003_event_content_hash.sql"),
    ),
    (
        4,
        "event_recorded_by",
        include_str!("../../../../migrations/embedded/0004_event_recorded_by.sql"),
    ),
    (
        5,
        "schema_versions",
        include_str!("../../../../migrations/embedded/0005_schema_versions.sql"),
    ),
    (
        6,
        "instance_archived",
        include_str!("../../../../migrations/embedded/0006_instance_archived.sql"),
    ),
    (
        7,
        "instance_erased",
        include_str!("../../../../migrations/embedded/0007_instance_erased.sql"),
    ),
    (
        8,
        "retention",
        include_str!("../../../../migrations/embedded/0008_retention.sql"),
    ),
    (
        9,
        "global_position",
        include_str!("../../../../migrations/embedded/0009_global_position.sql"),
    ),
    (
        10,
        "instance_listing",
        include_str!("../../../../migrations/embedded/0010_instance_listing.sql"),
    ),
    (
        11,
        "event_declarations",
        include_str!("../../../../migrations/embedded/0011_event_declarations.sql"),
    ),
    (
        12,
        "event_rollups",
        include_str!("../../../../migrations/embedded/0012_event_rollups.sql"),
    ),
];

/// Checks that the file at `path` is ours (or empty) and brings its schema up to date. Returns
/// the numbers of the migrations it applied. Every failure names the file.
pub fn run(conn: &mut Connection, path: &Path) -> Result<Vec<i32>, EmbeddedError> {
    apply_pending(conn, path).map_err(|e| match e {
        EmbeddedError::Sqlite(error) => EmbeddedError::Open {
            path: path.to_path_buf(),
            error,
        },
        other => other,
    })
}

fn apply_pending(conn: &mut Connection, path: &Path) -> Result<Vec<i32>, EmbeddedError> {
    let unusable = |reason: String| EmbeddedError::Unusable {
        path: path.to_path_buf(),
        reason,
    };
    let open_error = |error: rusqlite::Error| EmbeddedError::Open {
        path: path.to_path_buf(),
        error,
    };

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_error)?;
    let application_id: i32 = tx
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(open_error)?;
    let tables: i64 = tx
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(open_error)?;
    if application_id != APPLICATION_ID {
        if tables > 0 {
            // Never write into somebody else's database.
            return Err(unusable(format!(
                "is a SQLite database of another application (application_id {application_id:#x}); \
                 point DATA_DIR at another directory"
            )));
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(open_error)?;
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        ) STRICT",
    )?;
    let applied: Vec<i32> = {
        let mut stmt = tx.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if let Some(newest) = applied.iter().copied().max()
        && newest > known
    {
        return Err(unusable(format!(
            "has schema version {newest}, newer than this server knows ({known}); \
             run a newer server"
        )));
    }
    tx.commit()?;

    let mut done = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let already: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if already {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, chrono::Utc::now().timestamp_micros()],
        )?;
        tx.commit()?;
        info!(version, name, "applied embedded migration");
        done.push(*version);
    }
    Ok(done)
}
