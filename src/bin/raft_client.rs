//! `raft_client`: one RustyRaft node (`run`) plus the client subcommands (`send`, `tail`,
//! `chat`, `status`). Thin on purpose: parse arguments, set up tracing, call the library.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[path = "raft_client/backup.rs"]
mod backup;
#[path = "raft_client/run.rs"]
mod run;
use run::{run_node, RunArgs};
use rustyraft::bench::{self, Api, FanoutConfig, LoadConfig, Target};
use rustyraft::client::{self, Client};
use rustyraft::client::{MembershipCall, MembershipReply};

/// Command line of `raft_client`.
#[derive(Parser, Debug)]
#[command(name = "raft_client", version, about = "RustyRaft node and client")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Dial nodes over TLS, trusting only this CA certificate (the cluster's `ca.pem`). For
    /// `run`: how this node reaches the others' client listeners (required with --tls-cert).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Bearer token sent with every call (default: $RUSTYRAFT_TOKEN). For `run`: the admin
    /// token `--join` asks with.
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
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
    /// Make a cluster CA and node certificates: `certs init --dir D`, then
    /// `certs issue --dir D --name node1 --host 127.0.0.1 --host node1`.
    Certs {
        #[command(subcommand)]
        op: rustyraft::tls::CertsCommand,
    },
    /// Manage client tokens: `token add --file F --user ada [--admin]` (prints the token once),
    /// `token revoke --file F --user ada`, `token rotate --file F --user ada`, `token list`.
    Token {
        #[command(subcommand)]
        op: rustyraft::api::auth::TokenCommand,
    },
    /// Save a backup of a running cluster: `backup --addr A --out FILE` (a consistent snapshot at
    /// a linearizable point, checksummed; see docs/operations.md).
    Backup(backup::BackupArgs),
    /// Seed a new node's data directory from a backup: `restore FILE --data-dir D --id N
    /// --peers 1=host:port,2=...` (once per node of the new cluster), then `run` each node.
    Restore(backup::RestoreArgs),
    /// Send one message; prints its seq and raft index.
    Send {
        /// Node addresses, comma-separated; the client fails over between them.
        #[arg(long)]
        addr: String,
        /// Room name.
        #[arg(long)]
        room: String,
        /// Author name (with a token: empty or your own user; it defaults to the user).
        #[arg(long, default_value = "")]
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
        /// Your name (with a token: empty or your own user; it defaults to the user).
        #[arg(long, default_value = "")]
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

/// A bad file or argument: the message (naming the file) and exit code 2.
fn fail2(msg: impl std::fmt::Display) -> ! {
    eprintln!("raft_client: {msg}");
    std::process::exit(2)
}

fn credentials(ca: Option<&std::path::Path>, token: Option<&str>) -> rustyraft::tls::Credentials {
    rustyraft::tls::Credentials::from_cli(ca, token).unwrap_or_else(|e| fail2(e))
}

fn run_certs(op: rustyraft::tls::CertsCommand) -> anyhow::Result<()> {
    let out = op.run().unwrap_or_else(|e| fail2(e));
    println!("{out}");
    Ok(())
}

fn run_token(op: rustyraft::api::auth::TokenCommand) -> anyhow::Result<()> {
    let (out, note) = op.run().unwrap_or_else(|e| fail2(e));
    if !out.is_empty() {
        println!("{out}");
    }
    eprintln!("{note}");
    Ok(())
}

fn usage_error(msg: &str) -> ! {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.error(clap::error::ErrorKind::ValueValidation, msg)
        .exit()
}

/// How long `raft_client cluster` keeps trying (redirects, elections) before giving up.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(60);

async fn run_cluster(a: ClusterArgs, creds: rustyraft::tls::Credentials) -> anyhow::Result<()> {
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
    let mut c = Client::with_credentials(&addr, creds)?;
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
    if matches!(
        cli.cmd,
        Cmd::Bench(_) | Cmd::BenchFanout(_) | Cmd::BenchProbe { .. }
    ) && (cli.ca.is_some() || cli.token.is_some())
    {
        usage_error("the bench commands do not support --ca or --token yet");
    }
    let creds = credentials(cli.ca.as_deref(), cli.token.as_deref());
    let res: anyhow::Result<()> = match cli.cmd {
        Cmd::Run(a) => run_node(*a, creds).await,
        Cmd::Cluster(a) => run_cluster(a, creds).await,
        Cmd::Certs { op } => run_certs(op),
        Cmd::Token { op } => run_token(op),
        Cmd::Backup(a) => backup::run_backup(a, creds).await,
        Cmd::Restore(a) => backup::run_restore(a),
        Cmd::Send {
            addr,
            room,
            author,
            id,
            text,
        } => {
            async {
                let mut c = Client::with_credentials(&addr, creds)?;
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
                let mut c = Client::with_credentials(&addr, creds)?;
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
                    r = client::interactive_chat(&addr, creds, &room, &author) => r?,
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
                let mut c = Client::with_credentials(&addr, creds)?;
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
        } => match client::health_check(&addr, creds, &service, Duration::from_millis(timeout_ms))
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(anyhow::anyhow!("{addr}: not serving")),
            Err(e) => Err(anyhow::anyhow!("{addr}: {e}")),
        },
        Cmd::Status { addr, json } => {
            async {
                let c = Client::with_credentials(&addr, creds)?;
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
