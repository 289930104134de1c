//! A node's configuration, and the identity stamp of its data directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::NodeError;
use crate::raft::NodeId;

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
    /// TLS and authentication of the client listener, and how this node dials other nodes'
    /// client listeners (forwarding sends, `--join`).
    pub client: ClientSecurity,
}

/// The client side of issue 16: who may call `ChatService` and `Cluster`, over what.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    /// `--tls-cert`, `--tls-key`: serve the client services over TLS with this pair.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How this node reaches other nodes' client listeners: TLS trusting `--ca` (required with
    /// `--tls-cert`: a TLS cluster's nodes are only reachable over TLS), and for `--join` the
    /// admin token (`--token`). A forwarded send never uses this token but the client's own.
    pub dial: crate::tls::Credentials,
    /// `--client-tokens FILE`: calls need a bearer token listed there.
    pub tokens: Option<PathBuf>,
    /// `--open-reads`: GetHistory, Subscribe and ListRooms need no token.
    pub open_reads: bool,
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
            client: ClientSecurity::default(),
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
