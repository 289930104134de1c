//! The real-process harness shared by the multi-process tests (`tests/cluster.rs`,
//! `tests/membership.rs`): clusters of the built `raft_client` binary on 127.0.0.1, waits that
//! poll a condition with a generous bound, and a Drop guard that kills every child.
// Each test crate uses a different subset of the helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustyraft::pb;
use rustyraft::pb::chat_service_client::ChatServiceClient;
use rustyraft::pb::cluster_client::ClusterClient;
use tonic::transport::Channel;
use tonic::Code;

/// The node binary under test: Cargo's build, or another build of the same code (CI runs these
/// tests again on the Bazel-built binary) named by `RUSTYRAFT_NODE_BIN`.
pub fn bin() -> String {
    std::env::var("RUSTYRAFT_NODE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_raft_client").into())
}
/// Upper bound for any awaited condition; generous because CI machines are small and shared.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub struct Node {
    pub id: u64,
    pub addr: String,
    /// Where its peer `Raft` service listens (a port of its own, never the client port).
    pub peer_addr: String,
    pub child: Option<Child>,
    /// Started with `--join` (these addresses) instead of the initial peer list.
    pub join: Option<String>,
}

/// A local cluster; kills every child on drop.
pub struct Cluster {
    pub nodes: BTreeMap<u64, Node>,
    pub peers: String,
    pub dir: tempfile::TempDir,
    pub extra: Vec<String>,
    /// Nodes started with `--http-addr` (metrics, health), by id.
    pub http: BTreeMap<u64, String>,
}

impl Cluster {
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        Self::start_inner(n, extra, true, false)
    }

    /// Like [`Cluster::start`]; `secret: false` gives the nodes no cluster secret (for a test
    /// of another peer authentication, mutual TLS).
    pub fn start_with(n: u64, extra: &[&str], secret: bool) -> Cluster {
        Self::start_inner(n, extra, secret, false)
    }

    /// Like [`Cluster::start`], each node also serving `/metrics` on an HTTP port of its own
    /// (`Cluster::http`).
    pub fn start_with_http(n: u64, extra: &[&str]) -> Cluster {
        Self::start_inner(n, extra, true, true)
    }

    /// Like [`Cluster::start`] without starting any node: the data directories can be seeded
    /// first (`raft_client restore`), then each node started with [`Cluster::spawn`].
    pub fn prepare(n: u64, extra: &[&str]) -> Cluster {
        Self::build(n, extra, true, false)
    }

    fn start_inner(n: u64, extra: &[&str], secret: bool, with_http: bool) -> Cluster {
        let mut c = Self::build(n, extra, secret, with_http);
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    fn build(n: u64, extra: &[&str], secret: bool, with_http: bool) -> Cluster {
        let nodes: BTreeMap<u64, Node> = (1..=n)
            .map(|id| {
                (
                    id,
                    Node {
                        id,
                        addr: format!("127.0.0.1:{}", free_port()),
                        peer_addr: format!("127.0.0.1:{}", free_port()),
                        child: None,
                        join: None,
                    },
                )
            })
            .collect();
        let peers = nodes
            .values()
            .map(|n| format!("{}={}@{}", n.id, n.addr, n.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        let dir = tempfile::tempdir().unwrap();
        // Peer authentication is on, as in every cluster the project's tools create: a fresh
        // secret, given to every node (joiners too).
        let mut base = Vec::new();
        if secret {
            let secret = dir.path().join("cluster.secret");
            std::fs::write(&secret, format!("test-secret-{}\n", uuid::Uuid::new_v4())).unwrap();
            base.extend([
                "--cluster-secret-file".to_string(),
                secret.display().to_string(),
            ]);
        }
        base.extend(extra.iter().map(|s| s.to_string()));
        let http = if with_http {
            (1..=n)
                .map(|id| (id, format!("127.0.0.1:{}", free_port())))
                .collect()
        } else {
            BTreeMap::new()
        };
        Cluster {
            nodes,
            peers,
            dir,
            extra: base,
            http,
        }
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn spawn(&mut self, id: u64) {
        let data_dir = self.data_dir(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .unwrap();
        let node = self.nodes.get_mut(&id).unwrap();
        let members = match &node.join {
            Some(targets) => vec!["--join".to_string(), targets.clone()],
            None => vec![self.peers.clone()],
        };
        let child = Command::new(bin())
            .arg("run")
            .arg(id.to_string())
            .arg(&node.addr)
            .arg("--peer-addr")
            .arg(&node.peer_addr)
            .args(&members)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&self.extra)
            .args(
                self.http
                    .get(&id)
                    .map(|h| vec!["--http-addr".to_string(), h.clone()])
                    .unwrap_or_default(),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// Starts a fresh node `id` that joins the cluster through the live nodes (`run --join`),
    /// with `extra` arguments (e.g. `--learner`).
    pub fn spawn_joining(&mut self, id: u64, extra: &[&str]) {
        let targets = self.live_addrs();
        self.nodes.insert(
            id,
            Node {
                id,
                addr: format!("127.0.0.1:{}", free_port()),
                peer_addr: format!("127.0.0.1:{}", free_port()),
                child: None,
                join: Some(targets),
            },
        );
        let saved = std::mem::take(&mut self.extra);
        self.extra = saved
            .iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
        self.spawn(id);
        self.extra = saved;
    }

    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.get_mut(&id).unwrap().child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    pub fn live(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    pub fn live_addrs(&self) -> String {
        self.live()
            .iter()
            .map(|&id| self.addr(id))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every live node reports the same leader, which is live and says it leads.
    pub async fn leader(&self) -> u64 {
        let live = self.live();
        wait_for("a leader agreed by every live node", || async {
            let mut leader = None;
            for &id in &live {
                let s = status(&self.addr(id)).await.ok()?;
                if s.leader_id == 0 || !live.contains(&s.leader_id) {
                    return None;
                }
                if *leader.get_or_insert(s.leader_id) != s.leader_id {
                    return None;
                }
            }
            let l = leader?;
            let s = status(&self.addr(l)).await.ok()?;
            (s.role == pb::Role::Leader as i32).then_some(l)
        })
        .await
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for id in self.nodes.keys() {
            let p = self.dir.path().join(format!("node-{id}.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- node {id} (last lines) ---\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill9(id);
        }
    }
}

pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(15))
        .connect_lazy()
}

pub fn chat(addr: &str) -> ChatServiceClient<Channel> {
    ChatServiceClient::new(channel(addr))
}

pub async fn status(addr: &str) -> Result<pb::StatusResponse, tonic::Status> {
    Ok(ClusterClient::new(channel(addr))
        .status(pb::StatusRequest {})
        .await?
        .into_inner())
}

pub async fn send_to(
    addr: &str,
    room: &str,
    text: &str,
    id: &str,
) -> Result<pb::Message, tonic::Status> {
    let r = chat(addr)
        .send_message(pb::SendMessageRequest {
            room: room.into(),
            author: "tester".into(),
            text: text.into(),
            client_request_id: id.into(),
        })
        .await?;
    Ok(r.into_inner().message.unwrap())
}

/// Sends through any of the given nodes, failing over like a real client, with one request id.
pub async fn send_any(addrs: &str, room: &str, text: &str, id: &str) -> pb::Message {
    let mut c = rustyraft::client::Client::new(addrs).unwrap();
    c.send(room, "tester", text, Some(id.to_string()))
        .await
        .unwrap_or_else(|e| panic!("send {id} failed: {e}"))
}

/// The whole room as seen locally by one node (SEQUENTIAL), once `min_index` is applied there.
pub async fn local_history(addr: &str, room: &str, min_index: u64) -> Option<Vec<pb::Message>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let r = chat(addr)
            .get_history(pb::GetHistoryRequest {
                room: room.into(),
                from_seq: 1,
                limit: 1000,
                reverse: false,
                page_token: token.clone(),
                consistency: pb::Consistency::Sequential as i32,
                min_index,
            })
            .await
            .ok()?
            .into_inner();
        out.extend(r.messages);
        if r.next_page_token.is_empty() {
            return Some(out);
        }
        token = r.next_page_token;
    }
}

pub fn key(m: &pb::Message) -> (u64, u64, String, String) {
    (m.seq, m.index, m.id.clone(), m.text.clone())
}

/// Waits until every live node holds exactly `expected` (same seq, index, id, text) in `room`.
pub async fn assert_same_everywhere(c: &Cluster, room: &str, expected: &[pb::Message]) {
    let want: Vec<_> = expected.iter().map(key).collect();
    let min_index = expected.iter().map(|m| m.index).max().unwrap_or(0);
    for id in c.live() {
        let addr = c.addr(id);
        let got = wait_for(&format!("node {id} to apply index {min_index}"), || {
            local_history(&addr, room, min_index)
        })
        .await;
        let got: Vec<_> = got.iter().map(key).collect();
        assert_eq!(got, want, "node {id} disagrees on room {room}");
    }
}

/// Collects a Subscribe stream in the background.
pub fn subscribe_collect(addr: &str, room: &str) -> Arc<Mutex<Vec<pb::Message>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let mut client = chat(addr);
    let room = room.to_string();
    tokio::spawn(async move {
        let mut stream = client
            .subscribe(pb::SubscribeRequest { room, from_seq: 1 })
            .await
            .unwrap()
            .into_inner();
        while let Ok(Some(m)) = stream.message().await {
            out.lock().unwrap().push(m);
        }
    });
    seen
}

pub fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}
