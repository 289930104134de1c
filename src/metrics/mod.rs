//! Prometheus metrics: one typed registry per node (no global state, so several nodes in one
//! test process never share counters), the HTTP listener that serves it (`/metrics`, `/healthz`,
//! `/readyz`, in [`http`]) and the tower layer that counts the client gRPC calls ([`grpc`]).
//!
//! This module depends on no other module of the crate: the layers that do the work (the
//! transport, the node's driver, the API) hold an `Arc<Metrics>` and update the metric types
//! here themselves. Hot-path rules: a counter bumped per proposal or per peer message is a
//! handle taken out of its family once (an atomic add, no label lookup); gauges are set once
//! per driver iteration, never per entry. `docs/operations.md` lists every metric.

pub mod grpc;
pub mod http;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Labels of a family: a few fixed keys with small value sets (roles, outcomes, peer ids,
/// gRPC methods and codes), never user data.
pub type Labels = Vec<(&'static str, String)>;

/// A histogram family's constructor (a plain fn, so `Metrics` stays `Debug` and `Clone`).
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The roles a node reports in `rustyraft_role`, in the core's names.
pub const ROLES: [&str; 4] = ["follower", "pre_candidate", "candidate", "leader"];

/// How a proposal ended, the `outcome` label of `rustyraft_proposals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalOutcome {
    /// Committed and applied.
    Ok,
    /// Refused at once: this node is not the leader.
    NotLeader,
    /// Refused by the chat state machine after commit (e.g. a room that does not exist).
    Rejected,
    /// Dropped without effect (leadership transfer, overwritten entry): retry.
    Unavailable,
    /// Leadership or state was lost before the answer: the entry may or may not commit.
    Unknown,
    /// The node stopped, or anything else.
    Error,
}

impl ProposalOutcome {
    const ALL: [ProposalOutcome; 6] = [
        ProposalOutcome::Ok,
        ProposalOutcome::NotLeader,
        ProposalOutcome::Rejected,
        ProposalOutcome::Unavailable,
        ProposalOutcome::Unknown,
        ProposalOutcome::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalOutcome::Ok => "ok",
            ProposalOutcome::NotLeader => "not_leader",
            ProposalOutcome::Rejected => "rejected",
            ProposalOutcome::Unavailable => "unavailable",
            ProposalOutcome::Unknown => "outcome_unknown",
            ProposalOutcome::Error => "error",
        }
    }
}

/// One peer's transport counters, taken out of their families once per peer link, so the
/// per-message path is one atomic add.
#[derive(Clone, Debug, Default)]
pub struct PeerCounters {
    /// Messages written to the peer's stream (after coalescing).
    pub sent: Counter,
    /// Failed peer calls (the link then backs off and reconnects).
    pub failures: Counter,
}

/// Every metric of one node. Cloning is cheap and shares the values.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: std::sync::Arc<Registry>,
    /// Current Raft term.
    pub term: Gauge,
    /// 1 for the role this node is in, 0 for the others (label `role`).
    pub role: Family<Labels, Gauge>,
    /// Id of the leader this node knows, 0 when none.
    pub leader_id: Gauge,
    /// Times this node saw a new leader (a different, known leader id).
    pub leader_changes: Counter,
    /// Highest index known committed.
    pub commit_index: Gauge,
    /// Highest index applied to the chat state machine.
    pub applied_index: Gauge,
    /// Last index in this node's log.
    pub last_index: Gauge,
    /// Index of the latest snapshot.
    pub snapshot_index: Gauge,
    /// Proposals by outcome (label `outcome`); use [`Metrics::proposal`].
    pub proposals: Family<Labels, Counter>,
    proposal_counters: [Counter; 6],
    /// `role`'s gauges, in the order of [`ROLES`].
    role_gauges: [Gauge; 4],
    /// Peer messages stepped into the core.
    pub peer_messages_received: Counter,
    /// Duration of each fsync/fdatasync of the storage, in seconds.
    pub fsync_seconds: Histogram,
    /// Bytes handed to the kernel by the storage.
    pub disk_bytes_written: Counter,
    /// Size of the write-ahead log on disk.
    pub wal_bytes: Gauge,
    /// WAL segment files.
    pub wal_segments: Gauge,
    /// Snapshots put in force, by `source` (`local` compaction or `leader` install).
    pub snapshots: Family<Labels, Counter>,
    /// Time to take a local snapshot (encode, write, install), in seconds.
    pub snapshot_seconds: Histogram,
    /// Size of the latest snapshot's state image.
    pub snapshot_bytes: Gauge,
    /// Leader only: entries each follower is behind (label `peer`).
    pub peer_lag: Family<Labels, Gauge>,
    /// Messages sent per peer (label `peer`).
    pub peer_sent: Family<Labels, Counter>,
    /// Messages dropped because the peer's outbox was full (label `peer`).
    pub peer_dropped: Family<Labels, Counter>,
    /// Failed calls per peer (label `peer`).
    pub peer_failures: Family<Labels, Counter>,
    /// Client gRPC calls by `method` and `code`.
    pub grpc_requests: Family<Labels, Counter>,
    /// Client gRPC call latency by `method`, to the response headers, in seconds.
    pub grpc_seconds: HistogramFamily,
    /// Open Subscribe and Chat streams.
    pub subscribers: Gauge,
    /// Rooms in the state machine.
    pub rooms: Gauge,
    /// Messages stored in the state machine, over every room.
    pub messages: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~26 s: fsyncs on a fast disk up to a stalled snapshot or a long call.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (at zero).
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("rustyraft");
        let m = Metrics {
            registry: Default::default(),
            term: Gauge::default(),
            role: Family::default(),
            leader_id: Gauge::default(),
            leader_changes: Counter::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            proposals: Family::default(),
            proposal_counters: Default::default(),
            role_gauges: Default::default(),
            peer_messages_received: Counter::default(),
            fsync_seconds: latency_histogram(),
            disk_bytes_written: Counter::default(),
            wal_bytes: Gauge::default(),
            wal_segments: Gauge::default(),
            snapshots: Family::default(),
            snapshot_seconds: latency_histogram(),
            snapshot_bytes: Gauge::default(),
            peer_lag: Family::default(),
            peer_sent: Family::default(),
            peer_dropped: Family::default(),
            peer_failures: Family::default(),
            grpc_requests: Family::default(),
            grpc_seconds: Family::new_with_constructor(latency_histogram),
            subscribers: Gauge::default(),
            rooms: Gauge::default(),
            messages: Gauge::default(),
        };
        r.register("term", "Current Raft term", m.term.clone());
        r.register("role", "1 for this node's current role", m.role.clone());
        r.register(
            "leader_id",
            "Known leader's id (0: none)",
            m.leader_id.clone(),
        );
        r.register(
            "leader_changes",
            "Times this node saw a new leader",
            m.leader_changes.clone(),
        );
        r.register(
            "commit_index",
            "Highest committed index",
            m.commit_index.clone(),
        );
        r.register(
            "applied_index",
            "Highest applied index",
            m.applied_index.clone(),
        );
        r.register(
            "last_log_index",
            "Last index in the log",
            m.last_index.clone(),
        );
        r.register(
            "snapshot_index",
            "Latest snapshot's index",
            m.snapshot_index.clone(),
        );
        r.register("proposals", "Proposals by outcome", m.proposals.clone());
        r.register(
            "peer_messages_received",
            "Peer messages stepped into the core",
            m.peer_messages_received.clone(),
        );
        r.register_with_unit(
            "fsync_duration",
            "Duration of each storage fsync",
            Unit::Seconds,
            m.fsync_seconds.clone(),
        );
        r.register_with_unit(
            "disk_written",
            "Bytes the storage handed to the kernel",
            Unit::Bytes,
            m.disk_bytes_written.clone(),
        );
        r.register_with_unit(
            "wal",
            "Size of the WAL on disk",
            Unit::Bytes,
            m.wal_bytes.clone(),
        );
        r.register("wal_segments", "WAL segment files", m.wal_segments.clone());
        r.register(
            "snapshots",
            "Snapshots put in force, by source",
            m.snapshots.clone(),
        );
        r.register_with_unit(
            "snapshot_duration",
            "Time to take a local snapshot",
            Unit::Seconds,
            m.snapshot_seconds.clone(),
        );
        r.register_with_unit(
            "snapshot",
            "Size of the latest snapshot image",
            Unit::Bytes,
            m.snapshot_bytes.clone(),
        );
        r.register(
            "peer_replication_lag",
            "Leader only: entries a follower is behind",
            m.peer_lag.clone(),
        );
        r.register(
            "peer_messages_sent",
            "Messages sent per peer",
            m.peer_sent.clone(),
        );
        r.register(
            "peer_messages_dropped",
            "Messages dropped on a full peer outbox",
            m.peer_dropped.clone(),
        );
        r.register(
            "peer_send_failures",
            "Failed peer calls",
            m.peer_failures.clone(),
        );
        r.register(
            "grpc_requests",
            "Client gRPC calls by method and code",
            m.grpc_requests.clone(),
        );
        r.register_with_unit(
            "grpc_request_duration",
            "Client gRPC call latency to the response headers",
            Unit::Seconds,
            m.grpc_seconds.clone(),
        );
        r.register(
            "subscribers",
            "Open Subscribe and Chat streams",
            m.subscribers.clone(),
        );
        r.register("rooms", "Rooms in the state machine", m.rooms.clone());
        r.register(
            "messages_stored",
            "Messages stored, every room",
            m.messages.clone(),
        );
        let proposal_counters = ProposalOutcome::ALL.map(|o| {
            m.proposals
                .get_or_create_owned(&vec![("outcome", o.as_str().into())])
        });
        let role_gauges =
            ROLES.map(|role| m.role.get_or_create_owned(&vec![("role", role.into())]));
        for source in ["local", "leader"] {
            m.snapshots
                .get_or_create_owned(&vec![("source", source.into())]);
        }
        Metrics {
            registry: std::sync::Arc::new(r),
            proposal_counters,
            role_gauges,
            ..m
        }
    }

    /// Counts one proposal's outcome: one atomic add.
    pub fn proposal(&self, outcome: ProposalOutcome) {
        let i = ProposalOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(ProposalOutcome::ALL.len() - 1);
        self.proposal_counters[i].inc();
    }

    /// Sets `rustyraft_role`: 1 for `role` (one of [`ROLES`]), 0 for the others.
    pub fn set_role(&self, role: &str) {
        for (r, g) in ROLES.iter().zip(&self.role_gauges) {
            g.set(i64::from(*r == role));
        }
    }

    /// The counters of the link to `peer`, for its task to keep.
    pub fn peer(&self, peer: u64) -> PeerCounters {
        let l = vec![("peer", peer.to_string())];
        PeerCounters {
            sent: self.peer_sent.get_or_create_owned(&l),
            failures: self.peer_failures.get_or_create_owned(&l),
        }
    }

    /// A guard that counts one open subscriber stream while it lives.
    pub fn subscriber(&self) -> SubscriberGuard {
        self.subscribers.inc();
        SubscriberGuard(self.subscribers.clone())
    }

    /// The registry in Prometheus's text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Counts one open Subscribe or Chat stream; dropping it uncounts it (whichever way the
/// stream ends).
#[derive(Debug)]
pub struct SubscriberGuard(Gauge);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests;
