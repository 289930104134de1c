//! A node's configuration, and the identity stamp of its data directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::NodeError;
use crate::raft::{default_peer_addr, ConfState, NodeId, PEER_PORT_OFFSET};
use crate::transport::PeerAuth;

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
    /// Address the client services listen on; also what clients are told unless this node's
    /// own `peers` entry says otherwise (see [`NodeConfig::advertised_addr`]).
    pub addr: SocketAddr,
    /// Address the peer `Raft` service listens on. Never the client port: clients cannot even
    /// reach the Raft service. Default: the client port + [`PEER_PORT_OFFSET`].
    pub peer_addr: SocketAddr,
    /// The initial members (every voter's address, this node included) for a node that
    /// bootstraps a new cluster. Empty for a node that joins an existing cluster (`--join`) or
    /// restarts from storage that already knows the membership: storage is the authority then,
    /// and this list only seeds a fresh storage.
    pub peers: BTreeMap<NodeId, String>,
    /// Address this node tells others to reach it at when `peers` has no entry for it (a
    /// joining node); `None` means the listen address.
    pub advertise: Option<String>,
    /// Explicit peer addresses of bootstrap members (`id=CLIENT@PEER`); a member missing here
    /// is reached at its client port + [`PEER_PORT_OFFSET`].
    pub peer_addrs: BTreeMap<NodeId, String>,
    /// Peer address this node tells others (`--advertise-peer`); `None` means the advertised
    /// client host with the peer listen port.
    pub advertise_peer: Option<String>,
    /// Local dialling overrides (`--route ID=ADDR`): reach node ID's `Raft` service at ADDR
    /// instead of its replicated peer address. The launcher routes every peer link through its
    /// fault proxies this way; the replicated membership keeps the real addresses. Sends a
    /// follower forwards go to the leader's client port, never through a route.
    pub routes: BTreeMap<NodeId, String>,
    /// Addresses learned outside the membership (from the node asked with `--join`). Used only
    /// to reach peers before this node has learned the membership itself: a fresh joiner must
    /// answer the leader's first AppendEntries before any configuration entry reaches it.
    pub known_addrs: BTreeMap<NodeId, String>,
    /// Peer addresses learned the same way.
    pub known_peer_addrs: BTreeMap<NodeId, String>,
    /// Join an existing cluster after starting (`--join`); `None` for a node that bootstraps
    /// or restarts.
    pub join: Option<JoinConfig>,
    /// Data directory (`<data-dir>/raft` holds the log).
    pub data_dir: PathBuf,
    /// Peers with another cluster id are refused.
    pub cluster_id: String,
    /// Cluster secrets for peer authentication (the first signs, all verify: see
    /// [`crate::transport::PeerAuth`]). Empty: this node neither signs nor checks peer calls,
    /// which [`NodeConfig::peer_auth`] allows only on loopback or with `insecure_peers`.
    pub cluster_secrets: Vec<String>,
    /// Accept running without peer authentication on a peer listener reachable beyond
    /// loopback (`--insecure-peers`).
    pub insecure_peers: bool,
    /// Mutual TLS on peer links (`--peer-tls-cert/--peer-tls-key/--peer-ca`): the peer
    /// listener only completes a handshake with a certificate of the cluster CA, and this node
    /// dials peers over TLS with its own. Peer authentication on its own (a secret may be
    /// added on top), and the encryption a plaintext secret cannot give.
    pub peer_tls: Option<crate::tls::PeerTlsFiles>,
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
    /// Where to serve HTTP (`--http-addr`): the web page, the JSON API and event streams,
    /// `/metrics`, `/healthz` and `/readyz`; `None`:
    /// no HTTP listener. Off by default so that a node never takes a port nobody asked for.
    pub http_addr: Option<SocketAddr>,
    /// The host:port browsers reach this node's HTTP listener at (`--http-advertise`), when
    /// it differs from `http_addr` (a container's published port, a wildcard bind). Reported
    /// in `Status`, so the web page can fail over to this node.
    pub http_advertise: Option<String>,
    /// This node's metrics. Always kept (updating them is a few atomic adds per driver
    /// iteration); exported only when `http_addr` is set. Shared, so the server, the driver,
    /// the transport and the API all count into one registry.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
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
    /// The host:port of this node's web page and HTTP API as browsers reach it
    /// (`--http-advertise`, else `--http-addr`); `None` without an HTTP listener.
    pub fn http_advertised(&self) -> Option<String> {
        self.http_addr?;
        self.http_advertise
            .clone()
            .or_else(|| self.http_addr.map(|a| a.to_string()))
    }

    /// Sane defaults for node `id` at `addr` with the given members.
    pub fn new(id: NodeId, addr: SocketAddr, peers: BTreeMap<NodeId, String>) -> Self {
        NodeConfig {
            id,
            addr,
            peer_addr: SocketAddr::new(addr.ip(), addr.port().saturating_add(PEER_PORT_OFFSET)),
            peers,
            advertise: None,
            peer_addrs: BTreeMap::new(),
            advertise_peer: None,
            routes: BTreeMap::new(),
            known_addrs: BTreeMap::new(),
            known_peer_addrs: BTreeMap::new(),
            join: None,
            data_dir: PathBuf::from(format!("data/node-{id}")),
            cluster_id: "rustyraft".into(),
            cluster_secrets: Vec::new(),
            insecure_peers: false,
            peer_tls: None,
            heartbeat: Duration::from_millis(50),
            election_ticks: 6,
            snapshot_threshold: 10_000,
            max_text_bytes: crate::chat::DEFAULT_MAX_TEXT_BYTES,
            dedupe_capacity: crate::chat::DEFAULT_DEDUPE_CAPACITY,
            max_snapshot_bytes: 1 << 30,
            client: ClientSecurity::default(),
            http_addr: None,
            http_advertise: None,
            metrics: Default::default(),
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

    /// The peer address others reach this node's `Raft` service at: its explicit bootstrap
    /// entry, else `advertise_peer`, else the advertised client host with the peer listen
    /// port.
    pub fn advertised_peer_addr(&self) -> String {
        if let Some(a) = self
            .peer_addrs
            .get(&self.id)
            .or(self.advertise_peer.as_ref())
        {
            return a.clone();
        }
        let client = self.advertised_addr();
        match client.rsplit_once(':') {
            Some((host, _)) => format!("{host}:{}", self.peer_addr.port()),
            None => self.peer_addr.to_string(),
        }
    }

    /// Peer address of a node from the static configuration, for when the replicated
    /// membership does not know it: explicit entries, else derived from its client address.
    pub fn peer_addr_of(&self, id: NodeId) -> Option<String> {
        if id == self.id {
            return Some(self.advertised_peer_addr());
        }
        self.peer_addrs
            .get(&id)
            .or_else(|| self.known_peer_addrs.get(&id))
            .cloned()
            .or_else(|| self.addr_of(id).and_then(default_peer_addr))
    }

    /// The membership a fresh data directory starts with: the bootstrap voters, their client
    /// addresses and (recorded explicitly, so later nodes need not guess) their peer addresses.
    /// Empty for a node that joins.
    pub fn bootstrap_conf(&self) -> ConfState {
        let mut conf = ConfState::with_voters(self.peers.keys().copied());
        conf.addrs = self.peers.clone();
        conf.peer_addrs = self
            .peers
            .keys()
            .filter_map(|&id| Some((id, self.peer_addr_of(id)?)))
            .collect();
        conf
    }

    /// The peer authentication this node runs with. Refuses to run without it when the peer
    /// listener is reachable beyond loopback, unless `insecure_peers` says so: an open peer
    /// port lets anyone who reaches it rewrite the log.
    pub fn peer_auth(&self) -> Result<Option<PeerAuth>, NodeError> {
        if self.cluster_secrets.is_empty() {
            if let Some(t) = &self.peer_tls {
                // Mutual TLS authenticates peers; check the files now, not at the first call.
                t.server()
                    .and(t.client())
                    .map_err(|e| NodeError::Config(format!("peer TLS: {e}")))?;
                return Ok(None);
            }
            if !self.peer_addr.ip().is_loopback() && !self.insecure_peers {
                return Err(NodeError::Config(format!(
                    "the peer listener {} is reachable beyond loopback but no cluster secret is \
                     set: give --cluster-secret-file (or --join-token) or peer mutual TLS \
                     (--peer-tls-cert/--peer-tls-key/--peer-ca), or --insecure-peers to run \
                     without peer authentication",
                    self.peer_addr
                )));
            }
            return Ok(None);
        }
        PeerAuth::new(&self.cluster_id, &self.cluster_secrets)
            .map(Some)
            .map_err(|e| NodeError::Config(format!("cluster secret: {e}")))
    }
}

/// File in the data directory that keeps the cluster secrets, one per line (the first signs).
pub const SECRET_FILE: &str = "cluster.secret";

/// Reads cluster secrets: one per line, blank lines and `#` comments ignored.
pub fn read_secrets(path: &Path) -> Result<Vec<String>, NodeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| NodeError::Config(format!("cluster secret file {}: {e}", path.display())))?;
    let secrets: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if secrets.is_empty() {
        return Err(NodeError::Config(format!(
            "cluster secret file {} holds no secret",
            path.display()
        )));
    }
    Ok(secrets)
}

/// The secrets a node runs with: `given` ones (from `--cluster-secret-file` or a join token)
/// replace those kept in `<data-dir>/cluster.secret` and are kept there (mode 0600, written
/// atomically), so a restart needs no flag; without `given`, the kept ones; else none.
pub fn settle_secrets(data_dir: &Path, given: &[String]) -> Result<Vec<String>, NodeError> {
    let path = data_dir.join(SECRET_FILE);
    if given.is_empty() {
        return match path.exists() {
            true => read_secrets(&path),
            false => Ok(Vec::new()),
        };
    }
    let io = |e: std::io::Error| NodeError::Io(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let tmp = data_dir.join(format!("{SECRET_FILE}.tmp"));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(format!("{}\n", given.join("\n")).as_bytes())
            .map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(given.to_vec())
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
