//! Membership changes of the local cluster: `add` starts a fresh node that joins as a voter,
//! `remove` takes one out through the cluster, then stops it.

use std::time::Duration;

use super::{LaunchError, LocalCluster, NodeId, NodeProc, MAX_NODES};
use crate::launcher::status_view::leader_of;

impl LocalCluster {
    /// Starts a fresh node with the next id and has it join as a voter (`run --join`); waits
    /// (up to `limit`) until the leader lists it as a voter. A node that did not make it is
    /// stopped and forgotten. Returns its id.
    pub async fn add_node(&mut self, limit: Duration) -> Result<NodeId, LaunchError> {
        let id = self.next_id().ok_or_else(|| {
            LaunchError::Membership(format!("no id left: ids go up to {MAX_NODES}"))
        })?;
        self.last_id = id;
        // A fresh node needs an empty data directory; one left by an earlier run of the
        // launcher would carry another history.
        let dir = self.cfg.data_dir.join(format!("node-{id}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| LaunchError::Io(format!("clear {}", dir.display()), e))?;
        }
        self.procs.insert(id, NodeProc::new(true));
        self.links.ensure(id).await?;
        self.reserved.remove(&id);
        self.spawn(id).await?;
        let end = tokio::time::Instant::now() + limit;
        loop {
            let views = self.views().await;
            if let Some((_, l)) = leader_of(&views) {
                if l.voters.contains(&id) {
                    return Ok(id);
                }
            }
            if !self.is_up(id) || tokio::time::Instant::now() >= end {
                let why = if self.is_up(id) {
                    format!("not a voter after {limit:?}")
                } else {
                    "the process exited (see its log)".to_string()
                };
                let _ = self.stop(id, Duration::from_secs(5)).await;
                self.procs.remove(&id);
                return Err(LaunchError::Membership(format!(
                    "n{id} did not join: {why}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Removes node `id` from the membership through the cluster (`RemoveMember`, following
    /// leader redirects), then stops its process and forgets it. Returns the new voters.
    pub async fn remove_node(&mut self, id: NodeId) -> Result<Vec<NodeId>, LaunchError> {
        self.check(id)?;
        let mut order: Vec<NodeId> = Vec::new();
        for j in self.ids() {
            if j != id && self.is_up(j) {
                order.push(j);
            }
        }
        order.push(id);
        let others: Vec<String> = order.iter().map(|&j| self.addr(j).to_string()).collect();
        let mut client =
            crate::client::Client::with_credentials(&others.join(","), crate::launcher::dial())
                .map_err(|e| LaunchError::Membership(e.to_string()))?;
        let reply = client
            .membership(
                &crate::client::MembershipCall::Remove { id },
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| LaunchError::Membership(format!("remove n{id}: {e}")))?;
        let voters = match reply {
            crate::client::MembershipReply::Conf(r) => r.conf.unwrap_or_default().voters,
            crate::client::MembershipReply::Leader(_) => Vec::new(),
        };
        self.stop(id, Duration::from_secs(5)).await?;
        self.procs.remove(&id);
        self.links.forget(id);
        Ok(voters)
    }
}
