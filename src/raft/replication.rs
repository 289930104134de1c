//! Leader side: sending appends and snapshots, handling their answers, and the commit rule.

use super::core::Raft;
use super::errors::{Result, StorageError};
use super::log_store::Storage;
use super::progress::ProgressState;
use super::types::{Message, MessageBody, NodeId, Role};

impl<S: Storage> Raft<S> {
    pub(super) fn step_leader(&mut self, m: Message) -> Result<()> {
        let from = m.from;
        match m.body {
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                reject_index,
                conflict_term,
                conflict_index,
                ..
            } => {
                let Some(pr) = self.progress.get_mut(&from) else {
                    return Ok(());
                };
                pr.recent_active = true;
                if success {
                    self.on_append_success(from, match_index)?;
                } else {
                    self.on_append_reject(from, reject_index, conflict_term, conflict_index)?;
                }
                Ok(())
            }
            MessageBody::HeartbeatResponse { read_round } => {
                let last = self.log.last_index()?;
                let Some(pr) = self.progress.get_mut(&from) else {
                    return Ok(());
                };
                pr.recent_active = true;
                pr.on_heartbeat_response(last);
                if read_round > pr.read_round {
                    pr.read_round = read_round;
                    self.on_read_ack();
                }
                Ok(())
            }
            MessageBody::ReadIndex { ctx } => {
                self.leader_read(ctx, from);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_append_success(&mut self, from: NodeId, index: u64) -> Result<()> {
        let first = self.log.first_index()?;
        let last = self.log.last_index()?;
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        let old_match = pr.matched;
        if !pr.maybe_update(index) && index < old_match {
            return Ok(());
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot { index: snap } => {
                if pr.matched >= snap || pr.matched + 1 >= first {
                    pr.become_replicate();
                }
            }
            ProgressState::Replicate => {}
        }
        let caught_up = pr.matched == last;
        if pr.matched > old_match {
            self.maybe_commit()?;
        }
        if self.lead_transferee == Some(from) && caught_up {
            self.send(from, self.term, MessageBody::TimeoutNow);
        }
        Ok(())
    }

    fn on_append_reject(
        &mut self,
        from: NodeId,
        reject_index: u64,
        conflict_term: u64,
        conflict_index: u64,
    ) -> Result<()> {
        // Fast back-off: skip the follower's whole conflicting term at once.
        let mut hint = conflict_index;
        if conflict_term > 0 {
            let mut i = reject_index.min(self.log.last_index()?);
            loop {
                match self.log.term(i) {
                    Ok(t) if t > conflict_term && i > 0 => i -= 1,
                    Ok(t) if t == conflict_term => {
                        hint = i + 1;
                        break;
                    }
                    Ok(_) => break,
                    Err(StorageError::Compacted) | Err(StorageError::Unavailable) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.maybe_decr_to(reject_index, hint);
        }
        Ok(())
    }

    /// The commit rule (section 5.4.2): the highest index stored on a majority of voters, but
    /// only if that entry is from the current term. Older entries commit indirectly.
    pub(super) fn maybe_commit(&mut self) -> Result<bool> {
        let me = self.cfg.id;
        let mut matched: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|v| {
                if *v == me {
                    self.self_match
                } else {
                    self.progress.get(v).map_or(0, |p| p.matched)
                }
            })
            .collect();
        if matched.is_empty() {
            return Ok(false);
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let q = matched[self.quorum() - 1];
        if q > self.log.committed && self.log.term(q)? == self.term {
            self.log.committed = q;
            self.commit_dirty = true;
            self.maybe_start_read_round();
            if self.removed_and_committed() {
                self.hand_over();
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Leader only: sends what each follower is missing, within its in-flight window. Called
    /// once per Ready, so that many proposals ride in one message per follower.
    pub(super) fn flush_appends(&mut self) -> Result<()> {
        let ids: Vec<NodeId> = self.progress.keys().copied().collect();
        let last = self.log.last_index()?;
        let commit_dirty = std::mem::take(&mut self.commit_dirty);
        for id in ids {
            let mut sent = false;
            while self.send_append(id, last)? {
                sent = true;
            }
            if commit_dirty && !sent {
                self.send_commit(id)?;
            }
        }
        Ok(())
    }

    /// Sends one append to `to` if its window allows and it lacks entries. Returns whether it
    /// sent one (and may be able to send another).
    pub(super) fn send_append(&mut self, to: NodeId, last: u64) -> Result<bool> {
        let max_inflight = self.cfg.max_inflight_msgs;
        let Some(pr) = self.progress.get(&to) else {
            return Ok(false);
        };
        // A probe goes out even with nothing new to send while the follower's log is not
        // known to match ours (a node just added, or one that restarted): otherwise it would
        // wait for the next proposal to be found out.
        let empty_probe = pr.state == ProgressState::Probe && pr.matched < last;
        if !pr.can_send(max_inflight) || (pr.next > last && !empty_probe) {
            return Ok(false);
        }
        let next = pr.next;
        let prev = next - 1;
        let prev_term = match self.log.term(prev) {
            Ok(t) => t,
            Err(StorageError::Compacted) => return self.send_snapshot(to),
            Err(e) => return Err(e.into()),
        };
        let entries = match self
            .log
            .entries(next, last + 1, Some(self.cfg.max_size_per_msg))
        {
            Ok(e) => e,
            Err(StorageError::Compacted) => return self.send_snapshot(to),
            Err(e) => return Err(e.into()),
        };
        let sent_last = entries.last().map(|e| e.index);
        let commit = self.log.committed;
        self.send(
            to,
            self.term,
            MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                commit,
            },
        );
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.on_sent(sent_last);
            return Ok(pr.state == ProgressState::Replicate);
        }
        Ok(false)
    }

    /// An empty append that only carries the new commit index to an in-sync follower.
    fn send_commit(&mut self, to: NodeId) -> Result<()> {
        let Some(pr) = self.progress.get(&to) else {
            return Ok(());
        };
        if pr.state != ProgressState::Replicate {
            return Ok(());
        }
        let prev = pr.next - 1;
        let Ok(prev_term) = self.log.term(prev) else {
            return Ok(());
        };
        let commit = self.log.committed;
        self.send(
            to,
            self.term,
            MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries: Vec::new(),
                commit,
            },
        );
        Ok(())
    }

    fn send_snapshot(&mut self, to: NodeId) -> Result<bool> {
        let snapshot = match self.log.storage.snapshot() {
            Ok(s) => s,
            Err(StorageError::SnapshotTemporarilyUnavailable) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let index = snapshot.meta.index;
        tracing::debug!(id = self.cfg.id, to, index, "sending snapshot");
        self.send(to, self.term, MessageBody::InstallSnapshot { snapshot });
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(index);
        }
        Ok(false)
    }

    /// Tells the leader how the transfer of the snapshot it asked to send to `to` ended: `ok`
    /// once the whole snapshot was delivered to the peer, `false` when the transfer failed or
    /// was dropped before delivery. Until then the peer gets nothing else from this leader
    /// (see [`ProgressState::Snapshot`]). Reports for a peer with no snapshot outstanding,
    /// or to a node that is no longer leader, are ignored.
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&to) {
            if pr.on_snapshot_report(ok) {
                tracing::debug!(id = self.cfg.id, to, ok, "snapshot transfer reported");
            }
        }
    }

    pub(super) fn bcast_heartbeat(&mut self) {
        let round = self.reads.round;
        let commit = self.log.committed;
        let targets: Vec<(NodeId, u64)> = self
            .progress
            .iter()
            .map(|(id, pr)| (*id, pr.matched.min(commit)))
            .collect();
        for (id, commit) in targets {
            self.send(
                id,
                self.term,
                MessageBody::Heartbeat {
                    commit,
                    read_round: round,
                },
            );
        }
    }
}
