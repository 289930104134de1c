//! `raft_client run`: the node's flags, and how they become a [`NodeConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rustyraft::node::{JoinConfig, NodeConfig};

use super::{fail2, init_tracing, parse_member_addr, usage_error, LogFormat};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("members").required(true).args(["peers", "join"])))]
pub(super) struct RunArgs {
    /// This node's id (a small positive integer).
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,
    /// Address the client services listen on, host:port (0.0.0.0:PORT listens on every
    /// interface).
    addr: SocketAddr,
    /// Address the peer Raft service listens on (never the client port). Default: the client
    /// address with its port + 1000.
    #[arg(long)]
    peer_addr: Option<SocketAddr>,
    /// Peer address the other members reach this node at, when it differs from the advertised
    /// client host with the peer port.
    #[arg(long, value_parser = parse_member_addr)]
    advertise_peer: Option<String>,
    /// Address the other members and clients reach this node at, host:port, when it differs
    /// from the listen address (a container listening on 0.0.0.0 and known as `node1:50051`).
    /// Defaults to the listen address. This node's entry in `peers`, if present, must equal it.
    #[arg(long)]
    advertise: Option<String>,
    /// Members of a new cluster, comma-separated `id=host:port` (client addresses; each peer
    /// listener is at the client port + 1000), or `id=host:port@host:peerport` to give the
    /// peer address. This node's own entry is allowed. Only seeds a fresh data directory:
    /// afterwards the replicated membership rules.
    #[arg(value_parser = parse_members)]
    peers: Option<Members>,
    /// Join a running cluster instead: client addresses of one or more of its nodes,
    /// comma-separated. The node starts empty, learns the cluster id and the members from them,
    /// and asks the leader to add it (as a voter once caught up, unless --learner). Harmless on
    /// a restart: a node its storage lists as a member does nothing more.
    #[arg(long, value_name = "ADDR[,ADDR...]", conflicts_with = "peers")]
    join: Option<String>,
    /// With --join: join as a non-voting learner and stay one.
    #[arg(long, requires = "join")]
    learner: bool,
    /// Dial some peers' Raft services at another address than the replicated peer address,
    /// `ID=host:port,...` (the launcher routes every peer link through its fault-injecting
    /// proxies this way).
    #[arg(long, value_parser = parse_peers)]
    route: Option<BTreeMap<u64, String>>,
    /// Data directory (default `./data/node-<id>`); `<dir>/raft` holds the log.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Cluster id; peers with another id are refused. Default: the one recorded in the data
    /// directory (a restart, or a directory seeded by `restore`), else `rustyraft`; with --join, the
    /// cluster's own id (giving one checks it).
    #[arg(long)]
    cluster_id: Option<String>,
    /// File with the cluster secret (one per line: the first signs peer calls, every line is
    /// accepted, for rotation). Kept in `<data-dir>/cluster.secret`, so restarts need no flag.
    /// Without it, the environment variable RUSTYRAFT_CLUSTER_SECRET (comma-separated) is used.
    /// Peer calls without valid credentials are refused (UNAUTHENTICATED) and change nothing.
    #[arg(long, value_name = "FILE", conflicts_with = "join_token")]
    cluster_secret_file: Option<PathBuf>,
    /// With --join: the cluster id and secret in one string, from `raft_client cluster
    /// join-token --data-dir <a member's data dir>`.
    #[arg(long, requires = "join")]
    join_token: Option<String>,
    /// Run without peer authentication even though the peer listener is reachable beyond
    /// loopback (without a secret, a node on loopback runs unauthenticated anyway).
    #[arg(long)]
    insecure_peers: bool,
    /// Serve HTTP on this host:port: the chat page (`/`), the cluster view (`/cluster`), the
    /// HTTP/JSON API and event streams (`/v1/...`), Prometheus `/metrics`, `/healthz` and
    /// `/readyz` (default: no HTTP listener). See docs/web.md and docs/operations.md.
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// The host:port browsers reach --http-addr at, when it differs (a published container
    /// port, a 0.0.0.0 bind); the web page fails over to the addresses nodes advertise.
    #[arg(long, value_name = "HOST:PORT", requires = "http_addr")]
    http_advertise: Option<String>,
    /// Mutual TLS on peer links: this node's certificate (from `raft_client certs issue`),
    /// served on the peer listener and shown when dialling peers. With --peer-tls-key and
    /// --peer-ca; a peer must hold a certificate of that CA to get through the handshake.
    #[arg(long, value_name = "FILE", requires_all = ["peer_tls_key", "peer_ca"])]
    peer_tls_cert: Option<PathBuf>,
    /// The private key of --peer-tls-cert.
    #[arg(long, value_name = "FILE", requires = "peer_tls_cert")]
    peer_tls_key: Option<PathBuf>,
    /// The cluster CA every peer's certificate must chain to.
    #[arg(long, value_name = "FILE", requires = "peer_tls_cert")]
    peer_ca: Option<PathBuf>,
    /// Heartbeat interval (one tick), in milliseconds.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_ms: u64,
    /// Minimum election timeout in milliseconds; timeouts are drawn from [min, max).
    #[arg(long, default_value_t = 300)]
    election_min_ms: u64,
    /// Maximum election timeout in milliseconds; must be twice the minimum (the core draws
    /// from [min, 2*min)).
    #[arg(long, default_value_t = 600)]
    election_max_ms: u64,
    /// Compact the log after this many applied entries past the last snapshot.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_threshold: u64,
    /// Largest message text accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_message_bytes: usize,
    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve the client services (ChatService, Cluster, health, reflection) over TLS with this
    /// certificate (PEM, from `certs issue`). Needs --tls-key and --ca.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require a bearer token from this file (`token add`) on ChatService and Cluster calls;
    /// the file is re-read when it changes.
    #[arg(long, value_name = "FILE")]
    client_tokens: Option<PathBuf>,
    /// With --client-tokens: GetHistory, Subscribe and ListRooms need no token.
    #[arg(long, requires = "client_tokens")]
    open_reads: bool,
}

/// Environment variable with the cluster secret(s), comma-separated, used when no
/// `--cluster-secret-file` is given (the compose file passes the secret this way).
const CLUSTER_SECRET_ENV: &str = "RUSTYRAFT_CLUSTER_SECRET";

/// Bootstrap members: client addresses, and the peer addresses given explicitly.
#[derive(Clone, Debug, Default)]
pub(super) struct Members {
    pub(super) client: BTreeMap<u64, String>,
    pub(super) peer: BTreeMap<u64, String>,
}

pub(super) fn parse_members(s: &str) -> Result<Members, String> {
    let mut m = Members::default();
    for (id, a) in parse_peers(s)? {
        match a.split_once('@') {
            Some((client, peer)) => {
                parse_member_addr(client)?;
                parse_member_addr(peer)?;
                m.client.insert(id, client.to_string());
                m.peer.insert(id, peer.to_string());
            }
            None => {
                m.client.insert(id, a);
            }
        }
    }
    Ok(m)
}

fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("peer {part:?} is not id=host:port"))?;
        let id: u64 = id
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(|| format!("peer id {id:?} is not a positive integer"))?;
        if !addr.contains(':') {
            return Err(format!("peer address {addr:?} is not host:port"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("peer id {id} is listed twice"));
        }
    }
    Ok(peers)
}

pub(super) async fn run_node(a: RunArgs, dial: rustyraft::tls::Credentials) -> anyhow::Result<()> {
    if a.election_min_ms < 2 * a.heartbeat_ms {
        usage_error("--election-min-ms must be at least twice --heartbeat-ms");
    }
    if a.election_max_ms != 2 * a.election_min_ms {
        usage_error("--election-max-ms must be exactly twice --election-min-ms");
    }
    init_tracing(a.log_format);
    let advertised = a.advertise.unwrap_or_else(|| a.addr.to_string());
    if let Err(e) = rustyraft::node::membership::validate_addr(&advertised) {
        usage_error(&format!("--advertise: {e}"));
    }
    let members = a.peers.unwrap_or_default();
    let mut peers = members.client;
    if a.join.is_none() {
        match peers.get(&a.id) {
            Some(own) if own != &advertised => usage_error(&format!(
                "peers list node {} at {own}, but this node is reachable at {advertised} \
                 (use --advertise when it differs from the listen address)",
                a.id
            )),
            Some(_) => {}
            None => {
                peers.insert(a.id, advertised.clone());
            }
        }
    }
    let mut cfg = NodeConfig::new(a.id, a.addr, peers);
    cfg.advertise = Some(advertised);
    cfg.peer_addrs = members.peer;
    if let Some(p) = a.peer_addr {
        cfg.peer_addr = p;
    }
    if cfg.peer_addr == cfg.addr {
        usage_error("--peer-addr must differ from the client address");
    }
    cfg.advertise_peer = a.advertise_peer;
    cfg.insecure_peers = a.insecure_peers;
    cfg.http_addr = a.http_addr;
    if let Some(adv) = a.http_advertise {
        if let Err(e) = rustyraft::node::membership::validate_addr(&adv) {
            usage_error(&format!("--http-advertise: {e}"));
        }
        cfg.http_advertise = Some(adv);
    }
    if let (Some(cert), Some(key), Some(ca)) = (a.peer_tls_cert, a.peer_tls_key, a.peer_ca) {
        cfg.peer_tls = Some(rustyraft::tls::PeerTlsFiles { cert, key, ca });
    }
    if let Some(f) = &a.cluster_secret_file {
        match rustyraft::node::read_secrets(f) {
            Ok(s) => cfg.cluster_secrets = s,
            Err(e) => usage_error(&e.to_string()),
        }
    } else if let Ok(s) = std::env::var(CLUSTER_SECRET_ENV) {
        // For containers: compose hands the secret over in the environment.
        cfg.cluster_secrets = s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    let mut token_cluster = None;
    if let Some(t) = &a.join_token {
        match rustyraft::node::join::decode_join_token(t) {
            Ok((cluster, secret)) => {
                cfg.cluster_secrets = vec![secret];
                token_cluster = Some(cluster);
            }
            Err(e) => usage_error(&format!("--join-token: {e}")),
        }
    }
    if let Some(d) = a.data_dir {
        cfg.data_dir = d;
    }
    cfg.routes = a.route.unwrap_or_default();
    cfg.routes.remove(&a.id);
    if let Some(j) = a.join {
        let targets: Vec<String> = j
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if targets.is_empty() {
            usage_error("--join needs at least one host:port");
        }
        if let (Some(want), Some(got)) = (&a.cluster_id, &token_cluster) {
            if want != got {
                usage_error(&format!(
                    "--cluster-id is {want:?} but the join token is for cluster {got:?}"
                ));
            }
        }
        cfg.join = Some(JoinConfig {
            targets,
            learner: a.learner,
            expect_cluster_id: a.cluster_id.clone().or(token_cluster.clone()),
        });
    }
    // Without --cluster-id, a data directory that was used before (or seeded by `restore`)
    // keeps its own cluster id.
    cfg.cluster_id = a
        .cluster_id
        .or(token_cluster)
        .or_else(|| rustyraft::node::stored_cluster_id(&cfg.data_dir))
        .unwrap_or_else(|| "rustyraft".into());
    if cfg.cluster_secrets.is_empty() {
        // A restart: the data directory keeps the secret it was given.
        let kept = cfg.data_dir.join(rustyraft::node::SECRET_FILE);
        if kept.exists() {
            match rustyraft::node::read_secrets(&kept) {
                Ok(s) => cfg.cluster_secrets = s,
                Err(e) => usage_error(&e.to_string()),
            }
        }
    }
    // Refuse an open peer listener beyond loopback (and a weak secret) before anything starts.
    if let Err(e) = cfg.peer_auth() {
        usage_error(&e.to_string());
    }
    cfg.heartbeat = Duration::from_millis(a.heartbeat_ms);
    cfg.election_ticks = (a.election_min_ms / a.heartbeat_ms).max(2);
    cfg.snapshot_threshold = a.snapshot_threshold;
    cfg.max_text_bytes = a.max_message_bytes;
    if a.tls_cert.is_some() && !dial.is_tls() {
        usage_error(
            "--tls-cert needs --ca (the cluster CA: nodes reach each other's client listeners \
             over TLS)",
        );
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        rustyraft::tls::server_config(cert, key).unwrap_or_else(|e| fail2(e));
        cfg.client.tls = Some((cert.clone(), key.clone()));
    }
    if let Some(t) = &a.client_tokens {
        rustyraft::api::auth::TokenFile::load(t, false).unwrap_or_else(|e| fail2(e));
    }
    cfg.client.dial = dial;
    cfg.client.tokens = a.client_tokens;
    cfg.client.open_reads = a.open_reads;
    rustyraft::server::run(cfg, rustyraft::server::shutdown_signal()).await?;
    Ok(())
}
