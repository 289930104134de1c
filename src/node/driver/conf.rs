//! The driver's membership work: following `raft.conf()` (transport peers, this node's own
//! addition or removal), proposing membership changes and answering them at commit, and
//! starting leadership transfers.

use std::collections::BTreeMap;

use tokio::sync::oneshot;

use super::Driver;
use crate::node::membership::{self, ConfChanged, ConfOp, LeaderView, MembershipError};
use crate::node::NodeError;
use crate::raft::{ConfState, LogStore, NodeId, Role};

pub(super) type ConfReply = oneshot::Sender<Result<ConfChanged, NodeError>>;

/// A proposed configuration entry waiting to commit.
pub(super) struct ConfWaiter {
    /// Term the entry was proposed in: it is ours only if the log still has this term there.
    pub(super) term: u64,
    /// The configuration it carries, returned to the caller.
    pub(super) conf: ConfState,
    pub(super) reply: ConfReply,
}

impl<S: LogStore + Send + 'static> Driver<S> {
    /// Follows the membership in force: when `raft.conf()` differs from what the transport was
    /// set up for, reconnect (new members get a link, removed ones lose theirs), and notice
    /// this node's own addition or removal.
    pub(super) fn sync_membership(&mut self) {
        let pending = self.raft.conf_change_pending();
        let conf_changed = self.known_conf.as_ref() != Some(self.raft.conf());
        if !conf_changed && self.known_pending == pending {
            return;
        }
        self.known_pending = pending;
        let conf = self.raft.conf().clone();
        let me = self.cfg.id;
        let mut want: BTreeMap<NodeId, String> = BTreeMap::new();
        if conf.voters.is_empty() {
            // No membership learned yet (a fresh joiner): reach whoever we were told about, so
            // our answers to the leader's first messages have somewhere to go.
            let told = self.cfg.peers.keys().chain(self.cfg.known_addrs.keys());
            for &id in told.chain(self.cfg.known_peer_addrs.keys()) {
                if let Some(a) = self.cfg.peer_addr_of(id) {
                    want.insert(id, a);
                }
            }
        }
        // Peer links go to peer listeners, never to client ports.
        for id in conf.members() {
            if let Some(a) = self.peer_addr_of(id) {
                want.insert(id, a);
            }
        }
        if pending {
            // Membership is in force on append, but a node that an uncommitted change removed
            // may still lead (it replicates its own removal) or be needed to elect one: keep
            // its link until the change commits.
            for (id, a) in self.transport.peers() {
                want.entry(id).or_insert(a);
            }
        }
        want.remove(&me);
        for e in self.transport.set_peers(&want) {
            tracing::warn!(id = me, error = %e, "cannot reach a member at its address");
        }
        if conf_changed && self.known_conf.is_some() {
            tracing::info!(
                id = me,
                voters = ?conf.voters,
                learners = ?conf.learners,
                addrs = ?conf.addrs,
                "membership changed"
            );
        }
        let member = conf.contains(me);
        if member && !self.was_member {
            let role = if conf.voters.contains(&me) {
                "voter"
            } else {
                "learner"
            };
            tracing::info!(id = me, role, "this node is a member");
        }
        if member && self.removed {
            self.removed = false;
        }
        // Removed only once the change is committed: until then a removed leader still leads
        // (it replicates its own removal), and an overwritten change would bring it back.
        if !member && self.was_member && !self.removed && !pending {
            tracing::warn!(
                id = me,
                "this node has been REMOVED from the cluster: it no longer takes part (it \
                 will not campaign and receives no replication); stop it, or add it again"
            );
            self.removed = true;
        }
        self.was_member |= member;
        self.known_conf = Some(conf);
    }

    /// Answers membership changes whose entry is committed: committed at or above its index
    /// with the term it was proposed in means it is ours and durable on a majority.
    pub(super) fn settle_conf_waiters(&mut self) {
        let commit = self.raft.commit_index();
        while let Some(entry) = self.conf_waiters.first_entry() {
            let index = *entry.key();
            if index > commit {
                break;
            }
            let w = entry.remove();
            let ours = match self.raft.log().term(index) {
                Ok(t) => t == w.term,
                // Compacted: committed long ago; ours if we still lead in that term.
                Err(_) => self.raft.role() == Role::Leader && self.raft.term() == w.term,
            };
            let answer = if ours {
                tracing::info!(id = self.cfg.id, index, voters = ?w.conf.voters,
                    learners = ?w.conf.learners, "membership change committed");
                Ok(ConfChanged {
                    conf: w.conf,
                    index,
                })
            } else {
                Err(NodeError::Unavailable(
                    "the membership change was overwritten by a new leader; check Status and \
                     retry"
                        .into(),
                ))
            };
            let _ = w.reply.send(answer);
        }
    }

    pub(super) fn change_conf(&mut self, op: ConfOp, reply: ConfReply) {
        if self.raft.role() != Role::Leader {
            let _ = reply.send(Err(NodeError::NotLeader {
                leader: self.leader_addr(self.raft.leader()),
            }));
            return;
        }
        let last_index = self.raft.log().last_index().unwrap_or(0);
        let progress = self.raft.progress();
        let me = self.cfg.id;
        let matched = |id: NodeId| {
            if id == me {
                Some(last_index)
            } else {
                progress.get(&id).map(|p| p.matched)
            }
        };
        let view = LeaderView {
            last_index,
            matched: &matched,
        };
        let next = match membership::plan(self.raft.conf(), &view, &op) {
            Ok(Some(next)) => next,
            Ok(None) => {
                let _ = reply.send(Ok(ConfChanged {
                    conf: self.raft.conf().clone(),
                    index: 0,
                }));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        match self.raft.propose_conf_change(next.clone()) {
            Ok(index) => {
                tracing::info!(id = me, index, ?op, "membership change proposed");
                let term = self.raft.term();
                self.conf_waiters.insert(
                    index,
                    ConfWaiter {
                        term,
                        conf: next,
                        reply,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(self.propose_error(e)));
            }
        }
    }

    /// How a refused proposal is answered.
    pub(super) fn propose_error(&self, e: crate::raft::ProposeError) -> NodeError {
        use crate::raft::ProposeError as P;
        match e {
            P::NotLeader { leader_hint } => NodeError::NotLeader {
                leader: self.leader_addr(leader_hint),
            },
            P::ConfChangePending => MembershipError::Pending.into(),
            P::InvalidConfChange(m) => MembershipError::FailedPrecondition(m).into(),
            P::TransferInProgress => NodeError::Unavailable(
                "a leadership transfer is in progress; retry in a moment".into(),
            ),
            P::UncommittedLimit { limit } => NodeError::Overloaded(format!(
                "the leader holds {limit} bytes of uncommitted entries; retry later"
            )),
            P::LeaderNotReady => NodeError::Unavailable(
                "the new leader has not committed an entry of its term yet; retry in a moment"
                    .into(),
            ),
        }
    }

    pub(super) fn transfer_leader(&mut self, target: NodeId) -> Result<NodeId, NodeError> {
        if self.raft.role() != Role::Leader {
            return Err(NodeError::NotLeader {
                leader: self.leader_addr(self.raft.leader()),
            });
        }
        let me = self.cfg.id;
        let conf = self.raft.conf();
        let target = if target == 0 {
            // The most up-to-date other voter: it needs the least catching up first.
            self.raft
                .progress()
                .iter()
                .filter(|(id, _)| **id != me && conf.voters.contains(id))
                .max_by_key(|(id, p)| (p.matched, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id)
                .ok_or_else(|| {
                    MembershipError::FailedPrecondition("there is no other voter".into())
                })?
        } else {
            target
        };
        if target == me {
            return Ok(me);
        }
        if !conf.contains(target) {
            return Err(MembershipError::NotFound(format!("node {target} is not a member")).into());
        }
        if !conf.voters.contains(&target) {
            return Err(MembershipError::FailedPrecondition(format!(
                "node {target} is a learner; only a voter can lead"
            ))
            .into());
        }
        self.raft
            .transfer_leader(target)
            .map_err(|e| self.propose_error(e))?;
        tracing::info!(id = me, to = target, "leadership transfer started");
        Ok(target)
    }
}
