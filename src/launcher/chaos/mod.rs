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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

use super::cluster::{LocalCluster, NodeId};
pub use super::history::check_history_file;
use super::history::write_history;
use crate::check::{MsgId, Op, Subscription};
use crate::pb;
use crate::pb::chat_service_client::ChatServiceClient;

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
    /// Sends that never got an answer (outcome unknown to the client).
    pub unknown: u64,
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

struct Shared {
    clock: Clock,
    /// The members' client addresses; membership faults change them. std RwLock: never held
    /// across an await.
    addrs: std::sync::RwLock<Vec<SocketAddr>>,
    ops: Mutex<Vec<Op>>,
    stop_clients: AtomicBool,
    stop_subs: AtomicBool,
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
}

fn client(addr: SocketAddr) -> ChatServiceClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| {
            e.connect_timeout(Duration::from_millis(300))
                .timeout(Duration::from_secs(3))
                .connect_lazy()
        })
        .unwrap_or_else(|_| unreachable_channel());
    ChatServiceClient::new(ch)
}

/// A channel to nowhere, for an address that cannot be a URI (never happens for a SocketAddr,
/// but the type system does not know that, and we never unwrap).
fn unreachable_channel() -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy()
}

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
    )
}

/// One writer: sends until told to stop; each message is retried with its id until it is
/// acknowledged or its 20 s budget runs out.
async fn writer(sh: Arc<Shared>, k: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut node = k;
    let mut n = 0u64;
    while !sh.stop_clients.load(Ordering::Relaxed) {
        n += 1;
        let id = uuid::Uuid::from_u128(rng.u128(..)).to_string();
        let invoked = sh.clock.now();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut acked = None;
        let mut returned = invoked;
        loop {
            let mut c = client(sh.addr(node));
            let r = c
                .send_message(pb::SendMessageRequest {
                    room: ROOM.into(),
                    author: format!("writer-{k}"),
                    text: format!("w{k} #{n}"),
                    client_request_id: id.clone(),
                })
                .await;
            match r {
                Ok(resp) => {
                    if let Some(m) = resp.into_inner().message {
                        acked = Some(m.seq);
                        returned = sh.clock.now();
                    }
                    break;
                }
                Err(st) if retryable(st.code()) && Instant::now() < deadline => {
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(st) => {
                    tracing::warn!(code = ?st.code(), msg = st.message(), "send gave up");
                    break;
                }
            }
        }
        sh.record(Op::Send {
            id,
            invoked,
            returned,
            acked,
        });
        tokio::time::sleep(Duration::from_millis(20 + rng.u64(0..40))).await;
    }
}

/// Page size of tail reads; a full page is not a complete tail, so it is not recorded.
const READ_LIMIT: u32 = 1000;

/// One reader: linearizable reads of the room's last few messages.
async fn reader(sh: Arc<Shared>, k: usize) {
    let mut node = k;
    let mut known_len = 0u64;
    while !sh.stop_clients.load(Ordering::Relaxed) {
        let from_seq = known_len.saturating_sub(5).max(1);
        let invoked = sh.clock.now();
        let r = client(sh.addr(node))
            .get_history(pb::GetHistoryRequest {
                room: ROOM.into(),
                from_seq,
                limit: READ_LIMIT,
                consistency: pb::Consistency::Linearizable as i32,
                ..Default::default()
            })
            .await;
        let returned = sh.clock.now();
        match r {
            Ok(resp) => {
                let msgs = resp.into_inner().messages;
                if msgs.len() < READ_LIMIT as usize {
                    known_len = from_seq - 1 + msgs.len() as u64;
                    let ids = msgs.into_iter().map(|m| m.id).collect();
                    sh.record(Op::Read {
                        invoked,
                        returned,
                        from_seq,
                        ids,
                    });
                }
            }
            // The room does not exist yet: a linearizable answer that it is empty.
            Err(st) if st.code() == Code::NotFound && from_seq == 1 => {
                sh.record(Op::Read {
                    invoked,
                    returned,
                    from_seq: 1,
                    ids: Vec::new(),
                });
            }
            Err(_) => node += 1,
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// One subscriber, starting on node `start`: records every (seq, id) exactly as delivered and
/// resumes from the next seq on another node when its stream breaks.
async fn subscriber(sh: Arc<Shared>, start: usize) -> Subscription {
    let mut sub = Subscription {
        name: format!("sub@n{}", start + 1),
        from_seq: 1,
        seen: Vec::new(),
    };
    let mut node = start;
    let mut next = 1u64;
    loop {
        let done = |next: u64| {
            sh.stop_subs.load(Ordering::Relaxed)
                || (sh.final_len.load(Ordering::Relaxed) != u64::MAX
                    && next > sh.final_len.load(Ordering::Relaxed))
        };
        if done(next) {
            return sub;
        }
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", sh.addr(node)))
            .map(|e| e.connect_timeout(Duration::from_millis(300)).connect_lazy())
            .unwrap_or_else(|_| unreachable_channel());
        let r = ChatServiceClient::new(ch)
            .subscribe(pb::SubscribeRequest {
                room: ROOM.into(),
                from_seq: next,
            })
            .await;
        if let Ok(stream) = r {
            let mut stream = stream.into_inner();
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if done(next) { return sub; }
                        continue;
                    }
                };
                match msg {
                    Ok(Some(m)) => {
                        next = m.seq + 1;
                        sub.seen.push((m.seq, m.id));
                    }
                    _ => break,
                }
            }
        }
        node += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a node's whole copy of the room (SEQUENTIAL, paginated): after convergence it is
/// stable, so pages form one consistent picture.
async fn read_room(addr: SocketAddr) -> Result<Vec<(u64, MsgId)>, String> {
    let mut out = Vec::new();
    let mut from = 1u64;
    loop {
        let r = client(addr)
            .get_history(pb::GetHistoryRequest {
                room: ROOM.into(),
                from_seq: from,
                limit: READ_LIMIT,
                consistency: pb::Consistency::Sequential as i32,
                ..Default::default()
            })
            .await;
        let msgs = match r {
            Ok(r) => r.into_inner().messages,
            Err(st) if st.code() == Code::NotFound => return Ok(out),
            Err(st) => return Err(format!("{:?}: {}", st.code(), st.message())),
        };
        let n = msgs.len();
        for m in msgs {
            from = m.seq + 1;
            out.push((m.seq, m.id));
        }
        if n < READ_LIMIT as usize {
            return Ok(out);
        }
    }
}

/// The faults the schedule picks from.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillRestart,
    Pause,
    Partition,
    IsolateLeader,
    OneWay,
    /// Grow, shrink or replace (remove one node, the leader included, then add a fresh one),
    /// keeping 3 to 5 members.
    Membership,
}

/// Runs the whole chaos session against a started cluster. Faults come in rounds: each round
/// injects every kind once, in an order the seed picks.
pub async fn run(cluster: &mut LocalCluster, cfg: &ChaosConfig) -> ChaosReport {
    let ids = cluster.ids();
    let sh = Arc::new(Shared {
        clock: Clock(Instant::now()),
        addrs: std::sync::RwLock::new(ids.iter().map(|&i| cluster.addr(i)).collect()),
        ops: Mutex::new(Vec::new()),
        stop_clients: AtomicBool::new(false),
        stop_subs: AtomicBool::new(false),
        final_len: AtomicU64::new(u64::MAX),
    });
    println!("chaos: waiting for a leader");
    wait_for_leader(cluster, Duration::from_secs(30)).await;

    let mut tasks = Vec::new();
    for k in 0..cfg.writers {
        tasks.push(tokio::spawn(writer(sh.clone(), k, cfg.seed)));
    }
    for k in 0..cfg.readers {
        tasks.push(tokio::spawn(reader(sh.clone(), k)));
    }
    let subs: Vec<_> = (0..ids.len().min(3))
        .map(|k| tokio::spawn(subscriber(sh.clone(), k)))
        .collect();

    // The fault schedule.
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let end = Instant::now() + cfg.duration;
    let mut faults = 0u64;
    let mut round: Vec<Fault> = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    while Instant::now() + Duration::from_secs(2) < end {
        // Rounds of every fault kind in a seeded order: even a short run sees each kind.
        if round.is_empty() {
            round = vec![
                Fault::KillRestart,
                Fault::Pause,
                Fault::Partition,
                Fault::IsolateLeader,
                Fault::OneWay,
                Fault::Membership,
            ];
            rng.shuffle(&mut round);
        }
        let Some(fault) = round.pop() else { break };
        let hold = Duration::from_millis(1000 + rng.u64(0..2000));
        let ids = cluster.ids();
        let target = ids[rng.usize(0..ids.len())];
        faults += 1;
        match fault {
            Fault::KillRestart => {
                println!("chaos: fault #{faults}: kill -9 n{target}, restart in {hold:?}");
                let _ = cluster.kill(target).await;
                tokio::time::sleep(hold).await;
                if let Err(e) = cluster.restart(target).await {
                    println!("chaos: restart n{target} failed: {e}");
                }
            }
            Fault::Pause => {
                println!("chaos: fault #{faults}: pause n{target} for {hold:?}");
                let _ = cluster.pause(target);
                tokio::time::sleep(hold).await;
                let _ = cluster.resume(target);
            }
            Fault::Partition => {
                let mut shuffled = ids.clone();
                rng.shuffle(&mut shuffled);
                let minority = 1 + rng.usize(0..ids.len().div_ceil(2).saturating_sub(1).max(1));
                let (a, b) = shuffled.split_at(minority.min(ids.len() - 1));
                println!("chaos: fault #{faults}: partition {a:?} | {b:?} for {hold:?}");
                let _ = cluster.partition(a, b);
                tokio::time::sleep(hold).await;
                cluster.heal();
            }
            Fault::OneWay => {
                let leader = current_leader(cluster).await.unwrap_or(target);
                let other = ids
                    .iter()
                    .copied()
                    .filter(|&i| i != leader)
                    .nth(rng.usize(0..ids.len().saturating_sub(1).max(1)))
                    .unwrap_or(target);
                let (a, b) = if rng.bool() {
                    (leader, other)
                } else {
                    (other, leader)
                };
                println!("chaos: fault #{faults}: one-way cut n{a} -> n{b} for {hold:?}");
                let _ = cluster.cut(a, b);
                tokio::time::sleep(hold).await;
                cluster.heal();
            }
            Fault::IsolateLeader => {
                let leader = current_leader(cluster).await.unwrap_or(target);
                println!("chaos: fault #{faults}: isolate leader n{leader} for {hold:?}");
                let _ = cluster.isolate(leader);
                tokio::time::sleep(hold).await;
                cluster.heal();
            }
            Fault::Membership => membership_fault(cluster, &sh, &mut rng, faults).await,
        }
        let calm = Duration::from_millis(500 + rng.u64(0..1500));
        tokio::time::sleep(calm.min(end.saturating_duration_since(Instant::now()))).await;
    }

    let ids = cluster.ids();
    // Stop the faults and the load; let the cluster converge.
    println!("chaos: faults over; stopping load and waiting for convergence");
    cluster.heal();
    for id in ids.clone() {
        let _ = cluster.resume(id);
        if !cluster.is_up(id) {
            let _ = cluster.restart(id).await;
        }
    }
    sh.stop_clients.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let converged = wait_converged(cluster, Duration::from_secs(60)).await;

    let mut report = ChaosReport {
        faults,
        ..Default::default()
    };
    if !converged {
        report
            .violations
            .push("the cluster did not converge within 60 s after the faults stopped".into());
    }
    // Every node's copy of the room must be identical.
    let mut copies = BTreeMap::new();
    for &id in &ids {
        match read_room(cluster.addr(id)).await {
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
    let log: Vec<MsgId> = reference.into_iter().map(|(_, id)| id).collect();

    // Subscribers: let them catch up to the end, then collect what they saw.
    sh.final_len.store(log.len() as u64, Ordering::Relaxed);
    let collect = async {
        let mut out = Vec::new();
        for s in subs {
            if let Ok(s) = s.await {
                out.push(s);
            }
        }
        out
    };
    let subs = match tokio::time::timeout(Duration::from_secs(30), collect).await {
        Ok(s) => s,
        Err(_) => {
            sh.stop_subs.store(true, Ordering::Relaxed);
            report
                .violations
                .push("subscribers did not reach the end of the room within 30 s".into());
            Vec::new()
        }
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
    report.unknown = ops
        .iter()
        .filter(|o| matches!(o, Op::Send { acked: None, .. }))
        .count() as u64;
    super::history::tally(&mut report, &ops, &log, &subs);
    if let Err(e) = write_history(&cfg.history_file, &ops, &log, &subs) {
        println!("chaos: could not write {}: {e}", cfg.history_file.display());
    } else {
        println!("chaos: history written to {}", cfg.history_file.display());
    }
    report
}

/// Changes the membership while the load runs, keeping 3 to 5 members: add a fresh node, remove
/// one (sometimes the leader), or replace one (add, then remove an old one). Ids are never reused, so once
/// they run out only removals remain possible.
async fn membership_fault(
    cluster: &mut LocalCluster,
    sh: &Shared,
    rng: &mut fastrand::Rng,
    n: u64,
) {
    let size = cluster.ids().len();
    let can_add = cluster.next_id().is_some();
    let (remove, add) = match (size, can_add) {
        (s, true) if s <= 3 => (rng.bool(), true),
        (s, _) if s >= 5 => (true, false),
        (_, true) => match rng.u8(0..3) {
            0 => (false, true),
            1 => (true, false),
            _ => (true, true),
        },
        (s, false) if s > 3 => (true, false),
        _ => (false, false),
    };
    if !remove && !add {
        println!("chaos: fault #{n}: membership change skipped (no node id left)");
        return;
    }
    // Add before removing, so a replacement never drops below the starting size.
    let mut added = None;
    if add {
        let next = cluster.next_id().unwrap_or(0);
        println!("chaos: fault #{n}: add a fresh node n{next}");
        match cluster.add_node(Duration::from_secs(60)).await {
            Ok(id) => {
                println!("chaos: n{id} joined as a voter");
                added = Some(id);
            }
            Err(e) => println!("chaos: adding n{next} failed: {e}"),
        }
    }
    // Never below three members (a replacement whose add failed removes nobody).
    if remove && cluster.ids().len() > 3 {
        let leader = current_leader(cluster).await;
        let others: Vec<NodeId> = cluster
            .ids()
            .into_iter()
            .filter(|&i| Some(i) != leader && Some(i) != added)
            .collect();
        let victim = match leader {
            Some(l) if rng.u8(0..3) == 0 || others.is_empty() => l,
            _ => others[rng.usize(0..others.len().max(1))],
        };
        let what = if Some(victim) == leader {
            " (the leader)"
        } else {
            ""
        };
        println!("chaos: fault #{n}: remove n{victim}{what} from the membership");
        match cluster.remove_node(victim).await {
            Ok(voters) => println!("chaos: removed n{victim}; voters {voters:?}"),
            Err(e) => println!("chaos: removing n{victim} failed: {e}"),
        }
    }
    let addrs: Vec<SocketAddr> = cluster.ids().iter().map(|&i| cluster.addr(i)).collect();
    *sh.addrs.write().unwrap_or_else(|e| e.into_inner()) = addrs;
}

async fn current_leader(cluster: &mut LocalCluster) -> Option<NodeId> {
    super::cluster::leader_of(&cluster.views().await).map(|(id, _)| id)
}

async fn wait_for_leader(cluster: &mut LocalCluster, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if current_leader(cluster).await.is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Converged: one leader, and every node has applied everything the leader committed.
async fn wait_converged(cluster: &mut LocalCluster, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let views = cluster.views().await;
        let statuses: Vec<_> = views.values().filter_map(|v| v.status.clone()).collect();
        if statuses.len() == views.len() {
            if let Some((_, l)) = super::cluster::leader_of(&views) {
                if statuses.iter().all(|s| s.applied_index >= l.commit_index) {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}
