//! Implementations of the ports, one folder per technology. Each has its own error type,
//! mapped into the port's error at its boundary.
//!
//! - `postgres/`: the source of truth (event store, history, analytics, outbox).
//! - `embedded/`: the same on SQLite, for a bare machine.
//! - `redis/`: the current-state cache.
//! - `nats/`: publication through the outbox relay and live subscriptions.
//! - `memory/`: in-process cache and bus, standing in for Redis and NATS.
//! - `auth/`: credentials (API keys file, JWT keys and JWKS) turned into principals.
//! - `tls`: the server's rustls configuration, reloaded when its files change.
//! - `secrets`: masking the passwords of connection strings in logs and errors.
//! - `append_plan`: what an append writes, computed once for the PostgreSQL and embedded stores.

mod append_plan;
pub mod auth;
pub mod embedded;
pub mod memory;
pub mod nats;
pub mod postgres;
pub mod redis;
pub mod secrets;
pub mod tls;

/// A store's connection pool as the metrics show it (`tse_db_pool_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Most connections the pool holds.
    pub size: usize,
    /// Connections handed out now.
    pub in_use: usize,
    /// Callers waiting for one.
    pub waiting: usize,
}
