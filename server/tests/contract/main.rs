//! The contract of every port, written once and run against every implementation: a behaviour
//! that differs between two implementations fails under the one that differs.
//!
//! Each contract is an async function taking the implementation to open; it only sees the port
//! (`Arc<dyn EventStore>`, `Arc<dyn StateCache>`, ...). `for_each_backend!` runs each one once per
//! implementation, in a module named after it:
//!
//! - `store`: `EventStore` and `HistoryReader` on PostgreSQL (a fresh database per test) and the
//!   embedded SQLite store (a fresh directory per test): `store::postgres::`,
//!   `store::embedded::`, and `store_embedded::` for what only the embedded store has.
//! - `analytics`: `AnalyticsReader` on the same two stores.
//!
//! The store and analytics contracts run on the stores that [`on_each_store!`] names: here
//! PostgreSQL and embedded; `tests/timescaledb.rs` runs the same files on TimescaleDB.
//! - `cache`: `StateCache` on Redis (a private redis-server per test) and the in-memory cache,
//!   plus `cache::redis_only::` for expiry and outages.
//! - `bus`: `EventBus` on NATS (a private nats-server per test) and the in-process bus.
//!
//! One test binary for the four, so CI links one more binary, not four.

#[path = "../common/mod.rs"]
mod common;

/// Runs each store and analytics contract on plain PostgreSQL and on the embedded store.
macro_rules! on_each_store {
    ($($tests:tt)*) => {
        temporal_state_test_support::for_each_backend!(
            Backend { postgres => Postgres, embedded => Embedded }; $($tests)*
        );
    };
}

mod analytics;
mod bus;
mod cache;
mod fixture;
mod store;
mod store_embedded;
