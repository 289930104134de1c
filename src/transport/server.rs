//! The `Raft` gRPC service: checks the cluster id and the addressee, converts, and queues the
//! message for the driver without waiting for it to be processed.

use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::auth::PeerAuth;
use super::wire::{self, Envelope};
use crate::chat::disk::ChatDir;
use crate::pb;
use crate::raft::{Message, NodeId};

/// Server side of the peer protocol.
#[derive(Clone)]
pub struct RaftService {
    id: NodeId,
    cluster_id: String,
    inbound: mpsc::Sender<Message>,
    max_snapshot_bytes: u64,
    /// When set, every call must carry valid peer credentials ([`PeerAuth`]), and the messages
    /// of a call may only name the sender its credentials authenticated.
    auth: Option<PeerAuth>,
    /// Cancelled when the node shuts down: open `Stream` calls then end, so the server's
    /// graceful drain does not wait for peers that would stream forever. A fresh token (never
    /// cancelled) when no drain is wired.
    draining: CancellationToken,
    /// Where streamed (manifest) snapshots are written as they arrive. `None`: every snapshot
    /// is buffered, up to `max_snapshot_bytes`.
    chat_dir: Option<ChatDir>,
}

impl RaftService {
    /// `inbound` is the driver's bounded peer-message queue; `max_snapshot_bytes` caps what a
    /// snapshot transfer may make this node buffer.
    pub fn new(
        id: NodeId,
        cluster_id: String,
        inbound: mpsc::Sender<Message>,
        max_snapshot_bytes: u64,
    ) -> Self {
        RaftService {
            id,
            cluster_id,
            inbound,
            max_snapshot_bytes,
            auth: None,
            draining: CancellationToken::new(),
            chat_dir: None,
        }
    }

    /// Receives streamed snapshots into the chat directory `dir` (see
    /// [`crate::chat::bundle`]): no size cap but `max_snapshot_bytes` on the manifest.
    pub fn with_chat_dir(mut self, dir: Option<ChatDir>) -> Self {
        self.chat_dir = dir;
        self
    }

    /// Ends open peer streams once `draining` is cancelled (see the field).
    pub fn with_draining(mut self, draining: CancellationToken) -> Self {
        self.draining = draining;
        self
    }

    /// Requires every peer call to carry credentials made with the cluster secret.
    pub fn with_auth(mut self, auth: Option<PeerAuth>) -> Self {
        self.auth = auth;
        self
    }

    /// Checks a call's credentials before anything of it is decoded or delivered. Returns the
    /// authenticated sender (`None`: peer authentication is off).
    fn authorize<T>(&self, r: &Request<T>) -> Result<Option<NodeId>, Status> {
        match &self.auth {
            None => Ok(None),
            Some(a) => a.verify(self.id, r.metadata()).map(Some),
        }
    }

    fn check(&self, env: &Envelope, sender: Option<NodeId>) -> Result<(), Status> {
        if let Some(from) = sender.filter(|&f| f != env.message.from) {
            return Err(Status::permission_denied(format!(
                "a call authenticated as node {from} carried a message from node {}",
                env.message.from
            )));
        }
        if env.cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster id mismatch: this node is in cluster {:?}, the message is for {:?}",
                self.cluster_id, env.cluster_id
            )));
        }
        if env.message.to != self.id {
            return Err(Status::failed_precondition(format!(
                "message for node {} reached node {}",
                env.message.to, self.id
            )));
        }
        Ok(())
    }

    fn deliver(
        &self,
        env: Result<Envelope, wire::CodecError>,
        sender: Option<NodeId>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        let env = env.map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.check(&env, sender)?;
        if self.inbound.try_send(env.message).is_err() {
            // Full inbox: drop, exactly like a lost packet. The sender's Raft retries.
            tracing::debug!("peer inbox full, message dropped");
        }
        Ok(Response::new(pb::PeerAck {}))
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn request_vote(
        &self,
        request: Request<pb::RequestVoteRequest>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        let sender = self.authorize(&request)?;
        self.deliver(Envelope::try_from(request.into_inner()), sender)
    }

    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        let sender = self.authorize(&request)?;
        self.deliver(Envelope::try_from(request.into_inner()), sender)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::InstallSnapshotChunk>>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        let sender = self.authorize(&request)?;
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let meta = first
            .meta
            .clone()
            .ok_or_else(|| Status::invalid_argument("first snapshot chunk has no meta"))?;
        let header = first.header.clone();
        // Check the cluster before buffering anything.
        let probe = wire::snapshot_envelope(header.clone(), meta.clone(), Default::default())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.check(&probe, sender)?;
        if let Some(dir) = self
            .chat_dir
            .clone()
            .filter(|_| crate::chat::bundle::is_bundle(&first.data))
        {
            let manifest =
                super::snapshot::receive_bundle(first, &mut stream, dir, self.max_snapshot_bytes)
                    .await?;
            let env = wire::snapshot_envelope(header, meta, manifest)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            return match tokio::time::timeout(
                Duration::from_secs(2),
                self.inbound.send(env.message),
            )
            .await
            {
                Ok(Ok(())) => Ok(Response::new(pb::PeerAck {})),
                _ => Err(Status::unavailable("node busy, snapshot dropped")),
            };
        }
        if first.total_size > self.max_snapshot_bytes {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {} bytes exceeds this node's {}-byte limit",
                first.total_size, self.max_snapshot_bytes
            )));
        }
        let total = first.total_size;
        // Grow as data arrives: an announced size alone never makes us allocate much.
        let mut buf = BytesMut::with_capacity(total.min(16 << 20) as usize);
        let mut chunk = Some(first);
        loop {
            let c = match chunk.take() {
                Some(c) => c,
                None => stream.next().await.ok_or_else(|| {
                    Status::invalid_argument("snapshot stream ended before done")
                })??,
            };
            if c.offset != buf.len() as u64 {
                return Err(Status::invalid_argument(format!(
                    "snapshot chunk at offset {} but {} bytes received",
                    c.offset,
                    buf.len()
                )));
            }
            if buf.len() as u64 + c.data.len() as u64 > total {
                return Err(Status::invalid_argument("snapshot larger than announced"));
            }
            buf.extend_from_slice(&c.data);
            if c.done {
                break;
            }
        }
        if buf.len() as u64 != total {
            return Err(Status::invalid_argument("snapshot shorter than announced"));
        }
        let env = wire::snapshot_envelope(header, meta, buf.freeze())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A snapshot is expensive to resend: wait briefly for room instead of dropping at once.
        match tokio::time::timeout(Duration::from_secs(2), self.inbound.send(env.message)).await {
            Ok(Ok(())) => Ok(Response::new(pb::PeerAck {})),
            _ => Err(Status::unavailable("node busy, snapshot dropped")),
        }
    }

    async fn timeout_now(
        &self,
        request: Request<pb::TimeoutNowRequest>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        let sender = self.authorize(&request)?;
        self.deliver(Envelope::try_from(request.into_inner()), sender)
    }

    async fn reply(
        &self,
        request: Request<pb::PeerReply>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        let sender = self.authorize(&request)?;
        self.deliver(Envelope::try_from(request.into_inner()), sender)
    }

    async fn stream(
        &self,
        request: Request<Streaming<pb::PeerMessage>>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        use pb::peer_message::Body;
        let sender = self.authorize(&request)?;
        let mut stream = request.into_inner();
        let drained = self.draining.clone().cancelled_owned();
        tokio::pin!(drained);
        loop {
            let m = tokio::select! {
                m = stream.next() => match m {
                    Some(m) => m,
                    None => break,
                },
                () = &mut drained => break,
            };
            let env = match m?.body {
                Some(Body::Vote(r)) => Envelope::try_from(r),
                Some(Body::Append(r)) => Envelope::try_from(r),
                Some(Body::TimeoutNow(r)) => Envelope::try_from(r),
                Some(Body::Reply(r)) => Envelope::try_from(r),
                None => return Err(Status::invalid_argument("peer message without a body")),
            };
            self.deliver(env, sender)?;
        }
        Ok(Response::new(pb::PeerAck {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::raft_server::Raft as _;

    fn timeout_now(cluster: &str, to: u64) -> pb::TimeoutNowRequest {
        pb::TimeoutNowRequest {
            header: Some(pb::PeerHeader {
                cluster_id: cluster.into(),
                from: 2,
                to,
                term: 1,
            }),
        }
    }

    #[tokio::test]
    async fn refuses_foreign_cluster_wrong_node_and_missing_token() {
        let (tx, mut rx) = mpsc::channel(4);
        let svc = RaftService::new(1, "c".into(), tx, 1 << 20);
        let code = |r: Result<Response<pb::PeerAck>, Status>| r.err().map(|s| s.code());
        assert_eq!(
            code(svc.timeout_now(Request::new(timeout_now("other", 1))).await),
            Some(tonic::Code::FailedPrecondition)
        );
        assert_eq!(
            code(svc.timeout_now(Request::new(timeout_now("c", 3))).await),
            Some(tonic::Code::FailedPrecondition)
        );
        assert_eq!(
            code(
                svc.timeout_now(Request::new(pb::TimeoutNowRequest { header: None }))
                    .await
            ),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(svc.timeout_now(Request::new(timeout_now("c", 1))).await),
            None
        );
        assert_eq!(rx.recv().await.map(|m| m.from), Some(2));

        let auth = PeerAuth::new("c", &["0123456789abcdef0123".into()]).unwrap();
        let svc = svc.with_auth(Some(auth.clone()));
        assert_eq!(
            code(svc.timeout_now(Request::new(timeout_now("c", 1))).await),
            Some(tonic::Code::Unauthenticated)
        );
        let signed = |from, to| {
            let mut r = Request::new(timeout_now("c", 1));
            r.metadata_mut()
                .insert(crate::transport::PEER_AUTH_METADATA, auth.sign(from, to));
            r
        };
        assert_eq!(code(svc.timeout_now(signed(2, 1)).await), None);
        assert_eq!(rx.recv().await.map(|m| m.from), Some(2));
        // Credentials of node 3 cannot carry a message that claims to come from node 2.
        assert_eq!(
            code(svc.timeout_now(signed(3, 1)).await),
            Some(tonic::Code::PermissionDenied)
        );
        // Credentials made for another receiver are refused.
        assert_eq!(
            code(svc.timeout_now(signed(2, 5)).await),
            Some(tonic::Code::Unauthenticated)
        );
        assert!(rx.try_recv().is_err(), "nothing refused was delivered");
    }
}
