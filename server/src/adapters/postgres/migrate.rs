//! Applies the SQL files of `migrations/postgres/` in order, each once, each in its own
//! transaction. A session advisory lock serializes servers that start at the same time: the
//! second waits, then finds nothing left to do.

use tokio_postgres::Client;
use tracing::info;

use super::PgError;

/// Arbitrary but fixed key of the advisory lock guarding migrations.
const MIGRATION_LOCK_KEY: i64 = 0x7465_6d70_5354_4500;

/// The migrations, in order. Their numbers are stored in `schema_migrations`.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "timescaledb",
        include_str!("../../../../migrations/postgres/0002_timescaledb.sql"),
    ),
    (
        3,
        "outbox",
        include_str!("../../../../migrations/postgres/0003_outbox.sql"),
    ),
    (
        4,
        "byte_order",
        include_str!("../../../../migrations/postgres/0004_byte_order.sql"),
    ),
    (
        5,
        "event_content_hash",
        include_str!("../../../../migrations/postgres/0005_event_content_hash.sql"),
    ),
    (
        6,
        "outbox_dead_letters",
        include_str!("../../../../migrations/postgres/0006_outbox_dead_letters.sql"),
    ),
    (
        7,
        "event_recorded_by",
        include_str!("../../../../migrations/postgres/0007_event_recorded_by.sql"),
    ),
    (
        8,
        "schema_versions",
        include_str!("../../../../migrations/postgres/0008_schema_versions.sql"),
    ),
    (
        9,
        "instance_archived",
        include_str!("../../../../migrations/postgres/0009_instance_archived.sql"),
    ),
    (
        10,
        "instance_erased",
        include_str!("../../../../migrations/postgres/0010_instance_erased.sql"),
    ),
    (
        11,
        "retention",
        include_str!("../../../../migrations/postgres/0011_retention.sql"),
    ),
    (
        12,
        "global_position",
        include_str!("../../../../migrations/postgres/0012_global_position.sql"),
    ),
    (
        13,
        "instance_listing",
        include_str!("../../../../migrations/postgres/0013_instance_listing.sql"),
    ),
    (
        14,
        "event_declarations",
        include_str!("../../../../migrations/postgres/0014_event_declarations.sql"),
    ),
    (
        15,
        "event_rollups",
        include_str!("../../../../migrations/postgres/0015_event_rollups.sql"),
    ),
];

/// Brings the database schema up to date. Returns the numbers of the migrations it applied.
pub async fn run(client: &mut Client) -> Result<Vec<i32>, PgError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let result = apply_pending(client).await;
    // Unlock even on failure; if the connection itself broke, the lock died with it.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    result
}

async fn apply_pending(client: &mut Client) -> Result<Vec<i32>, PgError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut done = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        info!(version, name, "applied migration");
        done.push(*version);
    }
    Ok(done)
}
