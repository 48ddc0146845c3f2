//! PostgreSQL (TimescaleDB when the extension is available): the source of truth.
//!
//! - `migrate`: embedded SQL migrations under an advisory lock, so servers may start together.
//! - `store`: [`PgStore`], the write port with tokio-postgres through a deadpool pool; every
//!   statement is prepared once per connection. The append executes the shared plan
//!   (`adapters/append_plan.rs`) in one statement, on the head this server already knows.
//! - `group`: the head cache and group commit: concurrent appends to different instances
//!   share one statement and one commit.
//! - `history`: the time-travel port for [`PgStore`].
//! - `analytics`: the analytics port, aggregates pushed into SQL.
//! - `retention`: RETENTION_DAYS: batched deletes that keep each current state rebuildable,
//!   then, on TimescaleDB, `drop_chunks` of what they left empty.
//! - `timescale`: the continuous aggregate and compression, where installed.
//! - `position`: the global position of events, drawn in commit order under a short lock.
//! - `outbox`: the transactional outbox read by the NATS relay.
//! - `sql`: the store's statements, shared with the benchmark's direct baselines.
//! - `tls`: TLS to PostgreSQL as `sslmode` / `sslrootcert` in DATABASE_URL say.
//! - `error`: SQLSTATE and connection failures mapped to [`crate::ports::StoreError`].

mod analytics;
mod error;
mod group;
mod history;
pub mod migrate;
pub mod outbox;
pub mod position;
pub mod retention;
mod rows;
mod store;
pub mod timescale;
pub mod tls;

pub use error::PgError;

/// The statements [`PgStore`] issues, each defined once where the store uses it and public so
/// that the benchmark's direct baselines (`bench/`) issue exactly the same text.
pub mod sql {
    pub use super::group::{GROUP_APPEND_SQL, GROUP_SESSION_SQL};
    pub use super::history::{history_query, log_query, snapshot_and_tail_sql};
    pub use super::rows::{EVENT_COLUMNS, event_at};
    pub use super::store::{APPEND_SQL, AppendParams, HEAD_SQL, LOCK_HEAD_SQL};
}
pub use group::split_pool;
pub use outbox::PgOutbox;
pub use store::{HEAD_CACHE_BYTES, PgStore, PgStoreConfig};
pub use timescale::TimescaleSettings;
