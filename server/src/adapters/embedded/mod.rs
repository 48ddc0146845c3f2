//! The embedded store: SQLite in one file under DATA_DIR, used when no DATABASE_URL is given so
//! the server runs on a bare machine. Same ports, same semantics and errors as PostgreSQL (the
//! contract tests in `server/tests/contract/store.rs` run against both).
//!
//! - `migrate`: embedded SQL migrations (`migrations/embedded/`), tracked in `schema_migrations`.
//! - `store`: [`EmbeddedStore`], implementing the write and time-travel ports with rusqlite on
//!   tokio's blocking pool: one writer connection (appends are `BEGIN IMMEDIATE` transactions,
//!   one at a time) and a few read-only connections for reads, in WAL mode.
//! - `analytics`: [`crate::ports::AnalyticsReader`] for [`EmbeddedStore`], answering as
//!   PostgreSQL does (same orders, ranges, buckets and JSON field semantics).
//! - `sql`: the store's statements and connection settings, shared with the benchmark.
//! - `error`: SQLite failures mapped to [`crate::ports::StoreError`].

mod analytics;
mod error;
pub mod migrate;
mod rows;
mod store;

pub use error::EmbeddedError;
pub use store::{DB_FILE, EmbeddedStore};

/// The statements and connection settings [`EmbeddedStore`] uses, each defined once where the
/// store uses it and public so that the benchmark's raw baseline (`bench/`) does the same work.
pub mod sql {
    pub use super::rows::EVENT_COLUMNS;
    pub use super::store::{
        HEAD_SQL, INSERT_EVENT_SQL, INSERT_KEY_SQL, INSERT_SNAPSHOT_SQL, MOVE_HEAD_SQL,
        SNAPSHOT_SQL, connect, tail_sql,
    };
}
