//! The node's view of its log: what is stable in [`Storage`] plus what is not yet persisted
//! (the "unstable" part: new entries and a snapshot received from the leader).
//!
//! Entries leave the unstable part only after the application persisted them and called
//! `advance`, so the core never reads back from storage something storage does not hold yet.

use super::errors::StorageError;
use super::log_store::Storage;
use super::types::{Entry, Snapshot};

/// Entries and a snapshot not yet on stable storage.
///
/// Invariants:
/// - `entries[i].index == offset + i`;
/// - with a snapshot, `offset == snapshot.meta.index + 1`;
/// - entries below `offset` are in storage (unless a snapshot is pending, in which case storage
///   is entirely superseded);
/// - `offset <= in_progress <= offset + entries.len()`: entries below `in_progress` have been
///   handed to the application in a `Ready` and are being persisted.
#[derive(Debug, Default)]
struct Unstable {
    snapshot: Option<Snapshot>,
    snapshot_in_progress: bool,
    entries: Vec<Entry>,
    offset: u64,
    in_progress: u64,
}

impl Unstable {
    fn last_index(&self) -> Option<u64> {
        if !self.entries.is_empty() {
            return Some(self.offset + self.entries.len() as u64 - 1);
        }
        self.snapshot.as_ref().map(|s| s.meta.index)
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index >= self.offset {
            return self
                .entries
                .get((index - self.offset) as usize)
                .map(|e| e.term);
        }
        match &self.snapshot {
            Some(s) if s.meta.index == index => Some(s.meta.term),
            _ => None,
        }
    }

    fn truncate_and_append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first().map(|e| e.index) else {
            return;
        };
        let end = self.offset + self.entries.len() as u64;
        if first == end {
            self.entries.extend_from_slice(ents);
        } else if first <= self.offset {
            // Replace everything: storage entries from `first` on are superseded too.
            self.offset = first;
            self.entries = ents.to_vec();
        } else {
            self.entries.truncate((first - self.offset) as usize);
            self.entries.extend_from_slice(ents);
        }
        self.in_progress = self.in_progress.min(first).max(self.offset);
    }
}

/// What a successful follower append did (see [`RaftLog::maybe_append`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Index of the last entry the leader sent: the log is known to match up to here.
    pub last_new: u64,
    /// First index written, when the append replaced or extended the log. The core uses it to
    /// drop configurations that lived in overwritten entries and to adopt the new ones.
    pub from: Option<u64>,
}

/// Log = storage (stable) + unstable.
///
/// Invariants: `applied <= applying <= committed <= last_index()`.
pub struct RaftLog<S: Storage> {
    /// Stable storage, written by the application.
    pub storage: S,
    unstable: Unstable,
    /// Highest index known to be committed.
    pub committed: u64,
    /// Highest index handed to the application to apply.
    pub applying: u64,
    /// Highest index the application confirmed applied.
    pub applied: u64,
}

impl<S: Storage> RaftLog<S> {
    /// Wraps storage. `applied` is where the state machine already is (its snapshot index, or
    /// higher if the application tracks it).
    pub fn new(storage: S, committed: u64, applied: u64) -> Result<Self, StorageError> {
        let last = storage.last_index()?;
        let first = storage.first_index()?;
        let applied = applied.max(first - 1);
        Ok(RaftLog {
            storage,
            unstable: Unstable {
                offset: last + 1,
                in_progress: last + 1,
                ..Default::default()
            },
            committed: committed.max(applied),
            applying: applied,
            applied,
        })
    }

    /// First index still present (the pending snapshot's or storage's snapshot index + 1).
    pub fn first_index(&self) -> Result<u64, StorageError> {
        match &self.unstable.snapshot {
            Some(s) => Ok(s.meta.index + 1),
            None => self.storage.first_index(),
        }
    }

    /// Last index, unstable entries included.
    pub fn last_index(&self) -> Result<u64, StorageError> {
        match self.unstable.last_index() {
            Some(i) => Ok(i),
            None => self.storage.last_index(),
        }
    }

    /// Highest index known to be on stable storage. Entries from `offset` on are either
    /// unstable or superseded in storage.
    pub fn persisted_index(&self) -> u64 {
        if self.unstable.snapshot.is_some() {
            return 0;
        }
        self.unstable.offset - 1
    }

    /// Term at `index`. Index 0 has term 0.
    pub fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == 0 {
            return Ok(0);
        }
        if let Some(t) = self.unstable.term(index) {
            return Ok(t);
        }
        if index >= self.unstable.offset {
            return Err(StorageError::Unavailable);
        }
        if let Some(s) = &self.unstable.snapshot {
            return if index < s.meta.index {
                Err(StorageError::Compacted)
            } else {
                Err(StorageError::Unavailable)
            };
        }
        self.storage.term(index)
    }

    /// Term at `index`, or `None` when the index is compacted or beyond the log.
    pub fn term_opt(&self, index: u64) -> Option<u64> {
        self.term(index).ok()
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Result<u64, StorageError> {
        self.term(self.last_index()?)
    }

    /// True when the entry at `index` has `term`.
    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index).map(|t| t == term).unwrap_or(false)
    }

    /// Raft's up-to-date check (section 5.4.1): is a log ending at (`last_index`, `last_term`)
    /// at least as up to date as ours?
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> Result<bool, StorageError> {
        let our_term = self.last_term()?;
        Ok(last_term > our_term || (last_term == our_term && last_index >= self.last_index()?))
    }

    /// Entries in `[lo, hi)`, at most `max_bytes` (but at least one).
    pub fn entries(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: Option<u64>,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index()? {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index()? + 1 {
            return Err(StorageError::Unavailable);
        }
        let off = self.unstable.offset;
        let mut out = if lo < off {
            self.storage.entries(lo, hi.min(off), max_bytes)?
        } else {
            Vec::new()
        };
        let mut size: u64 = out.iter().map(Entry::size).sum();
        if hi > off && (out.is_empty() || out.last().map(|e| e.index + 1) == Some(off)) {
            let from = lo.max(off);
            for e in &self.unstable.entries[(from - off) as usize..(hi - off) as usize] {
                size += e.size();
                if !out.is_empty() && max_bytes.is_some_and(|m| size > m) {
                    break;
                }
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// Leader append. Returns the new last index.
    pub fn append(&mut self, ents: &[Entry]) -> Result<u64, StorageError> {
        self.unstable.truncate_and_append(ents);
        self.last_index()
    }

    /// Follower append (section 5.3): if our log matches at (`prev_index`, `prev_term`), append
    /// `ents` after it, overwriting only from the first conflicting entry, and never truncating
    /// entries that agree (a delayed or duplicated message must not shorten the log).
    /// Returns `None` on mismatch; otherwise the index of the last entry the leader sent and,
    /// when anything was written, the index from which the log was replaced (everything at or
    /// after it is new, and whatever was there before is gone).
    pub fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        ents: &[Entry],
    ) -> Result<Option<Appended>, StorageError> {
        if !self.match_term(prev_index, prev_term) {
            return Ok(None);
        }
        let last_new = prev_index + ents.len() as u64;
        let mut conflict = None;
        for (i, e) in ents.iter().enumerate() {
            if !self.match_term(e.index, e.term) {
                conflict = Some(i);
                break;
            }
        }
        let mut from = None;
        if let Some(i) = conflict {
            let at = ents[i].index;
            if at <= self.committed {
                return Err(StorageError::Other(format!(
                    "leader overwrites committed entry {at} (committed {}): refusing",
                    self.committed
                )));
            }
            self.append(&ents[i..])?;
            from = Some(at);
        }
        Ok(Some(Appended { last_new, from }))
    }

    /// Finds where a rejection hint should point (Raft paper section 5.3's optimisation): for a
    /// rejected `index`, returns (conflict_term, first index of that term at or below `index`),
    /// or (0, last + 1) when our log is shorter.
    pub fn conflict_hint(&self, index: u64) -> Result<(u64, u64), StorageError> {
        let last = self.last_index()?;
        if index > last {
            return Ok((0, last + 1));
        }
        let term = match self.term(index) {
            Ok(t) => t,
            Err(StorageError::Compacted) => return Ok((0, self.committed + 1)),
            Err(e) => return Err(e),
        };
        let floor = (self.committed + 1).max(self.first_index()?);
        let mut i = index;
        while i > floor && self.term(i - 1)? == term {
            i -= 1;
        }
        Ok((term, i))
    }

    /// Advances the commit index (never backwards, never beyond the log).
    pub fn commit_to(&mut self, index: u64) -> Result<bool, StorageError> {
        let index = index.min(self.last_index()?);
        if index > self.committed {
            self.committed = index;
            return Ok(true);
        }
        Ok(false)
    }

    /// Replaces the log with a snapshot from the leader.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        self.committed = index;
        self.applying = index;
        self.unstable = Unstable {
            snapshot: Some(snapshot),
            snapshot_in_progress: false,
            entries: Vec::new(),
            offset: index + 1,
            in_progress: index + 1,
        };
    }

    /// True when there are unstable entries or a snapshot not yet handed out.
    pub fn has_unsent(&self) -> bool {
        (self.unstable.snapshot.is_some() && !self.unstable.snapshot_in_progress)
            || self.unstable.in_progress < self.unstable.offset + self.unstable.entries.len() as u64
    }

    /// Hands out the unstable snapshot and entries not yet handed out, marking them in progress.
    pub fn take_unsent(&mut self) -> (Option<Snapshot>, Vec<Entry>) {
        let snap = match &self.unstable.snapshot {
            Some(s) if !self.unstable.snapshot_in_progress => {
                self.unstable.snapshot_in_progress = true;
                Some(s.clone())
            }
            _ => None,
        };
        let from = (self.unstable.in_progress - self.unstable.offset) as usize;
        let ents = self.unstable.entries[from..].to_vec();
        self.unstable.in_progress = self.unstable.offset + self.unstable.entries.len() as u64;
        (snap, ents)
    }

    /// The application persisted entries up to (`index`, `term`): drop them from unstable,
    /// unless a later append replaced them meanwhile.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if index < self.unstable.offset || self.unstable.term(index) != Some(term) {
            return;
        }
        let n = (index + 1 - self.unstable.offset) as usize;
        self.unstable.entries.drain(..n);
        self.unstable.offset = index + 1;
        self.unstable.in_progress = self.unstable.in_progress.max(self.unstable.offset);
    }

    /// The application persisted the snapshot at `index`.
    pub fn stable_snap_to(&mut self, index: u64) {
        if self
            .unstable
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index == index)
        {
            self.unstable.snapshot = None;
            self.unstable.snapshot_in_progress = false;
        }
    }

    /// Committed entries not yet handed out for applying, up to `max_bytes`, limited to entries
    /// already handed out for persisting (so the application persists before it applies).
    pub fn take_committed(&mut self, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let hi = self.committed.min(self.unstable.in_progress - 1);
        let lo = self.applying + 1;
        if lo > hi {
            return Ok(Vec::new());
        }
        let ents = self.entries(lo, hi + 1, Some(max_bytes))?;
        if let Some(last) = ents.last() {
            self.applying = last.index;
        }
        Ok(ents)
    }

    /// True when committed entries await applying.
    pub fn has_committed(&self) -> bool {
        self.committed
            .min(self.unstable.in_progress.saturating_sub(1))
            > self.applying
            || (self.committed > self.applying && self.has_unsent())
    }

    /// The application applied everything up to `index`.
    pub fn applied_to(&mut self, index: u64) {
        if index > self.applied {
            self.applied = index;
        }
        if self.applying < self.applied {
            self.applying = self.applied;
        }
    }
}
