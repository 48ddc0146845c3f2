//! The Temporal State Engine's protobuf API, package `temporal_state.v1`.
//!
//! - [`v1`]: every message, plus the tonic client (feature `client`) and server (feature `server`) stubs.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of all files, for gRPC reflection.
//!
//! The `.proto` sources ship inside this crate under `temporal_state/v1/`, so generating other
//! clients needs nothing but this package.

/// Generated code of package `temporal_state.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("temporal_state.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of every file of the API, for reflection services.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/temporal_state_descriptor.bin"));
