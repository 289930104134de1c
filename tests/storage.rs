//! One conformance suite for every storage implementation (MemStorage and DiskStorage), plus
//! DiskStorage's restart, snapshot-streaming and group-commit behaviour.
//!
//! `cargo test --release --test storage`

use std::path::Path;

use bytes::Bytes;
use rustyraft::raft::{
    ConfState, Entry, EntryKind, HardState, LogStore, MemStorage, Snapshot, SnapshotMeta, Storage,
    StorageError,
};
use rustyraft::storage::{DiskConfig, DiskError, DiskStorage};

fn ent(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("entry {index} of term {term}")),
    }
}

fn ents(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..hi).map(|i| ent(i, term)).collect()
}

fn conf_entry(index: u64, term: u64, conf: &ConfState) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::ConfChange,
        data: conf.encode(),
    }
}

fn voters() -> ConfState {
    ConfState::with_voters([1, 2, 3])
}

/// The contract of `Storage` + `LogStore`, for any implementation. `make` gives a fresh store
/// with membership `voters()`; `reopen` simulates a restart after `sync` (identity for memory).
fn conformance<S: LogStore>(mut make: impl FnMut() -> S, reopen: impl Fn(S) -> S) {
    // A fresh log.
    let s = make();
    assert_eq!(s.first_index().unwrap(), 1);
    assert_eq!(s.last_index().unwrap(), 0);
    assert_eq!(s.term(0).unwrap(), 0);
    assert_eq!(s.term(1), Err(StorageError::Unavailable));
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state, HardState::default());
    assert_eq!(st.conf_state, voters());
    assert_eq!(s.snapshot().unwrap().meta.index, 0);
    assert_eq!(s.entries(1, 1, None).unwrap(), vec![]);
    let s = reopen(s);
    assert_eq!(s.initial_state().unwrap().conf_state, voters());

    // Append, read back, limits.
    let mut s = make();
    s.append(&ents(1, 11, 1)).unwrap();
    s.sync().unwrap();
    let mut s = reopen(s);
    assert_eq!(s.last_index().unwrap(), 10);
    assert_eq!(s.entries(1, 11, None).unwrap(), ents(1, 11, 1));
    assert_eq!(s.entries(3, 5, None).unwrap(), ents(3, 5, 1));
    let one = ent(1, 1).size();
    assert_eq!(s.entries(1, 11, Some(0)).unwrap().len(), 1, "at least one");
    assert_eq!(s.entries(1, 11, Some(3 * one)).unwrap().len(), 3);
    assert_eq!(s.entries(0, 2, None), Err(StorageError::Compacted));
    assert_eq!(s.entries(1, 12, None), Err(StorageError::Unavailable));
    assert_eq!(s.term(10).unwrap(), 1);
    assert_eq!(s.term(11), Err(StorageError::Unavailable));

    // A conflicting suffix is replaced; a hole is refused.
    s.append(&ents(5, 7, 2)).unwrap();
    assert_eq!(s.last_index().unwrap(), 6);
    assert_eq!(s.term(4).unwrap(), 1);
    assert_eq!(s.term(5).unwrap(), 2);
    assert!(s.append(&ents(9, 10, 2)).is_err());
    s.sync().unwrap();
    let mut s = reopen(s);
    assert_eq!(s.last_index().unwrap(), 6);
    assert_eq!(s.entries(5, 7, None).unwrap(), ents(5, 7, 2));
    // Re-appending what is already there (a duplicated AppendEntries) is harmless.
    s.append(&ents(5, 7, 2)).unwrap();
    assert_eq!(s.entries(1, 7, None).unwrap().len(), 6);

    // Hard state.
    let hs = HardState {
        term: 2,
        vote: Some(3),
        commit: 4,
    };
    s.set_hard_state(hs).unwrap();
    s.sync().unwrap();
    let mut s = reopen(s);
    assert_eq!(s.initial_state().unwrap().hard_state, hs);

    // Compaction.
    let small = ConfState::with_voters([1, 2]);
    s.compact(4, small.clone(), Bytes::from_static(b"state@4"))
        .unwrap();
    s.compact(3, small.clone(), Bytes::new()).unwrap(); // older: no-op
    assert_eq!(
        s.compact(9, small.clone(), Bytes::new()),
        Err(StorageError::Unavailable)
    );
    s.sync().unwrap();
    let mut s = reopen(s);
    assert_eq!(s.first_index().unwrap(), 5);
    assert_eq!(s.last_index().unwrap(), 6);
    assert_eq!(s.term(4).unwrap(), 1);
    assert_eq!(s.term(3), Err(StorageError::Compacted));
    assert_eq!(s.entries(4, 5, None), Err(StorageError::Compacted));
    assert_eq!(s.entries(5, 7, None).unwrap(), ents(5, 7, 2));
    let snap = s.snapshot().unwrap();
    assert_eq!((snap.meta.index, snap.meta.term), (4, 1));
    assert_eq!(snap.data, Bytes::from_static(b"state@4"));
    assert_eq!(s.initial_state().unwrap().conf_state, small);
    assert_eq!(s.initial_state().unwrap().hard_state.term, 2);
    // Appending at or below the snapshot skips the covered part.
    s.append(&ents(3, 8, 2)).unwrap();
    assert_eq!(s.last_index().unwrap(), 7);
    assert_eq!(s.first_index().unwrap(), 5);

    // Membership follows configuration entries up to the commit index: an uncommitted one does
    // not count yet (a new leader may overwrite it), a truncated one is gone, a committed one
    // is in force and names its index.
    let mut s = make();
    let five = ConfState::with_voters([1, 2, 3, 4, 5]);
    s.append(&[ent(1, 1), conf_entry(2, 1, &five), ent(3, 1)])
        .unwrap();
    s.sync().unwrap();
    let mut s = reopen(s);
    assert_eq!(s.initial_state().unwrap().conf_state, voters());
    s.append(&ents(2, 3, 2)).unwrap();
    s.set_hard_state(HardState {
        term: 2,
        vote: None,
        commit: 2,
    })
    .unwrap();
    s.sync().unwrap();
    let mut s = reopen(s);
    assert_eq!(s.initial_state().unwrap().conf_state, voters());
    s.append(&[conf_entry(3, 2, &five)]).unwrap();
    s.set_hard_state(HardState {
        term: 2,
        vote: None,
        commit: 3,
    })
    .unwrap();
    s.sync().unwrap();
    let mut s = reopen(s);
    let st = s.initial_state().unwrap();
    assert_eq!((st.conf_state, st.conf_index), (five.clone(), 3));
    // Later entries in the old term's place are harmless now.
    s.append(&ents(4, 5, 2)).unwrap();

    // A snapshot that matches the log keeps the entries after it.
    s.append(&ents(3, 10, 2)).unwrap();
    let matching = Snapshot {
        meta: SnapshotMeta {
            index: 5,
            term: 2,
            conf: five.clone(),
        },
        data: Bytes::from_static(b"leader state@5"),
    };
    s.apply_snapshot(matching.clone()).unwrap();
    s.sync().unwrap();
    let mut s = reopen(s);
    assert_eq!(s.first_index().unwrap(), 6);
    assert_eq!(s.last_index().unwrap(), 9);
    assert_eq!(s.snapshot().unwrap(), matching);
    assert!(s.initial_state().unwrap().hard_state.commit >= 5);
    assert_eq!(s.initial_state().unwrap().conf_state, five);

    // One that does not match replaces the whole log.
    let other = Snapshot {
        meta: SnapshotMeta {
            index: 8,
            term: 3,
            conf: voters(),
        },
        data: Bytes::from_static(b"leader state@8"),
    };
    s.apply_snapshot(other.clone()).unwrap();
    s.sync().unwrap();
    let mut s = reopen(s);
    assert_eq!(s.first_index().unwrap(), 9);
    assert_eq!(s.last_index().unwrap(), 8);
    assert_eq!(s.term(8).unwrap(), 3);
    assert_eq!(s.snapshot().unwrap(), other);
    assert!(s.initial_state().unwrap().hard_state.commit >= 8);
    s.append(&ents(9, 12, 3)).unwrap();
    s.sync().unwrap();
    let s = reopen(s);
    assert_eq!(s.entries(9, 12, None).unwrap(), ents(9, 12, 3));

    // A snapshot beyond the end of the log.
    let mut s = make();
    s.append(&ents(1, 4, 1)).unwrap();
    let far = Snapshot {
        meta: SnapshotMeta {
            index: 100,
            term: 7,
            conf: voters(),
        },
        data: Bytes::from_static(b"far"),
    };
    s.apply_snapshot(far.clone()).unwrap();
    s.sync().unwrap();
    let s = reopen(s);
    assert_eq!(s.first_index().unwrap(), 101);
    assert_eq!(s.last_index().unwrap(), 100);
    assert_eq!(s.term(100).unwrap(), 7);
    assert_eq!(s.snapshot().unwrap(), far);
}

#[test]
fn mem_storage_conforms() {
    conformance(|| MemStorage::new_with_conf(voters()), |s| s);
}

fn disk_cfg(dir: &Path) -> DiskConfig {
    let mut cfg = DiskConfig::new(dir);
    cfg.segment_size = 300; // many segments, so rotation and compaction are exercised
    cfg.cache_bytes = 200; // most reads go to the disk
    cfg
}

fn reopen_disk(s: DiskStorage) -> DiskStorage {
    let cfg = s.config().clone();
    drop(s);
    // The membership passed here must be ignored: the directory is not fresh.
    DiskStorage::open(cfg, ConfState::with_voters([42])).unwrap()
}

#[test]
fn disk_storage_conforms_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance(
        || {
            n += 1;
            DiskStorage::open(disk_cfg(&tmp.path().join(format!("s{n}"))), voters()).unwrap()
        },
        reopen_disk,
    );
}

#[test]
fn disk_storage_conforms_without_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance(
        || {
            n += 1;
            let mut cfg = DiskConfig::new(tmp.path().join(format!("s{n}")));
            cfg.fsync = false;
            DiskStorage::open(cfg, voters()).unwrap()
        },
        |s| s,
    );
}

fn files(dir: &Path, ending: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(ending)
        })
        .count()
}

#[test]
fn compaction_deletes_whole_segments_and_old_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(disk_cfg(tmp.path()), voters()).unwrap();
    for i in 1..=200 {
        s.append(&[ent(i, 1)]).unwrap();
    }
    s.sync().unwrap();
    let (bytes, segs) = (s.wal_bytes(), s.wal_segments());
    assert!(segs > 20);
    s.compact(150, voters(), Bytes::from_static(b"a")).unwrap();
    s.compact(190, voters(), Bytes::from_static(b"b")).unwrap();
    assert!(s.wal_segments() < segs / 4, "{} segments", s.wal_segments());
    assert!(s.wal_bytes() < bytes / 4);
    assert_eq!(files(tmp.path(), ".snap"), 1);
    let s = reopen_disk(s);
    assert_eq!(s.first_index().unwrap(), 191);
    assert_eq!(s.entries(191, 201, None).unwrap(), ents(191, 201, 1));
}

#[test]
fn compaction_adopts_a_staged_snapshot_and_drops_an_overtaken_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(disk_cfg(tmp.path()), voters()).unwrap();
    s.append(&ents(1, 50, 1)).unwrap();
    s.sync().unwrap();
    // Staged from another thread, as the node does, with different bytes than `compact` gets:
    // the staged file must be the one put in force.
    let stager = s.stager().expect("disk storage stages snapshots");
    std::thread::spawn(move || stager.stage(40, 1, &voters(), b"staged").unwrap())
        .join()
        .unwrap();
    assert_eq!(
        files(tmp.path(), ".snap"),
        2,
        "the initial snapshot and the staged one"
    );
    s.compact(40, voters(), Bytes::from_static(b"inline"))
        .unwrap();
    s.sync().unwrap();
    assert_eq!(s.snapshot().unwrap().data, Bytes::from_static(b"staged"));
    assert_eq!(files(tmp.path(), ".snap"), 1);
    // One overtaken by a newer snapshot is discarded, staged file included.
    let stager = s.stager().unwrap();
    stager.stage(30, 1, &voters(), b"old").unwrap();
    s.compact(30, voters(), Bytes::from_static(b"old")).unwrap();
    assert_eq!(files(tmp.path(), ".snap"), 1);
    let s = reopen_disk(s);
    assert_eq!(s.snapshot().unwrap().meta.index, 40);
    assert_eq!(s.snapshot().unwrap().data, Bytes::from_static(b"staged"));
}

#[test]
fn an_old_snapshot_left_for_deletion_is_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(disk_cfg(tmp.path()), voters()).unwrap();
    // What a crash between the rename and the background unlink leaves behind.
    let doomed = tmp
        .path()
        .join("snap-00000000000000000007-00000000000000000001.snap.deleting");
    std::fs::write(&doomed, b"old").unwrap();
    let s = reopen_disk(s);
    assert!(!doomed.exists());
    assert_eq!(s.snapshot().unwrap().meta.index, 0);
}

#[test]
fn group_commit_is_one_fdatasync_per_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(DiskConfig::new(tmp.path()), voters()).unwrap();
    s.append(&ents(1, 2, 1)).unwrap();
    s.sync().unwrap();
    let before = s.stats().fsyncs;
    for i in 2..100 {
        s.append(&[ent(i, 1)]).unwrap();
    }
    s.sync().unwrap();
    assert_eq!(s.stats().fsyncs - before, 1);
    // The hard state is written atomically (file fsync + directory fsync) at sync, commit
    // included, and survives a restart.
    s.set_hard_state(HardState {
        term: 0,
        vote: None,
        commit: 50,
    })
    .unwrap();
    s.sync().unwrap();
    assert_eq!(s.stats().fsyncs - before, 3);
    let s = reopen_disk(s);
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 50);
}

#[test]
fn lazy_commit_skips_commit_only_hard_state_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = DiskConfig::new(tmp.path());
    cfg.lazy_commit = true;
    let mut s = DiskStorage::open(cfg, voters()).unwrap();
    s.append(&ents(1, 100, 1)).unwrap();
    s.set_hard_state(HardState {
        term: 1,
        vote: Some(2),
        commit: 10,
    })
    .unwrap();
    s.sync().unwrap();
    let before = s.stats().fsyncs;
    s.set_hard_state(HardState {
        term: 1,
        vote: Some(2),
        commit: 50,
    })
    .unwrap();
    s.append(&ents(100, 101, 1)).unwrap();
    s.sync().unwrap();
    assert_eq!(s.stats().fsyncs - before, 1, "only the log's fdatasync");
    let s = reopen_disk(s);
    let hs = s.initial_state().unwrap().hard_state;
    assert_eq!((hs.term, hs.vote, hs.commit), (1, Some(2), 10));
    assert_eq!(s.last_index().unwrap(), 100);
}

#[test]
fn snapshots_stream_in_chunks_and_install_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let mut leader = DiskStorage::open(DiskConfig::new(tmp.path().join("l")), voters()).unwrap();
    leader.append(&ents(1, 21, 2)).unwrap();
    let state: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    leader
        .compact(20, voters(), Bytes::from(state.clone()))
        .unwrap();
    let len = leader.snapshot_len().unwrap();
    assert!(len > state.len() as u64);

    let mut follower = DiskStorage::open(DiskConfig::new(tmp.path().join("f")), voters()).unwrap();
    follower.append(&ents(1, 6, 1)).unwrap();
    let mut rx = follower.snapshot_receiver().unwrap();
    let mut off = 0;
    while off < len {
        let chunk = leader.read_snapshot_chunk(off, 4096).unwrap();
        rx.write_chunk(off, &chunk).unwrap();
        // A retried chunk is accepted and ignored.
        rx.write_chunk(off, &chunk).unwrap();
        off += chunk.len() as u64;
    }
    assert!(leader.read_snapshot_chunk(len, 10).unwrap().is_empty());
    assert!(rx.write_chunk(len + 5, b"x").is_err(), "out of order");
    let snap = rx.finish().unwrap();
    assert_eq!(snap, leader.snapshot().unwrap());
    // Received but not applied: a restart does not take it as the node's state.
    let mut follower = reopen_disk(follower);
    assert_eq!(follower.snapshot().unwrap().meta.index, 0);
    assert_eq!(follower.last_index().unwrap(), 5);

    // An older snapshot received but never applied is cleaned up by the next install.
    let mut old = DiskStorage::open(DiskConfig::new(tmp.path().join("o")), voters()).unwrap();
    old.append(&ents(1, 11, 2)).unwrap();
    old.compact(10, voters(), Bytes::from_static(b"old"))
        .unwrap();
    let mut rx = follower.snapshot_receiver().unwrap();
    let old_len = old.snapshot_len().unwrap() as usize;
    rx.write_chunk(0, &old.read_snapshot_chunk(0, old_len).unwrap())
        .unwrap();
    rx.finish().unwrap();
    assert_eq!(
        files(&tmp.path().join("f"), ".snap"),
        2,
        "snapshot + staged"
    );

    let mut rx = follower.snapshot_receiver().unwrap();
    let all = leader.read_snapshot_chunk(0, len as usize).unwrap();
    rx.write_chunk(0, &all).unwrap();
    let snap = rx.finish().unwrap();
    follower.apply_snapshot(snap.clone()).unwrap();
    follower.sync().unwrap();
    let follower = reopen_disk(follower);
    assert_eq!(follower.snapshot().unwrap(), snap);
    assert_eq!(follower.first_index().unwrap(), 21);
    assert_eq!(follower.last_index().unwrap(), 20);
    let dir = tmp.path().join("f");
    assert_eq!(files(&dir, ".snap"), 1);
    assert_eq!(files(&dir, ".tmp"), 0);
}

#[test]
fn a_damaged_snapshot_stream_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut leader = DiskStorage::open(DiskConfig::new(tmp.path().join("l")), voters()).unwrap();
    leader.append(&ents(1, 11, 1)).unwrap();
    leader
        .compact(10, voters(), Bytes::from(vec![7u8; 5000]))
        .unwrap();
    let len = leader.snapshot_len().unwrap();
    let mut bytes = leader
        .read_snapshot_chunk(0, len as usize)
        .unwrap()
        .to_vec();
    let follower = DiskStorage::open(DiskConfig::new(tmp.path().join("f")), voters()).unwrap();

    // A flipped byte in the data.
    bytes[3000] ^= 1;
    let mut rx = follower.snapshot_receiver().unwrap();
    rx.write_chunk(0, &bytes).unwrap();
    assert!(matches!(rx.finish(), Err(DiskError::Invalid(_))));
    // A stream cut short.
    bytes[3000] ^= 1;
    let mut rx = follower.snapshot_receiver().unwrap();
    rx.write_chunk(0, &bytes[..bytes.len() - 1]).unwrap();
    assert!(rx.finish().is_err());
    // Garbage instead of a header.
    let mut rx = follower.snapshot_receiver().unwrap();
    assert!(rx.write_chunk(0, &[0xAB; 64]).is_err());
    drop(rx);
    // A stream longer than its header says.
    let mut rx = follower.snapshot_receiver().unwrap();
    let mut long = bytes.clone();
    long.push(0);
    assert!(rx.write_chunk(0, &long).is_err());
    drop(rx);
    assert_eq!(files(&tmp.path().join("f"), ".tmp"), 0);
}

#[test]
fn a_crash_between_installing_a_snapshot_and_resetting_the_log_recovers_the_snapshot() {
    // Simulated by planting a newer snapshot file next to a log that does not continue it.
    let tmp = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(DiskConfig::new(tmp.path()), voters()).unwrap();
    s.append(&ents(1, 11, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let mut other = DiskStorage::open(DiskConfig::new(tmp.path().join("x")), voters()).unwrap();
    other.append(&ents(1, 8, 2)).unwrap();
    other
        .compact(7, voters(), Bytes::from_static(b"x"))
        .unwrap();
    let name = format!("snap-{:020}-{:020}.snap", 7, 2);
    std::fs::copy(tmp.path().join("x").join(&name), tmp.path().join(&name)).unwrap();
    let s = DiskStorage::open(DiskConfig::new(tmp.path()), voters()).unwrap();
    assert_eq!(s.first_index().unwrap(), 8);
    assert_eq!(
        s.last_index().unwrap(),
        7,
        "stale entries 8..=10 are discarded"
    );
    assert_eq!(s.term(7).unwrap(), 2);
}

#[test]
fn a_write_failure_poisons_the_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(DiskConfig::new(tmp.path().join("d")), voters()).unwrap();
    s.append(&ents(1, 3, 1)).unwrap();
    // Make the next segment impossible to create by removing the directory.
    std::fs::remove_dir_all(tmp.path().join("d")).unwrap();
    let r = s.compact(2, voters(), Bytes::new());
    assert!(r.is_err());
    let again = s.append(&ents(3, 4, 1));
    assert!(
        matches!(&again, Err(StorageError::Other(m)) if m.contains("unusable")),
        "{again:?}"
    );
}

#[test]
fn storage_types_can_move_between_tasks() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<DiskStorage>();
    assert_send::<rustyraft::raft::Raft<DiskStorage>>();
    assert_send::<rustyraft::storage::SnapshotReceiver>();
    assert_send::<DiskError>();
}

#[test]
fn recovery_keeps_only_a_bounded_cache_and_reads_the_rest_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = DiskConfig::new(tmp.path());
    cfg.segment_size = 4096;
    cfg.cache_bytes = 1000;
    let mut s = DiskStorage::open(cfg.clone(), voters()).unwrap();
    let five = ConfState::with_voters([1, 2, 3, 4, 5]);
    let mut all = ents(1, 300, 1);
    all[99] = conf_entry(100, 1, &five);
    s.append(&all).unwrap();
    s.set_hard_state(HardState {
        term: 1,
        vote: None,
        commit: 300,
    })
    .unwrap();
    s.compact(50, voters(), Bytes::new()).unwrap();
    s.sync().unwrap();
    let s = reopen_disk(s);
    assert_eq!(s.entries(51, 300, None).unwrap(), all[50..].to_vec());
    assert_eq!(s.initial_state().unwrap().conf_state, five);
}

#[test]
fn an_oversized_entry_is_refused_without_changing_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(DiskConfig::new(tmp.path()), voters()).unwrap();
    s.append(&ents(1, 4, 1)).unwrap();
    let mut big = ents(2, 4, 2);
    big[1].data = Bytes::from(vec![1u8; 65 << 20]);
    assert!(s.append(&big).is_err());
    assert_eq!(s.last_index().unwrap(), 3);
    assert_eq!(s.term(2).unwrap(), 1);
    // Not a disk failure: the storage stays usable.
    s.append(&ents(4, 5, 1)).unwrap();
    s.sync().unwrap();
    let s = reopen_disk(s);
    assert_eq!(s.entries(1, 5, None).unwrap(), ents(1, 5, 1));
}

/// A lazily persisted commit index is still written when it moves past a configuration entry,
/// so a restarted node comes back with the membership in force.
#[test]
fn lazy_commit_is_written_when_it_passes_a_configuration_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = DiskConfig::new(tmp.path());
    cfg.lazy_commit = true;
    let five = ConfState::with_voters([1, 2, 3, 4, 5]);
    let mut s = DiskStorage::open(cfg.clone(), voters()).unwrap();
    let hs = |commit| HardState {
        term: 1,
        vote: Some(1),
        commit,
    };
    s.append(&[ent(1, 1), ent(2, 1), conf_entry(3, 1, &five), ent(4, 1)])
        .unwrap();
    s.set_hard_state(hs(2)).unwrap();
    s.sync().unwrap();
    s.set_hard_state(hs(2)).unwrap();
    drop(s);
    let mut s = DiskStorage::open(cfg.clone(), voters()).unwrap();
    // Term and vote are durable; the commit (2) passed no configuration entry.
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state.vote, Some(1));
    assert_eq!(st.conf_state, voters());
    s.set_hard_state(hs(3)).unwrap();
    s.sync().unwrap();
    drop(s);
    let s = DiskStorage::open(cfg, voters()).unwrap();
    let st = s.initial_state().unwrap();
    assert_eq!(
        st.hard_state.commit, 3,
        "passing the configuration entry forced a write"
    );
    assert_eq!((st.conf_state, st.conf_index), (five, 3));
}
