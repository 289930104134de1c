//! Snapshots of the chat state: a frozen view taken under the lock in O(rooms + chunks), encoded
//! on another thread; restore from any format this binary ever wrote.
//!
//! With a directory the image is a *manifest* (version 3): the generation, the length of each
//! segment file at the snapshot, per room its chunk references and open tail, and the dedupe
//! table. The referenced bytes are fsynced (a writer barrier) before the manifest is encoded,
//! so a manifest on disk never points at bytes a crash can take away. Restoring one reads no
//! history: it checks the references against the segment lengths, cuts the segments back to
//! those lengths and rebuilds the index.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::command_format::{
    self, ChunkRefPb, DedupePb, DiskRoomPb, PackedRoomPb, RoomPb, SnapshotPb, SNAPSHOT_VERSION,
    SNAPSHOT_VERSION_MANIFEST, SNAPSHOT_VERSION_V1,
};
use super::disk::{self, Segments};
use super::store::{self, ChunkRef, Record, RoomLog};
use super::{validate_room, validate_send_fields, ChatError, ChatState, Disk};

/// A frozen copy of the state for a snapshot, taken by [`ChatState::snapshot_view`] in
/// O(rooms + chunks) under the lock, and encoded by [`SnapshotView::encode`] on any thread.
#[derive(Debug, Clone)]
pub struct SnapshotView {
    applied: u64,
    rooms: Vec<ViewRoom>,
    /// The files, for a state with a directory; then the image is a manifest.
    disk: Option<ViewDisk>,
    /// The dedupe table, oldest first (manifests only).
    dedupe: Vec<(Arc<str>, Arc<str>, u64)>,
}

#[derive(Debug, Clone)]
struct ViewRoom {
    name: Arc<str>,
    count: u64,
    sealed: Vec<ChunkRef>,
    /// The chunks still in memory (all of them, for a state without files).
    unwritten: Vec<Bytes>,
    tail: Bytes,
    tail_count: u32,
}

#[derive(Debug, Clone)]
struct ViewDisk {
    gen: String,
    segs: Arc<Segments>,
    seg_lens: Vec<u64>,
}

impl SnapshotView {
    /// Raft index the view was taken at.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Encodes the view. For a manifest it first waits for the writer thread to write and
    /// fsync every chunk the view refers to, so it blocks on the disk: never call it on an
    /// async task others wait on.
    pub fn encode(&self) -> Result<Bytes, ChatError> {
        let Some(d) = &self.disk else {
            return Ok(self.encode_packed());
        };
        d.segs.barrier()?;
        let pb = SnapshotPb {
            version: SNAPSHOT_VERSION_MANIFEST,
            applied: self.applied,
            gen: d.gen.clone(),
            segment_lens: d.seg_lens.clone(),
            disk_rooms: self
                .rooms
                .iter()
                .map(|r| DiskRoomPb {
                    name: r.name.to_string(),
                    count: r.count,
                    chunks: r
                        .sealed
                        .iter()
                        .map(|c| ChunkRefPb {
                            first_seq: c.first_seq,
                            count: c.count,
                            seg: c.seg,
                            offset: c.offset,
                            len: c.len,
                        })
                        .collect(),
                    tail: r.tail.clone(),
                    tail_count: r.tail_count,
                })
                .collect(),
            dedupe: self
                .dedupe
                .iter()
                .map(|(id, room, seq)| DedupePb {
                    id: id.to_string(),
                    room: room.to_string(),
                    seq: *seq,
                })
                .collect(),
            ..SnapshotPb::default()
        };
        Ok(command_format::encode(&pb))
    }

    /// The packed format (version 2): every chunk inline. Only for states in memory.
    fn encode_packed(&self) -> Bytes {
        let pb = SnapshotPb {
            version: SNAPSHOT_VERSION,
            applied: self.applied,
            packed_rooms: self
                .rooms
                .iter()
                .map(|r| PackedRoomPb {
                    name: r.name.to_string(),
                    count: r.count,
                    chunks: r
                        .unwritten
                        .iter()
                        .cloned()
                        .chain((r.tail_count > 0).then(|| r.tail.clone()))
                        .collect(),
                })
                .collect(),
            ..SnapshotPb::default()
        };
        command_format::encode(&pb)
    }
}

/// The generation and segment lengths of a manifest image, so a transfer knows which bytes to
/// ship. `None`: the image is not a manifest (it carries its data inline).
pub fn manifest_layout(data: &Bytes) -> Option<Result<(String, Vec<u64>), ChatError>> {
    if data.is_empty() {
        return None;
    }
    let pb = match command_format::decode_snapshot(data.clone()) {
        Ok(pb) => pb,
        Err(e) => return Some(Err(ChatError::Corrupt(e.to_string()))),
    };
    if pb.version != SNAPSHOT_VERSION_MANIFEST {
        return None;
    }
    if !disk::valid_gen(&pb.gen) {
        return Some(Err(ChatError::Corrupt(format!(
            "bad generation name {:?}",
            pb.gen
        ))));
    }
    Some(Ok((pb.gen, pb.segment_lens)))
}

/// The same manifest, pointing at generation `gen` (a receiver stores a transfer under a name
/// of its own).
pub fn manifest_with_gen(data: &Bytes, gen: &str) -> Result<Bytes, ChatError> {
    let mut pb = command_format::decode_snapshot(data.clone())
        .map_err(|e| ChatError::Corrupt(e.to_string()))?;
    pb.gen = gen.to_string();
    Ok(command_format::encode(&pb))
}

impl ChatState {
    /// A frozen copy of the state for a snapshot: the chunk index, the open tails and the
    /// dedupe table, whatever the number of messages.
    pub fn snapshot_view(&self) -> SnapshotView {
        SnapshotView {
            applied: self.applied,
            rooms: self
                .rooms
                .iter()
                .map(|(name, log)| ViewRoom {
                    name: name.clone(),
                    count: log.len(),
                    sealed: log.sealed.clone(),
                    unwritten: if self.disk.is_none() {
                        log.unwritten.iter().cloned().collect()
                    } else {
                        Vec::new()
                    },
                    tail: Bytes::copy_from_slice(&log.tail),
                    tail_count: log.tail_count,
                })
                .collect(),
            disk: self.disk.as_ref().map(|d| ViewDisk {
                gen: d.gen.clone(),
                segs: d.segs.clone(),
                seg_lens: d.seg_lens.clone(),
            }),
            dedupe: if self.disk.is_some() {
                self.dedupe_order
                    .iter()
                    .filter_map(|id| {
                        let (room, seq) = self.dedupe.get(id)?;
                        Some((id.clone(), room.clone(), *seq))
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Encodes the whole state for a Raft snapshot (a view, encoded at once; blocks on the
    /// disk for a state with files).
    pub fn snapshot(&self) -> Result<Bytes, ChatError> {
        self.snapshot_view().encode()
    }

    /// Replaces the state with a snapshot image. An empty image is the empty state (a fresh
    /// log's index-0 snapshot). On error the current state is left untouched. A state with a
    /// directory switches to the image's generation (a manifest) or to a new one.
    pub fn restore(&mut self, data: &Bytes) -> Result<(), ChatError> {
        let mut fresh = self.empty_like();
        if data.is_empty() {
            fresh.start_gen()?;
            *self = fresh;
            return Ok(());
        }
        let pb = command_format::decode_snapshot(data.clone())
            .map_err(|e| ChatError::Corrupt(e.to_string()))?;
        fresh.applied = pb.applied;
        match pb.version {
            SNAPSHOT_VERSION_MANIFEST => fresh.restore_manifest(pb)?,
            SNAPSHOT_VERSION => {
                fresh.start_gen()?;
                fresh.restore_packed(pb.packed_rooms)?
            }
            SNAPSHOT_VERSION_V1 => {
                fresh.start_gen()?;
                fresh.restore_v1(pb.rooms, pb.dedupe)?
            }
            v => {
                return Err(ChatError::Corrupt(format!(
                    "snapshot format version {v} (this binary reads {SNAPSHOT_VERSION_V1} to \
                     {SNAPSHOT_VERSION_MANIFEST})"
                )))
            }
        }
        *self = fresh;
        Ok(())
    }

    /// A new, empty generation, for a state with a directory.
    fn start_gen(&mut self) -> Result<(), ChatError> {
        if let Some(dir) = &self.dir {
            let (gen, segs) = dir.create_gen()?;
            self.disk = Some(Disk {
                gen,
                segs,
                seg_lens: vec![0],
                next_wseq: 0,
                pending: VecDeque::new(),
            });
        }
        Ok(())
    }

    /// Checks one restored message the way `apply` checks a send.
    fn check_record(&self, r: &Record<'_>) -> Result<(), ChatError> {
        validate_send_fields(r.author, r.text, r.id, self.max_text_bytes)
            .map_err(|e| ChatError::Corrupt(format!("snapshot holds a message that {e}")))
    }

    fn restore_manifest(&mut self, pb: SnapshotPb) -> Result<(), ChatError> {
        let Some(dir) = self.dir.clone() else {
            return Err(ChatError::Corrupt(
                "a manifest snapshot needs a chat directory".into(),
            ));
        };
        if !disk::valid_gen(&pb.gen) {
            return Err(ChatError::Corrupt(format!(
                "bad generation name {:?}",
                pb.gen
            )));
        }
        let lens = &pb.segment_lens;
        for room in pb.disk_rooms {
            validate_room(&room.name)?;
            let bad = |what: String| ChatError::Corrupt(format!("room {:?}: {what}", room.name));
            let mut next = 1u64;
            let mut sealed = Vec::with_capacity(room.chunks.len());
            for c in &room.chunks {
                let seg_len = lens.get(c.seg as usize).copied().unwrap_or(0);
                let end = c.offset.checked_add(u64::from(c.len));
                if c.first_seq != next
                    || c.count == 0
                    || u64::from(c.len) <= disk::FRAME_HEADER as u64
                    || u64::from(c.len) > disk::MAX_FRAME
                    || end.is_none_or(|e| e > seg_len)
                {
                    return Err(bad(format!(
                        "chunk at seq {} (segment {} offset {} length {}) does not fit",
                        c.first_seq, c.seg, c.offset, c.len
                    )));
                }
                next += u64::from(c.count);
                sealed.push(ChunkRef {
                    first_seq: c.first_seq,
                    offset: c.offset,
                    count: c.count,
                    seg: c.seg,
                    len: c.len,
                });
            }
            let n = store::count_records(&room.tail, |r| self.check_record(r))?;
            if n != room.tail_count || next - 1 + u64::from(n) != room.count {
                return Err(bad(format!(
                    "{} messages in chunks and tail, the header says {}",
                    next - 1 + u64::from(n),
                    room.count
                )));
            }
            self.tail_bytes += room.tail.len();
            self.rooms.insert(
                Arc::from(room.name),
                RoomLog {
                    sealed,
                    unwritten: Default::default(),
                    tail: room.tail.to_vec(),
                    tail_count: n,
                    len: room.count,
                },
            );
        }
        for d in pb.dedupe {
            let Some((room, log)) = self.rooms.get_key_value(d.room.as_str()) else {
                return Err(ChatError::Corrupt(format!(
                    "dedupe entry for unknown room {:?}",
                    d.room
                )));
            };
            if d.seq == 0 || d.seq > log.len() {
                return Err(ChatError::Corrupt(format!(
                    "dedupe entry for seq {} of room {:?}",
                    d.seq, d.room
                )));
            }
            let room = room.clone();
            self.remember(Arc::from(d.id), room, d.seq);
        }
        let segs = dir.open_gen(&pb.gen, lens)?;
        self.disk = Some(Disk {
            gen: pb.gen,
            segs,
            seg_lens: if lens.is_empty() {
                vec![0]
            } else {
                lens.clone()
            },
            next_wseq: 0,
            pending: VecDeque::new(),
        });
        Ok(())
    }

    fn restore_packed(&mut self, rooms: Vec<PackedRoomPb>) -> Result<(), ChatError> {
        for room in rooms {
            validate_room(&room.name)?;
            let name: Arc<str> = Arc::from(room.name.as_str());
            self.rooms.insert(name.clone(), RoomLog::default());
            let last = room.chunks.len();
            for (k, chunk) in room.chunks.into_iter().enumerate() {
                let n = store::count_records(&chunk, |r| self.check_record(r))?;
                if n == 0 {
                    return Err(ChatError::Corrupt("empty chunk".into()));
                }
                let Some(log) = self.rooms.get_mut(&name) else {
                    continue;
                };
                log.tail = chunk.to_vec();
                log.tail_count = n;
                log.len += u64::from(n);
                self.tail_bytes += chunk.len();
                // The last chunk stays open, as it was when the image was taken.
                if k + 1 < last || chunk.len() >= store::CHUNK_BYTES {
                    self.seal(&name);
                    self.reap();
                }
            }
            if self.tail_bytes > super::TAIL_BUDGET {
                self.shed_tails();
            }
            let len = self.room_len(&name).unwrap_or(0);
            if len != room.count {
                return Err(ChatError::Corrupt(format!(
                    "room {:?} holds {len} messages, its header says {}",
                    room.name, room.count
                )));
            }
        }
        // The dedupe table holds exactly the ids of the newest `dedupe_capacity` messages, in
        // index order: rebuild it from them instead of storing it twice.
        let cap = self.dedupe_capacity;
        let mut newest: Vec<(u64, Arc<str>, u64, Arc<str>)> = Vec::new();
        let names: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
        for name in names {
            for m in self.history_read(&name, 0, cap, true)?.load()? {
                newest.push((m.index, Arc::from(m.id.as_str()), m.seq, name.clone()));
            }
        }
        newest.sort_unstable_by_key(|(index, ..)| *index);
        let skip = newest.len().saturating_sub(self.dedupe_capacity);
        for (_, id, seq, room) in newest.into_iter().skip(skip) {
            self.remember(id, room, seq);
        }
        Ok(())
    }

    fn restore_v1(&mut self, rooms: Vec<RoomPb>, dedupe: Vec<DedupePb>) -> Result<(), ChatError> {
        for room in rooms {
            let name: Arc<str> = Arc::from(room.name.as_str());
            self.rooms.insert(name.clone(), RoomLog::default());
            for (i, m) in room.messages.into_iter().enumerate() {
                if m.seq != i as u64 + 1 {
                    return Err(ChatError::Corrupt(format!(
                        "room {:?} has seq {} at position {}",
                        room.name,
                        m.seq,
                        i + 1
                    )));
                }
                self.push(
                    &name,
                    &Record {
                        index: m.index,
                        term: m.term,
                        sent_at_unix_ms: m.sent_at_unix_ms,
                        author: &m.author,
                        id: &m.id,
                        text: &m.text,
                    },
                );
            }
        }
        for d in dedupe {
            let room = match self.rooms.get_key_value(d.room.as_str()) {
                Some((name, _)) => name.clone(),
                None => Arc::from(d.room),
            };
            self.remember(Arc::from(d.id), room, d.seq);
        }
        Ok(())
    }
}
