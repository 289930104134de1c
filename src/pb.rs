//! Generated protobuf and gRPC types for `proto/raft.proto` (package `rustyraft.v1`).
//!
//! Nothing outside this module and the gRPC edges (`transport`, `api`) should touch these types:
//! the rest of the crate works on domain types and converts with `TryFrom`, so that a missing
//! or malformed field becomes an error at the edge instead of a panic deep inside.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("rustyraft.v1");

/// Encoded `FileDescriptorSet` of our protos, served through gRPC reflection so that
/// `grpcurl` works without a local copy of the .proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rustyraft_descriptor.bin"));
