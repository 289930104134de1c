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

/// The protobuf codec of every service here: tonic's prost codec with a 512-byte initial
/// buffer instead of 8 KiB.
///
/// Why: tonic allocates a fresh encode buffer for every unary response. At 8 KiB that was 3 %
/// of the leader's CPU under load (malloc, free and consolidation of 8 KiB blocks) for
/// responses of about 200 bytes. Buffers still grow as needed for larger messages.
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(std::marker::PhantomData)
    }
}

/// Initial encode and decode buffer of [`LeanCodec`].
const LEAN_BUFFER_BYTES: usize = 512;
/// Bytes encoded before a streaming encoder yields (tonic's default).
const LEAN_YIELD_THRESHOLD: usize = 32 * 1024;

impl<T, U> tonic::codec::Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(lean_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(lean_settings())
    }
}

fn lean_settings() -> tonic::codec::BufferSettings {
    tonic::codec::BufferSettings::new(LEAN_BUFFER_BYTES, LEAN_YIELD_THRESHOLD)
}
