//! Every file the chat state machine touches, in one place (so a later whole-node simulation can
//! put the file system behind this seam).
//!
//! Layout under `<data-dir>/chat/`:
//!
//! - `gen-<16 hex>/seg-<n>.dat`: one *generation* of append-only segment files. A node starts a
//!   generation when it starts from an empty state, and gets a new one with every snapshot it
//!   installs from a leader; its own snapshots (manifests) name the generation they point into.
//! - `incoming-<16 hex>/`: a snapshot transfer being received (see [`super::bundle`]).
//!
//! A segment is a run of frames, each a sealed chunk of one room:
//!
//! ```text
//! frame: len u32 | crc32c(body) u32 | body
//! body:  room_len varint | room | first_seq varint | count varint | packed records
//! ```
//!
//! Writes go through one writer thread per generation ([`Segments`]), fed by a bounded queue:
//! the driver task only hands over a sealed chunk (and keeps it in memory until the thread has
//! written it), and the snapshot thread asks the writer for a barrier (write and fsync
//! everything queued so far) before it writes a manifest that points at those bytes.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use bytes::Bytes;
use prost::encoding::{decode_varint, encode_varint};

use super::ChatError;
use crate::storage::records::crc32c;

/// A new segment is started when the next frame would take the current one past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Bytes of a frame before its body.
pub const FRAME_HEADER: usize = 8;
/// Largest frame accepted when reading (a chunk is ~64 KiB; one huge message can pass that).
pub const MAX_FRAME: u64 = 64 << 20;
/// Sealed chunks queued for the writer thread before the driver waits (backpressure: about
/// 16 MiB of chunks).
const WRITE_QUEUE: usize = 256;

/// The error of a file operation, naming the path.
pub(crate) fn io_err(path: &Path, e: io::Error) -> ChatError {
    ChatError::Io(format!("{}: {e}", path.display()))
}

/// Encodes a frame for a sealed chunk of `room` holding records `first_seq..first_seq+count`.
/// Returns the frame and the offset of the records inside it.
pub(crate) fn encode_frame(
    room: &str,
    first_seq: u64,
    count: u32,
    records: &[u8],
) -> (Bytes, usize) {
    let mut body = Vec::with_capacity(records.len() + room.len() + 24);
    encode_varint(room.len() as u64, &mut body);
    body.extend_from_slice(room.as_bytes());
    encode_varint(first_seq, &mut body);
    encode_varint(u64::from(count), &mut body);
    let records_at = FRAME_HEADER + body.len();
    body.extend_from_slice(records);
    let mut out = Vec::with_capacity(FRAME_HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    (Bytes::from(out), records_at)
}

/// Checks a frame read back from disk against what the index says it holds, and returns its
/// packed records. Any mismatch is corruption (a flipped bit, a wrong offset).
pub(crate) fn decode_frame(
    frame: Bytes,
    room: &str,
    first_seq: u64,
    count: u32,
) -> Result<Bytes, String> {
    if frame.len() < FRAME_HEADER {
        return Err("frame shorter than its header".into());
    }
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len != frame.len() - FRAME_HEADER {
        return Err(format!(
            "frame length {len}, index says {}",
            frame.len() - FRAME_HEADER
        ));
    }
    let body = &frame[FRAME_HEADER..];
    if crc32c(body) != crc {
        return Err("frame checksum mismatch".into());
    }
    let mut rest = body;
    let bad = |_| "frame header: bad varint".to_string();
    let room_len = decode_varint(&mut rest).map_err(bad)? as usize;
    if room_len > rest.len() || &rest[..room_len] != room.as_bytes() {
        return Err(format!("frame is not a chunk of room {room:?}"));
    }
    rest = &rest[room_len..];
    let fs = decode_varint(&mut rest).map_err(bad)?;
    let n = decode_varint(&mut rest).map_err(bad)?;
    if fs != first_seq || n != u64::from(count) {
        return Err(format!(
            "frame holds seq {fs}+{n}, index says {first_seq}+{count}"
        ));
    }
    let at = frame.len() - rest.len();
    Ok(frame.slice(at..))
}

/// A generation name: 16 lowercase hex digits. Checked wherever one comes from a manifest,
/// since it becomes a path component.
pub(crate) fn valid_gen(gen: &str) -> bool {
    gen.len() == 16
        && gen
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh generation name.
pub(crate) fn new_gen_name() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The chat directory of a node (`<data-dir>/chat`).
#[derive(Debug, Clone)]
pub struct ChatDir {
    root: PathBuf,
    fsync: bool,
}

impl ChatDir {
    /// The chat directory at `root`; `fsync = false` only for tests and benchmarks that want
    /// the code paths without durability.
    pub fn new(root: impl Into<PathBuf>, fsync: bool) -> Self {
        ChatDir {
            root: root.into(),
            fsync,
        }
    }

    /// Where the files live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of generation `gen`.
    pub fn gen_dir(&self, gen: &str) -> PathBuf {
        self.root.join(format!("gen-{gen}"))
    }

    /// fsync of a directory (creates, renames and unlinks in it become durable).
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<(), ChatError> {
        if self.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err(dir, e))?;
        }
        Ok(())
    }

    pub(crate) fn fsync(&self) -> bool {
        self.fsync
    }

    /// Creates an empty generation and starts its writer.
    pub(crate) fn create_gen(&self) -> Result<(String, Arc<Segments>), ChatError> {
        fs::create_dir_all(&self.root).map_err(|e| io_err(&self.root, e))?;
        let gen = new_gen_name();
        let dir = self.gen_dir(&gen);
        fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?;
        self.sync_dir(&self.root)?;
        let segs = Segments::start(dir, self.fsync)?;
        Ok((gen, segs))
    }

    /// Opens generation `gen` as a manifest left it: every segment it names must hold at least
    /// the manifest's length (a shorter one lost fsynced bytes: corruption), and is cut back to
    /// exactly that length (what lies beyond was written after the snapshot and is rebuilt by
    /// replaying the Raft log); segments after the last one named are removed.
    pub(crate) fn open_gen(&self, gen: &str, lens: &[u64]) -> Result<Arc<Segments>, ChatError> {
        if !valid_gen(gen) {
            return Err(ChatError::Corrupt(format!("bad generation name {gen:?}")));
        }
        let dir = self.gen_dir(gen);
        if !dir.is_dir() {
            return Err(ChatError::Corrupt(format!(
                "{} is missing: the snapshot points at it",
                dir.display()
            )));
        }
        for (n, &want) in lens.iter().enumerate() {
            let path = seg_path(&dir, n as u32);
            let have = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound && want == 0 => continue,
                Err(e) => return Err(io_err(&path, e)),
            };
            if have < want {
                return Err(ChatError::Corrupt(format!(
                    "{} is {have} bytes, the snapshot refers to {want}",
                    path.display()
                )));
            }
            if have > want {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err(&path, e))?;
                f.set_len(want).map_err(|e| io_err(&path, e))?;
                if self.fsync {
                    f.sync_all().map_err(|e| io_err(&path, e))?;
                }
            }
        }
        // Segments the manifest does not know were started after it.
        let entries = fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
        for e in entries {
            let e = e.map_err(|e| io_err(&dir, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            let known = name
                .strip_prefix("seg-")
                .and_then(|s| s.strip_suffix(".dat"))
                .and_then(|s| s.parse::<usize>().ok())
                .is_some_and(|n| n < lens.len());
            if !known {
                fs::remove_file(e.path()).map_err(|err| io_err(&e.path(), err))?;
            }
        }
        self.sync_dir(&dir)?;
        Segments::start(dir, self.fsync)
    }

    /// Removes everything in the chat directory but generation `keep`: leftovers of older
    /// generations, of transfers a crash interrupted, of a generation a crash kept from being
    /// used. Only at startup: at run time a transfer may be writing an `incoming-` directory.
    pub(crate) fn remove_all_but(&self, keep: &str) -> Result<(), ChatError> {
        let keep = format!("gen-{keep}");
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Ok(());
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy() != keep {
                let p = e.path();
                let r = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(|err| io_err(&p, err))?;
            }
        }
        self.sync_dir(&self.root)
    }
}

/// Path of segment `n` in a generation directory.
pub(crate) fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("seg-{n}.dat"))
}

enum WriteCmd {
    Chunk {
        seg: u32,
        offset: u64,
        frame: Bytes,
        wseq: u64,
    },
    Barrier(mpsc::Sender<Result<(), String>>),
}

/// The segment files of one generation: a writer thread that owns the writes, and positional
/// reads (`pread`) for anyone. Dropping the last handle ends the thread once its queue is done.
pub struct Segments {
    dir: PathBuf,
    tx: mpsc::SyncSender<WriteCmd>,
    /// Every chunk with a write sequence number up to this one is in the kernel (not yet
    /// necessarily fsynced: a barrier does that).
    written: Arc<AtomicU64>,
    readers: Mutex<HashMap<u32, Arc<File>>>,
}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments").field("dir", &self.dir).finish()
    }
}

impl Segments {
    fn start(dir: PathBuf, fsync: bool) -> Result<Arc<Segments>, ChatError> {
        let (tx, rx) = mpsc::sync_channel(WRITE_QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        let wdir = dir.clone();
        std::thread::Builder::new()
            .name("chat-writer".into())
            .spawn(move || writer(wdir, fsync, rx, w))
            .map_err(|e| ChatError::Io(format!("cannot start the chat writer thread: {e}")))?;
        Ok(Arc::new(Segments {
            dir,
            tx,
            written,
            readers: Mutex::new(HashMap::new()),
        }))
    }

    /// The generation directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues a frame for `seg` at `offset`. Waits only when the bounded queue is full.
    pub(crate) fn write(&self, seg: u32, offset: u64, frame: Bytes, wseq: u64) {
        // A stopped writer (it failed) leaves the chunk in memory: `written` never passes it.
        let _ = self.tx.send(WriteCmd::Chunk {
            seg,
            offset,
            frame,
            wseq,
        });
    }

    /// Highest write sequence number in the kernel.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Blocks until everything queued before is written and fsynced (with the directory).
    /// Never call it on an async task others wait on.
    pub fn barrier(&self) -> Result<(), ChatError> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(WriteCmd::Barrier(tx))
            .map_err(|_| ChatError::Io("the chat writer thread stopped".into()))?;
        rx.recv()
            .map_err(|_| ChatError::Io("the chat writer thread stopped".into()))?
            .map_err(ChatError::Io)
    }

    /// Reads `len` bytes of segment `seg` at `offset`.
    pub(crate) fn read(&self, seg: u32, offset: u64, len: u32) -> Result<Bytes, ChatError> {
        let path = seg_path(&self.dir, seg);
        let file = {
            let mut r = self
                .readers
                .lock()
                .map_err(|_| ChatError::Io("segment reader lock poisoned".into()))?;
            match r.get(&seg) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(File::open(&path).map_err(|e| io_err(&path, e))?);
                    r.insert(seg, f.clone());
                    f
                }
            }
        };
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| io_err(&path, e))?;
        Ok(Bytes::from(buf))
    }
}

/// The writer thread: writes frames where the driver placed them, fsyncs on a barrier. After a
/// failed write it stops writing (the chunks stay in memory) and fails every barrier, so no
/// manifest ever points at bytes that may not be on disk.
fn writer(dir: PathBuf, fsync: bool, rx: mpsc::Receiver<WriteCmd>, written: Arc<AtomicU64>) {
    let mut files: HashMap<u32, File> = HashMap::new();
    let mut dirty: Vec<u32> = Vec::new();
    let mut created = false;
    let mut failed: Option<String> = None;
    while let Ok(cmd) = rx.recv() {
        match cmd {
            WriteCmd::Chunk {
                seg,
                offset,
                frame,
                wseq,
            } => {
                if failed.is_some() {
                    continue;
                }
                let path = seg_path(&dir, seg);
                let r = (|| -> io::Result<()> {
                    let f = match files.entry(seg) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            created = true;
                            e.insert(
                                OpenOptions::new()
                                    .create(true)
                                    .truncate(false)
                                    .write(true)
                                    .open(&path)?,
                            )
                        }
                    };
                    f.write_all_at(&frame, offset)
                })();
                match r {
                    Ok(()) => {
                        if !dirty.contains(&seg) {
                            dirty.push(seg);
                        }
                        written.store(wseq, Ordering::Release);
                    }
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "chat segment write failed");
                        failed = Some(format!("{}: {e}", path.display()));
                    }
                }
            }
            WriteCmd::Barrier(reply) => {
                let r = match &failed {
                    Some(e) => Err(e.clone()),
                    None => sync_all(&dir, fsync, &files, &mut dirty, &mut created),
                };
                if let Err(e) = &r {
                    failed = Some(e.clone());
                }
                let _ = reply.send(r);
            }
        }
    }
}

fn sync_all(
    dir: &Path,
    fsync: bool,
    files: &HashMap<u32, File>,
    dirty: &mut Vec<u32>,
    created: &mut bool,
) -> Result<(), String> {
    if fsync {
        for seg in dirty.iter() {
            if let Some(f) = files.get(seg) {
                f.sync_data()
                    .map_err(|e| format!("{}: {e}", seg_path(dir, *seg).display()))?;
            }
        }
        if *created {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    dirty.clear();
    *created = false;
    Ok(())
}
