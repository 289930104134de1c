//! The driver: one tokio task that owns the consensus core and does everything the core leaves
//! to the application, in the order the Ready contract demands.
//!
//! Each iteration waits for one event (a tick, peer messages, client requests, shutdown), then
//! drains everything else already queued of the same kind (so a burst of proposals becomes one
//! append and one fsync: group commit), and then handles every Ready:
//! send `messages` (the leader replicates while it writes its own disk), persist snapshot,
//! entries and hard state, ONE sync, send `persisted_messages`, apply committed entries to the
//! chat state machine, answer waiters, `advance`. Compaction follows when enough entries were
//! applied since the last snapshot: the driver freezes a view of the state (a few `Arc`
//! clones), a blocking thread encodes it and writes the snapshot file, and the driver only
//! renames that file into place and drops the log prefix when the thread is done.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::handle::{Lifecycle, Request, Shared};
use super::{
    open_storage, NodeConfig, NodeError, NodeHandle, NodeStatus, NodeStorage, PeerStatus,
    EVENTS_CAPACITY, INBOUND_QUEUE, REQUEST_QUEUE,
};
use crate::chat::disk::ChatDir;
use crate::chat::{Applied, ChatState};
use crate::raft::{
    ConfState, Config, Entry, EntryKind, LogStore, Message, NodeId, Raft, ReadState, Ready, Role,
};
use crate::transport::{PeerSecurity, Transport};

use self::compaction::{snapshot_stretch, Compacted, Compacting};
use self::conf::ConfWaiter;
use self::observe::{answer, Observed};
use self::os::{lower_thread_priority, release_free_memory, remove_dir_in_background};
use self::persist::Persister;

mod backup;
mod compaction;
mod conf;
mod observe;
mod os;
mod persist;

/// Bound on proposals appended but not yet answered. The core's uncommitted-bytes cap bounds
/// their bytes; this bounds their count (and the waiters' memory), whatever their size.
const MAX_PENDING_PROPOSALS: usize = 65_536;

/// Most queued items handled per wake-up before the Ready is processed, so one flood cannot
/// starve ticks.
const DRAIN_MAX: usize = 4096;

type ProposeReply = oneshot::Sender<Result<Applied, NodeError>>;
/// What starting a node gives back: the API's handle, the sender the `Raft` gRPC service feeds,
/// and the driver task (which ends on shutdown or on a fatal error).
pub type Started = (
    NodeHandle,
    mpsc::Sender<Message>,
    JoinHandle<Result<(), NodeError>>,
);
type ReadReply = oneshot::Sender<Result<u64, NodeError>>;

/// The task that owns `Raft<S>`.
pub struct Driver<S: LogStore + Send + 'static> {
    cfg: Arc<NodeConfig>,
    raft: Raft<S>,
    shared: Arc<Shared>,
    life: Lifecycle,
    transport: Transport,
    /// The log's fsync thread and what waits for it.
    persist: Persister,
    inbound: mpsc::Receiver<Message>,
    requests: mpsc::Receiver<Request>,
    /// Proposals waiting for their entry: index -> (term, reply). Invariant: indexes above the
    /// applied index; all belong to this node's current leadership.
    proposals: BTreeMap<u64, (u64, ProposeReply)>,
    /// ReadIndex requests waiting for their ReadState, by ctx.
    reads: HashMap<u64, ReadReply>,
    /// Membership changes waiting for their entry to commit, by index. Invariant: all were
    /// proposed by this node in its current leadership (failed when it ends).
    conf_waiters: BTreeMap<u64, ConfWaiter>,
    /// The membership the transport and the status were last synced to; compared with
    /// `raft.conf()` after every Ready, so the node follows whichever moment the core makes a
    /// configuration take effect (on append).
    /// `None` until the first sync.
    known_conf: Option<ConfState>,
    /// Whether the membership change in `known_conf` was still uncommitted at the last sync.
    known_pending: bool,
    /// This node has been part of the membership it knows (so it can tell when it is removed).
    was_member: bool,
    /// This node was a member and is no longer in the membership.
    removed: bool,
    next_ctx: u64,
    /// Index of the latest snapshot in storage.
    snapshot_index: u64,
    /// Size of the latest snapshot's state-machine image, for [`super::snapshot_due`].
    snapshot_bytes: u64,
    /// Command bytes applied since the latest snapshot.
    applied_bytes_since_snapshot: u64,
    /// At most one background snapshot at a time.
    compacting: Option<Compacting>,
    /// This node's snapshot interval, as a multiple of the configured one: drawn from
    /// [1, 1.25) after each snapshot, so the nodes of a cluster, which apply the same entries,
    /// do not all write their snapshot at the same moment (a commit needs a majority's fsync).
    snapshot_stretch: f64,
    /// Where background snapshots report; capacity 1, since only one runs.
    compacted_tx: mpsc::Sender<Result<Compacted, String>>,
    compacted_rx: mpsc::Receiver<Result<Compacted, String>>,
    was_leader: bool,
    /// What the metrics remember between iterations.
    observed: Observed<S>,
}

impl Driver<NodeStorage> {
    /// Opens storage, restores the state machine from the latest snapshot, starts the transport
    /// and spawns the driver task. Returns the handle for the API, the sender the `Raft` gRPC
    /// service feeds, and the task (which ends on shutdown or on a fatal error).
    pub fn start(mut cfg: NodeConfig) -> Result<Started, NodeError> {
        super::check_identity(&cfg.data_dir, cfg.id, &cfg.cluster_id)?;
        cfg.cluster_secrets = super::settle_secrets(&cfg.data_dir, &cfg.cluster_secrets)?;
        // A joining node starts with no membership at all (never a voter, so it never campaigns)
        // and learns it from the leader.
        let storage = open_storage(&cfg.data_dir.join("raft"), &cfg.bootstrap_conf())?;
        observe::observe_fsyncs(&storage, &cfg.metrics);
        let chat = Some(ChatDir::new(cfg.data_dir.join("chat"), true));
        Self::launch(cfg, storage, Some(observe::disk_probe), chat)
    }
}

impl<S: LogStore + Send + 'static> Driver<S> {
    /// Like [`Driver::start`], with an already opened storage and the chat state in memory.
    pub fn start_with(cfg: NodeConfig, storage: S) -> Result<Started, NodeError> {
        Self::launch(cfg, storage, None, None)
    }

    fn launch(
        cfg: NodeConfig,
        storage: S,
        disk: Option<observe::DiskProbe<S>>,
        chat: Option<ChatDir>,
    ) -> Result<Started, NodeError> {
        // An explicit member list that leaves this node out is a mistake; no list at all is a
        // node that joins, or restarts from storage that knows the membership.
        if !cfg.peers.is_empty() && !cfg.peers.contains_key(&cfg.id) {
            return Err(NodeError::Config(format!(
                "node {} is not among the members {:?}",
                cfg.id,
                cfg.peers.keys().collect::<Vec<_>>()
            )));
        }
        let snap = storage.snapshot()?;
        // O(rooms + chunk index): a manifest snapshot reads no history.
        let mut sm = match &chat {
            Some(dir) => ChatState::open(dir.clone(), cfg.dedupe_capacity, cfg.max_text_bytes),
            None => ChatState::new(cfg.dedupe_capacity, cfg.max_text_bytes),
        };
        sm.restore(&snap.data)?;
        sm.remove_unused_files()?;
        observe::state_gauges(&cfg.metrics, &sm);
        let mut rc = Config::new(cfg.id);
        rc.election_tick = cfg.election_ticks.max(2);
        rc.heartbeat_tick = 1;
        rc.applied = snap.meta.index;
        rc.seed = cfg.id ^ fastrand::u64(..);
        let raft = Raft::new(rc, storage)?;
        let (snap_index, snap_bytes) = (snap.meta.index, snap.data.len() as u64);
        drop(snap);
        release_free_memory();

        let life = Lifecycle::new();
        let transport = Transport::start(
            cfg.id,
            &cfg.cluster_id,
            PeerSecurity {
                auth: cfg.peer_auth()?,
                tls: cfg
                    .peer_tls
                    .as_ref()
                    .map(|t| t.client())
                    .transpose()
                    .map_err(|e| NodeError::Config(format!("peer TLS: {e}")))?,
            },
            &BTreeMap::new(),
            &cfg.routes,
            life.stop.child_token(),
            life.tasks.clone(),
        )
        .map_err(|e| NodeError::Config(e.to_string()))?
        .with_metrics(cfg.metrics.clone())
        .with_chat_dir(chat.as_ref().map(|d| d.root().to_path_buf()));
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        let shared = Arc::new(Shared {
            sm: RwLock::new(sm),
            applied: watch::channel(snap_index).0,
            status: watch::channel(NodeStatus::initial(
                cfg.id,
                cfg.advertised_addr(),
                cfg.cluster_id.clone(),
            ))
            .0,
            events,
        });
        let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
        let (req_tx, req_rx) = mpsc::channel(REQUEST_QUEUE);
        let cfg = Arc::new(cfg);
        let (compacted_tx, compacted_rx) = mpsc::channel(1);
        let driver = Driver {
            cfg: cfg.clone(),
            raft,
            shared: shared.clone(),
            life: life.clone(),
            transport,
            persist: Persister::start(cfg.id)
                .map_err(|e| NodeError::Internal(format!("sync thread: {e}")))?,
            inbound: in_rx,
            requests: req_rx,
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            conf_waiters: BTreeMap::new(),
            known_conf: None,
            known_pending: false,
            was_member: false,
            removed: false,
            next_ctx: 1,
            snapshot_index: snap_index,
            snapshot_bytes: snap_bytes,
            applied_bytes_since_snapshot: 0,
            compacting: None,
            snapshot_stretch: snapshot_stretch(),
            compacted_tx,
            compacted_rx,
            was_leader: false,
            observed: Observed::new(disk),
        };
        let mut driver = driver;
        driver.sync_membership();
        // The API reads the membership from storage in the status before the first tick (to
        // know whether `--join` has anything to do).
        driver.publish_status();
        let task = life.tasks.spawn(driver.run());
        let handle = NodeHandle {
            requests: req_tx,
            shared,
            config: cfg,
            life,
        };
        Ok((handle, in_tx, task))
    }

    async fn run(mut self) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(self.cfg.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = self.life.stop.clone();
        let reports = self.transport.snapshot_reports();
        let mut ticks: u64 = 0;
        tracing::info!(id = self.cfg.id, addr = %self.cfg.addr, "node started");
        let result = loop {
            let step = tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = ticker.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(20) {
                        self.reap_abandoned();
                    }
                    self.raft.tick().map_err(NodeError::from)
                }
                Some(m) = self.inbound.recv() => self.on_messages(m),
                Some(r) = self.requests.recv() => self.on_requests(r),
                _ = reports.reported() => {
                    for (to, ok) in reports.take() {
                        self.raft.report_snapshot(to, ok);
                    }
                    Ok(())
                }
                _ = self.persist.woken() => self.on_synced(),
                Some(done) = self.compacted_rx.recv() => {
                    self.finish_compaction(done);
                    Ok(())
                }
            };
            if let Err(e) = step.and_then(|()| self.process_ready()) {
                break Err(e);
            }
            self.sync_membership();
            self.settle_conf_waiters();
            if let Err(e) = self.maybe_compact(false) {
                tracing::warn!(id = self.cfg.id, error = %e, "automatic compaction failed");
            }
            self.publish_status();
            self.record_metrics();
        };
        // Make whatever was written durable before exiting, and tell every waiter.
        if let Err(e) = self.raft.storage_mut().sync() {
            tracing::error!(error = %e, "final sync failed");
        }
        self.fail_all(|| NodeError::Stopped);
        self.life.draining.cancel();
        self.life.stop.cancel();
        match &result {
            Ok(()) => tracing::info!(id = self.cfg.id, "node stopped"),
            Err(e) => {
                tracing::error!(id = self.cfg.id, error = %e, "node stopped on a fatal error")
            }
        }
        result
    }

    fn on_messages(&mut self, first: Message) -> Result<(), NodeError> {
        self.raft.step(first)?;
        let mut n = 1;
        for _ in 0..DRAIN_MAX {
            match self.inbound.try_recv() {
                Ok(m) => self.raft.step(m)?,
                Err(_) => break,
            }
            n += 1;
        }
        self.cfg.metrics.peer_messages_received.inc_by(n);
        Ok(())
    }

    fn on_requests(&mut self, first: Request) -> Result<(), NodeError> {
        self.on_request(first);
        for _ in 0..DRAIN_MAX {
            match self.requests.try_recv() {
                Ok(r) => self.on_request(r),
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn leader_addr(&self, leader: Option<NodeId>) -> Option<(NodeId, String)> {
        leader.map(|id| (id, self.addr_of(id)))
    }

    /// A member's peer address: the replicated one (or its default), else the static
    /// configuration's.
    pub(super) fn peer_addr_of(&self, id: NodeId) -> Option<String> {
        self.raft
            .conf()
            .peer_addr(id)
            .or_else(|| self.cfg.peer_addr_of(id))
    }

    /// A member's address for clients: the replicated one, else the static configuration's.
    fn addr_of(&self, id: NodeId) -> String {
        self.raft
            .conf()
            .addrs
            .get(&id)
            .map(String::as_str)
            .or_else(|| self.cfg.addr_of(id))
            .unwrap_or_default()
            .to_string()
    }

    fn on_request(&mut self, r: Request) {
        match r {
            Request::Propose { reply, .. } if self.proposals.len() >= MAX_PENDING_PROPOSALS => {
                let e = format!("{MAX_PENDING_PROPOSALS} proposals already wait for commit");
                answer(&self.cfg.metrics, reply, Err(NodeError::Overloaded(e)));
            }
            Request::Propose { data, reply } => match self.raft.propose(data) {
                Ok(index) => {
                    let term = self.raft.term();
                    self.proposals.insert(index, (term, reply));
                }
                Err(e) => answer(&self.cfg.metrics, reply, Err(self.propose_error(e))),
            },
            Request::ReadIndex { reply } => {
                let ctx = self.next_ctx;
                self.next_ctx += 1;
                self.reads.insert(ctx, reply);
                self.raft.read_index(ctx);
            }
            Request::Snapshot { reply } => {
                let _ = reply.send(self.maybe_compact(true));
            }
            Request::Backup { reply } => {
                let _ = reply.send(self.backup_snapshot());
            }
            Request::ChangeConf { op, reply } => self.change_conf(op, reply),
            Request::TransferLeader { target, reply } => {
                let _ = reply.send(self.transfer_leader(target));
            }
        }
    }

    /// Drops waiters whose client went away (a forwarded read whose leader died never gets an
    /// answer; its caller times out and this reclaims the slot).
    fn reap_abandoned(&mut self) {
        self.reads.retain(|_, r| !r.is_closed());
    }

    fn fail_all(&mut self, err: impl Fn() -> NodeError) {
        for (_, (_, reply)) in std::mem::take(&mut self.proposals) {
            answer(&self.cfg.metrics, reply, Err(err()));
        }
        for (_, reply) in std::mem::take(&mut self.reads) {
            let _ = reply.send(Err(err()));
        }
        for (_, w) in std::mem::take(&mut self.conf_waiters) {
            let _ = w.reply.send(Err(match err() {
                NodeError::NotLeader { .. } => NodeError::OutcomeUnknown(
                    "leadership was lost before the membership change committed; check Status \
                     and retry"
                        .into(),
                ),
                other => other,
            }));
        }
    }

    fn process_ready(&mut self) -> Result<(), NodeError> {
        while self.raft.has_ready() {
            let rd = self.raft.ready()?;
            self.handle_ready(rd)?;
        }
        Ok(())
    }

    fn handle_ready(&mut self, mut rd: Ready) -> Result<(), NodeError> {
        // A change that committed in the step that also cost us leadership is still a success.
        self.settle_conf_waiters();
        // New members get a link before this Ready's messages go out.
        self.sync_membership();
        if let Some(ss) = rd.soft_state {
            tracing::info!(
                id = self.cfg.id,
                term = self.raft.term(),
                role = ?ss.role,
                leader = ?ss.leader,
                "role changed"
            );
            self.observed.saw_leader(&self.cfg.metrics, ss.leader);
            let leader_now = ss.role == Role::Leader;
            if self.was_leader && !leader_now {
                // Our proposals may or may not commit under the next leader: the outcome is
                // unknown, so the client must retry (idempotently, with its request id).
                let leader = self.leader_addr(ss.leader);
                self.fail_all(|| NodeError::NotLeader {
                    leader: leader.clone(),
                });
            } else if !leader_now && !self.reads.is_empty() {
                // A forwarded read may have died with the old leader.
                let leader = self.leader_addr(ss.leader);
                for (_, reply) in std::mem::take(&mut self.reads) {
                    let _ = reply.send(Err(NodeError::NotLeader {
                        leader: leader.clone(),
                    }));
                }
            }
            self.was_leader = leader_now;
        }
        // 1-3. Send, persist, and queue what must wait for durability (see `persist`).
        let durable = self.persist_ready(&mut rd)?;
        // 4. Apply (committed entries are on a majority already; see `persist`).
        if let Some(s) = &rd.snapshot {
            self.restore_snapshot(s.meta.index, &s.data)?;
        }
        self.apply_entries(&rd.committed_entries)?;
        for rs in std::mem::take(&mut rd.read_states) {
            self.answer_read(rs);
        }
        // 5. Hand it back.
        self.raft.advance(rd)?;
        self.release(durable)
    }

    fn restore_snapshot(&mut self, index: u64, data: &bytes::Bytes) -> Result<(), NodeError> {
        let retired = {
            let mut sm = self
                .shared
                .sm
                .write()
                .map_err(|_| NodeError::Internal("state machine lock poisoned".into()))?;
            let before = sm.gen_dir();
            sm.restore(data)?;
            observe::state_gauges(&self.cfg.metrics, &sm);
            before.filter(|b| sm.gen_dir().as_ref() != Some(b))
        };
        // The snapshot naming the new generation is durable (persisted above).
        if let Some(old) = retired {
            remove_dir_in_background(old);
        }
        observe::snapshot_taken(&self.cfg.metrics, "leader", data.len(), None);
        self.snapshot_index = index;
        self.snapshot_bytes = data.len() as u64;
        self.applied_bytes_since_snapshot = 0;
        self.shared.applied.send_replace(index);
        tracing::info!(id = self.cfg.id, index, "restored snapshot from leader");
        // Proposals below the snapshot can no longer be matched to their entries.
        let stale: Vec<u64> = self.proposals.range(..=index).map(|(i, _)| *i).collect();
        for i in stale {
            if let Some((_, reply)) = self.proposals.remove(&i) {
                let e = NodeError::OutcomeUnknown("state replaced by a snapshot; retry".into());
                answer(&self.cfg.metrics, reply, Err(e));
            }
        }
        Ok(())
    }

    fn apply_entries(&mut self, entries: &[Entry]) -> Result<(), NodeError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let mut outcomes = Vec::with_capacity(entries.len());
        self.applied_bytes_since_snapshot +=
            entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
        {
            let mut sm = self
                .shared
                .sm
                .write()
                .map_err(|_| NodeError::Internal("state machine lock poisoned".into()))?;
            for e in entries {
                let outcome = match e.kind {
                    EntryKind::Normal => sm.apply(e.index, e.term, &e.data),
                    EntryKind::Noop => {
                        sm.skip(e.index);
                        Applied::Nothing
                    }
                    // Membership took effect when the entry was appended (in the core).
                    EntryKind::ConfChange => {
                        sm.skip(e.index);
                        Applied::Nothing
                    }
                };
                outcomes.push((e.index, e.term, outcome));
            }
            self.cfg.metrics.rooms.set(sm.room_count() as i64);
        }
        observe::stored(&self.cfg.metrics, outcomes.iter().map(|(_, _, o)| o));
        for (index, term, outcome) in outcomes {
            if let Applied::Sent {
                message,
                duplicate: false,
            } = &outcome
            {
                // No receivers is fine: nobody is subscribed.
                let _ = self.shared.events.send(message.clone());
            }
            if let Applied::Rejected(e) = &outcome {
                tracing::warn!(index, error = %e, "entry rejected by the state machine");
            }
            // Waiters at or below this index are settled now.
            while let Some(entry) = self.proposals.first_entry() {
                if *entry.key() > index {
                    break;
                }
                let (i, (t, reply)) = entry.remove_entry();
                let result = if i == index && t == term {
                    match outcome.clone() {
                        Applied::Rejected(e) => Err(NodeError::Chat(e)),
                        other => Ok(other),
                    }
                } else {
                    Err(NodeError::Unavailable(
                        "entry was overwritten by a new leader; retry".into(),
                    ))
                };
                answer(&self.cfg.metrics, reply, result);
            }
        }
        self.shared.applied.send_replace(last.index);
        Ok(())
    }

    fn answer_read(&mut self, rs: ReadState) {
        let Some(reply) = self.reads.remove(&rs.ctx) else {
            return;
        };
        let _ = reply.send(match rs.index {
            Some(i) => Ok(i),
            None => Err(NodeError::NotLeader {
                leader: self.leader_addr(self.raft.leader()),
            }),
        });
    }

    /// Compacts when `force` or when a snapshot is due ([`super::snapshot_due`]). Returns the
    /// latest snapshot's (index, term).
    ///
    /// A due snapshot is taken in the background when the storage can stage one: the state is
    /// frozen here (cheap), and a blocking thread encodes and writes it, so the driver keeps
    /// committing; [`Driver::finish_compaction`] puts it in force. `force` (the admin
    /// `Snapshot` call) compacts synchronously, so its answer names the new snapshot.
    fn maybe_compact(&mut self, force: bool) -> Result<(u64, u64), NodeError> {
        let started = std::time::Instant::now();
        let applied = self.raft.applied_index();
        let stretch = |n: u64| (n as f64 * self.snapshot_stretch) as u64;
        let due = self.compacting.is_none()
            && super::snapshot_due(
                applied.saturating_sub(self.snapshot_index),
                self.applied_bytes_since_snapshot,
                stretch(self.snapshot_bytes),
                stretch(self.cfg.snapshot_threshold),
            );
        if applied <= self.snapshot_index || !(force || due) {
            let term = self.raft.log().term(self.snapshot_index).unwrap_or(0);
            return Ok((self.snapshot_index, term));
        }
        let view = {
            let sm = self
                .shared
                .sm
                .read()
                .map_err(|_| NodeError::Internal("state machine lock poisoned".into()))?;
            if sm.applied() != applied {
                return Err(NodeError::Unavailable(format!(
                    "state machine at {} but raft applied {applied}",
                    sm.applied()
                )));
            }
            sm.snapshot_view()
        };
        let term = self.raft.log().term(applied)?;
        let conf = self.raft.conf_at(applied).cloned().ok_or_else(|| {
            NodeError::Io(format!("membership as of index {applied} is not known"))
        })?;
        let stager = if force {
            None
        } else {
            self.raft.log().storage.stager()
        };
        let Some(stager) = stager else {
            // The admin call: it waits for the chat files' fsync here, on purpose.
            let data = view.encode()?;
            self.install_snapshot(Compacted {
                started,
                index: applied,
                conf,
                data,
            })?;
            return Ok((applied, term));
        };
        self.compacting = Some(Compacting {
            index: applied,
            bytes_at_start: self.applied_bytes_since_snapshot,
        });
        let tx = self.compacted_tx.clone();
        // A thread of its own (not the blocking pool), so its lowered priority dies with it.
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                lower_thread_priority();
                // Waits for the chunks the manifest points at to be fsynced first.
                let done = view
                    .encode()
                    .map_err(|e| e.to_string())
                    .and_then(|data| {
                        stager
                            .stage(applied, term, &conf, &data)
                            .map_err(|e| e.to_string())
                            .map(|()| data)
                    })
                    .map(|data| Compacted {
                        started,
                        index: applied,
                        conf,
                        data,
                    });
                // The driver may have stopped; then the staged file is removed at the next open.
                let _ = tx.blocking_send(done);
            });
        if let Err(e) = spawned {
            self.compacting = None;
            return Err(NodeError::Io(format!(
                "cannot start the snapshot thread: {e}"
            )));
        }
        Ok((
            self.snapshot_index,
            self.raft.log().term(self.snapshot_index)?,
        ))
    }

    /// Puts a background snapshot in force (a rename and a log truncation), unless a newer
    /// snapshot overtook it meanwhile.
    fn finish_compaction(&mut self, done: Result<Compacted, String>) {
        let Some(started) = self.compacting.take() else {
            return;
        };
        let result = match done {
            Ok(c) if c.index > self.snapshot_index => {
                self.applied_bytes_since_snapshot = self
                    .applied_bytes_since_snapshot
                    .saturating_sub(started.bytes_at_start);
                let carried = self.applied_bytes_since_snapshot;
                self.install_snapshot(c).map(|()| {
                    self.applied_bytes_since_snapshot = carried;
                })
            }
            // Overtaken (a snapshot from the leader, or a forced one): `compact` discards it.
            Ok(c) => self
                .raft
                .storage_mut()
                .compact(c.index, c.conf, c.data)
                .map_err(NodeError::from),
            Err(e) => Err(NodeError::Io(e)),
        };
        if let Err(e) = result {
            tracing::warn!(
                id = self.cfg.id,
                index = started.index,
                error = %e,
                "background snapshot failed"
            );
        }
    }

    /// Makes `c` the latest snapshot and drops the log up to it.
    fn install_snapshot(&mut self, c: Compacted) -> Result<(), NodeError> {
        let (index, bytes, started) = (c.index, c.data.len(), c.started);
        let store = self.raft.storage_mut();
        store.compact(index, c.conf, c.data)?;
        store.sync()?;
        self.snapshot_index = index;
        self.snapshot_bytes = bytes as u64;
        self.applied_bytes_since_snapshot = 0;
        self.snapshot_stretch = snapshot_stretch();
        observe::snapshot_taken(&self.cfg.metrics, "local", bytes, Some(started));
        tracing::info!(id = self.cfg.id, index, bytes, "log compacted");
        Ok(())
    }

    fn publish_status(&mut self) {
        let r = &self.raft;
        let last_index = r.log().last_index().unwrap_or(0);
        let peers = if r.role() == Role::Leader {
            r.progress()
                .iter()
                .map(|(&id, p)| PeerStatus {
                    id,
                    addr: self.addr_of(id),
                    match_index: p.matched,
                    next_index: p.next,
                    lag: last_index.saturating_sub(p.matched),
                    learner: p.learner,
                    active: p.recent_active,
                })
                .collect()
        } else {
            Vec::new()
        };
        let st = NodeStatus {
            id: self.cfg.id,
            addr: self.cfg.advertised_addr(),
            role: r.role(),
            term: r.term(),
            // A removed node hears from no leader any more; do not send clients to a stale one.
            leader_id: if self.removed { None } else { r.leader() },
            commit_index: r.commit_index(),
            applied_index: r.applied_index(),
            last_index,
            snapshot_index: self.snapshot_index,
            peers,
            voters: r.conf().voters.iter().copied().collect(),
            learners: r.conf().learners.iter().copied().collect(),
            addrs: r.conf().addrs.clone(),
            peer_addrs: r
                .conf()
                .members()
                .filter_map(|id| Some((id, self.peer_addr_of(id)?)))
                .collect(),
            removed: self.removed,
            cluster_id: self.cfg.cluster_id.clone(),
        };
        self.shared.status.send_if_modified(|cur| {
            if *cur != st {
                *cur = st;
                true
            } else {
                false
            }
        });
    }
}
