//! File-system helpers shared by the WAL, the hard state and the snapshots: the error type of
//! this layer, fsync accounting, and the atomic-replace recipe.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::raft::StorageError;

/// Everything that can go wrong in the disk storage. Opening reports corruption with the file
/// and offset so an operator knows exactly what to inspect; nothing is silently dropped.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A system call failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk are not what was written: a checksum mismatch before the tail of the log,
    /// a damaged snapshot or hard-state file, or records out of order.
    #[error("corrupt storage: {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first bad byte range found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The files are individually fine but do not fit together (for example a hole between
    /// the snapshot and the log).
    #[error("inconsistent storage in {dir}: {reason}")]
    Inconsistent {
        /// The storage directory.
        dir: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// A caller asked for something the storage cannot do (for example an entry too big for
    /// one record, or a snapshot chunk out of order).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An earlier write or fsync failed. After a failed fsync the kernel may have dropped dirty
    /// pages, so the only safe course is to stop and recover from disk by reopening.
    #[error("storage is unusable after an earlier write failure: {0}")]
    Poisoned(String),
}

/// What opening a storage directory can fail with; the same enum as every other operation.
pub type StorageOpenError = DiskError;

impl From<DiskError> for StorageError {
    fn from(e: DiskError) -> Self {
        StorageError::Other(e.to_string())
    }
}

/// Attaches a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    /// Converts to a [`DiskError::Io`] naming `path`.
    fn at(self, path: &Path) -> Result<T, DiskError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, DiskError> {
        self.map_err(|source| DiskError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Counters of durable-write work, shared by every part of one storage.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub fsyncs: AtomicU64,
    pub bytes_written: AtomicU64,
}

/// How the parts of one storage sync: whether fsync is on, and where it is counted.
#[derive(Clone, Debug)]
pub(crate) struct Syncer {
    /// False only in tests and benchmarks that explicitly trade durability for speed.
    pub enabled: bool,
    pub counters: Arc<Counters>,
}

impl Syncer {
    /// fdatasync: the data and the size, not the timestamps.
    pub fn data(&self, f: &File, path: &Path) -> Result<(), DiskError> {
        if self.enabled {
            f.sync_data().at(path)?;
            self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Full fsync of a file.
    pub fn all(&self, f: &File, path: &Path) -> Result<(), DiskError> {
        if self.enabled {
            f.sync_all().at(path)?;
            self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// fsync of a directory, which makes creates, renames and unlinks in it durable.
    pub fn dir(&self, dir: &Path) -> Result<(), DiskError> {
        if self.enabled {
            File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
            self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Counts bytes handed to the kernel.
    pub fn wrote(&self, n: usize) {
        self.counters
            .bytes_written
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Replaces `dir/name` with `bytes` atomically: write a temp file, fsync it, rename it over
    /// the target, fsync the directory. A crash leaves either the old or the new file, whole.
    pub fn write_atomic(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let tmp = dir.join(format!("{name}.tmp"));
        let target = dir.join(name);
        {
            let mut f = File::create(&tmp).at(&tmp)?;
            f.write_all(bytes).at(&tmp)?;
            self.wrote(bytes.len());
            self.all(&f, &tmp)?;
        }
        fs::rename(&tmp, &target).at(&target)?;
        self.dir(dir)
    }
}
