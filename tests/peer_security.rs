//! Only cluster members speak Raft: forged peer messages change nothing.
//!
//! The attack (found by trying it): a forged AppendEntries with a high term, sent without
//! credentials to a node's client port, moved the whole cluster's term and appended a forged
//! entry. Now the client port does not serve the `Raft` service at all, and the peer port
//! refuses calls without valid credentials; a member's credentials on a stale message get the
//! treatment Raft gives any stale message.

mod support;

use std::time::Duration;

use rustyraft::pb;
use rustyraft::pb::raft_client::RaftClient;
use rustyraft::transport::{PeerAuth, PEER_AUTH_METADATA};
use support::*;
use tonic::Code;

fn header(from: u64, to: u64, term: u64) -> Option<pb::PeerHeader> {
    Some(pb::PeerHeader {
        cluster_id: "rustyraft".into(),
        from,
        to,
        term,
    })
}

/// The reproduction of the report: a high-term AppendEntries carrying an entry.
fn forged_append(from: u64, to: u64, term: u64, at: u64) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        header: header(from, to, term),
        prev_log_index: at - 1,
        prev_log_term: 1000,
        leader_commit: at,
        entries: vec![pb::Entry {
            index: at,
            term,
            kind: pb::EntryKind::Normal as i32,
            data: b"garbage".to_vec().into(),
        }],
        ..Default::default()
    }
}

fn forged_vote(from: u64, to: u64, term: u64) -> pb::RequestVoteRequest {
    pb::RequestVoteRequest {
        header: header(from, to, term),
        pre_vote: false,
        last_log_index: 1 << 40,
        last_log_term: term,
        transfer: true,
    }
}

fn signed<T>(t: T, auth: &PeerAuth, from: u64, to: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(t);
    r.metadata_mut()
        .insert(PEER_AUTH_METADATA, auth.sign(from, to));
    r
}

/// What must not move: every node's term, last index and commit index, and the leader.
async fn fingerprint(c: &Cluster) -> Vec<(u64, u64, u64, u64)> {
    let mut out = Vec::new();
    for id in c.live() {
        let s = status(&c.addr(id)).await.expect("status");
        out.push((s.term, s.last_index, s.commit_index, s.leader_id));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_raft_messages_change_no_term_no_log_on_any_port() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let m = send_any(&c.live_addrs(), "r", "before", "forge-1").await;
    // Let every node catch up, so the fingerprint is stable.
    let addrs = c.live_addrs();
    wait_for("every node to apply the send", || {
        let addrs = addrs.clone();
        async move {
            for a in addrs.split(',') {
                local_history(a, "r", m.index).await?;
            }
            Some(())
        }
    })
    .await;
    let before = fingerprint(&c).await;
    let term = before[0].0;

    let secret = std::fs::read_to_string(c.dir.path().join("cluster.secret")).unwrap();
    let member = PeerAuth::new("rustyraft", &[secret]).unwrap();
    let stranger = PeerAuth::new("rustyraft", &["not-the-cluster-secret-0123".into()]).unwrap();
    for id in c.live() {
        let (client, peer) = (c.addr(id), c.nodes[&id].peer_addr.clone());
        // 1. The client port does not serve the Raft service at all.
        let mut r = RaftClient::new(channel(&client));
        assert_eq!(
            code(r.append_entries(forged_append(9, id, 5000, 3)).await),
            Code::Unimplemented,
            "node {id}'s client port"
        );
        assert_eq!(
            code(r.request_vote(forged_vote(9, id, 5000)).await),
            Code::Unimplemented
        );
        // 2. The peer port refuses calls without credentials, or signed with another secret.
        let mut p = RaftClient::new(channel(&peer));
        assert_eq!(
            code(p.append_entries(forged_append(9, id, 5000, 3)).await),
            Code::Unauthenticated,
            "node {id}'s peer port, no credentials"
        );
        assert_eq!(
            code(p.request_vote(forged_vote(9, id, 5000)).await),
            Code::Unauthenticated
        );
        let from = if id == leader { 1 + id % 3 } else { leader };
        assert_eq!(
            code(
                p.append_entries(signed(
                    forged_append(from, id, 5000, 3),
                    &stranger,
                    from,
                    id
                ))
                .await
            ),
            Code::Unauthenticated,
            "node {id}'s peer port, wrong secret"
        );
        // Credentials of one member cannot carry another's messages.
        let other = (1..=3).find(|&o| o != id && o != from).unwrap();
        assert_eq!(
            code(
                p.append_entries(signed(forged_append(from, id, 5000, 3), &member, other, id))
                    .await
            ),
            Code::PermissionDenied,
            "node {id}: node {other}'s credentials naming node {from}"
        );
        // 3. A member's valid credentials on a stale-term message: delivered, and ignored as
        //    Raft ignores any message from an old term.
        let stale = term.saturating_sub(1);
        assert!(
            p.append_entries(signed(forged_append(from, id, stale, 2), &member, from, id))
                .await
                .is_ok(),
            "a member's call is accepted by the transport"
        );
        assert!(p
            .request_vote(signed(forged_vote(from, id, stale), &member, from, id))
            .await
            .is_ok());
    }
    // Give a wrongly accepted message time to show.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = fingerprint(&c).await;
    assert_eq!(before, after, "(term, last, commit, leader) per node moved");
    // And the log is what it was: one message, no garbage applied anywhere.
    for a in c.live_addrs().split(',') {
        let h = local_history(a, "r", 0).await.expect("history");
        assert_eq!(h.len(), 1, "{a}: {h:?}");
    }
}

/// A new node gets the cluster's secret through a join token printed from a member's data
/// directory, joins, votes, and keeps the secret for its restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_lets_a_new_node_in() {
    let mut c = Cluster::start(3, &[]);
    c.leader().await;
    let out = std::process::Command::new(bin())
        .args(["cluster", "join-token", "--data-dir"])
        .arg(c.data_dir(1))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("rrj1."), "{token}");

    // Joiners get no secret file: only what their token carries.
    let with_secret = std::mem::take(&mut c.extra);
    c.spawn_joining(4, &["--join-token", &token]);
    c.extra = with_secret;
    let addr = c.addr(c.leader().await);
    wait_for("node 4 to become a voter", || {
        let addr = addr.clone();
        async move {
            let s = status(&addr).await.ok()?;
            s.voters.contains(&4).then_some(())
        }
    })
    .await;
    let kept = std::fs::read_to_string(c.data_dir(4).join("cluster.secret")).unwrap();
    let original = std::fs::read_to_string(c.dir.path().join("cluster.secret")).unwrap();
    assert_eq!(kept.trim(), original.trim());
    // The new voter counts: with one of the original three down, 4 and two more commit, and
    // node 4 restarts on the kept secret without any flag.
    c.kill9(1);
    c.kill9(4);
    c.spawn(4);
    send_any(&c.live_addrs(), "r", "after the join", "join-1").await;
}

/// Every TCP port the given processes listen on, read from /proc (no tool needed): the
/// listening sockets of /proc/net/tcp{,6} whose inode is among the processes' open fds.
fn listening_ports(pids: &[u32]) -> Vec<u16> {
    let mut inodes = std::collections::BTreeSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let link = std::fs::read_link(fd.path()).unwrap_or_default();
            let link = link.to_string_lossy();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "HEXIP:HEXPORT"; state 0A is LISTEN; field 9 is the inode.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                if let Some(port) = f[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The pids of a process and its children (the launcher and its nodes).
fn family(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Field 4 of /proc/<pid>/stat is the parent pid (after the parenthesised name).
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(root) {
            pids.push(pid);
        }
    }
    pids
}

/// The reproduction against a `run_n_clients 3` cluster: forged AppendEntries and RequestVote
/// without credentials to EVERY port the launcher and its nodes listen on (client ports, peer
/// ports, the launcher's link proxies) are refused, and no term or log moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_messages_to_every_port_of_a_launcher_cluster_change_nothing() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_range();
    let mut launcher = std::process::Command::new(env!("CARGO_BIN_EXE_run_n_clients"))
        .arg("3")
        .args(["--base-port", &base.to_string(), "--data-dir"])
        .arg(dir.path())
        .args(["--bin", env!("CARGO_BIN_EXE_raft_client")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = launcher.stdout.take().unwrap();
    let launcher = Kill(launcher);
    let mut lines = std::io::BufReader::new(stdout).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.starts_with("== leader"))),
        "the launcher's cluster elects a leader"
    );
    let addrs: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let all = addrs.join(",");
    send_any(&all, "r", "before", "launcher-forge-1").await;
    let fingerprint = || async {
        let mut out = Vec::new();
        for a in &addrs {
            let s = status(a).await.expect("status");
            out.push((s.term, s.last_index, s.commit_index));
        }
        out
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = fingerprint().await;
    let ports = listening_ports(&family(launcher.0.id()));
    // 3 client ports, 3 peer ports, and the launcher's proxies (8 per node).
    assert!(ports.len() >= 3 + 3 + 24, "{ports:?}");
    // Every port at once, each call bounded: a proxy towards a node id that is not running
    // holds the connection until the call gives up.
    let probes = ports.iter().map(|&port| async move {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(3))
            .connect_lazy();
        let mut p = RaftClient::new(ch);
        let mut codes = Vec::new();
        for to in 1..=3 {
            codes.push(code(p.append_entries(forged_append(9, to, 5000, 3)).await));
            codes.push(code(p.request_vote(forged_vote(9, to, 5000)).await));
        }
        (port, codes)
    });
    let (mut unimplemented, mut unauthenticated) = (0, 0);
    for (port, codes) in futures_util::future::join_all(probes).await {
        for c in codes {
            match c {
                Code::Unimplemented => unimplemented += 1,
                Code::Unauthenticated => unauthenticated += 1,
                // A proxy towards a node id that is not running closes or holds the connection.
                Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => {}
                other => panic!("port {port}: a forged call got {other:?}"),
            }
        }
    }
    // Client ports (and the HTTP ports, in gRPC terms) answer UNIMPLEMENTED; peer ports and the proxies to the three live nodes'
    // peer ports (2 per node) answer UNAUTHENTICATED; 2 calls x 3 receivers each.
    assert!(unimplemented >= 3 * 6, "{unimplemented}");
    assert!(unauthenticated >= (3 + 6) * 6, "{unauthenticated}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        before,
        fingerprint().await,
        "(term, last, commit) per node moved"
    );
}

/// A base port with 9 free client ports, their 9 peer ports (+1000) and HTTP ports (+2000).
fn free_port_range() -> u16 {
    for _ in 0..200 {
        let base = 10_000 + fastrand::u16(0..below_ephemeral_ports() - 10_000 - 2_010);
        // Tests of one binary run in parallel: never hand out overlapping ranges.
        let mut picked = PICKED.lock().unwrap_or_else(|p| p.into_inner());
        if picked.iter().any(|&o: &u16| o.abs_diff(base) < 2_100) {
            continue;
        }
        let held: Vec<_> = (0..9)
            .flat_map(|i| [base + i, base + 1000 + i, base + 2000 + i])
            .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if held.iter().all(|l| l.is_ok()) {
            picked.push(base);
            return base;
        }
    }
    panic!("no free port range");
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap()
}

/// A 3-node cluster whose peers authenticate by mutual TLS alone (no secret) and whose clients
/// use TLS: it elects and commits; the peer port refuses plaintext, a client without a
/// certificate and a certificate of another CA; grpcurl works with the CA and fails without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_over_mutual_tls() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path().to_str().unwrap();
    let other = tempfile::tempdir().unwrap();
    let o = other.path().to_str().unwrap();
    for (dir, what) in [(d, "ours"), (o, "another CA")] {
        assert!(
            cli(&["certs", "init", "--dir", dir]).status.success(),
            "{what}"
        );
        let issued = cli(&[
            "certs",
            "issue",
            "--dir",
            dir,
            "--name",
            "node",
            "--host",
            "127.0.0.1",
        ]);
        assert!(issued.status.success(), "{issued:?}");
    }
    let (ca, cert, key) = (
        format!("{d}/ca.pem"),
        format!("{d}/node.pem"),
        format!("{d}/node.key"),
    );
    let tls = [
        "--peer-tls-cert",
        &cert,
        "--peer-tls-key",
        &key,
        "--peer-ca",
        &ca, //
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--ca",
        &ca,
    ];
    let c = Cluster::start_with(3, &tls, false);
    let all = c.live_addrs();
    // Sends fail over until a leader, elected over mutual-TLS peer links, commits them.
    let send = |text: &str| {
        cli(&[
            "send", "--addr", &all, "--ca", &ca, "--room", "r", "--author", "ada", text,
        ])
    };
    let first = send("over mutual TLS");
    assert!(first.status.success(), "{first:?}\n{}", c.logs());
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("seq=1 "),
        "{first:?}"
    );

    let creds_of = |dir: &str, with_identity: bool| {
        let mut t = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(std::fs::read(format!("{d}/ca.pem")).unwrap()),
        );
        if with_identity {
            t = t.identity(tonic::transport::Identity::from_pem(
                std::fs::read(format!("{dir}/node.pem")).unwrap(),
                std::fs::read(format!("{dir}/node.key")).unwrap(),
            ));
        }
        t
    };
    for id in c.live() {
        let peer = c.nodes[&id].peer_addr.clone();
        let plain = code(
            RaftClient::new(channel(&peer))
                .append_entries(forged_append(9, id, 5000, 2))
                .await,
        );
        assert_ne!(plain, Code::Ok, "plaintext to node {id}'s peer port");
        for (what, tls) in [
            ("no certificate", creds_of(d, false)),
            ("another CA", creds_of(o, true)),
        ] {
            let ch = tonic::transport::Endpoint::from_shared(format!("https://{peer}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .connect_lazy();
            let got = code(
                RaftClient::new(ch)
                    .append_entries(forged_append(9, id, 5000, 2))
                    .await,
            );
            assert_ne!(got, Code::Ok, "node {id}'s peer port, {what}");
        }
    }
    // Nothing forged got in: the next message is seq 2.
    let second = send("still consistent");
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("seq=2 "),
        "{second:?}"
    );

    if std::process::Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("RUSTYRAFT_REQUIRE_GRPCURL").is_err(),
            "RUSTYRAFT_REQUIRE_GRPCURL is set but grpcurl is not on PATH"
        );
        eprintln!("SKIPPED the grpcurl part: grpcurl is not on PATH");
        return;
    }
    let addr = c.addr(1);
    let grpcurl = |args: &[&str]| {
        std::process::Command::new("grpcurl")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = grpcurl(&["-cacert", &ca, &addr, "list"]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("rustyraft.v1.ChatService"));
    assert!(
        !grpcurl(&[&addr, "list"]).status.success(),
        "TLS without our CA"
    );
    assert!(
        !grpcurl(&["-plaintext", &addr, "list"]).status.success(),
        "plaintext"
    );
}

/// The first port of the kernel's ephemeral range (where outgoing connections and port-0
/// listeners get their ports). Port ranges picked for nodes stay below it: a range inside it
/// can be taken between the check and the bind by any connection the tests open meanwhile
/// (seen in CI: a node's port was taken that way).
fn below_ephemeral_ports() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
        .max(20_000)
}

/// Port ranges already handed out in this test binary.
static PICKED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
