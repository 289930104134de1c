//! In-process driver tests on a single-node cluster: no network, real driver task.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::chat::{Applied, Command};
use crate::raft::{
    ConfState, Entry, HardState, LogStore, MemStorage, RaftState, Snapshot, Storage,
};

/// MemStorage that counts syncs, to check group commit.
struct Counting {
    inner: MemStorage,
    syncs: Arc<AtomicU64>,
}

impl Storage for Counting {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        self.inner.initial_state()
    }
    fn entries(&self, lo: u64, hi: u64, max: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(lo, hi, max)
    }
    fn term(&self, index: u64) -> Result<u64, StorageError> {
        self.inner.term(index)
    }
    fn first_index(&self) -> Result<u64, StorageError> {
        self.inner.first_index()
    }
    fn last_index(&self) -> Result<u64, StorageError> {
        self.inner.last_index()
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Storage::snapshot(&self.inner)
    }
}

impl LogStore for Counting {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        LogStore::append(&mut self.inner, entries)
    }
    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        LogStore::set_hard_state(&mut self.inner, hs)
    }
    fn apply_snapshot(&mut self, s: Snapshot) -> Result<(), StorageError> {
        LogStore::apply_snapshot(&mut self.inner, s)
    }
    fn compact(&mut self, index: u64, conf: ConfState, data: Bytes) -> Result<(), StorageError> {
        LogStore::compact(&mut self.inner, index, conf, data)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn single_node(threshold: u64) -> (NodeConfig, Counting, Arc<AtomicU64>) {
    let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut peers = BTreeMap::new();
    peers.insert(1, addr.to_string());
    let mut cfg = NodeConfig::new(1, addr, peers);
    cfg.heartbeat = Duration::from_millis(5);
    cfg.election_ticks = 2;
    cfg.snapshot_threshold = threshold;
    let syncs = Arc::new(AtomicU64::new(0));
    let store = Counting {
        inner: MemStorage::new_with_conf(ConfState::with_voters([1])),
        syncs: syncs.clone(),
    };
    (cfg, store, syncs)
}

fn send(i: usize) -> Command {
    Command::Send {
        room: "r".into(),
        author: "a".into(),
        text: format!("m{i}"),
        id: format!("id-{i}"),
        sent_at_unix_ms: 0,
    }
}

async fn wait_leader(node: &NodeHandle) {
    let mut rx = node.subscribe_status();
    rx.wait_for(|s| s.role == crate::raft::Role::Leader)
        .await
        .unwrap();
}

#[tokio::test]
async fn proposals_in_a_burst_share_fsyncs_and_apply_in_order() {
    let (cfg, store, syncs) = single_node(1_000_000);
    let (node, _inbound, task) = Driver::start_with(cfg, store).unwrap();
    wait_leader(&node).await;
    let before = syncs.load(Ordering::Relaxed);
    let n = 500;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let node = node.clone();
        set.spawn(async move { node.propose(&send(i)).await });
    }
    let results = set.join_all().await;
    let mut seqs: Vec<u64> = results
        .into_iter()
        .map(|r| match r.unwrap() {
            Applied::Sent { message, .. } => message.seq,
            other => panic!("{other:?}"),
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
    let used = syncs.load(Ordering::Relaxed) - before;
    eprintln!("group commit: {used} syncs for {n} proposals");
    // Group commit: far fewer fsyncs than proposals.
    assert!(used < n as u64 / 4, "{used} syncs for {n} proposals");
    node.stop();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn compaction_keeps_state_and_reads_are_linearizable() {
    let (cfg, store, _) = single_node(10);
    let (node, _inbound, task) = Driver::start_with(cfg, store).unwrap();
    wait_leader(&node).await;
    for i in 0..25 {
        node.propose(&send(i)).await.unwrap();
    }
    let idx = node
        .linearizable_barrier(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(idx >= 26);
    assert!(node.status().snapshot_index >= 20);
    assert_eq!(node.read(|sm| sm.room_len("r")).unwrap(), Some(25));
    // A retry after compaction is still deduplicated (the table is part of the state).
    match node.propose(&send(3)).await.unwrap() {
        Applied::Sent { message, duplicate } => {
            assert!(duplicate);
            assert_eq!(message.seq, 4);
        }
        other => panic!("{other:?}"),
    }
    node.stop();
    task.await.unwrap().unwrap();
}

#[test]
fn data_dir_identity_is_recorded_and_enforced() {
    let d = tempfile::tempdir().unwrap();
    check_identity(d.path(), 1, "c").unwrap();
    check_identity(d.path(), 1, "c").unwrap();
    assert!(matches!(
        check_identity(d.path(), 2, "c"),
        Err(NodeError::Config(_))
    ));
    assert!(matches!(
        check_identity(d.path(), 1, "other"),
        Err(NodeError::Config(_))
    ));
}

#[test]
fn snapshots_wait_for_half_their_own_size_in_new_log() {
    use crate::node::snapshot_due;
    // A small state: the entry minimum decides.
    assert!(!snapshot_due(9_999, 10_000_000, 1_000, 10_000));
    assert!(snapshot_due(10_000, 1_500_000, 1_000, 10_000));
    // A large state (100 MB image): 10k entries of 150 bytes are not enough; 50 MB are.
    assert!(!snapshot_due(10_000, 1_500_000, 100_000_000, 10_000));
    assert!(snapshot_due(90_000, 50_000_000, 100_000_000, 10_000));
    // But never more than ten times the threshold apart, to bound the restart replay.
    assert!(!snapshot_due(99_999, 15_000_000, 1_000_000_000, 10_000));
    assert!(snapshot_due(100_000, 15_000_000, 1_000_000_000, 10_000));
    // No snapshot yet.
    assert!(snapshot_due(10_000, 0, 0, 10_000));
}

/// Shutdown joins every task spawned on the node: `wait_tasks` returns only after a task that
/// ends on drain has ended, and a stopped node fails new requests instead of hanging.
#[tokio::test]
async fn stop_drains_and_wait_tasks_joins_every_tracked_task() {
    let (cfg, store, _syncs) = single_node(1_000_000);
    let (node, _inbound, task) = Driver::start_with(cfg, store).unwrap();
    wait_leader(&node).await;
    let ended = Arc::new(AtomicU64::new(0));
    for _ in 0..3 {
        let (draining, ended) = (node.draining(), ended.clone());
        node.spawn(async move {
            draining.cancelled().await;
            // Work that outlives the signal a little: wait_tasks must wait for it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            ended.fetch_add(1, Ordering::SeqCst);
        });
    }
    // A child token held by a caller cannot end the node.
    node.draining().cancel();
    node.propose(&send(1)).await.unwrap();
    assert_eq!(ended.load(Ordering::SeqCst), 0);
    node.stop();
    task.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(5), node.wait_tasks())
        .await
        .expect("every tracked task ends after stop");
    assert_eq!(ended.load(Ordering::SeqCst), 3);
    assert!(matches!(
        node.propose(&send(2)).await,
        Err(NodeError::Stopped)
    ));
}
