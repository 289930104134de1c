//! What the driver keeps about background snapshots: the one in progress, the finished one
//! waiting to be put in force, and the random stretch of the snapshot interval.

use crate::raft::ConfState;

/// A fresh draw for `Driver::snapshot_stretch`.
pub(super) fn snapshot_stretch() -> f64 {
    1.0 + fastrand::f64() * 0.25
}

/// A snapshot written by a background thread, ready for `compact`.
pub(super) struct Compacted {
    /// When the snapshot was decided, for `rustyraft_snapshot_duration_seconds`.
    pub(super) started: std::time::Instant,
    pub(super) index: u64,
    pub(super) conf: ConfState,
    pub(super) data: bytes::Bytes,
}

/// The background snapshot in progress.
pub(super) struct Compacting {
    pub(super) index: u64,
    /// `applied_bytes_since_snapshot` when it started: what the new snapshot covers.
    pub(super) bytes_at_start: u64,
}
