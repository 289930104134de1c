//! The leader's view of each follower's replication (thesis section 3.5, etcd's `tracker`).

use std::collections::VecDeque;

/// How the leader currently talks to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// We do not know where the follower's log matches: send one append at a time and wait.
    Probe,
    /// The follower is in sync: stream appends optimistically, bounded by the in-flight window.
    Replicate,
    /// A snapshot is on its way: send nothing else (no probe, no second snapshot) until the
    /// follower acknowledges it or the application reports the transfer's end with
    /// [`crate::raft::Raft::report_snapshot`] (etcd's `StateSnapshot`). There is no timer: a
    /// transfer of a large state may take much longer than an election timeout, and resending
    /// it on a timer only queues more copies behind the first.
    Snapshot {
        /// Index of the snapshot sent.
        index: u64,
    },
}

/// Replication progress of one peer.
///
/// Invariants: `matched < next`; in `Replicate`, `inflight` holds the last index of each
/// unacknowledged append, in increasing order, at most `max_inflight` of them.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log.
    pub matched: u64,
    /// Next index to send.
    pub next: u64,
    /// See [`ProgressState`].
    pub state: ProgressState,
    /// In `Probe`: an append is outstanding, wait for its answer (or the next heartbeat).
    pub probe_sent: bool,
    /// In `Replicate`: last index of each unacknowledged append.
    pub inflight: VecDeque<u64>,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Highest ReadIndex round this peer acknowledged.
    pub read_round: u64,
    /// Non-voting member.
    pub learner: bool,
    /// `matched` at the previous heartbeat answer, and how many answers in a row found it
    /// unchanged while the follower lagged: detects a replication stream stalled by a lost
    /// append (the follower cannot reject what it never received).
    pub hb_match: u64,
    /// See `hb_match`.
    pub stalls: u8,
}

impl Progress {
    /// Progress for a newly tracked peer of a leader whose last index is `last`.
    pub fn new(last: u64, learner: bool) -> Self {
        Progress {
            matched: 0,
            next: last + 1,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            read_round: 0,
            learner,
            hb_match: 0,
            stalls: 0,
        }
    }

    /// Can the leader send an append now?
    pub fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => self.inflight.len() < max_inflight,
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Records an append carrying entries up to `last` (or a probe with none).
    pub fn on_sent(&mut self, last: Option<u64>) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next = last + 1;
                    self.inflight.push_back(last);
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// The follower matches up to `index`. Returns true if that was news.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        if self.next < index + 1 {
            self.next = index + 1;
        }
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
        updated
    }

    /// A heartbeat answer arrived while the leader's log ends at `last`. After two answers in a
    /// row with no progress in `Replicate`, assume an append was lost and fall back to probing.
    pub fn on_heartbeat_response(&mut self, last: u64) {
        self.probe_sent = false;
        if self.matched >= last || self.matched != self.hb_match {
            self.hb_match = self.matched;
            self.stalls = 0;
            return;
        }
        self.stalls = self.stalls.saturating_add(1);
        if self.stalls >= 2 && self.state == ProgressState::Replicate {
            self.become_probe();
            self.stalls = 0;
        }
    }

    /// Switches to probing from `next`.
    pub fn become_probe(&mut self) {
        let next = match self.state {
            ProgressState::Snapshot { index } => (self.matched + 1).max(index + 1),
            _ => self.matched + 1,
        };
        self.state = ProgressState::Probe;
        self.next = next;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Switches to streaming.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Switches to waiting for a snapshot at `index`.
    pub fn become_snapshot(&mut self, index: u64) {
        self.state = ProgressState::Snapshot { index };
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// The application reports how the snapshot transfer to this peer ended. Either way the
    /// leader goes back to probing, paused until the follower answers or the next heartbeat
    /// answer (as etcd does): after a success from just past the snapshot (the follower's
    /// answer confirms where its log now ends), after a failure from `matched + 1`, which
    /// sends the snapshot again, one heartbeat later, if the log there is still compacted.
    /// Returns false when no snapshot was outstanding (a late or duplicate report, or the
    /// follower's answer already arrived), which changes nothing.
    pub fn on_snapshot_report(&mut self, ok: bool) -> bool {
        let ProgressState::Snapshot { index } = self.state else {
            return false;
        };
        self.become_probe();
        self.next = if ok {
            (self.matched + 1).max(index + 1)
        } else {
            self.matched + 1
        };
        self.probe_sent = true;
        true
    }

    /// A rejection of the append at `reject_index`: move `next` back to `hint`.
    /// Returns false when the rejection is stale (answers an append we no longer care about).
    pub fn maybe_decr_to(&mut self, reject_index: u64, hint: u64) -> bool {
        if let ProgressState::Replicate = self.state {
            if reject_index <= self.matched {
                return false;
            }
            self.become_probe();
            self.next = hint.clamp(self.matched + 1, reject_index.max(self.matched + 1));
            return true;
        }
        if matches!(self.state, ProgressState::Snapshot { .. }) || reject_index + 1 != self.next {
            return false;
        }
        self.next = hint.clamp(self.matched + 1, reject_index.max(self.matched + 1));
        self.probe_sent = false;
        true
    }
}
