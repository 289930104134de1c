//! Deterministic simulation of a Raft cluster built from the real core.
//!
//! N nodes run [`rustyraft::raft::Raft`] over a simulated network and clock. Every source of
//! randomness (faults, delays, election timeouts) derives from one seed, and all collections are
//! ordered, so a seed replays exactly. After every event the affected node is checked against
//! Raft's safety properties (Figure 3 of the paper):
//!
//! - Election Safety: at most one leader per term;
//! - Log Matching: same (index, term) means same entry and same history before it;
//! - Leader Completeness: a new leader holds every entry committed before its term;
//! - State Machine Safety: no two nodes apply different entries at one index;
//!
//! plus ReadIndex linearizability: a read index is never below a commit index that a leader
//! had already reached (and could have acknowledged) when the read was issued.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;
use rustyraft::raft::{
    ConfState, Config, Entry, EntryKind, Message, MessageBody, NodeId, Raft, ReadState, Role,
};

pub mod seeds;
pub mod store;
pub use store::SimStore;

/// Simulated time units per tick.
pub const TICK: u64 = 10;
/// Messages in flight beyond which a run fails: far above what a correct cluster of 7 nodes
/// produces even with duplication and long delays.
pub const MAX_IN_FLIGHT: usize = 20_000;

/// Fault knobs of one run.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub dup: f64,
    /// Maximum delivery delay in time units (delays are uniform in `1..=max_delay`, which
    /// reorders messages).
    pub max_delay: u64,
    /// Per-tick probability of crashing an up node.
    pub crash: f64,
    /// Per-tick probability of restarting a down node.
    pub restart: f64,
    /// Per-tick probability of changing the partition (new random cut, or heal).
    pub partition: f64,
    /// Probability that a crash hits in the middle of handling a Ready (after sending the
    /// immediate messages, before persisting).
    pub crash_mid_ready: f64,
    /// Per-tick probability of a node compacting its log.
    pub compact: f64,
    /// Per-tick probability that the leader proposes a membership change (a learner joins or
    /// leaves).
    pub conf_change: f64,
    /// Probability that a Ready is persisted asynchronously, as the node's driver does: its
    /// writes are made but not synced, `advance` runs, the core goes on stepping, and the
    /// sync (then `on_persisted` and the Ready's persisted messages) comes at a later tick. A
    /// crash meanwhile loses the unsynced writes. Only for storages that can model that
    /// ([`SimStore::durable_copy`]).
    pub async_persist: f64,
}

impl Faults {
    /// A perfect network: no loss, no duplication, small delays, no crashes.
    pub fn none() -> Self {
        Faults {
            loss: 0.0,
            dup: 0.0,
            max_delay: 3,
            crash: 0.0,
            restart: 0.0,
            partition: 0.0,
            crash_mid_ready: 0.0,
            compact: 0.0,
            conf_change: 0.0,
            async_persist: 0.0,
        }
    }

    /// Random fault intensities for a seed.
    pub fn random(rng: &mut fastrand::Rng) -> Self {
        let calm = rng.u8(0..10) == 0;
        if calm {
            return Faults::none();
        }
        Faults {
            loss: [0.0, 0.01, 0.05, 0.2][rng.usize(0..4)],
            dup: [0.0, 0.02, 0.1][rng.usize(0..3)],
            max_delay: [2, 10, 30, 60][rng.usize(0..4)],
            crash: [0.0, 0.002, 0.01, 0.03][rng.usize(0..4)],
            restart: [0.02, 0.1][rng.usize(0..2)],
            partition: [0.0, 0.005, 0.02, 0.05][rng.usize(0..4)],
            crash_mid_ready: [0.0, 0.02, 0.1][rng.usize(0..3)],
            compact: [0.0, 0.01, 0.05][rng.usize(0..3)],
            // Drawn by the caller from its own stream, so adding it changed no existing seed.
            conf_change: 0.0,
            async_persist: 0.0,
        }
    }
}

/// A safety or liveness violation, with the trace that led to it.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub what: String,
    /// Simulated time of the violation.
    pub time: u64,
}

/// A Ready written but not synced: its last entry, and the messages waiting for the sync.
type Unsynced = (Option<(u64, u64)>, Vec<Message>);

struct Node<S: SimStore> {
    raft: Option<Raft<S>>,
    /// What survives a crash: the persisted storage of a down node.
    disk: Option<S>,
    /// State machine: last applied index and the hash chain of applied commands.
    applied: u64,
    hash: u64,
    /// Highest commit index already recorded into the global committed map.
    seen_commit: u64,
    restarts: u64,
    /// Outstanding reads: ctx -> global max leader commit when issued.
    reads: BTreeMap<u64, u64>,
    /// Term and vote of the last hard state handed to the storage since the last start.
    term_vote: Option<(u64, Option<NodeId>)>,
    /// Readies written but not yet synced (asynchronous persistence), oldest first: the
    /// last entry each wrote and the messages that wait for the sync.
    unsynced: Vec<Unsynced>,
    /// The storage as of the last sync, while `unsynced` is not empty: what a crash leaves.
    durable: Option<S>,
}

/// The cluster under simulation.
/// Decides which in-flight messages a scenario drops (true = drop).
pub type DropFilter = Box<dyn Fn(&Message) -> bool>;
/// Builds a node's storage on first start: (node id, initial membership) -> store.
pub type StoreFactory<S> = Box<dyn FnMut(NodeId, &ConfState) -> S>;

pub struct Cluster<S: SimStore> {
    pub seed: u64,
    pub rng: fastrand::Rng,
    pub time: u64,
    pub faults: Faults,
    ids: Vec<NodeId>,
    nodes: BTreeMap<NodeId, Node<S>>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    in_flight: BTreeMap<usize, Message>,
    next_msg: usize,
    seq: u64,
    /// Directed links that drop everything: (from, to).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Messages matching this are dropped (scenario tests).
    pub drop_filter: Option<DropFilter>,
    /// Scenario tests: snapshots due for delivery are parked here instead, as if their
    /// transfer were very slow, until [`Cluster::release_snapshots`].
    pub hold_snapshots: bool,
    held_snapshots: Vec<Message>,
    /// InstallSnapshot messages sent so far (every node), for scenario tests.
    pub snapshots_sent: u64,
    // ----- global knowledge for the invariants -----
    leaders: BTreeMap<u64, NodeId>,
    entries: BTreeMap<(u64, u64), (u64, u64)>,
    committed: BTreeMap<u64, u64>,
    applied_hash: BTreeMap<u64, u64>,
    max_leader_commit: u64,
    next_ctx: u64,
    /// Reads answered with an index (count), for statistics.
    pub reads_served: u64,
    /// Committed membership changes that added or removed a voter (learner changes excluded),
    /// so the summary shows voter changes really happen.
    pub voter_changes: u64,
    /// Voters of the latest committed configuration, to tell voter changes apart.
    committed_voters: BTreeSet<NodeId>,
    pub trace: Option<Vec<String>>,
    pub make_store: StoreFactory<S>,
    pub election_tick: u64,
    /// Adjusts each node's config on (re)start: scenario tests turn features off or shrink
    /// message sizes.
    pub config_hook: Option<fn(&mut Config)>,
    /// Byte cap per AppendEntries; 1 sends one entry per message, which lets faults cut
    /// replication between two entries (how the Figure 8 situation arises).
    pub max_msg_bytes: u64,
    /// The answer to every read that was answered: ctx -> read index (None = refused).
    pub read_results: BTreeMap<u64, Option<u64>>,
}

fn mix(h: u64, v: u64) -> u64 {
    // SplitMix64-style mixing: a cheap, well-distributed hash chain.
    let mut z = h ^ v.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn data_hash(e: &Entry) -> u64 {
    let mut h = mix(0, e.kind as u64);
    for chunk in e.data.chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(b));
    }
    h
}

fn encode_sm(applied: u64, hash: u64) -> Bytes {
    let mut v = applied.to_le_bytes().to_vec();
    v.extend_from_slice(&hash.to_le_bytes());
    Bytes::from(v)
}

fn decode_sm(b: &[u8]) -> (u64, u64) {
    if b.len() < 16 {
        return (0, 0);
    }
    let a = u64::from_le_bytes(b[..8].try_into().unwrap());
    let h = u64::from_le_bytes(b[8..16].try_into().unwrap());
    (a, h)
}

impl<S: SimStore> Cluster<S> {
    /// A cluster of `n` voters with ids 1..=n, all started.
    pub fn new(n: usize, seed: u64, faults: Faults, make_store: StoreFactory<S>) -> Self {
        Self::with_voters(n, n, seed, faults, make_store)
    }

    /// A cluster of `n` nodes of which only the first `voters` start as members; the others
    /// start outside the configuration and can be added as learners.
    pub fn with_voters(
        n: usize,
        voters: usize,
        seed: u64,
        faults: Faults,
        make_store: StoreFactory<S>,
    ) -> Self {
        let ids: Vec<NodeId> = (1..=n as u64).collect();
        let mut c = Cluster {
            seed,
            rng: fastrand::Rng::with_seed(seed),
            time: 0,
            faults,
            ids: ids.clone(),
            nodes: BTreeMap::new(),
            queue: BinaryHeap::new(),
            in_flight: BTreeMap::new(),
            next_msg: 0,
            seq: 0,
            blocked: BTreeSet::new(),
            drop_filter: None,
            hold_snapshots: false,
            held_snapshots: Vec::new(),
            snapshots_sent: 0,
            leaders: BTreeMap::new(),
            entries: BTreeMap::new(),
            committed: BTreeMap::new(),
            applied_hash: BTreeMap::new(),
            max_leader_commit: 0,
            next_ctx: 1,
            reads_served: 0,
            voter_changes: 0,
            committed_voters: BTreeSet::new(),
            trace: None,
            make_store,
            election_tick: 10,
            config_hook: None,
            max_msg_bytes: 4096,
            read_results: BTreeMap::new(),
        };
        let conf = ConfState::with_voters(ids.iter().copied().take(voters));
        c.committed_voters = conf.voters.clone();
        for &id in &ids {
            let store = (c.make_store)(id, &conf);
            c.nodes.insert(
                id,
                Node {
                    raft: None,
                    disk: Some(store),
                    applied: 0,
                    hash: 0,
                    seen_commit: 0,
                    restarts: 0,
                    reads: BTreeMap::new(),
                    unsynced: Vec::new(),
                    term_vote: None,
                    durable: None,
                },
            );
        }
        c
    }

    /// Starts every node that is down.
    pub fn start_all(&mut self) -> Result<(), Failure> {
        for id in self.ids.clone() {
            if self.nodes[&id].raft.is_none() {
                self.restart(id)?;
            }
        }
        Ok(())
    }

    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    pub fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let l = line();
            t.push(format!("[t={:>6}] {l}", self.time));
        }
    }

    fn fail(&self, what: String) -> Failure {
        Failure {
            what,
            time: self.time,
        }
    }

    pub fn raft(&self, id: NodeId) -> Option<&Raft<S>> {
        self.nodes.get(&id).and_then(|n| n.raft.as_ref())
    }

    pub fn raft_mut(&mut self, id: NodeId) -> Option<&mut Raft<S>> {
        self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut())
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.raft(id).is_some()
    }

    pub fn applied(&self, id: NodeId) -> u64 {
        self.nodes[&id].applied
    }

    /// The leader with the highest term among up nodes, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.ids
            .iter()
            .filter_map(|&id| self.raft(id).map(|r| (id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id)
    }

    // ----- node lifecycle ------------------------------------------------------------------

    pub fn crash(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if let Some(raft) = node.raft.take() {
            // Unsynced writes are lost: the disk is what the last sync left.
            node.disk = Some(match node.durable.take() {
                Some(d) => d,
                None => S::crash(raft),
            });
            node.unsynced.clear();
            node.term_vote = None;
            node.reads.clear();
            self.log(|| format!("CRASH n{id}"));
        }
    }

    pub fn restart(&mut self, id: NodeId) -> Result<(), Failure> {
        let et = self.election_tick;
        let hook = self.config_hook;
        let max_msg_bytes = self.max_msg_bytes;
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let Some(disk) = node.disk.take() else {
            return Ok(());
        };
        let snap = rustyraft::raft::Storage::snapshot(&disk).map_err(|e| Failure {
            what: format!("n{id} snapshot read: {e}"),
            time: 0,
        })?;
        let (applied, hash) = if snap.meta.index == 0 {
            (0, 0)
        } else {
            decode_sm(&snap.data)
        };
        node.applied = applied;
        node.hash = hash;
        node.seen_commit = 0;
        node.restarts += 1;
        let mut cfg = Config::new(id);
        cfg.election_tick = et;
        cfg.seed = mix(self.seed, id * 1000 + node.restarts);
        cfg.applied = applied;
        cfg.max_size_per_msg = max_msg_bytes;
        cfg.max_inflight_msgs = 8;
        if let Some(hook) = hook {
            hook(&mut cfg);
        }
        match Raft::new(cfg, disk) {
            Ok(r) => node.raft = Some(r),
            Err(e) => return Err(self.fail(format!("n{id} failed to restart: {e}"))),
        }
        self.log(|| format!("RESTART n{id} applied={applied}"));
        self.check_node(id)
    }

    // ----- driving -------------------------------------------------------------------------

    pub fn tick(&mut self, id: NodeId) -> Result<(), Failure> {
        let Some(r) = self.raft_mut(id) else {
            return Ok(());
        };
        if let Err(e) = r.tick() {
            return Err(self.fail(format!("n{id} tick: {e}")));
        }
        self.process(id)
    }

    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> Option<u64> {
        let r = self.raft_mut(id)?;
        let idx = r.propose(Bytes::copy_from_slice(data)).ok();
        self.log(|| format!("PROPOSE n{id} -> {idx:?}"));
        let _ = self.process(id);
        idx
    }

    pub fn read(&mut self, id: NodeId) -> Result<u64, Failure> {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        let floor = self.max_leader_commit;
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(ctx);
        };
        let Some(r) = node.raft.as_mut() else {
            return Ok(ctx);
        };
        node.reads.insert(ctx, floor);
        r.read_index(ctx);
        self.log(|| format!("READ n{id} ctx={ctx} floor={floor}"));
        self.process(id)?;
        Ok(ctx)
    }

    /// Handles every Ready the node has, the way a real driver does: send, persist, send the
    /// persisted messages, apply, advance. May crash the node mid-way (fault injection).
    pub fn process(&mut self, id: NodeId) -> Result<(), Failure> {
        loop {
            let mid_crash =
                self.faults.crash_mid_ready > 0.0 && self.rng.f64() < self.faults.crash_mid_ready;
            let Some(node) = self.nodes.get_mut(&id) else {
                return Ok(());
            };
            let Some(raft) = node.raft.as_mut() else {
                return Ok(());
            };
            if !raft.has_ready() {
                break;
            }
            let rd = match raft.ready() {
                Ok(rd) => rd,
                Err(e) => return Err(self.fail(format!("n{id} ready: {e}"))),
            };
            if let Some(ss) = rd.soft_state {
                let term = self.raft(id).map_or(0, |r| r.term());
                self.log(|| format!("n{id} {:?} term={term} leader={:?}", ss.role, ss.leader));
            }
            // As the node's driver does: a Ready that moves the term or the vote, or installs
            // a snapshot, waits for earlier writes to be durable, is persisted inline, and
            // sends nothing before that (a node never speaks in a term it could forget).
            let node = self.nodes.get_mut(&id).expect("node exists");
            let tv = rd.hard_state.map(|hs| (hs.term, hs.vote));
            let inline = rd.snapshot.is_some() || (tv.is_some() && tv != node.term_vote);
            if tv.is_some() {
                node.term_vote = tv;
            }
            if inline {
                self.flush_unsynced(id)?;
            } else {
                for m in rd.messages.iter().cloned() {
                    self.send(m);
                }
            }
            let persists =
                rd.snapshot.is_some() || !rd.entries.is_empty() || rd.hard_state.is_some();
            if mid_crash && persists {
                self.crash(id);
                return Ok(());
            }
            // Persist: snapshot, entries, hard state, sync. Asynchronously (the sync later,
            // see `sync_unsynced`) for some Readies, and for every Ready behind one that is.
            let async_draw =
                self.faults.async_persist > 0.0 && self.rng.f64() < self.faults.async_persist;
            let node = self.nodes.get_mut(&id).expect("node exists");
            let pending = !node.unsynced.is_empty();
            // Behind an unsynced Ready, everything that persists or acknowledges waits too.
            let defer = if inline {
                false
            } else if pending {
                persists || !rd.persisted_messages.is_empty()
            } else {
                persists && async_draw
            };
            let raft = node.raft.as_mut().expect("node is up");
            let store = raft.storage_mut();
            let durable = if defer && !pending {
                store.durable_copy()
            } else {
                None
            };
            let defer = defer && (pending || durable.is_some());
            let res = (|| {
                if let Some(s) = &rd.snapshot {
                    store.sim_apply_snapshot(s.clone())?;
                }
                store.sim_append(&rd.entries)?;
                if let Some(hs) = rd.hard_state {
                    store.sim_set_hard_state(hs)?;
                }
                if defer {
                    return Ok(());
                }
                store.sim_sync()
            })();
            if let Err(e) = res {
                return Err(self.fail(format!("n{id} persist: {e}")));
            }
            if durable.is_some() {
                node.durable = durable;
            }
            if !rd.entries.is_empty() {
                self.check_log_matching(id, &rd.entries)?;
            }
            let mut rd = rd;
            if defer {
                let last = rd.entries.last().map(|e| (e.index, e.term));
                let msgs = std::mem::take(&mut rd.persisted_messages);
                rd.entries.clear();
                let node = self.nodes.get_mut(&id).expect("node exists");
                node.unsynced.push((last, msgs));
                self.log(|| format!("n{id} wrote, sync pending (last {last:?})"));
            }
            if inline {
                for m in rd.messages.iter().cloned() {
                    self.send(m);
                }
            }
            for m in rd.persisted_messages.iter().cloned() {
                self.send(m);
            }
            if let Some(s) = &rd.snapshot {
                let (a, h) = decode_sm(&s.data);
                let node = self.nodes.get_mut(&id).expect("node exists");
                node.applied = a;
                node.hash = h;
                self.log(|| format!("n{id} restored snapshot at {a}"));
                if let Some(&want) = self.applied_hash.get(&a) {
                    if want != h {
                        return Err(self.fail(format!(
                            "STATE MACHINE SAFETY: n{id} snapshot at {a} has state {h:x}, others applied {want:x}"
                        )));
                    }
                }
            }
            for e in &rd.committed_entries {
                self.apply(id, e)?;
            }
            for rs in &rd.read_states {
                self.check_read(id, *rs)?;
            }
            let node = self.nodes.get_mut(&id).expect("node exists");
            let raft = node.raft.as_mut().expect("node is up");
            if let Err(e) = raft.advance(rd) {
                return Err(self.fail(format!("n{id} advance: {e}")));
            }
        }
        self.check_node(id)
    }

    /// The sync of node `id`'s unsynced Readies completes: the core learns they are durable
    /// (`on_persisted`, oldest first) and their messages leave.
    pub fn sync_unsynced(&mut self, id: NodeId) -> Result<(), Failure> {
        if self.flush_unsynced(id)? {
            self.process(id)?;
        }
        Ok(())
    }

    /// Syncs node `id`'s unsynced Readies and releases them, without processing the Readies
    /// that may follow. Returns whether there was anything to sync.
    fn flush_unsynced(&mut self, id: NodeId) -> Result<bool, Failure> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(false);
        };
        let Some(raft) = node.raft.as_mut() else {
            return Ok(false);
        };
        if node.unsynced.is_empty() {
            return Ok(false);
        }
        if let Err(e) = raft.storage_mut().sim_sync() {
            return Err(self.fail(format!("n{id} sync: {e}")));
        }
        node.durable = None;
        let batches = std::mem::take(&mut node.unsynced);
        self.log(|| format!("n{id} synced {} Readies", batches.len()));
        for (last, msgs) in batches {
            if let Some((index, term)) = last {
                let r = self.raft_mut(id).expect("node is up");
                if let Err(e) = r.on_persisted(index, term) {
                    return Err(self.fail(format!("n{id} on_persisted: {e}")));
                }
            }
            for m in msgs {
                self.send(m);
            }
        }
        Ok(true)
    }

    fn apply(&mut self, id: NodeId, e: &Entry) -> Result<(), Failure> {
        let node = self.nodes.get_mut(&id).expect("node exists");
        if e.index != node.applied + 1 {
            let applied = node.applied;
            return Err(self.fail(format!(
                "n{id} applied {} right after {applied}: a gap or a repeat",
                e.index
            )));
        }
        node.applied = e.index;
        node.hash = mix(node.hash, mix(e.term, data_hash(e)));
        let h = node.hash;
        match self.applied_hash.get(&e.index) {
            Some(&want) if want != h => Err(self.fail(format!(
                "STATE MACHINE SAFETY: n{id} applied a different entry at index {} (term {})",
                e.index, e.term
            ))),
            Some(_) => Ok(()),
            None => {
                self.applied_hash.insert(e.index, h);
                if e.kind == EntryKind::ConfChange {
                    if let Some(c) = ConfState::decode(&e.data) {
                        if c.voters != self.committed_voters {
                            self.voter_changes += 1;
                            self.committed_voters = c.voters;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn check_read(&mut self, id: NodeId, rs: ReadState) -> Result<(), Failure> {
        let Some(floor) = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.reads.remove(&rs.ctx))
        else {
            return Ok(());
        };
        self.read_results.insert(rs.ctx, rs.index);
        if let Some(index) = rs.index {
            self.reads_served += 1;
            if index < floor {
                return Err(self.fail(format!(
                    "LINEARIZABILITY: n{id} read ctx={} got index {index}, but commit {floor} was reached before the read",
                    rs.ctx
                )));
            }
        }
        Ok(())
    }

    fn check_log_matching(&mut self, id: NodeId, ents: &[Entry]) -> Result<(), Failure> {
        let Some(r) = self.raft(id) else {
            return Ok(());
        };
        let mut facts = Vec::with_capacity(ents.len());
        for e in ents {
            let prev_term = match r.log().storage.term(e.index - 1) {
                Ok(t) => t,
                Err(_) => continue,
            };
            facts.push(((e.index, e.term), (data_hash(e), prev_term)));
        }
        for (k, v) in facts {
            match self.entries.get(&k) {
                Some(&old) if old != v => {
                    return Err(self.fail(format!(
                    "LOG MATCHING: n{id} holds a different entry or history at index {} term {}",
                    k.0, k.1
                )))
                }
                Some(_) => {}
                None => {
                    self.entries.insert(k, v);
                }
            }
        }
        Ok(())
    }

    /// Election Safety, Leader Completeness and commit agreement for one node.
    fn check_node(&mut self, id: NodeId) -> Result<(), Failure> {
        let Some(r) = self.nodes.get(&id).and_then(|n| n.raft.as_ref()) else {
            return Ok(());
        };
        let term = r.term();
        let is_leader = r.role() == Role::Leader;
        let commit = r.commit_index();
        let seen = self.nodes[&id].seen_commit;
        let mut newly = Vec::new();
        if commit > seen {
            for i in seen + 1..=commit {
                if let Ok(t) = r.log().term(i) {
                    newly.push((i, t));
                }
            }
        }
        let mut became_leader = false;
        if is_leader {
            match self.leaders.get(&term) {
                Some(&l) if l != id => {
                    return Err(self.fail(format!(
                        "ELECTION SAFETY: n{id} and n{l} are both leaders of term {term}"
                    )))
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, id);
                    became_leader = true;
                }
            }
            if commit > self.max_leader_commit {
                self.max_leader_commit = commit;
            }
        }
        if became_leader {
            let first = r.log().first_index().unwrap_or(1);
            for (&i, &t) in self.committed.range(first..) {
                if r.log().term_opt(i) != Some(t) {
                    return Err(self.fail(format!(
                        "LEADER COMPLETENESS: n{id} leads term {term} without committed entry {i} (term {t})"
                    )));
                }
            }
        }
        for (i, t) in newly {
            match self.committed.get(&i) {
                Some(&ct) if ct != t => {
                    return Err(self.fail(format!(
                        "COMMIT SAFETY: n{id} committed index {i} with term {t}, another node committed term {ct}"
                    )))
                }
                Some(_) => {}
                None => {
                    self.committed.insert(i, t);
                }
            }
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            n.seen_commit = n.seen_commit.max(commit);
        }
        Ok(())
    }

    // ----- network -------------------------------------------------------------------------

    fn send(&mut self, m: Message) {
        // A snapshot's loss is decided when it is due (see `deliver`): like the real
        // transport, the sender then learns how the transfer ended.
        let snapshot = matches!(m.body, MessageBody::InstallSnapshot { .. });
        if snapshot {
            self.snapshots_sent += 1;
        }
        if !snapshot && self.faults.loss > 0.0 && self.rng.f64() < self.faults.loss {
            return;
        }
        let copies = if self.faults.dup > 0.0 && self.rng.f64() < self.faults.dup {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.u64(0..self.faults.max_delay.max(1));
            let id = self.next_msg;
            self.next_msg += 1;
            self.seq += 1;
            self.queue.push(Reverse((self.time + delay, self.seq, id)));
            self.in_flight.insert(id, m.clone());
        }
    }

    fn deliverable(&self, m: &Message) -> bool {
        !self.blocked.contains(&(m.from, m.to)) && self.drop_filter.as_ref().is_none_or(|f| !f(m))
    }

    fn deliver(&mut self, m: Message) -> Result<(), Failure> {
        if matches!(m.body, MessageBody::InstallSnapshot { .. }) {
            if self.hold_snapshots {
                self.held_snapshots.push(m);
                return Ok(());
            }
            let lost = self.faults.loss > 0.0 && self.rng.f64() < self.faults.loss;
            let delivered = !lost && self.deliverable(&m) && self.is_up(m.to);
            self.report_snapshot(m.from, m.to, delivered)?;
            if !delivered {
                return Ok(());
            }
        }
        if !self.deliverable(&m) || !self.is_up(m.to) {
            return Ok(());
        }
        // Raft's traffic is bounded (heartbeats plus a bounded window of appends per follower),
        // so a pile-up of messages is a bug, and catching it keeps a broken run from eating the
        // machine.
        if self.in_flight.len() > MAX_IN_FLIGHT {
            return Err(self.fail(format!(
                "MESSAGE STORM: {} messages in flight (bound {MAX_IN_FLIGHT})",
                self.in_flight.len()
            )));
        }
        let to = m.to;
        if self.trace.is_some() {
            let line = describe(&m);
            self.log(|| line);
        }
        let r = self.raft_mut(to).expect("checked up");
        if let Err(e) = r.step(m) {
            return Err(self.fail(format!("n{to} step: {e}")));
        }
        self.process(to)
    }

    /// Delivers every message due by `until`.
    pub fn deliver_until(&mut self, until: u64) -> Result<(), Failure> {
        while let Some(&Reverse((t, _, id))) = self.queue.peek() {
            if t > until {
                break;
            }
            self.queue.pop();
            self.time = self.time.max(t);
            if let Some(m) = self.in_flight.remove(&id) {
                self.deliver(m)?;
            }
        }
        self.time = self.time.max(until);
        Ok(())
    }

    /// Delivers messages until the network is quiet (scenario tests; no ticks happen).
    pub fn stabilize(&mut self) -> Result<(), Failure> {
        for _ in 0..100_000 {
            let Some(&Reverse((t, _, _))) = self.queue.peek() else {
                return Ok(());
            };
            self.deliver_until(t)?;
        }
        Err(self.fail("network never went quiet".into()))
    }

    /// Ends the transfers parked by `hold_snapshots` (which is turned off): delivered and
    /// reported delivered when `deliver`, else reported lost.
    pub fn release_snapshots(&mut self, deliver: bool) -> Result<(), Failure> {
        self.hold_snapshots = false;
        for m in std::mem::take(&mut self.held_snapshots) {
            if deliver {
                self.deliver(m)?;
            } else {
                self.report_snapshot(m.from, m.to, false)?;
            }
        }
        Ok(())
    }

    /// The transport's report to the leader `from` on its snapshot transfer to `to`.
    fn report_snapshot(&mut self, from: NodeId, to: NodeId, ok: bool) -> Result<(), Failure> {
        if !self.is_up(from) {
            return Ok(());
        }
        self.log(|| format!("n{from} snapshot to n{to} reported ok={ok}"));
        if let Some(r) = self.raft_mut(from) {
            r.report_snapshot(to, ok);
        }
        self.process(from)
    }

    /// Drops every message in flight. Snapshot transfers among them are reported failed to
    /// their senders, as a transport does when its connection breaks.
    pub fn drop_in_flight(&mut self) -> Result<(), Failure> {
        self.queue.clear();
        let dropped: Vec<Message> = std::mem::take(&mut self.in_flight).into_values().collect();
        let mut reports: Vec<(NodeId, NodeId)> = dropped
            .iter()
            .filter(|m| matches!(m.body, MessageBody::InstallSnapshot { .. }))
            .map(|m| (m.from, m.to))
            .collect();
        reports.sort_unstable();
        for (from, to) in reports {
            self.report_snapshot(from, to, false)?;
        }
        Ok(())
    }

    /// Runs `ticks` ticks of simulated time: each node ticks every [`TICK`] units (with its own
    /// phase), messages are delivered when due.
    pub fn run_ticks(
        &mut self,
        ticks: u64,
        mut each_tick: impl FnMut(&mut Self) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        for _ in 0..ticks {
            let start = self.time;
            for (k, id) in self.ids.clone().into_iter().enumerate() {
                let phase = (k as u64 * 3) % TICK;
                self.deliver_until(start + phase)?;
                self.tick(id)?;
                // A pending sync completes half the time each tick (at once without the
                // fault, as when the liveness check has turned faults off).
                let pending = self.nodes.get(&id).is_some_and(|n| !n.unsynced.is_empty());
                if pending && (self.faults.async_persist == 0.0 || self.rng.bool()) {
                    self.sync_unsynced(id)?;
                }
            }
            each_tick(self)?;
            self.deliver_until(start + TICK)?;
        }
        Ok(())
    }

    /// Blocks all traffic between the two groups, both ways.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
        self.log(|| format!("PARTITION {a:?} | {b:?}"));
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
        self.log(|| "HEAL".to_string());
    }

    // ----- random fault injection ----------------------------------------------------------

    /// One tick's worth of random activity: faults, proposals, reads, compactions.
    pub fn random_step(&mut self) -> Result<(), Failure> {
        let f = self.faults.clone();
        let ids = self.ids.clone();
        let n = ids.len();
        // Crashes and restarts.
        if f.crash > 0.0 && self.rng.f64() < f.crash {
            let id = ids[self.rng.usize(0..n)];
            self.crash(id);
        }
        if self.rng.f64() < f.restart {
            let down: Vec<NodeId> = ids.iter().copied().filter(|&i| !self.is_up(i)).collect();
            if !down.is_empty() {
                let id = down[self.rng.usize(0..down.len())];
                self.restart(id)?;
            }
        }
        // Partitions: symmetric cut, one-way cut, or heal.
        if f.partition > 0.0 && self.rng.f64() < f.partition {
            self.blocked.clear();
            match self.rng.u8(0..3) {
                0 => self.log(|| "HEAL".into()),
                1 => {
                    let mut a = Vec::new();
                    let mut b = Vec::new();
                    for &id in &ids {
                        if self.rng.bool() {
                            a.push(id)
                        } else {
                            b.push(id)
                        }
                    }
                    self.partition(&a, &b);
                }
                _ => {
                    let from = ids[self.rng.usize(0..n)];
                    let to = ids[self.rng.usize(0..n)];
                    if from != to {
                        self.blocked.insert((from, to));
                        self.log(|| format!("ONE-WAY CUT n{from} -> n{to}"));
                    }
                }
            }
        }
        // Client traffic.
        if self.rng.u8(0..4) == 0 {
            let target = match self.leader() {
                Some(l) if self.rng.u8(0..4) != 0 => l,
                _ => ids[self.rng.usize(0..n)],
            };
            let v = self.rng.u64(..);
            self.propose(target, &v.to_le_bytes());
        }
        if self.rng.u8(0..8) == 0 {
            let id = ids[self.rng.usize(0..n)];
            self.read(id)?;
        }
        // Membership changes, proposed at the leader, one at a time (the core refuses a second).
        if f.conf_change > 0.0 && self.rng.f64() < f.conf_change {
            self.random_conf_change()?;
        }
        // Leadership transfers ride along with membership changes (same seeds), so the seeds
        // without membership changes run exactly as before.
        if f.conf_change > 0.0 && self.rng.f64() < f.conf_change / 2.0 {
            self.random_transfer()?;
        }
        // Compaction at the applied index.
        if f.compact > 0.0 && self.rng.f64() < f.compact {
            let id = ids[self.rng.usize(0..n)];
            self.compact(id)?;
        }
        Ok(())
    }

    /// Proposes a random single-node membership change at the leader: a non-member joins as a
    /// learner, a learner is promoted or removed, a voter (the leader included) is demoted or
    /// removed (never the last). The core refuses what it must (a change in flight, a leader
    /// that has not committed in its term); the trace shows each answer.
    pub fn random_conf_change(&mut self) -> Result<(), Failure> {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let id = self.ids[self.rng.usize(0..self.ids.len())];
        let choice = self.rng.bool();
        let Some(r) = self.raft_mut(l) else {
            return Ok(());
        };
        let mut conf = r.conf().clone();
        let what = if conf.voters.contains(&id) {
            if conf.voters.len() == 1 {
                return Ok(());
            }
            conf.voters.remove(&id);
            if choice {
                conf.learners.insert(id);
                "demote"
            } else {
                "remove voter"
            }
        } else if conf.learners.contains(&id) {
            conf.learners.remove(&id);
            if choice {
                conf.voters.insert(id);
                "promote"
            } else {
                "remove learner"
            }
        } else {
            conf.learners.insert(id);
            "add learner"
        };
        let res = r.propose_conf_change(conf.clone());
        self.log(|| format!("CONF CHANGE at n{l}: {what} n{id} -> {conf:?}: {res:?}"));
        self.process(l)
    }

    /// Asks the leader to hand leadership to a random node (TimeoutNow). The core refuses a
    /// non-voter; a transfer that does not complete within an election timeout is abandoned.
    pub fn random_transfer(&mut self) -> Result<(), Failure> {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let to = self.ids[self.rng.usize(0..self.ids.len())];
        let Some(r) = self.raft_mut(l) else {
            return Ok(());
        };
        let res = r.transfer_leader(to);
        self.log(|| format!("TRANSFER at n{l} to n{to}: {res:?}"));
        self.process(l)
    }

    /// Members (voters and learners) in the current leader's configuration, or everyone.
    pub fn members(&self) -> Vec<NodeId> {
        match self.leader().and_then(|l| self.raft(l)) {
            Some(r) => r
                .conf()
                .voters
                .iter()
                .chain(r.conf().learners.iter())
                .copied()
                .collect(),
            None => self.ids.clone(),
        }
    }

    pub fn compact(&mut self, id: NodeId) -> Result<(), Failure> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if !node.unsynced.is_empty() {
            // The applied state may be ahead of the durable log; the node's driver compacts
            // only from its own durable state too.
            return Ok(());
        }
        let (applied, hash) = (node.applied, node.hash);
        let Some(r) = node.raft.as_mut() else {
            return Ok(());
        };
        if applied == 0 || r.applied_index() < applied {
            return Ok(());
        }
        let Some(conf) = r.conf_at(applied).cloned() else {
            return Err(self.fail(format!("n{id} has no membership as of {applied}")));
        };
        if let Err(e) = r
            .storage_mut()
            .sim_compact(applied, conf, encode_sm(applied, hash))
        {
            return Err(self.fail(format!("n{id} compact: {e}")));
        }
        self.log(|| format!("COMPACT n{id} at {applied}"));
        Ok(())
    }

    /// Heals everything and checks that the cluster makes progress: a leader is elected and a
    /// new proposal is applied by every node, within a bounded number of ticks.
    pub fn check_liveness(&mut self) -> Result<u64, Failure> {
        self.faults = Faults::none();
        self.blocked.clear();
        self.drop_filter = None;
        self.log(|| "LIVENESS: heal all, restart all".into());
        self.start_all()?;
        let bound = self.election_tick * 30;
        let mut target: Option<(NodeId, u64, u64)> = None;
        for t in 0..bound {
            self.run_ticks(1, |_| Ok(()))?;
            if target.is_none() {
                if let Some(l) = self.leader() {
                    let term = self.raft(l).map_or(0, |r| r.term());
                    if let Some(idx) = self.propose(l, b"liveness") {
                        target = Some((l, idx, term));
                    }
                }
            }
            if let Some((_, idx, term)) = target {
                // If leadership changed before commit, the entry may have been dropped: retry.
                // Nodes removed from the cluster no longer receive the log.
                let ok = self.members().iter().all(|&id| self.applied(id) >= idx);
                if ok {
                    let entry_term = self.committed.get(&idx).copied();
                    if entry_term == Some(term) {
                        return Ok(t);
                    }
                    target = None;
                }
                if self.leader().and_then(|l| self.raft(l)).map(|r| r.term()) != Some(term) {
                    target = None;
                }
            }
        }
        Err(self.fail(format!(
            "LIVENESS: no proposal committed on all nodes within {bound} ticks after healing (leader: {:?})",
            self.leader()
        )))
    }

    pub fn take_trace(&mut self) -> Vec<String> {
        self.trace.take().unwrap_or_default()
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        for &id in &self.ids {
            match self.raft(id) {
                Some(r) => {
                    let _ = writeln!(
                        s,
                        "  n{id}: {:?} term={} commit={} applied={} last={}",
                        r.role(),
                        r.term(),
                        r.commit_index(),
                        self.applied(id),
                        r.log().last_index().unwrap_or(0)
                    );
                    let _ = writeln!(s, "      conf={:?}", r.conf());
                    for (p, pr) in r.progress() {
                        let _ = writeln!(
                            s,
                            "      progress n{p}: {:?} match={} next={} probe_sent={} inflight={}",
                            pr.state,
                            pr.matched,
                            pr.next,
                            pr.probe_sent,
                            pr.inflight.len()
                        );
                    }
                }
                None => {
                    let _ = writeln!(s, "  n{id}: down");
                }
            }
        }
        s
    }
}

/// One line per message, for traces.
pub fn describe(m: &Message) -> String {
    let detail = match &m.body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            ..
        } => format!("last=({last_log_index},{last_log_term})"),
        MessageBody::RequestVoteResponse { granted, .. } => format!("granted={granted}"),
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            commit,
        } => format!(
            "prev=({prev_log_index},{prev_log_term}) n={} commit={commit}",
            entries.len()
        ),
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            reject_index,
            conflict_term,
            conflict_index,
            ..
        } => {
            if *success {
                format!("ok match={match_index}")
            } else {
                format!("reject at {reject_index} hint=({conflict_term},{conflict_index})")
            }
        }
        MessageBody::Heartbeat { commit, read_round } => {
            format!("commit={commit} round={read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => format!("round={read_round}"),
        MessageBody::InstallSnapshot { snapshot } => {
            format!("snap=({},{})", snapshot.meta.index, snapshot.meta.term)
        }
        MessageBody::ReadIndex { ctx } => format!("ctx={ctx}"),
        MessageBody::ReadIndexResponse { ctx, index } => format!("ctx={ctx} index={index:?}"),
        MessageBody::TimeoutNow => String::new(),
    };
    format!(
        "n{} -> n{} {} term={} {detail}",
        m.from,
        m.to,
        m.body.name(),
        m.term
    )
}

/// Trims a trace to what matters: fault and role events, plus the last `tail` lines.
pub fn minimal_trace(trace: &[String], tail: usize) -> Vec<String> {
    let cut = trace.len().saturating_sub(tail);
    let mut out: Vec<String> = trace[..cut]
        .iter()
        .filter(|l| {
            l.contains("CRASH")
                || l.contains("RESTART")
                || l.contains("PARTITION")
                || l.contains("HEAL")
                || l.contains("CUT")
                || l.contains("Leader")
                || l.contains("COMPACT")
                || l.contains("LIVENESS")
        })
        .cloned()
        .collect();
    if cut > 0 {
        out.push(format!("... ({} more events elided) ...", cut));
    }
    out.extend_from_slice(&trace[cut..]);
    let _ = VecDeque::<u8>::new();
    out
}
