//! Backup files (`raft_client backup`) and seeding a data directory from one
//! (`raft_client restore`).
//!
//! ```text
//! "RRBACKUP" | version u32 | header_len u32 | header (pb::BackupHeader) | payload | crc32c u32
//! ```
//!
//! The payload is the state machine's snapshot as one stream: a chat bundle
//! ([`crate::chat::bundle`]: the manifest and the segment bytes it names) or, for a node without
//! chat files, the inline image. The trailer is the CRC32C of every byte before it, so a
//! damaged or truncated file is refused before anything is written. Both directions stream in
//! pieces: neither the node serving a backup nor `restore` ever holds the history whole.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message as _;

use super::{check_identity, open_storage, NodeError};
use crate::chat::bundle::{self, BundleReader, BundleWriter};
use crate::chat::disk::ChatDir;
use crate::chat::ChatError;
use crate::pb;
use crate::raft::{ConfState, HardState, LogStore, NodeId, Snapshot, SnapshotMeta};

/// First bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"RRBACKUP";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest header accepted: it holds only ids, indexes and the membership.
const MAX_HEADER: u32 = 8 << 20;
/// Largest inline (non-bundle) payload `restore` loads: such an image is held in memory.
const MAX_INLINE: u64 = 1 << 30;
/// Bytes per read while verifying or restoring.
const PIECE: usize = 1 << 20;
static CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Why a backup could not be made, verified or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file is not a whole, undamaged backup of a version this build reads.
    #[error("{path}: not a usable backup: {reason}")]
    Invalid {
        /// The backup file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The target is not usable (a data directory already in use, a bad membership).
    #[error("{0}")]
    Refused(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String),
}

impl From<ChatError> for BackupError {
    fn from(e: ChatError) -> Self {
        BackupError::Io(e.to_string())
    }
}

impl From<NodeError> for BackupError {
    fn from(e: NodeError) -> Self {
        BackupError::Io(e.to_string())
    }
}

fn encode_head(header: &pb::BackupHeader) -> Vec<u8> {
    let body = header.encode_to_vec();
    let mut head = Vec::with_capacity(16 + body.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(body.len() as u32).to_le_bytes());
    head.extend_from_slice(&body);
    head
}

enum Payload {
    Bundle(BundleReader),
    Inline(Bytes, usize),
}

/// A backup file produced piece by piece from a snapshot (its manifest's segment files are
/// read as the pieces are asked for): what the `Backup` call streams.
pub struct BackupSource {
    head: Option<Vec<u8>>,
    payload: Payload,
    digest: crc::Digest<'static, u32>,
    done: bool,
}

impl BackupSource {
    /// A backup of `snapshot`, taken by node `node_id` of `cluster_id`, whose chat files (if
    /// the snapshot's data is a manifest) are under `chat_root`.
    pub fn new(
        snapshot: &Snapshot,
        cluster_id: &str,
        node_id: NodeId,
        chat_root: &Path,
    ) -> Result<BackupSource, BackupError> {
        let payload = match BundleReader::new(chat_root, &snapshot.data) {
            Some(r) => Payload::Bundle(r?),
            None => Payload::Inline(snapshot.data.clone(), 0),
        };
        let payload_len = match &payload {
            Payload::Bundle(r) => r.total_len(),
            Payload::Inline(d, _) => d.len() as u64,
        };
        let header = pb::BackupHeader {
            cluster_id: cluster_id.to_string(),
            index: snapshot.meta.index,
            term: snapshot.meta.term,
            conf: Some(crate::transport::wire::conf_to_pb(&snapshot.meta.conf)),
            node_id,
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            payload_len,
        };
        Ok(BackupSource {
            head: Some(encode_head(&header)),
            payload,
            digest: CRC32C.digest(),
            done: false,
        })
    }

    /// The next piece of the file (at most about `max` bytes), or `None` at the end. Blocks on
    /// the disk: call it from a blocking thread.
    pub fn next_piece(&mut self, max: usize) -> Result<Option<Vec<u8>>, BackupError> {
        if self.done {
            return Ok(None);
        }
        if let Some(head) = self.head.take() {
            self.digest.update(&head);
            return Ok(Some(head));
        }
        let piece = match &mut self.payload {
            Payload::Bundle(r) => r.next_piece(max.max(4))?,
            Payload::Inline(d, at) => {
                let n = (d.len() - *at).min(max);
                let p = (n > 0).then(|| d[*at..*at + n].to_vec());
                *at += n;
                p
            }
        };
        if let Some(p) = piece {
            self.digest.update(&p);
            return Ok(Some(p));
        }
        self.done = true;
        let digest = std::mem::replace(&mut self.digest, CRC32C.digest());
        Ok(Some(digest.finalize().to_le_bytes().to_vec()))
    }
}

/// What a verified backup file holds, and where its payload starts.
pub struct Verified {
    /// The header.
    pub header: pb::BackupHeader,
    /// Offset of the payload in the file.
    pub payload_at: u64,
}

/// Checks that `path` is a whole, undamaged backup (magic, version, lengths, checksum of every
/// byte) and returns its header. Reads the file once, in pieces.
pub fn verify(path: &Path) -> Result<Verified, BackupError> {
    let bad = |reason: String| BackupError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let io = |e: std::io::Error| BackupError::Io(format!("{}: {e}", path.display()));
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut fixed = [0u8; 16];
    f.read_exact(&mut fixed)
        .map_err(|_| bad(format!("{len} bytes, shorter than a backup header")))?;
    if &fixed[..8] != MAGIC {
        return Err(bad("no RRBACKUP magic: not a backup file".into()));
    }
    let version = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    if version != VERSION {
        return Err(bad(format!(
            "format version {version}; this build reads version {VERSION}"
        )));
    }
    let header_len = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
    if header_len > MAX_HEADER || 16 + header_len as u64 > len {
        return Err(bad(format!(
            "header of {header_len} bytes does not fit in the file ({len} bytes): truncated \
             or damaged"
        )));
    }
    let mut body = vec![0u8; header_len as usize];
    f.read_exact(&mut body).map_err(io)?;
    let header = pb::BackupHeader::decode(body.as_slice())
        .map_err(|e| bad(format!("damaged header: {e}")))?;
    let payload_at = 16 + header_len as u64;
    let want_len = payload_at
        .checked_add(header.payload_len)
        .and_then(|n| n.checked_add(4));
    if want_len != Some(len) {
        return Err(bad(format!(
            "the header announces {} bytes of state but the file is {len} bytes: truncated \
             or damaged",
            header.payload_len
        )));
    }
    let mut digest = CRC32C.digest();
    digest.update(&fixed);
    digest.update(&body);
    let mut left = header.payload_len;
    let mut buf = vec![0u8; PIECE];
    while left > 0 {
        let n = left.min(PIECE as u64) as usize;
        f.read_exact(&mut buf[..n]).map_err(io)?;
        digest.update(&buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; 4];
    f.read_exact(&mut trailer).map_err(io)?;
    if digest.finalize() != u32::from_le_bytes(trailer) {
        return Err(bad("checksum mismatch: the file is damaged".into()));
    }
    Ok(Verified { header, payload_at })
}

/// What `restore` needs besides the file.
pub struct RestoreConfig {
    /// The new node's data directory: absent or empty.
    pub data_dir: PathBuf,
    /// The new node's id; must be a voter of `conf`.
    pub id: NodeId,
    /// The new cluster's membership (voters with their addresses).
    pub conf: ConfState,
    /// The new cluster's id; `None`: derived from the old one and the file's checksum, the same
    /// for every node restored from this file and never the old id.
    pub cluster_id: Option<String>,
}

/// What `restore` did.
pub struct Restored {
    /// The backup's header.
    pub header: pb::BackupHeader,
    /// The cluster id the data directory now belongs to (give it to `run --cluster-id`, or let
    /// `run` read it from `node.json`).
    pub cluster_id: String,
}

/// Seeds `cfg.data_dir` from the backup at `path` so that `raft_client run` starts from it: the
/// chat files as a generation of their own, a Raft snapshot at the backup's index and term with
/// the new membership, and `node.json` (last) with the new cluster id. Verifies the whole file
/// first; a failure half-way empties the directory again.
pub fn restore(path: &Path, cfg: &RestoreConfig) -> Result<Restored, BackupError> {
    if !cfg.conf.voters.contains(&cfg.id) {
        return Err(BackupError::Refused(format!(
            "node {} is not among the new voters {:?}",
            cfg.id, cfg.conf.voters
        )));
    }
    let Verified { header, payload_at } = verify(path)?;
    let cluster_id = match &cfg.cluster_id {
        Some(c) if *c == header.cluster_id => {
            return Err(BackupError::Refused(format!(
                "--cluster-id {c:?} is the backed-up cluster's own id: a restored cluster must \
                 never be able to talk to the old one"
            )))
        }
        Some(c) => c.clone(),
        None => {
            let crc = file_crc(path)?;
            format!("{}-restored-{crc:08x}", header.cluster_id)
        }
    };
    let dir = &cfg.data_dir;
    let io = |e: std::io::Error| BackupError::Io(format!("{}: {e}", dir.display()));
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::Refused(format!(
                    "{} is not empty: restore only seeds a new data directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io)?
        }
        Err(e) => return Err(io(e)),
    }
    let seeded = seed(path, payload_at, &header, cfg, &cluster_id);
    if let Err(e) = seeded {
        // The directory was empty or absent: leave it empty again, never half-seeded.
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
        return Err(e);
    }
    Ok(Restored { header, cluster_id })
}

/// Writes the chat files, the Raft snapshot and hard state, and `node.json` (last) into the
/// empty directory `cfg.data_dir`.
fn seed(
    path: &Path,
    payload_at: u64,
    header: &pb::BackupHeader,
    cfg: &RestoreConfig,
    cluster_id: &str,
) -> Result<(), BackupError> {
    let dir = &cfg.data_dir;
    let data = write_payload(path, payload_at, header.payload_len, dir)?;
    let mut storage = open_storage(&dir.join("raft"), &cfg.conf)?;
    let meta = SnapshotMeta {
        index: header.index,
        term: header.term,
        conf: cfg.conf.clone(),
    };
    let store = |e: crate::raft::StorageError| BackupError::Io(format!("raft storage: {e}"));
    storage
        .apply_snapshot(Snapshot { meta, data })
        .map_err(store)?;
    storage
        .set_hard_state(HardState {
            term: header.term,
            vote: None,
            commit: header.index,
        })
        .map_err(store)?;
    storage.sync().map_err(store)?;
    drop(storage);
    check_identity(dir, cfg.id, cluster_id)?;
    Ok(())
}

/// Writes the payload's chat files into `<dir>/chat` (a bundle) and returns the snapshot data to
/// put in force: the manifest naming the new generation, or the inline image.
fn write_payload(path: &Path, at: u64, len: u64, dir: &Path) -> Result<Bytes, BackupError> {
    written(path, at, len, dir).map_err(|e| match e {
        ChatError::Corrupt(reason) | ChatError::InvalidArgument(reason) => BackupError::Invalid {
            path: path.display().to_string(),
            reason,
        },
        other => BackupError::Io(other.to_string()),
    })
}

fn written(path: &Path, at: u64, len: u64, dir: &Path) -> Result<Bytes, ChatError> {
    let io = |e: std::io::Error| ChatError::Io(format!("{}: {e}", path.display()));
    let mut f = File::open(path).map_err(io)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(at)).map_err(io)?;
    let mut f = f.take(len);
    let mut buf = vec![0u8; PIECE];
    let n = f.read(&mut buf[..16.min(len as usize)]).map_err(io)?;
    if !bundle::is_bundle(&buf[..n]) {
        if len > MAX_INLINE {
            return Err(ChatError::InvalidArgument(format!(
                "an inline state image of {len} bytes is over the {MAX_INLINE}-byte limit"
            )));
        }
        let mut data = buf[..n].to_vec();
        f.read_to_end(&mut data).map_err(io)?;
        return Ok(Bytes::from(data));
    }
    let mut w = BundleWriter::new(ChatDir::new(dir.join("chat"), true), u64::MAX);
    w.write(&buf[..n])?;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n])?;
    }
    w.finish()
}

/// The file's trailer (the checksum of everything else): an id for this backup.
fn file_crc(path: &Path) -> Result<u32, BackupError> {
    let io = |e: std::io::Error| BackupError::Io(format!("{}: {e}", path.display()));
    let mut f = File::open(path).map_err(io)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::End(-4)).map_err(io)?;
    let mut t = [0u8; 4];
    f.read_exact(&mut t).map_err(io)?;
    Ok(u32::from_le_bytes(t))
}

/// Writes a backup arriving as `pieces` to `out`: into `out.tmp`, fsynced, verified, then
/// renamed into place (and the directory fsynced), so `out` is only ever a whole, checked file.
/// Returns its header.
pub fn save<E: std::fmt::Display>(
    out: &Path,
    pieces: impl Iterator<Item = Result<Vec<u8>, E>>,
) -> Result<pb::BackupHeader, BackupError> {
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |p: &Path, e: std::io::Error| BackupError::Io(format!("{}: {e}", p.display()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        for p in pieces {
            let p = p.map_err(|e| BackupError::Io(format!("backup stream: {e}")))?;
            f.write_all(&p).map_err(|e| io(&tmp, e))?;
        }
        f.sync_all().map_err(|e| io(&tmp, e))?;
        drop(f);
        let v = verify(&tmp)?;
        fs::rename(&tmp, out).map_err(|e| io(out, e))?;
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(parent, e))?;
        Ok(v.header)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
