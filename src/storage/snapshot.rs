//! Snapshot files: `snap-<index>-<term>.snap`, each a whole [`records::encode_snapshot`] image,
//! written atomically. Only the newest is kept.
//!
//! The file bytes are also the byte format of InstallSnapshot's chunks. Today the transport
//! does NOT stream from and to these files: the leader's driver reads the whole snapshot into
//! memory (`Storage::snapshot`), the transport cuts it into chunks, and the follower's `Raft`
//! service buffers every chunk in memory before it hands the whole snapshot to the core.
//! [`SnapshotReceiver`] (a chunk-at-a-time, checksum-verifying receiver into a temp file) and
//! `DiskStorage::read_snapshot_chunk` are the disk-to-disk path that a streaming transfer will
//! use; only the storage tests exercise them so far.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fsutil::{Counters, DiskError, IoContext, Syncer};
use super::records;
use crate::raft::{Snapshot, SnapshotMeta};

/// Largest snapshot a receiver accepts (16 GiB): a bound on what a peer can make us write.
pub const MAX_SNAPSHOT_LEN: u64 = 16 << 30;

/// File name of the snapshot at (`index`, `term`).
pub(crate) fn snapshot_name(index: u64, term: u64) -> String {
    format!("snap-{index:020}-{term:020}.snap")
}

fn parse_snapshot_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (i, t) = rest.split_once('-')?;
    Some((i.parse().ok()?, t.parse().ok()?))
}

/// Every snapshot file in `dir`, oldest first.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<(u64, u64, PathBuf)>, DiskError> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir).at(dir)? {
        let ent = ent.at(dir)?;
        if let Some((i, t)) = ent.file_name().to_str().and_then(parse_snapshot_name) {
            out.push((i, t, ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads and verifies a snapshot file. The file was renamed into place whole, so any damage
/// is corruption.
pub(crate) fn load_snapshot(path: &Path) -> Result<Snapshot, DiskError> {
    let bytes = fs::read(path).at(path)?;
    records::decode_snapshot_owned(bytes.into()).map_err(|e| DiskError::Corrupt {
        file: path.to_path_buf(),
        offset: 0,
        reason: e.to_string(),
    })
}

/// Writes `s` as the snapshot file for its index and term, atomically.
pub(crate) fn write_snapshot(
    sync: &Syncer,
    dir: &Path,
    s: &Snapshot,
) -> Result<PathBuf, DiskError> {
    let name = snapshot_name(s.meta.index, s.meta.term);
    write_file(sync, dir, &name, &s.meta, &s.data, None)?;
    Ok(dir.join(name))
}

/// Writes a snapshot file under `name`, atomically and without copying `data`, at most
/// `rate` bytes per second when given.
pub(crate) fn write_file(
    sync: &Syncer,
    dir: &Path,
    name: &str,
    meta: &SnapshotMeta,
    data: &[u8],
    rate: Option<u64>,
) -> Result<(), DiskError> {
    let (head, tail) = records::encode_snapshot_parts(meta, data);
    sync.write_atomic_parts(dir, name, &[&head, data, &tail], rate)
}

/// Receives a snapshot in chunks into a temp file in the storage directory, so that a large
/// snapshot need not be held in memory while it arrives. Not wired into the transport yet (see
/// the module doc): the `Raft` service still buffers a received snapshot whole.
///
/// Chunks must come in order; a chunk that repeats bytes already received is accepted and
/// ignored, so a sender may retry. [`SnapshotReceiver::finish`] verifies the header and data
/// checksums, fsyncs, and returns the snapshot for the core. Dropping an unfinished receiver
/// removes its temp file.
#[derive(Debug)]
pub struct SnapshotReceiver {
    dir: PathBuf,
    path: PathBuf,
    file: Option<File>,
    received: u64,
    /// Total length, known once the header has arrived.
    expected: Option<u64>,
    head: Vec<u8>,
    sync: Syncer,
}

impl SnapshotReceiver {
    /// Starts receiving into a temp file in `dir` (the storage directory, so that it is on the
    /// same file system). `fsync` follows [`super::DiskConfig::fsync`].
    pub fn new(dir: &Path, fsync: bool) -> Result<Self, DiskError> {
        let path = dir.join(format!("recv-{}.tmp", uuid::Uuid::new_v4()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .at(&path)?;
        Ok(SnapshotReceiver {
            dir: dir.to_path_buf(),
            path,
            file: Some(file),
            received: 0,
            expected: None,
            head: Vec::new(),
            sync: Syncer {
                enabled: fsync,
                counters: Arc::new(Counters::default()),
            },
        })
    }

    /// Bytes received so far: where the next chunk must start.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Writes the chunk that starts at `offset` of the snapshot file.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        if offset > self.received {
            return Err(DiskError::Invalid(format!(
                "snapshot chunk at {offset}, but only {} bytes received",
                self.received
            )));
        }
        let skip = (self.received - offset).min(data.len() as u64) as usize;
        let data = &data[skip..];
        if data.is_empty() {
            return Ok(());
        }
        let new_len = self.received + data.len() as u64;
        let cap = self.expected.unwrap_or(MAX_SNAPSHOT_LEN);
        if new_len > cap {
            return Err(DiskError::Invalid(format!(
                "snapshot stream longer than its {cap} bytes"
            )));
        }
        let Some(file) = self.file.as_mut() else {
            return Err(DiskError::Invalid(
                "snapshot receiver already finished".into(),
            ));
        };
        file.write_all(data).at(&self.path)?;
        self.sync.wrote(data.len());
        self.received = new_len;
        if self.expected.is_none() {
            self.head.extend_from_slice(data);
            match records::decode_snapshot_header(&self.head) {
                Ok(h) => {
                    let len = h.file_len();
                    if len > MAX_SNAPSHOT_LEN || self.received > len {
                        return Err(DiskError::Invalid(format!(
                            "snapshot of {len} bytes is too long or overrun"
                        )));
                    }
                    self.expected = Some(len);
                    self.head = Vec::new();
                }
                Err(records::DecodeError::Incomplete { .. }) => {}
                Err(e) => {
                    return Err(DiskError::Invalid(format!("bad snapshot header: {e}")));
                }
            }
        }
        Ok(())
    }

    /// Verifies the whole stream and makes it durable: fsync, then an atomic rename to a
    /// staged name in the storage directory, then an fsync of the directory. Returns the
    /// snapshot, ready to be stepped into the core; when the core's Ready later asks the
    /// storage to apply it, the staged file is renamed into place instead of written again.
    /// A staged snapshot is never taken for the node's own state on restart: only applying it
    /// does that.
    pub fn finish(mut self) -> Result<Snapshot, DiskError> {
        let Some(file) = self.file.take() else {
            return Err(DiskError::Invalid(
                "snapshot receiver already finished".into(),
            ));
        };
        self.sync.all(&file, &self.path)?;
        drop(file);
        let bytes = fs::read(&self.path).at(&self.path)?;
        let snap = records::decode_snapshot_owned(bytes.into())
            .map_err(|e| DiskError::Invalid(format!("received snapshot is damaged: {e}")))?;
        let staged = self.dir.join(staged_name(snap.meta.index, snap.meta.term));
        fs::rename(&self.path, &staged).at(&staged)?;
        self.sync.dir(&self.dir)?;
        Ok(snap)
    }
}

/// Name of a received, verified snapshot that has not been applied yet.
pub(crate) fn staged_name(index: u64, term: u64) -> String {
    format!("staged-{index:020}-{term:020}.snap")
}

/// Removes staged snapshots at or below `index`: they can never be applied any more (the core
/// only installs snapshots newer than what it has).
pub(crate) fn remove_staged_upto(dir: &Path, index: u64) -> Result<(), DiskError> {
    for ent in fs::read_dir(dir).at(dir)? {
        let ent = ent.at(dir)?;
        let name = ent.file_name();
        let staged = name
            .to_str()
            .and_then(|n| n.strip_prefix("staged-"))
            .and_then(|n| parse_snapshot_name(&format!("snap-{n}")));
        if let Some((i, _)) = staged {
            if i <= index {
                fs::remove_file(ent.path()).at(&ent.path())?;
            }
        }
    }
    Ok(())
}

impl Drop for SnapshotReceiver {
    fn drop(&mut self) {
        // An abandoned or failed transfer leaves its temp file; after a successful `finish`
        // the file was renamed away and this is a no-op.
        let _ = fs::remove_file(&self.path);
    }
}
