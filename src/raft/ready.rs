//! The Ready/advance cycle: how the application learns what to persist, send and apply.

use super::core::Raft;
use super::errors::Result;
use super::log_store::Storage;
use super::types::{Entry, HardState, Message, ReadState, Role, Snapshot, SoftState};

/// Everything the application must do for the core, in this order:
///
/// 1. send `messages` (they may leave before anything is persisted);
/// 2. persist `snapshot`, then `entries` (truncating any stored suffix from `entries[0].index`),
///    then `hard_state`, and fsync;
/// 3. only then send `persisted_messages` (votes and acknowledgements promise durability);
/// 4. apply `snapshot` and then `committed_entries` to the state machine;
/// 5. hand the Ready back through [`Raft::advance`].
///
/// `read_states` may be answered once the state machine has applied their index.
#[derive(Debug, Default)]
#[must_use = "a Ready must be handled and passed back to advance()"]
pub struct Ready {
    /// Role or leader changed since the previous Ready.
    pub soft_state: Option<SoftState>,
    /// Term, vote or commit changed: persist before sending `persisted_messages`.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader to persist and restore.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to stable storage.
    pub entries: Vec<Entry>,
    /// Messages that may be sent right away (the leader's replication traffic).
    pub messages: Vec<Message>,
    /// Messages to send only after this Ready's state is durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Answers to `read_index` calls.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// True when nothing needs to be persisted (no fsync needed).
    pub fn nothing_to_persist(&self) -> bool {
        self.hard_state.is_none() && self.snapshot.is_none() && self.entries.is_empty()
    }
}

impl<S: Storage> Raft<S> {
    /// True when [`Raft::ready`] has something to hand out.
    pub fn has_ready(&self) -> bool {
        (self.role == super::types::Role::Leader && self.commit_dirty)
            || self.soft_state() != self.prev_soft_state
            || self.hard_state() != self.prev_hard_state
            || self.log.has_unsent()
            || self.log.has_committed()
            || !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || !self.read_states.is_empty()
            || (self.role == Role::Leader && self.leader_has_unsent())
    }

    fn leader_has_unsent(&self) -> bool {
        let Ok(last) = self.log.last_index() else {
            return false;
        };
        let max = self.cfg.max_inflight_msgs;
        self.progress
            .values()
            .any(|p| p.next <= last && p.can_send(max))
    }

    /// Collects what the application must do now. Call [`Raft::advance`] with it when done.
    pub fn ready(&mut self) -> Result<Ready> {
        if self.role == Role::Leader {
            self.flush_appends()?;
        }
        let (snapshot, entries) = self.log.take_unsent();
        let committed_entries = self.log.take_committed(self.cfg.max_apply_bytes)?;
        if self.role == Role::Leader && self.uncommitted_bytes > 0 {
            let term = self.term;
            let done: u64 = committed_entries
                .iter()
                .filter(|e| e.term == term)
                .map(|e| e.data.len() as u64)
                .sum();
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(done);
        }
        let hs = self.hard_state();
        let hard_state = (hs != self.prev_hard_state).then_some(hs);
        self.prev_hard_state = hs;
        let ss = self.soft_state();
        let soft_state = (ss != self.prev_soft_state).then_some(ss);
        self.prev_soft_state = ss;
        Ok(Ready {
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages: std::mem::take(&mut self.msgs),
            persisted_messages: std::mem::take(&mut self.msgs_after_persist),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
        })
    }

    /// The application persisted and applied what `rd` carried.
    pub fn advance(&mut self, rd: Ready) -> Result<()> {
        if let Some(s) = &rd.snapshot {
            self.log.stable_snap_to(s.meta.index);
            self.log.applied_to(s.meta.index);
        }
        if let Some(e) = rd.committed_entries.last() {
            self.log.applied_to(e.index);
        }
        match rd.entries.last() {
            Some(e) => self.on_persisted(e.index, e.term),
            None => self.on_persisted(0, 0),
        }
    }

    /// The application made the entries up to (`index`, `term`) durable, after the
    /// [`Raft::advance`] of their Ready (whose `entries` it emptied): the asynchronous half
    /// of persisting, for an application that fsyncs on another thread while the core goes
    /// on stepping (raft-rs's `on_persist_ready`, etcd's `AsyncStorageWrites`). A report for
    /// entries a later append replaced is ignored. On a leader, its own persisted entries now
    /// count toward the commit index. Reports must come in the order the Readies were handed
    /// out, and the Ready's `persisted_messages` may leave only after this call.
    pub fn on_persisted(&mut self, index: u64, term: u64) -> Result<()> {
        if index > 0 {
            self.log.stable_to(index, term);
        }
        if self.role == Role::Leader {
            let persisted = self.log.persisted_index();
            if persisted > self.self_match {
                self.self_match = persisted;
                self.maybe_commit()?;
            }
        }
        Ok(())
    }
}
