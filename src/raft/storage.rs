//! The read side of stable storage, as the core sees it, plus an in-memory implementation used
//! by tests and the simulation.
//!
//! The application owns writes: it persists what each `Ready` carries (hard state, snapshot,
//! entries) and only then calls `advance`. The core reads back through [`Storage`].

use super::errors::StorageError;
use super::types::{ConfState, Entry, HardState, Snapshot, SnapshotMeta};

/// What a node recovers on start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftState {
    /// Persisted term, vote and commit.
    pub hard_state: HardState,
    /// Membership in force: the snapshot's, updated by the configuration entries after it up to
    /// and including the persisted commit index. Configuration takes effect when applied, so a
    /// configuration entry that was never known committed does not count (it may yet be
    /// overwritten by a new leader).
    pub conf_state: ConfState,
    /// Index of the entry (or snapshot) that `conf_state` comes from. Re-applying configuration
    /// entries at or below it after a restart changes nothing.
    pub conf_index: u64,
}

/// Read access to the persisted log.
///
/// Correctness obligations for implementations:
/// - The log has no holes: every index in `first_index()..=last_index()` is readable.
/// - `term(first_index() - 1)` answers with the snapshot's term (index 0 has term 0).
/// - Everything readable here has been made durable: the core treats it as persisted.
/// - If a configuration entry at or below `initial_state().hard_state.commit` exists, the
///   persisted commit must not lag behind it after a crash: the membership a node restarts
///   with is the one as of its persisted commit, and it may be at most one change behind.
/// - Writes (`append`) truncate any existing suffix starting at the first appended index before
///   appending, because a follower may overwrite a conflicting tail.
pub trait Storage {
    /// Persisted hard state and membership.
    fn initial_state(&self) -> Result<RaftState, StorageError>;
    /// Entries in `[lo, hi)`. `max_bytes` caps the total size, but at least one entry is
    /// returned when the range is not empty.
    fn entries(&self, lo: u64, hi: u64, max_bytes: Option<u64>)
        -> Result<Vec<Entry>, StorageError>;
    /// Term of the entry at `index`.
    fn term(&self, index: u64) -> Result<u64, StorageError>;
    /// Index of the first entry still in the log (snapshot index + 1).
    fn first_index(&self) -> Result<u64, StorageError>;
    /// Index of the last entry (the snapshot index when the log is empty).
    fn last_index(&self) -> Result<u64, StorageError>;
    /// The latest snapshot, to send to followers that are too far behind.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
    /// The latest snapshot's metadata alone: what starting the core needs. Storages that keep
    /// the data on disk answer it without reading the data.
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        self.snapshot().map(|s| s.meta)
    }
}

/// The part of `entries` after `snapshot_index`: entries the snapshot already covers are
/// skipped by every storage's `append`, since a leader may resend them after a compaction.
pub fn after_snapshot(entries: &[Entry], snapshot_index: u64) -> &[Entry] {
    let skip = entries
        .iter()
        .take_while(|e| e.index <= snapshot_index)
        .count();
    &entries[skip..]
}

/// The write side of stable storage: what a driver calls to persist a [`crate::raft::Ready`].
///
/// Split from [`Storage`] because the core never writes; the driver does, in this order for each
/// Ready: `apply_snapshot`, `append`, `set_hard_state`, then one `sync` for all of them (group
/// commit). Only after `sync` returns may the driver send `persisted_messages` and call
/// `advance`. Obligations:
/// - `append` truncates any suffix starting at the first appended index (a follower overwrites
///   a conflicting tail) and never leaves a hole.
/// - After `sync` returns `Ok`, everything written before it survives a crash at any instant.
/// - Before `sync`, a crash may lose any suffix of the unsynced writes, but never corrupts the
///   synced prefix.
pub trait LogStore: Storage {
    /// Appends entries (truncating a conflicting suffix first). Need not be durable until `sync`.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Records term, vote and commit. Need not be durable until `sync`.
    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError>;
    /// Replaces the log with a snapshot received from the leader.
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;
    /// Saves a snapshot of the applied state at `index` and discards the log up to it.
    fn compact(
        &mut self,
        index: u64,
        conf: ConfState,
        data: bytes::Bytes,
    ) -> Result<(), StorageError>;
    /// Makes every earlier write durable: one fsync for the whole batch.
    fn sync(&mut self) -> Result<(), StorageError>;
    /// A handle that writes a snapshot ahead of [`LogStore::compact`] from another thread, so
    /// the thread that drives the core never waits while the whole state is written and
    /// fsynced. `None` (the default): `compact` writes the snapshot itself.
    fn stager(&self) -> Option<Box<dyn SnapshotStager>> {
        None
    }
}

/// Writes a snapshot durably without putting it in force: a later [`LogStore::compact`] at the
/// same index and term adopts the staged file instead of writing the data again. Staging is
/// only an optimisation: `compact` still receives the data and writes it if the staged file
/// is gone.
pub trait SnapshotStager: Send + 'static {
    /// Writes and syncs `data` as the snapshot at (`index`, `term`) with membership `conf`.
    fn stage(
        &self,
        index: u64,
        term: u64,
        conf: &ConfState,
        data: &[u8],
    ) -> Result<(), StorageError>;
}

/// In-memory storage: a snapshot plus the entries after it.
///
/// Invariant: `entries[i].index == snapshot.meta.index + 1 + i`.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl MemStorage {
    /// A fresh log with the given initial membership (index 0, term 0).
    pub fn new_with_conf(conf: ConfState) -> Self {
        MemStorage {
            hard_state: HardState::default(),
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 0,
                    term: 0,
                    conf,
                },
                data: Default::default(),
            },
            entries: Vec::new(),
        }
    }

    /// Persists the hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Appends entries, first truncating any suffix that starts at `entries[0].index`.
    /// Entries at or below the snapshot index are skipped (they are already covered).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let snap_index = self.snapshot.meta.index;
        let entries = after_snapshot(entries, snap_index);
        let Some(first) = entries.first().map(|e| e.index) else {
            return Ok(());
        };
        let next = snap_index + 1 + self.entries.len() as u64;
        if first > next {
            return Err(StorageError::Other(format!(
                "append at {first} would leave a hole after {}",
                next - 1
            )));
        }
        self.entries.truncate((first - snap_index - 1) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Installs a snapshot received from the leader, replacing the whole log.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let keep_from = snapshot.meta.index;
        // Keep entries after the snapshot only if they agree with it (same term at its index).
        let matches = self
            .term(keep_from)
            .map(|t| t == snapshot.meta.term)
            .unwrap_or(false);
        if matches && keep_from > self.snapshot.meta.index {
            let drop = (keep_from - self.snapshot.meta.index) as usize;
            self.entries.drain(..drop.min(self.entries.len()));
        } else {
            self.entries.clear();
        }
        if self.hard_state.commit < snapshot.meta.index {
            self.hard_state.commit = snapshot.meta.index;
        }
        self.snapshot = snapshot;
    }

    /// Takes a snapshot of the state machine at `index` (which must be applied by the caller)
    /// and discards the log up to it. `conf` is the membership as of `index`.
    pub fn compact(
        &mut self,
        index: u64,
        conf: ConfState,
        data: bytes::Bytes,
    ) -> Result<(), StorageError> {
        if index <= self.snapshot.meta.index {
            return Ok(());
        }
        let term = self.term(index)?;
        let drop = (index - self.snapshot.meta.index) as usize;
        self.entries.drain(..drop);
        self.snapshot = Snapshot {
            meta: SnapshotMeta { index, term, conf },
            data,
        };
        Ok(())
    }

    /// Every entry currently held (after the snapshot), for inspection in tests.
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        let mut conf = self.snapshot.meta.conf.clone();
        let mut conf_index = self.snapshot.meta.index;
        for e in &self.entries {
            if e.index > self.hard_state.commit {
                break;
            }
            if e.kind == super::types::EntryKind::ConfChange {
                if let Some(c) = ConfState::decode(&e.data) {
                    conf = c;
                    conf_index = e.index;
                }
            }
        }
        Ok(RaftState {
            hard_state: self.hard_state,
            conf_state: conf,
            conf_index,
        })
    }

    fn entries(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: Option<u64>,
    ) -> Result<Vec<Entry>, StorageError> {
        let snap = self.snapshot.meta.index;
        if lo <= snap {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index()? + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut out = Vec::new();
        let mut size = 0;
        for e in &self.entries[(lo - snap - 1) as usize..(hi - snap - 1) as usize] {
            size += e.size();
            if !out.is_empty() && max_bytes.is_some_and(|m| size > m) {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        let snap = self.snapshot.meta.index;
        if index < snap {
            return Err(StorageError::Compacted);
        }
        if index == snap {
            return Ok(self.snapshot.meta.term);
        }
        self.entries
            .get((index - snap - 1) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.snapshot.meta.index + 1)
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.snapshot.meta.index + self.entries.len() as u64)
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

impl LogStore for MemStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        MemStorage::append(self, entries)
    }
    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        MemStorage::set_hard_state(self, hs);
        Ok(())
    }
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        MemStorage::apply_snapshot(self, snapshot);
        Ok(())
    }
    fn compact(
        &mut self,
        index: u64,
        conf: ConfState,
        data: bytes::Bytes,
    ) -> Result<(), StorageError> {
        MemStorage::compact(self, index, conf, data)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        // Memory is "durable" for as long as the process lives; the simulation models crashes
        // by cloning what was written before the crash point.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: bytes::Bytes::from(vec![index as u8]),
        }
    }

    #[test]
    fn append_truncates_conflicting_suffix_and_refuses_holes() {
        let mut s = MemStorage::new_with_conf(ConfState::with_voters([1]));
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        s.append(&[ent(2, 2)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        assert!(s.append(&[ent(5, 2)]).is_err());
    }

    #[test]
    fn compaction_moves_first_index_and_keeps_term_of_snapshot() {
        let mut s = MemStorage::new_with_conf(ConfState::with_voters([1]));
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 2)]).unwrap();
        s.compact(2, ConfState::with_voters([1]), Default::default())
            .unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert_eq!(s.term(1), Err(StorageError::Compacted));
        assert_eq!(s.entries(2, 3, None), Err(StorageError::Compacted));
        assert_eq!(s.entries(3, 4, None).unwrap(), vec![ent(3, 2)]);
    }
}
