//! The pure core of the engine: entity types and their schemas, applying an event to a state,
//! diffs between states and field timelines, and who may do what (`principal`).
//!
//! Nothing here does I/O or is async, and nothing imports tonic, tokio-postgres, fred or async-nats:
//! every function is a plain computation over `serde_json::Value`s, tested with unit and property tests.

pub mod analytics;
pub mod apply;
pub mod diff;
pub mod entity_type;
pub mod error;
pub mod field_path;
pub mod idempotency;
pub mod limits;
pub mod principal;
pub mod timeline;
pub mod validate;

#[cfg(test)]
mod properties;

pub use apply::{ApplyMode, apply_event, apply_in_place};
pub use entity_type::{EntityTypeName, EventType, ExternalId};
pub use error::{DomainError, Violation};
pub use limits::{Measure, Meter, StateLimits};
pub use principal::{Access, Principal, PrincipalKind, Scope};

/// A state or payload: always a JSON object at the top level.
pub type State = serde_json::Map<String, serde_json::Value>;
