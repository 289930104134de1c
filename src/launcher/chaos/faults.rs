//! The chaos fault schedule: which faults, on which nodes, when; the membership changes; and
//! the waits around them (for a leader, for convergence once the faults stop).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::{ChaosConfig, Shared};
use crate::launcher::history::Fault as HistoryFault;
use crate::launcher::processes::{LocalCluster, NodeId};
use crate::launcher::status_view::leader_of;

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

/// Injects faults for `cfg.duration`, in rounds: each round injects every kind once, in an
/// order the seed picks. Returns how many faults were injected. Links are healed and paused
/// nodes resumed after each fault, but a killed node may be left down: see [`end_faults`].
pub(super) async fn inject(cluster: &mut LocalCluster, sh: &Shared, cfg: &ChaosConfig) -> u64 {
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
        let start_us = sh.clock.now();
        let (kind, nodes, detail) = match fault {
            Fault::KillRestart => {
                let detail = format!("kill -9 n{target}, restart in {hold:?}");
                println!("chaos: fault #{faults}: {detail}");
                let _ = cluster.kill(target).await;
                tokio::time::sleep(hold).await;
                if let Err(e) = cluster.restart(target).await {
                    println!("chaos: restart n{target} failed: {e}");
                }
                ("kill", vec![target], detail)
            }
            Fault::Pause => {
                let detail = format!("pause n{target} for {hold:?}");
                println!("chaos: fault #{faults}: {detail}");
                let _ = cluster.pause(target);
                tokio::time::sleep(hold).await;
                let _ = cluster.resume(target);
                ("pause", vec![target], detail)
            }
            Fault::Partition => {
                let mut shuffled = ids.clone();
                rng.shuffle(&mut shuffled);
                let minority = 1 + rng.usize(0..ids.len().div_ceil(2).saturating_sub(1).max(1));
                let (a, b) = shuffled.split_at(minority.min(ids.len() - 1));
                let detail = format!("partition {a:?} | {b:?} for {hold:?}");
                println!("chaos: fault #{faults}: {detail}");
                let _ = cluster.partition(a, b);
                tokio::time::sleep(hold).await;
                cluster.heal();
                ("partition", a.to_vec(), detail)
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
                let detail = format!("one-way cut n{a} -> n{b} for {hold:?}");
                println!("chaos: fault #{faults}: {detail}");
                let _ = cluster.cut(a, b);
                tokio::time::sleep(hold).await;
                cluster.heal();
                ("one_way", vec![a, b], detail)
            }
            Fault::IsolateLeader => {
                let leader = current_leader(cluster).await.unwrap_or(target);
                let detail = format!("isolate leader n{leader} for {hold:?}");
                println!("chaos: fault #{faults}: {detail}");
                let _ = cluster.isolate(leader);
                tokio::time::sleep(hold).await;
                cluster.heal();
                ("isolate_leader", vec![leader], detail)
            }
            Fault::Membership => {
                let (nodes, detail) = membership_fault(cluster, sh, &mut rng, faults).await;
                ("membership", nodes, detail)
            }
        };
        sh.record_fault(HistoryFault {
            kind: kind.to_string(),
            nodes,
            start_us,
            end_us: sh.clock.now(),
            detail,
        });
        let calm = Duration::from_millis(500 + rng.u64(0..1500));
        tokio::time::sleep(calm.min(end.saturating_duration_since(Instant::now()))).await;
    }
    faults
}

/// Ends every fault: heals the links, resumes paused nodes and restarts dead ones.
pub(super) async fn end_faults(cluster: &mut LocalCluster) {
    cluster.heal();
    for id in cluster.ids() {
        let _ = cluster.resume(id);
        if !cluster.is_up(id) {
            let _ = cluster.restart(id).await;
        }
    }
}

/// Changes the membership while the load runs, keeping 3 to 5 members: add a fresh node, remove
/// one (sometimes the leader), or replace one (add, then remove an old one). Ids are never reused, so once
/// they run out only removals remain possible. Returns the nodes added or removed and what was
/// done, for the history.
async fn membership_fault(
    cluster: &mut LocalCluster,
    sh: &Shared,
    rng: &mut fastrand::Rng,
    n: u64,
) -> (Vec<NodeId>, String) {
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
        return (
            Vec::new(),
            "membership change skipped (no node id left)".into(),
        );
    }
    let mut nodes = Vec::new();
    let mut done = Vec::new();
    // Add before removing, so a replacement never drops below the starting size.
    let mut added = None;
    if add {
        let next = cluster.next_id().unwrap_or(0);
        println!("chaos: fault #{n}: add a fresh node n{next}");
        match cluster.add_node(Duration::from_secs(60)).await {
            Ok(id) => {
                println!("chaos: n{id} joined as a voter");
                added = Some(id);
                nodes.push(id);
                done.push(format!("added n{id}"));
            }
            Err(e) => {
                println!("chaos: adding n{next} failed: {e}");
                done.push(format!("adding n{next} failed"));
            }
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
        nodes.push(victim);
        match cluster.remove_node(victim).await {
            Ok(voters) => {
                println!("chaos: removed n{victim}; voters {voters:?}");
                done.push(format!("removed n{victim}{what}"));
            }
            Err(e) => {
                println!("chaos: removing n{victim} failed: {e}");
                done.push(format!("removing n{victim}{what} failed"));
            }
        }
    }
    let addrs: Vec<SocketAddr> = cluster.ids().iter().map(|&i| cluster.addr(i)).collect();
    *sh.addrs.write().unwrap_or_else(|e| e.into_inner()) = addrs;
    (nodes, done.join(", "))
}

async fn current_leader(cluster: &mut LocalCluster) -> Option<NodeId> {
    leader_of(&cluster.views().await).map(|(id, _)| id)
}

/// Waits (up to `limit`) until some node leads; false if none did.
pub(super) async fn wait_for_leader(cluster: &mut LocalCluster, limit: Duration) -> bool {
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
pub(super) async fn wait_converged(cluster: &mut LocalCluster, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let views = cluster.views().await;
        let statuses: Vec<_> = views.values().filter_map(|v| v.status.clone()).collect();
        if statuses.len() == views.len() {
            if let Some((_, l)) = leader_of(&views) {
                if statuses.iter().all(|s| s.applied_index >= l.commit_index) {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}
