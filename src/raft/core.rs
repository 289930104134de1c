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
    /// Index of the entry (or snapshot) the membership in force comes from. Membership takes
    /// effect as soon as its entry is in the log (dissertation section 4.1), committed or not.
    pub(super) conf_index: u64,
    /// The configurations this node may still need to fall back to: the last one at or below
    /// the commit index first, then every later configuration entry in the log, in index
    /// order. Invariant: the last element is `(conf_index, conf)`. When a new leader
    /// overwrites uncommitted entries, the configurations they held are dropped and the latest
    /// surviving one is back in force.
    pub(super) conf_history: Vec<(u64, ConfState)>,
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

    /// May this node stand for election? A voter of the membership in force may. So may a
    /// node that the latest, still uncommitted, change removed or demoted: it may hold the only
    /// log the remaining voters can elect (it was the leader that appended the change, say),
    /// and they, not yet holding the change, still count on it. Such a candidate counts only
    /// the votes of the new membership, as a leader outside its own configuration does
    /// (dissertation section 4.2.2). Once the change is committed, it never stands again.
    pub(super) fn promotable(&self) -> bool {
        let me = self.cfg.id;
        if self.conf.voters.contains(&me) {
            return true;
        }
        let committed = self.log.committed;
        // Walk back through the uncommitted configurations to the last committed one.
        for (index, conf) in self.conf_history.iter().rev() {
            if conf.voters.contains(&me) {
                return true;
            }
            if *index <= committed {
                break;
            }
        }
        false
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
        self.tick_snapshots();
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
        Ok(())
    }

    /// True for a leader whose own removal (or demotion to learner) is committed: its job is
    /// done and it must hand over.
    pub(super) fn removed_and_committed(&self) -> bool {
        !self.conf.voters.contains(&self.cfg.id) && self.log.committed >= self.conf_index
    }

    /// A leader that is no longer a voter transfers leadership to the voter with the longest
    /// matching log.
    pub(super) fn hand_over(&mut self) {
        if self.lead_transferee.is_some() {
            return;
        }
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

    /// Proposes a new membership (leader only). Single-server changes (dissertation section
    /// 4.1): at most one voter added or removed per change, learners freely. The new membership
    /// takes effect on every node as soon as the entry is in its log. Refused while the previous
    /// change is uncommitted, and until this leader has committed an entry of its own term
    /// (Ongaro's 2015 fix: otherwise changes from two terms could form disjoint majorities).
    pub fn propose_conf_change(
        &mut self,
        conf: ConfState,
    ) -> std::result::Result<u64, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.conf_change_pending() {
            return Err(ProposeError::ConfChangePending);
        }
        if self.log.term(self.log.committed).ok() != Some(self.term) {
            return Err(ProposeError::LeaderNotReady);
        }
        if conf.voters.is_empty() {
            return Err(ProposeError::InvalidConfChange("no voters left".into()));
        }
        if conf.voters.iter().any(|v| conf.learners.contains(v)) {
            return Err(ProposeError::InvalidConfChange(
                "a node cannot be both voter and learner".into(),
            ));
        }
        if conf.members().any(|id| id == 0) {
            return Err(ProposeError::InvalidConfChange(
                "node id 0 is reserved".into(),
            ));
        }
        if self.conf.voter_delta(&conf) > 1 {
            return Err(ProposeError::InvalidConfChange(
                "add or remove at most one voter per change".into(),
            ));
        }
        let index = self.propose_entry(EntryKind::ConfChange, conf.encode())?;
        self.push_conf(index, conf);
        Ok(index)
    }

    /// A configuration entry at `index` entered the log: it is in force from now on.
    pub(super) fn push_conf(&mut self, index: u64, conf: ConfState) {
        // Forget configurations nobody can need any more: keep the latest one at or below the
        // applied index (a snapshot taken there records it, see [`Raft::conf_at`]) and all later
        // ones (the uncommitted ones may still be overwritten).
        let applied = self.log.applied;
        let keep_from = self
            .conf_history
            .iter()
            .rposition(|(i, _)| *i <= applied)
            .unwrap_or(0);
        self.conf_history.drain(..keep_from);
        self.conf_history.push((index, conf));
        self.conf_changed();
    }

    /// The log was overwritten from `from` on: configurations that lived there are gone, and
    /// the latest one before `from` is in force again.
    pub(super) fn truncate_confs(&mut self, from: u64) {
        let before = self.conf_history.len();
        while self.conf_history.len() > 1
            && self.conf_history.last().is_some_and(|(i, _)| *i >= from)
        {
            self.conf_history.pop();
        }
        if self.conf_history.len() != before {
            self.conf_changed();
        }
    }

    /// A snapshot replaced the log: its membership is the only one left.
    pub(super) fn reset_confs(&mut self, index: u64, conf: ConfState) {
        self.conf_history = vec![(index, conf)];
        self.conf_changed();
    }

    /// Makes the last configuration of the history the one in force, and, on a leader, brings
    /// the progress table in line with it.
    fn conf_changed(&mut self) {
        if let Some((i, c)) = self.conf_history.last() {
            self.conf_index = *i;
            self.conf = c.clone();
        }
        tracing::info!(
            id = self.cfg.id,
            index = self.conf_index,
            voters = ?self.conf.voters,
            learners = ?self.conf.learners,
            "membership in force"
        );
        if self.role != Role::Leader {
            return;
        }
        let Ok(last) = self.log.last_index() else {
            return;
        };
        let me = self.cfg.id;
        let members: Vec<NodeId> = self.conf.members().filter(|&id| id != me).collect();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            let learner = self.conf.learners.contains(&id);
            self.progress
                .entry(id)
                .or_insert_with(|| {
                    // A new member: probe from our last index; the first rejection tells us
                    // where its log really ends.
                    let mut pr = Progress::new(last, learner);
                    pr.recent_active = true;
                    pr
                })
                .learner = learner;
        }
        if self
            .lead_transferee
            .is_some_and(|t| !self.conf.voters.contains(&t))
        {
            self.lead_transferee = None;
        }
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
        } else if let Ok(last) = self.log.last_index() {
            // Start catching it up now rather than at the next heartbeat; TimeoutNow follows
            // the acknowledgement that makes it current.
            let _ = self.send_append(target, last);
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
