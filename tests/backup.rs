//! Backup and restore end to end, on real processes (`raft_client backup` / `restore` / `run`):
//! a backup taken from a live 3-node cluster under load restores into a new 3-node cluster
//! holding exactly the source's history as of the backup's index; a damaged or truncated
//! backup file, a used data directory and the old cluster id are refused with exit code 2.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustyraft::node::backup;
use rustyraft::pb;
use support::*;

const ROOMS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

/// Sends `n` messages of `size` bytes to `room` through any of `addrs`, or until `stop`.
async fn load(addrs: String, room: &'static str, n: usize, size: usize, stop: Arc<AtomicBool>) {
    let mut c = rustyraft::client::Client::new(&addrs).unwrap();
    for i in 0..n {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let text = format!("{room}-{i}-{}", "x".repeat(size));
        c.send(room, "loader", &text, None)
            .await
            .unwrap_or_else(|e| panic!("send to {room} failed: {e}"));
    }
}

fn raft_client(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn restore(file: &Path, c: &Cluster, id: u64, extra: &[&str]) -> std::process::Output {
    let dir = c.data_dir(id);
    let mut args = vec![
        "restore".to_string(),
        file.display().to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--id".into(),
        id.to_string(),
        "--peers".into(),
        c.peers.clone(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(bin()).args(&args).output().unwrap()
}

async fn list_rooms(addr: &str) -> Vec<String> {
    let r = chat(addr)
        .list_rooms(pb::ListRoomsRequest {
            limit: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    r.rooms.into_iter().map(|r| r.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_into_a_new_cluster() {
    let src = Cluster::start(3, &["--snapshot-threshold", "300"]);
    src.leader().await;
    let addrs = src.live_addrs();
    // History on disk before the backup: 150 x 600 bytes per room seals chunks into segments.
    let stop = Arc::new(AtomicBool::new(false));
    let pre: Vec<_> = ROOMS
        .iter()
        .map(|r| tokio::spawn(load(addrs.clone(), r, 150, 600, stop.clone())))
        .collect();
    for t in pre {
        t.await.unwrap();
    }
    // Load keeps running while the backup is taken.
    let busy: Vec<_> = ROOMS
        .iter()
        .map(|r| tokio::spawn(load(addrs.clone(), r, 100_000, 300, stop.clone())))
        .collect();
    let file = src.dir.path().join("cluster.backup");
    let out = {
        let file = file.clone();
        let addrs = addrs.clone();
        tokio::task::spawn_blocking(move || {
            raft_client(&[
                "backup",
                "--addr",
                &addrs,
                "--out",
                &file.display().to_string(),
            ])
        })
        .await
        .unwrap()
    };
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A little more load after the backup, then stop.
    load(
        addrs.clone(),
        "late",
        20,
        10,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        t.await.unwrap();
    }
    assert!(!file.with_extension("backup.tmp").exists());
    let header = backup::verify(&file).unwrap().header;
    assert_eq!(header.cluster_id, "rustyraft");
    // The history went into the file from the segment files (a bundle), not just a manifest.
    assert!(
        header.payload_len > 4 * 150 * 600,
        "{} bytes",
        header.payload_len
    );
    let bytes = std::fs::read(&file).unwrap();
    let at = backup::verify(&file).unwrap().payload_at as usize;
    assert!(rustyraft::chat::bundle::is_bundle(&bytes[at..]));
    // The source's history as of the backup's index, per room.
    let last = send_any(&addrs, "late", "last", "last-id").await.index;
    assert!(last > header.index);
    let mut expected = Vec::new();
    let src1 = src.addr(1);
    for room in ROOMS {
        let all = wait_for(&format!("room {room} at the source"), || {
            local_history(&src1, room, last)
        })
        .await;
        let at: Vec<_> = all
            .into_iter()
            .filter(|m| m.index <= header.index)
            .collect();
        assert!(at.len() >= 150, "room {room}: {} messages", at.len());
        expected.push((room, at));
    }

    // A new cluster, seeded from the file.
    let mut dst = Cluster::prepare(3, &[]);
    for id in 1..=3 {
        let out = restore(&file, &dst, id, &[]);
        assert!(
            out.status.success(),
            "restore {id} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for id in 1..=3 {
        dst.spawn(id);
    }
    let leader = dst.leader().await;
    let st = status(&dst.addr(leader)).await.unwrap();
    assert_ne!(
        st.cluster_id, "rustyraft",
        "a restored cluster has a new id"
    );
    assert!(st.cluster_id.starts_with("rustyraft-restored-"));
    for (room, want) in &expected {
        assert_same_everywhere(&dst, room, want).await;
    }
    assert!(!list_rooms(&dst.addr(1)).await.contains(&"late".to_string()));
    // It is a working cluster: seqs go on from the backup's.
    let next = send_any(&dst.live_addrs(), "alpha", "after restore", "after-1").await;
    let alpha = &expected[0].1;
    assert_eq!(next.seq, alpha.last().unwrap().seq + 1);
    assert!(next.index > header.index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_or_a_used_data_dir_is_refused() {
    let src = Cluster::start(1, &[]);
    src.leader().await;
    for i in 0..20 {
        send_any(
            &src.live_addrs(),
            "room",
            &format!("m{i}"),
            &format!("id-{i}"),
        )
        .await;
    }
    let file = src.dir.path().join("b.backup");
    let out = raft_client(&[
        "backup",
        "--addr",
        &src.addr(1),
        "--out",
        &file.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = std::fs::read(&file).unwrap();
    let dst = Cluster::prepare(1, &[]);

    // One flipped bit in the state.
    let flipped = src.dir.path().join("flipped.backup");
    let mut bytes = good.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&flipped, &bytes).unwrap();
    let out = restore(&flipped, &dst, 1, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!dst.data_dir(1).join("node.json").exists());

    // Cut short.
    let cut = src.dir.path().join("cut.backup");
    std::fs::write(&cut, &good[..good.len() - 10]).unwrap();
    let out = restore(&cut, &dst, 1, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated"), "{err}");

    // Damaged inside, with a trailer recomputed to match: the bundle's own checks refuse it,
    // and the half-written data directory is emptied again.
    let resealed = src.dir.path().join("resealed.backup");
    let mut bytes = good.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    let body = bytes.len() - 4;
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&resealed, &bytes).unwrap();
    let out = restore(&resealed, &dst, 1, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a usable backup"), "{err}");
    assert_eq!(std::fs::read_dir(dst.data_dir(1)).unwrap().count(), 0);

    // Not a backup at all.
    let other = src.dir.path().join("other.backup");
    std::fs::write(&other, b"hello, this is not a backup file").unwrap();
    let out = restore(&other, &dst, 1, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a backup file"));

    // The old cluster's id.
    let out = restore(&file, &dst, 1, &["--cluster-id", "rustyraft"]);
    assert_eq!(out.status.code(), Some(2));

    // A data directory in use.
    let out = restore(&file, &src, 1, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));

    // The good file still restores.
    let out = restore(&file, &dst, 1, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
