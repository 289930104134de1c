//! The Raft state machine: configuration, state, accessors, time, and the message entry point.
//!
//! Like etcd-io/raft, the term is handled once at the top of [`Raft::step`]; only then does the
//! role decide what to do with the message. The rest of the behaviour lives in sibling modules,
//! each an `impl` block of [`Raft`]: elections in `election.rs`, membership changes and
//! leadership transfer in `membership.rs`, the follower side in `follower.rs`, the leader side in
//! `replication.rs`, ReadIndex in `read_index.rs`, and the Ready cycle in `ready.rs`. Nothing
//! here performs I/O: outgoing messages pile up in the struct and leave through
//! [`crate::raft::Ready`].

use std::collections::BTreeMap;

use bytes::Bytes;

use super::errors::{Error, ProposeError, Result};
use super::log::RaftLog;
use super::log_store::Storage;
use super::progress::Progress;
use super::read_index::ReadQueue;
use super::types::{
    ConfState, Entry, EntryKind, HardState, Message, MessageBody, NodeId, ReadState, Role,
    SoftState,
};

/// Tunables of the core. Times are in ticks; the driver decides how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Base election timeout. Followers wait a random time in `[election_tick, 2*election_tick)`
    /// before campaigning; the leader checks its quorum once per `election_tick`.
    pub election_tick: u64,
    /// Ticks between leader heartbeats. Must be smaller than `election_tick`.
    pub heartbeat_tick: u64,
    /// Cap on the bytes of entries in one AppendEntries.
    pub max_size_per_msg: u64,
    /// Cap on unacknowledged AppendEntries per follower (the pipelining window).
    pub max_inflight_msgs: usize,
    /// Cap on the bytes of committed entries handed out in one Ready.
    pub max_apply_bytes: u64,
    /// Leader only: cap on the payload bytes of entries it appended in its term that are not
    /// yet committed (etcd's `MaxUncommittedEntriesSize`). A leader that cannot commit (no
    /// quorum, a slow disk) refuses new proposals past it with
    /// [`ProposeError::UncommittedLimit`] instead of growing its log and its memory without
    /// bound. A proposal into an empty budget is always taken, so one large entry still fits.
    pub max_uncommitted_bytes: u64,
    /// A leader that has not heard from a quorum for an election timeout steps down, and
    /// followers that hear from a leader ignore vote requests (the leader lease).
    pub check_quorum: bool,
    /// Run a pre-vote round before incrementing the term (thesis section 9.6), so that a
    /// partitioned node rejoining cannot disrupt a stable leader.
    pub pre_vote: bool,
    /// Seed of the election-timeout randomness. Same seed, same inputs: same behaviour.
    pub seed: u64,
    /// Index the state machine has already applied (its snapshot, usually).
    pub applied: u64,
}

impl Config {
    /// Defaults for node `id`: 10-tick election, 1-tick heartbeat, pre-vote and check-quorum on.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 64,
            max_apply_bytes: 4 << 20,
            max_uncommitted_bytes: 64 << 20,
            check_quorum: true,
            pre_vote: true,
            seed: id,
            applied: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(Error::Config("node id must be non-zero".into()));
        }
        if self.heartbeat_tick == 0 || self.heartbeat_tick >= self.election_tick {
            return Err(Error::Config(
                "heartbeat_tick must be at least 1 and below election_tick".into(),
            ));
        }
        if self.max_uncommitted_bytes == 0 {
            return Err(Error::Config(
                "max_uncommitted_bytes must be at least 1".into(),
            ));
        }
        if self.max_inflight_msgs == 0 {
            return Err(Error::Config("max_inflight_msgs must be at least 1".into()));
        }
        Ok(())
    }
}

/// One Raft node's consensus state.
pub struct Raft<S: Storage> {
    pub(super) cfg: Config,
    /// Current term. Invariant: never decreases.
    pub(super) term: u64,
    /// Vote cast in `term`. Invariant: at most one per term, persisted before any answer.
    pub(super) vote: Option<NodeId>,
    pub(super) role: Role,
    pub(super) leader: Option<NodeId>,
    pub(super) log: RaftLog<S>,
    pub(super) conf: ConfState,
    /// Leader only: progress of every other member (voters and learners).
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// Leader only: our own persisted last index, which counts toward commit like a follower's
    /// match. Invariant: only ever set from what storage holds.
    pub(super) self_match: u64,
    /// Candidate and pre-candidate: answers received this round.
    pub(super) votes: BTreeMap<NodeId, bool>,
    /// Messages that may leave at once.
    pub(super) msgs: Vec<Message>,
    /// Messages that may leave only after this Ready's state is durable.
    pub(super) msgs_after_persist: Vec<Message>,
    pub(super) election_elapsed: u64,
    pub(super) heartbeat_elapsed: u64,
    pub(super) randomized_election_timeout: u64,
    pub(super) rng: fastrand::Rng,
    /// Leader only: the node leadership is being handed to.
    pub(super) lead_transferee: Option<NodeId>,
    /// Index of the entry (or snapshot) the membership in force comes from. Membership takes
    /// effect as soon as its entry is in the log (dissertation section 4.1), committed or not.
    pub(super) conf_index: u64,
    /// The configurations this node may still need, in index order: one in force at or below
    /// the applied index (a snapshot may be taken at any applied index and must record the
    /// membership there, see [`Raft::conf_at`]), then every later configuration entry in the
    /// log. Invariant: the last element is `(conf_index, conf)`. When a new leader overwrites
    /// uncommitted entries, the configurations they held are dropped and the latest surviving
    /// one is back in force.
    pub(super) conf_history: Vec<(u64, ConfState)>,
    pub(super) reads: ReadQueue,
    pub(super) read_states: Vec<ReadState>,
    /// Leader only: commit moved, tell followers even if there is nothing new to send.
    pub(super) commit_dirty: bool,
    /// Leader only: payload bytes of the entries of this term not yet handed out as committed
    /// (bounded by `cfg.max_uncommitted_bytes`). Reset on every role change.
    pub(super) uncommitted_bytes: u64,
    pub(super) prev_hard_state: HardState,
    pub(super) prev_soft_state: SoftState,
}

impl<S: Storage> Raft<S> {
    /// Restores a node from its storage. A fresh storage gives a follower at term 0.
    pub fn new(cfg: Config, storage: S) -> Result<Self> {
        cfg.validate()?;
        let state = storage.initial_state()?;
        let hs = state.hard_state;
        let mut log = RaftLog::new(storage, 0, cfg.applied)?;
        let last = log.last_index()?;
        log.committed = hs.commit.min(last).max(log.committed);
        // Membership takes effect on append, so every configuration entry in the log is in
        // force in turn, committed or not. Rebuild the history from the snapshot on, so that
        // `conf_at` can answer for any index a later snapshot may be taken at.
        let snap = log.storage.snapshot_meta()?;
        let base = if state.conf_index == snap.index {
            (state.conf_index, state.conf_state)
        } else {
            (snap.index, snap.conf)
        };
        let mut conf_history = vec![base];
        let mut next = snap.index.max(log.first_index()? - 1) + 1;
        while next <= last {
            let batch = log.entries(next, last + 1, Some(4 << 20))?;
            let Some(end) = batch.last().map(|e| e.index) else {
                break;
            };
            for e in batch {
                if e.kind == EntryKind::ConfChange {
                    if let Some(c) = ConfState::decode(&e.data) {
                        conf_history.push((e.index, c));
                    }
                }
            }
            next = end + 1;
        }
        let (conf_index, conf) = conf_history
            .last()
            .cloned()
            .unwrap_or((0, ConfState::default()));
        let soft = SoftState {
            role: Role::Follower,
            leader: None,
        };
        let mut r = Raft {
            rng: fastrand::Rng::with_seed(cfg.seed),
            cfg,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            log,
            conf,
            conf_index,
            conf_history,
            progress: BTreeMap::new(),
            self_match: 0,
            votes: BTreeMap::new(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            lead_transferee: None,
            reads: ReadQueue::default(),
            read_states: Vec::new(),
            commit_dirty: false,
            uncommitted_bytes: 0,
            prev_hard_state: hs,
            prev_soft_state: soft,
        };
        r.reset_randomized_election_timeout();
        Ok(r)
    }

    // ----- accessors -----------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    /// Current term.
    pub fn term(&self) -> u64 {
        self.term
    }
    /// Vote cast in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Known leader.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// Commit index.
    pub fn commit_index(&self) -> u64 {
        self.log.committed
    }
    /// Leader only: payload bytes of its uncommitted entries, the quantity
    /// [`Config::max_uncommitted_bytes`] bounds (0 on other roles). Exposed for metrics.
    pub fn uncommitted_bytes(&self) -> u64 {
        self.uncommitted_bytes
    }
    /// Applied index (as confirmed through `advance`).
    pub fn applied_index(&self) -> u64 {
        self.log.applied
    }
    /// Current membership: the latest configuration in the log, committed or not.
    pub fn conf(&self) -> &ConfState {
        &self.conf
    }
    /// Index of the entry (or snapshot) the current membership comes from. The node compares
    /// it across Readies to notice membership changes (new peers to dial, its own removal).
    pub fn conf_index(&self) -> u64 {
        self.conf_index
    }
    /// The membership in force as of log index `index`, for a snapshot taken there: it must
    /// record that one, not a later (perhaps uncommitted) configuration. Known for any index at
    /// or above the applied index at the last membership change; `None` below that.
    pub fn conf_at(&self, index: u64) -> Option<&ConfState> {
        self.conf_history
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, c)| c)
    }
    /// True while the latest membership change is not yet committed; a new one is refused.
    pub fn conf_change_pending(&self) -> bool {
        self.conf_index > self.log.committed
    }
    /// The log (stable and unstable parts).
    pub fn log(&self) -> &RaftLog<S> {
        &self.log
    }
    /// Mutable access to storage, for the application to write what a Ready carries and to
    /// compact. Writing anything else breaks the Ready contract.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }
    /// Leader only: each peer's replication progress.
    pub fn progress(&self) -> &BTreeMap<NodeId, Progress> {
        &self.progress
    }
    /// Leader only: the peer leadership is being transferred to.
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.lead_transferee
    }
    /// Current hard state.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }
    /// Current soft state.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
        }
    }

    pub(super) fn quorum(&self) -> usize {
        self.conf.quorum()
    }

    // ----- sending -------------------------------------------------------------------------

    /// Queues a message. What a leader sends to replicate (and read-index traffic) may leave at
    /// once: it depends on nothing this node has yet to persist. Everything else (votes and
    /// their requests, acknowledgements) waits for the fsync of this Ready.
    pub(super) fn send(&mut self, to: NodeId, term: u64, body: MessageBody) {
        let immediate = matches!(
            body,
            MessageBody::ReadIndex { .. } | MessageBody::ReadIndexResponse { .. }
        ) || (self.role == Role::Leader
            && matches!(
                body,
                MessageBody::AppendEntries { .. }
                    | MessageBody::Heartbeat { .. }
                    | MessageBody::InstallSnapshot { .. }
                    | MessageBody::TimeoutNow
            ));
        let m = Message {
            from: self.cfg.id,
            to,
            term,
            body,
        };
        if immediate {
            self.msgs.push(m);
        } else {
            self.msgs_after_persist.push(m);
        }
    }

    // ----- time ----------------------------------------------------------------------------

    /// Draws a new election timeout in `[election_tick, 2 * election_tick)`: nodes that time
    /// out at different moments rarely split the vote.
    pub(super) fn reset_randomized_election_timeout(&mut self) {
        let base = self.cfg.election_tick;
        self.randomized_election_timeout = base + self.rng.u64(0..base);
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) -> Result<()> {
        if self.role == Role::Leader {
            return self.tick_leader();
        }
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(false)?;
        }
        Ok(())
    }

    fn tick_leader(&mut self) -> Result<()> {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_active() {
                tracing::info!(
                    id = self.cfg.id,
                    term = self.term,
                    "leader lost quorum, stepping down"
                );
                self.become_follower(self.term, None);
                return Ok(());
            }
            let transfer_failed = self.lead_transferee.take().is_some();
            if transfer_failed {
                tracing::info!(id = self.cfg.id, "leadership transfer timed out, aborted");
            }
            if self.removed_and_committed() {
                if transfer_failed {
                    // No voter took over within an election timeout (none caught up, or the
                    // TimeoutNow was lost). Step down: the remaining voters hold the new
                    // configuration and elect among themselves.
                    tracing::info!(id = self.cfg.id, "removed leader stepping down");
                    self.become_follower(self.term, None);
                    return Ok(());
                }
                self.hand_over();
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
        Ok(())
    }

    // ----- the message entry point ---------------------------------------------------------

    /// Feeds a message from a peer into the state machine.
    pub fn step(&mut self, m: Message) -> Result<()> {
        if m.to != self.cfg.id || m.from == self.cfg.id || m.from == 0 {
            return Ok(());
        }
        // Handle the message term, which may result in our stepping down to a follower.
        if m.term > self.term {
            if let MessageBody::RequestVote { transfer, .. } = m.body {
                let in_lease = self.cfg.check_quorum
                    && self.leader.is_some()
                    && self.election_elapsed < self.cfg.election_tick;
                if in_lease && !transfer {
                    // We hear from a live leader: ignore the disruption (thesis section 4.2.3).
                    return Ok(());
                }
            }
            match m.body {
                MessageBody::RequestVote { pre_vote: true, .. } => {}
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                    ..
                } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => self.become_follower(m.term, Some(m.from)),
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => {
                    // A stale leader: tell it our term so it steps down. Without this, with
                    // pre-vote or check-quorum, it could never learn about the new term.
                    let last_index = self.log.last_index()?;
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::AppendEntriesResponse {
                            success: false,
                            match_index: 0,
                            reject_index: 0,
                            conflict_term: 0,
                            conflict_index: 0,
                            last_index,
                            leader_hint: self.leader,
                        },
                    );
                }
                MessageBody::RequestVote { pre_vote: true, .. } => {
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::RequestVoteResponse {
                            pre_vote: true,
                            granted: false,
                            leader_hint: self.leader,
                        },
                    );
                }
                _ => {}
            }
            return Ok(());
        }

        if let MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } = m.body
        {
            return self.handle_vote_request(&m, pre_vote, last_log_index, last_log_term);
        }

        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
    }

    // ----- proposals -----------------------------------------------------------------------

    /// Appends a command to the leader's log. Returns its index; the command is committed once
    /// that index shows up in a Ready's `committed_entries` with the same term.
    pub fn propose(&mut self, data: Bytes) -> std::result::Result<u64, ProposeError> {
        self.propose_entry(EntryKind::Normal, data)
    }

    pub(super) fn propose_entry(
        &mut self,
        kind: EntryKind,
        data: Bytes,
    ) -> std::result::Result<u64, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let size = data.len() as u64;
        if kind == EntryKind::Normal
            && self.uncommitted_bytes > 0
            && self.uncommitted_bytes.saturating_add(size) > self.cfg.max_uncommitted_bytes
        {
            return Err(ProposeError::UncommittedLimit {
                limit: self.cfg.max_uncommitted_bytes,
            });
        }
        let last = self.log.last_index().map_err(|_| ProposeError::NotLeader {
            leader_hint: self.leader,
        })?;
        let e = Entry {
            index: last + 1,
            term: self.term,
            kind,
            data,
        };
        self.log
            .append(std::slice::from_ref(&e))
            .map_err(|_| ProposeError::NotLeader {
                leader_hint: self.leader,
            })?;
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_add(size);
        if self.conf.voters.len() == 1 {
            self.commit_dirty = true;
        }
        Ok(e.index)
    }

    // ----- reads ---------------------------------------------------------------------------

    /// Asks for a linearizable read index (ReadIndex, thesis section 6.4). The answer comes back
    /// as a [`ReadState`] with the same `ctx` in a later Ready; `index: None` means retry.
    pub fn read_index(&mut self, ctx: u64) {
        match self.role {
            Role::Leader => self.leader_read(ctx, self.cfg.id),
            _ => match self.leader {
                Some(l) => self.send(l, self.term, MessageBody::ReadIndex { ctx }),
                None => self.read_states.push(ReadState { ctx, index: None }),
            },
        }
    }
}

#[cfg(test)]
const _: () = {
    // The core must be movable to another thread (the driver runs it on a tokio task).
    const fn assert_send<T: Send>() {}
    assert_send::<Raft<super::mem_storage::MemStorage>>();
};
