//! Membership changes and leadership transfer (thesis chapter 4, section 3.10): proposing a
//! single-server change, the history of configurations in force (a configuration is in force
//! as soon as its entry is in the log, committed or not), and handing leadership over, which
//! a leader removed from the voters does on its own.

use super::core::Raft;
use super::errors::ProposeError;
use super::log_store::Storage;
use super::progress::Progress;
use super::types::{ConfState, EntryKind, MessageBody, NodeId, Role};

impl<S: Storage> Raft<S> {
    // ----- a leader outside the configuration ----------------------------------------------

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

    // ----- proposing a change and the history in force -------------------------------------

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

    // ----- leadership transfer -------------------------------------------------------------

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
}
