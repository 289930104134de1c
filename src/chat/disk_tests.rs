//! Tests of the chat state with files: history served from segment files, manifest snapshots,
//! restart from a manifest plus the log tail, a crash cut at every byte of the segment tail,
//! corruption detection, and the streamed bundle.

use std::path::Path;

use super::bundle::{BundleReader, BundleWriter};
use super::disk::{seg_path, ChatDir};
use super::*;

fn send(room: &str, text: &str, id: &str) -> Bytes {
    Command::Send {
        room: room.into(),
        author: "ada".into(),
        text: text.into(),
        id: id.into(),
        sent_at_unix_ms: 7,
    }
    .encode()
}

/// The entries of a history: `n` sends of ~1 KB over three rooms, so every room seals chunks.
fn entries(n: u64) -> Vec<(u64, Bytes)> {
    (1..=n)
        .map(|i| {
            let room = ["a", "b", "c"][(i % 3) as usize];
            let text = format!("{i:06}-{}", "x".repeat(1000));
            (i, send(room, &text, &format!("id-{i}")))
        })
        .collect()
}

fn open(dir: &Path) -> ChatState {
    ChatState::open(ChatDir::new(dir, false), 1000, 4096)
}

fn all_history(s: &ChatState) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    for room in s.list_rooms(None, 100) {
        for m in s.history(&room.name, 1, usize::MAX, false).unwrap() {
            out.push((m.room.clone(), m.seq, m.text.clone()));
        }
    }
    out
}

fn segment_bytes(s: &ChatState) -> u64 {
    let dir = s.gen_dir().unwrap();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn history_is_served_from_segment_files_and_leaves_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path());
    s.restore(&Bytes::new()).unwrap();
    let mut mem = ChatState::new(1000, 4096);
    for (i, e) in entries(600) {
        s.apply(i, 1, &e);
        mem.apply(i, 1, &e);
    }
    s.flush().unwrap();
    // One more apply lets the state drop what the writer has written.
    s.apply(601, 1, &send("d", "z", "id-601"));
    mem.apply(601, 1, &send("d", "z", "id-601"));
    assert!(segment_bytes(&s) > 500_000, "sealed chunks are on disk");
    let held: usize = s.rooms.values().map(|l| l.unwritten.len()).sum();
    assert_eq!(held, 0, "no written chunk stays in memory");
    assert_eq!(all_history(&s), all_history(&mem));
    let rev = s.history("a", 0, 5, true).unwrap();
    assert_eq!(rev.len(), 5);
    assert_eq!(rev[0].seq, s.room_len("a").unwrap());
    // A retry of an old send is answered from disk with the original.
    match s.apply(602, 1, &send("a", "other", "id-3")) {
        Applied::Sent { message, duplicate } => {
            assert!(duplicate);
            assert!(message.text.starts_with("000003-"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn restart_from_a_manifest_plus_the_log_tail_gives_the_same_state() {
    let tmp = tempfile::tempdir().unwrap();
    let log = entries(900);
    let mut s = open(tmp.path());
    s.restore(&Bytes::new()).unwrap();
    for (i, e) in &log[..500] {
        s.apply(*i, 1, e);
    }
    let manifest = s.snapshot().unwrap();
    // The index plus the open tails (under 64 KiB per room): not a copy of the history.
    assert!(
        manifest.len() < 3 * 64 * 1024 + 1024,
        "a manifest is an index, not a copy: {} bytes",
        manifest.len()
    );
    for (i, e) in &log[500..] {
        s.apply(*i, 1, e);
    }
    s.flush().unwrap();
    let want = all_history(&s);
    drop(s);
    // "Restart": the segment files hold more than the manifest; restore cuts them back and the
    // log tail is applied again.
    let mut t = open(tmp.path());
    t.restore(&manifest).unwrap();
    t.remove_unused_files().unwrap();
    assert_eq!(t.applied(), 500);
    for (i, e) in &log[500..] {
        t.apply(*i, 1, e);
    }
    assert_eq!(all_history(&t), want);
    // The dedupe table came back too.
    assert!(matches!(
        t.apply(901, 1, &send("b", "again", "id-400")),
        Applied::Sent {
            duplicate: true,
            ..
        }
    ));
}

#[test]
fn a_crash_cut_at_every_byte_past_the_manifest_recovers() {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut log = entries(200);
    // After the snapshot: one room only, so exactly one more chunk is sealed past it.
    log.extend((201..=266).map(|i| {
        let text = format!("{i:06}-{}", "x".repeat(1000));
        (i, send("a", &text, &format!("id-{i}")))
    }));
    let mut s = open(tmp.path());
    s.restore(&Bytes::new()).unwrap();
    for (i, e) in &log[..200] {
        s.apply(*i, 1, e);
    }
    let manifest = s.snapshot().unwrap();
    let (_, lens) = manifest_layout(&manifest).unwrap().unwrap();
    for (i, e) in &log[200..] {
        s.apply(*i, 1, e);
    }
    s.flush().unwrap();
    let want = all_history(&s);
    let seg0 = seg_path(&s.gen_dir().unwrap(), 0);
    drop(s);
    let full = std::fs::read(&seg0).unwrap();
    let cut_from = lens[0] as usize;
    assert!(
        full.len() > cut_from + 60 * 1024,
        "a chunk written after the snapshot"
    );
    for cut in cut_from..=full.len() {
        // The file as a crash may leave it: the snapshot's bytes, then any prefix of the rest.
        let f = std::fs::OpenOptions::new().write(true).open(&seg0).unwrap();
        f.set_len(cut_from as u64).unwrap();
        f.write_all_at(&full[cut_from..cut], cut_from as u64)
            .unwrap();
        drop(f);
        let mut t = open(tmp.path());
        t.restore(&manifest)
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(
            std::fs::metadata(&seg0).unwrap().len(),
            lens[0],
            "cut at {cut}"
        );
        if cut % 8191 == 0 || cut == full.len() {
            for (i, e) in &log[200..] {
                t.apply(*i, 1, e);
            }
            t.flush().unwrap();
            assert_eq!(all_history(&t), want, "cut at {cut}");
        }
    }
    // Cut inside what the manifest refers to: the restart refuses, naming the file.
    for cut in (0..cut_from).step_by(997) {
        std::fs::write(&seg0, &full[..cut]).unwrap();
        match open(tmp.path()).restore(&manifest) {
            Err(ChatError::Corrupt(m)) => assert!(m.contains("seg-0.dat"), "{m}"),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn a_flipped_bit_in_a_chunk_is_reported_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path());
    s.restore(&Bytes::new()).unwrap();
    for (i, e) in entries(300) {
        s.apply(i, 1, &e);
    }
    let manifest = s.snapshot().unwrap();
    let seg0 = seg_path(&s.gen_dir().unwrap(), 0);
    drop(s);
    let mut bytes = std::fs::read(&seg0).unwrap();
    bytes[100] ^= 0x04;
    std::fs::write(&seg0, &bytes).unwrap();
    let mut t = open(tmp.path());
    t.restore(&manifest).unwrap();
    let errors = ["a", "b", "c"]
        .iter()
        .filter_map(|r| t.history(r, 1, usize::MAX, false).err())
        .collect::<Vec<_>>();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(matches!(&errors[0], ChatError::Corrupt(m) if m.contains("seg-0.dat")));
}

/// Streams `manifest` from `from` into `to` as a bundle, in pieces of `piece` bytes.
fn transfer(from: &Path, manifest: &Bytes, to: &Path, piece: usize) -> Result<Bytes, ChatError> {
    let mut r = BundleReader::new(from, manifest).unwrap()?;
    let total = r.total_len();
    let mut w = BundleWriter::new(ChatDir::new(to, false), 1 << 20);
    let mut n = 0u64;
    while let Some(p) = r.next_piece(piece)? {
        n += p.len() as u64;
        w.write(&p)?;
    }
    assert_eq!(n, total);
    w.finish()
}

#[test]
fn a_bundle_carries_the_state_to_an_empty_directory() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let mut s = open(src.path());
    s.restore(&Bytes::new()).unwrap();
    for (i, e) in entries(500) {
        s.apply(i, 1, &e);
    }
    let manifest = s.snapshot().unwrap();
    // The sender keeps appending while it streams: the bundle holds the snapshot only.
    s.apply(501, 1, &send("a", "later", "id-501"));
    s.flush().unwrap();
    let got = transfer(src.path(), &manifest, dst.path(), 7919).unwrap();
    let mut t = open(dst.path());
    t.restore(&got).unwrap();
    let mut want = open(src.path());
    want.restore(&manifest).unwrap();
    assert_eq!(all_history(&t), all_history(&want));
    assert_eq!(t.applied(), 500);
    assert!(
        !std::fs::read_dir(dst.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("incoming-")),
        "the transfer directory was renamed into place"
    );
}

#[test]
fn a_damaged_or_cut_bundle_is_refused_and_cleaned_up() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let mut s = open(src.path());
    s.restore(&Bytes::new()).unwrap();
    for (i, e) in entries(200) {
        s.apply(i, 1, &e);
    }
    let manifest = s.snapshot().unwrap();
    let mut r = BundleReader::new(src.path(), &manifest).unwrap().unwrap();
    let mut stream = Vec::new();
    while let Some(p) = r.next_piece(1 << 20).unwrap() {
        stream.extend_from_slice(&p);
    }
    let feed = |bytes: &[u8]| {
        let mut w = BundleWriter::new(ChatDir::new(dst.path(), false), 1 << 20);
        w.write(bytes).and_then(|()| w.finish())
    };
    assert!(feed(&stream).is_ok());
    let mut flipped = stream.clone();
    let at = stream.len() - 100;
    flipped[at] ^= 1;
    assert!(matches!(feed(&flipped), Err(ChatError::Corrupt(_))));
    for cut in [0, 5, 16, 100, stream.len() / 2, stream.len() - 1] {
        assert!(feed(&stream[..cut]).is_err(), "cut at {cut}");
    }
    let left: Vec<_> = std::fs::read_dir(dst.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("incoming-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A manifest over the receiver's limit is refused before anything is written.
    let mut w = BundleWriter::new(ChatDir::new(dst.path(), false), 8);
    assert!(matches!(
        w.write(&stream),
        Err(ChatError::InvalidArgument(_))
    ));
}

#[test]
fn an_older_inline_snapshot_moves_onto_disk() {
    let mut mem = ChatState::new(1000, 4096);
    for (i, e) in entries(300) {
        mem.apply(i, 1, &e);
    }
    let v2 = mem.snapshot().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path());
    s.restore(&v2).unwrap();
    assert_eq!(all_history(&s), all_history(&mem));
    let again = s.snapshot().unwrap();
    assert!(
        manifest_layout(&again).is_some(),
        "written back as a manifest"
    );
    let mut t = open(tmp.path());
    t.restore(&again).unwrap();
    assert_eq!(all_history(&t), all_history(&mem));
}

#[test]
fn the_index_costs_32_bytes_per_chunk() {
    assert_eq!(std::mem::size_of::<store::ChunkRef>(), 32);
}

#[test]
fn many_rooms_keep_the_open_tails_under_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path());
    s.restore(&Bytes::new()).unwrap();
    let text = "y".repeat(2000);
    for i in 1..=6000u64 {
        let room = format!("room-{}", i % 3000);
        s.apply(i, 1, &send(&room, &text, &format!("id-{i}")));
        assert!(s.tail_bytes <= TAIL_BUDGET, "at {i}: {}", s.tail_bytes);
    }
    let tails: usize = s.rooms.values().map(|l| l.tail.len()).sum();
    assert_eq!(tails, s.tail_bytes);
    assert_eq!(s.history("room-7", 1, 10, false).unwrap().len(), 2);
}

#[test]
fn a_bundle_being_read_survives_the_removal_of_its_generation() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let mut s = open(src.path());
    s.restore(&Bytes::new()).unwrap();
    for (i, e) in entries(500) {
        s.apply(i, 1, &e);
    }
    let manifest = s.snapshot().unwrap();
    s.flush().unwrap();
    assert!(segment_bytes(&s) > 0);
    let mut r = BundleReader::new(src.path(), &manifest).unwrap().unwrap();
    // A follower installing a leader's snapshot removes its old generation meanwhile.
    for e in std::fs::read_dir(src.path()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("gen-") {
            std::fs::remove_dir_all(&p).unwrap();
        }
    }
    let mut w = BundleWriter::new(ChatDir::new(dst.path(), false), 1 << 20);
    while let Some(p) = r.next_piece(4096).unwrap() {
        w.write(&p).unwrap();
    }
    let got = w.finish().unwrap();
    let mut t = open(dst.path());
    t.restore(&got).unwrap();
    assert_eq!(all_history(&t).len(), 500);
}
