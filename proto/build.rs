//! Compiles `temporal_state/v1/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates prost messages plus tonic stubs. The encoded descriptor set is kept for gRPC reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "temporal_state/v1/types.proto",
    "temporal_state/v1/entity_type_service.proto",
    "temporal_state/v1/instance_service.proto",
    "temporal_state/v1/event_service.proto",
    "temporal_state/v1/query_service.proto",
    "temporal_state/v1/analytics_service.proto",
    "temporal_state/v1/auth_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("temporal_state_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .client_mod_attribute("temporal_state.v1", "#[cfg(feature = \"client\")]")
        .server_mod_attribute("temporal_state.v1", "#[cfg(feature = \"server\")]")
        .compile_fds(fds)?;
    Ok(())
}
