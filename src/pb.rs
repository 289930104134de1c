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

/// Metadata keys of the wire contract, shared by the servers that set them and the clients that
/// read them. They live here, with the other wire types, so that the client does not depend on
/// the server's modules (and the server's join logic can use the client).
pub mod meta {
    /// Carries the known leader (`<id>=<host:port>`) on UNAVAILABLE answers, so a client can go
    /// straight to it.
    pub const LEADER: &str = "x-rustyraft-leader";
    /// Set on a send forwarded by a follower, so the leader never forwards it again.
    pub const FORWARDED: &str = "x-rustyraft-forwarded";
    /// The machine-readable reason of a refusal (one of [`super::Reason`]), so clients decide
    /// what to do without matching the human-readable message.
    pub const REASON: &str = "x-rustyraft-reason";
}

/// Why a call was refused, for clients to act on: the gRPC code says how bad it is, the reason
/// says what to do next. Sent in the [`meta::REASON`] metadata; the message stays for humans.
///
/// On a send, [`Reason::NotLeader`], [`Reason::NoLeader`], [`Reason::Retry`] and
/// [`Reason::Overloaded`] also promise that the call proposed nothing (the server answers
/// [`Reason::OutcomeUnknown`] once any of its attempts may have been proposed), so a client,
/// or a history checker, may count such a send as definitely failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// This node is not the leader; [`meta::LEADER`] names the leader when one is known.
    NotLeader,
    /// No leader is known (an election is in progress): retry shortly.
    NoLeader,
    /// The request may or may not have taken effect (leadership was lost after it was
    /// proposed): retry with the same client request id, or check before repeating a change.
    OutcomeUnknown,
    /// A bounded queue is full: back off, then retry.
    Overloaded,
    /// A transient refusal that did nothing (a leadership transfer or a new leader not ready
    /// yet, a read not confirmed in time): retry.
    Retry,
    /// The node is shutting down: go to another node.
    ShuttingDown,
}

impl Reason {
    /// Every reason, for tests and documentation.
    pub const ALL: [Reason; 6] = [
        Reason::NotLeader,
        Reason::NoLeader,
        Reason::OutcomeUnknown,
        Reason::Overloaded,
        Reason::Retry,
        Reason::ShuttingDown,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotLeader => "not-leader",
            Reason::NoLeader => "no-leader",
            Reason::OutcomeUnknown => "outcome-unknown",
            Reason::Overloaded => "overloaded",
            Reason::Retry => "retry",
            Reason::ShuttingDown => "shutting-down",
        }
    }

    /// Parses the wire spelling; `None` for anything else (a newer server's reason included).
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The reason a status carries, if any.
    pub fn of(status: &tonic::Status) -> Option<Reason> {
        status
            .metadata()
            .get(meta::REASON)
            .and_then(|v| v.to_str().ok())
            .and_then(Reason::parse)
    }

    /// Attaches this reason to `status`.
    pub fn attach(self, status: &mut tonic::Status) {
        status.metadata_mut().insert(
            meta::REASON,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn reasons_round_trip_through_a_status() {
        for r in Reason::ALL {
            let mut st = tonic::Status::unavailable("x");
            assert_eq!(Reason::of(&st), None);
            r.attach(&mut st);
            assert_eq!(Reason::of(&st), Some(r));
        }
        assert_eq!(Reason::parse("bogus"), None);
    }
}
