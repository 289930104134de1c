//! The startup check: the cluster counts as started only once every node's process is alive
//! and its client port answers, so a node that cannot bind its port (or dies early for any
//! other reason) fails the launch with its own last words instead of a half-started cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{LaunchError, LocalCluster, NodeId};
use crate::launcher::status_view::status_of;

impl LocalCluster {
    /// Waits until every node's client port answers a Status call; fails as soon as a node's
    /// process exits, or at `limit`. A process that is alive and answering is started: its
    /// Status comes from the gRPC server it bound, after it opened its storage.
    pub(super) async fn wait_started(&mut self, limit: Duration) -> Result<(), LaunchError> {
        let end = tokio::time::Instant::now() + limit;
        let mut waiting: BTreeSet<NodeId> = self.ids().into_iter().collect();
        loop {
            // Exits first: a port held by someone else may answer for a node that has died.
            for id in self.ids() {
                if !self.is_up(id) {
                    let why = match self.procs.get(&id).and_then(|p| p.exit) {
                        Some(status) => format!("it exited ({status})"),
                        None => "it exited".to_string(),
                    };
                    return Err(self.startup_error(id, why).await);
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            for id in waiting.clone() {
                if status_of(self.addr(id)).await.is_ok() {
                    waiting.remove(&id);
                }
            }
            if tokio::time::Instant::now() >= end {
                if let Some(&id) = waiting.first() {
                    let why = format!("its client port did not answer within {limit:?}");
                    return Err(self.startup_error(id, why).await);
                }
            }
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The startup error for node `id`, with the last line it logged (after its log
    /// forwarders have read everything it wrote, if it exited).
    async fn startup_error(&mut self, id: NodeId, why: String) -> LaunchError {
        let mut last_line = String::new();
        if let Some(p) = self.procs.get_mut(&id) {
            if p.child.is_none() {
                for f in p.logs.tasks.drain(..) {
                    let _ = tokio::time::timeout(Duration::from_secs(2), f).await;
                }
            }
            last_line = p
                .logs
                .last_line
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
        }
        if last_line.is_empty() {
            last_line = "(none)".to_string();
        }
        LaunchError::Startup {
            id,
            addr: self.addr(id),
            why,
            last_line,
        }
    }
}
