//! Error types of the consensus core. One enum per concern, mapped to gRPC statuses only at the
//! service edge.

use super::types::NodeId;

/// Why the storage could not answer a read. The core treats `Compacted` and `Unavailable` as
/// expected answers; anything else is fatal for the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The requested index is behind the latest snapshot.
    #[error("log index is compacted")]
    Compacted,
    /// The requested index is beyond the last entry.
    #[error("log index is unavailable")]
    Unavailable,
    /// The snapshot is being produced; ask again later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// An I/O or corruption error inside the storage.
    #[error("storage failure: {0}")]
    Other(String),
}

/// Errors surfaced by the core's API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The storage failed in a way the core cannot handle.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Why a proposal was refused. The caller answers its client accordingly (UNAVAILABLE with
/// the leader hint, usually).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader_hint: Option<NodeId>,
    },
    /// The leader is handing leadership over and refuses new work until it is done.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// A configuration change is already in flight.
    #[error("a configuration change is already pending")]
    ConfChangePending,
    /// The leader has not yet committed an entry of its own term, so it may not change the
    /// membership (Ongaro, raft-dev 2015: otherwise two single-server changes from different
    /// terms can form disjoint majorities). Retry shortly.
    #[error("the leader has not committed an entry of its term yet; retry")]
    LeaderNotReady,
    /// The leader already holds `limit` bytes of uncommitted entries of its term
    /// ([`crate::raft::Config::max_uncommitted_bytes`]): it cannot commit as fast as it is
    /// asked to append. Retry after a pause.
    #[error("too many uncommitted entries (limit {limit} bytes); retry later")]
    UncommittedLimit {
        /// The configured limit.
        limit: u64,
    },
    /// The proposed configuration is invalid (for example, no voters).
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(String),
}

/// Result alias of the core.
pub type Result<T> = std::result::Result<T, Error>;
