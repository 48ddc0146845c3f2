//! gRPC adapters, one per service: convert protobuf to domain inputs, delegate to the
//! application, map errors to statuses. No business logic lives here.

pub mod convert;
pub mod guard;
mod services;
pub mod status;
pub mod web;

pub use services::{AnalyticsApi, EntityTypeApi, EventApi, InstanceApi, QueryApi};
