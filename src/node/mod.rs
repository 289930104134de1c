//! The node: configuration, the storage seam, the driver task that owns the consensus core, and
//! the narrow [`NodeHandle`] through which everything else (the gRPC services, the composition
//! root in [`crate::server`]) talks to it. Nothing outside this module holds a sender of the
//! driver, its locks or its lifecycle tokens.
//!
//! - `config`: [`NodeConfig`], [`JoinConfig`] and the data directory's identity stamp;
//! - `handle`: [`NodeHandle`], the node's lifecycle (drain, stop, tracked tasks);
//! - `driver`: the task that owns `Raft`, persists, sends, applies and answers;
//! - [`membership`]: membership changes as the driver runs them;
//! - [`join`]: `--join`: discovering a running cluster and adding this node to it;
//! - [`backup`]: backup files, and seeding a new data directory from one (restore);
//! - `status`: what a node reports about itself;
//! - `probe`: its answers to `/healthz` and `/readyz`.
//!
//! Data directory layout: `<data-dir>/raft` belongs to the log storage; `<data-dir>/node.json`
//! records the node id and cluster id so that a data directory is never reused by another node
//! or cluster by mistake.

pub mod backup;
mod config;
mod driver;
mod handle;
pub mod join;
pub mod membership;
mod probe;
mod status;
#[cfg(test)]
mod tests;

use std::path::Path;

use crate::chat::ChatError;
use crate::raft::{ConfState, NodeId, StorageError};
use crate::storage::{DiskConfig, DiskStorage};

pub use self::config::{
    check_identity, read_secrets, settle_secrets, stored_cluster_id, ClientSecurity, JoinConfig,
    NodeConfig, SECRET_FILE,
};
pub use self::driver::{Driver, Started};
pub use self::handle::{NodeHandle, EVENTS_CAPACITY, INBOUND_QUEUE, REQUEST_QUEUE};
pub use self::membership::{ConfChanged, ConfOp, MembershipError};
pub use self::status::{NodeStatus, PeerStatus};

/// The storage backend the node runs on: the durable, checksummed WAL of [`crate::storage`].
/// Every use goes through this alias and [`open_storage`].
pub type NodeStorage = DiskStorage;

/// Opens (or creates) the log storage under `dir` (which is `<data-dir>/raft`). `conf` is the
/// initial membership, used only when the storage is fresh. A damaged log (a bad checksum
/// before the tail) is an error naming the file and offset: the node refuses to start rather
/// than silently drop acknowledged entries.
///
/// The commit index is persisted lazily (only with term or vote changes): it costs two extra
/// fsyncs per Ready otherwise, and a restarted node safely re-learns it from the leader.
pub fn open_storage(dir: &Path, conf: &ConfState) -> Result<NodeStorage, NodeError> {
    let mut cfg = DiskConfig::new(dir);
    cfg.lazy_commit = true;
    DiskStorage::open(cfg, conf.clone())
        .map_err(|e| NodeError::Io(format!("storage at {}: {e}", dir.display())))
}

/// Errors of the node layer. The API maps them to gRPC codes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// This node is not the leader; `leader` is the one it knows of (id and address).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// Known leader, if any.
        leader: Option<(NodeId, String)>,
    },
    /// A transient refusal that did nothing (a leadership transfer in progress, a new leader
    /// not ready yet, an entry overwritten before it committed): retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request may have taken effect or not (leadership was lost after it was proposed, or
    /// the state was replaced by a snapshot): retry with the same client request id (sends
    /// stay idempotent), or check before repeating a membership change.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// A bounded queue of the node is full; nothing was done: back off and retry.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A broken internal invariant (a poisoned lock after a panic): not the caller's fault.
    #[error("internal: {0}")]
    Internal(String),
    /// The chat state machine refused the command.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// A membership change was refused or did not complete in time.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The driver has stopped (shutdown or fatal error).
    #[error("node is shutting down")]
    Stopped,
    /// Storage failed: fatal for the driver.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The consensus core failed: fatal for the driver.
    #[error("raft: {0}")]
    Raft(#[from] crate::raft::Error),
    /// Local I/O (data directory, sockets).
    #[error("i/o: {0}")]
    Io(String),
    /// The configuration is unusable.
    #[error("config: {0}")]
    Config(String),
}

/// Whether to take a snapshot now: at least `min_entries` entries applied since the last one,
/// and at least half the last snapshot's size in applied command bytes; but always once
/// [`SNAPSHOT_MAX_INTERVAL_FACTOR`] times `min_entries` are applied.
///
/// Why the size rule: a snapshot encodes the whole chat state. Taken every fixed number of
/// entries, its total cost grows with the square of the history (the profile in
/// `docs/benchmarks.md` showed throughput falling as the state grew). Tying the interval to the
/// snapshot's own size makes each applied byte pay for about two encoded bytes. Why the cap: the
/// log tail a restart replays (and a lagging follower may need) stays bounded, 100 000 entries
/// with the default threshold.
pub fn snapshot_due(
    entries_since: u64,
    bytes_since: u64,
    last_snapshot_bytes: u64,
    min_entries: u64,
) -> bool {
    let max_entries = min_entries.saturating_mul(SNAPSHOT_MAX_INTERVAL_FACTOR);
    entries_since >= max_entries
        || (entries_since >= min_entries && bytes_since.saturating_mul(2) >= last_snapshot_bytes)
}

/// See [`snapshot_due`]: the longest snapshot interval, as a multiple of the threshold.
pub const SNAPSHOT_MAX_INTERVAL_FACTOR: u64 = 10;
