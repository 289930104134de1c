//! The node: configuration, the storage seam, and the handle the API uses to talk to the
//! driver task that owns the consensus core.
//!
//! Data directory layout: `<data-dir>/raft` belongs to the log storage; `<data-dir>/node.json`
//! records the node id and cluster id so that a data directory is never reused by another node
//! or cluster by mistake.

mod driver;
pub mod membership;
mod status;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::chat::{Applied, ChatError, ChatMessage, ChatState, Command};
use crate::raft::{ConfState, NodeId, StorageError};
use crate::storage::{DiskConfig, DiskStorage};

pub use self::driver::{Driver, Started};
pub use self::membership::{ConfChanged, ConfOp, MembershipError};
pub use self::status::{NodeStatus, PeerStatus};

/// The storage backend the node runs on: the durable, checksummed WAL of [`crate::storage`].
/// Every use goes through this alias and [`open_storage`].
pub type NodeStorage = DiskStorage;

/// Opens (or creates) the log storage under `dir` (which is `<data-dir>/raft`). `conf` is the
/// initial membership, used only when the storage is fresh. A damaged log (a bad checksum
/// before the tail) is an error naming the file and offset: the node refuses to start rather
/// than silently drop acknowledged entries.
///
/// The commit index is persisted lazily (only with term or vote changes): it costs two extra
/// fsyncs per Ready otherwise, and a restarted node safely re-learns it from the leader.
pub fn open_storage(dir: &Path, conf: &ConfState) -> Result<NodeStorage, NodeError> {
    let mut cfg = DiskConfig::new(dir);
    cfg.lazy_commit = true;
    DiskStorage::open(cfg, conf.clone())
        .map_err(|e| NodeError::Io(format!("storage at {}: {e}", dir.display())))
}

/// Makes sure `data_dir` belongs to node `id` of `cluster_id`: records both in
/// `<data-dir>/node.json` on first use and refuses to start on a mismatch, so a data directory
/// copied or mistyped onto another node can never make it impersonate a different member.
pub fn check_identity(data_dir: &Path, id: NodeId, cluster_id: &str) -> Result<(), NodeError> {
    let io = |e: std::io::Error| NodeError::Io(format!("{}: {e}", data_dir.display()));
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let path = data_dir.join("node.json");
    let want = serde_json::json!({ "id": id, "cluster_id": cluster_id });
    match std::fs::read(&path) {
        Ok(bytes) => {
            let got: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
            if got != want {
                return Err(NodeError::Config(format!(
                    "{} belongs to {got}, not to node {id} of cluster {cluster_id:?}",
                    path.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = data_dir.join("node.json.tmp");
            std::fs::write(&tmp, want.to_string()).map_err(io)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

/// The cluster id recorded in `<data-dir>/node.json`, if the directory has been used before.
/// A restarting `--join` node takes its cluster id from here instead of asking the cluster.
pub fn stored_cluster_id(data_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(data_dir.join("node.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("cluster_id")?.as_str().map(str::to_string)
}

/// Everything a node needs to run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Address to listen on; also what peers and clients are told unless this node's own
    /// `peers` entry says otherwise (see [`NodeConfig::advertised_addr`]).
    pub addr: SocketAddr,
    /// The initial members (every voter's address, this node included) for a node that
    /// bootstraps a new cluster. Empty for a node that joins an existing cluster (`--join`) or
    /// restarts from storage that already knows the membership: storage is the authority then,
    /// and this list only seeds a fresh storage.
    pub peers: BTreeMap<NodeId, String>,
    /// Address this node tells others to reach it at when `peers` has no entry for it (a
    /// joining node); `None` means the listen address.
    pub advertise: Option<String>,
    /// Local dialling overrides (`--route ID=ADDR`): reach node ID at ADDR instead of its
    /// replicated address. The launcher routes every peer link through its fault proxies this
    /// way; the replicated membership keeps the real addresses that clients and other nodes use.
    pub routes: BTreeMap<NodeId, String>,
    /// Addresses learned outside the membership (from the node asked with `--join`). Used only
    /// to reach peers before this node has learned the membership itself: a fresh joiner must
    /// answer the leader's first AppendEntries before any configuration entry reaches it.
    pub known_addrs: BTreeMap<NodeId, String>,
    /// Join an existing cluster after starting (`--join`); `None` for a node that bootstraps
    /// or restarts.
    pub join: Option<JoinConfig>,
    /// Data directory (`<data-dir>/raft` holds the log).
    pub data_dir: PathBuf,
    /// Peers with another cluster id are refused.
    pub cluster_id: String,
    /// Shared secret: when set, peer calls without it are refused (UNAUTHENTICATED).
    pub cluster_token: Option<String>,
    /// Length of one tick; the leader heartbeats every tick.
    pub heartbeat: Duration,
    /// Base election timeout in ticks; the core draws from `[election_ticks, 2*election_ticks)`.
    pub election_ticks: u64,
    /// Compact the log once at least this many entries are applied past the last snapshot (and
    /// see [`snapshot_due`] for the size rule that keeps snapshots amortised).
    pub snapshot_threshold: u64,
    /// Cap on a message's text.
    pub max_text_bytes: usize,
    /// Request ids remembered for deduplication.
    pub dedupe_capacity: usize,
    /// Cap on a snapshot received from a peer.
    pub max_snapshot_bytes: u64,
}

impl NodeConfig {
    /// Sane defaults for node `id` at `addr` with the given members.
    pub fn new(id: NodeId, addr: SocketAddr, peers: BTreeMap<NodeId, String>) -> Self {
        NodeConfig {
            id,
            addr,
            peers,
            advertise: None,
            routes: BTreeMap::new(),
            known_addrs: BTreeMap::new(),
            join: None,
            data_dir: PathBuf::from(format!("data/node-{id}")),
            cluster_id: "rustyraft".into(),
            cluster_token: None,
            heartbeat: Duration::from_millis(50),
            election_ticks: 6,
            snapshot_threshold: 10_000,
            max_text_bytes: crate::chat::DEFAULT_MAX_TEXT_BYTES,
            dedupe_capacity: crate::chat::DEFAULT_DEDUPE_CAPACITY,
            max_snapshot_bytes: 1 << 30,
        }
    }

    /// The address others reach this node at: its own `peers` entry when there is one (a
    /// container listens on `0.0.0.0` but is known by its service name), else `advertise`, else
    /// the listen address.
    pub fn advertised_addr(&self) -> String {
        self.peers
            .get(&self.id)
            .or(self.advertise.as_ref())
            .cloned()
            .unwrap_or_else(|| self.addr.to_string())
    }

    /// Address of a node from the static configuration (bootstrap peers, then addresses learned
    /// when joining), for when the replicated membership does not know it.
    pub fn addr_of(&self, id: NodeId) -> Option<&str> {
        self.peers
            .get(&id)
            .or_else(|| self.known_addrs.get(&id))
            .map(String::as_str)
    }
}

/// How a node joins an existing cluster (`raft_client run ... --join A[,B...]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinConfig {
    /// Client addresses of existing members to ask; any member will do (a follower redirects
    /// to the leader).
    pub targets: Vec<String>,
    /// Join as a learner and stay one (`--learner`); otherwise become a voter once caught up.
    pub learner: bool,
    /// The cluster id the operator expects (`--cluster-id`); `None` takes the target's.
    pub expect_cluster_id: Option<String>,
}

/// Errors of the node layer. The API maps them to gRPC codes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// This node is not the leader; `leader` is the one it knows of (id and address).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// Known leader, if any.
        leader: Option<(NodeId, String)>,
    },
    /// The outcome is unknown or the service is temporarily unable to answer; retry (with the
    /// same client request id, sends stay idempotent).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The chat state machine refused the command.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// A membership change was refused or did not complete in time.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The driver has stopped (shutdown or fatal error).
    #[error("node is shutting down")]
    Stopped,
    /// Storage failed: fatal for the driver.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The consensus core failed: fatal for the driver.
    #[error("raft: {0}")]
    Raft(#[from] crate::raft::Error),
    /// Local I/O (data directory, sockets).
    #[error("i/o: {0}")]
    Io(String),
    /// The configuration is unusable.
    #[error("config: {0}")]
    Config(String),
}

/// A request to the driver.
pub(crate) enum Request {
    /// Propose a command and answer once it is applied.
    Propose {
        /// An encoded, validated [`Command`].
        data: bytes::Bytes,
        reply: oneshot::Sender<Result<Applied, NodeError>>,
    },
    /// Obtain a linearizable read index.
    ReadIndex {
        reply: oneshot::Sender<Result<u64, NodeError>>,
    },
    /// Compact the log now.
    Snapshot {
        reply: oneshot::Sender<Result<(u64, u64), NodeError>>,
    },
    /// Change the membership; answered once the configuration entry is committed.
    ChangeConf {
        op: ConfOp,
        reply: oneshot::Sender<Result<ConfChanged, NodeError>>,
    },
    /// Start handing leadership to a voter (0: the most up-to-date one); answered with the
    /// chosen target as soon as the transfer has started.
    TransferLeader {
        target: NodeId,
        reply: oneshot::Sender<Result<NodeId, NodeError>>,
    },
}

/// State shared between the driver (the only writer) and the API (readers).
pub struct Shared {
    /// The chat state. A std `RwLock`, not a tokio one: it is never held across an `.await`,
    /// and writers (the driver applying a batch) hold it only for the batch.
    pub sm: RwLock<ChatState>,
    /// Last applied index, for `min_index` and ReadIndex waits.
    pub applied: watch::Sender<u64>,
    /// This node's view of the cluster, updated after every driver iteration.
    pub status: watch::Sender<NodeStatus>,
    /// Every newly applied message, for subscribers. Bounded: a lagging receiver gets
    /// `Lagged` and catches up from the state machine instead.
    pub events: broadcast::Sender<Arc<ChatMessage>>,
    /// Turns true to stop the driver (after the gRPC server has drained).
    pub shutdown: watch::Sender<bool>,
    /// Turns true as soon as shutdown begins, so long-lived streams (Subscribe, Chat) end and
    /// the server's graceful drain does not wait on them forever.
    pub draining: watch::Sender<bool>,
}

/// Capacity of the applied-message broadcast.
pub const EVENTS_CAPACITY: usize = 1024;
/// Capacity of the driver's request queue.
pub const REQUEST_QUEUE: usize = 4096;
/// Capacity of the driver's inbound peer-message queue.
pub const INBOUND_QUEUE: usize = 4096;

/// A cheap, cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    requests: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    config: Arc<NodeConfig>,
}

impl NodeHandle {
    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Shared state (chat state machine, watches, events).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Latest status snapshot.
    pub fn status(&self) -> NodeStatus {
        self.shared.status.borrow().clone()
    }

    /// Known leader (id and the address clients use, from the replicated membership), if any.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let s = self.shared.status.borrow();
        s.leader_id.map(|id| (id, self.addr_in(&s, id)))
    }

    fn addr_in(&self, s: &NodeStatus, id: NodeId) -> String {
        s.addrs
            .get(&id)
            .map(String::as_str)
            .or_else(|| self.config.addr_of(id))
            .unwrap_or_default()
            .to_string()
    }

    /// The address this node dials to reach node `id`: its `--route` override when there is
    /// one (the launcher's fault proxies), else its replicated address. Use it for node-to-node
    /// calls (forwarding to the leader); tell clients [`NodeHandle::leader`]'s address instead.
    pub fn dial_addr(&self, id: NodeId) -> String {
        match self.config.routes.get(&id) {
            Some(a) => a.clone(),
            None => self.addr_in(&self.shared.status.borrow(), id),
        }
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, NodeError>>) -> Request,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.requests.try_send(make(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                NodeError::Unavailable("node overloaded, request queue full".into())
            }
            mpsc::error::TrySendError::Closed(_) => NodeError::Stopped,
        })?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Proposes a command on this node (which must be the leader) and waits until it is applied.
    /// The command is checked and encoded here, in the caller's task, so the driver task (one
    /// for the whole node) only appends bytes.
    pub async fn propose(&self, cmd: &Command) -> Result<Applied, NodeError> {
        cmd.validate(self.config.max_text_bytes)?;
        let data = cmd.encode();
        self.request(|reply| Request::Propose { data, reply }).await
    }

    /// This node's role, without copying the whole status.
    pub fn role(&self) -> crate::raft::Role {
        self.shared.status.borrow().role
    }

    /// Obtains a read index through ReadIndex and waits until it is applied locally, bounded by
    /// `timeout`. After it returns, local reads are linearizable.
    pub async fn linearizable_barrier(&self, timeout: Duration) -> Result<u64, NodeError> {
        let fut = async {
            let index = self.request(|reply| Request::ReadIndex { reply }).await?;
            self.wait_applied(index).await?;
            Ok(index)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| NodeError::Unavailable("read index not confirmed in time".into()))?
    }

    /// Waits until `index` is applied locally.
    pub async fn wait_applied(&self, index: u64) -> Result<(), NodeError> {
        let mut rx = self.shared.applied.subscribe();
        rx.wait_for(|&a| a >= index)
            .await
            .map(|_| ())
            .map_err(|_| NodeError::Stopped)
    }

    /// Asks the driver for one membership change and waits until its configuration entry is
    /// committed (or refused). Leader only; see [`ConfOp`] for what each change does.
    pub async fn change_conf(&self, op: ConfOp) -> Result<ConfChanged, NodeError> {
        self.request(|reply| Request::ChangeConf { op, reply })
            .await
    }

    /// Starts a leadership transfer to `target` (0: the most up-to-date other voter) and
    /// returns the chosen target. The transfer itself completes asynchronously: watch the
    /// status for the new leader.
    pub async fn transfer_leader(&self, target: NodeId) -> Result<NodeId, NodeError> {
        self.request(|reply| Request::TransferLeader { target, reply })
            .await
    }

    /// Takes a snapshot now; returns its (index, term).
    pub async fn snapshot(&self) -> Result<(u64, u64), NodeError> {
        self.request(|reply| Request::Snapshot { reply }).await
    }

    /// Waits until the status changes or `timeout` passes; used to retry after a leader change.
    pub async fn status_changed(&self, timeout: Duration) {
        let mut rx = self.shared.status.subscribe();
        rx.mark_unchanged();
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
    }
}

/// Whether to take a snapshot now: at least `min_entries` entries applied since the last one,
/// and at least half the last snapshot's size in applied command bytes; but always once
/// [`SNAPSHOT_MAX_INTERVAL_FACTOR`] times `min_entries` are applied.
///
/// Why the size rule: a snapshot encodes the whole chat state. Taken every fixed number of
/// entries, its total cost grows with the square of the history (the profile in
/// `docs/benchmarks.md` showed throughput falling as the state grew). Tying the interval to the
/// snapshot's own size makes each applied byte pay for about two encoded bytes. Why the cap: the
/// log tail a restart replays (and a lagging follower may need) stays bounded, 100 000 entries
/// with the default threshold.
pub fn snapshot_due(
    entries_since: u64,
    bytes_since: u64,
    last_snapshot_bytes: u64,
    min_entries: u64,
) -> bool {
    let max_entries = min_entries.saturating_mul(SNAPSHOT_MAX_INTERVAL_FACTOR);
    entries_since >= max_entries
        || (entries_since >= min_entries && bytes_since.saturating_mul(2) >= last_snapshot_bytes)
}

/// See [`snapshot_due`]: the longest snapshot interval, as a multiple of the threshold.
pub const SNAPSHOT_MAX_INTERVAL_FACTOR: u64 = 10;
