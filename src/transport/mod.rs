//! Node-to-node transport over tonic: the `Raft` gRPC service (server side) and one long-lived
//! client task per peer (client side).
//!
//! Raft tolerates lost messages, so the transport never waits for a slow or dead peer: every
//! peer has a bounded outbox, a full outbox drops the message (the core resends), and a failed
//! call empties the outbox and backs off before reconnecting. One dead peer therefore never
//! delays the others, and memory stays bounded whatever the network does.

mod auth;
mod reports;
mod server;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};

use crate::pb;
use crate::pb::raft_client::RaftClient;
use crate::raft::{Message, MessageBody, NodeId};

pub use self::reports::SnapshotReports;
pub use self::server::RaftService;
pub use self::wire::{CodecError, Envelope, Outbound};

pub use self::auth::{generate_secret, PeerAuth, SecretError, MAX_CLOCK_SKEW, PEER_AUTH_METADATA};

/// Snapshot chunk size on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Messages queued per peer before new ones are dropped.
pub const PEER_OUTBOX: usize = 1024;
/// Timeout of a snapshot transfer.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Errors of the transport layer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A peer address is not a valid URI.
    #[error("invalid peer address {addr:?}: {reason}")]
    BadAddress {
        /// The address as configured.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
}

/// Counters for the status view and for tests.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Messages dropped because a peer's outbox was full.
    pub dropped_full: AtomicU64,
    /// Calls that failed (peer down, timeout, refused).
    pub failed_calls: AtomicU64,
}

/// How this node proves itself to the peers it dials: HMAC credentials made with the cluster
/// secret, mutual TLS, both, or (a loopback-only node without a secret) neither.
#[derive(Clone, Default)]
pub struct PeerSecurity {
    /// Sign every call with the cluster secret.
    pub auth: Option<PeerAuth>,
    /// Dial over TLS with this configuration (the cluster CA and this node's certificate).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Sending side: routes each outgoing core message to its peer's outbox.
///
/// The set of peers is not fixed: the driver calls [`Transport::set_peers`] whenever the
/// membership changes, which starts a client task for each new member and drops the outbox of
/// each removed one (its task then ends and its connection closes).
pub struct Transport {
    self_id: NodeId,
    cluster_id: String,
    /// Signs every peer call when peer authentication is on.
    auth: Option<PeerAuth>,
    /// Dial peers over mutual TLS with this configuration (`https://`), else plaintext.
    tls: Option<tonic::transport::ClientTlsConfig>,
    /// Local dialling overrides (`--route`), applied over the addresses the membership gives.
    routes: BTreeMap<NodeId, String>,
    /// One outbox per peer, with the address its task dials.
    outboxes: BTreeMap<NodeId, (String, mpsc::Sender<Message>)>,
    /// Cancelled when the node stops: every peer task ends.
    shutdown: CancellationToken,
    /// The node's task tracker: peer tasks and their stream calls are joined on shutdown.
    tasks: TaskTracker,
    stats: Arc<TransportStats>,
    /// Where every snapshot transfer's end is reported, for the driver to tell the core.
    reports: Arc<SnapshotReports>,
    /// Per-peer message counts for Prometheus (a fresh, unexported set unless
    /// [`Transport::with_metrics`] gives the node's).
    metrics: Arc<crate::metrics::Metrics>,
}

impl Transport {
    /// Counts into `metrics` (per-peer sent, dropped and failed messages). Call it before
    /// [`Transport::set_peers`] starts links: a running link keeps the counters it started with.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Starts one client task per peer (every entry of `peers` except `self_id`), spawned on
    /// `tasks`. Tasks stop when `shutdown` is cancelled, or when their peer is removed. `routes` override where a
    /// peer is dialled (`--route`), now and after every [`Transport::set_peers`].
    pub fn start(
        self_id: NodeId,
        cluster_id: &str,
        security: PeerSecurity,
        peers: &BTreeMap<NodeId, String>,
        routes: &BTreeMap<NodeId, String>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Transport, TransportError> {
        let mut t = Transport {
            self_id,
            cluster_id: cluster_id.to_string(),
            auth: security.auth,
            tls: security.tls,
            routes: routes.clone(),
            outboxes: BTreeMap::new(),
            shutdown,
            tasks,
            stats: Arc::new(TransportStats::default()),
            reports: Arc::new(SnapshotReports::default()),
            metrics: Default::default(),
        };
        if let Some(e) = t.set_peers(peers).into_iter().next() {
            return Err(e);
        }
        Ok(t)
    }

    /// Makes the peer set exactly `peers` (minus this node): starts tasks for new peers,
    /// restarts those whose address changed, and drops removed ones. A peer whose address is
    /// unusable is skipped and reported (the addresses come from the replicated membership; one
    /// bad entry must not take the node down).
    pub fn set_peers(&mut self, peers: &BTreeMap<NodeId, String>) -> Vec<TransportError> {
        let mut errors = Vec::new();
        self.outboxes
            .retain(|id, _| peers.contains_key(id) && *id != self.self_id);
        for (&id, addr) in peers {
            if id == self.self_id {
                continue;
            }
            let dial = self.routes.get(&id).unwrap_or(addr).clone();
            if self.outboxes.get(&id).is_some_and(|(a, _)| *a == dial) {
                continue;
            }
            match self.spawn_peer(id, &dial) {
                Ok(tx) => {
                    tracing::info!(peer = id, addr = %dial, "peer link added");
                    self.outboxes.insert(id, (dial, tx));
                }
                Err(e) => {
                    self.outboxes.remove(&id);
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// The peers with an outbox, and the address each is dialled at.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.outboxes
            .iter()
            .map(|(id, (a, _))| (*id, a.clone()))
            .collect()
    }

    fn spawn_peer(&self, id: NodeId, addr: &str) -> Result<mpsc::Sender<Message>, TransportError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("{scheme}://{addr}")
        };
        let bad = |e: &dyn std::fmt::Display| TransportError::BadAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        };
        let mut endpoint = Endpoint::from_shared(uri).map_err(|e| bad(&e))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| bad(&e))?;
        }
        let endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let (tx, rx) = mpsc::channel(PEER_OUTBOX);
        let peer = PeerTask {
            id,
            cluster_id: self.cluster_id.clone(),
            client: RaftClient::new(endpoint.connect_lazy()),
            rx,
            self_id: self.self_id,
            auth: self.auth.clone(),
            stats: self.stats.clone(),
            reports: self.reports.clone(),
            counters: self.metrics.peer(id),
            shutdown: self.shutdown.clone(),
            tasks: self.tasks.clone(),
            stream: None,
        };
        self.tasks.spawn(peer.run());
        Ok(tx)
    }

    /// Queues messages for their peers; never blocks. Messages to unknown peers or to a full
    /// outbox are dropped (Raft retransmits).
    pub fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            let Some((_, tx)) = self.outboxes.get(&m.to) else {
                tracing::debug!(to = m.to, "no route to peer, message dropped");
                self.reports.lost(&m);
                continue;
            };
            let to = m.to;
            if let Err(e) = tx.try_send(m) {
                let (mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) = e;
                self.reports.lost(&m);
                self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
                let peer = vec![("peer", to.to_string())];
                self.metrics.peer_dropped.get_or_create(&peer).inc();
            }
        }
    }

    /// Transport counters.
    pub fn stats(&self) -> &TransportStats {
        &self.stats
    }

    /// How snapshot transfers ended: the driver hands these to the core
    /// ([`crate::raft::Raft::report_snapshot`]).
    pub fn snapshot_reports(&self) -> Arc<SnapshotReports> {
        self.reports.clone()
    }
}

/// One peer's client: takes messages from its outbox, in order, and writes them to one
/// long-lived `Stream` call (snapshots take their own `InstallSnapshot` call).
struct PeerTask {
    id: NodeId,
    cluster_id: String,
    client: RaftClient<Channel>,
    rx: mpsc::Receiver<Message>,
    self_id: NodeId,
    auth: Option<PeerAuth>,
    stats: Arc<TransportStats>,
    reports: Arc<SnapshotReports>,
    counters: crate::metrics::PeerCounters,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The open `Stream` call: where its messages go, and the call itself (which ends only on
    /// an error or when the sender is dropped).
    stream: Option<(mpsc::Sender<pb::PeerMessage>, StreamCall)>,
}

/// The task running one `Stream` call.
type StreamCall = tokio::task::JoinHandle<Result<(), tonic::Status>>;

/// How long a stream may refuse a message before it is considered dead and reopened. It
/// plays the part the per-call deadline played for unary calls.
const STREAM_STALL: Duration = Duration::from_secs(2);

/// Messages buffered between a peer task and its stream. Small, so that under backpressure
/// messages wait in the outbox, where appends coalesce.
const STREAM_BUFFER: usize = 8;

impl PeerTask {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        // A message taken from the outbox while coalescing that could not be merged.
        let mut held: Option<Message> = None;
        loop {
            let mut m = match held.take() {
                Some(m) => m,
                None => tokio::select! {
                    m = self.rx.recv() => match m {
                        Some(m) => m,
                        None => return,
                    },
                    _ = self.shutdown.cancelled() => return,
                },
            };
            // Appends that queued up while the stream was busy travel as one message.
            while let Ok(next) = self.rx.try_recv() {
                match coalesce(m, next) {
                    Ok(merged) => m = merged,
                    Err((first, next)) => {
                        m = first;
                        held = Some(next);
                        break;
                    }
                }
            }
            let out = wire::to_outbound(&self.cluster_id, &m);
            let shutdown = self.shutdown.clone();
            let sent = tokio::select! {
                r = self.send(out) => r,
                _ = shutdown.cancelled() => return,
            };
            if matches!(m.body, MessageBody::InstallSnapshot { .. }) {
                self.reports.report(self.id, sent.is_ok());
            }
            match sent {
                Ok(()) => {
                    self.counters.sent.inc();
                    backoff = BACKOFF_MIN;
                }
                Err(status) => {
                    self.counters.failures.inc();
                    if let Some((_, call)) = self.stream.take() {
                        call.abort();
                    }
                    self.stats.failed_calls.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = self.id, code = ?status.code(), error = %status.message(), "peer call failed");
                    if status.code() == tonic::Code::FailedPrecondition {
                        tracing::warn!(peer = self.id, error = %status.message(), "peer refused our messages");
                    }
                    // Whatever queued up is stale by the time we reconnect: drop it, Raft
                    // resends what still matters.
                    if let Some(m) = held.take() {
                        self.reports.lost(&m);
                    }
                    self.discard_queued();
                    tokio::select! {
                        _ = tokio::time::sleep(jittered(backoff)) => {}
                        _ = self.shutdown.cancelled() => return,
                    }
                    self.discard_queued();
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Sends one message: on the stream (opened on first use), or as an `InstallSnapshot`
    /// call. An error means the stream or call failed; the message may be lost.
    async fn send(&mut self, out: Outbound) -> Result<(), tonic::Status> {
        use pb::peer_message::Body;
        let body = match out {
            Outbound::Vote(r) => Body::Vote(r),
            Outbound::Append(r) => Body::Append(r),
            Outbound::TimeoutNow(r) => Body::TimeoutNow(r),
            Outbound::Reply(r) => Body::Reply(r),
            Outbound::Snapshot { header, meta, data } => {
                let chunks = snapshot_chunks(header, meta, data);
                tracing::info!(peer = self.id, chunks = chunks.len(), "sending snapshot");
                let mut r = self.request(tokio_stream::iter(chunks));
                r.set_timeout(SNAPSHOT_TIMEOUT);
                self.client.install_snapshot(r).await?;
                return Ok(());
            }
        };
        let msg = pb::PeerMessage { body: Some(body) };
        if self.stream.is_none() {
            let (tx, rx) = mpsc::channel(STREAM_BUFFER);
            let mut client = self.client.clone();
            // No deadline: the call lives as long as the connection. A dead peer is noticed by
            // the HTTP/2 keep-alive, which fails the call and so the next send.
            let r = self.request(tokio_stream::wrappers::ReceiverStream::new(rx));
            let call = self
                .tasks
                .spawn(async move { client.stream(r).await.map(|_| ()) });
            self.stream = Some((tx, call));
        }
        let Some((tx, _)) = &self.stream else {
            return Err(tonic::Status::internal("peer stream not open"));
        };
        match tokio::time::timeout(STREAM_STALL, tx.send(msg)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => {}
            // Nothing moved for that long: the connection hangs (a partition that swallows
            // packets, or a handshake that never completes). Start over.
            Err(_) => return Err(tonic::Status::deadline_exceeded("peer stream stalled")),
        }
        // The call ended (its receiver is gone): report why.
        let Some((_, call)) = self.stream.take() else {
            return Err(tonic::Status::unavailable("peer stream closed"));
        };
        match call.await {
            Ok(Err(status)) => Err(status),
            Ok(Ok(())) => Err(tonic::Status::unavailable("peer closed the stream")),
            Err(e) => Err(tonic::Status::internal(format!("peer stream task: {e}"))),
        }
    }
}

impl PeerTask {
    /// Empties the outbox after a failed call; a snapshot among the discarded is reported lost.
    fn discard_queued(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.reports.lost(&m);
        }
    }

    /// A call to this peer, signed when peer authentication is on.
    fn request<T>(&self, t: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(t);
        if let Some(a) = &self.auth {
            r.metadata_mut()
                .insert(PEER_AUTH_METADATA, a.sign(self.self_id, self.id));
        }
        r
    }
}

impl Drop for PeerTask {
    /// The stream call ends with its peer task: a call to a partitioned peer could otherwise
    /// linger until the HTTP/2 keep-alive notices, and hold up the node's shutdown.
    fn drop(&mut self) {
        if let Some((_, call)) = self.stream.take() {
            call.abort();
        }
    }
}

/// A reconnect pause drawn from `[backoff / 2, backoff)`: the links of a node that restarts
/// (or of every node, after a partition heals) then do not all redial in lockstep.
fn jittered(backoff: Duration) -> Duration {
    backoff.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Cap on the entry bytes of a coalesced AppendEntries (the receiver decodes up to 8 MiB).
const COALESCE_MAX_BYTES: u64 = 4 << 20;

/// Merges two queued messages to the same peer when the second AppendEntries continues the
/// first exactly (same term, its `prev` is the first's last entry): the follower would process
/// the pair exactly as the merged message, and the leader's in-flight window is released
/// cumulatively by the one answer. Anything else is returned unchanged, in order.
#[allow(clippy::result_large_err)]
pub fn coalesce(a: Message, b: Message) -> Result<Message, (Message, Message)> {
    use crate::raft::MessageBody::{AppendEntries, AppendEntriesResponse};
    // Two successful acknowledgements in the same term: the later one says everything the
    // earlier one did (matches only grow), so only it needs to travel.
    if let (
        AppendEntriesResponse {
            success: true,
            match_index: ma,
            ..
        },
        AppendEntriesResponse {
            success: true,
            match_index: mb,
            ..
        },
    ) = (&a.body, &b.body)
    {
        if a.term == b.term && a.to == b.to && mb >= ma {
            return Ok(b);
        }
        return Err((a, b));
    }
    let mergeable = match (&a.body, &b.body) {
        (
            AppendEntries { entries: ea, .. },
            AppendEntries {
                prev_log_index,
                prev_log_term,
                entries: eb,
                ..
            },
        ) => {
            a.term == b.term
                && a.to == b.to
                && ea
                    .last()
                    .is_some_and(|l| l.index == *prev_log_index && l.term == *prev_log_term)
                && ea.iter().chain(eb.iter()).map(|e| e.size()).sum::<u64>() <= COALESCE_MAX_BYTES
        }
        _ => false,
    };
    if !mergeable {
        return Err((a, b));
    }
    match (a, b) {
        (
            Message {
                from,
                to,
                term,
                body:
                    AppendEntries {
                        prev_log_index,
                        prev_log_term,
                        mut entries,
                        ..
                    },
            },
            Message {
                body:
                    AppendEntries {
                        entries: more,
                        commit,
                        ..
                    },
                ..
            },
        ) => {
            entries.extend(more);
            Ok(Message {
                from,
                to,
                term,
                body: AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    commit,
                },
            })
        }
        (a, b) => Err((a, b)),
    }
}

/// Splits a snapshot into wire chunks: metadata and total size on the first, `done` on the last.
pub fn snapshot_chunks(
    header: pb::PeerHeader,
    meta: pb::SnapshotMeta,
    data: Bytes,
) -> Vec<pb::InstallSnapshotChunk> {
    let total = data.len();
    let mut chunks = Vec::with_capacity(total / SNAPSHOT_CHUNK_BYTES + 1);
    let mut offset = 0;
    loop {
        let end = (offset + SNAPSHOT_CHUNK_BYTES).min(total);
        let first = offset == 0;
        chunks.push(pb::InstallSnapshotChunk {
            header: Some(header.clone()),
            meta: first.then(|| meta.clone()),
            offset: offset as u64,
            data: data.slice(offset..end).to_vec(),
            done: end == total,
            total_size: if first { total as u64 } else { 0 },
        });
        if end == total {
            return chunks;
        }
        offset = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Entry, EntryKind, MessageBody};

    fn ae(term: u64, prev: u64, prev_term: u64, idx: &[u64], commit: u64) -> Message {
        Message {
            from: 1,
            to: 2,
            term,
            body: MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries: idx
                    .iter()
                    .map(|&i| Entry {
                        index: i,
                        term,
                        kind: EntryKind::Normal,
                        data: Bytes::from_static(b"x"),
                    })
                    .collect(),
                commit,
            },
        }
    }

    #[test]
    fn contiguous_appends_merge_and_others_do_not() {
        let merged = coalesce(ae(2, 4, 1, &[5, 6], 4), ae(2, 6, 2, &[7], 6)).unwrap();
        assert_eq!(merged, ae(2, 4, 1, &[5, 6, 7], 6));
        // Gap, other term, wrong prev term, empty first (a probe), non-append: kept apart.
        assert!(coalesce(ae(2, 4, 1, &[5, 6], 4), ae(2, 7, 2, &[8], 6)).is_err());
        assert!(coalesce(ae(2, 4, 1, &[5, 6], 4), ae(3, 6, 2, &[7], 6)).is_err());
        assert!(coalesce(ae(2, 4, 1, &[5, 6], 4), ae(2, 6, 1, &[7], 6)).is_err());
        assert!(coalesce(ae(2, 4, 1, &[], 4), ae(2, 4, 1, &[5], 6)).is_err());
        let hb = Message {
            from: 1,
            to: 2,
            term: 2,
            body: MessageBody::Heartbeat {
                commit: 3,
                read_round: 0,
            },
        };
        let (a, b) = coalesce(ae(2, 4, 1, &[5], 4), hb.clone()).unwrap_err();
        assert_eq!((a, b), (ae(2, 4, 1, &[5], 4), hb));
    }

    #[tokio::test]
    async fn peers_follow_the_membership_and_routes_override_addresses() {
        let shutdown = CancellationToken::new();
        let routes = BTreeMap::from([(3, "127.0.0.1:9003".to_string())]);
        let start = BTreeMap::from([
            (1, "127.0.0.1:7001".to_string()),
            (2, "127.0.0.1:7002".to_string()),
            (3, "127.0.0.1:7003".to_string()),
        ]);
        let mut t = Transport::start(
            1,
            "c",
            PeerSecurity::default(),
            &start,
            &routes,
            shutdown.clone(),
            TaskTracker::new(),
        )
        .unwrap();
        // Never a link to ourselves; node 3 is dialled at its route.
        assert_eq!(
            t.peers(),
            BTreeMap::from([
                (2, "127.0.0.1:7002".to_string()),
                (3, "127.0.0.1:9003".to_string())
            ])
        );
        // 2 removed, 4 added, 3 moved (its route still wins); a bad address is reported and
        // skipped without touching the others.
        let next = BTreeMap::from([
            (3, "127.0.0.1:8003".to_string()),
            (4, "127.0.0.1:7004".to_string()),
            (5, "bad address with spaces".to_string()),
        ]);
        let errors = t.set_peers(&next);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            t.peers(),
            BTreeMap::from([
                (3, "127.0.0.1:9003".to_string()),
                (4, "127.0.0.1:7004".to_string())
            ])
        );
        // Messages to a removed peer are dropped, not queued.
        t.send(vec![ae(2, 0, 0, &[1], 0)]);
        assert_eq!(t.stats().dropped_full.load(Ordering::Relaxed), 0);
    }

    fn ack(term: u64, success: bool, match_index: u64) -> Message {
        Message {
            from: 2,
            to: 1,
            term,
            body: MessageBody::AppendEntriesResponse {
                success,
                match_index,
                reject_index: 0,
                conflict_term: 0,
                conflict_index: 0,
                last_index: match_index,
                leader_hint: None,
            },
        }
    }

    #[test]
    fn successive_acks_collapse_to_the_latest_but_rejections_stay() {
        assert_eq!(
            coalesce(ack(2, true, 5), ack(2, true, 7)).unwrap(),
            ack(2, true, 7)
        );
        assert!(coalesce(ack(2, true, 7), ack(2, true, 5)).is_err());
        assert!(coalesce(ack(2, true, 5), ack(3, true, 7)).is_err());
        assert!(coalesce(ack(2, true, 5), ack(2, false, 7)).is_err());
        assert!(coalesce(ack(2, false, 5), ack(2, true, 7)).is_err());
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use crate::raft::MessageBody;

    fn vote(term: u64, to: NodeId) -> Message {
        Message {
            from: 1,
            to,
            term,
            body: MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: 0,
                last_log_term: 0,
                transfer: false,
            },
        }
    }

    /// A real server on an ephemeral port, fed by the real transport over the `Stream` call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_stream_in_order_and_a_draining_server_ends_open_streams() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (in_tx, mut in_rx) = mpsc::channel(1024);
        let drain = CancellationToken::new();
        let svc = RaftService::new(2, "c".into(), in_tx, 1 << 20).with_draining(drain.clone());
        let drained = drain.clone();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::raft_server::RaftServer::new(svc))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    drained.cancelled_owned(),
                ),
        );
        let shutdown = CancellationToken::new();
        let peers = BTreeMap::from([(2, addr.to_string())]);
        let t = Transport::start(
            1,
            "c",
            PeerSecurity::default(),
            &peers,
            &BTreeMap::new(),
            shutdown.clone(),
            TaskTracker::new(),
        )
        .unwrap();
        for term in 1..=200 {
            t.send(vec![vote(term, 2)]);
            if term % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut terms = Vec::new();
        while terms.len() < 200 {
            let m = tokio::time::timeout(Duration::from_secs(5), in_rx.recv())
                .await
                .expect("messages arrive")
                .expect("inbox open");
            terms.push(m.term);
        }
        assert_eq!(terms, (1..=200).collect::<Vec<_>>(), "in order, none lost");
        assert_eq!(t.stats().failed_calls.load(Ordering::Relaxed), 0);
        // The stream is still open; shutting the server down must not wait for it.
        drain.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops although a peer stream was open")
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_for_another_cluster_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (in_tx, mut in_rx) = mpsc::channel(16);
        let svc = RaftService::new(2, "c".into(), in_tx, 1 << 20);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::raft_server::RaftServer::new(svc))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let shutdown = CancellationToken::new();
        let peers = BTreeMap::from([(2, addr.to_string())]);
        let t = Transport::start(
            1,
            "other",
            PeerSecurity::default(),
            &peers,
            &BTreeMap::new(),
            shutdown.clone(),
            TaskTracker::new(),
        )
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while t.stats().failed_calls.load(Ordering::Relaxed) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never refused");
            t.send(vec![vote(1, 2)]);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            in_rx.try_recv().is_err(),
            "nothing from a foreign cluster reached the node"
        );
    }
}
