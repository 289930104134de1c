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
    /// Told how long each fsync took ([`super::DiskStorage::observe_syncs`]).
    pub observer: SyncObserverCell,
}

/// A callback told the duration of every fsync of one storage: how a metrics layer sees the
/// storage's latency without the storage depending on it.
pub type SyncObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

/// Set at most once, then read lock-free on every fsync.
#[derive(Default)]
pub(crate) struct SyncObserverCell(pub std::sync::OnceLock<SyncObserver>);

impl std::fmt::Debug for SyncObserverCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Some(observer)"
        } else {
            "None"
        })
    }
}

/// Large atomic writes start writeback every this many bytes (see `Syncer::start_writeback`).
const WRITEBACK_STEP: u64 = 4 << 20;

/// How the parts of one storage sync: whether fsync is on, and where it is counted.
#[derive(Clone, Debug)]
pub(crate) struct Syncer {
    /// False only in tests and benchmarks that explicitly trade durability for speed.
    pub enabled: bool,
    pub counters: Arc<Counters>,
}

impl Syncer {
    /// Counts one fsync that started at `t`, and tells the observer its duration.
    fn synced(&self, t: std::time::Instant) {
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Some(observe) = self.counters.observer.0.get() {
            observe(t.elapsed());
        }
    }

    /// fdatasync: the data and the size, not the timestamps.
    pub fn data(&self, f: &File, path: &Path) -> Result<(), DiskError> {
        if self.enabled {
            let t = std::time::Instant::now();
            f.sync_data().at(path)?;
            self.synced(t);
        }
        Ok(())
    }

    /// Full fsync of a file.
    pub fn all(&self, f: &File, path: &Path) -> Result<(), DiskError> {
        if self.enabled {
            let t = std::time::Instant::now();
            f.sync_all().at(path)?;
            self.synced(t);
        }
        Ok(())
    }

    /// fsync of a directory, which makes creates, renames and unlinks in it durable.
    pub fn dir(&self, dir: &Path) -> Result<(), DiskError> {
        if self.enabled {
            let d = File::open(dir).at(dir)?;
            let t = std::time::Instant::now();
            d.sync_all().at(dir)?;
            self.synced(t);
        }
        Ok(())
    }

    /// Starts writing back `[offset, offset + WRITEBACK_STEP)` and waits for the step before
    /// it, so a large file (a snapshot) never piles up hundreds of megabytes of dirty pages.
    /// Without this, its final fsync pushes them out in one burst, and every WAL fdatasync of
    /// the same file system queues behind that burst: the whole node stalls for as long.
    /// Best effort: an error here is ignored, since the fsync that follows reports it.
    fn start_writeback(&self, f: &File, offset: u64) {
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        let step = WRITEBACK_STEP as i64;
        // SAFETY: `fd` is an open file descriptor owned by `f` for the whole call, and
        // sync_file_range only reads its arguments.
        unsafe {
            libc::sync_file_range(fd, offset as i64, step, libc::SYNC_FILE_RANGE_WRITE);
            if offset >= WRITEBACK_STEP {
                libc::sync_file_range(
                    fd,
                    offset as i64 - step,
                    step,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
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
        self.write_atomic_parts(dir, name, &[bytes], None)
    }

    /// [`Syncer::write_atomic`] of the concatenation of `parts`, without concatenating them.
    ///
    /// With `rate` (bytes per second), the write sleeps as needed to stay under it: a
    /// background snapshot then leaves the disk to the WAL's fsyncs, which every commit waits
    /// for. Only for callers that may block (never the driver task).
    pub fn write_atomic_parts(
        &self,
        dir: &Path,
        name: &str,
        parts: &[&[u8]],
        rate: Option<u64>,
    ) -> Result<(), DiskError> {
        let tmp = dir.join(format!("{name}.tmp"));
        let target = dir.join(name);
        let start = std::time::Instant::now();
        {
            let mut f = File::create(&tmp).at(&tmp)?;
            let mut written = 0u64;
            for part in parts {
                for piece in part.chunks(WRITEBACK_STEP as usize) {
                    f.write_all(piece).at(&tmp)?;
                    self.wrote(piece.len());
                    written += piece.len() as u64;
                    if self.enabled && written.is_multiple_of(WRITEBACK_STEP) {
                        self.start_writeback(&f, written - WRITEBACK_STEP);
                    }
                    if let Some(rate) = rate.filter(|&r| r > 0) {
                        let due = std::time::Duration::from_secs_f64(written as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
            }
            self.all(&f, &tmp)?;
        }
        fs::rename(&tmp, &target).at(&target)?;
        self.dir(dir)
    }
}
