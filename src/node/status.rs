//! What a node reports about itself and, when it leads, about its followers.

use std::collections::BTreeMap;

use crate::raft::{NodeId, Role};

/// One follower's replication progress, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Peer id.
    pub id: NodeId,
    /// Peer address.
    pub addr: String,
    /// Highest index known to match the leader's log.
    pub match_index: u64,
    /// Next index the leader will send.
    pub next_index: u64,
    /// Leader's last index minus `match_index`.
    pub lag: u64,
    /// Learner (non-voting).
    pub learner: bool,
    /// Heard from within the last election timeout.
    pub active: bool,
}

/// A node's view of itself and the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub id: NodeId,
    /// This node's address.
    pub addr: String,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader_id: Option<NodeId>,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Last log index.
    pub last_index: u64,
    /// Index of the latest snapshot.
    pub snapshot_index: u64,
    /// Leader only: followers' progress.
    pub peers: Vec<PeerStatus>,
    /// Voting members.
    pub voters: Vec<NodeId>,
    /// Non-voting members.
    pub learners: Vec<NodeId>,
    /// Every member's address, from the replicated membership.
    pub addrs: BTreeMap<NodeId, String>,
    /// Every member's peer address (replicated, or the default for its client address).
    pub peer_addrs: BTreeMap<NodeId, String>,
    /// This node was a member and has seen itself removed from the membership: it takes no
    /// further part in the cluster (it never campaigns and nobody replicates to it).
    pub removed: bool,
    /// Cluster id.
    pub cluster_id: String,
}

impl NodeStatus {
    /// The status of a node that has not started its driver yet.
    pub fn initial(id: NodeId, addr: String, cluster_id: String) -> Self {
        NodeStatus {
            id,
            addr,
            role: Role::Follower,
            term: 0,
            leader_id: None,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            snapshot_index: 0,
            peers: Vec::new(),
            voters: Vec::new(),
            learners: Vec::new(),
            addrs: BTreeMap::new(),
            peer_addrs: BTreeMap::new(),
            removed: false,
            cluster_id,
        }
    }
}
