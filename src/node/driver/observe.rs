//! The driver's metrics: what it reports into the node's [`Metrics`] once per iteration (the
//! gauges), at each role change (leader changes), and per answered proposal (one atomic add).
//! Kept here so the driver's own file stays about driving.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use super::{Driver, ProposeReply};
use crate::chat::Applied;
use crate::metrics::{Metrics, ProposalOutcome};
use crate::node::{NodeError, NodeStorage};
use crate::raft::{LogStore, NodeId, Role};

/// What the disk storage tells about itself, read once per iteration.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DiskGauges {
    wal_bytes: u64,
    wal_segments: u64,
    bytes_written: u64,
}

/// How the driver reads [`DiskGauges`] from its storage: set only for the disk storage (a
/// plain fn, so the driver stays generic over any `LogStore`).
pub(super) type DiskProbe<S> = fn(&S) -> DiskGauges;

/// The [`DiskProbe`] of [`NodeStorage`].
pub(super) fn disk_probe(s: &NodeStorage) -> DiskGauges {
    DiskGauges {
        wal_bytes: s.wal_bytes(),
        wal_segments: s.wal_segments() as u64,
        bytes_written: s.stats().bytes_written,
    }
}

/// Has the storage's fsync durations land in `metrics`' histogram.
pub(super) fn observe_fsyncs(s: &NodeStorage, metrics: &Metrics) {
    let h = metrics.fsync_seconds.clone();
    s.observe_syncs(Box::new(move |d: Duration| h.observe(d.as_secs_f64())));
}

/// What the driver remembers between iterations to report changes.
pub(super) struct Observed<S> {
    pub(super) disk: Option<DiskProbe<S>>,
    /// The last leader this node knew (kept through leaderless spells).
    leader: Option<NodeId>,
    bytes_written: u64,
    role: Option<Role>,
    /// The lag gauges of the followers, while this node leads.
    lag: BTreeMap<NodeId, Gauge>,
}

impl<S> Observed<S> {
    pub(super) fn new(disk: Option<DiskProbe<S>>) -> Self {
        Observed {
            disk,
            leader: None,
            bytes_written: 0,
            role: None,
            lag: BTreeMap::new(),
        }
    }

    /// A role change named `leader`: a leader other than the last one known is a leader change.
    pub(super) fn saw_leader(&mut self, metrics: &Metrics, leader: Option<NodeId>) {
        if let Some(l) = leader {
            if self.leader != Some(l) {
                self.leader = Some(l);
                metrics.leader_changes.inc();
            }
        }
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Follower => "follower",
        Role::PreCandidate => "pre_candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Sets the state machine's gauges from scratch (at start and after a restore).
pub(super) fn state_gauges(m: &Metrics, sm: &crate::chat::ChatState) {
    m.messages.set(gauge(sm.message_count()));
    m.rooms.set(gauge(sm.room_count() as u64));
}

/// Counts the messages a batch stored (duplicates store nothing).
pub(super) fn stored<'a>(m: &Metrics, outcomes: impl Iterator<Item = &'a Applied>) {
    let n = outcomes
        .filter(|o| {
            matches!(
                o,
                Applied::Sent {
                    duplicate: false,
                    ..
                }
            )
        })
        .count();
    m.messages.inc_by(gauge(n as u64));
}

/// Counts a snapshot put in force: `local` (with the time since it was decided) or `leader`.
pub(super) fn snapshot_taken(
    m: &Metrics,
    source: &'static str,
    bytes: usize,
    started: Option<std::time::Instant>,
) {
    m.snapshots
        .get_or_create(&vec![("source", source.into())])
        .inc();
    m.snapshot_bytes.set(gauge(bytes as u64));
    if let Some(t) = started {
        m.snapshot_seconds.observe(t.elapsed().as_secs_f64());
    }
}

/// Answers a proposal and counts its outcome.
pub(super) fn answer(metrics: &Metrics, reply: ProposeReply, r: Result<Applied, NodeError>) {
    metrics.proposal(match &r {
        Ok(_) => ProposalOutcome::Ok,
        Err(NodeError::NotLeader { .. }) => ProposalOutcome::NotLeader,
        Err(NodeError::Chat(_)) => ProposalOutcome::Rejected,
        Err(NodeError::Unavailable(_) | NodeError::Overloaded(_)) => ProposalOutcome::Unavailable,
        Err(NodeError::OutcomeUnknown(_)) => ProposalOutcome::Unknown,
        Err(_) => ProposalOutcome::Error,
    });
    let _ = reply.send(r);
}

impl<S: LogStore + Send + 'static> Driver<S> {
    /// Sets the gauges from the core and the storage: once per driver iteration.
    pub(super) fn record_metrics(&mut self) {
        let m = &self.cfg.metrics;
        let r = &self.raft;
        m.term.set(gauge(r.term()));
        if self.observed.role != Some(r.role()) {
            self.observed.role = Some(r.role());
            m.set_role(role_name(r.role()));
        }
        m.leader_id.set(gauge(
            if self.removed { None } else { r.leader() }.unwrap_or(0),
        ));
        m.commit_index.set(gauge(r.commit_index()));
        m.applied_index.set(gauge(r.applied_index()));
        let last = r.log().last_index().unwrap_or(0);
        m.last_index.set(gauge(last));
        m.snapshot_index.set(gauge(self.snapshot_index));
        if r.role() == Role::Leader {
            for (&id, p) in r.progress().iter() {
                if id == self.cfg.id {
                    continue;
                }
                self.observed
                    .lag
                    .entry(id)
                    .or_insert_with(|| m.peer_lag.get_or_create_owned(&peer_label(id)))
                    .set(gauge(last.saturating_sub(p.matched)));
            }
        } else if !self.observed.lag.is_empty() {
            // Only a leader knows its followers' lag: stale values would mislead alerts.
            self.observed.lag.clear();
            m.peer_lag.clear();
        }
        if let Some(probe) = self.observed.disk {
            let d = probe(&self.raft.log().storage);
            m.wal_bytes.set(gauge(d.wal_bytes));
            m.wal_segments.set(gauge(d.wal_segments));
            m.disk_bytes_written
                .inc_by(d.bytes_written.saturating_sub(self.observed.bytes_written));
            self.observed.bytes_written = d.bytes_written;
        }
    }
}

fn peer_label(id: NodeId) -> crate::metrics::Labels {
    vec![("peer", id.to_string())]
}
