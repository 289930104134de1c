//! `Cluster`: status and compaction now; membership changes arrive with the membership issue
//! and answer UNIMPLEMENTED until then, with a message that says so.

use tonic::{Request, Response, Status};

use super::convert::status_to_pb;
use super::node_status;
use crate::node::NodeHandle;
use crate::pb;

/// The `Cluster` implementation.
#[derive(Clone)]
pub struct ClusterApi {
    node: NodeHandle,
}

impl ClusterApi {
    /// Serves cluster administration for `node`.
    pub fn new(node: NodeHandle) -> Self {
        ClusterApi { node }
    }
}

fn membership_unimplemented() -> Status {
    Status::unimplemented(
        "membership changes are not available yet: the cluster runs with the static membership \
         given by `raft_client run <peers>`",
    )
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterApi {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.node.status();
        let leader_addr = self.node.leader().map(|(_, a)| a).unwrap_or_default();
        Ok(Response::new(status_to_pb(&s, leader_addr)))
    }

    async fn add_member(
        &self,
        _request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        Err(membership_unimplemented())
    }

    async fn promote_learner(
        &self,
        _request: Request<pb::PromoteLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        Err(membership_unimplemented())
    }

    async fn remove_member(
        &self,
        _request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        Err(membership_unimplemented())
    }

    async fn transfer_leader(
        &self,
        _request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        Err(Status::unimplemented(
            "leadership transfer is not exposed yet (it arrives with the membership issue)",
        ))
    }

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let (index, term) = self.node.snapshot().await.map_err(node_status)?;
        Ok(Response::new(pb::SnapshotResponse { index, term }))
    }
}
