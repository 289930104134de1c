//! The byte formats of the chat state machine: commands carried in log entries and snapshots.
//!
//! Both are prost messages defined here rather than in `proto/raft.proto`: they are storage
//! formats, not part of the client API, so they should not show up in server reflection. Fields
//! are only ever added, so an old log replays on a newer binary. Snapshots carry a format
//! version that is checked on restore.

use prost::Message as _;

/// A command in a log entry. Exactly one of the fields is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommandPb {
    /// Append a message to a room.
    #[prost(message, optional, tag = "1")]
    pub send: Option<SendPb>,
    /// Create an empty room.
    #[prost(message, optional, tag = "2")]
    pub create_room: Option<CreateRoomPb>,
}

/// Payload of a send command.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SendPb {
    /// Room name.
    #[prost(string, tag = "1")]
    pub room: String,
    /// Author name.
    #[prost(string, tag = "2")]
    pub author: String,
    /// Message text.
    #[prost(string, tag = "3")]
    pub text: String,
    /// Message id (the client's request id, or a server-assigned UUID).
    #[prost(string, tag = "4")]
    pub id: String,
    /// Wall-clock time at the accepting node.
    #[prost(int64, tag = "5")]
    pub sent_at_unix_ms: i64,
}

/// Payload of a create-room command.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateRoomPb {
    /// Room name.
    #[prost(string, tag = "1")]
    pub room: String,
}

/// One stored message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredMessagePb {
    /// Per-room sequence number.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// Raft index.
    #[prost(uint64, tag = "2")]
    pub index: u64,
    /// Raft term.
    #[prost(uint64, tag = "3")]
    pub term: u64,
    /// Author.
    #[prost(string, tag = "4")]
    pub author: String,
    /// Text.
    #[prost(string, tag = "5")]
    pub text: String,
    /// Message id.
    #[prost(string, tag = "6")]
    pub id: String,
    /// Wall-clock time at the accepting node.
    #[prost(int64, tag = "7")]
    pub sent_at_unix_ms: i64,
}

/// One room in a snapshot.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomPb {
    /// Room name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Messages in seq order, starting at seq 1.
    #[prost(message, repeated, tag = "2")]
    pub messages: Vec<StoredMessagePb>,
}

/// One dedupe-table entry: request id to (room, seq), in insertion order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DedupePb {
    /// Client request id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Room of the original message.
    #[prost(string, tag = "2")]
    pub room: String,
    /// Seq of the original message.
    #[prost(uint64, tag = "3")]
    pub seq: u64,
}

/// The whole state machine image.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotPb {
    /// Format version; see [`SNAPSHOT_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// Last raft index applied into this image.
    #[prost(uint64, tag = "2")]
    pub applied: u64,
    /// Rooms in name order.
    #[prost(message, repeated, tag = "3")]
    pub rooms: Vec<RoomPb>,
    /// Dedupe table, oldest first (so eviction order survives a restore). Version 1 only:
    /// version 2 rebuilds the table from the newest messages, which hold the same ids.
    #[prost(message, repeated, tag = "4")]
    pub dedupe: Vec<DedupePb>,
    /// Rooms in name order, as packed chunks (version 2).
    #[prost(message, repeated, tag = "5")]
    pub packed_rooms: Vec<PackedRoomPb>,
    /// Version 3 (a manifest): the generation directory the chunks are in.
    #[prost(string, tag = "6")]
    pub gen: String,
    /// Version 3: the length of each segment of the generation at the snapshot (segment `n`
    /// is element `n`). Bytes past these lengths are not part of the snapshot.
    #[prost(uint64, repeated, tag = "7")]
    pub segment_lens: Vec<u64>,
    /// Version 3: rooms in name order, as chunk references plus the open tail.
    #[prost(message, repeated, tag = "8")]
    pub disk_rooms: Vec<DiskRoomPb>,
}

/// One room in a version-3 snapshot (a manifest): where its sealed chunks are, and the packed
/// records of its open tail.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiskRoomPb {
    /// Room name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Number of messages.
    #[prost(uint64, tag = "2")]
    pub count: u64,
    /// Sealed chunks, seq order, starting at seq 1.
    #[prost(message, repeated, tag = "3")]
    pub chunks: Vec<ChunkRefPb>,
    /// Packed records after the last sealed chunk.
    #[prost(bytes = "bytes", tag = "4")]
    pub tail: bytes::Bytes,
    /// Number of records in `tail`.
    #[prost(uint32, tag = "5")]
    pub tail_count: u32,
}

/// Where one sealed chunk is: a frame in a segment file of the generation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkRefPb {
    /// Seq of its first record.
    #[prost(uint64, tag = "1")]
    pub first_seq: u64,
    /// Number of records.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// Segment number.
    #[prost(uint32, tag = "3")]
    pub seg: u32,
    /// Offset of the frame in the segment.
    #[prost(uint64, tag = "4")]
    pub offset: u64,
    /// Length of the frame.
    #[prost(uint32, tag = "5")]
    pub len: u32,
}

/// One room in a version-2 snapshot: its messages as the packed chunks of
/// [`super::store`], so that encoding a snapshot copies memory instead of re-encoding messages.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PackedRoomPb {
    /// Room name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Number of messages, checked against the chunks on restore.
    #[prost(uint64, tag = "2")]
    pub count: u64,
    /// Packed records, seq order, starting at seq 1.
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub chunks: Vec<bytes::Bytes>,
}

/// Snapshot format written by a state without a directory (packed chunks inline). Version 1 (a
/// message per record, dedupe table included) is still read, so a node restarts from a
/// snapshot an older binary wrote.
pub const SNAPSHOT_VERSION: u32 = 2;
/// Snapshot format written by a state with a directory: a manifest of chunk references into
/// segment files (see `docs/storage.md`).
pub const SNAPSHOT_VERSION_MANIFEST: u32 = 3;
/// The first snapshot format, still accepted by restore.
pub const SNAPSHOT_VERSION_V1: u32 = 1;

/// Encodes any of the formats above.
pub fn encode<M: prost::Message>(m: &M) -> bytes::Bytes {
    bytes::Bytes::from(m.encode_to_vec())
}

/// Decodes a command, rejecting bytes that are not one.
pub fn decode_command(data: &[u8]) -> Result<CommandPb, prost::DecodeError> {
    CommandPb::decode(data)
}

/// Decodes a snapshot image.
pub fn decode_snapshot(data: bytes::Bytes) -> Result<SnapshotPb, prost::DecodeError> {
    SnapshotPb::decode(data)
}
