//! Scenario tests named after the Raft paper's sections. Each one scripts a fault sequence
//! exactly (who campaigns, which messages are lost) on the same simulated cluster the seeded
//! simulation uses, so every safety invariant is checked after every step here too, and then
//! asserts what the paper says must happen.
//!
//! Reference: Ongaro and Ousterhout, "In Search of an Understandable Consensus Algorithm"
//! (extended version), and Ongaro's thesis for pre-vote and check-quorum.

mod sim;

use rustyraft::raft::{
    ConfState, Config, EntryKind, MemStorage, MessageBody, NodeId, ProposeError, Raft, Role,
    Storage as _,
};
use sim::{Cluster, Failure, Faults};

type Sim = Cluster<MemStorage>;

fn cluster(n: usize, hook: Option<fn(&mut Config)>) -> Sim {
    cluster_with_voters(n, n, hook)
}

/// `n` nodes of which the first `voters` are members; the rest start outside the membership.
fn cluster_with_voters(n: usize, voters: usize, hook: Option<fn(&mut Config)>) -> Sim {
    let mut c = Cluster::with_voters(
        n,
        voters,
        7,
        Faults::none(),
        Box::new(|_, conf| MemStorage::new_with_conf(conf.clone())),
    );
    c.config_hook = hook;
    c.trace = Some(Vec::new());
    c.start_all().expect("start");
    c
}

/// Fails the test with the violated property and the event trace.
fn ok<T>(c: &mut Sim, r: Result<T, Failure>) -> T {
    match r {
        Ok(v) => v,
        Err(f) => {
            let trace = c.take_trace().join("\n");
            panic!("{} at t={}\n{trace}", f.what, f.time);
        }
    }
}

fn node(c: &Sim, id: NodeId) -> &Raft<MemStorage> {
    c.raft(id).expect("node is up")
}

/// Makes `id` campaign (repeatedly, if a stale term makes it lose) until it leads.
fn elect(c: &mut Sim, id: NodeId) {
    for _ in 0..5 {
        let r = c.raft_mut(id).expect("up").campaign_now();
        assert!(r.is_ok(), "campaign: {r:?}");
        let r = c.process(id).and_then(|_| c.stabilize());
        ok(c, r);
        if node(c, id).role() == Role::Leader {
            return;
        }
    }
    panic!("n{id} could not win an election");
}

fn term_at(c: &Sim, id: NodeId, index: u64) -> Option<u64> {
    node(c, id).log().term_opt(index)
}

/// Reference: section 5.4.2, Figure 8. A leader must not decide that an entry from an earlier
/// term is committed because it is stored on a majority: only an entry of the leader's own term
/// is committed by counting replicas. Here an entry from term 2 reaches three of five servers
/// under a term-4 leader, yet a later leader legitimately overwrites it, so counting it as
/// committed would lose a committed entry (the simulation's Commit Safety check would fire).
#[test]
fn section_5_4_2_figure_8_no_commit_by_counting_old_term_replicas() {
    // The paper's Raft: no pre-vote, no check-quorum, one entry per AppendEntries so that
    // replication can be cut between two entries.
    fn paper_raft(cfg: &mut Config) {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
        cfg.max_size_per_msg = 1;
    }
    let mut c = cluster(5, Some(paper_raft));
    // (a) S1 leads and replicates the entry at index 2 only to S2.
    elect(&mut c, 1);
    let t_a = node(&c, 1).term();
    c.drop_filter = Some(Box::new(|m| {
        m.from == 1 && (m.to == 3 || m.to == 4 || m.to == 5)
    }));
    let x = c.propose(1, b"x").expect("S1 leads");
    let r = c.stabilize();
    ok(&mut c, r);
    assert_eq!(term_at(&c, 2, x), Some(t_a), "S2 holds index {x}");
    assert_eq!(term_at(&c, 3, x), None);
    assert!(node(&c, 1).commit_index() < x);

    // (b) S1 crashes; S5 is elected with votes from S3, S4 and itself, and takes an entry at
    // index 2 in its own term, which reaches nobody.
    c.crash(1);
    c.drop_filter = Some(Box::new(|m| {
        m.from == 5 && matches!(m.body, MessageBody::AppendEntries { .. })
    }));
    elect(&mut c, 5);
    let t_b = node(&c, 5).term();
    assert!(t_b > t_a);
    assert_eq!(term_at(&c, 5, x), Some(t_b), "S5's no-op sits at index {x}");

    // (c) S5 crashes, S1 restarts and is elected; it sends the term-2 entry to S3 but its own
    // term's no-op to S2 only. Index 2 is now on S1, S2 and S3: a majority, of an old term.
    c.crash(5);
    c.drop_filter = None;
    let r = c.restart(1);
    ok(&mut c, r);
    // S3 may see the new term's entry only in the probe it rejects (it lacks index 2 then); once
    // it has been sent index 2, anything past index 2 is lost on the way to it.
    let s3_has_x = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = s3_has_x.clone();
    c.drop_filter = Some(Box::new(move |m| {
        if m.from != 1 || m.to == 5 {
            return false;
        }
        if m.to == 4 {
            return true;
        }
        let MessageBody::AppendEntries { entries, .. } = &m.body else {
            return false;
        };
        if m.to != 3 {
            return false;
        }
        let drop = seen.get() && entries.iter().any(|e| e.index > x);
        if entries.iter().any(|e| e.index == x) {
            seen.set(true);
        }
        drop
    }));
    elect(&mut c, 1);
    let t_c = node(&c, 1).term();
    assert!(t_c > t_b);
    for id in [1, 2, 3] {
        assert_eq!(
            term_at(&c, id, x),
            Some(t_a),
            "S{id} holds the term-{t_a} entry"
        );
    }
    assert_eq!(
        term_at(&c, 3, x + 1),
        None,
        "S3 must not have the new term's entry"
    );
    // The rule under test: replicas of an old-term entry are not counted.
    assert!(
        node(&c, 1).commit_index() < x,
        "S1 committed index {x} (term {t_a}) by counting replicas in term {t_c}"
    );

    // (d) S1 crashes; S5 restarts and wins with S3 and S4 (its last term is higher than
    // theirs), then overwrites index 2 everywhere. This is legal only because index 2 was never
    // committed; the simulation checks that no node ever committed it.
    c.crash(1);
    c.drop_filter = None;
    let r = c.restart(5);
    ok(&mut c, r);
    c.partition(&[2], &[3, 4, 5]);
    elect(&mut c, 5);
    c.heal();
    let y = c.propose(5, b"y").expect("S5 leads");
    let r = c.run_ticks(5, |_| Ok(()));
    ok(&mut c, r);
    for id in [2, 3, 4, 5] {
        assert_eq!(
            term_at(&c, id, x),
            Some(t_b),
            "S{id} now holds S5's entry at {x}"
        );
        assert!(node(&c, id).commit_index() >= y, "S{id} committed {y}");
    }
    // And a restarted S1 converges on the same history.
    let r = c.restart(1);
    ok(&mut c, r);
    let r = c.run_ticks(30, |_| Ok(()));
    ok(&mut c, r);
    assert_eq!(term_at(&c, 1, x), Some(t_b));
    assert_eq!(c.applied(1), c.applied(5));
}

/// Reference: sections 5.3 and 6.2 (thesis 6.2, check-quorum). A leader cut off from the
/// majority steps down within an election timeout, the majority elects a new leader and keeps
/// committing, and when the old leader comes back its uncommitted entries are replaced by the
/// new leader's log.
#[test]
fn section_5_3_partitioned_old_leader_comes_back() {
    let mut c = cluster(5, None);
    elect(&mut c, 1);
    let old_term = node(&c, 1).term();
    let committed = c.propose(1, b"before").expect("leads");
    let r = c.stabilize();
    ok(&mut c, r);
    assert!(node(&c, 3).commit_index() >= committed);

    c.partition(&[1], &[2, 3, 4, 5]);
    let stale = c.propose(1, b"lost").expect("still thinks it leads");
    // Within two election timeouts S1 notices it cannot hear a majority and steps down, and the
    // majority elects someone else.
    let r = c.run_ticks(4 * c.election_tick, |_| Ok(()));
    ok(&mut c, r);
    assert_ne!(
        node(&c, 1).role(),
        Role::Leader,
        "check-quorum must depose S1"
    );
    assert!(node(&c, 1).commit_index() < stale, "S1 cannot commit alone");
    let new = c.leader().expect("majority elects a leader");
    assert_ne!(new, 1);
    assert!(node(&c, new).term() > old_term);
    let fresh = c.propose(new, b"after").expect("new leader");
    let r = c.run_ticks(5, |_| Ok(()));
    ok(&mut c, r);
    assert!(node(&c, new).commit_index() >= fresh);

    c.heal();
    let r = c.run_ticks(3 * c.election_tick, |_| Ok(()));
    ok(&mut c, r);
    let leader = c.leader().expect("a leader");
    let lead_commit = node(&c, leader).commit_index();
    assert_eq!(node(&c, 1).commit_index(), lead_commit, "S1 caught up");
    assert_eq!(c.applied(1), c.applied(leader));
    let stale_entry = node(&c, 1).log().term_opt(stale);
    assert_ne!(
        stale_entry,
        Some(old_term),
        "S1's uncommitted entry from the old term was replaced"
    );
    let ents = node(&c, 1)
        .log()
        .storage
        .entries(committed, lead_commit + 1, None)
        .expect("entries");
    assert!(
        !ents
            .iter()
            .any(|e| e.kind == EntryKind::Normal && e.data.as_ref() == b"lost"),
        "the stale proposal never took effect"
    );
    assert!(ents.iter().any(|e| e.data.as_ref() == b"after"));
}

/// Reference: thesis section 9.6 (pre-vote). A node cut off from the cluster keeps timing out,
/// but pre-vote stops it from raising its term; when it rejoins, the stable leader keeps its
/// term and its leadership, and the node simply catches up.
#[test]
fn section_9_6_rejoining_node_does_not_disrupt_stable_leader() {
    let mut c = cluster(3, None);
    elect(&mut c, 1);
    let term = node(&c, 1).term();
    c.partition(&[3], &[1, 2]);
    // Many election timeouts pass on the isolated node.
    let r = c.run_ticks(20 * c.election_tick, |c| {
        c.propose(1, b"w");
        Ok(())
    });
    ok(&mut c, r);
    assert_eq!(
        node(&c, 3).term(),
        term,
        "pre-vote keeps the isolated node's term"
    );
    assert_ne!(node(&c, 3).role(), Role::Leader);
    assert!(node(&c, 3).commit_index() < node(&c, 1).commit_index());

    c.heal();
    let r = c.run_ticks(3 * c.election_tick, |_| Ok(()));
    ok(&mut c, r);
    assert_eq!(c.leader(), Some(1), "the stable leader keeps leading");
    assert_eq!(node(&c, 1).term(), term, "no election happened");
    assert_eq!(node(&c, 3).commit_index(), node(&c, 1).commit_index());
    assert_eq!(c.applied(3), c.applied(1));

    // The same node, now with a genuinely higher term (it stood in an election it could not
    // win while pre-vote was off, as an older version would), is also ignored by followers
    // that hear from the leader (the leader lease) and cannot depose it.
    let lead_commit = node(&c, 1).commit_index();
    c.partition(&[3], &[1, 2]);
    let r = c.raft_mut(3).expect("up").campaign_now();
    assert!(r.is_ok());
    let r = c.process(3).and_then(|_| c.stabilize());
    ok(&mut c, r);
    assert_eq!(
        node(&c, 3).term(),
        term,
        "a pre-vote round alone never raises the term"
    );
    c.heal();
    let r = c.run_ticks(3 * c.election_tick, |c| {
        c.propose(1, b"v");
        Ok(())
    });
    ok(&mut c, r);
    assert_eq!(c.leader(), Some(1));
    assert_eq!(node(&c, 1).term(), term);
    assert!(node(&c, 3).commit_index() > lead_commit);
}

/// Ticks only `ids` (the others' clocks stand still), delivering messages as they fall due.
fn tick_only(c: &mut Sim, ids: &[NodeId], ticks: u64) {
    for _ in 0..ticks {
        for &id in ids {
            let r = c.tick(id);
            ok(c, r);
        }
        let until = c.time + sim::TICK;
        let r = c.deliver_until(until);
        ok(c, r);
    }
}

/// Reference: section 8 and thesis section 6.4 (ReadIndex). A deposed leader that has not yet
/// noticed must not answer a read from its own stale commit index, and a newly elected leader
/// must not answer one before an entry of its own term is committed.
#[test]
fn section_8_read_index_during_leader_change() {
    let mut c = cluster(3, None);
    elect(&mut c, 1);
    c.propose(1, b"a");
    let r = c.stabilize();
    ok(&mut c, r);

    // S1 is cut off and its clock stands still, so it still believes it leads; S2 and S3 elect a
    // new leader, which commits a write S1 never sees.
    c.partition(&[1], &[2, 3]);
    let et = c.election_tick;
    tick_only(&mut c, &[2, 3], 3 * et);
    let new = c.leader().expect("majority elects a leader");
    assert_ne!(new, 1);
    assert_eq!(node(&c, 1).role(), Role::Leader, "S1 has not noticed yet");
    let w = c.propose(new, b"b").expect("leads");
    tick_only(&mut c, &[2, 3], 3);
    assert!(node(&c, new).commit_index() >= w);
    assert!(node(&c, 1).commit_index() < w);

    // A read at the deposed leader must wait for a quorum to confirm its leadership, which it
    // will never get: it must not be answered from S1's stale commit index.
    let stale = ok_read(&mut c, 1);
    tick_only(&mut c, &[1], 2);
    tick_only(&mut c, &[2, 3], 2);
    assert_eq!(
        c.read_results.get(&stale),
        None,
        "S1 answered a read it could not confirm"
    );
    c.heal();
    let r = c.run_ticks(3 * et, |_| Ok(()));
    ok(&mut c, r);
    assert!(
        !matches!(c.read_results.get(&stale), Some(Some(i)) if *i < w),
        "stale read answered: {:?}",
        c.read_results.get(&stale)
    );

    // A fresh leader answers only after its term's no-op commits. Hold back every AppendEntries
    // (heartbeats still flow), depose the leader and let the others elect a new one.
    let old = c.leader().expect("leader");
    c.drop_filter = Some(Box::new(|m| {
        matches!(m.body, MessageBody::AppendEntries { .. })
    }));
    c.crash(old);
    let r = c.run_ticks(4 * et, |_| Ok(()));
    ok(&mut c, r);
    let fresh = c.leader().expect("the two survivors elect a leader");
    let term = node(&c, fresh).term();
    let noop = node(&c, fresh).log().last_index().expect("last");
    assert_eq!(term_at(&c, fresh, noop), Some(term), "the new term's no-op");
    assert!(node(&c, fresh).commit_index() < noop);
    let ctx = ok_read(&mut c, fresh);
    let r = c.run_ticks(3, |_| Ok(()));
    ok(&mut c, r);
    assert_eq!(
        c.read_results.get(&ctx),
        None,
        "answered before the leader committed an entry of its term"
    );
    c.drop_filter = None;
    let r = c.run_ticks(5, |_| Ok(()));
    ok(&mut c, r);
    match c.read_results.get(&ctx) {
        Some(Some(i)) => assert!(*i >= noop, "read answered at {i}, below the no-op {noop}"),
        other => panic!("read on the new leader was not answered: {other:?}"),
    }
}

fn ok_read(c: &mut Sim, id: NodeId) -> u64 {
    let r = c.read(id);
    ok(c, r)
}

/// Proposes `change` (applied to the current membership) at `id` and processes its Ready.
fn change_conf(
    c: &mut Sim,
    id: NodeId,
    change: impl FnOnce(&mut ConfState),
) -> Result<u64, ProposeError> {
    let r = c.raft_mut(id).expect("up");
    let mut conf = r.conf().clone();
    change(&mut conf);
    let res = r.propose_conf_change(conf);
    let p = c.process(id);
    ok(c, p);
    res
}

/// Reference: thesis section 4.1, and Ongaro's 2015 raft-dev correction to single-server
/// changes. A change is refused until the leader has committed an entry of its own term, and
/// while the previous change is uncommitted; one change may move at most one voter; and a
/// configuration is in force on each server as soon as it is in that server's log.
#[test]
fn section_4_1_single_server_change_rules() {
    let mut c = cluster_with_voters(4, 3, None);
    elect(&mut c, 1);
    // n1 dies and nobody's appends arrive: the next leader cannot commit its no-op.
    c.crash(1);
    c.drop_filter = Some(Box::new(|m| {
        matches!(m.body, MessageBody::AppendEntries { .. })
    }));
    let r = c.run_ticks(40, |_| Ok(()));
    ok(&mut c, r);
    let l = c.leader().expect("n2 or n3 leads");
    let res = change_conf(&mut c, l, |conf| {
        conf.learners.insert(4);
    });
    assert_eq!(res, Err(ProposeError::LeaderNotReady));
    c.drop_filter = None;
    let r = c.restart(1).and_then(|_| c.run_ticks(3, |_| Ok(())));
    ok(&mut c, r);
    assert_eq!(c.leader(), Some(l));

    // Two voters at once is not a single-server change.
    let res = change_conf(&mut c, l, |conf| {
        conf.voters.remove(&3);
        conf.voters.insert(4);
    });
    assert!(
        matches!(res, Err(ProposeError::InvalidConfChange(_))),
        "{res:?}"
    );

    // Hold back the replies so the next change stays uncommitted.
    c.drop_filter = Some(Box::new(move |m| {
        m.to == l && matches!(m.body, MessageBody::AppendEntriesResponse { .. })
    }));
    let idx = change_conf(&mut c, l, |conf| {
        conf.learners.insert(4);
    })
    .expect("one change");
    let r = c.stabilize();
    ok(&mut c, r);
    for id in [1, 2, 3] {
        assert!(
            node(&c, id).conf().learners.contains(&4),
            "n{id} uses the new configuration once it is in its log"
        );
        assert_eq!(node(&c, id).conf_index(), idx);
    }
    assert!(node(&c, l).commit_index() < idx, "not committed yet");
    let res = change_conf(&mut c, l, |conf| {
        conf.learners.remove(&4);
    });
    assert_eq!(res, Err(ProposeError::ConfChangePending));
    c.drop_filter = None;
    let r = c.run_ticks(5, |_| Ok(()));
    ok(&mut c, r);
    assert!(node(&c, l).commit_index() >= idx);
    assert_eq!(
        node(&c, 4).log().last_index().ok(),
        node(&c, l).log().last_index().ok(),
        "the learner receives the log"
    );
}

/// Reference: thesis section 4.1. "A log entry for a configuration change can be removed (if
/// leadership changes); in this case, a server must be prepared to fall back to the previous
/// configuration in its log." A follower holding an uncommitted change that a new leader
/// overwrites goes back to the membership before it.
#[test]
fn section_4_1_overwritten_configuration_falls_back() {
    let mut c = cluster_with_voters(6, 5, None);
    elect(&mut c, 1);
    let before = node(&c, 2).conf().clone();
    let before_index = node(&c, 2).conf_index();
    // n1's change reaches n2 only, and n2's acknowledgement is lost: uncommitted.
    c.drop_filter = Some(Box::new(|m| {
        (m.from == 1 && m.to != 2 && matches!(m.body, MessageBody::AppendEntries { .. }))
            || (m.from == 2 && m.to == 1)
    }));
    let idx = change_conf(&mut c, 1, |conf| {
        conf.learners.insert(6);
    })
    .expect("leader takes the change");
    let r = c.stabilize();
    ok(&mut c, r);
    assert!(node(&c, 2).conf().learners.contains(&6));
    assert_eq!(node(&c, 2).conf_index(), idx);

    let old_term = node(&c, 1).term();
    // n1 dies; with n2 kept out of the vote, one of n3..n5 wins and overwrites index `idx`
    // with its no-op.
    c.crash(1);
    c.drop_filter = Some(Box::new(|m| {
        (m.from == 2 || m.to == 2)
            && matches!(
                m.body,
                MessageBody::RequestVote { .. } | MessageBody::RequestVoteResponse { .. }
            )
    }));
    let r = c.run_ticks(40, |_| Ok(()));
    ok(&mut c, r);
    assert!(matches!(c.leader(), Some(3..=5)), "{:?}", c.leader());
    c.drop_filter = None;
    let r = c.run_ticks(5, |_| Ok(()));
    ok(&mut c, r);
    assert_ne!(
        term_at(&c, 2, idx),
        Some(old_term),
        "index {idx} was overwritten"
    );
    assert_eq!(
        node(&c, 2).conf(),
        &before,
        "n2 fell back to the earlier membership"
    );
    assert_eq!(node(&c, 2).conf_index(), before_index);
}

/// Reference: thesis section 4.2.2 (removing the current leader). The leader appends its own
/// removal and dies before anyone else has it. The survivor still counts on the old leader's
/// vote, and the old leader's log is the more up to date, so only the old leader can be
/// elected: it must stand (counting only the new configuration's votes), commit its removal,
/// hand over, and then stay quiet for good.
#[test]
fn section_4_2_2_removed_leader_is_elected_until_its_removal_commits() {
    let mut c = cluster_with_voters(2, 2, None);
    elect(&mut c, 1);
    c.drop_filter = Some(Box::new(|m| {
        m.from == 1 && matches!(m.body, MessageBody::AppendEntries { .. })
    }));
    let idx = change_conf(&mut c, 1, |conf| {
        conf.voters.remove(&1);
    })
    .expect("leader takes its own removal");
    let r = c.stabilize();
    ok(&mut c, r);
    assert!(node(&c, 2).log().last_index().expect("last") < idx);
    // Restarting rebuilds the membership from the log: n1 comes back outside it.
    c.crash(1);
    let r = c.restart(1);
    ok(&mut c, r);
    assert!(!node(&c, 1).conf().voters.contains(&1));
    c.drop_filter = None;
    let r = c.run_ticks(200, |_| Ok(()));
    ok(&mut c, r);
    assert_eq!(c.leader(), Some(2), "n2 leads the one-voter cluster");
    assert!(node(&c, 2).commit_index() >= idx);
    assert_eq!(
        node(&c, 2)
            .conf()
            .voters
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [2]
    );
    let term = node(&c, 2).term();
    let r = c.run_ticks(200, |_| Ok(()));
    ok(&mut c, r);
    assert_eq!(
        node(&c, 2).term(),
        term,
        "the removed node disrupted the cluster"
    );
    assert_eq!(c.leader(), Some(2));
}

/// Reference: Ongaro, "bug in single-server membership changes", raft-dev, July 2015. Two
/// single-server changes proposed in different terms, each reaching only part of the cluster,
/// can have disjoint majorities: C1 = {1,2,3,4,5} (adding n5) and C2 = {1,2,3} (removing n4).
/// The fix: a leader proposes no change before it has committed an entry of its own term.
/// Here n2 tries to propose C2 right after winning term 2, and must be refused. Without the
/// rule (try it: drop the `LeaderNotReady` check in `propose_conf_change`), C2 commits on
/// {n2, n3}, then n1 wins under C1 with n4 and n5 and overwrites it, and the simulation's
/// safety checks fire.
#[test]
fn ongaro_2015_single_server_change_bug_is_prevented() {
    fn paper_raft(cfg: &mut Config) {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    }
    let mut c = cluster_with_voters(5, 4, Some(paper_raft));
    elect(&mut c, 1);
    // C1: n1 adds n5 as a voter; only n5 receives it.
    c.drop_filter = Some(Box::new(|m| {
        m.from == 1 && m.to != 5 && matches!(m.body, MessageBody::AppendEntries { .. })
    }));
    change_conf(&mut c, 1, |conf| {
        conf.voters.insert(5);
    })
    .expect("n1 proposes C1");
    let r = c.stabilize();
    ok(&mut c, r);
    c.crash(1);
    // n2 wins term 2 with n3 and n4; its appends reach n3 only.
    c.drop_filter = Some(Box::new(|m| {
        m.from == 2 && m.to != 3 && matches!(m.body, MessageBody::AppendEntries { .. })
    }));
    elect(&mut c, 2);
    let res = change_conf(&mut c, 2, |conf| {
        conf.voters.remove(&4);
    });
    if res == Err(ProposeError::LeaderNotReady) {
        return;
    }
    // The rule is missing: play the rest of the counterexample so the safety checks show why
    // it matters.
    let r = c.stabilize();
    ok(&mut c, r);
    c.drop_filter = None;
    let r = c.restart(1);
    ok(&mut c, r);
    elect(&mut c, 1);
    let r = c.run_ticks(20, |_| Ok(()));
    ok(&mut c, r);
    panic!("n2 changed the membership before committing in its term: {res:?}");
}

/// Reference: thesis section 3.10 (leadership transfer). The leader stops taking proposals,
/// brings a lagging target up to date, then sends it TimeoutNow; the target wins at once, in
/// the next term, without waiting for an election timeout.
#[test]
fn section_3_10_leadership_transfer_catches_the_target_up_first() {
    let mut c = cluster(3, None);
    elect(&mut c, 1);
    // n3 misses a few entries.
    c.drop_filter = Some(Box::new(|m| {
        m.to == 3 && matches!(m.body, MessageBody::AppendEntries { .. })
    }));
    for i in 0..3u8 {
        c.propose(1, &[i]).expect("n1 leads");
        let r = c.stabilize();
        ok(&mut c, r);
    }
    let last = node(&c, 1).log().last_index().expect("last");
    assert!(node(&c, 3).log().last_index().expect("last") < last);
    let term = node(&c, 1).term();
    c.drop_filter = None;
    let r = c.raft_mut(1).expect("up").transfer_leader(3);
    assert_eq!(r, Ok(()));
    assert_eq!(
        c.raft_mut(1).expect("up").propose(b"late".to_vec().into()),
        Err(ProposeError::TransferInProgress),
        "a transferring leader takes no proposals"
    );
    // The lost appends are found out by the heartbeat stall check (two rounds without
    // progress), then the target is caught up and told to campaign: six ticks, well below the
    // election timeout of 10 to 20 ticks.
    let r = c.process(1).and_then(|_| c.run_ticks(6, |_| Ok(())));
    ok(&mut c, r);
    assert_eq!(
        c.leader(),
        Some(3),
        "n3 leads right away, no timeout needed"
    );
    assert_eq!(node(&c, 3).term(), term + 1);
    assert!(node(&c, 3).log().last_index().expect("last") > last);
}

/// Brings n3 back behind n1's compacted log, so that n1 must send it a snapshot.
fn lagging_follower_needs_snapshot(c: &mut Sim) {
    elect(c, 1);
    c.crash(3);
    for i in 0..5u8 {
        c.propose(1, &[i]).expect("n1 leads");
        let r = c.stabilize();
        ok(c, r);
    }
    let r = c.compact(1);
    ok(c, r);
    let r = c.restart(3);
    ok(c, r);
}

/// Reference: section 7 (log compaction) and etcd's `StateSnapshot`. A snapshot transfer
/// can take far longer than an election timeout on a large state. The leader sends it once
/// and then waits for its outcome: no timer resends a copy behind the first, no probe
/// interleaves. A transfer reported lost is sent again; one delivered catches the follower up.
#[test]
fn section_7_a_slow_snapshot_is_sent_once_and_a_lost_one_again() {
    let mut c = cluster(3, None);
    c.hold_snapshots = true;
    lagging_follower_needs_snapshot(&mut c);
    // Ten election timeouts with the transfer still under way.
    let et = c.election_tick;
    tick_only(&mut c, &[1, 2, 3], 10 * et);
    assert_eq!(c.leader(), Some(1), "n1 keeps leading throughout");
    assert_eq!(
        c.snapshots_sent, 1,
        "exactly one transfer while it is in flight"
    );
    let compacted = node(&c, 1).log().first_index().expect("first") - 1;
    assert!(
        node(&c, 3).applied_index() < compacted,
        "n3 has not caught up yet"
    );

    // The transport reports the transfer lost: the leader sends it again, once.
    let r = c.release_snapshots(false);
    ok(&mut c, r);
    c.hold_snapshots = true;
    tick_only(&mut c, &[1, 2, 3], 3 * et);
    assert_eq!(
        c.snapshots_sent, 2,
        "a lost transfer is sent again, and only once"
    );

    // This time it arrives: n3 catches up and replicates normally from then on.
    let r = c.release_snapshots(true);
    ok(&mut c, r);
    c.propose(1, b"after").expect("n1 leads");
    tick_only(&mut c, &[1, 2, 3], 3);
    let last = node(&c, 1).log().last_index().expect("last");
    assert_eq!(node(&c, 3).commit_index(), last, "n3 is caught up");
    assert_eq!(c.snapshots_sent, 2, "no further snapshot once n3 has one");
}

/// The leader bounds the bytes of its uncommitted entries (etcd's
/// `MaxUncommittedEntriesSize`): cut off from its followers, it refuses proposals past the
/// bound instead of growing its log without limit, and takes them again once entries commit.
#[test]
fn a_leader_that_cannot_commit_refuses_proposals_past_its_uncommitted_bound() {
    let mut c = cluster(3, Some(|cfg: &mut Config| cfg.max_uncommitted_bytes = 100));
    elect(&mut c, 1);
    c.partition(&[1], &[2, 3]);
    let l = c.raft_mut(1).expect("up");
    let mut taken = 0;
    let refused = loop {
        match l.propose(vec![7u8; 30].into()) {
            Ok(_) => taken += 1,
            Err(e) => break e,
        }
        assert!(taken < 10, "the bound was never enforced");
    };
    assert_eq!(taken, 3, "30-byte entries: a fourth would make 120 > 100");
    assert_eq!(refused, ProposeError::UncommittedLimit { limit: 100 });
    assert_eq!(l.uncommitted_bytes(), 90);
    c.heal();
    let r = c.process(1).and_then(|_| c.run_ticks(5, |_| Ok(())));
    ok(&mut c, r);
    assert_eq!(c.leader(), Some(1));
    assert_eq!(
        node(&c, 1).uncommitted_bytes(),
        0,
        "committed entries leave the budget"
    );
    assert!(
        c.propose(1, &[1; 30]).is_some(),
        "proposals are taken again"
    );
}
