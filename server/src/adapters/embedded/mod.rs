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
//! - `error`: SQLite failures mapped to [`crate::ports::StoreError`].

mod analytics;
mod error;
pub mod migrate;
mod rows;
mod store;

pub use error::EmbeddedError;
pub use store::{DB_FILE, EmbeddedStore};
