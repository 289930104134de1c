//! Compact storage of a room's messages: packed records in chunks of about 64 KiB.
//!
//! Why not a `Vec<Arc<ChatMessage>>`: that costs about 500 bytes of heap per 100-byte message
//! (the `Arc`, four `String`s and their allocations). A packed record costs its text plus about
//! 50 bytes, and a sealed chunk leaves memory once it is written to a segment file
//! ([`super::disk`]): RAM keeps one [`ChunkRef`] (32 bytes) per chunk of history (64 KiB, or
//! less when many rooms share the tail budget) and each room's open tail.
//!
//! Record layout (all integers are LEB128 varints, as in protobuf): index, term, zigzag of
//! `sent_at_unix_ms`, then author, id and text, each as a length followed by UTF-8 bytes. The
//! room name and seq are implicit (the chunk's room and position).

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

/// Decodes every record of a packed run, checking each with `check`; returns how many.
pub(crate) fn count_records(
    bytes: &[u8],
    mut check: impl FnMut(&Record<'_>) -> Result<(), ChatError>,
) -> Result<u32, ChatError> {
    let mut rest = bytes;
    let mut n: u32 = 0;
    while !rest.is_empty() {
        let rec = Record::decode(&mut rest)?;
        check(&rec)?;
        n = n
            .checked_add(1)
            .ok_or_else(|| corrupt("too many records"))?;
    }
    Ok(n)
}

/// Calls `f` for every record of a packed run that starts at `first_seq`, with its seq, for
/// seqs in `lo..=hi`.
pub(crate) fn for_each_in(
    bytes: &[u8],
    first_seq: u64,
    lo: u64,
    hi: u64,
    mut f: impl FnMut(u64, Record<'_>),
) -> Result<(), ChatError> {
    let mut rest = bytes;
    let mut seq = first_seq;
    while !rest.is_empty() && seq <= hi {
        let rec = Record::decode(&mut rest)?;
        if seq >= lo {
            f(seq, rec);
        }
        seq += 1;
    }
    Ok(())
}

/// Where a sealed chunk is on disk (32 bytes: the whole index of a room's history).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkRef {
    /// Seq of the first record.
    pub first_seq: u64,
    /// Offset of the frame in the segment.
    pub offset: u64,
    /// Number of records.
    pub count: u32,
    /// Segment number in the generation (`u32::MAX`: memory only).
    pub seg: u32,
    /// Length of the whole frame.
    pub len: u32,
}

/// All messages of one room: sealed chunks (on disk, or still in memory) and the open tail.
/// Invariant: chunk `k` starts at seq `1 + sum of earlier counts`, the tail holds the last
/// `tail_count` records, and `len` is the total. `unwritten` holds the packed records of the
/// last `unwritten.len()` sealed chunks, those the writer thread has not written yet (every
/// sealed chunk, for a state without files): the writer goes in order, so they are a suffix.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoomLog {
    pub sealed: Vec<ChunkRef>,
    pub unwritten: std::collections::VecDeque<Bytes>,
    pub tail: Vec<u8>,
    pub tail_count: u32,
    pub len: u64,
}

/// A piece of a room to read: bytes at hand, or a frame to read from a segment.
#[derive(Debug, Clone)]
pub(crate) enum Piece {
    Mem {
        first_seq: u64,
        bytes: Bytes,
    },
    Disk {
        first_seq: u64,
        count: u32,
        seg: u32,
        offset: u64,
        len: u32,
    },
}

impl RoomLog {
    /// Number of messages (= highest seq).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Seq of the tail's first record.
    pub fn tail_first_seq(&self) -> u64 {
        self.len - u64::from(self.tail_count) + 1
    }

    /// Appends `rec` as message `len + 1` to the tail. Returns true when the tail is full and
    /// must be sealed.
    pub fn push(&mut self, rec: &Record<'_>) -> bool {
        rec.encode(&mut self.tail);
        self.tail_count += 1;
        self.len += 1;
        self.tail.len() >= CHUNK_BYTES
    }

    /// The pieces holding seqs `lo..=hi` (clamped), oldest first.
    pub fn pieces(&self, lo: u64, hi: u64) -> Vec<Piece> {
        let lo = lo.max(1);
        let hi = hi.min(self.len);
        let mut out = Vec::new();
        if lo > hi {
            return out;
        }
        let start = self
            .sealed
            .partition_point(|c| c.first_seq <= lo)
            .saturating_sub(1);
        let on_disk = self.sealed.len() - self.unwritten.len();
        for (k, c) in self.sealed.iter().enumerate().skip(start) {
            if c.first_seq > hi {
                break;
            }
            if c.first_seq + u64::from(c.count) <= lo {
                continue;
            }
            let mem = k.checked_sub(on_disk).and_then(|u| self.unwritten.get(u));
            out.push(match mem {
                Some(b) => Piece::Mem {
                    first_seq: c.first_seq,
                    bytes: b.clone(),
                },
                None => Piece::Disk {
                    first_seq: c.first_seq,
                    count: c.count,
                    seg: c.seg,
                    offset: c.offset,
                    len: c.len,
                },
            });
        }
        if self.tail_count > 0 && hi >= self.tail_first_seq() {
            out.push(Piece::Mem {
                first_seq: self.tail_first_seq(),
                bytes: Bytes::copy_from_slice(&self.tail),
            });
        }
        out
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
    fn records_round_trip_and_ranges_pick_the_right_ones() {
        let mut room = RoomLog::default();
        let mut full = 0;
        for i in 1..=200 {
            if room.push(&rec(i, &"x".repeat(1000))) {
                full += 1;
            }
        }
        assert!(full > 0, "200 KB must fill the tail");
        let mut seen = Vec::new();
        for p in room.pieces(99, 102) {
            if let Piece::Mem { first_seq, bytes } = p {
                for_each_in(&bytes, first_seq, 99, 102, |s, r| seen.push((s, r.index))).unwrap();
            }
        }
        assert_eq!(seen, vec![(99, 99), (100, 100), (101, 101), (102, 102)]);
        assert_eq!(count_records(&room.tail, |_| Ok(())).unwrap(), 200);
    }

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    proptest::proptest! {
        #[test]
        fn garbage_records_are_refused_without_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)
        ) {
            let _ = count_records(&data, |_| Ok(()));
        }
    }
}
