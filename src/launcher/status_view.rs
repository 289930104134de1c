//! What the launcher shows of the cluster: each node's status over gRPC, who leads, the live
//! one-line summary and the `status` table. Read-only: nothing here changes a node or a link.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use super::processes::NodeId;
use crate::pb;
use crate::pb::cluster_client::ClusterClient;

/// What the status poller last saw of a node.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    /// The node's own status, or why it could not be read.
    pub status: Option<pb::StatusResponse>,
    /// Process state as the launcher knows it: "up", "down", "paused".
    pub process: &'static str,
}

/// One node's status over gRPC, with a short timeout.
pub async fn status_of(addr: SocketAddr) -> Result<pb::StatusResponse, String> {
    let ch = super::endpoint(&addr.to_string())?
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_millis(700))
        .connect_lazy();
    let mut c = ClusterClient::new(ch);
    c.status(pb::StatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
}

/// The node that leads in the highest term among those that answered, with its status (an
/// isolated old leader may still believe it leads, in a lower term).
pub fn leader_of(views: &BTreeMap<NodeId, NodeView>) -> Option<(NodeId, &pb::StatusResponse)> {
    views
        .iter()
        .filter_map(|(id, v)| v.status.as_ref().map(|s| (*id, s)))
        .filter(|(_, s)| s.role == pb::Role::Leader as i32)
        .max_by_key(|(_, s)| s.term)
}

/// A one-line summary of the cluster for the live view.
pub fn summary_line(
    views: &BTreeMap<NodeId, NodeView>,
    cut: &BTreeSet<(NodeId, NodeId)>,
) -> String {
    let leader = leader_of(views).map(|(_, s)| s);
    let lead_last = leader.map_or(0, |l| l.last_index);
    let mut parts = vec![match leader {
        Some(l) if !l.learners.is_empty() => format!(
            "leader n{} term {} voters {:?} learners {:?}",
            l.id, l.term, l.voters, l.learners
        ),
        Some(l) => format!("leader n{} term {} voters {:?}", l.id, l.term, l.voters),
        None => "no leader".to_string(),
    }];
    for (id, v) in views {
        parts.push(match &v.status {
            Some(s) => format!(
                "n{id} {} t{} commit {} lag {}",
                crate::client::role_name(s.role),
                s.term,
                s.commit_index,
                lead_last.saturating_sub(s.applied_index)
            ),
            None => format!(
                "n{id} {}",
                if v.process == "up" {
                    "unreachable"
                } else {
                    v.process
                }
            ),
        });
    }
    if !cut.is_empty() {
        parts.push(format!("{} links cut", cut.len()));
    }
    parts.join(" | ")
}

/// What changes the live view reports: who leads, terms, roles and process states. The live
/// view prints a summary only when this key changes, so a quiet cluster prints nothing.
pub fn view_key(views: &BTreeMap<NodeId, NodeView>) -> String {
    views
        .iter()
        .map(|(id, v)| match &v.status {
            Some(s) => format!(
                "{id}:{}:{}:{}:{:?}:{:?}",
                s.role, s.term, s.leader_id, s.voters, s.learners
            ),
            None => format!("{id}:{}", v.process),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Prints the `status` command's table: the summary line, then one row per node.
pub fn print_status(views: &BTreeMap<NodeId, NodeView>, cut: &BTreeSet<(NodeId, NodeId)>) {
    println!("{}", summary_line(views, cut));
    for (id, v) in views {
        match &v.status {
            Some(s) => println!(
                "  n{id} {:<9} term {:<4} leader {:<3} commit {:<8} applied {:<8} snapshot {}",
                crate::client::role_name(s.role),
                s.term,
                s.leader_id,
                s.commit_index,
                s.applied_index,
                s.snapshot_index
            ),
            None => println!("  n{id} {}", v.process),
        }
    }
}
