//! ReadIndex (thesis section 6.4): linearizable reads without writing to the log.
//!
//! Reads are batched into rounds. A round records the commit index when it starts and confirms
//! leadership with one heartbeat broadcast; once a majority echoes the round, every read of the
//! round (and of earlier rounds) is answered with that index. Reads that arrive while a round is
//! in flight wait for the next one, so one heartbeat serves any number of reads.

use std::collections::VecDeque;

use super::core::Raft;
use super::log_store::Storage;
use super::types::{MessageBody, NodeId, ReadState};

/// A read waiting for its round to be confirmed.
#[derive(Clone, Debug)]
pub(super) struct PendingRead {
    ctx: u64,
    /// Who asked: ourselves, or a follower that forwarded it.
    from: NodeId,
    /// 0 until assigned to a round.
    round: u64,
    /// Commit index when the round started.
    index: u64,
}

/// The leader's queue of reads. Invariant: assigned reads come first, in increasing round.
#[derive(Debug, Default)]
pub(super) struct ReadQueue {
    /// Latest round started. Monotonic for the node's lifetime, so stale echoes never confirm a
    /// newer round.
    pub(super) round: u64,
    queue: VecDeque<PendingRead>,
}

/// Upper bound on queued reads; beyond it new reads are refused (the caller retries), so a
/// leader that cannot reach its quorum does not buffer without limit.
const MAX_PENDING_READS: usize = 65_536;

impl<S: Storage> Raft<S> {
    pub(super) fn leader_read(&mut self, ctx: u64, from: NodeId) {
        if self.reads.queue.len() >= MAX_PENDING_READS {
            self.answer_read(ctx, from, None);
            return;
        }
        self.reads.queue.push_back(PendingRead {
            ctx,
            from,
            round: 0,
            index: 0,
        });
        self.maybe_start_read_round();
    }

    /// Starts a round if reads wait, none is in flight, and this leader has committed an entry
    /// of its own term (before that, its commit index may be stale: section 8 of the paper).
    pub(super) fn maybe_start_read_round(&mut self) {
        let committed_in_term = self.log.term_opt(self.log.committed) == Some(self.term);
        if !committed_in_term {
            return;
        }
        let round = self.reads.round;
        let in_flight = self
            .reads
            .queue
            .iter()
            .any(|r| r.round != 0 && r.round == round);
        let waiting = self.reads.queue.iter().any(|r| r.round == 0);
        if in_flight || !waiting {
            return;
        }
        self.reads.round += 1;
        let round = self.reads.round;
        let index = self.log.committed;
        for r in self.reads.queue.iter_mut().filter(|r| r.round == 0) {
            r.round = round;
            r.index = index;
        }
        if self.conf.voters.len() == 1 {
            self.on_read_ack();
        } else {
            self.bcast_heartbeat();
        }
    }

    /// A peer echoed a round: release every read whose round a majority has now confirmed.
    pub(super) fn on_read_ack(&mut self) {
        let me = self.cfg.id;
        let mut acked: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|v| {
                if *v == me {
                    self.reads.round
                } else {
                    self.progress.get(v).map_or(0, |p| p.read_round)
                }
            })
            .collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&confirmed) = acked.get(self.quorum() - 1) else {
            return;
        };
        while let Some(r) = self.reads.queue.front() {
            if r.round == 0 || r.round > confirmed {
                break;
            }
            if let Some(r) = self.reads.queue.pop_front() {
                self.answer_read(r.ctx, r.from, Some(r.index));
            }
        }
        self.maybe_start_read_round();
    }

    fn answer_read(&mut self, ctx: u64, from: NodeId, index: Option<u64>) {
        if from == self.cfg.id {
            self.read_states.push(ReadState { ctx, index });
        } else {
            self.send(
                from,
                self.term,
                MessageBody::ReadIndexResponse { ctx, index },
            );
        }
    }

    /// Leadership is lost: every queued read fails so the callers retry elsewhere.
    pub(super) fn fail_pending_reads(&mut self) {
        let pending: Vec<PendingRead> = self.reads.queue.drain(..).collect();
        for r in pending {
            self.answer_read(r.ctx, r.from, None);
        }
    }
}
