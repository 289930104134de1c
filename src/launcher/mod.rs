//! `run_n_clients`: a live local cluster you can watch and break.
//!
//! - [`processes`]: starts N real `raft_client run` processes and kills, pauses, restarts, adds
//!   and removes them ([`LocalCluster`]), forwarding their logs;
//! - `links`: the per-link proxy wiring behind partitions, one-way cuts and delays;
//! - [`proxy`]: the fault-injecting TCP proxy on each peer link;
//! - [`status_view`]: what the launcher shows: node statuses, the leader, the live summary;
//! - [`commands`]: the stdin command language;
//! - [`chaos`]: the `--chaos` driver: load, faults, convergence, and the history check;
//! - [`history`]: the chaos history file, written and re-checked.
//!
//! Every task the launcher spawns runs on the [`LocalCluster`]'s task tracker and is cancelled
//! and awaited by [`LocalCluster::shutdown`] (see [`processes`]).

pub mod chaos;
pub mod commands;
pub mod history;
mod links;
pub mod processes;
pub mod proxy;
pub mod status_view;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::commands::{Command, HELP};

/// How the launcher dials its own nodes' client ports: plaintext, or TLS trusting the local
/// cluster's CA under `--tls`. Set once, before the cluster starts; every dial site (status
/// polls, commands, load, the chaos workload) reads it, so no call can forget TLS.
static DIAL: std::sync::OnceLock<crate::tls::Credentials> = std::sync::OnceLock::new();

/// Sets the launcher's dial credentials (first call wins; later calls are ignored).
pub fn set_dial(creds: crate::tls::Credentials) {
    let _ = DIAL.set(creds);
}

/// The launcher's dial credentials (plaintext until [`set_dial`]).
pub fn dial() -> crate::tls::Credentials {
    DIAL.get().cloned().unwrap_or_default()
}

/// An endpoint for `addr` (`host:port`) with the launcher's credentials.
pub(crate) fn endpoint(addr: &str) -> Result<tonic::transport::Endpoint, String> {
    dial().endpoint(addr)
}
pub use self::processes::{LocalCluster, NodeId};
use self::status_view::{leader_of, print_status, summary_line, view_key};

/// Counters of the background `load` generator.
#[derive(Default)]
struct LoadStats {
    acked: AtomicU64,
    failed: AtomicU64,
}

/// The `load` generator: `rate` sends per second to room `load`, each on its own task on
/// `tasks`, until `stop` (this generator's token) is cancelled. Sends in flight then finish
/// and are counted, unless `sends_stop` (the cluster's shutdown) cancels them too.
async fn load(
    addrs: String,
    rate: u32,
    stats: Arc<LoadStats>,
    tasks: TaskTracker,
    stop: CancellationToken,
    sends_stop: CancellationToken,
) {
    // At most this many sends in flight: the generator never queues without bound.
    let permits = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        n += 1;
        let (addrs, stats, sends_stop) = (addrs.clone(), stats.clone(), sends_stop.clone());
        tasks.spawn(async move {
            // Each send has its own failover client, so sends run concurrently.
            let send = async {
                match crate::client::Client::with_credentials(&addrs, dial()) {
                    Ok(mut c) => c
                        .send("load", "load", &format!("load #{n}"), None)
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            };
            let ok = tokio::select! {
                _ = sends_stop.cancelled() => return,
                ok = send => ok,
            };
            let counter = if ok { &stats.acked } else { &stats.failed };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Replaces the `leader` placeholder with the node that leads now.
async fn resolve_leader(cmd: Command, c: &mut LocalCluster) -> Result<Command, String> {
    let target = match &cmd {
        Command::Kill(id)
        | Command::Stop(id)
        | Command::Restart(id)
        | Command::Pause(id)
        | Command::Resume(id)
        | Command::Isolate(id)
        | Command::Remove(id) => *id,
        _ => return Ok(cmd),
    };
    if target != commands::LEADER {
        return Ok(cmd);
    }
    let views = c.views().await;
    let leader = leader_of(&views)
        .map(|(id, _)| id)
        .ok_or("no leader right now")?;
    Ok(match cmd {
        Command::Kill(_) => Command::Kill(leader),
        Command::Stop(_) => Command::Stop(leader),
        Command::Restart(_) => Command::Restart(leader),
        Command::Pause(_) => Command::Pause(leader),
        Command::Resume(_) => Command::Resume(leader),
        Command::Isolate(_) => Command::Isolate(leader),
        Command::Remove(_) => Command::Remove(leader),
        other => other,
    })
}

/// Interactive mode: starts the cluster, shows a live status line when something changes,
/// and runs stdin commands until `quit`, Ctrl-C or SIGTERM. Every child is stopped on exit.
///
/// Its tasks (the stdin reader, the `load` generator and its sends) run on the cluster's
/// tracker, so the final [`LocalCluster::shutdown`] cancels and awaits them. (The stdin reader
/// stops at once; the blocking read inside tokio's stdin may linger until the process exits,
/// which it does right after.)
pub async fn run_interactive(mut c: LocalCluster) -> anyhow::Result<()> {
    println!(
        "started {} nodes; clients can use --addr {}",
        c.ids().len(),
        c.addr_list()
    );
    if let Some(ca) = c.ca_file() {
        println!(
            "TLS: clients need --ca {ca} (grpcurl -cacert {ca} {} list)",
            c.addr(c.ids().first().copied().unwrap_or(1))
        );
    }
    for id in c.ids() {
        let http = c.http_addr(id);
        println!("n{id} web: http://{http}/  cluster view: http://{http}/cluster  metrics: http://{http}/metrics");
    }
    println!("{HELP}");
    let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    let stdin_stop = c.child_token();
    c.tasks().spawn(async move {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            let line = tokio::select! {
                _ = stdin_stop.cancelled() => return,
                l = stdin.next_line() => l,
            };
            let Ok(Some(l)) = line else { return };
            if tx.send(l).await.is_err() {
                return;
            }
        }
    });
    let mut shutdown = std::pin::pin!(crate::server::shutdown_signal());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_key = String::new();
    let mut stdin_open = true;
    // The running `load` generator's token: cancelling it stops the generator.
    let mut load_task: Option<CancellationToken> = None;
    let stats = Arc::new(LoadStats::default());
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                let views = c.views().await;
                let key = view_key(&views);
                if key != last_key {
                    println!("== {}", summary_line(&views, c.cut_links()));
                    last_key = key;
                }
            }
            line = lines.recv(), if stdin_open => {
                let Some(line) = line else {
                    // stdin closed (e.g. run in the background): keep running until a signal.
                    stdin_open = false;
                    continue;
                };
                if line.trim().is_empty() {
                    continue;
                }
                let cmd = match commands::parse(&line, c.max_id()) {
                    Ok(cmd) => cmd,
                    Err(e) => {
                        println!("error: {e}\n{HELP}");
                        continue;
                    }
                };
                let cmd = match resolve_leader(cmd, &mut c).await {
                    Ok(cmd) => cmd,
                    Err(e) => {
                        println!("error: {e}");
                        continue;
                    }
                };
                let res: anyhow::Result<()> = async {
                    match cmd {
                        Command::Kill(id) => { c.kill(id).await?; println!("killed n{id}"); }
                        Command::Stop(id) => {
                            c.stop(id, Duration::from_secs(10)).await?;
                            println!("stopped n{id}");
                        }
                        Command::Restart(id) => { c.restart(id).await?; println!("restarted n{id}"); }
                        Command::Pause(id) => { c.pause(id)?; println!("paused n{id}"); }
                        Command::Resume(id) => { c.resume(id)?; println!("resumed n{id}"); }
                        Command::Partition(a, b) => {
                            c.partition(&a, &b)?;
                            println!("partitioned {a:?} | {b:?}");
                        }
                        Command::Isolate(id) => { c.isolate(id)?; println!("isolated n{id}"); }
                        Command::Cut(a, b) => {
                            c.cut(a, b)?;
                            println!("cut n{a} -> n{b} (n{b} -> n{a} still works)");
                        }
                        Command::Heal => { c.heal(); println!("healed every link"); }
                        Command::Delay(d) => { c.set_delay(d); println!("peer links delayed by {d:?}"); }
                        Command::Send { room, text } => {
                            let mut client = crate::client::Client::with_credentials(&c.addr_list(), dial())?;
                            let m = client.send(&room, "launcher", &text, None).await?;
                            println!("sent: room {room} seq {} index {}", m.seq, m.index);
                        }
                        Command::Status => {
                            let views = c.views().await;
                            print_status(&views, c.cut_links());
                            if load_task.is_some() {
                                println!(
                                    "  load: {} acked, {} failed",
                                    stats.acked.load(Ordering::Relaxed),
                                    stats.failed.load(Ordering::Relaxed)
                                );
                            }
                        }
                        Command::Load(rate) => {
                            if let Some(t) = load_task.take() {
                                t.cancel();
                            }
                            if rate > 0 {
                                let stop = c.child_token();
                                let generator = load(
                                    c.addr_list(),
                                    rate,
                                    stats.clone(),
                                    c.tasks().clone(),
                                    stop.clone(),
                                    c.child_token(),
                                );
                                c.tasks().spawn(generator);
                                load_task = Some(stop);
                                println!("load: {rate} messages/s to room `load`");
                            } else {
                                println!("load stopped");
                            }
                        }
                        Command::Add => {
                            let Some(next) = c.next_id() else {
                                anyhow::bail!("no id left (ids go up to {})", processes::MAX_NODES);
                            };
                            println!("adding n{next}: starting it with --join, waiting until it votes...");
                            let id = c.add_node(Duration::from_secs(60)).await?;
                            println!("added n{id} as a voter; clients can use --addr {}", c.addr_list());
                        }
                        Command::Remove(id) => {
                            let voters = c.remove_node(id).await?;
                            println!("removed n{id} (voters now {voters:?}) and stopped it");
                        }
                        Command::Help => println!("{HELP}"),
                        Command::Quit => return Err(anyhow::anyhow!("quit")),
                    }
                    Ok(())
                }.await;
                if let Err(e) = res {
                    if e.to_string() == "quit" {
                        break;
                    }
                    println!("error: {e}");
                }
            }
        }
    }
    if let Some(t) = load_task.take() {
        t.cancel();
    }
    println!("stopping every node...");
    c.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
