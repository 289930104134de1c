//! `run_n_clients`: starts N local nodes as a live cluster you can watch and break, or, with
//! `--chaos`, drives load through injected faults and checks the recorded history.
//! Thin on purpose: parse arguments, set up tracing, call `rustyraft::launcher`.
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rustyraft::launcher::{self, chaos, processes};

/// Command line of `run_n_clients`.
#[derive(Parser, Debug)]
#[command(
    name = "run_n_clients",
    version,
    about = "Run a local RustyRaft cluster you can watch and break"
)]
struct Cli {
    /// Number of nodes to start with (3, 5 or 7 recommended); `add` and chaos membership
    /// faults use the next ids, up to 9.
    #[arg(value_parser = clap::value_parser!(u64).range(1..=9), required_unless_present = "check")]
    n: Option<u64>,
    /// Re-check a chaos history file (no cluster is started) and print its verdict.
    #[arg(long, value_name = "HISTORY_FILE", conflicts_with = "chaos")]
    check: Option<PathBuf>,
    /// Client port of node 1; node i listens on base-port + i - 1.
    #[arg(long, default_value_t = 50051)]
    base_port: u16,
    /// Parent of the nodes' data dirs (`<dir>/node-<id>`). Default `./data`, or
    /// `./data/chaos-<seed>` with --chaos (wiped at the start of a chaos run).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The `raft_client` binary (default: the one next to this launcher).
    #[arg(long = "bin")]
    bin: Option<PathBuf>,
    /// Drive load while injecting faults, then check the history and print a verdict.
    #[arg(long)]
    chaos: bool,
    /// Seconds of fault injection (with --chaos).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=86_400))]
    duration: u64,
    /// Seed for fault choices and message ids (with --chaos).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run the whole local cluster over TLS: client listeners with TLS and peer links with
    /// mutual TLS (through the link proxies), with a local CA made under `<data-dir>/certs`.
    /// Clients then need `--ca <data-dir>/certs/ca.pem` (grpcurl: `-cacert`).
    #[arg(long)]
    tls: bool,
    /// Extra arguments passed to every `raft_client run`, e.g. `--node-arg=--snapshot-threshold=500`.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("run_n_clients: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(run(cli));
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    if let Some(path) = &cli.check {
        return match chaos::check_history_file(path) {
            Ok(report) => {
                println!(
                    "checked: faults={} acked={} unknown-outcome={} failed={} reads={} delivered-to-subscribers={}",
                    report.faults, report.acked, report.unknown, report.failed, report.reads,
                    report.delivered
                );
                for v in report.violations.iter().take(20) {
                    println!("violation: {v}");
                }
                println!("{}", report.verdict());
                i32::from(!report.violations.is_empty())
            }
            Err(e) => {
                eprintln!("run_n_clients: {e}");
                2
            }
        };
    }
    let Some(n) = cli.n else {
        eprintln!("run_n_clients: the number of nodes is required");
        return 2;
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let bin = match cli.bin.clone() {
        Some(b) => b,
        None => match std::env::current_exe() {
            Ok(me) => me.with_file_name("raft_client"),
            Err(e) => {
                eprintln!("run_n_clients: cannot locate myself ({e}); pass --bin");
                return 2;
            }
        },
    };
    let data_dir = cli.data_dir.clone().unwrap_or_else(|| {
        if cli.chaos {
            PathBuf::from(format!("data/chaos-{}", cli.seed))
        } else {
            PathBuf::from("data")
        }
    });
    if cli.chaos {
        // Nodes added by membership faults use ids above n: clear theirs too.
        for i in 1..=processes::MAX_NODES {
            let _ = std::fs::remove_dir_all(data_dir.join(format!("node-{i}")));
            let _ = std::fs::remove_file(data_dir.join(format!("node-{i}.log")));
        }
    }
    let mut node_args = cli.node_args.clone();
    if cli.chaos && !node_args.iter().any(|a| a.contains("snapshot-threshold")) {
        // Compact often so restarted nodes also catch up by snapshot.
        node_args.push("--snapshot-threshold=300".into());
    }
    let cfg = processes::ClusterConfig {
        nodes: n,
        base_port: cli.base_port,
        data_dir: data_dir.clone(),
        bin,
        node_args,
        logs: if cli.chaos {
            processes::LogSink::Files
        } else {
            processes::LogSink::Prefixed
        },
        tls: cli.tls,
    };
    let mut c = match processes::LocalCluster::start(cfg).await {
        Ok(c) => c,
        Err(e @ processes::LaunchError::NoBinary(_)) => {
            eprintln!("run_n_clients: {e}");
            return 2;
        }
        Err(e) => {
            eprintln!("run_n_clients: {e}");
            return 1;
        }
    };
    if !cli.chaos {
        return match launcher::run_interactive(c).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("run_n_clients: {e}");
                1
            }
        };
    }
    let cfg = chaos::ChaosConfig {
        duration: Duration::from_secs(cli.duration),
        seed: cli.seed,
        writers: 4,
        readers: 2,
        history_file: data_dir.join("history.jsonl"),
    };
    println!(
        "chaos: {} nodes, {} s of faults, seed {}, node logs in {}",
        n,
        cli.duration,
        cli.seed,
        data_dir.display()
    );
    let report = tokio::select! {
        r = chaos::run(&mut c, &cfg) => Some(r),
        _ = rustyraft::server::shutdown_signal() => None,
    };
    c.shutdown(Duration::from_secs(10)).await;
    let Some(report) = report else {
        println!("verdict: VIOLATION interrupted before the check");
        return 1;
    };
    println!(
        "summary: faults={} acked={} unknown-outcome={} failed={} reads={} delivered-to-subscribers={} lost={} duplicated={}",
        report.faults, report.acked, report.unknown, report.failed, report.reads, report.delivered,
        report.lost, report.duplicated
    );
    for v in report.violations.iter().take(20) {
        println!("violation: {v}");
    }
    println!("{}", report.verdict());
    if report.violations.is_empty() {
        0
    } else {
        1
    }
}
