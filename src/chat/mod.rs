//! The replicated chat state machine: rooms, gap-free per-room sequence numbers, a bounded
//! dedupe table keyed by client request id, and snapshot/restore.
//!
//! It is deterministic: every node applies the same committed commands in the same order and
//! reaches the same state, because nothing here reads a clock or a random source (the accepting
//! node stamps the time and the message id into the command before proposing it).
//!
//! Validation happens twice: the API refuses bad input before proposing (precise status codes
//! for the client), and `apply` refuses it again, so a malformed entry in the log (from an older
//! or buggy node) is skipped identically everywhere instead of half-applying.

pub mod command_format;
mod store;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use self::command_format::{
    CommandPb, CreateRoomPb, DedupePb, PackedRoomPb, RoomPb, SendPb, SnapshotPb, SNAPSHOT_VERSION,
    SNAPSHOT_VERSION_V1,
};
use self::store::{Record, RoomLog};

/// Default cap on the text of one message (64 KiB).
pub const DEFAULT_MAX_TEXT_BYTES: usize = 64 * 1024;
/// Cap on room and author names, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Cap on a client request id, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Default number of request ids remembered for deduplication. Older ids are forgotten first;
/// a retry older than that many sends is treated as new (documented in docs/node.md).
pub const DEFAULT_DEDUPE_CAPACITY: usize = 100_000;

/// Errors of the chat layer. The API maps them to gRPC codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The input is not acceptable (INVALID_ARGUMENT).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The room does not exist (NOT_FOUND).
    #[error("room {0:?} not found")]
    RoomNotFound(String),
    /// A log entry or snapshot could not be decoded.
    #[error("corrupt state machine data: {0}")]
    Corrupt(String),
}

/// A chat message as stored and served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// Room name.
    pub room: String,
    /// Position in the room: 1, 2, 3, ... with no gaps.
    pub seq: u64,
    /// Raft index of the entry that carried it.
    pub index: u64,
    /// Raft term of that entry.
    pub term: u64,
    /// Author name.
    pub author: String,
    /// Text.
    pub text: String,
    /// Message id (client request id or server-assigned UUID).
    pub id: String,
    /// Wall-clock time at the accepting node (informational).
    pub sent_at_unix_ms: i64,
}

/// A state-machine command, as proposed to Raft.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Append a message to a room, creating the room on first use.
    Send {
        /// Room name.
        room: String,
        /// Author name.
        author: String,
        /// Text.
        text: String,
        /// Message id; doubles as the dedupe key.
        id: String,
        /// Wall-clock time at the accepting node.
        sent_at_unix_ms: i64,
    },
    /// Create an empty room.
    CreateRoom {
        /// Room name.
        room: String,
    },
}

impl Command {
    /// Checks the command against the limits. Used before proposing and again when applying.
    pub fn validate(&self, max_text_bytes: usize) -> Result<(), ChatError> {
        match self {
            Command::Send {
                room,
                author,
                text,
                id,
                ..
            } => {
                validate_room(room)?;
                validate_send_fields(author, text, id, max_text_bytes)
            }
            Command::CreateRoom { room } => validate_room(room),
        }
    }

    /// Encodes the command for a log entry.
    pub fn encode(&self) -> Bytes {
        let pb = match self.clone() {
            Command::Send {
                room,
                author,
                text,
                id,
                sent_at_unix_ms,
            } => CommandPb {
                send: Some(SendPb {
                    room,
                    author,
                    text,
                    id,
                    sent_at_unix_ms,
                }),
                create_room: None,
            },
            Command::CreateRoom { room } => CommandPb {
                send: None,
                create_room: Some(CreateRoomPb { room }),
            },
        };
        command_format::encode(&pb)
    }

    /// Decodes a log entry's payload.
    pub fn decode(data: &[u8]) -> Result<Command, ChatError> {
        let pb =
            command_format::decode_command(data).map_err(|e| ChatError::Corrupt(e.to_string()))?;
        match (pb.send, pb.create_room) {
            (Some(s), None) => Ok(Command::Send {
                room: s.room,
                author: s.author,
                text: s.text,
                id: s.id,
                sent_at_unix_ms: s.sent_at_unix_ms,
            }),
            (None, Some(c)) => Ok(Command::CreateRoom { room: c.room }),
            _ => Err(ChatError::Corrupt(
                "a command must set exactly one of send, create_room".into(),
            )),
        }
    }
}

/// Checks the fields of a send other than the room: used by [`Command::validate`] and, without
/// building a command, for every message a snapshot restores.
fn validate_send_fields(
    author: &str,
    text: &str,
    id: &str,
    max_text_bytes: usize,
) -> Result<(), ChatError> {
    if author.trim().is_empty() {
        return Err(ChatError::InvalidArgument(
            "author must not be empty".into(),
        ));
    }
    if author.len() > MAX_NAME_BYTES {
        return Err(ChatError::InvalidArgument(format!(
            "author is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if text.is_empty() {
        return Err(ChatError::InvalidArgument("text must not be empty".into()));
    }
    if text.len() > max_text_bytes {
        return Err(ChatError::InvalidArgument(format!(
            "text is {} bytes, over the {max_text_bytes}-byte limit",
            text.len()
        )));
    }
    if id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES {
        return Err(ChatError::InvalidArgument(format!(
            "client_request_id must be 1 to {MAX_REQUEST_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Checks a room name: non-empty, bounded, no control characters.
pub fn validate_room(room: &str) -> Result<(), ChatError> {
    if room.trim().is_empty() {
        return Err(ChatError::InvalidArgument("room must not be empty".into()));
    }
    if room.len() > MAX_NAME_BYTES {
        return Err(ChatError::InvalidArgument(format!(
            "room is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if room.chars().any(char::is_control) {
        return Err(ChatError::InvalidArgument(
            "room must not contain control characters".into(),
        ));
    }
    Ok(())
}

/// What applying one entry produced; the driver hands it to the waiting client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A send. `duplicate` is true when the request id was seen before and `message` is the
    /// original.
    Sent {
        /// The stored message.
        message: Arc<ChatMessage>,
        /// True for a retry answered from the dedupe table.
        duplicate: bool,
    },
    /// A create-room. `created` is false when the room already existed.
    RoomCreated {
        /// Whether this command created the room.
        created: bool,
        /// Messages in the room.
        message_count: u64,
    },
    /// A no-op or configuration entry (nothing for the chat).
    Nothing,
    /// The entry was refused (invalid or undecodable); identical on every node.
    Rejected(ChatError),
}

/// Summary of one room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomInfo {
    /// Room name.
    pub name: String,
    /// Number of messages (= highest seq).
    pub message_count: u64,
}

/// The chat state. Messages are held in memory (see docs/node.md for the retention limit),
/// packed by [`store::RoomLog`] at about the size of their text plus 50 bytes.
#[derive(Debug)]
pub struct ChatState {
    /// Rooms by name. Invariant: message `seq` of a room is at position `seq` (gap-free).
    rooms: BTreeMap<Arc<str>, RoomLog>,
    /// Request id to (room, seq) of the original message.
    dedupe: HashMap<Arc<str>, (Arc<str>, u64)>,
    /// Request ids in insertion order, for eviction. Invariant: same keys as `dedupe`, which
    /// are the ids of the last `dedupe_capacity` messages stored, in index order.
    dedupe_order: VecDeque<Arc<str>>,
    dedupe_capacity: usize,
    max_text_bytes: usize,
    /// Last raft index applied. Invariant: only grows, except through `restore`.
    applied: u64,
}

/// A frozen copy of the whole state, taken in microseconds by [`ChatState::snapshot_view`]
/// (it shares the packed chunks) and encoded by [`SnapshotView::encode`] on any thread, so a
/// snapshot never stalls the task that applies entries.
#[derive(Debug, Clone)]
pub struct SnapshotView {
    applied: u64,
    rooms: Vec<(Arc<str>, u64, Vec<Arc<store::Chunk>>)>,
}

impl SnapshotView {
    /// Raft index the view was taken at.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Encodes the view in the current snapshot format. Costs one copy of the packed
    /// messages.
    pub fn encode(&self) -> Bytes {
        let pb = SnapshotPb {
            version: SNAPSHOT_VERSION,
            applied: self.applied,
            packed_rooms: self
                .rooms
                .iter()
                .map(|(name, count, chunks)| PackedRoomPb {
                    name: name.to_string(),
                    count: *count,
                    chunks: chunks
                        .iter()
                        .map(|c| Bytes::from_owner(store::ChunkBytes(c.clone())))
                        .collect(),
                })
                .collect(),
            ..SnapshotPb::default()
        };
        command_format::encode(&pb)
    }
}

impl ChatState {
    /// An empty state with the given limits.
    pub fn new(dedupe_capacity: usize, max_text_bytes: usize) -> Self {
        ChatState {
            rooms: BTreeMap::new(),
            dedupe: HashMap::new(),
            dedupe_order: VecDeque::new(),
            dedupe_capacity: dedupe_capacity.max(1),
            max_text_bytes,
            applied: 0,
        }
    }

    /// Last raft index applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Records that `index` was applied without a chat command (no-op or configuration entry).
    pub fn skip(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    /// Applies the entry at `index` (term `term`) carrying `data`.
    pub fn apply(&mut self, index: u64, term: u64, data: &[u8]) -> Applied {
        self.applied = self.applied.max(index);
        let cmd = match Command::decode(data) {
            Ok(c) => c,
            Err(e) => return Applied::Rejected(e),
        };
        if let Err(e) = cmd.validate(self.max_text_bytes) {
            return Applied::Rejected(e);
        }
        match cmd {
            Command::CreateRoom { room } => {
                let msgs = self.room_entry(&room);
                Applied::RoomCreated {
                    created: msgs.is_none(),
                    message_count: msgs.unwrap_or(0),
                }
            }
            Command::Send {
                room,
                author,
                text,
                id,
                sent_at_unix_ms,
            } => {
                if let Some(original) = self.lookup_dedupe(&id) {
                    return Applied::Sent {
                        message: original,
                        duplicate: true,
                    };
                }
                let name = match self.rooms.get_key_value(room.as_str()) {
                    Some((name, _)) => name.clone(),
                    None => {
                        let name: Arc<str> = Arc::from(room.as_str());
                        self.rooms.insert(name.clone(), RoomLog::default());
                        name
                    }
                };
                let Some(log) = self.rooms.get_mut(&name) else {
                    return Applied::Rejected(ChatError::Corrupt("room vanished".into()));
                };
                log.push(&Record {
                    index,
                    term,
                    sent_at_unix_ms,
                    author: &author,
                    id: &id,
                    text: &text,
                });
                let seq = log.len();
                let id: Arc<str> = Arc::from(id);
                self.remember(id.clone(), name, seq);
                Applied::Sent {
                    message: Arc::new(ChatMessage {
                        room,
                        seq,
                        index,
                        term,
                        author,
                        text,
                        id: id.to_string(),
                        sent_at_unix_ms,
                    }),
                    duplicate: false,
                }
            }
        }
    }

    /// Creates `room` if it is missing; returns its previous message count (`None`: created).
    fn room_entry(&mut self, room: &str) -> Option<u64> {
        if let Some(log) = self.rooms.get(room) {
            return Some(log.len());
        }
        self.rooms.insert(Arc::from(room), RoomLog::default());
        None
    }

    fn lookup_dedupe(&self, id: &str) -> Option<Arc<ChatMessage>> {
        let (room, seq) = self.dedupe.get(id)?;
        let rec = self.rooms.get(room)?.get(*seq)?;
        Some(Arc::new(rec.to_message(room, *seq)))
    }

    fn remember(&mut self, id: Arc<str>, room: Arc<str>, seq: u64) {
        while self.dedupe_order.len() >= self.dedupe_capacity {
            match self.dedupe_order.pop_front() {
                Some(old) => {
                    self.dedupe.remove(&old);
                }
                None => break,
            }
        }
        self.dedupe_order.push_back(id.clone());
        self.dedupe.insert(id, (room, seq));
    }

    /// Number of rooms, for the metrics.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Messages stored over every room: a walk over the rooms, so the node calls it only after
    /// a restore and counts applied messages otherwise.
    pub fn message_count(&self) -> u64 {
        self.rooms.values().map(RoomLog::len).sum()
    }

    /// True when the room exists.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Number of messages in a room, if it exists.
    pub fn room_len(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).map(RoomLog::len)
    }

    /// Up to `limit` messages of `room` starting at `from_seq` (inclusive), ascending; or, with
    /// `reverse`, descending from `from_seq` (0 = the newest).
    pub fn history(
        &self,
        room: &str,
        from_seq: u64,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Arc<ChatMessage>>, ChatError> {
        let log = self
            .rooms
            .get(room)
            .ok_or_else(|| ChatError::RoomNotFound(room.to_string()))?;
        let len = log.len();
        let limit = limit as u64;
        let out = |(seq, r): (u64, Record<'_>)| Arc::new(r.to_message(room, seq));
        if limit == 0 {
            return Ok(Vec::new());
        }
        if reverse {
            let top = if from_seq == 0 {
                len
            } else {
                from_seq.min(len)
            };
            if top == 0 {
                return Ok(Vec::new());
            }
            let lo = top.saturating_sub(limit) + 1;
            Ok(log.range(lo, top).rev().map(out).collect())
        } else {
            let start = from_seq.max(1);
            if start > len {
                return Ok(Vec::new());
            }
            let end = start.saturating_add(limit - 1).min(len);
            Ok(log.range(start, end).map(out).collect())
        }
    }

    /// Rooms in name order, strictly after `after`, at most `limit`.
    pub fn list_rooms(&self, after: Option<&str>, limit: usize) -> Vec<RoomInfo> {
        use std::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.rooms
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(name, log)| RoomInfo {
                name: name.to_string(),
                message_count: log.len(),
            })
            .collect()
    }

    /// A frozen copy of the state for a snapshot: shares every packed chunk, so it costs a few
    /// `Arc` clones per room, whatever the number of messages.
    pub fn snapshot_view(&self) -> SnapshotView {
        SnapshotView {
            applied: self.applied,
            rooms: self
                .rooms
                .iter()
                .map(|(name, log)| (name.clone(), log.len(), log.chunks().to_vec()))
                .collect(),
        }
    }

    /// Encodes the whole state for a Raft snapshot (a view, encoded at once).
    pub fn snapshot(&self) -> Bytes {
        self.snapshot_view().encode()
    }

    /// Replaces the state with a snapshot image. An empty image is the empty state (a fresh
    /// log's index-0 snapshot). On error the current state is left untouched.
    pub fn restore(&mut self, data: &Bytes) -> Result<(), ChatError> {
        let mut fresh = ChatState::new(self.dedupe_capacity, self.max_text_bytes);
        if data.is_empty() {
            *self = fresh;
            return Ok(());
        }
        let pb = command_format::decode_snapshot(data.clone())
            .map_err(|e| ChatError::Corrupt(e.to_string()))?;
        fresh.applied = pb.applied;
        match pb.version {
            SNAPSHOT_VERSION => fresh.restore_packed(pb.packed_rooms)?,
            SNAPSHOT_VERSION_V1 => fresh.restore_v1(pb.rooms, pb.dedupe)?,
            v => {
                return Err(ChatError::Corrupt(format!(
                    "snapshot format version {v} (this binary reads {SNAPSHOT_VERSION_V1} and \
                     {SNAPSHOT_VERSION})"
                )))
            }
        }
        *self = fresh;
        Ok(())
    }

    /// Checks one restored message the way `apply` checks a send.
    fn check_record(&self, r: &Record<'_>) -> Result<(), ChatError> {
        validate_send_fields(r.author, r.text, r.id, self.max_text_bytes)
            .map_err(|e| ChatError::Corrupt(format!("snapshot holds a message that {e}")))
    }

    fn restore_packed(&mut self, rooms: Vec<PackedRoomPb>) -> Result<(), ChatError> {
        for room in rooms {
            validate_room(&room.name)?;
            let log = RoomLog::from_chunks(room.chunks, |r| self.check_record(r))?;
            if log.len() != room.count {
                return Err(ChatError::Corrupt(format!(
                    "room {:?} holds {} messages, its header says {}",
                    room.name,
                    log.len(),
                    room.count
                )));
            }
            self.rooms.insert(Arc::from(room.name), log);
        }
        // The dedupe table holds exactly the ids of the newest `dedupe_capacity` messages, in
        // index order: rebuild it from them instead of storing it twice.
        let cap = self.dedupe_capacity as u64;
        let mut newest: Vec<(u64, Arc<str>, u64, Arc<str>)> = Vec::new();
        for (name, log) in &self.rooms {
            let lo = log.len().saturating_sub(cap) + 1;
            for (seq, r) in log.range(lo, log.len()) {
                newest.push((r.index, Arc::from(r.id), seq, name.clone()));
            }
        }
        newest.sort_unstable_by_key(|(index, ..)| *index);
        let skip = newest.len().saturating_sub(self.dedupe_capacity);
        for (_, id, seq, room) in newest.into_iter().skip(skip) {
            self.remember(id, room, seq);
        }
        Ok(())
    }

    fn restore_v1(&mut self, rooms: Vec<RoomPb>, dedupe: Vec<DedupePb>) -> Result<(), ChatError> {
        for room in rooms {
            let mut log = RoomLog::default();
            for (i, m) in room.messages.into_iter().enumerate() {
                if m.seq != i as u64 + 1 {
                    return Err(ChatError::Corrupt(format!(
                        "room {:?} has seq {} at position {}",
                        room.name,
                        m.seq,
                        i + 1
                    )));
                }
                log.push(&Record {
                    index: m.index,
                    term: m.term,
                    sent_at_unix_ms: m.sent_at_unix_ms,
                    author: &m.author,
                    id: &m.id,
                    text: &m.text,
                });
            }
            self.rooms.insert(Arc::from(room.name), log);
        }
        for d in dedupe {
            let room = match self.rooms.get_key_value(d.room.as_str()) {
                Some((name, _)) => name.clone(),
                None => Arc::from(d.room),
            };
            self.remember(Arc::from(d.id), room, d.seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
