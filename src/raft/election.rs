//! Elections: who may stand, the pre-vote and vote rounds, counting the answers, granting votes,
//! and the role changes they lead to (thesis sections 3.4 and 9.6). Also the leader's
//! check-quorum count, which decides whether it keeps its role.

use bytes::Bytes;

use super::core::Raft;
use super::errors::Result;
use super::log_store::Storage;
use super::progress::Progress;
use super::types::{Entry, EntryKind, Message, MessageBody, NodeId, ReadState, Role};

impl<S: Storage> Raft<S> {
    // ----- who may stand, and check-quorum -------------------------------------------------

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

    /// Check-quorum: did a majority of voters (ourselves included) talk to us lately? Resets the
    /// activity flags for the next round.
    pub(super) fn quorum_active(&mut self) -> bool {
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
        self.uncommitted_bytes = 0;
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

    pub(super) fn handle_vote_request(
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

    pub(super) fn step_candidate(&mut self, m: Message) -> Result<()> {
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
}
