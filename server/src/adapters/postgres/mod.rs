//! PostgreSQL (TimescaleDB when the extension is available): the source of truth.
//!
//! - `migrate`: embedded SQL migrations under an advisory lock, so servers may start together.
//! - `store`: [`PgStore`], implementing the write and time-travel ports with tokio-postgres
//!   through a deadpool pool; every statement is prepared once per connection.
//! - `analytics`: the analytics port, aggregates pushed into SQL.
//! - `timescale`: the continuous aggregate, compression and retention, where installed.
//! - `outbox`: the transactional outbox read by the NATS relay.
//! - `sql`: the store's statements, shared with the benchmark's direct baselines.
//! - `error`: SQLSTATE and connection failures mapped to [`crate::ports::StoreError`].

mod analytics;
mod error;
pub mod migrate;
pub mod outbox;
mod rows;
mod store;
pub mod timescale;

pub use error::PgError;

/// The statements [`PgStore`] issues, each defined once where the store uses it and public so
/// that the benchmark's direct baselines (`bench/`) issue exactly the same text.
pub mod sql {
    pub use super::rows::EVENT_COLUMNS;
    pub use super::store::{APPEND_SQL, LOCK_HEAD_SQL, history_query, snapshot_and_tail_sql};
}
pub use outbox::PgOutbox;
pub use store::{PgStore, PgStoreConfig};
pub use timescale::TimescaleSettings;
