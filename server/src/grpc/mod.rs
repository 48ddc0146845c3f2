//! gRPC adapters, one per service: convert protobuf to domain inputs, delegate to the
//! application, map errors to statuses. No business logic lives here.

mod analytics;
pub mod convert;
mod entity_types;
mod events;
pub(crate) mod guard;
mod instances;
mod queries;
pub(crate) mod status;
pub(crate) mod web;

pub use analytics::AnalyticsApi;
pub use entity_types::EntityTypeApi;
pub use events::EventApi;
pub use instances::InstanceApi;
pub use queries::QueryApi;
