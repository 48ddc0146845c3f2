//! The embedded store: SQLite in one file under DATA_DIR, used when no DATABASE_URL is given so
//! the server runs on a bare machine. Same ports, same semantics and errors as PostgreSQL (the
//! contract tests in `server/tests/contract/store.rs` run against both).
//!
//! - `migrate`: embedded SQL migrations (`migrations/embedded/`), tracked in `schema_migrations`.
//! - `store`: [`EmbeddedStore`], its connections on tokio's blocking pool (one writer
//!   connection, a few read-only ones, in WAL mode), entity types and instances.
//! - `append`: the append, a `BEGIN IMMEDIATE` transaction on the writer thread executing the
//!   shared plan (`adapters/append_plan.rs`).
//! - `history`: the time-travel port, on the read connections.
//! - `analytics`: [`crate::ports::AnalyticsReader`] for [`EmbeddedStore`], answering as
//!   PostgreSQL does (same orders, ranges, buckets and JSON field semantics).
//! - `sql`: the store's statements and connection settings, shared with the benchmark.
//! - `error`: SQLite failures mapped to [`crate::ports::StoreError`].
//! - `retention`: RETENTION_DAYS on SQLite: the same pass as PostgreSQL's, in batched
//!   write transactions.
//! - `backup`: a consistent online copy of the store (`temporal-state-server backup <path>`).

mod analytics;
mod append;
mod backup;
mod error;
mod history;
pub mod migrate;
mod retention;
mod rows;
mod store;

pub use backup::{BackupReport, backup};
pub use error::EmbeddedError;
pub use store::{DB_FILE, EmbeddedStore};

/// The statements and connection settings [`EmbeddedStore`] uses, each defined once where the
/// store uses it and public so that the benchmark's raw baseline (`bench/`) does the same work.
pub mod sql {
    pub use super::append::{
        HEAD_SQL, INSERT_EVENT_SQL, INSERT_KEY_SQL, INSERT_SNAPSHOT_SQL, MOVE_HEAD_SQL,
    };
    pub use super::history::{SNAPSHOT_SQL, tail_sql};
    pub use super::rows::EVENT_COLUMNS;
    pub use super::store::connect;
}
