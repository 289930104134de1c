//! A manifest snapshot as one self-contained byte stream (a *bundle*): what a leader streams to
//! a follower that needs a snapshot, and what a backup can write to a file.
//!
//! ```text
//! "RRCHATB1" | manifest_len u64 | manifest | segment 0 bytes | segment 1 bytes | ... | crc32c u32
//! ```
//!
//! Segment `n` contributes exactly the manifest's `segment_lens[n]` bytes, so the stream is
//! consistent while the sender keeps appending to its files. The trailer is the CRC32C of
//! everything before it; every chunk frame inside carries its own checksum too.
//!
//! [`BundleReader`] produces the stream from the files with a bounded buffer, and
//! [`BundleWriter`] writes one into an `incoming-` directory as it arrives and installs it as a
//! new generation with a rename: nothing is ever held whole in memory, and there is no size cap
//! besides the manifest's.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::disk::{self, io_err, ChatDir};
use super::{manifest_layout, manifest_with_gen, ChatError};

/// First bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"RRCHATB1";
const HEADER: usize = 16;
static CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// True when a stream starting with `prefix` is a bundle (not an inline snapshot image).
pub fn is_bundle(prefix: &[u8]) -> bool {
    prefix.starts_with(MAGIC)
}

/// Reads a bundle of the manifest `manifest` from the chat directory at `root`, in pieces.
pub struct BundleReader {
    head: Bytes,
    head_at: usize,
    gen_dir: PathBuf,
    lens: Vec<u64>,
    seg: usize,
    seg_left: u64,
    /// Every segment the manifest names with bytes, opened up front: an open file stays
    /// readable if its generation is removed meanwhile (a follower installing a snapshot from
    /// its leader while it serves a backup or a transfer).
    files: Vec<Option<File>>,
    digest: crc::Digest<'static, u32>,
    total: u64,
    done: bool,
}

impl BundleReader {
    /// `None` when `manifest` is not a manifest (the image is sent inline, as is).
    pub fn new(root: &Path, manifest: &Bytes) -> Option<Result<BundleReader, ChatError>> {
        let (gen, lens) = match manifest_layout(manifest)? {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        let mut head = Vec::with_capacity(HEADER + manifest.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(manifest.len() as u64).to_le_bytes());
        head.extend_from_slice(manifest);
        let total = head.len() as u64 + lens.iter().sum::<u64>() + 4;
        let gen_dir = ChatDir::new(root, false).gen_dir(&gen);
        let mut files = Vec::with_capacity(lens.len());
        for (n, &len) in lens.iter().enumerate() {
            if len == 0 {
                files.push(None);
                continue;
            }
            let path = disk::seg_path(&gen_dir, n as u32);
            match File::open(&path) {
                Ok(f) => files.push(Some(f)),
                Err(e) => return Some(Err(io_err(&path, e))),
            }
        }
        Some(Ok(BundleReader {
            head: Bytes::from(head),
            head_at: 0,
            gen_dir,
            seg_left: lens.first().copied().unwrap_or(0),
            lens,
            seg: 0,
            files,
            digest: CRC32C.digest(),
            total,
            done: false,
        }))
    }

    /// Length of the whole stream.
    pub fn total_len(&self) -> u64 {
        self.total
    }

    /// The next piece of at most `max` bytes (`max` ≥ 4), or `None` at the end. Blocks on the
    /// disk.
    pub fn next_piece(&mut self, max: usize) -> Result<Option<Vec<u8>>, ChatError> {
        if self.done {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(max.min(1 << 20));
        if self.head_at < self.head.len() {
            let n = (self.head.len() - self.head_at).min(max);
            out.extend_from_slice(&self.head[self.head_at..self.head_at + n]);
            self.head_at += n;
            self.digest.update(&out);
            return Ok(Some(out));
        }
        while self.seg < self.lens.len() {
            if self.seg_left == 0 {
                // Done with this segment: close it.
                if let Some(f) = self.files.get_mut(self.seg) {
                    *f = None;
                }
                self.seg += 1;
                self.seg_left = self.lens.get(self.seg).copied().unwrap_or(0);
                continue;
            }
            let path = disk::seg_path(&self.gen_dir, self.seg as u32);
            let Some(Some(f)) = self.files.get_mut(self.seg) else {
                return Err(ChatError::Io(format!("{}: not open", path.display())));
            };
            let n = (self.seg_left.min(max as u64)) as usize;
            out.resize(n, 0);
            f.read_exact(&mut out).map_err(|e| io_err(&path, e))?;
            self.seg_left -= n as u64;
            self.digest.update(&out);
            return Ok(Some(out));
        }
        self.done = true;
        let digest = std::mem::replace(&mut self.digest, CRC32C.digest());
        Ok(Some(digest.finalize().to_le_bytes().to_vec()))
    }
}

enum Stage {
    Head,
    Manifest(usize),
    Files,
    Trailer,
    Done,
}

/// Receives a bundle into `<chat>/incoming-<gen>/` as it arrives, then installs it as
/// generation `gen` ([`BundleWriter::finish`]). Dropped unfinished, it removes what it wrote.
pub struct BundleWriter {
    dir: ChatDir,
    max_manifest: u64,
    stage: Stage,
    head: Vec<u8>,
    manifest: Vec<u8>,
    gen: String,
    incoming: PathBuf,
    lens: Vec<u64>,
    seg: usize,
    seg_left: u64,
    file: Option<File>,
    trailer: Vec<u8>,
    digest: crc::Digest<'static, u32>,
    finished: bool,
}

impl BundleWriter {
    /// A receiver into the chat directory `dir`, refusing manifests over `max_manifest` bytes
    /// (the manifest is the only part held in memory).
    pub fn new(dir: ChatDir, max_manifest: u64) -> BundleWriter {
        let gen = disk::new_gen_name();
        let incoming = dir.root().join(format!("incoming-{gen}"));
        BundleWriter {
            dir,
            max_manifest,
            stage: Stage::Head,
            head: Vec::new(),
            manifest: Vec::new(),
            gen,
            incoming,
            lens: Vec::new(),
            seg: 0,
            seg_left: 0,
            file: None,
            trailer: Vec::new(),
            digest: CRC32C.digest(),
            finished: false,
        }
    }

    /// Writes the next bytes of the stream. Blocks on the disk.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), ChatError> {
        while !data.is_empty() {
            match self.stage {
                Stage::Head => {
                    let n = (HEADER - self.head.len()).min(data.len());
                    self.head.extend_from_slice(&data[..n]);
                    self.digest.update(&data[..n]);
                    data = &data[n..];
                    if self.head.len() == HEADER {
                        if !is_bundle(&self.head) {
                            return Err(ChatError::Corrupt("not a snapshot bundle".into()));
                        }
                        let mut len = [0u8; 8];
                        len.copy_from_slice(&self.head[8..16]);
                        let len = u64::from_le_bytes(len);
                        if len > self.max_manifest {
                            return Err(ChatError::InvalidArgument(format!(
                                "snapshot manifest of {len} bytes exceeds this node's \
                                 {}-byte limit",
                                self.max_manifest
                            )));
                        }
                        self.stage = Stage::Manifest(len as usize);
                        self.manifest.reserve((len as usize).min(16 << 20));
                    }
                }
                Stage::Manifest(len) => {
                    let n = (len - self.manifest.len()).min(data.len());
                    self.manifest.extend_from_slice(&data[..n]);
                    self.digest.update(&data[..n]);
                    data = &data[n..];
                    if self.manifest.len() == len {
                        self.start_files()?;
                    }
                }
                Stage::Files => {
                    if self.seg_left == 0 {
                        self.next_file()?;
                        continue;
                    }
                    let n = (self.seg_left.min(data.len() as u64)) as usize;
                    let path = disk::seg_path(&self.incoming, self.seg as u32);
                    if let Some(f) = self.file.as_mut() {
                        f.write_all(&data[..n]).map_err(|e| io_err(&path, e))?;
                    }
                    self.digest.update(&data[..n]);
                    self.seg_left -= n as u64;
                    data = &data[n..];
                }
                Stage::Trailer => {
                    let n = (4 - self.trailer.len()).min(data.len());
                    self.trailer.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.trailer.len() == 4 {
                        self.stage = Stage::Done;
                    }
                }
                Stage::Done => {
                    return Err(ChatError::Corrupt(
                        "bytes after the end of the bundle".into(),
                    ))
                }
            }
        }
        // A stream that ends right after the last segment still needs its files closed.
        if matches!(self.stage, Stage::Files) && self.seg_left == 0 {
            self.next_file()?;
        }
        Ok(())
    }

    fn start_files(&mut self) -> Result<(), ChatError> {
        let manifest = Bytes::from(std::mem::take(&mut self.manifest));
        let (_, lens) = manifest_layout(&manifest)
            .ok_or_else(|| ChatError::Corrupt("a bundle must carry a manifest".into()))??;
        self.manifest = manifest.to_vec();
        fs::create_dir_all(&self.incoming).map_err(|e| io_err(&self.incoming, e))?;
        self.lens = lens;
        self.seg = 0;
        self.stage = Stage::Files;
        self.open_seg()
    }

    /// Opens the file of segment `self.seg`, or moves to the trailer after the last one.
    fn open_seg(&mut self) -> Result<(), ChatError> {
        if self.seg >= self.lens.len() {
            self.stage = Stage::Trailer;
            return Ok(());
        }
        let path = disk::seg_path(&self.incoming, self.seg as u32);
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        self.file = Some(f);
        self.seg_left = self.lens[self.seg];
        Ok(())
    }

    /// Makes the finished segment durable and opens the next one.
    fn next_file(&mut self) -> Result<(), ChatError> {
        if let Some(f) = self.file.take() {
            if self.dir.fsync() {
                let path = disk::seg_path(&self.incoming, self.seg as u32);
                f.sync_data().map_err(|e| io_err(&path, e))?;
            }
        }
        self.seg += 1;
        self.open_seg()
    }

    /// Checks the trailer and installs the files as a new generation (fsync, rename, fsync).
    /// Returns the manifest to hand to the state machine, pointing at that generation.
    pub fn finish(mut self) -> Result<Bytes, ChatError> {
        if !matches!(self.stage, Stage::Done) {
            return Err(ChatError::Corrupt("snapshot bundle cut short".into()));
        }
        let digest = std::mem::replace(&mut self.digest, CRC32C.digest());
        let want = u32::from_le_bytes([
            self.trailer[0],
            self.trailer[1],
            self.trailer[2],
            self.trailer[3],
        ]);
        if digest.finalize() != want {
            return Err(ChatError::Corrupt(
                "snapshot bundle checksum mismatch".into(),
            ));
        }
        self.dir.sync_dir(&self.incoming)?;
        let target = self.dir.gen_dir(&self.gen);
        fs::rename(&self.incoming, &target).map_err(|e| io_err(&target, e))?;
        self.dir.sync_dir(self.dir.root())?;
        self.finished = true;
        manifest_with_gen(&Bytes::from(std::mem::take(&mut self.manifest)), &self.gen)
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_dir_all(&self.incoming);
        }
    }
}
