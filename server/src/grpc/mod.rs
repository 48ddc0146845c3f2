//! gRPC adapters, one per service (`caller.rs` is the AuthService: who the caller is): convert
//! protobuf to domain inputs, delegate to the application, map errors to statuses. No business
//! logic lives here. Around them, three tower layers: `guard.rs` (deadline, shedding, codes),
//! `telemetry.rs` (metrics and the span of each call) and `auth.rs` (credentials into the
//! principal every handler passes to the application).

mod analytics;
pub(crate) mod auth;
mod caller;
mod convert;
mod entity_types;
mod events;
pub(crate) mod fast;
pub(crate) mod guard;
mod instances;
mod queries;
pub(crate) mod rate_limit;
pub(crate) mod status;
pub(crate) mod telemetry;
pub(crate) mod web;
pub mod wire;

pub(crate) use analytics::AnalyticsApi;
pub(crate) use caller::AuthApi;
pub(crate) use entity_types::EntityTypeApi;
pub(crate) use events::EventApi;
pub(crate) use instances::InstanceApi;
pub(crate) use queries::QueryApi;

/// `google.protobuf.Struct` <-> JSON object, exactly as the services convert them: public for
/// tests that build requests and compare answers in JSON.
pub use convert::{state_from_struct, struct_from_state, value_from_json};
