//! Membership changes on real processes, under continuous write load: grow 3 -> 5 with
//! `run --join`, shrink 5 -> 3, replace a dead node, remove the leader, transfer leadership, and
//! the API's refusals. Every test that changes the membership runs a background writer (one
//! request id per message, retried like a real client) and ends by checking that every
//! acknowledged message is present exactly once, at its seq, in the same order, on every
//! remaining node.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustyraft::pb;
use rustyraft::pb::cluster_client::ClusterClient;
use support::*;
use tonic::Code;

/// A background writer: sends numbered messages one after the other until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    /// Where it sends (any of these nodes; it fails over). Tests update it as nodes come and go.
    addrs: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<(Vec<pb::Message>, Vec<String>)>,
}

impl Writer {
    fn start(addrs: String, room: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let addrs = Arc::new(Mutex::new(addrs));
        let (stop2, addrs2, room) = (stop.clone(), addrs.clone(), room.to_string());
        let task = tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut i = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                i += 1;
                let list = addrs2.lock().unwrap().clone();
                let mut c = rustyraft::client::Client::new(&list).unwrap();
                let id = format!("{room}-{i}");
                match c
                    .send(&room, "writer", &format!("m{i}"), Some(id.clone()))
                    .await
                {
                    Ok(m) => acked.push(m),
                    Err(e) => failed.push(format!("{id}: {e}")),
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            (acked, failed)
        });
        Writer { stop, addrs, task }
    }

    fn set_addrs(&self, addrs: String) {
        *self.addrs.lock().unwrap() = addrs;
    }

    /// Waits until at least `n` more messages are acknowledged (so a change really happened
    /// under load), by watching the room on `addr`.
    async fn progress(&self, c: &Cluster, room: &str, n: usize) {
        let addr = c.addr(c.leader().await);
        let start = local_history(&addr, room, 0).await.map_or(0, |h| h.len());
        wait_for(&format!("{n} more writes"), || {
            let addr = addr.clone();
            async move {
                let len = local_history(&addr, room, 0).await?.len();
                (len >= start + n).then_some(())
            }
        })
        .await;
    }

    /// Stops the writer; every send must have been acknowledged (retries included).
    async fn stop(self) -> Vec<pb::Message> {
        self.stop.store(true, Ordering::Relaxed);
        let (acked, failed) = self.task.await.unwrap();
        assert!(
            failed.is_empty(),
            "sends failed under membership changes: {failed:?}"
        );
        assert!(!acked.is_empty(), "the writer wrote nothing");
        acked
    }
}

/// Every acknowledged message is in the room exactly once, at the seq it was acknowledged
/// with, and every live node holds the same room, gap-free.
async fn check_acked_everywhere(c: &Cluster, room: &str, acked: &[pb::Message]) {
    let max_index = acked.iter().map(|m| m.index).max().unwrap_or(0);
    let first = c.addr(c.live()[0]);
    let reference = wait_for("the reference copy", || {
        local_history(&first, room, max_index)
    })
    .await;
    let seqs: Vec<u64> = reference.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=reference.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    let ids: BTreeSet<&str> = reference.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), reference.len(), "no message stored twice");
    for m in acked {
        let stored = &reference[(m.seq - 1) as usize];
        assert_eq!(
            (stored.id.as_str(), stored.index),
            (m.id.as_str(), m.index),
            "acknowledged message {} is not at its seq {}",
            m.id,
            m.seq
        );
    }
    let last = reference.last().map_or(0, |m| m.index);
    for id in c.live() {
        let addr = c.addr(id);
        let got = wait_for(&format!("node {id} to apply index {last}"), || {
            local_history(&addr, room, last)
        })
        .await;
        assert_eq!(
            got.iter()
                .map(|m| (m.seq, m.id.clone()))
                .collect::<Vec<_>>(),
            reference
                .iter()
                .map(|m| (m.seq, m.id.clone()))
                .collect::<Vec<_>>(),
            "node {id} disagrees"
        );
    }
}

/// Waits until every live node reports exactly these voters and no learners.
async fn wait_voters(c: &Cluster, voters: &[u64]) {
    let live = c.live();
    wait_for(&format!("voters {voters:?} on every live node"), || {
        let live = live.clone();
        async move {
            for id in live {
                let s = status(&c.addr(id)).await.ok()?;
                if s.voters != voters || !s.learners.is_empty() {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
}

/// `raft_client cluster --addr <addrs> <args>`: (exit code, stdout, stderr).
fn cli(addrs: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(["cluster", "--addr", addrs])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin(addr: &str) -> ClusterClient<tonic::transport::Channel> {
    ClusterClient::new(channel(addr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_three_to_five_with_join_under_load() {
    let mut c = Cluster::start(3, &["--snapshot-threshold", "50"]);
    c.leader().await;
    let w = Writer::start(c.live_addrs(), "grow");
    w.progress(&c, "grow", 20).await;
    // Node 4 joins; the log was compacted (threshold 50), so it catches up by snapshot.
    c.spawn_joining(4, &[]);
    wait_voters(&c, &[1, 2, 3, 4]).await;
    w.progress(&c, "grow", 20).await;
    c.spawn_joining(5, &[]);
    wait_voters(&c, &[1, 2, 3, 4, 5]).await;
    w.set_addrs(c.live_addrs());
    w.progress(&c, "grow", 20).await;
    let acked = w.stop().await;
    check_acked_everywhere(&c, "grow", &acked).await;
    // The new voters carry weight: with two of the original three gone, 3 of 5 still commit.
    let leader = c.leader().await;
    let old: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != leader).collect();
    c.kill9(old[0]);
    c.kill9(old[1]);
    send_any(&c.live_addrs(), "grow", "after two failures", "grow-last").await;
    // A restarted joiner with --join again is harmless: it is a member by its storage.
    c.kill9(5);
    c.spawn(5);
    wait_voters(&c, &[1, 2, 3, 4, 5]).await;
    let s = status(&c.addr(5)).await.unwrap();
    assert_eq!(s.voters, vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrink_five_to_three_under_load() {
    let mut c = Cluster::start(5, &[]);
    let leader = c.leader().await;
    let w = Writer::start(c.live_addrs(), "shrink");
    w.progress(&c, "shrink", 20).await;
    let followers: Vec<u64> = c.live().into_iter().filter(|&i| i != leader).collect();
    for &victim in &followers[..2] {
        let (rc, out, err) = cli(&c.live_addrs(), &["remove", &victim.to_string()]);
        assert_eq!(rc, 0, "{out}{err}");
        assert!(out.starts_with(&format!("removed node {victim}")), "{out}");
        assert!(!out.contains(&format!(" {victim}=")), "{out}");
        c.kill9(victim);
        w.set_addrs(c.live_addrs());
        w.progress(&c, "shrink", 20).await;
    }
    let rest: Vec<u64> = c.live();
    wait_voters(&c, &rest).await;
    let acked = w.stop().await;
    check_acked_everywhere(&c, "shrink", &acked).await;
    // Three voters now: one more failure is tolerated.
    let l = c.leader().await;
    let other = c.live().into_iter().find(|&i| i != l).unwrap();
    c.kill9(other);
    send_any(&c.live_addrs(), "shrink", "after a failure", "shrink-last").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_a_dead_node_with_a_fresh_one() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let w = Writer::start(c.live_addrs(), "replace");
    w.progress(&c, "replace", 20).await;
    let dead = c.live().into_iter().find(|&i| i != leader).unwrap();
    c.kill9(dead);
    w.set_addrs(c.live_addrs());
    let r = admin(&c.addr(leader))
        .remove_member(pb::RemoveMemberRequest { id: dead })
        .await
        .unwrap()
        .into_inner();
    let conf = r.conf.unwrap();
    assert!(r.index > 0 && !conf.voters.contains(&dead), "{conf:?}");
    c.spawn_joining(4, &[]);
    let mut want: Vec<u64> = c.live();
    want.sort();
    wait_voters(&c, &want).await;
    w.set_addrs(c.live_addrs());
    w.progress(&c, "replace", 20).await;
    let acked = w.stop().await;
    check_acked_everywhere(&c, "replace", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_the_leader_under_load() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let w = Writer::start(c.live_addrs(), "lead");
    w.progress(&c, "lead", 20).await;
    let r = admin(&c.addr(leader))
        .remove_member(pb::RemoveMemberRequest { id: leader })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.conf.unwrap().voters.contains(&leader));
    // The removed leader hands over, and says it is out of the cluster.
    let addr = c.addr(leader);
    wait_for("the old leader to report its removal", || async {
        let s = status(&addr).await.ok()?;
        (s.removed && s.leader_id == 0 && s.role != pb::Role::Leader as i32).then_some(())
    })
    .await;
    c.kill9(leader);
    w.set_addrs(c.live_addrs());
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    w.progress(&c, "lead", 20).await;
    let acked = w.stop().await;
    let rest = c.live();
    wait_voters(&c, &rest).await;
    check_acked_everywhere(&c, "lead", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leadership_under_load() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let w = Writer::start(c.live_addrs(), "transfer");
    w.progress(&c, "transfer", 20).await;
    let target = c.live().into_iter().find(|&i| i != leader).unwrap();
    // Asked through a follower: the CLI follows the redirect to the leader.
    let (rc, out, err) = cli(&c.addr(target), &["transfer-leader", &target.to_string()]);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("node {target} is the leader"));
    assert_eq!(c.leader().await, target);
    w.progress(&c, "transfer", 20).await;
    // 0 picks the most up-to-date other voter.
    let (rc, out, err) = cli(&c.live_addrs(), &["transfer-leader", "0"]);
    assert_eq!(rc, 0, "{out}{err}");
    let now = c.leader().await;
    assert_ne!(now, target);
    assert_eq!(out.trim(), format!("node {now} is the leader"));
    w.progress(&c, "transfer", 10).await;
    let acked = w.stop().await;
    check_acked_everywhere(&c, "transfer", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_errors_are_precise() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let follower = c.live().into_iter().find(|&i| i != leader).unwrap();
    let mut a = admin(&c.addr(leader));
    let add = |id: u64, addr: &str, learner: bool| pb::AddMemberRequest {
        id,
        addr: addr.into(),
        learner,
        ..Default::default()
    };
    // A follower redirects, like a send it cannot forward.
    let st = admin(&c.addr(follower))
        .add_member(add(7, "127.0.0.1:1", true))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unavailable);
    assert_eq!(
        st.metadata()
            .get("x-rustyraft-leader")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("{leader}={}", c.addr(leader))
    );
    // Duplicates: an existing id, another member's address. An identical add is a no-op.
    let other = c.addr(follower);
    assert_eq!(
        code(a.add_member(add(leader, "127.0.0.1:1", false)).await),
        Code::AlreadyExists
    );
    assert_eq!(
        code(a.add_member(add(7, &other, true)).await),
        Code::AlreadyExists
    );
    let same = a
        .add_member(add(follower, &other, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.index, 0);
    // Unknown ids.
    let nf = |r: Result<tonic::Response<pb::MembershipResponse>, tonic::Status>| code(r);
    assert_eq!(
        nf(a.promote_learner(pb::PromoteLearnerRequest { id: 9 }).await),
        Code::NotFound
    );
    assert_eq!(
        nf(a.remove_member(pb::RemoveMemberRequest { id: 9 }).await),
        Code::NotFound
    );
    assert_eq!(
        code(a.transfer_leader(pb::TransferLeaderRequest { id: 9 }).await),
        Code::NotFound
    );
    // Promoting a voter; a learner that never answered (nothing runs at its address) is not
    // caught up; a learner cannot lead.
    assert_eq!(
        nf(
            a.promote_learner(pb::PromoteLearnerRequest { id: follower })
                .await
        ),
        Code::FailedPrecondition
    );
    let r = a
        .add_member(add(7, "127.0.0.1:1", true))
        .await
        .unwrap()
        .into_inner();
    assert!(r.index > 0 && r.conf.as_ref().unwrap().learners == vec![7]);
    let st = a
        .promote_learner(pb::PromoteLearnerRequest { id: 7 })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition);
    assert!(st.message().contains("not caught up"), "{}", st.message());
    assert_eq!(
        code(a.transfer_leader(pb::TransferLeaderRequest { id: 7 }).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        nf(a.remove_member(pb::RemoveMemberRequest { id: 7 }).await),
        Code::Ok
    );
    // The CLI: a refusal exits non-zero with the reason; usage errors exit 2.
    let (rc, _, err) = cli(&c.live_addrs(), &["remove", "9"]);
    assert_eq!(rc, 1);
    assert!(err.contains("node 9 is not a member"), "{err}");
    for bad in [
        &["add", "0", "127.0.0.1:1"][..],
        &["add", "5", "nope"],
        &["promote"],
    ] {
        assert_eq!(cli(&c.live_addrs(), bad).0, 2, "{bad:?}");
    }
    // A `run` with both a peer list and --join is a usage error.
    let st = Command::new(bin())
        .args([
            "run",
            "9",
            "127.0.0.1:1",
            "9=127.0.0.1:1",
            "--join",
            "127.0.0.1:2",
        ])
        .output()
        .unwrap()
        .status;
    assert_eq!(st.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_voter_and_a_change_in_flight_are_refused() {
    // Long election timeouts: after its followers die, the leader keeps leading (check-quorum)
    // for about two seconds, with its change stuck uncommitted.
    let mut c = Cluster::start(
        3,
        &["--election-min-ms", "2000", "--election-max-ms", "4000"],
    );
    let leader = c.leader().await;
    let mut a = admin(&c.addr(leader));
    for id in c.live().into_iter().filter(|&i| i != leader) {
        c.kill9(id);
    }
    let mut first = admin(&c.addr(leader));
    let stuck = tokio::spawn(async move {
        first
            .add_member(pb::AddMemberRequest {
                id: 7,
                addr: "127.0.0.1:1".into(),
                learner: true,
                ..Default::default()
            })
            .await
    });
    let addr = c.addr(leader);
    wait_for("the first change to be appended", || async {
        let s = status(&addr).await.ok()?;
        (s.last_index > s.commit_index).then_some(())
    })
    .await;
    let st = a
        .add_member(pb::AddMemberRequest {
            id: 8,
            addr: "127.0.0.1:2".into(),
            learner: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition, "{}", st.message());
    assert!(st.message().contains("in flight"), "{}", st.message());
    // The stuck change never committed; its leader stepped down: outcome unknown.
    let st = stuck.await.unwrap().unwrap_err();
    assert_eq!(st.code(), Code::Unavailable, "{}", st.message());
    assert!(st.message().contains("outcome unknown"), "{}", st.message());

    // The last voter cannot be removed.
    let solo = Cluster::start(1, &[]);
    solo.leader().await;
    let st = admin(&solo.addr(1))
        .remove_member(pb::RemoveMemberRequest { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition);
    assert!(st.message().contains("last voter"), "{}", st.message());
}
