//! The driver's side of a backup: a snapshot now, handed over with its data.

use super::Driver;
use crate::node::NodeError;
use crate::raft::{LogStore, Snapshot};

impl<S: LogStore + Send + 'static> Driver<S> {
    /// Compacts at the applied index (synchronously, like the admin `Snapshot` call; the
    /// caller's ReadIndex barrier is already applied) and returns the latest snapshot. Its data
    /// is small for a node with chat files (the manifest); the history stays in the files.
    pub(super) fn backup_snapshot(&mut self) -> Result<Snapshot, NodeError> {
        self.maybe_compact(true)?;
        Ok(self.raft.log().storage.snapshot()?)
    }
}
