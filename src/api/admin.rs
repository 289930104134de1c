//! `Cluster`: status, compaction, backups, membership changes and leadership transfer.
//!
//! Membership calls are served by the leader only. A follower answers like a chat send that
//! cannot be forwarded: UNAVAILABLE with the leader in the `x-rustyraft-leader` metadata, so the
//! client (`raft_client cluster`, `--join`) retries there. A change returns once its
//! configuration entry is committed; adding a voter is two changes (learner, then promotion once
//! it has caught up), and the call returns after the second commits.

use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use super::convert::{conf_to_pb, status_to_pb};
use super::node_status;
use crate::node::backup::BackupSource;
use crate::node::membership::{validate_addr, PROMOTE_MAX_LAG};
use crate::node::{ConfChanged, ConfOp, MembershipError, NodeError, NodeHandle};
use crate::pb;
use crate::raft::{NodeId, Role};

/// How long `AddMember` (as a voter) waits for the new learner to catch up before giving up and
/// leaving it a learner.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `TransferLeader` waits to see the target lead.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a backup waits for its ReadIndex barrier (a leader must confirm it).
pub const BACKUP_BARRIER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes per `BackupChunk`.
const BACKUP_CHUNK_BYTES: usize = 1 << 20;

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

    fn not_leader(&self) -> Status {
        node_status(NodeError::NotLeader {
            leader: self.node.leader(),
        })
    }

    /// Waits until learner `id` trails the leader by at most [`PROMOTE_MAX_LAG`] entries, then
    /// promotes it; bounded by [`CATCH_UP_TIMEOUT`].
    async fn catch_up_and_promote(&self, id: NodeId) -> Result<ConfChanged, Status> {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let mut lag = u64::MAX;
        // Why the last promotion attempt was refused, for the timeout message.
        let mut refused: Option<String> = None;
        loop {
            let st = self.node.status();
            if st.role != Role::Leader {
                // The learner is in; the client retries at the new leader, which promotes it.
                return Err(self.not_leader());
            }
            if let Some(p) = st.peers.iter().find(|p| p.id == id) {
                lag = p.lag;
            }
            if lag <= PROMOTE_MAX_LAG {
                match self.node.change_conf(ConfOp::Promote { id }).await {
                    Ok(done) => return Ok(done),
                    // Fell behind again, or a leader's own first change is still in flight:
                    // keep waiting within the deadline.
                    Err(NodeError::Membership(MembershipError::NotCaughtUp { detail, .. })) => {
                        refused = Some(detail)
                    }
                    Err(NodeError::Membership(MembershipError::Pending)) => {}
                    Err(e) => return Err(node_status(e)),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let why = match (refused, lag) {
                    (Some(detail), _) => detail,
                    (None, u64::MAX) => "the leader has no progress for it yet".to_string(),
                    (None, lag) => {
                        format!("{lag} entries behind, at most {PROMOTE_MAX_LAG} allowed")
                    }
                };
                return Err(node_status(
                    MembershipError::Timeout(format!(
                        "node {id} was added as a learner but did not catch up within {}s \
                         ({why}); it stays a learner: promote it with `raft_client cluster \
                         promote {id}` once it has caught up",
                        CATCH_UP_TIMEOUT.as_secs()
                    ))
                    .into(),
                ));
            }
            self.node
                .status_changed((deadline - now).min(Duration::from_millis(100)))
                .await;
        }
    }
}

fn membership_response(c: ConfChanged) -> Response<pb::MembershipResponse> {
    Response::new(pb::MembershipResponse {
        conf: Some(conf_to_pb(&c.conf)),
        index: c.index,
    })
}

fn check_id(id: NodeId) -> Result<(), Status> {
    if id == 0 {
        return Err(Status::invalid_argument("node id 0 is not valid"));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterApi {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.node.status();
        let leader_addr = self.node.leader().map(|(_, a)| a).unwrap_or_default();
        let mut resp = status_to_pb(&s, leader_addr);
        resp.http_addr = self.node.config().http_advertised().unwrap_or_default();
        Ok(Response::new(resp))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let r = request.into_inner();
        check_id(r.id)?;
        validate_addr(&r.addr).map_err(|e| node_status(e.into()))?;
        if !r.peer_addr.is_empty() {
            validate_addr(&r.peer_addr).map_err(|e| node_status(e.into()))?;
        }
        let added = self
            .node
            .change_conf(ConfOp::Add {
                id: r.id,
                addr: r.addr,
                peer_addr: r.peer_addr,
                learner: r.learner,
            })
            .await
            .map_err(node_status)?;
        if r.learner || added.conf.voters.contains(&r.id) {
            return Ok(membership_response(added));
        }
        let promoted = self.catch_up_and_promote(r.id).await?;
        Ok(membership_response(promoted))
    }

    async fn promote_learner(
        &self,
        request: Request<pb::PromoteLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let id = request.into_inner().id;
        check_id(id)?;
        let done = self
            .node
            .change_conf(ConfOp::Promote { id })
            .await
            .map_err(node_status)?;
        Ok(membership_response(done))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let id = request.into_inner().id;
        check_id(id)?;
        let done = self
            .node
            .change_conf(ConfOp::Remove { id })
            .await
            .map_err(node_status)?;
        Ok(membership_response(done))
    }

    /// Id 0 hands leadership to the most up-to-date other voter. Returns once this node sees
    /// the target lead; naming the current leader returns at once.
    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let target = self
            .node
            .transfer_leader(request.into_inner().id)
            .await
            .map_err(node_status)?;
        let deadline = Instant::now() + TRANSFER_TIMEOUT;
        loop {
            let st = self.node.status();
            if st.leader_id == Some(target) {
                return Ok(Response::new(pb::TransferLeaderResponse {
                    leader_id: target,
                }));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(node_status(
                    MembershipError::Timeout(format!(
                        "node {target} did not take over within {}s (this node sees leader \
                         {:?}); the transfer was aborted or is still running",
                        TRANSFER_TIMEOUT.as_secs(),
                        st.leader_id
                    ))
                    .into(),
                ));
            }
            self.node
                .status_changed((deadline - now).min(Duration::from_millis(100)))
                .await;
        }
    }

    type BackupStream = tokio_stream::wrappers::ReceiverStream<Result<pb::BackupChunk, Status>>;

    /// Takes the backup point (barrier, then a snapshot), then streams the file from a blocking
    /// thread into a small bounded channel: the client's pace drives the disk reads.
    async fn backup(
        &self,
        _request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let snap = self
            .node
            .backup_snapshot(BACKUP_BARRIER_TIMEOUT)
            .await
            .map_err(node_status)?;
        let cfg = self.node.config();
        let (cluster_id, id) = (cfg.cluster_id.clone(), cfg.id);
        let chat_root = cfg.data_dir.join("chat");
        tracing::info!(
            index = snap.meta.index,
            term = snap.meta.term,
            "streaming a backup"
        );
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Opening the segment files and reading them both block: a thread of the blocking pool.
        tokio::task::spawn_blocking(move || {
            let mut source = match BackupSource::new(&snap, &cluster_id, id, &chat_root) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(format!(
                        "cannot read the snapshot to back up: {e}"
                    ))));
                    return;
                }
            };
            loop {
                let item = match source.next_piece(BACKUP_CHUNK_BYTES) {
                    Ok(Some(data)) => Ok(pb::BackupChunk { data }),
                    Ok(None) => return,
                    Err(e) => Err(Status::internal(format!("reading the backup failed: {e}"))),
                };
                let failed = item.is_err();
                // The client went away: stop reading.
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let (index, term) = self.node.snapshot().await.map_err(node_status)?;
        Ok(Response::new(pb::SnapshotResponse { index, term }))
    }
}
