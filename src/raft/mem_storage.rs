//! In-memory storage, used by tests and the simulation: a snapshot plus the entries after it,
//! "durable" for as long as the process lives.

use super::errors::StorageError;
use super::log_store::{after_snapshot, LogStore, RaftState, Storage};
use super::types::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};

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
            if e.kind == EntryKind::ConfChange {
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
