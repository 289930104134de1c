//! Crash-cut and corruption tests of the WAL recovery, on real files.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::records::{self, SEGMENT_HEADER_LEN};
use super::{DiskConfig, DiskError, DiskStorage};
use crate::raft::{ConfState, Entry, EntryKind, LogStore, Storage};

fn ent(index: u64, term: u64) -> Entry {
    // Non-zero payloads of varying length, so no record contains a zero sector.
    let len = 20 + (index as usize * 37) % 150;
    Entry {
        index,
        term,
        kind: if index.is_multiple_of(7) {
            EntryKind::Noop
        } else {
            EntryKind::Normal
        },
        data: Bytes::from(vec![(index % 250) as u8 + 1; len]),
    }
}

fn conf() -> ConfState {
    ConfState::with_voters([1, 2, 3])
}

/// Storage in `dir` with 64 KiB segments: room for every log these tests write in one
/// segment, and a preallocated tail small enough to copy hundreds of times.
fn open(dir: &Path) -> Result<DiskStorage, DiskError> {
    let mut cfg = DiskConfig::new(dir);
    cfg.segment_size = 64 << 10;
    DiskStorage::open(cfg, conf())
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("wal-"))
        .collect();
    v.sort();
    v
}

/// Writes entries 1..=n in one segment and returns them with each record's end offset.
fn write_log(dir: &Path, n: u64) -> (Vec<Entry>, Vec<u64>) {
    let mut s = open(dir).unwrap();
    let entries: Vec<Entry> = (1..=n).map(|i| ent(i, 1 + i / 10)).collect();
    for chunk in entries.chunks(3) {
        s.append(chunk).unwrap();
        s.sync().unwrap();
    }
    let mut ends = Vec::new();
    let mut off = SEGMENT_HEADER_LEN as u64;
    for e in &entries {
        off += records::record_len(e) as u64;
        ends.push(off);
    }
    (entries, ends)
}

#[test]
fn crash_cut_at_every_byte_of_the_last_records_recovers_exactly_the_whole_records() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (entries, ends) = write_log(&src, 30);
    let seg = segments(&src).pop().unwrap();
    // The active segment is preallocated: the records, then zeros.
    let bytes = fs::read(&seg).unwrap();
    let end = *ends.last().unwrap() as usize;
    assert!(bytes.len() > end, "the active segment is preallocated");
    assert!(bytes[end..].iter().all(|&b| b == 0));
    let from = ends[ends.len() - 5];
    for cut in from..=*ends.last().unwrap() {
        let dir = tmp.path().join(format!("cut{cut}"));
        copy_dir(&src, &dir);
        let seg = segments(&dir).pop().unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut).count() as u64;
        let mut s = open(&dir).unwrap();
        assert_eq!(s.last_index().unwrap(), whole, "cut at {cut}");
        assert_eq!(
            s.entries(1, whole + 1, None).unwrap(),
            entries[..whole as usize].to_vec(),
            "cut at {cut}"
        );
        // The torn tail is gone from the file: appending and reopening works.
        s.append(&[ent(whole + 1, 9)]).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = open(&dir).unwrap();
        assert_eq!(s.last_index().unwrap(), whole + 1);
        assert_eq!(s.term(whole + 1).unwrap(), 9);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_flipped_bit_before_the_tail_is_corruption_naming_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (_, ends) = write_log(&src, 30);
    // Every byte of record 15 (a header byte, the index, the term, the payload).
    let (start, end) = (ends[13], ends[14]);
    for at in start..end {
        let dir = tmp.path().join(format!("flip{at}"));
        copy_dir(&src, &dir);
        let seg = segments(&dir).pop().unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        bytes[at as usize] ^= 0x10;
        fs::write(&seg, &bytes).unwrap();
        match open(&dir) {
            Err(DiskError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, seg);
                assert_eq!(offset, start, "flip at {at}");
            }
            other => panic!("flip at {at}: expected corruption, got {other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_flipped_bit_in_the_last_record_is_corruption_too() {
    // A crash cuts records short or leaves zeros; it does not flip bits. Dropping a whole
    // (possibly acknowledged) record because of a flipped bit would be silent data loss.
    let tmp = tempfile::tempdir().unwrap();
    let (_, ends) = write_log(tmp.path(), 10);
    let seg = segments(tmp.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[(ends[9] - 3) as usize] ^= 1;
    fs::write(&seg, &bytes).unwrap();
    assert!(matches!(open(tmp.path()), Err(DiskError::Corrupt { .. })));
}

#[test]
fn a_zeroed_tail_is_a_torn_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (entries, ends) = write_log(tmp.path(), 30);
    let seg = segments(tmp.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    // The sectors from a boundary inside a record on never made it (they read back as
    // zeros), and the file was extended further (preallocation).
    let (r, s) = (5..ends.len())
        .find_map(|r| {
            let s = ends[r - 1].next_multiple_of(512);
            (s < ends[r]).then_some((r, s))
        })
        .unwrap();
    bytes[s as usize..].fill(0);
    bytes.extend_from_slice(&[0; 1000]);
    fs::write(&seg, &bytes).unwrap();
    let s = open(tmp.path()).unwrap();
    assert_eq!(s.last_index().unwrap(), r as u64);
    assert_eq!(
        s.entries(1, r as u64 + 1, None).unwrap(),
        entries[..r].to_vec()
    );
    // The torn bytes are gone: after the last whole record, only zeros (preallocation).
    let after = fs::read(&seg).unwrap();
    assert_eq!(after[..ends[r - 1] as usize], bytes[..ends[r - 1] as usize]);
    assert!(after[ends[r - 1] as usize..].iter().all(|&b| b == 0));
}

#[test]
fn segments_rotate_and_damage_in_a_sealed_segment_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut cfg = DiskConfig::new(&src);
    cfg.segment_size = 600;
    let mut s = DiskStorage::open(cfg.clone(), conf()).unwrap();
    let entries: Vec<Entry> = (1..=40).map(|i| ent(i, 1)).collect();
    for chunk in entries.chunks(4) {
        s.append(chunk).unwrap();
        s.sync().unwrap();
    }
    assert!(s.wal_segments() > 5, "{} segments", s.wal_segments());
    drop(s);
    let s = DiskStorage::open(cfg.clone(), conf()).unwrap();
    assert_eq!(s.entries(1, 41, None).unwrap(), entries);
    drop(s);

    // Cutting a sealed segment short is not a torn tail: it was fsynced before rotation.
    let dir = tmp.path().join("cut");
    copy_dir(&src, &dir);
    let segs = segments(&dir);
    let len = fs::metadata(&segs[1]).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&segs[1])
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let mut c = cfg.clone();
    c.dir = dir.clone();
    match DiskStorage::open(c, conf()) {
        Err(DiskError::Corrupt { file, .. }) => assert_eq!(file, segs[1]),
        other => panic!("expected corruption, got {other:?}"),
    }

    // A missing middle segment is a hole.
    let dir = tmp.path().join("hole");
    copy_dir(&src, &dir);
    fs::remove_file(&segments(&dir)[2]).unwrap();
    let mut c = cfg.clone();
    c.dir = dir;
    assert!(matches!(
        DiskStorage::open(c, conf()),
        Err(DiskError::Corrupt { .. })
    ));
}

#[test]
fn a_torn_new_segment_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, ends) = write_log(tmp.path(), 10);
    // A rotation cut the active segment to its last record (durably), then created the next
    // segment, but the new one's header never reached the disk.
    fs::OpenOptions::new()
        .write(true)
        .open(&segments(tmp.path())[0])
        .unwrap()
        .set_len(*ends.last().unwrap())
        .unwrap();
    let torn = tmp.path().join(format!("wal-{:020}.seg", 11));
    fs::write(&torn, [b'R', b'R', b'W']).unwrap();
    let mut s = open(tmp.path()).unwrap();
    assert_eq!(s.last_index().unwrap(), 10);
    assert!(!torn.exists());
    s.append(&[ent(11, 5)]).unwrap();
    s.sync().unwrap();
}

#[test]
fn truncating_a_suffix_across_segments_is_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = DiskConfig::new(tmp.path());
    cfg.segment_size = 500;
    let mut s = DiskStorage::open(cfg.clone(), conf()).unwrap();
    let entries: Vec<Entry> = (1..=30).map(|i| ent(i, 1)).collect();
    s.append(&entries).unwrap();
    s.sync().unwrap();
    let before = s.wal_segments();
    s.append(&[ent(5, 2), ent(6, 2)]).unwrap();
    s.sync().unwrap();
    assert!(s.wal_segments() < before);
    drop(s);
    let s = DiskStorage::open(cfg, conf()).unwrap();
    assert_eq!(s.last_index().unwrap(), 6);
    assert_eq!(s.term(4).unwrap(), 1);
    assert_eq!(s.term(5).unwrap(), 2);
    assert_eq!(
        s.entries(1, 7, None).unwrap()[4..].to_vec(),
        vec![ent(5, 2), ent(6, 2)]
    );
}

#[test]
fn entries_beyond_the_cache_are_read_back_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = DiskConfig::new(tmp.path());
    cfg.cache_bytes = 500;
    cfg.segment_size = 2000;
    let mut s = DiskStorage::open(cfg, conf()).unwrap();
    let entries: Vec<Entry> = (1..=50).map(|i| ent(i, 3)).collect();
    s.append(&entries).unwrap();
    assert_eq!(s.entries(1, 51, None).unwrap(), entries);
}

#[test]
fn a_damaged_hard_state_or_snapshot_refuses_to_open() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path()).unwrap();
    s.append(&[ent(1, 1)]).unwrap();
    s.set_hard_state(crate::raft::HardState {
        term: 1,
        vote: Some(2),
        commit: 0,
    })
    .unwrap();
    s.sync().unwrap();
    drop(s);
    let hs = tmp.path().join("hardstate");
    let mut b = fs::read(&hs).unwrap();
    b[15] ^= 4;
    fs::write(&hs, &b).unwrap();
    assert!(matches!(
        open(tmp.path()),
        Err(DiskError::Corrupt { file, .. }) if file == hs
    ));
    b[15] ^= 4;
    fs::write(&hs, &b).unwrap();
    let snap = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with(".snap"))
        .unwrap();
    let mut b = fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 2] ^= 4;
    fs::write(&snap, &b).unwrap();
    assert!(matches!(open(tmp.path()), Err(DiskError::Corrupt { .. })));
    // And without any snapshot file, a log is not guessed at.
    fs::remove_file(&snap).unwrap();
    assert!(matches!(
        open(tmp.path()),
        Err(DiskError::Inconsistent { .. })
    ));
}

#[test]
fn sealed_segments_end_at_their_last_record_and_the_active_one_is_preallocated() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = DiskConfig::new(tmp.path());
    cfg.segment_size = 2000;
    let mut s = DiskStorage::open(cfg.clone(), conf()).unwrap();
    for i in 1..=60 {
        s.append(&[ent(i, 1)]).unwrap();
        s.sync().unwrap();
    }
    drop(s);
    let segs = segments(tmp.path());
    assert!(segs.len() >= 3, "{segs:?}");
    let mut next = 1;
    for (k, seg) in segs.iter().enumerate() {
        let bytes = fs::read(seg).unwrap();
        let mut off = SEGMENT_HEADER_LEN;
        while let Ok((e, n)) = records::decode_record(&bytes[off..]) {
            assert_eq!(e.index, next);
            next += 1;
            off += n;
        }
        if k + 1 < segs.len() {
            assert_eq!(off, bytes.len(), "sealed {seg:?} ends at its last record");
        } else {
            assert_eq!(
                bytes.len() as u64,
                cfg.segment_size,
                "the active one is preallocated"
            );
            assert!(bytes[off..].iter().all(|&b| b == 0));
        }
    }
    assert_eq!(next, 61);
    let s = DiskStorage::open(cfg, conf()).unwrap();
    assert_eq!(s.last_index().unwrap(), 60);
}
