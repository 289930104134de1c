//! [`DiskStorage`]: the WAL, the hard-state file and the snapshot files behind the core's
//! [`Storage`] and [`LogStore`] traits.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use super::fsutil::{Counters, DiskError, IoContext, SyncObserver, Syncer};
use super::records;
use super::snapshot::{self, SnapshotReceiver};
use super::wal::{Wal, WalOptions, WalSync};
use crate::raft::{
    after_snapshot, ConfState, Entry, EntryKind, HardState, LogStore, RaftState, Snapshot,
    SnapshotMeta, SnapshotStager, Storage, StorageError, SyncJob,
};

/// Name of the hard-state file.
const HARD_STATE_FILE: &str = "hardstate";

/// Suffix of an old snapshot file renamed for deletion in the background.
const DELETING_SUFFIX: &str = ".deleting";

/// Where and how a [`DiskStorage`] keeps its files.
#[derive(Clone, Debug)]
pub struct DiskConfig {
    /// The storage directory. One node, one directory; created if absent.
    pub dir: PathBuf,
    /// A WAL segment is sealed and a new one started when the next record would make it larger
    /// than this. Compaction deletes whole segments, so this is also the granularity at which
    /// disk space comes back.
    pub segment_size: u64,
    /// Recent entries kept in memory (by [`Entry::size`]), so that replication to followers
    /// that keep up never reads the disk. Older entries are read back with one pread each.
    pub cache_bytes: u64,
    /// Whether to fsync at all. Always true in production: turning it off keeps every code
    /// path but no durability, which only tests on a tmpfs and comparisons in benchmarks want.
    pub fsync: bool,
    /// When true, a change of the commit index alone does not rewrite the hard-state file at
    /// `sync`; it is written with the next term or vote change, compaction or snapshot. That
    /// saves the two fsyncs of an atomic replace on almost every leader Ready, at the price of
    /// a restarted node re-learning its commit index from the leader (safe: the core never
    /// relies on the persisted commit). Off by default, which keeps the [`LogStore`] contract
    /// to the letter: everything set before `sync` survives a crash.
    pub lazy_commit: bool,
    /// Most bytes per second a background snapshot ([`LogStore::stager`]) writes. A snapshot
    /// written at full speed fills the disk queue, and every WAL fsync, which each commit waits
    /// for, queues behind it: measured here, three nodes on one disk stalled commits for 200 to
    /// 400 ms at each snapshot. `None`: as fast as the disk goes.
    pub snapshot_write_rate: Option<u64>,
}

impl DiskConfig {
    /// Defaults: 64 MiB segments, 16 MiB entry cache, fsync on, commit written at every sync,
    /// background snapshots written at up to 32 MiB/s.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskConfig {
            dir: dir.into(),
            segment_size: 64 << 20,
            cache_bytes: 16 << 20,
            fsync: true,
            lazy_commit: false,
            snapshot_write_rate: Some(32 << 20),
        }
    }
}

/// Counters of the work done to be durable, for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// fsync/fdatasync calls, on files and directories.
    pub fsyncs: u64,
    /// Bytes handed to the kernel.
    pub bytes_written: u64,
}

/// Durable Raft storage in one directory.
///
/// Layout: `wal-*.seg` (the log after the snapshot), `hardstate` (term, vote, commit),
/// `snap-<index>-<term>.snap` (the newest snapshot; index 0 holds the initial membership).
///
/// Durability follows the [`LogStore`] contract: `append` and `set_hard_state` only write to
/// the kernel, and `sync` makes all of them durable with one fdatasync of the log plus, when
/// the hard state changed, one atomic replace of the hard-state file (see
/// [`DiskConfig::lazy_commit`] to skip that for commit-only changes). `compact` and
/// `apply_snapshot` are durable when they return.
///
/// After any failed write the storage refuses further work ([`DiskError::Poisoned`]): once an
/// fsync has failed, the kernel may have dropped the dirty pages, and only a reopen (which
/// recovers from what is really on disk) is safe.
#[derive(Debug)]
pub struct DiskStorage {
    cfg: DiskConfig,
    sync: Syncer,
    wal: Wal,
    hard_state: HardState,
    /// What the hard-state file holds.
    durable_hard_state: HardState,
    /// The latest snapshot's metadata. Its data stays on disk (`snapshot_path`): it is read
    /// only to send it to a follower, so it costs no memory the rest of the time.
    snapshot: SnapshotMeta,
    snapshot_path: PathBuf,
    /// The snapshot as read and verified at open, handed to the first `snapshot()` call (the
    /// node's restore) so that a restart reads the file once, not twice.
    opened_snapshot: std::sync::Mutex<Option<Snapshot>>,
    /// Configuration entries in the log after the snapshot, oldest first, so that
    /// `initial_state` never reads the log.
    confs: Vec<(u64, ConfState)>,
    poisoned: Option<String>,
}

fn conf_entries(entries: &[Entry]) -> impl Iterator<Item = (u64, ConfState)> + '_ {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::ConfChange)
        .filter_map(|e| ConfState::decode(&e.data).map(|c| (e.index, c)))
}

impl DiskStorage {
    /// Opens the storage in `cfg.dir`, recovering whatever a crash left. An empty or absent
    /// directory is a fresh node with membership `initial_conf` (ignored otherwise).
    ///
    /// A torn record at the tail of the log is cut off with a warning. Anything else that is
    /// damaged (a checksum mismatch before the tail, a bad snapshot or hard-state file, a hole
    /// between snapshot and log) is an error naming the file and offset: acknowledged data is
    /// never dropped silently.
    pub fn open(cfg: DiskConfig, initial_conf: ConfState) -> Result<DiskStorage, DiskError> {
        let dir = cfg.dir.clone();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).at(&dir)?;
            // Make the new directory's own entry durable.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                if cfg.fsync {
                    File::open(parent).and_then(|d| d.sync_all()).at(parent)?;
                }
            }
        }
        let sync = Syncer {
            enabled: cfg.fsync,
            counters: Arc::new(Counters::default()),
        };
        // Leftovers of interrupted atomic writes and transfers.
        let mut has_files = false;
        for ent in fs::read_dir(&dir).at(&dir)? {
            let ent = ent.at(&dir)?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp")
                || name.ends_with(DELETING_SUFFIX)
                || name.starts_with("staged-")
            {
                info!(file = %ent.path().display(), "removing leftover temp file");
                match fs::remove_file(ent.path()) {
                    // Gone meanwhile: an old snapshot's background unlink (from a storage
                    // dropped a moment ago in this process) got there first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => other.at(&ent.path())?,
                }
            } else if name.starts_with("wal-") || name == HARD_STATE_FILE {
                has_files = true;
            }
        }

        let mut snaps = snapshot::list_snapshots(&dir)?;
        let (snapshot, snapshot_path) = match snaps.pop() {
            Some((index, term, path)) => {
                let s = snapshot::load_snapshot(&path)?;
                if s.meta.index != index || s.meta.term != term {
                    return Err(DiskError::Corrupt {
                        file: path,
                        offset: 0,
                        reason: format!(
                            "holds index {} term {}, name says {index} {term}",
                            s.meta.index, s.meta.term
                        ),
                    });
                }
                for (_, _, old) in snaps {
                    fs::remove_file(&old).at(&old)?;
                }
                (s, path)
            }
            None if has_files => {
                return Err(DiskError::Inconsistent {
                    dir,
                    reason: "a log or hard state but no snapshot file (not even the initial \
                             one): refusing to guess the membership"
                        .into(),
                });
            }
            None => {
                info!(dir = %dir.display(), "fresh storage");
                let s = Snapshot {
                    meta: SnapshotMeta {
                        index: 0,
                        term: 0,
                        conf: initial_conf,
                    },
                    data: Bytes::new(),
                };
                let path = snapshot::write_snapshot(&sync, &dir, &s)?;
                (s, path)
            }
        };

        let hs_path = dir.join(HARD_STATE_FILE);
        let durable_hard_state = match fs::read(&hs_path) {
            Ok(bytes) => records::decode_hard_state(&bytes).map_err(|e| DiskError::Corrupt {
                file: hs_path.clone(),
                offset: 0,
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HardState::default(),
            Err(e) => return Err(e).at(&hs_path),
        };
        let mut hard_state = durable_hard_state;
        hard_state.commit = hard_state.commit.max(snapshot.meta.index);

        let opts = WalOptions {
            segment_size: cfg.segment_size,
            cache_bytes: cfg.cache_bytes,
        };
        let rec = Wal::open(
            &dir,
            opts,
            sync.clone(),
            snapshot.meta.index,
            snapshot.meta.term,
        )?;
        let confs = conf_entries(&rec.conf_entries).collect();
        info!(
            dir = %dir.display(),
            snapshot = snapshot.meta.index,
            first = rec.wal.first_index(),
            last = rec.wal.next_index() - 1,
            term = hard_state.term,
            "storage recovered"
        );
        Ok(DiskStorage {
            cfg,
            sync,
            wal: rec.wal,
            hard_state,
            durable_hard_state,
            snapshot: snapshot.meta.clone(),
            opened_snapshot: std::sync::Mutex::new(Some(snapshot)),
            snapshot_path,
            confs,
            poisoned: None,
        })
    }

    /// The storage directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// The configuration this storage was opened with (to reopen it after a crash).
    pub fn config(&self) -> &DiskConfig {
        &self.cfg
    }

    /// Size of the log on disk, so the node can decide when to compact.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.disk_bytes()
    }

    /// Number of WAL segment files.
    pub fn wal_segments(&self) -> usize {
        self.wal.segment_count()
    }

    /// fsyncs and bytes written since open.
    pub fn stats(&self) -> DiskStats {
        DiskStats {
            fsyncs: self.sync.counters.fsyncs.load(Ordering::Relaxed),
            bytes_written: self.sync.counters.bytes_written.load(Ordering::Relaxed),
        }
    }

    /// Has `observer` told the duration of every fsync from now on (the WAL's, the hard
    /// state's, snapshots'), for a latency histogram. A hook rather than a metrics type, so the
    /// storage layer depends on no metrics crate. At most one observer: a second is ignored.
    pub fn observe_syncs(&self, observer: SyncObserver) {
        let _ = self.sync.counters.observer.0.set(observer);
    }

    /// The hard state as last set (durable after `sync`).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Length of the current snapshot file: the total an InstallSnapshot stream carries.
    pub fn snapshot_len(&self) -> Result<u64, DiskError> {
        let meta = fs::metadata(&self.snapshot_path).at(&self.snapshot_path)?;
        Ok(meta.len())
    }

    /// Up to `max_len` bytes of the current snapshot file from `offset` (empty at the end).
    /// The bytes carry their own checksums, so a stream that straddles a snapshot change is
    /// caught by the receiver rather than installed.
    pub fn read_snapshot_chunk(&self, offset: u64, max_len: usize) -> Result<Bytes, DiskError> {
        let path = &self.snapshot_path;
        let f = File::open(path).at(path)?;
        let len = f.metadata().at(path)?.len();
        if offset > len {
            return Err(DiskError::Invalid(format!(
                "snapshot chunk at {offset} past the end ({len})"
            )));
        }
        let n = (len - offset).min(max_len as u64) as usize;
        let mut buf = vec![0u8; n];
        f.read_exact_at(&mut buf, offset).at(path)?;
        Ok(Bytes::from(buf))
    }

    /// A receiver for a snapshot streamed by the leader, writing into this directory.
    pub fn snapshot_receiver(&self) -> Result<SnapshotReceiver, DiskError> {
        SnapshotReceiver::new(&self.cfg.dir, self.cfg.fsync)
    }

    /// Runs a write, refusing it after an earlier failure and recording a new one.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, DiskError>,
    ) -> Result<T, StorageError> {
        if let Some(why) = &self.poisoned {
            return Err(DiskError::Poisoned(why.clone()).into());
        }
        f(self).map_err(|e| {
            if !matches!(e, DiskError::Invalid(_)) {
                warn!(dir = %self.cfg.dir.display(), error = %e, "storage write failed; refusing further writes");
                self.poisoned = Some(e.to_string());
            }
            e.into()
        })
    }

    fn write_hard_state(&mut self) -> Result<(), DiskError> {
        if self.hard_state != self.durable_hard_state {
            let bytes = records::encode_hard_state(&self.hard_state);
            self.sync
                .write_atomic(&self.cfg.dir, HARD_STATE_FILE, &bytes)?;
            self.durable_hard_state = self.hard_state;
        }
        Ok(())
    }

    /// Makes `s` the snapshot: its file is already durable; drop the older files.
    fn replace_snapshot(&mut self, meta: SnapshotMeta, path: PathBuf) -> Result<(), DiskError> {
        if path != self.snapshot_path {
            let old = std::mem::replace(&mut self.snapshot_path, path);
            // Freeing a large file's blocks takes tens of milliseconds on ext4, and this runs
            // on the thread that commits: rename it out of the way (cheap) and unlink it on a
            // thread of its own. A crash in between leaves a `.deleting` file that `open`
            // removes.
            let mut doomed = old.clone().into_os_string();
            doomed.push(DELETING_SUFFIX);
            let doomed = PathBuf::from(doomed);
            fs::rename(&old, &doomed).at(&old)?;
            let unlink = move || {
                if let Err(e) = fs::remove_file(&doomed) {
                    warn!(file = %doomed.display(), error = %e, "could not delete an old snapshot");
                }
            };
            if let Err(e) = std::thread::Builder::new()
                .name("unlink".into())
                .spawn(unlink)
            {
                warn!(error = %e, "no thread to delete the old snapshot; open will");
            }
        }
        self.snapshot = meta;
        if let Ok(opened) = self.opened_snapshot.get_mut() {
            *opened = None;
        }
        Ok(())
    }

    fn do_append(&mut self, entries: &[Entry]) -> Result<(), DiskError> {
        let entries = after_snapshot(entries, self.snapshot.index);
        let Some(first) = entries.first().map(|e| e.index) else {
            return Ok(());
        };
        let next = self.wal.next_index();
        // Refuse before changing anything, so a failed append leaves the log as it was.
        let max = records::MAX_RECORD_LEN as usize + records::RECORD_HEADER_LEN;
        if let Some(e) = entries.iter().find(|e| records::record_len(e) > max) {
            return Err(DiskError::Invalid(format!(
                "entry {} of {} bytes exceeds the {} byte record cap",
                e.index,
                e.data.len(),
                records::MAX_RECORD_LEN
            )));
        }
        if first > next {
            return Err(DiskError::Invalid(format!(
                "append at {first} would leave a hole after {}",
                next - 1
            )));
        }
        if first < next {
            self.wal.truncate_from(first)?;
            self.confs.retain(|(i, _)| *i < first);
        }
        self.wal.append(entries)?;
        self.confs.extend(conf_entries(entries));
        Ok(())
    }

    fn do_compact(&mut self, index: u64, conf: ConfState, data: Bytes) -> Result<(), DiskError> {
        let dir = self.cfg.dir.clone();
        if index <= self.snapshot.index {
            // A background snapshot overtaken by a newer one: its staged file is useless.
            return snapshot::remove_staged_upto(&dir, self.snapshot.index);
        }
        let Some(term) = self.wal.term(index) else {
            return Err(DiskError::Invalid(format!(
                "compaction at {index} beyond the last entry {}",
                self.wal.next_index() - 1
            )));
        };
        let s = Snapshot {
            meta: SnapshotMeta { index, term, conf },
            data,
        };
        let path = self.place_snapshot(&s)?;
        self.replace_snapshot(s.meta, path)?;
        self.wal.compact_to(index)?;
        self.confs.retain(|(i, _)| *i > index);
        snapshot::remove_staged_upto(&dir, index)?;
        self.write_hard_state()
    }

    /// Puts the file of snapshot `s` in place and returns its path: the staged file for its
    /// index and term when there is one (received and verified by a [`SnapshotReceiver`], or
    /// written ahead by a [`SnapshotStager`]), else `s` written now.
    fn place_snapshot(&self, s: &Snapshot) -> Result<PathBuf, DiskError> {
        let dir = &self.cfg.dir;
        let (index, term) = (s.meta.index, s.meta.term);
        let staged = dir.join(snapshot::staged_name(index, term));
        if !staged.exists() {
            return snapshot::write_snapshot(&self.sync, dir, s);
        }
        let target = dir.join(snapshot::snapshot_name(index, term));
        fs::rename(&staged, &target).at(&target)?;
        self.sync.dir(dir)?;
        Ok(target)
    }

    fn do_apply_snapshot(&mut self, s: Snapshot) -> Result<(), DiskError> {
        let (index, term) = (s.meta.index, s.meta.term);
        if index <= self.snapshot.index {
            warn!(
                index,
                have = self.snapshot.index,
                "ignoring a snapshot older than ours"
            );
            return Ok(());
        }
        let keep_log = self.wal.term(index) == Some(term);
        let dir = self.cfg.dir.clone();
        let path = self.place_snapshot(&s)?;
        self.replace_snapshot(s.meta, path)?;
        if keep_log {
            self.wal.compact_to(index)?;
            self.confs.retain(|(i, _)| *i > index);
        } else {
            self.wal.reset(index + 1)?;
            self.confs.clear();
        }
        self.hard_state.commit = self.hard_state.commit.max(index);
        snapshot::remove_staged_upto(&dir, index)?;
        self.write_hard_state()
    }

    fn do_sync(&mut self) -> Result<(), DiskError> {
        self.wal.sync()?;
        if self.hard_state_due() {
            self.write_hard_state()?;
        }
        Ok(())
    }

    /// Whether `sync` must rewrite the hard-state file now.
    fn hard_state_due(&self) -> bool {
        let (hs, durable) = (self.hard_state, self.durable_hard_state);
        // Even a lazy commit is written when it moves past a configuration entry. Correctness
        // no longer needs it (on restart the core puts every configuration entry of the log in
        // force, committed or not); it keeps `RaftState::conf_state` (the membership as of the
        // persisted commit) current at the cost of one write per membership change.
        let passes_conf = self
            .confs
            .iter()
            .any(|(i, _)| *i > durable.commit && *i <= hs.commit);
        hs.term != durable.term || hs.vote != durable.vote || !self.cfg.lazy_commit || passes_conf
    }

    /// The first half of a sync ([`LogStore::begin_sync`]): appends reach the kernel, the
    /// hard state, when due, is replaced durably here (rare: a new term or vote, or a commit
    /// past a membership entry), and the log's fdatasync is returned as a job.
    fn start_sync(&mut self) -> Result<Option<WalSync>, DiskError> {
        let job = self.wal.begin_sync()?;
        if self.hard_state_due() {
            self.write_hard_state()?;
        }
        Ok(job)
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        let commit = self.hard_state.commit;
        let (conf_index, conf_state) = match self.confs.iter().rev().find(|(i, _)| *i <= commit) {
            Some((i, c)) => (*i, c.clone()),
            None => (self.snapshot.index, self.snapshot.conf.clone()),
        };
        Ok(RaftState {
            hard_state: self.hard_state,
            conf_state,
            conf_index,
        })
    }

    fn entries(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: Option<u64>,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.snapshot.index {
            return Err(StorageError::Compacted);
        }
        if hi > self.wal.next_index() {
            return Err(StorageError::Unavailable);
        }
        let mut out = Vec::new();
        let mut size = 0;
        for i in lo..hi {
            let e = self.wal.entry(i)?;
            size += e.size();
            if !out.is_empty() && max_bytes.is_some_and(|m| size > m) {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        let snap = self.snapshot.index;
        if index < snap {
            return Err(StorageError::Compacted);
        }
        if index == snap {
            return Ok(self.snapshot.term);
        }
        self.wal.term(index).ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.snapshot.index + 1)
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.wal.next_index() - 1)
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        Ok(self.snapshot.clone())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        let opened = self
            .opened_snapshot
            .lock()
            .map_or(None, |mut o| o.take())
            .filter(|s| s.meta == self.snapshot);
        let s = match opened {
            Some(s) => s,
            None => snapshot::load_snapshot(&self.snapshot_path)?,
        };
        if s.meta != self.snapshot {
            return Err(StorageError::Other(format!(
                "{} holds snapshot {}/{}, expected {}/{}",
                self.snapshot_path.display(),
                s.meta.index,
                s.meta.term,
                self.snapshot.index,
                self.snapshot.term
            )));
        }
        Ok(s)
    }
}

impl LogStore for DiskStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.write(|s| s.do_append(entries))
    }

    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        self.write(|s| {
            s.hard_state = hs;
            Ok(())
        })
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.write(|s| s.do_apply_snapshot(snapshot))
    }

    fn compact(&mut self, index: u64, conf: ConfState, data: Bytes) -> Result<(), StorageError> {
        if index > self.snapshot.index && self.wal.term(index).is_none() {
            return Err(StorageError::Unavailable);
        }
        self.write(|s| s.do_compact(index, conf, data))
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.write(|s| s.do_sync())
    }

    fn begin_sync(&mut self) -> Result<Option<SyncJob>, StorageError> {
        let job = self.write(|s| s.start_sync())?;
        Ok(job.map(|job| -> SyncJob { Box::new(move || job.run().map_err(StorageError::from)) }))
    }

    fn sync_failed(&mut self, error: &str) {
        warn!(dir = %self.cfg.dir.display(), error, "storage sync failed; refusing further writes");
        self.poisoned = Some(error.to_string());
    }

    fn stager(&self) -> Option<Box<dyn SnapshotStager>> {
        Some(Box::new(DiskStager {
            dir: self.cfg.dir.clone(),
            sync: self.sync.clone(),
            rate: self.cfg.snapshot_write_rate,
        }))
    }
}

/// Writes snapshots of this storage as staged files from any thread (see
/// [`SnapshotStager`]); `compact` renames them into place.
#[derive(Debug)]
struct DiskStager {
    dir: PathBuf,
    sync: Syncer,
    rate: Option<u64>,
}

impl SnapshotStager for DiskStager {
    fn stage(
        &self,
        index: u64,
        term: u64,
        conf: &ConfState,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let meta = SnapshotMeta {
            index,
            term,
            conf: conf.clone(),
        };
        let name = snapshot::staged_name(index, term);
        Ok(snapshot::write_file(
            &self.sync, &self.dir, &name, &meta, data, self.rate,
        )?)
    }
}
