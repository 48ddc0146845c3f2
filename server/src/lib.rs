//! The Temporal State Engine server: keeps the complete, immutable history of any user-defined
//! entity and answers what it was, when, and how it changed.
//!
//! Layout. Each module may name (through a `crate::` path) only itself and the modules listed
//! before it; test code (`#[cfg(test)]`) may name any. The `layers` test checks this on every
//! `cargo test --lib`, naming the file and line of any import that breaks it.
//!
//! - [`domain`]: pure and synchronous: entity types, applying events, schemas, diffs, timelines,
//!   declared event types with their CEL expressions (compiled programs are plain values),
//!   and the `Principal` (who calls, with which scopes).
//! - [`ports`]: the traits the application needs, one per capability.
//! - [`app`]: the use cases, split as CQRS: `Commands` (the only holder of the event store),
//!   `Queries` (listings, time travel), `CurrentStates` (reads through the state cache),
//!   `Subscriptions` and `Analytics`, each holding only the ports it uses. They take typed
//!   inputs; they are handed their adapters, the bus included, and never name one.
//! - [`adapters`]: ports implemented per technology: `postgres/` (source of truth with group
//!   commit, analytics, outbox, TimescaleDB, TLS), `embedded/` (SQLite, the default), `redis/`
//!   (cache), `nats/` (publication, live events), `memory/` (in-process cache and bus), `auth/`
//!   (API keys, JWTs and JWKS into a principal), `tls` (server certificates, reloaded) and
//!   `secrets` (masking passwords in logs). The stores' `sql` modules export the statements they
//!   run, for the benchmark crate (`bench/`) to issue the very same ones.
//! - [`config`]: the typed configuration, its validation (GRPC_WEB_ALLOWED_ORIGINS included)
//!   and the adapters' settings derived from it.
//! - [`grpc`]: one file per gRPC service: parse the request into typed inputs (`convert.rs`),
//!   delegate to one handler, map the error to a status (`status.rs`); plus the request guard
//!   (deadline, shedding, sizes), the layer that measures and traces each call, the layer that
//!   turns credentials into a principal (`auth.rs`) and holds each caller to its rate limit
//!   (`rate_limit.rs`), and gRPC-web's CORS.
//! - [`server`]: the wiring; [`server::run`] takes its listener and shutdown signal from the
//!   caller, so tests bind `127.0.0.1:0`; it mounts the web console (the `web-gateway` library)
//!   on CONSOLE_ADDR, the admin HTTP server (`server/admin.rs`: `/metrics`, `/healthz`,
//!   `/readyz` on ADMIN_ADDR), and the logs and traces the binary installs
//!   (`server/telemetry.rs`).
//!
//! Metrics are recorded through the `metrics` facade where the figure is known: `grpc/`
//! (calls by method and code), `app/` (append batch sizes, cache hits, subscriptions),
//! `adapters/` (relay publishes, snapshots), `server` (pool and outbox, sampled at each scrape);
//! never in `domain/`. Their names are defined once, in `app/metrics.rs`.

pub mod adapters;
pub mod app;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod ports;
pub mod server;

#[cfg(test)]
mod layers;

pub use config::Config;
pub use server::run;
