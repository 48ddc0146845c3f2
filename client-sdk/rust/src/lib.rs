//! Rust SDK for the [Temporal State Engine](https://github.com/temporal-state/temporal-state-engine):
//! a gRPC service that keeps the full, immutable history of any entity you define and answers
//! what it was, when, and how it changed.
//!
//! The SDK wraps the generated stubs of [`temporal_state_proto`] so that you work with
//! [`serde_json::Value`] or your own serde types instead of `google.protobuf.Struct`, get typed
//! [`Error`]s instead of bare statuses, and never record an event twice when a call is retried.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use serde_json::json;
//! use temporal_state_client::{ApplyEventOptions, Client};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Player {
//!     username: String,
//!     score: i64,
//! }
//!
//! # async fn run() -> Result<(), temporal_state_client::Error> {
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let player = client
//!     .get_current_state("player_profile", "player-001", &Default::default())
//!     .await?;
//! let applied = client
//!     .apply_event(
//!         &player.id,
//!         "ScoreIncreased",
//!         &json!({"score": 150}),
//!         &ApplyEventOptions::default().expected_version(player.version),
//!     )
//!     .await?;
//! let now: Player = applied.state_as()?;
//! assert_eq!(now.score, 150);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`Client`] and [`ClientBuilder`] (`client`): connecting (timeouts, TLS, keep-alive), the
//!   default deadline and the [`RetryPolicy`] every call starts from.
//! - One module per service, each adding its calls to [`Client`] with one options struct per
//!   call: entity types, instances, events (writes and [`Client::subscribe`]), queries (time
//!   travel) and analytics.
//! - [`Client::run_consumer`] (`consumer`): a read model's loop over the global event log
//!   ([`Client::read_events`], then Subscribe from a position), resuming from a
//!   [`CheckpointStore`] after a crash.
//! - `model`: what the calls return ([`Instance`], [`Event`], [`StateAt`], ...), with JSON
//!   values and `*_as::<T>()` accessors that deserialize into your own types.
//! - [`Error`]: one variant per gRPC code the server uses, rebuilt from the status and its
//!   details (schema violations, the current version of a conflict).
//!
//! # Retries are safe
//!
//! Calls answered with UNAVAILABLE (a backend is down, the connection broke, or a server that is
//! shutting down refused the call with GOAWAY before taking it) are retried with exponential
//! backoff, as the [`RetryPolicy`] says. That is safe for writes too:
//!
//! - [`Client::apply_event`] and [`Client::apply_events`] give every event an `event_id` before the
//!   first attempt (a UUID, unless you set your own), and every retry sends the same id. The
//!   server records an `event_id` once and answers a repeat with the first recording, so a retry
//!   after a lost reply returns the original event instead of writing a second one.
//! - [`Client::create_entity_type`] and [`Client::create_instance`] have no id of their own: when
//!   a retry is answered ALREADY_EXISTS, the SDK reads what exists and returns it if it is exactly
//!   what was asked for (the first attempt did commit), and the ALREADY_EXISTS error otherwise.
//!
//! Other codes are never retried: they are answers, not failures.
//!
//! # Features
//!
//! - `tls` (default): `https://` endpoints, with the system's root certificates unless
//!   [`ClientBuilder::tls`] gives a configuration of your own.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod analytics;
mod client;
mod consumer;
mod entity_types;
mod error;
mod events;
mod instances;
mod json;
mod model;
mod options;
mod queries;
mod retry;
mod subscribe;

pub use analytics::{
    GetEventCountsOptions, GetEventTimeSeriesOptions, GetFieldAggregationOptions,
    GetMostActiveOptions, GetSummaryOptions,
};
pub use client::{Client, ClientBuilder};
pub use consumer::{
    CheckpointStore, ConsumerError, ConsumerOptions, EventLogPage, FileCheckpoint,
    ReadEventsOptions,
};
pub use entity_types::{
    CreateEntityTypeOptions, DeleteEntityTypeOptions, GetEntityTypeOptions, ListEntityTypesOptions,
    UpdateEntityTypeOptions,
};
pub use error::{Error, FieldViolation, Result};
pub use events::{ApplyEventOptions, ApplyEventsOptions, NewEvent};
pub use instances::{
    ArchiveInstanceOptions, CreateInstanceOptions, EraseInstanceOptions, GetCurrentStateOptions,
    GetInstanceOptions, InstanceOrder, ListInstancesOptions,
};
pub use model::{
    ActiveInstance, AppliedEvent, AppliedEvents, ApplyMode, ChangeKind, Comparison,
    CreatedInstance, EntityType, EntityTypeUpdate, Event, EventTypeCount, FieldAggregation,
    FieldChange, Instance, InstanceLifecycle, Page, SchemaVersion, SchemaViolation, StateAt,
    Summary, TimeBucket, TimelinePoint, ValueFrequency,
};
pub use queries::{
    CompareVersionsOptions, GetFieldTimelineOptions, GetHistoryOptions, GetStateAtTimeOptions,
    GetStateAtVersionOptions, TimeAxis,
};
pub use retry::RetryPolicy;
pub use subscribe::{EventStream, SubscribeOptions};

/// The generated protobuf API this SDK is built on, for anything the SDK does not cover.
pub use temporal_state_proto as proto;

/// The README's example, compiled as a documentation test so that it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
