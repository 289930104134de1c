//! Compiles `proto/raft.proto` at build time with a pure-Rust protobuf compiler (protox), so
//! neither Cargo nor Bazel builds need `protoc` installed, and no generated code is checked in.
//! The encoded file descriptor set is also written out for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest.join("proto");
    let proto = proto_dir.join("raft.proto");
    println!("cargo:rerun-if-changed={}", proto.display());

    let fds = protox::compile([&proto], [&proto_dir])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("rustyraft_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Log entry payloads stay `Bytes` from the log to the wire and back: no copy per entry
        // per follower when replicating.
        .bytes(".rustyraft.v1.Entry.data")
        // Small initial buffers: see `pb::LeanCodec`.
        .codec_path("crate::pb::LeanCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
