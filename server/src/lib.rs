//! The Temporal State Engine server: keeps the complete, immutable history of any user-defined
//! entity and answers what it was, when, and how it changed.
//!
//! Layout (each folder may import only what is above it in this list):
//!
//! - [`domain`]: pure and synchronous: entity types, applying events, schemas, diffs, timelines.
//! - [`ports`]: the traits the application needs, one per capability.
//! - [`app`]: use cases (commands, time-travel queries) over the ports.
//! - [`adapters`]: ports implemented per technology: `postgres/` (source of truth, analytics,
//!   outbox), `embedded/` (SQLite, the default), `redis/` (cache), `nats/` (publication, live
//!   events), `memory/` (in-process cache and bus). The stores' `sql` modules export the
//!   statements they run, for the benchmark crate (`bench/`) to issue the very same ones.
//! - [`grpc`]: one adapter per gRPC service: convert, delegate, map errors.
//! - [`config`] and [`server`]: the typed configuration and the wiring; [`server::run`] takes
//!   its listener and shutdown signal from the caller, so tests bind `127.0.0.1:0`.

pub mod adapters;
pub mod app;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod ports;
pub mod server;

pub use config::Config;
pub use server::run;
