//! Durable storage for the Raft log: a segmented write-ahead log, an atomically replaced
//! hard-state file and atomically written, chunk-streamable snapshots.
//!
//! Raft's promise holds only if what a node acknowledged survives a crash at any instant, so
//! every format here is checksummed and every replace is atomic (temp file, fsync, rename,
//! fsync of the directory). See `docs/storage.md` for the layout and the recovery rules.

mod disk;
mod fsutil;
pub mod records;
mod snapshot;
mod wal;

pub use self::disk::{DiskConfig, DiskStats, DiskStorage};
pub use self::fsutil::{DiskError, StorageOpenError, SyncObserver};
pub use self::snapshot::{SnapshotReceiver, MAX_SNAPSHOT_LEN};

#[cfg(test)]
mod tests;
