//! The Raft state machine: state, term handling, elections and role dispatch.
//!
//! Like etcd-io/raft, the term is handled once at the top of [`Raft::step`]; only then does the
//! role decide what to do with the message. Nothing here performs I/O: outgoing messages pile up
//! in the struct and leave through [`crate::raft::Ready`].

use std::collections::BTreeMap;

use bytes::Bytes;

use super::errors::{Error, ProposeError, Result};
use super::log::RaftLog;
use super::progress::Progress;
use super::read_index::ReadQueue;
use super::storage::Storage;
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
    /// Leader only: index of the latest configuration entry; a new change waits until it is
    /// applied.
    pub(super) pending_conf_index: u64,
    /// Index of the entry (or snapshot) the membership in force comes from.
    pub(super) conf_index: u64,
    pub(super) reads: ReadQueue,
    pub(super) read_states: Vec<ReadState>,
    /// Leader only: commit moved, tell followers even if there is nothing new to send.
    pub(super) commit_dirty: bool,
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
            conf: state.conf_state,
            conf_index: state.conf_index,
            progress: BTreeMap::new(),
            self_match: 0,
            votes: BTreeMap::new(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            lead_transferee: None,
            pending_conf_index: 0,
            reads: ReadQueue::default(),
            read_states: Vec::new(),
            commit_dirty: false,
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
    /// Applied index (as confirmed through `advance`).
    pub fn applied_index(&self) -> u64 {
        self.log.applied
    }
    /// Current membership.
    pub fn conf(&self) -> &ConfState {
        &self.conf
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

    pub(super) fn promotable(&self) -> bool {
        self.conf.voters.contains(&self.cfg.id)
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

    fn reset_randomized_election_timeout(&mut self) {
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
            if self.lead_transferee.take().is_some() {
                tracing::info!(id = self.cfg.id, "leadership transfer timed out, aborted");
            }
            if !self.conf.voters.contains(&self.cfg.id) {
                self.hand_over();
            }
        }
        self.tick_snapshots();
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
        Ok(())
    }

    /// A leader that is no longer a voter transfers leadership to the voter with the longest
    /// matching log.
    fn hand_over(&mut self) {
        let target = self
            .progress
            .iter()
            .filter(|(id, _)| self.conf.voters.contains(id))
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        if let Some(t) = target {
            tracing::info!(
                id = self.cfg.id,
                to = t,
                "no longer a voter: handing leadership over"
            );
            let _ = self.transfer_leader(t);
        }
    }

    /// Check-quorum: did a majority of voters (ourselves included) talk to us lately? Resets the
    /// activity flags for the next round.
    fn quorum_active(&mut self) -> bool {
        let me = self.cfg.id;
        let mut active = usize::from(self.conf.voters.contains(&me));
        for (id, pr) in self.progress.iter_mut() {
            if pr.recent_active && self.conf.voters.contains(id) {
                active += 1;
            }
            pr.recent_active = false;
        }
        active >= self.conf.quorum()
    }

    // ----- role changes --------------------------------------------------------------------

    fn reset(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.votes.clear();
        self.lead_transferee = None;
        self.progress.clear();
        self.fail_pending_reads();
    }

    pub(super) fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        // No term change and no vote: a pre-vote round is side-effect free for everyone.
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.progress.clear();
        self.fail_pending_reads();
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = Some(self.cfg.id);
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) -> Result<()> {
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        let last = self.log.last_index()?;
        let me = self.cfg.id;
        for &id in self.conf.voters.iter().chain(self.conf.learners.iter()) {
            if id != me {
                let mut pr = Progress::new(last, self.conf.learners.contains(&id));
                pr.recent_active = true;
                self.progress.insert(id, pr);
            }
        }
        self.self_match = self.log.persisted_index();
        // Any configuration entry in the log may not have been applied yet.
        self.pending_conf_index = last;
        let noop = Entry {
            index: last + 1,
            term: self.term,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        };
        self.log.append(&[noop])?;
        tracing::info!(id = me, term = self.term, "became leader");
        Ok(())
    }

    // ----- elections -----------------------------------------------------------------------

    /// Starts an election now, as if this node's election timeout had just elapsed (etcd's
    /// `Campaign`). Scenario tests use it to pick who stands; a real node relies on `tick`.
    /// A leader, or a node that is not a voter, ignores it.
    pub fn campaign_now(&mut self) -> Result<()> {
        self.election_elapsed = 0;
        self.hup(false)
    }

    /// Starts an election: a pre-vote round first when enabled, unless `transfer` (a leadership
    /// transfer skips it, since the old leader asked for it).
    pub(super) fn hup(&mut self, transfer: bool) -> Result<()> {
        if self.role == Role::Leader || !self.promotable() {
            return Ok(());
        }
        if self.cfg.pre_vote && !transfer {
            self.campaign(true, false)
        } else {
            self.campaign(false, transfer)
        }
    }

    fn campaign(&mut self, pre_vote: bool, transfer: bool) -> Result<()> {
        let vote_term = if pre_vote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        let me = self.cfg.id;
        if self.poll(me, true)? {
            return Ok(());
        }
        let last_log_index = self.log.last_index()?;
        let last_log_term = self.log.last_term()?;
        let voters: Vec<NodeId> = self
            .conf
            .voters
            .iter()
            .copied()
            .filter(|&v| v != me)
            .collect();
        for v in voters {
            self.send(
                v,
                vote_term,
                MessageBody::RequestVote {
                    pre_vote,
                    last_log_index,
                    last_log_term,
                    transfer,
                },
            );
        }
        Ok(())
    }

    /// Records a vote answer; moves on when the outcome is decided. Returns true if it was.
    fn poll(&mut self, from: NodeId, granted: bool) -> Result<bool> {
        if !self.conf.voters.contains(&from) {
            return Ok(false);
        }
        self.votes.entry(from).or_insert(granted);
        let yes = self.votes.values().filter(|&&g| g).count();
        let no = self.votes.len() - yes;
        let q = self.quorum();
        if yes >= q {
            if self.role == Role::PreCandidate {
                self.campaign(false, false)?;
            } else {
                self.become_leader()?;
            }
            return Ok(true);
        }
        if self.conf.voters.len() - no < q {
            self.become_follower(self.term, None);
            return Ok(true);
        }
        Ok(false)
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

    fn handle_vote_request(
        &mut self,
        m: &Message,
        pre_vote: bool,
        last_log_index: u64,
        last_log_term: u64,
    ) -> Result<()> {
        // One vote per term: only for the node we already voted for, or for anyone if we have
        // neither voted nor heard from a leader. A pre-vote for a later term is always allowed.
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && m.term > self.term);
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term)?;
        if can_vote && up_to_date {
            if !pre_vote {
                self.vote = Some(m.from);
                self.election_elapsed = 0;
            }
            // A granted pre-vote answers in the proposed term, so the pre-candidate counts it.
            self.send(
                m.from,
                m.term,
                MessageBody::RequestVoteResponse {
                    pre_vote,
                    granted: true,
                    leader_hint: None,
                },
            );
        } else {
            self.send(
                m.from,
                self.term,
                MessageBody::RequestVoteResponse {
                    pre_vote,
                    granted: false,
                    leader_hint: self.leader,
                },
            );
        }
        Ok(())
    }

    fn step_candidate(&mut self, m: Message) -> Result<()> {
        match m.body {
            MessageBody::RequestVoteResponse {
                pre_vote, granted, ..
            } => {
                if pre_vote == (self.role == Role::PreCandidate) {
                    self.poll(m.from, granted)?;
                }
                Ok(())
            }
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // Someone won this term.
                self.become_follower(m.term, Some(m.from));
                self.step_follower(m)
            }
            MessageBody::ReadIndexResponse { ctx, index } => {
                self.read_states.push(ReadState { ctx, index });
                Ok(())
            }
            MessageBody::ReadIndex { ctx } => {
                self.send(
                    m.from,
                    self.term,
                    MessageBody::ReadIndexResponse { ctx, index: None },
                );
                Ok(())
            }
            _ => Ok(()),
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
        if self.conf.voters.len() == 1 {
            self.commit_dirty = true;
        }
        Ok(e.index)
    }

    /// Proposes a new membership (leader only). Only one change may be in flight: a new one is
    /// refused until the previous configuration entry is applied.
    pub fn propose_conf_change(
        &mut self,
        conf: ConfState,
    ) -> std::result::Result<u64, ProposeError> {
        if self.role == Role::Leader && self.pending_conf_index > self.log.applied {
            return Err(ProposeError::ConfChangePending);
        }
        if conf.voters.is_empty() {
            return Err(ProposeError::InvalidConfChange("no voters left".into()));
        }
        if conf.voters.iter().any(|v| conf.learners.contains(v)) {
            return Err(ProposeError::InvalidConfChange(
                "a node cannot be both voter and learner".into(),
            ));
        }
        let index = self.propose_entry(EntryKind::ConfChange, conf.encode())?;
        self.pending_conf_index = index;
        Ok(index)
    }

    /// The application applied the configuration entry at `index`: switch to its membership.
    /// Membership takes effect when applied (as in etcd-io/raft); only one change may be in
    /// flight, and a new leader proposes none until everything before its term is applied, so
    /// the old and new configurations always share a majority. Entries at or below the
    /// membership already in force (a replay after restart) are ignored.
    pub fn apply_conf_change(&mut self, index: u64, conf: ConfState) -> Result<()> {
        if index <= self.conf_index {
            // Replayed after a restart: already in force (or superseded).
            return Ok(());
        }
        self.conf_index = index;
        self.conf = conf;
        if self.role == Role::Leader {
            let last = self.log.last_index()?;
            let me = self.cfg.id;
            let members: Vec<NodeId> = self
                .conf
                .voters
                .iter()
                .chain(self.conf.learners.iter())
                .copied()
                .filter(|&id| id != me)
                .collect();
            self.progress.retain(|id, _| members.contains(id));
            for id in members {
                let learner = self.conf.learners.contains(&id);
                self.progress
                    .entry(id)
                    .or_insert_with(|| {
                        let mut pr = Progress::new(last, learner);
                        pr.recent_active = true;
                        pr
                    })
                    .learner = learner;
            }
            if self.conf.voters.contains(&me) {
                self.maybe_commit()?;
            } else {
                // Removed or demoted. Stepping down at once could strand the cluster: the
                // remaining voters may not yet know that this change committed, so they would
                // still need this node's vote under the old configuration while it, on the new
                // one, would never stand. Keep leading (not counting ourselves) and hand over
                // to the most up-to-date voter, as a leadership transfer brings it fully up to
                // date first; `tick_leader` retries until the handover happens.
                self.hand_over();
            }
        }
        Ok(())
    }

    /// Hands leadership to `target` (leader only): stop taking proposals, bring the target up
    /// to date, then tell it to campaign at once. Aborted after an election timeout.
    pub fn transfer_leader(&mut self, target: NodeId) -> std::result::Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if target == self.cfg.id {
            return Ok(());
        }
        if !self.conf.voters.contains(&target) {
            return Err(ProposeError::InvalidConfChange(format!(
                "{target} is not a voter"
            )));
        }
        self.lead_transferee = Some(target);
        self.election_elapsed = 0;
        let caught_up = match (self.progress.get(&target), self.log.last_index()) {
            (Some(pr), Ok(last)) => pr.matched == last,
            _ => false,
        };
        if caught_up {
            self.send(target, self.term, MessageBody::TimeoutNow);
        }
        Ok(())
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
    assert_send::<Raft<super::storage::MemStorage>>();
};
