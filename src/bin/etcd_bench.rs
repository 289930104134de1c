//! `etcd_bench`: the etcd side of `bin/bench_vs_etcd`. The same closed loop, histogram and
//! report as `raft_client bench` (`rustyraft::bench::closed_loop`), driving etcd `Put`s through
//! the `etcd-client` crate, which runs on the same tonic 0.14 / hyper stack as our client.
//! Built only with `--features etcd` (etcd-client needs `protoc` at build time).
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use etcd_client::{Client, KvClient};
use rustyraft::bench::{self, LoadConfig, Target};

/// Command line of `etcd_bench` (the options of `raft_client bench`).
#[derive(Parser, Debug)]
#[command(
    name = "etcd_bench",
    version,
    about = "Closed-loop Put load against etcd"
)]
struct Cli {
    /// etcd client URLs or host:port, comma-separated.
    #[arg(long)]
    addr: String,
    /// Workers, each with one put in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// HTTP/2 connections shared by the workers (default: min(4, concurrency)).
    #[arg(long)]
    connections: Option<usize>,
    /// Measured seconds.
    #[arg(long, default_value = "10", value_parser = bench::parse_secs)]
    duration: Duration,
    /// Warm-up seconds.
    #[arg(long, default_value = "1", value_parser = bench::parse_secs)]
    warmup: Duration,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Key prefixes the workers spread over (the analogue of rooms).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Put to the leader only, or spread over every endpoint (followers forward).
    #[arg(long, value_enum, default_value_t = Target::Leader)]
    target: Target,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

async fn find_leader(addrs: &[String]) -> anyhow::Result<String> {
    for a in addrs {
        let Ok(mut c) = Client::connect([a.as_str()], None).await else {
            continue;
        };
        if let Ok(s) = c.status().await {
            if s.header().map(|h| h.member_id()) == Some(s.leader()) {
                return Ok(a.clone());
            }
        }
    }
    anyhow::bail!("no etcd endpoint says it is the leader")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = LoadConfig {
        concurrency: cli.concurrency,
        connections: cli.connections.unwrap_or(cli.concurrency.min(4)),
        duration: cli.duration,
        warmup: cli.warmup,
        value_size: cli.value_size,
        rooms: cli.rooms,
    };
    cfg.validate()?;
    let addrs = bench::split_addrs(&cli.addr);
    if addrs.is_empty() {
        anyhow::bail!("--addr lists no address");
    }
    let targets = match cli.target {
        Target::Leader => vec![find_leader(&addrs).await?],
        Target::All => addrs,
    };
    let mut clients: Vec<KvClient> = Vec::with_capacity(cfg.connections);
    for i in 0..cfg.connections {
        let a = &targets[i % targets.len()];
        let c = Client::connect([a.as_str()], None)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {a}: {e}"))?;
        clients.push(c.kv_client());
    }
    let clients = Arc::new(clients);
    let value = Arc::new(vec![b'x'; cfg.value_size]);
    let rooms = cfg.rooms;
    let report = bench::closed_loop("etcd", &cfg, move |w, _n| {
        let mut kv = clients[w % clients.len()].clone();
        let key = format!("bench-{}/{w}", w % rooms);
        let value = value.as_ref().clone();
        async move {
            kv.put(key, value, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    if cli.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etcd_bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
