//! On-disk formats: WAL records, segment headers, the hard-state file and snapshot files.
//!
//! Every decoder here reads bytes that came from a disk (or, for snapshots, from the network),
//! so every decoder returns an error instead of panicking, and none allocates more than the
//! input it was given (record lengths are capped and checked before anything is copied).
//! All integers are little-endian. Checksums are CRC32C (Castagnoli, `crc::CRC_32_ISCSI`).
//!
//! Record layout (one log entry):
//! ```text
//! len: u32 | len_crc: u32 = crc32c(len) | body_crc: u32 = crc32c(body) | body: [len bytes]
//! body = kind: u8 | index: u64 | term: u64 | data
//! ```
//! The length has its own checksum so that a flipped bit in a length field is reported as
//! corruption rather than mistaken for a record cut short by a crash.

use bytes::Bytes;

use crate::raft::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};

/// Bytes before a record's body.
pub const RECORD_HEADER_LEN: usize = 12;
/// Largest record body accepted. A length above this is corruption, never an allocation.
pub const MAX_RECORD_LEN: u32 = 64 << 20;
/// Fixed part of a record body: kind, index, term.
const ENTRY_FIXED_LEN: usize = 1 + 8 + 8;

/// Magic at the start of every WAL segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"RRWALSEG";
/// Size of a segment header: magic, version, first index, crc.
pub const SEGMENT_HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// Magic of the hard-state file.
const HARD_STATE_MAGIC: &[u8; 8] = b"RRHARDST";
/// Size of the hard-state file: magic, version, term, vote, commit, crc.
pub const HARD_STATE_LEN: usize = 8 + 4 + 8 + 8 + 8 + 4;
/// Magic of a snapshot file.
const SNAPSHOT_MAGIC: &[u8; 8] = b"RRSNAPSH";
/// Fixed part of a snapshot header: magic, version, index, term, conf length.
const SNAPSHOT_FIXED_LEN: usize = 8 + 4 + 8 + 8 + 4;
/// Largest encoded membership accepted in a snapshot header (a million node ids).
const MAX_CONF_LEN: u32 = 8 << 20;
/// Format version written into every file; bumped on any incompatible change.
const VERSION: u32 = 1;

static CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    CRC32C.checksum(data)
}

/// Why bytes could not be decoded. `Incomplete` is the only variant a crash can legitimately
/// produce at the end of a file; every other one means the bytes are not what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before the item does (a torn write, or a short read).
    #[error("incomplete: {needed} bytes needed, {available} available")]
    Incomplete {
        /// Bytes the item needs from its start.
        needed: u64,
        /// Bytes that were there.
        available: u64,
    },
    /// A stored checksum does not match the bytes.
    #[error("{what} checksum mismatch")]
    Checksum {
        /// Which checksum failed.
        what: &'static str,
    },
    /// A length field is beyond its cap.
    #[error("{what} length {len} exceeds the cap of {cap}")]
    TooLong {
        /// Which length.
        what: &'static str,
        /// The value found.
        len: u64,
        /// The cap.
        cap: u64,
    },
    /// The file does not start with the expected magic bytes.
    #[error("bad magic: not a {0} file")]
    BadMagic(&'static str),
    /// The file was written by an incompatible version.
    #[error("unsupported format version {0}")]
    Version(u32),
    /// The checksums match but a field is impossible.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn need(buf: &[u8], needed: usize) -> Result<(), DecodeError> {
    if buf.len() < needed {
        return Err(DecodeError::Incomplete {
            needed: needed as u64,
            available: buf.len() as u64,
        });
    }
    Ok(())
}

fn kind_to_u8(k: EntryKind) -> u8 {
    match k {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::ConfChange => 2,
    }
}

fn kind_from_u8(b: u8) -> Option<EntryKind> {
    match b {
        0 => Some(EntryKind::Normal),
        1 => Some(EntryKind::Noop),
        2 => Some(EntryKind::ConfChange),
        _ => None,
    }
}

/// Size of `e` once encoded as a record, header included.
pub fn record_len(e: &Entry) -> usize {
    RECORD_HEADER_LEN + ENTRY_FIXED_LEN + e.data.len()
}

/// Appends the record for `e` to `out`. Fails only when the entry is too big to be a record.
pub fn encode_record(e: &Entry, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let body_len = ENTRY_FIXED_LEN + e.data.len();
    if body_len > MAX_RECORD_LEN as usize {
        return Err(DecodeError::TooLong {
            what: "record",
            len: body_len as u64,
            cap: MAX_RECORD_LEN as u64,
        });
    }
    let len = (body_len as u32).to_le_bytes();
    out.reserve(RECORD_HEADER_LEN + body_len);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32c(&len).to_le_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let body_at = out.len();
    out.push(kind_to_u8(e.kind));
    out.extend_from_slice(&e.index.to_le_bytes());
    out.extend_from_slice(&e.term.to_le_bytes());
    out.extend_from_slice(&e.data);
    let crc = crc32c(&out[body_at..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What the header of a record says, once its own checksum is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Body length.
    pub len: u32,
    /// Expected CRC32C of the body.
    pub body_crc: u32,
}

impl RecordHeader {
    /// Size of the whole record.
    pub fn total_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.len as u64
    }
}

/// Decodes and verifies a record header at the start of `buf`.
pub fn decode_record_header(buf: &[u8]) -> Result<RecordHeader, DecodeError> {
    need(buf, RECORD_HEADER_LEN)?;
    let len = u32_at(buf, 0);
    if crc32c(&buf[0..4]) != u32_at(buf, 4) {
        return Err(DecodeError::Checksum {
            what: "record length",
        });
    }
    if len > MAX_RECORD_LEN {
        return Err(DecodeError::TooLong {
            what: "record",
            len: len as u64,
            cap: MAX_RECORD_LEN as u64,
        });
    }
    if (len as usize) < ENTRY_FIXED_LEN {
        return Err(DecodeError::Invalid("record shorter than an entry"));
    }
    Ok(RecordHeader {
        len,
        body_crc: u32_at(buf, 8),
    })
}

/// Decodes the record at the start of `buf`: the entry and the record's size.
pub fn decode_record(buf: &[u8]) -> Result<(Entry, usize), DecodeError> {
    let h = decode_record_header(buf)?;
    let total = RECORD_HEADER_LEN + h.len as usize;
    need(buf, total)?;
    let body = &buf[RECORD_HEADER_LEN..total];
    if crc32c(body) != h.body_crc {
        return Err(DecodeError::Checksum {
            what: "record body",
        });
    }
    let kind = kind_from_u8(body[0]).ok_or(DecodeError::Invalid("entry kind"))?;
    let index = u64_at(body, 1);
    if index == 0 {
        return Err(DecodeError::Invalid("entry index 0"));
    }
    let e = Entry {
        index,
        term: u64_at(body, 9),
        kind,
        data: Bytes::copy_from_slice(&body[ENTRY_FIXED_LEN..]),
    };
    Ok((e, total))
}

/// Encodes the header of a segment whose first record will have index `first_index`.
pub fn encode_segment_header(first_index: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out[0..8].copy_from_slice(SEGMENT_MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c(&out[0..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a segment header; returns the segment's first index.
pub fn decode_segment_header(buf: &[u8]) -> Result<u64, DecodeError> {
    need(buf, SEGMENT_HEADER_LEN)?;
    if &buf[0..8] != SEGMENT_MAGIC {
        return Err(DecodeError::BadMagic("WAL segment"));
    }
    if crc32c(&buf[0..20]) != u32_at(buf, 20) {
        return Err(DecodeError::Checksum {
            what: "segment header",
        });
    }
    let version = u32_at(buf, 8);
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let first = u64_at(buf, 12);
    if first == 0 {
        return Err(DecodeError::Invalid("segment first index 0"));
    }
    Ok(first)
}

/// Encodes the hard-state file.
pub fn encode_hard_state(hs: &HardState) -> [u8; HARD_STATE_LEN] {
    let mut out = [0u8; HARD_STATE_LEN];
    out[0..8].copy_from_slice(HARD_STATE_MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&hs.term.to_le_bytes());
    out[20..28].copy_from_slice(&hs.vote.unwrap_or(0).to_le_bytes());
    out[28..36].copy_from_slice(&hs.commit.to_le_bytes());
    let crc = crc32c(&out[0..36]);
    out[36..40].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the hard-state file. The file is written atomically, so it must be whole.
pub fn decode_hard_state(buf: &[u8]) -> Result<HardState, DecodeError> {
    need(buf, HARD_STATE_LEN)?;
    if buf.len() != HARD_STATE_LEN {
        return Err(DecodeError::Invalid("hard-state file has trailing bytes"));
    }
    if &buf[0..8] != HARD_STATE_MAGIC {
        return Err(DecodeError::BadMagic("hard-state"));
    }
    if crc32c(&buf[0..36]) != u32_at(buf, 36) {
        return Err(DecodeError::Checksum { what: "hard state" });
    }
    let version = u32_at(buf, 8);
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let vote = u64_at(buf, 20);
    Ok(HardState {
        term: u64_at(buf, 12),
        vote: (vote != 0).then_some(vote),
        commit: u64_at(buf, 28),
    })
}

/// Encodes a whole snapshot file. The same bytes travel over the network in chunks, so a
/// receiver can check them with [`decode_snapshot`] before installing anything.
///
/// ```text
/// magic | version: u32 | index: u64 | term: u64 | conf_len: u32 | conf | data_len: u64
///       | header_crc: u32 (over everything before it) | data | data_crc: u32
/// ```
pub fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let (head, tail) = encode_snapshot_parts(&s.meta, &s.data);
    let mut out = Vec::with_capacity(head.len() + s.data.len() + tail.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&s.data);
    out.extend_from_slice(&tail);
    out
}

/// The snapshot file around `data`: the header before it and the data checksum after it, so
/// a large snapshot is written with three writes instead of being copied into one buffer.
pub fn encode_snapshot_parts(meta: &SnapshotMeta, data: &[u8]) -> (Vec<u8>, [u8; 4]) {
    let conf = meta.conf.encode();
    let mut out = Vec::with_capacity(SNAPSHOT_FIXED_LEN + conf.len() + 16);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&meta.index.to_le_bytes());
    out.extend_from_slice(&meta.term.to_le_bytes());
    out.extend_from_slice(&(conf.len() as u32).to_le_bytes());
    out.extend_from_slice(&conf);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    (out, crc32c(data).to_le_bytes())
}

/// What a snapshot header says: the metadata and where the data lies in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Index, term and membership.
    pub meta: SnapshotMeta,
    /// Offset of the data in the file.
    pub data_offset: u64,
    /// Length of the data.
    pub data_len: u64,
}

impl SnapshotHeader {
    /// Size of the whole file this header describes.
    pub fn file_len(&self) -> u64 {
        self.data_offset
            .saturating_add(self.data_len)
            .saturating_add(4)
    }
}

/// Decodes and verifies a snapshot header at the start of `buf`.
pub fn decode_snapshot_header(buf: &[u8]) -> Result<SnapshotHeader, DecodeError> {
    need(buf, SNAPSHOT_FIXED_LEN)?;
    if &buf[0..8] != SNAPSHOT_MAGIC {
        return Err(DecodeError::BadMagic("snapshot"));
    }
    let conf_len = u32_at(buf, 28);
    if conf_len > MAX_CONF_LEN {
        return Err(DecodeError::TooLong {
            what: "snapshot membership",
            len: conf_len as u64,
            cap: MAX_CONF_LEN as u64,
        });
    }
    let conf_end = SNAPSHOT_FIXED_LEN + conf_len as usize;
    let header_len = conf_end + 8 + 4;
    need(buf, header_len)?;
    if crc32c(&buf[..conf_end + 8]) != u32_at(buf, conf_end + 8) {
        return Err(DecodeError::Checksum {
            what: "snapshot header",
        });
    }
    let version = u32_at(buf, 8);
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let conf = ConfState::decode(&buf[SNAPSHOT_FIXED_LEN..conf_end])
        .ok_or(DecodeError::Invalid("snapshot membership"))?;
    Ok(SnapshotHeader {
        meta: SnapshotMeta {
            index: u64_at(buf, 12),
            term: u64_at(buf, 20),
            conf,
        },
        data_offset: header_len as u64,
        data_len: u64_at(buf, conf_end),
    })
}

/// Decodes a whole snapshot file (header, data, data checksum, nothing after).
pub fn decode_snapshot(buf: &[u8]) -> Result<Snapshot, DecodeError> {
    decode_snapshot_owned(Bytes::copy_from_slice(buf))
}

/// [`decode_snapshot`] of a buffer it may keep: the data is a slice of `buf`, not a copy, so a
/// snapshot read from disk is held in memory once.
pub fn decode_snapshot_owned(buf: Bytes) -> Result<Snapshot, DecodeError> {
    let h = decode_snapshot_header(&buf)?;
    let file_len = h.file_len();
    if (buf.len() as u64) < file_len {
        return Err(DecodeError::Incomplete {
            needed: file_len,
            available: buf.len() as u64,
        });
    }
    if (buf.len() as u64) > file_len {
        return Err(DecodeError::Invalid("snapshot file has trailing bytes"));
    }
    // Both fit in `buf`, so they fit in usize.
    let start = h.data_offset as usize;
    let end = start + h.data_len as usize;
    if crc32c(&buf[start..end]) != u32_at(&buf, end) {
        return Err(DecodeError::Checksum {
            what: "snapshot data",
        });
    }
    Ok(Snapshot {
        meta: h.meta,
        data: buf.slice(start..end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(index: u64, term: u64, kind: u8, data: Vec<u8>) -> Entry {
        Entry {
            index,
            term,
            kind: kind_from_u8(kind % 3).unwrap(),
            data: Bytes::from(data),
        }
    }

    #[test]
    fn crc_is_crc32c() {
        // The standard check value of CRC-32C (iSCSI).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn every_truncation_of_a_record_is_incomplete() {
        let mut buf = Vec::new();
        encode_record(&entry(7, 3, 0, b"hello".to_vec()), &mut buf).unwrap();
        for cut in 0..buf.len() {
            assert!(
                matches!(
                    decode_record(&buf[..cut]),
                    Err(DecodeError::Incomplete { .. })
                ),
                "cut at {cut}"
            );
        }
        assert_eq!(decode_record(&buf).unwrap().1, buf.len());
    }

    #[test]
    fn every_bit_flip_in_a_record_is_detected() {
        let mut buf = Vec::new();
        encode_record(&entry(7, 3, 1, b"hello".to_vec()), &mut buf).unwrap();
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_record(&b).is_err(), "bit {bit} not detected");
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let len = (MAX_RECORD_LEN + 1).to_le_bytes();
        let mut buf = len.to_vec();
        buf.extend_from_slice(&crc32c(&len).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode_record(&buf),
            Err(DecodeError::TooLong { .. })
        ));
    }

    proptest! {
        #[test]
        fn record_round_trips(index in 1u64.., term: u64, kind in 0u8..3,
                              data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let e = entry(index, term, kind, data);
            let mut buf = Vec::new();
            encode_record(&e, &mut buf).unwrap();
            prop_assert_eq!(buf.len(), record_len(&e));
            prop_assert_eq!(decode_record(&buf).unwrap(), (e, buf.len()));
        }

        #[test]
        fn record_decoder_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok((e, n)) = decode_record(&buf) {
                prop_assert!(n <= buf.len());
                prop_assert!(e.data.len() < n);
            }
        }

        #[test]
        fn record_decoder_survives_a_valid_length_and_garbage(
            len in any::<u32>(), rest in proptest::collection::vec(any::<u8>(), 0..200)) {
            // Garbage with a *valid* length checksum exercises the paths past the header check.
            let mut buf = len.to_le_bytes().to_vec();
            buf.extend_from_slice(&crc32c(&len.to_le_bytes()).to_le_bytes());
            buf.extend_from_slice(&rest);
            let _ = decode_record(&buf);
        }

        #[test]
        fn segment_header_decoder_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_segment_header(&buf);
        }

        #[test]
        fn segment_header_round_trips(first in 1u64..) {
            prop_assert_eq!(decode_segment_header(&encode_segment_header(first)), Ok(first));
        }

        #[test]
        fn hard_state_decoder_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_hard_state(&buf);
        }

        #[test]
        fn hard_state_round_trips(term: u64, vote in proptest::option::of(1u64..), commit: u64) {
            let hs = HardState { term, vote, commit };
            prop_assert_eq!(decode_hard_state(&encode_hard_state(&hs)), Ok(hs));
        }

        #[test]
        fn snapshot_decoders_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_snapshot_header(&buf);
            let _ = decode_snapshot(&buf);
        }

        #[test]
        fn snapshot_decoder_survives_garbage_after_a_valid_prefix(
            cut in 0usize..40, flip in any::<u8>(),
            rest in proptest::collection::vec(any::<u8>(), 0..100)) {
            let s = Snapshot {
                meta: SnapshotMeta { index: 5, term: 2, conf: ConfState::with_voters([1, 2]) },
                data: Bytes::from_static(b"state"),
            };
            let enc = encode_snapshot(&s);
            let mut buf = enc[..cut.min(enc.len())].to_vec();
            if let Some(b) = buf.last_mut() { *b ^= flip; }
            buf.extend_from_slice(&rest);
            let _ = decode_snapshot(&buf);
        }

        #[test]
        fn snapshot_round_trips(index: u64, term: u64,
                                voters in proptest::collection::btree_set(1u64..100, 0..7),
                                data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let s = Snapshot {
                meta: SnapshotMeta { index, term, conf: ConfState::with_voters(voters) },
                data: Bytes::from(data),
            };
            let enc = encode_snapshot(&s);
            prop_assert_eq!(decode_snapshot(&enc), Ok(s));
            prop_assert!(decode_snapshot(&enc[..enc.len() - 1]).is_err());
        }
    }
}
