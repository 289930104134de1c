//! The bad-input matrix: every RPC of `ChatService` and `Cluster`, called with empty, oversized
//! and malformed input, unknown ids and rooms, and wrong credentials, against a real 3-node
//! cluster of `raft_client` processes running TLS and client tokens. Each row names the call,
//! who makes it, on which node, and the precise code expected; after the whole table the
//! cluster's state (rooms, history, membership, term, commit index) must be exactly what it
//! was before: a refused call changes nothing.
//!
//! The table is data ([`rows`]): a new service (the peer `Raft` service, once it has its own
//! listener and credentials) adds a `Call` variant, its `invoke` arm, and rows.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustyraft::pb;
use rustyraft::pb::chat_service_client::ChatServiceClient;
use rustyraft::pb::cluster_client::ClusterClient;
use rustyraft::tls::Credentials;
use support::{bin, wait_for, Cluster};
use tonic::Code;

/// Who makes a call.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// No `authorization` header.
    Nobody,
    /// A well-formed bearer token that is not in the file.
    Forged,
    /// A user token (`ada`).
    User,
    /// An admin token (`root`).
    Admin,
}

/// Where a call goes: the leader, or a follower (which forwards writes).
#[derive(Clone, Copy, Debug)]
enum At {
    Leader,
    Follower,
}

#[derive(Clone, Debug)]
enum Call {
    Send(pb::SendMessageRequest),
    SendStream(pb::SendMessageRequest),
    History(pb::GetHistoryRequest),
    Subscribe(pb::SubscribeRequest),
    Chat(pb::ChatRequest),
    ListRooms(pb::ListRoomsRequest),
    CreateRoom(pb::CreateRoomRequest),
    Status,
    AddMember(pb::AddMemberRequest),
    Promote(u64),
    Remove(u64),
    Transfer(u64),
    Snapshot,
    Backup,
}

struct Row {
    what: &'static str,
    who: Who,
    at: At,
    call: Call,
    want: Code,
}

fn send(room: &str, author: &str, text: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        room: room.into(),
        author: author.into(),
        text: text.into(),
        client_request_id: String::new(),
    }
}

fn history(room: &str) -> pb::GetHistoryRequest {
    pb::GetHistoryRequest {
        room: room.into(),
        ..Default::default()
    }
}

/// The matrix. Rows are grouped by RPC; every RPC has at least its credential rows.
fn rows() -> Vec<Row> {
    use At::*;
    use Call::*;
    use Who::*;
    let big = "x".repeat(70 * 1024);
    let long_room = "r".repeat(300);
    let r = |what, who, at, call, want| Row {
        what,
        who,
        at,
        call,
        want,
    };
    vec![
        // SendMessage
        r(
            "send without token",
            Nobody,
            Follower,
            Send(send("general", "", "hi")),
            Code::Unauthenticated,
        ),
        r(
            "send with forged token",
            Forged,
            Leader,
            Send(send("general", "", "hi")),
            Code::Unauthenticated,
        ),
        r(
            "send as another author",
            User,
            Follower,
            Send(send("general", "root", "hi")),
            Code::PermissionDenied,
        ),
        r(
            "send as another author at leader",
            User,
            Leader,
            Send(send("general", "bob", "hi")),
            Code::PermissionDenied,
        ),
        r(
            "send empty room",
            User,
            Leader,
            Send(send("", "", "hi")),
            Code::InvalidArgument,
        ),
        r(
            "send empty text",
            User,
            Follower,
            Send(send("general", "", "")),
            Code::InvalidArgument,
        ),
        r(
            "send oversized text",
            User,
            Follower,
            Send(send("general", "", &big)),
            Code::InvalidArgument,
        ),
        r(
            "send bad room name",
            User,
            Leader,
            Send(send(&long_room, "", "hi")),
            Code::InvalidArgument,
        ),
        // SendStream (errors arrive per send)
        r(
            "stream without token",
            Nobody,
            Leader,
            SendStream(send("general", "", "hi")),
            Code::Unauthenticated,
        ),
        r(
            "stream forged author",
            User,
            Follower,
            SendStream(send("general", "root", "hi")),
            Code::PermissionDenied,
        ),
        r(
            "stream empty text",
            User,
            Leader,
            SendStream(send("general", "", "")),
            Code::InvalidArgument,
        ),
        // GetHistory
        r(
            "history without token",
            Nobody,
            Leader,
            History(history("general")),
            Code::Unauthenticated,
        ),
        r(
            "history forged token",
            Forged,
            Follower,
            History(history("general")),
            Code::Unauthenticated,
        ),
        r(
            "history empty room",
            User,
            Leader,
            History(history("")),
            Code::InvalidArgument,
        ),
        r(
            "history unknown room",
            User,
            Follower,
            History(history("nowhere")),
            Code::NotFound,
        ),
        r(
            "history bad page token",
            User,
            Leader,
            History(pb::GetHistoryRequest {
                page_token: "%%%garbage".into(),
                ..history("general")
            }),
            Code::InvalidArgument,
        ),
        r(
            "history unknown consistency",
            User,
            Follower,
            History(pb::GetHistoryRequest {
                consistency: 99,
                ..history("general")
            }),
            Code::InvalidArgument,
        ),
        // Subscribe
        r(
            "subscribe without token",
            Nobody,
            Follower,
            Subscribe(pb::SubscribeRequest {
                room: "general".into(),
                from_seq: 1,
            }),
            Code::Unauthenticated,
        ),
        r(
            "subscribe empty room",
            User,
            Leader,
            Subscribe(pb::SubscribeRequest {
                room: String::new(),
                from_seq: 1,
            }),
            Code::InvalidArgument,
        ),
        // Chat
        r(
            "chat without token",
            Nobody,
            Leader,
            Chat(pb::ChatRequest {
                room: "general".into(),
                ..Default::default()
            }),
            Code::Unauthenticated,
        ),
        r(
            "chat empty room",
            User,
            Follower,
            Chat(pb::ChatRequest::default()),
            Code::InvalidArgument,
        ),
        // ListRooms
        r(
            "list rooms without token",
            Nobody,
            Follower,
            ListRooms(pb::ListRoomsRequest::default()),
            Code::Unauthenticated,
        ),
        r(
            "list rooms bad page token",
            User,
            Leader,
            ListRooms(pb::ListRoomsRequest {
                limit: 0,
                page_token: "%%%".into(),
            }),
            Code::InvalidArgument,
        ),
        // CreateRoom
        r(
            "create room without token",
            Nobody,
            Leader,
            CreateRoom(pb::CreateRoomRequest { room: "new".into() }),
            Code::Unauthenticated,
        ),
        r(
            "create room forged token",
            Forged,
            Follower,
            CreateRoom(pb::CreateRoomRequest { room: "new".into() }),
            Code::Unauthenticated,
        ),
        r(
            "create room empty",
            User,
            Follower,
            CreateRoom(pb::CreateRoomRequest {
                room: String::new(),
            }),
            Code::InvalidArgument,
        ),
        r(
            "create room too long",
            User,
            Leader,
            CreateRoom(pb::CreateRoomRequest {
                room: long_room.clone(),
            }),
            Code::InvalidArgument,
        ),
        // Status
        r(
            "status without token",
            Nobody,
            Follower,
            Status,
            Code::Unauthenticated,
        ),
        r(
            "status forged token",
            Forged,
            Leader,
            Status,
            Code::Unauthenticated,
        ),
        // AddMember
        r(
            "add member without token",
            Nobody,
            Leader,
            AddMember(pb::AddMemberRequest {
                id: 9,
                addr: "127.0.0.1:1".into(),
                learner: true,
                ..Default::default()
            }),
            Code::Unauthenticated,
        ),
        r(
            "add member as user",
            User,
            Leader,
            AddMember(pb::AddMemberRequest {
                id: 9,
                addr: "127.0.0.1:1".into(),
                learner: true,
                ..Default::default()
            }),
            Code::PermissionDenied,
        ),
        r(
            "add member id 0",
            Admin,
            Leader,
            AddMember(pb::AddMemberRequest {
                id: 0,
                addr: "127.0.0.1:1".into(),
                learner: true,
                ..Default::default()
            }),
            Code::InvalidArgument,
        ),
        r(
            "add member bad address",
            Admin,
            Leader,
            AddMember(pb::AddMemberRequest {
                id: 9,
                addr: "no port".into(),
                learner: true,
                ..Default::default()
            }),
            Code::InvalidArgument,
        ),
        r(
            "add member empty address",
            Admin,
            Leader,
            AddMember(pb::AddMemberRequest {
                id: 9,
                addr: String::new(),
                learner: true,
                ..Default::default()
            }),
            Code::InvalidArgument,
        ),
        // PromoteLearner
        r(
            "promote as user",
            User,
            Leader,
            Promote(9),
            Code::PermissionDenied,
        ),
        r(
            "promote without token",
            Nobody,
            Leader,
            Promote(9),
            Code::Unauthenticated,
        ),
        r(
            "promote id 0",
            Admin,
            Leader,
            Promote(0),
            Code::InvalidArgument,
        ),
        r(
            "promote unknown id",
            Admin,
            Leader,
            Promote(42),
            Code::NotFound,
        ),
        // RemoveMember
        r(
            "remove as user",
            User,
            Leader,
            Remove(1),
            Code::PermissionDenied,
        ),
        r(
            "remove forged token",
            Forged,
            Leader,
            Remove(1),
            Code::Unauthenticated,
        ),
        r(
            "remove id 0",
            Admin,
            Leader,
            Remove(0),
            Code::InvalidArgument,
        ),
        r(
            "remove unknown id",
            Admin,
            Leader,
            Remove(42),
            Code::NotFound,
        ),
        // TransferLeader
        r(
            "transfer as user",
            User,
            Leader,
            Transfer(0),
            Code::PermissionDenied,
        ),
        r(
            "transfer without token",
            Nobody,
            Follower,
            Transfer(0),
            Code::Unauthenticated,
        ),
        // Snapshot
        r(
            "snapshot as user",
            User,
            Leader,
            Snapshot,
            Code::PermissionDenied,
        ),
        r(
            "snapshot without token",
            Nobody,
            Leader,
            Snapshot,
            Code::Unauthenticated,
        ),
        // Backup
        r(
            "backup as user",
            User,
            Follower,
            Backup,
            Code::PermissionDenied,
        ),
        r(
            "backup without token",
            Nobody,
            Leader,
            Backup,
            Code::Unauthenticated,
        ),
        r("backup as admin", Admin, Follower, Backup, Code::Ok),
    ]
}

struct Env {
    cluster: Cluster,
    ca: PathBuf,
    user: String,
    admin: String,
}

impl Env {
    fn creds(&self, who: Who) -> Credentials {
        let c = Credentials::plain().with_ca(&self.ca).unwrap();
        match who {
            Who::Nobody => c,
            Who::Forged => c.with_token(&format!("rr_{}", "0".repeat(64))).unwrap(),
            Who::User => c.with_token(&self.user).unwrap(),
            Who::Admin => c.with_token(&self.admin).unwrap(),
        }
    }

    fn channel(&self, addr: &str) -> tonic::transport::Channel {
        self.creds(Who::Nobody)
            .endpoint(addr)
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(15))
            .connect_lazy()
    }

    fn chat(&self, addr: &str, who: Who) -> ChatServiceClient<rustyraft::client::AuthChannel> {
        ChatServiceClient::with_interceptor(self.channel(addr), self.creds(who))
    }

    fn admin(&self, addr: &str, who: Who) -> ClusterClient<rustyraft::client::AuthChannel> {
        ClusterClient::with_interceptor(self.channel(addr), self.creds(who))
    }

    async fn leader(&self) -> (String, String) {
        let addrs: Vec<String> = self
            .cluster
            .live()
            .iter()
            .map(|&i| self.cluster.addr(i))
            .collect();
        wait_for("a leader over TLS", || async {
            for a in &addrs {
                let s = self
                    .admin(a, Who::User)
                    .status(pb::StatusRequest {})
                    .await
                    .ok()?
                    .into_inner();
                if s.role == pb::Role::Leader as i32 {
                    let follower = addrs.iter().find(|x| **x != *a)?.clone();
                    return Some((a.clone(), follower));
                }
            }
            None
        })
        .await
    }

    /// Everything a refused call must leave alone, read through the leader.
    async fn state(&self, leader: &str) -> String {
        let rooms = self
            .chat(leader, Who::Admin)
            .list_rooms(pb::ListRoomsRequest::default())
            .await
            .unwrap()
            .into_inner();
        let hist = self
            .chat(leader, Who::Admin)
            .get_history(history("general"))
            .await
            .unwrap()
            .into_inner();
        let s = self
            .admin(leader, Who::Admin)
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        format!(
            "rooms={:?}\nhistory={:?}\nterm={} leader={} voters={:?} learners={:?} commit={} last={}",
            rooms.rooms, hist.messages, s.term, s.leader_id, s.voters, s.learners, s.commit_index, s.last_index
        )
    }

    async fn invoke(&self, row: &Row, leader: &str, follower: &str) -> Result<(), tonic::Status> {
        let addr = match row.at {
            At::Leader => leader,
            At::Follower => follower,
        };
        let (mut chat, mut admin) = (self.chat(addr, row.who), self.admin(addr, row.who));
        match row.call.clone() {
            Call::Send(r) => chat.send_message(r).await.map(drop),
            Call::SendStream(r) => {
                let req = tokio_stream::iter(vec![pb::SendStreamRequest {
                    tag: 1,
                    send: Some(r),
                }]);
                let mut answers = chat.send_stream(req).await?.into_inner();
                let a = answers
                    .message()
                    .await?
                    .ok_or_else(|| tonic::Status::internal("no answer"))?;
                match a.error {
                    Some(e) => Err(tonic::Status::new(Code::from(e.code), e.message)),
                    None => Ok(()),
                }
            }
            Call::History(r) => chat.get_history(r).await.map(drop),
            Call::Subscribe(r) => chat.subscribe(r).await.map(drop),
            Call::Chat(r) => {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tx.send(r).await.unwrap();
                let res = chat
                    .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .map(drop);
                drop(tx);
                res
            }
            Call::ListRooms(r) => chat.list_rooms(r).await.map(drop),
            Call::CreateRoom(r) => chat.create_room(r).await.map(drop),
            Call::Status => admin.status(pb::StatusRequest {}).await.map(drop),
            Call::AddMember(r) => admin.add_member(r).await.map(drop),
            Call::Promote(id) => admin
                .promote_learner(pb::PromoteLearnerRequest { id })
                .await
                .map(drop),
            Call::Remove(id) => admin
                .remove_member(pb::RemoveMemberRequest { id })
                .await
                .map(drop),
            Call::Transfer(id) => admin
                .transfer_leader(pb::TransferLeaderRequest { id })
                .await
                .map(drop),
            Call::Snapshot => admin.snapshot(pb::SnapshotRequest {}).await.map(drop),
            Call::Backup => match admin.backup(pb::BackupRequest {}).await {
                // Read the whole stream: an error may come after the headers.
                Ok(r) => {
                    let mut stream = r.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(_)) => {}
                            Ok(None) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    }
                }
                Err(e) => Err(e),
            },
        }
    }
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "raft_client {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn token(file: &Path, user: &str, admin: bool) -> String {
    let f = file.to_str().unwrap();
    let mut args = vec!["token", "add", "--file", f, "--user", user];
    if admin {
        args.push("--admin");
    }
    cli(&args).trim().to_string()
}

/// A TLS + token cluster: certificates and tokens made with the CLI, one leaf for every node
/// (they all listen on 127.0.0.1).
fn start_secure(dir: &Path) -> Env {
    let d = dir.to_str().unwrap();
    cli(&["certs", "init", "--dir", d]);
    cli(&[
        "certs",
        "issue",
        "--dir",
        d,
        "--name",
        "node",
        "--host",
        "127.0.0.1",
        "--host",
        "localhost",
    ]);
    let tokens = dir.join("tokens");
    let user = token(&tokens, "ada", false);
    let admin = token(&tokens, "root", true);
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let extra = [
        "--ca".to_string(),
        p("ca.pem"),
        "--tls-cert".into(),
        p("node.pem"),
        "--tls-key".into(),
        p("node.key"),
        "--client-tokens".into(),
        p("tokens"),
    ];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Env {
        cluster: Cluster::start(3, &extra),
        ca: dir.join("ca.pem"),
        user,
        admin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bad_input_gets_its_precise_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = start_secure(dir.path());
    let (leader, follower) = env.leader().await;

    // Seed: a send through a follower with an empty author is stored as the token's user
    // (the forward to the leader carried the client's credentials).
    let m = env
        .chat(&follower, Who::User)
        .send_message(send("general", "", "hello"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.message.unwrap().author, "ada");
    let m = env
        .chat(&leader, Who::Admin)
        .send_message(send("general", "root", "hi"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.message.unwrap().author, "root");

    let before = env.state(&leader).await;
    let mut wrong = Vec::new();
    for row in rows() {
        let got = env.invoke(&row, &leader, &follower).await;
        let code = got.as_ref().err().map_or(Code::Ok, |s| s.code());
        if code != row.want {
            wrong.push(format!(
                "{} ({:?} at {:?}): want {:?}, got {got:?}",
                row.what, row.who, row.at, row.want
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} rows wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let after = env.state(&leader).await;
    assert_eq!(before, after, "a refused call changed the cluster");
}

/// Open reads, health and reflection need no token; a revoked token stops working on the
/// next call (the node re-reads the file), and a rotated one replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_and_rotation_take_effect_on_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let env = start_secure(dir.path());
    let (leader, _) = env.leader().await;
    let tokens = dir.path().join("tokens");
    let f = tokens.to_str().unwrap();

    env.chat(&leader, Who::User)
        .send_message(send("general", "", "before"))
        .await
        .unwrap();
    cli(&["token", "revoke", "--file", f, "--user", "ada"]);
    let st = env
        .chat(&leader, Who::User)
        .send_message(send("general", "", "after"))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");

    let old_admin = env.admin.clone();
    let new_admin = cli(&["token", "rotate", "--file", f, "--user", "root"])
        .trim()
        .to_string();
    let st = env
        .admin(&leader, Who::Admin)
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        st.code(),
        Code::Unauthenticated,
        "the old admin token still works"
    );
    let c = Credentials::plain()
        .with_ca(&env.ca)
        .unwrap()
        .with_token(&new_admin)
        .unwrap();
    assert_ne!(old_admin, new_admin);
    ClusterClient::with_interceptor(env.channel(&leader), c)
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap();

    // Health needs no token, over TLS.
    let ok = rustyraft::client::health_check(
        &leader,
        Credentials::plain().with_ca(&env.ca).unwrap(),
        "",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(ok);
    // Plaintext reaches no client service on a TLS node.
    let st = support::chat(&leader)
        .list_rooms(pb::ListRoomsRequest::default())
        .await
        .unwrap_err();
    assert_ne!(st.code(), Code::Ok);
}

/// `--open-reads`: reads need no token, writes still do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_reads_leave_writes_closed() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let user = token(&tokens, "ada", false);
    let t = tokens.to_str().unwrap().to_string();
    let cluster = Cluster::start(1, &["--client-tokens", &t, "--open-reads"]);
    let addr = cluster.addr(1);
    let plain = Credentials::plain();
    let with = Credentials::plain().with_token(&user).unwrap();
    let ep = || plain.endpoint(&addr).unwrap().connect_lazy();
    wait_for("a leader", || async {
        ClusterClient::with_interceptor(ep(), with.clone())
            .status(pb::StatusRequest {})
            .await
            .ok()
            .filter(|s| s.get_ref().leader_id == 1)
    })
    .await;
    ChatServiceClient::with_interceptor(ep(), with.clone())
        .send_message(send("general", "", "x"))
        .await
        .unwrap();
    let h = ChatServiceClient::new(ep())
        .get_history(history("general"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.messages[0].author, "ada");
    ChatServiceClient::new(ep())
        .list_rooms(pb::ListRoomsRequest::default())
        .await
        .unwrap();
    let st = ChatServiceClient::new(ep())
        .send_message(send("general", "ada", "x"))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated);
}
