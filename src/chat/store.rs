//! Compact storage of a room's messages: packed records in chunks of about 64 KiB.
//!
//! Why not a `Vec<Arc<ChatMessage>>`: that costs about 500 bytes of heap per 100-byte message
//! (the `Arc`, four `String`s and their allocations), so a node holding a million messages needs
//! over half a gigabyte. A packed record costs its text plus about 50 bytes.
//!
//! Why chunks: a full chunk is never written again, and the open chunk is copy-on-write
//! (`Arc::make_mut`), so a snapshot of the whole state is a list of `Arc` clones taken in
//! microseconds on the driver task, and encoded later on another thread while the driver keeps
//! appending (see [`super::SnapshotView`]). Chunks are also the unit of the snapshot format, so
//! encoding one is a memory copy, not a re-encoding of every message.
//!
//! Record layout (all integers are LEB128 varints, as in protobuf): index, term, zigzag of
//! `sent_at_unix_ms`, then author, id and text, each as a length followed by UTF-8 bytes. The
//! room name and seq are implicit (the chunk's room and position).

use std::sync::Arc;

use bytes::Bytes;
use prost::encoding::{decode_varint, encode_varint};

use super::{ChatError, ChatMessage};

/// A chunk is sealed (never written again) once its records reach this many bytes.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;

/// One message as packed in a chunk, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub index: u64,
    pub term: u64,
    pub sent_at_unix_ms: i64,
    pub author: &'a str,
    pub id: &'a str,
    pub text: &'a str,
}

impl<'a> Record<'a> {
    /// Appends the packed form to `out`.
    fn encode(&self, out: &mut Vec<u8>) {
        encode_varint(self.index, out);
        encode_varint(self.term, out);
        encode_varint(zigzag(self.sent_at_unix_ms), out);
        for s in [self.author, self.id, self.text] {
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
    }

    /// Reads one record from the front of `buf`, advancing it. Never panics on bad bytes.
    fn decode(buf: &mut &'a [u8]) -> Result<Record<'a>, ChatError> {
        let index = varint(buf)?;
        let term = varint(buf)?;
        let sent_at_unix_ms = unzigzag(varint(buf)?);
        let author = string(buf)?;
        let id = string(buf)?;
        let text = string(buf)?;
        Ok(Record {
            index,
            term,
            sent_at_unix_ms,
            author,
            id,
            text,
        })
    }

    /// The served form of this record, as message `seq` of `room`.
    pub fn to_message(self, room: &str, seq: u64) -> ChatMessage {
        ChatMessage {
            room: room.to_string(),
            seq,
            index: self.index,
            term: self.term,
            author: self.author.to_string(),
            text: self.text.to_string(),
            id: self.id.to_string(),
            sent_at_unix_ms: self.sent_at_unix_ms,
        }
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn corrupt(what: &str) -> ChatError {
    ChatError::Corrupt(format!("message record: {what}"))
}

fn varint(buf: &mut &[u8]) -> Result<u64, ChatError> {
    decode_varint(buf).map_err(|_| corrupt("bad varint"))
}

fn string<'a>(buf: &mut &'a [u8]) -> Result<&'a str, ChatError> {
    let len = usize::try_from(varint(buf)?).map_err(|_| corrupt("length overflow"))?;
    if len > buf.len() {
        return Err(corrupt("length past the end"));
    }
    let (s, rest) = buf.split_at(len);
    *buf = rest;
    std::str::from_utf8(s).map_err(|_| corrupt("text is not UTF-8"))
}

/// The bytes of a chunk: growing while it is a room's newest, then frozen. A frozen chunk may
/// be a slice of the snapshot it was restored from, so a restart holds each message once.
#[derive(Debug, Clone)]
enum ChunkData {
    Open(Vec<u8>),
    Sealed(Bytes),
}

impl ChunkData {
    fn as_slice(&self) -> &[u8] {
        match self {
            ChunkData::Open(v) => v,
            ChunkData::Sealed(b) => b,
        }
    }

    /// Appends `rec` and returns the new length. A sealed chunk is copied into a growable one
    /// first (which only happens to a room's last chunk after a restore).
    fn push(&mut self, rec: &Record<'_>) -> usize {
        match self {
            ChunkData::Open(v) => {
                rec.encode(v);
                v.len()
            }
            ChunkData::Sealed(b) => {
                let mut v = b.to_vec();
                rec.encode(&mut v);
                let len = v.len();
                *self = ChunkData::Open(v);
                len
            }
        }
    }

    fn seal(&mut self) {
        if let ChunkData::Open(v) = self {
            // Sealed from now on: give back the growth slack.
            v.shrink_to_fit();
            *self = ChunkData::Sealed(Bytes::from(std::mem::take(v)));
        }
    }
}

/// Packed records, in seq order. Invariant: `ends` is strictly increasing, its last element is
/// the data's length, and every record in the data decodes.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// Seq of the first record.
    first_seq: u64,
    /// The records, back to back.
    data: ChunkData,
    /// End offset of each record in `data`.
    ends: Vec<u32>,
}

impl Chunk {
    fn record(&self, i: usize) -> Option<Record<'_>> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let mut buf = self.data.as_slice().get(start..end)?;
        // Every record was validated when it was packed or restored.
        Record::decode(&mut buf).ok()
    }

    /// The packed bytes, for the snapshot.
    pub fn bytes(&self) -> &[u8] {
        self.data.as_slice()
    }
}

/// The packed bytes of a shared chunk, so a snapshot can hand chunks to an encoder as
/// [`bytes::Bytes`] without copying them.
#[derive(Debug)]
pub(crate) struct ChunkBytes(pub Arc<Chunk>);

impl AsRef<[u8]> for ChunkBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// All messages of one room. Invariant: chunk `k` starts at seq `1 + sum of earlier lengths`,
/// and `len` is the total.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoomLog {
    chunks: Vec<Arc<Chunk>>,
    len: u64,
}

impl RoomLog {
    /// Number of messages (= highest seq).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Appends `rec` as message `len + 1`.
    pub fn push(&mut self, rec: &Record<'_>) {
        let seq = self.len + 1;
        let need_new = match self.chunks.last() {
            None => true,
            Some(c) => c.bytes().len() >= CHUNK_BYTES,
        };
        if need_new {
            if let Some(last) = self.chunks.last_mut() {
                let c = Arc::make_mut(last);
                c.data.seal();
                c.ends.shrink_to_fit();
            }
            self.chunks.push(Arc::new(Chunk {
                first_seq: seq,
                data: ChunkData::Open(Vec::new()),
                ends: Vec::new(),
            }));
        }
        if let Some(last) = self.chunks.last_mut() {
            // Copies the open chunk only if a snapshot still holds it.
            let c = Arc::make_mut(last);
            let end = c.data.push(rec) as u32;
            c.ends.push(end);
        }
        self.len = seq;
    }

    fn chunk_of(&self, seq: u64) -> Option<(&Chunk, usize)> {
        if seq == 0 || seq > self.len {
            return None;
        }
        let k = self
            .chunks
            .partition_point(|c| c.first_seq <= seq)
            .checked_sub(1)?;
        let c = self.chunks.get(k)?;
        Some((c, usize::try_from(seq - c.first_seq).ok()?))
    }

    /// Message `seq`, if present.
    pub fn get(&self, seq: u64) -> Option<Record<'_>> {
        let (c, i) = self.chunk_of(seq)?;
        c.record(i)
    }

    /// Messages `lo..=hi` in ascending seq order (clamped to what exists).
    pub fn range(&self, lo: u64, hi: u64) -> impl DoubleEndedIterator<Item = (u64, Record<'_>)> {
        let lo = lo.max(1);
        let hi = hi.min(self.len);
        (lo..=hi).filter_map(move |seq| self.get(seq).map(|r| (seq, r)))
    }

    /// The chunks, oldest first, for a snapshot.
    pub fn chunks(&self) -> &[Arc<Chunk>] {
        &self.chunks
    }

    /// Rebuilds a room from snapshot chunks, checking every record (a snapshot may come from
    /// the network). `check` vets each record the way `apply` would have. The chunks are kept
    /// as given (slices of the snapshot, not copies).
    pub fn from_chunks(
        chunks: impl IntoIterator<Item = Bytes>,
        mut check: impl FnMut(&Record<'_>) -> Result<(), ChatError>,
    ) -> Result<RoomLog, ChatError> {
        let mut room = RoomLog::default();
        for bytes in chunks {
            let mut ends = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let rec = Record::decode(&mut rest)?;
                check(&rec)?;
                let end = u32::try_from(bytes.len() - rest.len())
                    .map_err(|_| corrupt("chunk over 4 GiB"))?;
                ends.push(end);
            }
            if ends.is_empty() {
                return Err(corrupt("empty chunk"));
            }
            let n = ends.len() as u64;
            room.chunks.push(Arc::new(Chunk {
                first_seq: room.len + 1,
                data: ChunkData::Sealed(bytes),
                ends,
            }));
            room.len += n;
        }
        Ok(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64, text: &str) -> Record<'_> {
        Record {
            index: i,
            term: 3,
            sent_at_unix_ms: -5,
            author: "ada",
            id: "id",
            text,
        }
    }

    #[test]
    fn records_round_trip_across_chunk_boundaries() {
        let text = "x".repeat(1000);
        let mut room = RoomLog::default();
        for i in 1..=200 {
            room.push(&rec(i, &text));
        }
        assert!(room.chunks().len() >= 3, "200 KB must span several chunks");
        for seq in 1..=200 {
            let r = room.get(seq).unwrap();
            assert_eq!((r.index, r.term, r.sent_at_unix_ms), (seq, 3, -5));
            assert_eq!(r.text, text);
        }
        assert!(room.get(0).is_none() && room.get(201).is_none());
        let seqs: Vec<u64> = room.range(99, 102).map(|(s, _)| s).collect();
        assert_eq!(seqs, vec![99, 100, 101, 102]);
        let copies = room
            .chunks()
            .iter()
            .map(|c| Bytes::copy_from_slice(c.bytes()));
        let mut back = RoomLog::from_chunks(copies, |_| Ok(())).unwrap();
        assert_eq!(back.len(), 200);
        assert_eq!(back.get(150), room.get(150));
        // A restored room keeps growing: its last chunk reopens.
        back.push(&rec(201, "tail"));
        assert_eq!(back.get(201).unwrap().text, "tail");
        assert_eq!(back.get(200).unwrap().text, text);
    }

    #[test]
    fn a_held_chunk_is_copied_not_changed() {
        let mut room = RoomLog::default();
        room.push(&rec(1, "a"));
        let held = room.chunks()[0].clone();
        room.push(&rec(2, "b"));
        assert_eq!(
            held.ends.len(),
            1,
            "the snapshot's view must not see later appends"
        );
        assert_eq!(room.len(), 2);
    }

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    proptest::proptest! {
        #[test]
        fn garbage_chunks_are_refused_without_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)
        ) {
            let _ = RoomLog::from_chunks([Bytes::from(data)], |_| Ok(()));
        }
    }
}
