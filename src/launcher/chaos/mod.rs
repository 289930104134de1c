//! `run_n_clients --chaos`: drive load while injecting faults, then prove nothing went wrong.
//!
//! Writers send with retries that reuse one `client_request_id` per message; readers make
//! linearizable tail reads; subscribers follow the room on every node and resume elsewhere when
//! their node dies. Meanwhile a seeded fault schedule kills and restarts nodes, pauses them,
//! partitions the cluster, cuts one direction of a leader link and isolates the leader. At the end
//! the faults stop, the cluster converges, every node's copy of the room is read back, and
//! [`crate::check::check_room`] decides. The seed picks the faults, their targets and the message
//! ids; wall-clock timing still varies from run to run, so a failing run is replayed from its
//! history file, not by rerunning the seed.
//!
//! - `workload`: the writers, readers and subscribers that record the history;
//! - `faults`: the fault schedule, membership changes, and the waits around them.
//!
//! Tasks: the workload runs on the cluster's task tracker ([`LocalCluster::tasks`]) under a
//! token of this run. [`run`] stops and awaits every workload task before it returns; if the
//! run is interrupted (its future dropped), the token is cancelled on drop and
//! [`LocalCluster::shutdown`] awaits the tasks.

mod faults;
mod workload;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use super::history::check_history_file;
use super::history::{write_history, Fault as HistoryFault, History};
use super::processes::{LocalCluster, NodeId};
use crate::check::{MsgId, Op, Subscription};

/// The room every chaos client uses.
pub const ROOM: &str = "chaos";

/// Chaos run settings.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// How long faults are injected.
    pub duration: Duration,
    /// Seeds fault choices and message ids.
    pub seed: u64,
    /// Concurrent writers.
    pub writers: usize,
    /// Concurrent linearizable readers.
    pub readers: usize,
    /// Where the history file goes.
    pub history_file: PathBuf,
}

/// The outcome, for the summary and the verdict line.
#[derive(Debug, Default)]
pub struct ChaosReport {
    /// Faults injected.
    pub faults: u64,
    /// Sends acknowledged.
    pub acked: u64,
    /// Sends never acknowledged whose outcome is unknown (some attempt may have been proposed).
    pub unknown: u64,
    /// Sends never acknowledged that failed definitely (every attempt refused before it was
    /// proposed); the check holds them absent from the log.
    pub failed: u64,
    /// Linearizable reads checked.
    pub reads: u64,
    /// Messages delivered to subscribers and checked.
    pub delivered: u64,
    /// Acknowledged sends missing from the final log.
    pub lost: u64,
    /// Ids stored more than once.
    pub duplicated: u64,
    /// Every violation found (empty means linearizable).
    pub violations: Vec<String>,
}

impl ChaosReport {
    /// The last line a chaos run prints.
    pub fn verdict(&self) -> String {
        if self.violations.is_empty() {
            format!(
                "verdict: linearizable ops={} faults={} lost={} duplicated={}",
                self.acked + self.reads,
                self.faults,
                self.lost,
                self.duplicated
            )
        } else {
            format!(
                "verdict: VIOLATION ops={} faults={} lost={} duplicated={} first: {}",
                self.acked + self.reads,
                self.faults,
                self.lost,
                self.duplicated,
                self.violations[0]
            )
        }
    }
}

/// Microseconds since the run started: the history's clock.
#[derive(Clone, Copy)]
struct Clock(Instant);
impl Clock {
    fn now(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// What the workload tasks share with the run.
struct Shared {
    clock: Clock,
    /// The members' client addresses; membership faults change them. std RwLock: never held
    /// across an await.
    addrs: std::sync::RwLock<Vec<SocketAddr>>,
    ops: Mutex<Vec<Op>>,
    /// The faults injected so far, with their times, for the history file.
    faults: Mutex<Vec<HistoryFault>>,
    /// Writers and readers stop at their next operation boundary once this is cancelled.
    stop_clients: CancellationToken,
    /// The room's length once converged; subscribers run until they reach it.
    final_len: AtomicU64,
}

impl Shared {
    /// The `i`-th member's address (modulo the member count), for clients that rotate.
    fn addr(&self, i: usize) -> SocketAddr {
        let a = self.addrs.read().unwrap_or_else(|e| e.into_inner());
        a.get(i % a.len().max(1))
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9)))
    }

    /// Appends one operation to the history.
    fn record(&self, op: Op) {
        // A poisoned lock only means another client task panicked; the history is still valid.
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Appends one injected fault to the history.
    fn record_fault(&self, f: HistoryFault) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }
}

/// Runs the whole chaos session against a started cluster: the workload, the fault schedule,
/// convergence, the comparison of every node's copy, and the history check.
pub async fn run(cluster: &mut LocalCluster, cfg: &ChaosConfig) -> ChaosReport {
    let ids = cluster.ids();
    // Cancelled when this run ends or is dropped: every workload task stops.
    let stop = cluster.child_token();
    let _stop_on_drop = stop.clone().drop_guard();
    let sh = Arc::new(Shared {
        clock: Clock(Instant::now()),
        addrs: std::sync::RwLock::new(ids.iter().map(|&i| cluster.addr(i)).collect()),
        ops: Mutex::new(Vec::new()),
        faults: Mutex::new(Vec::new()),
        stop_clients: stop.child_token(),
        final_len: AtomicU64::new(u64::MAX),
    });
    println!("chaos: waiting for a leader");
    faults::wait_for_leader(cluster, Duration::from_secs(30)).await;

    let tasks = cluster.tasks().clone();
    let mut clients: Vec<JoinHandle<()>> = Vec::new();
    for k in 0..cfg.writers {
        let writer = workload::writer(sh.clone(), k, cfg.seed);
        clients.push(spawn_until(&tasks, &stop, writer));
    }
    for k in 0..cfg.readers {
        clients.push(spawn_until(&tasks, &stop, workload::reader(sh.clone(), k)));
    }
    // Subscribers have their own token: they are stopped only if they fail to catch up.
    let stop_subs = stop.child_token();
    let subs: Vec<JoinHandle<Option<Subscription>>> = (0..ids.len().min(3))
        .map(|k| {
            let (sh, stop_subs) = (sh.clone(), stop_subs.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop_subs.cancelled() => None,
                    s = workload::subscriber(sh, k) => Some(s),
                }
            })
        })
        .collect();

    let faults = faults::inject(cluster, &sh, cfg).await;

    let ids = cluster.ids();
    // Stop the faults and the load; let the cluster converge.
    println!("chaos: faults over; stopping load and waiting for convergence");
    faults::end_faults(cluster).await;
    sh.stop_clients.cancel();
    for t in clients {
        let _ = t.await;
    }
    let converged = faults::wait_converged(cluster, Duration::from_secs(60)).await;

    let mut report = ChaosReport {
        faults,
        ..Default::default()
    };
    if !converged {
        report
            .violations
            .push("the cluster did not converge within 60 s after the faults stopped".into());
    }
    let log = final_log(cluster, &ids, &mut report).await;

    // Subscribers: let them catch up to the end, then collect what they saw.
    sh.final_len.store(log.len() as u64, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut collected = Vec::new();
    let mut caught_up = true;
    for mut s in subs {
        let seen = match tokio::time::timeout_at(deadline, &mut s).await {
            Ok(seen) => seen,
            Err(_) => {
                caught_up = false;
                stop_subs.cancel();
                s.await
            }
        };
        if let Ok(Some(seen)) = seen {
            collected.push(seen);
        }
    }
    let subs = if caught_up {
        collected
    } else {
        report
            .violations
            .push("subscribers did not reach the end of the room within 30 s".into());
        Vec::new()
    };
    for s in &subs {
        if s.seen.len() < log.len() {
            report.violations.push(format!(
                "{} saw {} of {} messages",
                s.name,
                s.seen.len(),
                log.len()
            ));
        }
    }

    let ops = sh.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
    super::history::tally(&mut report, &ops, &log, &subs);
    let history = History {
        seed: Some(cfg.seed),
        ops,
        subs,
        faults: sh.faults.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        log,
    };
    if let Err(e) = write_history(&cfg.history_file, ROOM, &history) {
        println!("chaos: could not write {}: {e}", cfg.history_file.display());
    } else {
        println!("chaos: history written to {}", cfg.history_file.display());
    }
    report
}

/// Spawns `f` on `tasks`, dropped (stopped) as soon as `stop` is cancelled.
fn spawn_until(
    tasks: &TaskTracker,
    stop: &CancellationToken,
    f: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let stop = stop.clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = f => {}
        }
    })
}

/// Reads every node's copy of the room once converged; they must be identical and gap-free.
/// Returns the room's ids in order (the reference copy), recording any difference in `report`.
async fn final_log(cluster: &LocalCluster, ids: &[NodeId], report: &mut ChaosReport) -> Vec<MsgId> {
    let mut copies = BTreeMap::new();
    for &id in ids {
        match workload::read_room(cluster.addr(id)).await {
            Ok(c) => {
                copies.insert(id, c);
            }
            Err(e) => report.violations.push(format!("reading n{id}'s copy: {e}")),
        }
    }
    let reference = copies.values().next().cloned().unwrap_or_default();
    for (id, c) in &copies {
        if c != &reference {
            report.violations.push(format!(
                "n{id}'s copy of the room differs from n{}'s",
                ids[0]
            ));
        }
    }
    for (k, (seq, _)) in reference.iter().enumerate() {
        if *seq != k as u64 + 1 {
            report.violations.push(format!(
                "the room's seqs are not gap-free at position {}",
                k + 1
            ));
            break;
        }
    }
    reference.into_iter().map(|(_, id)| id).collect()
}
