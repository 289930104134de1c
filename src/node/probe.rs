//! The node's answers to `/healthz` and `/readyz` ([`crate::metrics::http::Probe`]).

use super::NodeHandle;
use crate::metrics::http::Probe;

impl Probe for NodeHandle {
    /// Live while the driver runs: a node that stopped (shutdown or a fatal storage error)
    /// should be restarted.
    fn live(&self) -> Result<(), String> {
        if self.life.stop.is_cancelled() {
            return Err("node stopped".into());
        }
        Ok(())
    }

    /// Ready to serve clients: not shutting down, still a member, a leader is known (writes
    /// can be forwarded, linearizable reads confirmed), and everything this node knows to be
    /// committed is applied (its local reads are not behind what it has heard of). A node
    /// catching up after a restart, or cut off from the cluster, is not ready.
    fn ready(&self) -> Result<(), String> {
        self.live()?;
        if self.life.draining.is_cancelled() {
            return Err("draining".into());
        }
        let s = self.shared.status.borrow();
        if s.removed {
            return Err("removed from the cluster".into());
        }
        if s.leader_id.is_none() {
            return Err("no known leader".into());
        }
        if s.applied_index < s.commit_index {
            return Err(format!(
                "applied {} behind commit {}",
                s.applied_index, s.commit_index
            ));
        }
        Ok(())
    }
}
