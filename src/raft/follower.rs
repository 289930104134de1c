//! Follower side: accepting appends, heartbeats and snapshots from the leader.

use super::core::Raft;
use super::errors::Result;
use super::log::Appended;
use super::log_store::Storage;
use super::types::{ConfState, Entry, EntryKind, Message, MessageBody, ReadState, Snapshot};

impl<S: Storage> Raft<S> {
    pub(super) fn step_follower(&mut self, m: Message) -> Result<()> {
        let from = m.from;
        match m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.handle_append(from, prev_log_index, prev_log_term, &entries, commit)
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.log.commit_to(commit)?;
                self.send(
                    from,
                    self.term,
                    MessageBody::HeartbeatResponse { read_round },
                );
                Ok(())
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.handle_snapshot(from, snapshot)
            }
            MessageBody::TimeoutNow => {
                tracing::info!(
                    id = self.cfg.id,
                    term = self.term,
                    "TimeoutNow: campaigning at once"
                );
                self.hup(true)
            }
            MessageBody::ReadIndex { ctx } => {
                // Forwarded to us by mistake (stale leader view): bounce it to our leader.
                match self.leader {
                    Some(l) if l != from => self.send(l, self.term, MessageBody::ReadIndex { ctx }),
                    _ => self.send(
                        from,
                        self.term,
                        MessageBody::ReadIndexResponse { ctx, index: None },
                    ),
                }
                Ok(())
            }
            MessageBody::ReadIndexResponse { ctx, index } => {
                self.read_states.push(ReadState { ctx, index });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn handle_append(
        &mut self,
        from: u64,
        prev: u64,
        prev_term: u64,
        entries: &[Entry],
        commit: u64,
    ) -> Result<()> {
        let committed = self.log.committed;
        if prev < committed {
            // Everything up to our commit index matches any leader's log: say so, and let the
            // leader continue from there.
            let last_index = self.log.last_index()?;
            self.send(
                from,
                self.term,
                MessageBody::AppendEntriesResponse {
                    success: true,
                    match_index: committed,
                    reject_index: 0,
                    conflict_term: 0,
                    conflict_index: 0,
                    last_index,
                    leader_hint: None,
                },
            );
            return Ok(());
        }
        match self.log.maybe_append(prev, prev_term, entries)? {
            Some(Appended {
                last_new,
                from: written_from,
            }) => {
                if let Some(at) = written_from {
                    self.adopt_confs(at, entries);
                }
                self.log.commit_to(commit.min(last_new))?;
                let last_index = self.log.last_index()?;
                self.send(
                    from,
                    self.term,
                    MessageBody::AppendEntriesResponse {
                        success: true,
                        match_index: last_new,
                        reject_index: 0,
                        conflict_term: 0,
                        conflict_index: 0,
                        last_index,
                        leader_hint: None,
                    },
                );
            }
            None => {
                let (conflict_term, conflict_index) = self.log.conflict_hint(prev)?;
                let last_index = self.log.last_index()?;
                self.send(
                    from,
                    self.term,
                    MessageBody::AppendEntriesResponse {
                        success: false,
                        match_index: 0,
                        reject_index: prev,
                        conflict_term,
                        conflict_index,
                        last_index,
                        leader_hint: self.leader,
                    },
                );
            }
        }
        Ok(())
    }

    /// The log was written from `from` on with `entries` (of which those at or after `from`
    /// are new): drop the configurations the old tail held, adopt the new ones.
    fn adopt_confs(&mut self, from: u64, entries: &[Entry]) {
        self.truncate_confs(from);
        for e in entries.iter().filter(|e| e.index >= from) {
            if e.kind == EntryKind::ConfChange {
                match ConfState::decode(&e.data) {
                    Some(c) => self.push_conf(e.index, c),
                    None => tracing::error!(index = e.index, "undecodable configuration entry"),
                }
            }
        }
    }

    fn handle_snapshot(&mut self, from: u64, snapshot: Snapshot) -> Result<()> {
        let index = snapshot.meta.index;
        let term = snapshot.meta.term;
        let match_index = if index <= self.log.committed {
            self.log.committed
        } else if self.log.match_term(index, term) {
            // We already hold the snapshot's last entry: just move commit forward.
            self.log.commit_to(index)?;
            index
        } else {
            tracing::info!(id = self.cfg.id, index, term, "restoring snapshot");
            self.reset_confs(snapshot.meta.index, snapshot.meta.conf.clone());
            self.log.restore(snapshot);
            index
        };
        let last_index = self.log.last_index()?;
        self.send(
            from,
            self.term,
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                reject_index: 0,
                conflict_term: 0,
                conflict_index: 0,
                last_index,
                leader_hint: None,
            },
        );
        Ok(())
    }
}
