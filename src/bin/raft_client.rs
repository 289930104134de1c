//! `raft_client`: one RustyRaft node (`run`) plus the client subcommands (`send`, `tail`,
//! `chat`, `status`). Thin on purpose: parse arguments, set up tracing, call the library.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use rustyraft::bench::{self, Api, FanoutConfig, LoadConfig, Target};
use rustyraft::client::{self, Client};
use rustyraft::client::{MembershipCall, MembershipReply};
use rustyraft::node::{JoinConfig, NodeConfig};

/// Command line of `raft_client`.
#[derive(Parser, Debug)]
#[command(name = "raft_client", version, about = "RustyRaft node and client")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node: `raft_client run 1 127.0.0.1:50051 2=127.0.0.1:50052,3=127.0.0.1:50053`,
    /// or join a running cluster: `raft_client run 4 127.0.0.1:50054 --join 127.0.0.1:50051`.
    Run(Box<RunArgs>),
    /// Change the membership through the leader and print the result:
    /// `cluster --addr A add <id> <addr> [--learner] | promote <id> | remove <id> |
    /// transfer-leader <id>`.
    Cluster(ClusterArgs),
    /// Send one message; prints its seq and raft index.
    Send {
        /// Node addresses, comma-separated; the client fails over between them.
        #[arg(long)]
        addr: String,
        /// Room name.
        #[arg(long)]
        room: String,
        /// Author name.
        #[arg(long)]
        author: String,
        /// Idempotency key; a retry with the same id never duplicates the message.
        #[arg(long)]
        id: Option<String>,
        /// Message text.
        text: String,
    },
    /// Follow a room: print its messages from `--from` on, then live.
    #[command(alias = "subscribe")]
    Tail {
        /// Node addresses, comma-separated.
        #[arg(long)]
        addr: String,
        /// Room name.
        #[arg(long)]
        room: String,
        /// First seq to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
    /// Interactive terminal chat in a room.
    Chat {
        /// Node addresses, comma-separated.
        #[arg(long)]
        addr: String,
        /// Room name.
        #[arg(long)]
        room: String,
        /// Your name.
        #[arg(long)]
        author: String,
    },
    /// Print a page of a room's history.
    History {
        /// Node addresses, comma-separated.
        #[arg(long)]
        addr: String,
        /// Room name.
        #[arg(long)]
        room: String,
        /// First seq (0 = the start, or the end with --reverse).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Page size (max 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Newest first.
        #[arg(long)]
        reverse: bool,
        /// Read this node's local state (SEQUENTIAL) instead of a linearizable read.
        #[arg(long)]
        local: bool,
        /// With --local: wait until this raft index is applied (read-your-writes).
        #[arg(long, default_value_t = 0)]
        min_index: u64,
    },
    /// Show each listed node's view of the cluster.
    Status {
        /// Node addresses, comma-separated.
        #[arg(long)]
        addr: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Probe one node's gRPC health service; exit 0 if it is SERVING, 1 otherwise (for a
    /// container HEALTHCHECK or a script waiting for a node).
    Health {
        /// One node address.
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: String,
        /// Service name to ask about ("" is the whole server).
        #[arg(long, default_value = "")]
        service: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Closed-loop load: ops/s and p50/p99/p999/max of SendMessage.
    Bench(BenchArgs),
    /// Subscribe fan-out: delivery latency to N live subscribers of one room at a fixed rate.
    BenchFanout(FanoutArgs),
    /// Failover probe: send until one send succeeds; prints the time since `--since-ns`.
    BenchProbe {
        /// Node addresses, comma-separated; tried in turn.
        #[arg(long)]
        addr: String,
        /// Start of the measured gap, ns since the Unix epoch (e.g. `date +%s%N` at the kill).
        #[arg(long)]
        since_ns: u64,
        /// Timeout of each try, in milliseconds.
        #[arg(long, default_value_t = 250)]
        try_timeout_ms: u64,
    },
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Node addresses, comma-separated.
    #[arg(long)]
    addr: String,
    /// Workers, each with one send in flight (closed loop).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// HTTP/2 connections shared by the workers (default: min(4, concurrency)).
    #[arg(long)]
    connections: Option<usize>,
    /// Measured seconds (fractions allowed).
    #[arg(long, default_value = "10", value_parser = rustyraft::bench::parse_secs)]
    duration: Duration,
    /// Warm-up seconds, run but not measured.
    #[arg(long, default_value = "1", value_parser = rustyraft::bench::parse_secs)]
    warmup: Duration,
    /// Bytes of each message text.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Rooms the workers spread over.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Send to the leader only, or spread over every address (followers forward).
    #[arg(long, value_enum, default_value_t = Target::Leader)]
    target: Target,
    /// How to send: pipelined on one `SendStream` call per connection (what a busy client
    /// should use), or one `SendMessage` call per send.
    #[arg(long, value_enum, default_value_t = Api::Stream)]
    api: Api,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct FanoutArgs {
    /// Node addresses, comma-separated; subscribers spread over all, the sender uses the leader.
    #[arg(long)]
    addr: String,
    /// Live subscribers of the room.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// HTTP/2 connections the subscribers share (default: one per 100 subscribers).
    #[arg(long)]
    connections: Option<usize>,
    /// Messages per second sent.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Measured seconds.
    #[arg(long, default_value = "5", value_parser = rustyraft::bench::parse_secs)]
    duration: Duration,
    /// Warm-up seconds.
    #[arg(long, default_value = "1", value_parser = rustyraft::bench::parse_secs)]
    warmup: Duration,
    /// Bytes of each message text (at least 20).
    #[arg(long, default_value_t = 100)]
    value_size: usize,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// Node addresses, comma-separated; the call goes to the leader (redirects are followed).
    #[arg(long, global = true)]
    addr: Option<String>,
    #[command(subcommand)]
    op: ClusterOp,
}

#[derive(Subcommand, Debug)]
enum ClusterOp {
    /// Add a node (it must already be running, e.g. with `run --join`, or be started soon):
    /// as a learner, then promoted to voter once caught up, unless --learner.
    Add {
        /// The new node's id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
        /// Its client host:port, as clients (and forwarding nodes) will reach it.
        #[arg(value_parser = parse_member_addr)]
        member_addr: String,
        /// Its peer host:port, where the other nodes reach its Raft service (default: the
        /// client port + 1000).
        #[arg(long, value_parser = parse_member_addr)]
        peer_addr: Option<String>,
        /// Keep it a (non-voting) learner.
        #[arg(long)]
        learner: bool,
    },
    /// Make a caught-up learner a voter.
    Promote {
        /// The learner's id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
    },
    /// Remove a node (the leader included; it hands leadership over once the change commits).
    Remove {
        /// The member's id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
    },
    /// Hand leadership to a voter; 0 picks the most up-to-date other voter.
    TransferLeader {
        /// The voter's id, or 0.
        id: u64,
    },
    /// Print a join token for a new node (`run ... --join ADDR --join-token T`), read from a
    /// member's data directory: the cluster id and its signing secret. Needs no --addr; treat
    /// the token like the secret itself.
    JoinToken {
        /// A member's data directory (holds `cluster.secret` and `node.json`).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// `raft_client cluster join-token`: the token for the cluster whose member owns `data_dir`.
fn print_join_token(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let Some(cluster) = rustyraft::node::stored_cluster_id(data_dir) else {
        usage_error(&format!(
            "{} is not a node's data directory (no readable node.json)",
            data_dir.display()
        ));
    };
    let secrets = match rustyraft::node::read_secrets(&data_dir.join(rustyraft::node::SECRET_FILE))
    {
        Ok(s) => s,
        Err(e) => usage_error(&format!(
            "{e} (a cluster without a secret needs no join token)"
        )),
    };
    println!(
        "{}",
        rustyraft::node::join::encode_join_token(&cluster, &secrets[0])
    );
    Ok(())
}

fn parse_member_addr(s: &str) -> Result<String, String> {
    rustyraft::node::membership::validate_addr(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("members").required(true).args(["peers", "join"])))]
struct RunArgs {
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
    /// Cluster id; peers with another id are refused. Default `rustyraft`; with --join, the
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
    /// Serve Prometheus `/metrics`, `/healthz` and `/readyz` over HTTP on this host:port
    /// (default: no HTTP listener). See docs/operations.md.
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Environment variable with the cluster secret(s), comma-separated, used when no
/// `--cluster-secret-file` is given (the compose file passes the secret this way).
const CLUSTER_SECRET_ENV: &str = "RUSTYRAFT_CLUSTER_SECRET";

/// Bootstrap members: client addresses, and the peer addresses given explicitly.
#[derive(Clone, Debug, Default)]
struct Members {
    client: BTreeMap<u64, String>,
    peer: BTreeMap<u64, String>,
}

fn parse_members(s: &str) -> Result<Members, String> {
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

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn usage_error(msg: &str) -> ! {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.error(clap::error::ErrorKind::ValueValidation, msg)
        .exit()
}

async fn run_node(a: RunArgs) -> anyhow::Result<()> {
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
    cfg.cluster_id = a
        .cluster_id
        .or(token_cluster)
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
    cfg.http_addr = a.http_addr;
    rustyraft::server::run(cfg, rustyraft::server::shutdown_signal()).await?;
    Ok(())
}

/// How long `raft_client cluster` keeps trying (redirects, elections) before giving up.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(60);

async fn run_cluster(a: ClusterArgs) -> anyhow::Result<()> {
    let call = match &a.op {
        ClusterOp::JoinToken { data_dir } => return print_join_token(data_dir),
        ClusterOp::Add {
            id,
            member_addr,
            peer_addr,
            learner,
        } => MembershipCall::Add {
            id: *id,
            addr: member_addr.clone(),
            peer_addr: peer_addr.clone().unwrap_or_default(),
            learner: *learner,
        },
        ClusterOp::Promote { id } => MembershipCall::Promote { id: *id },
        ClusterOp::Remove { id } => MembershipCall::Remove { id: *id },
        ClusterOp::TransferLeader { id } => MembershipCall::TransferLeader { id: *id },
    };
    let Some(addr) = a.addr else {
        usage_error("cluster: --addr is required (one or more node addresses, comma-separated)");
    };
    let mut c = Client::new(&addr)?;
    match c.membership(&call, CLUSTER_DEADLINE).await? {
        MembershipReply::Leader(id) => println!("node {id} is the leader"),
        MembershipReply::Conf(r) => {
            let what = match a.op {
                ClusterOp::Add { id, learner, .. } => {
                    format!(
                        "added node {id} as a {}",
                        if learner { "learner" } else { "voter" }
                    )
                }
                ClusterOp::Promote { id } => format!("promoted node {id} to voter"),
                ClusterOp::Remove { id } => format!("removed node {id}"),
                ClusterOp::TransferLeader { .. } | ClusterOp::JoinToken { .. } => String::new(),
            };
            if r.index == 0 {
                println!("{what} (already so: nothing changed)");
            } else {
                println!("{what} (configuration index {})", r.index);
            }
            println!("{}", client::format_conf(&r.conf.unwrap_or_default()));
        }
    }
    Ok(())
}

async fn run_bench(a: BenchArgs) -> anyhow::Result<()> {
    let cfg = LoadConfig {
        concurrency: a.concurrency,
        connections: a.connections.unwrap_or(a.concurrency.min(4)),
        duration: a.duration,
        warmup: a.warmup,
        value_size: a.value_size,
        rooms: a.rooms,
    };
    if let Err(e) = cfg.validate() {
        usage_error(&e.to_string());
    }
    let r = bench::run_rustyraft(&bench::split_addrs(&a.addr), a.target, a.api, &cfg).await?;
    if a.json {
        println!("{}", r.json());
    } else {
        println!("{}", r.text());
    }
    Ok(())
}

async fn run_fanout(a: FanoutArgs) -> anyhow::Result<()> {
    let cfg = FanoutConfig {
        subscribers: a.subscribers,
        connections: a
            .connections
            .unwrap_or(a.subscribers.div_ceil(100))
            .clamp(1, a.subscribers.max(1)),
        rate: a.rate,
        duration: a.duration,
        warmup: a.warmup,
        value_size: a.value_size,
    };
    if let Err(e) = cfg.validate() {
        usage_error(&e.to_string());
    }
    let r = bench::run_fanout(&bench::split_addrs(&a.addr), &cfg).await?;
    println!("{}", r.text());
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let res: anyhow::Result<()> = match cli.cmd {
        Cmd::Run(a) => run_node(*a).await,
        Cmd::Cluster(a) => run_cluster(a).await,
        Cmd::Send {
            addr,
            room,
            author,
            id,
            text,
        } => {
            async {
                let mut c = Client::new(&addr)?;
                let m = c.send(&room, &author, &text, id).await?;
                println!(
                    "seq={} index={} room={} id={}",
                    m.seq, m.index, m.room, m.id
                );
                Ok(())
            }
            .await
        }
        Cmd::Tail { addr, room, from } => {
            async {
                let mut c = Client::new(&addr)?;
                tokio::select! {
                    r = c.tail(&room, from, |m| println!("{}", client::format_message(m))) => r?,
                    _ = tokio::signal::ctrl_c() => {}
                }
                Ok(())
            }
            .await
        }
        Cmd::Chat { addr, room, author } => {
            async {
                tokio::select! {
                    r = client::interactive_chat(&addr, &room, &author) => r?,
                    _ = tokio::signal::ctrl_c() => {}
                }
                Ok(())
            }
            .await
        }
        Cmd::History {
            addr,
            room,
            from,
            limit,
            reverse,
            local,
            min_index,
        } => {
            async {
                let mut c = Client::new(&addr)?;
                let consistency = if local {
                    rustyraft::pb::Consistency::Sequential
                } else {
                    rustyraft::pb::Consistency::Linearizable
                };
                let page = c
                    .history(rustyraft::pb::GetHistoryRequest {
                        room,
                        from_seq: from,
                        limit,
                        reverse,
                        page_token: String::new(),
                        consistency: consistency as i32,
                        min_index,
                    })
                    .await?;
                for m in &page.messages {
                    println!("{}", client::format_message(m));
                }
                Ok(())
            }
            .await
        }
        Cmd::Bench(a) => run_bench(a).await,
        Cmd::BenchFanout(a) => run_fanout(a).await,
        Cmd::BenchProbe {
            addr,
            since_ns,
            try_timeout_ms,
        } => {
            async {
                let addrs = bench::split_addrs(&addr);
                let gap = bench::probe_until_ok(
                    &addrs,
                    since_ns,
                    Duration::from_millis(try_timeout_ms.max(1)),
                    Duration::from_secs(60),
                )
                .await?;
                println!("failover_ms={:.1}", gap.as_secs_f64() * 1000.0);
                Ok(())
            }
            .await
        }
        Cmd::Health {
            addr,
            service,
            timeout_ms,
        } => match client::health_check(&addr, &service, Duration::from_millis(timeout_ms)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(anyhow::anyhow!("{addr}: not serving")),
            Err(e) => Err(anyhow::anyhow!("{addr}: {e}")),
        },
        Cmd::Status { addr, json } => {
            async {
                let c = Client::new(&addr)?;
                let all = c.status_all().await;
                if json {
                    println!("{}", client::status_json(&all));
                } else {
                    print!("{}", client::status_table(&all));
                }
                if all.iter().all(|(_, r)| r.is_err()) {
                    anyhow::bail!("no node answered");
                }
                Ok(())
            }
            .await
        }
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raft_client: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
