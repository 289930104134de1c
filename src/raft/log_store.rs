//! The storage contract of the core: the read side it uses ([`Storage`]), the write side a
//! driver uses to persist each `Ready` ([`LogStore`], [`SnapshotStager`]), and what a node
//! recovers on start ([`RaftState`]).
//!
//! The application owns writes: it persists what each `Ready` carries (hard state, snapshot,
//! entries) and only then calls `advance`. The core reads back through [`Storage`].
//! Implementations: [`crate::raft::MemStorage`] for tests and the simulation, and the durable
//! `crate::storage::DiskStorage`.

use super::errors::StorageError;
use super::types::{ConfState, Entry, HardState, Snapshot, SnapshotMeta};

/// What a node recovers on start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftState {
    /// Persisted term, vote and commit.
    pub hard_state: HardState,
    /// Membership as of the persisted commit: the snapshot's, updated by the configuration
    /// entries after it up to and including the persisted commit index, so a configuration
    /// entry never known committed (a new leader may yet overwrite it) does not count.
    ///
    /// This is not the membership a node restarts with. Membership takes effect as soon as its
    /// entry is in the log, committed or not, so [`crate::raft::Raft::new`] takes only the
    /// snapshot's membership from here (when `conf_index` is the snapshot's index) and puts
    /// every configuration entry in the log after the snapshot in force in turn.
    pub conf_state: ConfState,
    /// Index of the entry (or snapshot) that `conf_state` comes from.
    pub conf_index: u64,
}

/// Read access to the persisted log.
///
/// Correctness obligations for implementations:
/// - The log has no holes: every index in `first_index()..=last_index()` is readable.
/// - `term(first_index() - 1)` answers with the snapshot's term (index 0 has term 0).
/// - Everything readable here has been made durable: the core treats it as persisted.
/// - The persisted commit need not be current (see [`HardState::commit`]): a node restarts
///   with the latest configuration in its snapshot and log, whatever its commit index, and
///   re-learns the commit from the leader.
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
    /// [`LogStore::sync`] in two halves, for an application that fsyncs on another thread
    /// while it goes on stepping the core: everything written so far reaches the kernel, and
    /// the returned job, blocking and runnable on any thread, makes it durable. Nothing that
    /// depends on those writes may be acknowledged before the job succeeds; if it fails, call
    /// [`LogStore::sync_failed`]. `None`: nothing left to make durable. The default does the
    /// whole sync inline and returns `None`.
    fn begin_sync(&mut self) -> Result<Option<SyncJob>, StorageError> {
        self.sync()?;
        Ok(None)
    }
    /// A job from [`LogStore::begin_sync`] failed: the storage must refuse every later write
    /// (after a failed fsync the kernel may have dropped the dirty pages, so only a reopen is
    /// safe).
    fn sync_failed(&mut self, _error: &str) {}
    /// A handle that writes a snapshot ahead of [`LogStore::compact`] from another thread, so
    /// the thread that drives the core never waits while the whole state is written and
    /// fsynced. `None` (the default): `compact` writes the snapshot itself.
    fn stager(&self) -> Option<Box<dyn SnapshotStager>> {
        None
    }
}

/// The blocking half of a sync, from [`LogStore::begin_sync`].
pub type SyncJob = Box<dyn FnOnce() -> Result<(), StorageError> + Send>;

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
