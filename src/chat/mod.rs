//! The replicated chat state machine: rooms, gap-free per-room sequence numbers, a bounded
//! dedupe table keyed by client request id, and snapshot/restore. With a directory, sealed
//! history lives in append-only segment files ([`disk`]) and a snapshot is a manifest of them
//! (`snapshot.rs`, [`bundle`] for transfers); see docs/storage.md.
//!
//! It is deterministic: every node applies the same committed commands in the same order and
//! reaches the same state, because nothing here reads a clock or a random source (the accepting
//! node stamps the time and the message id into the command before proposing it). Only the
//! names of a node's file generations are random: they are local and never part of the state.
//!
//! Validation happens twice: the API refuses bad input before proposing (precise status codes
//! for the client), and `apply` refuses it again, so a malformed entry in the log (from an older
//! or buggy node) is skipped identically everywhere instead of half-applying.

pub mod bundle;
pub mod command_format;
pub mod disk;
mod snapshot;
mod store;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use self::command_format::{CommandPb, CreateRoomPb, SendPb};
use self::disk::{ChatDir, Segments};
use self::store::{ChunkRef, Piece, Record, RoomLog};

pub use self::snapshot::{manifest_layout, manifest_with_gen, SnapshotView};

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
    /// A log entry or snapshot could not be decoded, or a file of the state machine does not
    /// hold what its index says.
    #[error("corrupt state machine data: {0}")]
    Corrupt(String),
    /// A file of the state machine could not be read or written.
    #[error("state machine i/o: {0}")]
    Io(String),
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

/// Total bytes of open tails above which the largest tails are sealed (written to disk) early,
/// so memory stays bounded however many rooms there are.
pub const TAIL_BUDGET: usize = 8 << 20;

/// The chat state. With a directory ([`ChatState::open`]), sealed chunks of history live in
/// segment files and RAM holds the per-room chunk index, the open tails and the dedupe table;
/// without one ([`ChatState::new`], for tests), everything stays in memory.
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
    /// Bytes in all open tails. Invariant: the sum of `tail.len()` over the rooms.
    tail_bytes: usize,
    /// The chat directory, if the state has one.
    dir: Option<ChatDir>,
    /// The generation in use. `Some` once a state with a directory was restored.
    disk: Option<Disk>,
}

/// The segment files a state with a directory appends to.
#[derive(Debug)]
struct Disk {
    gen: String,
    segs: Arc<Segments>,
    /// Length of each segment as placed so far (never empty; only the last one grows).
    seg_lens: Vec<u64>,
    /// Write sequence number of the last chunk handed to the writer.
    next_wseq: u64,
    /// Sealed chunks still held in memory, in write order: (room, wseq).
    pending: VecDeque<(Arc<str>, u64)>,
}

/// A read of a room's history, planned under the state's lock and done outside it
/// ([`HistoryRead::load`]): disk reads never hold up the driver.
#[derive(Debug)]
pub struct HistoryRead {
    room: String,
    pieces: Vec<Piece>,
    lo: u64,
    hi: u64,
    reverse: bool,
    segs: Option<Arc<Segments>>,
}

impl HistoryRead {
    /// Reads the planned messages (from memory, or with one `pread` per 64 KiB chunk). May
    /// block on the disk: call it on a blocking thread from async code.
    pub fn load(self) -> Result<Vec<Arc<ChatMessage>>, ChatError> {
        let mut out = Vec::new();
        for p in self.pieces {
            let (first_seq, bytes) = match p {
                Piece::Mem { first_seq, bytes } => (first_seq, bytes),
                Piece::Disk {
                    first_seq,
                    count,
                    seg,
                    offset,
                    len,
                } => {
                    let segs = self.segs.as_ref().ok_or_else(|| {
                        ChatError::Io("a chunk on disk but no segment files".into())
                    })?;
                    let frame = segs.read(seg, offset, len)?;
                    let bytes =
                        disk::decode_frame(frame, &self.room, first_seq, count).map_err(|e| {
                            ChatError::Corrupt(format!(
                                "{} at offset {offset}: {e}",
                                disk::seg_path(segs.dir(), seg).display()
                            ))
                        })?;
                    (first_seq, bytes)
                }
            };
            store::for_each_in(&bytes, first_seq, self.lo, self.hi, |seq, r| {
                out.push(Arc::new(r.to_message(&self.room, seq)))
            })?;
        }
        if self.reverse {
            out.reverse();
        }
        Ok(out)
    }
}

impl ChatState {
    /// An empty state with the given limits, held entirely in memory (tests, tools).
    pub fn new(dedupe_capacity: usize, max_text_bytes: usize) -> Self {
        ChatState {
            rooms: BTreeMap::new(),
            dedupe: HashMap::new(),
            dedupe_order: VecDeque::new(),
            dedupe_capacity: dedupe_capacity.max(1),
            max_text_bytes,
            applied: 0,
            tail_bytes: 0,
            dir: None,
            disk: None,
        }
    }

    /// An empty state that keeps its history in `dir`. Call [`ChatState::restore`] before
    /// applying anything: it opens (or, for an empty image, creates) the generation of files.
    pub fn open(dir: ChatDir, dedupe_capacity: usize, max_text_bytes: usize) -> Self {
        let mut s = ChatState::new(dedupe_capacity, max_text_bytes);
        s.dir = Some(dir);
        s
    }

    /// A state with the same limits and directory, and nothing in it.
    fn empty_like(&self) -> ChatState {
        let mut s = ChatState::new(self.dedupe_capacity, self.max_text_bytes);
        s.dir = self.dir.clone();
        s
    }

    /// Last raft index applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Records that `index` was applied without a chat command (no-op or configuration entry).
    pub fn skip(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    /// The generation directory in use, if the state has files.
    pub fn gen_dir(&self) -> Option<PathBuf> {
        let (dir, d) = (self.dir.as_ref()?, self.disk.as_ref()?);
        Some(dir.gen_dir(&d.gen))
    }

    /// Removes every file of the chat directory the state does not use (older generations,
    /// interrupted transfers). For startup only, when no transfer can be running.
    pub fn remove_unused_files(&self) -> Result<(), ChatError> {
        match (&self.dir, &self.disk) {
            (Some(dir), Some(d)) => dir.remove_all_but(&d.gen),
            _ => Ok(()),
        }
    }

    /// Blocks until every sealed chunk is written and fsynced. Never on an async task.
    pub fn flush(&self) -> Result<(), ChatError> {
        match &self.disk {
            Some(d) => d.segs.barrier(),
            None => Ok(()),
        }
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
                let Some(seq) = self.push(
                    &name,
                    &Record {
                        index,
                        term,
                        sent_at_unix_ms,
                        author: &author,
                        id: &id,
                        text: &text,
                    },
                ) else {
                    return Applied::Rejected(ChatError::Corrupt("room vanished".into()));
                };
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

    /// Appends `rec` to room `name` (which exists), sealing its tail when full and the largest
    /// tails when all of them pass [`TAIL_BUDGET`]. Returns the new message's seq.
    fn push(&mut self, name: &Arc<str>, rec: &Record<'_>) -> Option<u64> {
        let log = self.rooms.get_mut(name)?;
        let before = log.tail.len();
        let full = log.push(rec);
        let seq = log.len();
        self.tail_bytes += log.tail.len() - before;
        if full {
            self.seal(name);
        }
        if self.tail_bytes > TAIL_BUDGET {
            self.shed_tails();
        }
        self.reap();
        Some(seq)
    }

    /// Seals the open tail of room `name` into a chunk: handed to the writer thread (and kept
    /// in memory until written), or kept in memory for a state without files.
    fn seal(&mut self, name: &Arc<str>) {
        let Some(log) = self.rooms.get_mut(name) else {
            return;
        };
        if log.tail_count == 0 {
            return;
        }
        let first_seq = log.tail_first_seq();
        let count = log.tail_count;
        let mut records = std::mem::take(&mut log.tail);
        log.tail_count = 0;
        self.tail_bytes -= records.len();
        let chunk = match &mut self.disk {
            Some(d) => {
                let (frame, at) = disk::encode_frame(name, first_seq, count, &records);
                let len = frame.len() as u64;
                let mut seg = d.seg_lens.len() - 1;
                if d.seg_lens[seg] > 0 && d.seg_lens[seg] + len > disk::SEGMENT_BYTES {
                    d.seg_lens.push(0);
                    seg += 1;
                }
                let offset = d.seg_lens[seg];
                d.seg_lens[seg] += len;
                d.next_wseq += 1;
                let wseq = d.next_wseq;
                let mem = frame.slice(at..);
                d.segs.write(seg as u32, offset, frame, wseq);
                d.pending.push_back((name.clone(), wseq));
                log.unwritten.push_back(mem);
                ChunkRef {
                    first_seq,
                    offset,
                    count,
                    seg: seg as u32,
                    len: len as u32,
                }
            }
            None => {
                records.shrink_to_fit();
                log.unwritten.push_back(Bytes::from(records));
                ChunkRef {
                    first_seq,
                    offset: 0,
                    count,
                    seg: u32::MAX,
                    len: 0,
                }
            }
        };
        log.sealed.push(chunk);
    }

    /// Seals the largest open tails until they hold at most half of [`TAIL_BUDGET`].
    fn shed_tails(&mut self) {
        let mut tails: Vec<(usize, Arc<str>)> = self
            .rooms
            .iter()
            .filter(|(_, l)| l.tail_count > 0)
            .map(|(n, l)| (l.tail.len(), n.clone()))
            .collect();
        tails.sort_unstable_by_key(|t| std::cmp::Reverse(t.0));
        for (_, name) in tails {
            if self.tail_bytes <= TAIL_BUDGET / 2 {
                break;
            }
            self.seal(&name);
        }
    }

    /// Drops the memory copy of every chunk the writer thread has written (the oldest
    /// unwritten chunk of its room, since the writer goes in order).
    fn reap(&mut self) {
        let Some(d) = &mut self.disk else {
            return;
        };
        let written = d.segs.written();
        while let Some((room, wseq)) = d.pending.front() {
            if *wseq > written {
                break;
            }
            if let Some(log) = self.rooms.get_mut(room) {
                log.unwritten.pop_front();
            }
            d.pending.pop_front();
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

    /// The original message of a request id. Reads one chunk (from disk when it left memory):
    /// duplicates are rare, and the chunk is usually a recent one, still in the page cache.
    fn lookup_dedupe(&self, id: &str) -> Option<Arc<ChatMessage>> {
        let (room, seq) = self.dedupe.get(id)?;
        self.history_read(room, *seq, 1, false)
            .ok()?
            .load()
            .ok()?
            .pop()
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
    /// `reverse`, descending from `from_seq` (0 = the newest). Reads under the caller's lock:
    /// servers use [`ChatState::history_read`] and load outside it.
    pub fn history(
        &self,
        room: &str,
        from_seq: u64,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Arc<ChatMessage>>, ChatError> {
        self.history_read(room, from_seq, limit, reverse)?.load()
    }

    /// Plans [`ChatState::history`]: cheap (no disk access), so it runs under the lock, and
    /// the returned read does the I/O.
    pub fn history_read(
        &self,
        room: &str,
        from_seq: u64,
        limit: usize,
        reverse: bool,
    ) -> Result<HistoryRead, ChatError> {
        let log = self
            .rooms
            .get(room)
            .ok_or_else(|| ChatError::RoomNotFound(room.to_string()))?;
        let len = log.len();
        let limit = limit as u64;
        let (lo, hi) = if limit == 0 {
            (1, 0)
        } else if reverse {
            let top = if from_seq == 0 {
                len
            } else {
                from_seq.min(len)
            };
            (top.saturating_sub(limit) + 1, top)
        } else {
            let start = from_seq.max(1);
            (start, start.saturating_add(limit - 1).min(len))
        };
        Ok(HistoryRead {
            room: room.to_string(),
            pieces: if lo <= hi {
                log.pieces(lo, hi)
            } else {
                Vec::new()
            },
            lo,
            hi,
            reverse,
            segs: self.disk.as_ref().map(|d| d.segs.clone()),
        })
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
}

#[cfg(test)]
mod disk_tests;
#[cfg(test)]
mod tests;
