//! A local cluster of real `raft_client run` processes, wired through per-link fault proxies.
//!
//! Node `i` listens on `127.0.0.1:<base + i - 1>` (clients use these real addresses, and so does
//! the replicated membership). For every ordered pair (i, j) a [`LinkProxy`] forwards i's
//! connections to j, and node i is started with `--route j=<that proxy>`, so it dials peer j
//! through it. Partitions and delays are therefore set on the proxies, from outside, with no
//! hook in the node. Nodes added later (`add`, ids up to [`MAX_NODES`]) join with `--join`; the
//! proxies of a node are created when it first starts, for every possible peer id, so links to
//! nodes that join later are proxied too.
//!
//! Children never outlive the launcher: each gets `PR_SET_PDEATHSIG = SIGKILL` (the kernel kills
//! it if the launcher dies, even by SIGKILL or a panic), `kill_on_drop`, and [`LocalCluster::shutdown`]
//! stops them with SIGTERM, then SIGKILL after a grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::proxy::{LinkMode, LinkProxy};
use crate::pb;
use crate::pb::cluster_client::ClusterClient;

/// Node ids: 1..=n at the start, then the next unused id for each `add`, up to [`MAX_NODES`].
pub type NodeId = u64;

/// Highest node id the launcher manages (ports `base..base+MAX_NODES-1`). Ids are never reused
/// within a run: a removed node's id may still be in some node's old vote records.
pub const MAX_NODES: u64 = 9;

/// How the launcher starts its nodes.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of nodes.
    pub nodes: u64,
    /// Port of node 1; node i gets `base_port + i - 1`.
    pub base_port: u16,
    /// Parent of every node's data dir (`<dir>/node-<id>`).
    pub data_dir: PathBuf,
    /// The `raft_client` binary.
    pub bin: PathBuf,
    /// Extra arguments for every `raft_client run` (timeouts, snapshot threshold).
    pub node_args: Vec<String>,
    /// Where node output goes.
    pub logs: LogSink,
}

/// Where the children's log lines go.
#[derive(Clone, Debug)]
pub enum LogSink {
    /// Our stdout, each line prefixed with the node id (colored on a terminal).
    Prefixed,
    /// `<data_dir>/node-<id>.log`, appended across restarts (chaos runs keep stdout readable).
    Files,
}

/// Launcher errors.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The node binary is missing.
    #[error("node binary {0} not found; build it with `cargo build --release` or pass --bin")]
    NoBinary(PathBuf),
    /// A command named a node that does not exist.
    #[error("no node {0} (nodes are {1})")]
    NoSuchNode(NodeId, String),
    /// Adding or removing a member failed.
    #[error("membership: {0}")]
    Membership(String),
    /// Starting a process or a proxy failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

struct NodeProc {
    child: Option<Child>,
    paused: bool,
    /// Added with `add`: (re)started with `--join` rather than the initial peer list.
    joined: bool,
}

/// What the status poller last saw of a node.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    /// The node's own status, or why it could not be read.
    pub status: Option<pb::StatusResponse>,
    /// Process state as the launcher knows it: "up", "down", "paused".
    pub process: &'static str,
}

/// A running local cluster.
pub struct LocalCluster {
    cfg: ClusterConfig,
    /// The managed nodes (members, as far as the launcher knows).
    procs: BTreeMap<NodeId, NodeProc>,
    /// Highest id ever started; `add` uses the next one.
    last_id: NodeId,
    proxies: BTreeMap<(NodeId, NodeId), LinkProxy>,
    /// Ports of ids not started yet, held open until `add` starts them: otherwise the kernel
    /// may hand one out as the local port of some outgoing connection (they are in the
    /// ephemeral range), and the node could not listen on it.
    reserved: BTreeMap<NodeId, std::net::TcpListener>,
    /// Links currently cut, as (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    delay: Duration,
}

impl LocalCluster {
    /// Starts the proxies and every node.
    pub async fn start(cfg: ClusterConfig) -> Result<LocalCluster, LaunchError> {
        if !cfg.bin.is_file() {
            return Err(LaunchError::NoBinary(cfg.bin.clone()));
        }
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| LaunchError::Io(format!("create {}", cfg.data_dir.display()), e))?;
        let mut c = LocalCluster {
            procs: (1..=cfg.nodes)
                .map(|i| {
                    (
                        i,
                        NodeProc {
                            child: None,
                            paused: false,
                            joined: false,
                        },
                    )
                })
                .collect(),
            last_id: cfg.nodes,
            reserved: (cfg.nodes + 1..=MAX_NODES)
                .filter_map(|j| {
                    std::net::TcpListener::bind(node_addr(&cfg, j))
                        .ok()
                        .map(|l| (j, l))
                })
                .collect(),
            cfg,
            proxies: BTreeMap::new(),
            cut: BTreeSet::new(),
            delay: Duration::ZERO,
        };
        for i in 1..=c.cfg.nodes {
            c.spawn(i).await?;
        }
        Ok(c)
    }

    /// Creates node `i`'s outgoing proxies, one per possible peer id, if not there yet.
    async fn ensure_proxies(&mut self, i: NodeId) -> Result<(), LaunchError> {
        for j in 1..=MAX_NODES {
            if i == j || self.proxies.contains_key(&(i, j)) {
                continue;
            }
            let target = node_addr(&self.cfg, j);
            let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
            // An ephemeral port may fall inside the nodes' port range and take the port of a
            // node that starts later: pick again (a few tries, then accept it).
            let nodes = self.cfg.base_port..self.cfg.base_port.saturating_add(MAX_NODES as u16);
            let mut tries = 0;
            let p = loop {
                let p = LinkProxy::start(any, target)
                    .await
                    .map_err(|e| LaunchError::Io(format!("proxy {i}->{j}"), e))?;
                tries += 1;
                if !nodes.contains(&p.addr().port()) || tries >= 20 {
                    break p;
                }
            };
            self.proxies.insert((i, j), p);
        }
        self.apply_links();
        Ok(())
    }

    /// The managed node ids, in order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.procs.keys().copied().collect()
    }

    /// The highest id in use (commands accept ids up to it).
    pub fn max_id(&self) -> NodeId {
        self.procs.keys().next_back().copied().unwrap_or(0)
    }

    /// The id the next `add` will use, if any is left.
    pub fn next_id(&self) -> Option<NodeId> {
        (self.last_id < MAX_NODES).then_some(self.last_id + 1)
    }

    /// The client-facing address of node `id`.
    pub fn addr(&self, id: NodeId) -> SocketAddr {
        node_addr(&self.cfg, id)
    }

    /// Every client-facing address, comma-separated (what `raft_client --addr` takes).
    pub fn addr_list(&self) -> String {
        self.ids()
            .iter()
            .map(|&i| self.addr(i).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn check(&self, id: NodeId) -> Result<(), LaunchError> {
        if self.procs.contains_key(&id) {
            Ok(())
        } else {
            let ids: Vec<String> = self.ids().iter().map(|i| i.to_string()).collect();
            Err(LaunchError::NoSuchNode(id, ids.join(", ")))
        }
    }

    async fn spawn(&mut self, id: NodeId) -> Result<(), LaunchError> {
        self.ensure_proxies(id).await?;
        let joined = self.procs.get(&id).is_some_and(|p| p.joined);
        // The membership carries real addresses; only this node's own dialling goes through
        // its proxies.
        let members = if joined {
            let targets: Vec<String> = self
                .ids()
                .into_iter()
                .filter(|&j| j != id)
                .map(|j| self.addr(j).to_string())
                .collect();
            vec!["--join".to_string(), targets.join(",")]
        } else {
            let peers: Vec<String> = (1..=self.cfg.nodes)
                .map(|j| format!("{j}={}", self.addr(j)))
                .collect();
            vec![peers.join(",")]
        };
        let routes: Vec<String> = (1..=MAX_NODES)
            .filter(|&j| j != id)
            .filter_map(|j| {
                self.proxies
                    .get(&(id, j))
                    .map(|p| format!("{j}={}", p.addr()))
            })
            .collect();
        let dir = self.cfg.data_dir.join(format!("node-{id}"));
        let mut cmd = Command::new(&self.cfg.bin);
        cmd.arg("run")
            .arg(id.to_string())
            .arg(self.addr(id).to_string())
            .args(&members)
            .arg("--route")
            .arg(routes.join(","))
            .arg("--data-dir")
            .arg(&dir)
            .args(&self.cfg.node_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it only asks
        // the kernel to SIGKILL this child when the launcher thread that forked it dies.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| LaunchError::Io(format!("start node {id}"), e))?;
        let sink = self.sink(id);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, sink.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, sink));
        }
        let p = self.procs.entry(id).or_insert(NodeProc {
            child: None,
            paused: false,
            joined,
        });
        p.child = Some(child);
        p.paused = false;
        Ok(())
    }

    fn sink(&self, id: NodeId) -> Sink {
        match &self.cfg.logs {
            LogSink::Prefixed => Sink::Stdout(prefix(id)),
            LogSink::Files => Sink::File(self.cfg.data_dir.join(format!("node-{id}.log"))),
        }
    }

    /// Is node `id`'s process running (possibly paused)?
    pub fn is_up(&mut self, id: NodeId) -> bool {
        let Some(p) = self.procs.get_mut(&id) else {
            return false;
        };
        match p.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                p.child = None;
                false
            }
            None => false,
        }
    }

    /// Is node `id` stopped with SIGSTOP?
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.procs.get(&id).is_some_and(|p| p.paused)
    }

    fn signal(&mut self, id: NodeId, sig: i32) -> Result<bool, LaunchError> {
        self.check(id)?;
        if !self.is_up(id) {
            return Ok(false);
        }
        let pid = self
            .procs
            .get(&id)
            .and_then(|p| p.child.as_ref())
            .and_then(|c| c.id());
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on a pid we spawned and have not reaped.
            unsafe {
                libc::kill(pid, sig);
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// SIGKILL: the node dies at once, mid-write if it was writing.
    pub async fn kill(&mut self, id: NodeId) -> Result<bool, LaunchError> {
        let sent = self.signal(id, libc::SIGKILL)?;
        if let Some(p) = self.procs.get_mut(&id) {
            if let Some(mut c) = p.child.take() {
                let _ = c.wait().await;
            }
            p.paused = false;
        }
        Ok(sent)
    }

    /// SIGTERM, then SIGKILL if the node has not exited after `grace`.
    pub async fn stop(&mut self, id: NodeId, grace: Duration) -> Result<bool, LaunchError> {
        if self.is_paused(id) {
            self.signal(id, libc::SIGCONT)?;
        }
        let sent = self.signal(id, libc::SIGTERM)?;
        if let Some(p) = self.procs.get_mut(&id) {
            if let Some(mut c) = p.child.take() {
                if tokio::time::timeout(grace, c.wait()).await.is_err() {
                    let _ = c.kill().await;
                }
            }
            p.paused = false;
        }
        Ok(sent)
    }

    /// Starts node `id` again from its data dir (stopping it first if it runs).
    pub async fn restart(&mut self, id: NodeId) -> Result<(), LaunchError> {
        self.check(id)?;
        if self.is_up(id) {
            self.stop(id, Duration::from_secs(5)).await?;
        }
        self.spawn(id).await
    }

    /// Starts a fresh node with the next id and has it join as a voter (`run --join`); waits
    /// (up to `limit`) until the leader lists it as a voter. A node that did not make it is
    /// stopped and forgotten. Returns its id.
    pub async fn add_node(&mut self, limit: Duration) -> Result<NodeId, LaunchError> {
        let id = self.next_id().ok_or_else(|| {
            LaunchError::Membership(format!("no id left: ids go up to {MAX_NODES}"))
        })?;
        self.last_id = id;
        // A fresh node needs an empty data directory; one left by an earlier run of the
        // launcher would carry another history.
        let dir = self.cfg.data_dir.join(format!("node-{id}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| LaunchError::Io(format!("clear {}", dir.display()), e))?;
        }
        self.procs.insert(
            id,
            NodeProc {
                child: None,
                paused: false,
                joined: true,
            },
        );
        self.ensure_proxies(id).await?;
        self.reserved.remove(&id);
        self.spawn(id).await?;
        let end = tokio::time::Instant::now() + limit;
        loop {
            let views = self.views().await;
            if let Some((_, l)) = leader_of(&views) {
                if l.voters.contains(&id) {
                    return Ok(id);
                }
            }
            if !self.is_up(id) || tokio::time::Instant::now() >= end {
                let why = if self.is_up(id) {
                    format!("not a voter after {limit:?}")
                } else {
                    "the process exited (see its log)".to_string()
                };
                let _ = self.stop(id, Duration::from_secs(5)).await;
                self.procs.remove(&id);
                return Err(LaunchError::Membership(format!(
                    "n{id} did not join: {why}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Removes node `id` from the membership through the cluster (`RemoveMember`, following
    /// leader redirects), then stops its process and forgets it. Returns the new voters.
    pub async fn remove_node(&mut self, id: NodeId) -> Result<Vec<NodeId>, LaunchError> {
        self.check(id)?;
        let mut order: Vec<NodeId> = Vec::new();
        for j in self.ids() {
            if j != id && self.is_up(j) {
                order.push(j);
            }
        }
        order.push(id);
        let others: Vec<String> = order.iter().map(|&j| self.addr(j).to_string()).collect();
        let mut client = crate::client::Client::new(&others.join(","))
            .map_err(|e| LaunchError::Membership(e.to_string()))?;
        let reply = client
            .membership(
                &crate::client::MembershipCall::Remove { id },
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| LaunchError::Membership(format!("remove n{id}: {e}")))?;
        let voters = match reply {
            crate::client::MembershipReply::Conf(r) => r.conf.unwrap_or_default().voters,
            crate::client::MembershipReply::Leader(_) => Vec::new(),
        };
        self.stop(id, Duration::from_secs(5)).await?;
        self.procs.remove(&id);
        self.cut.retain(|(a, b)| *a != id && *b != id);
        self.apply_links();
        Ok(voters)
    }

    /// SIGSTOP: the process freezes, sockets stay open (a GC pause, a hung VM).
    pub fn pause(&mut self, id: NodeId) -> Result<bool, LaunchError> {
        let sent = self.signal(id, libc::SIGSTOP)?;
        if let Some(p) = self.procs.get_mut(&id) {
            p.paused |= sent;
        }
        Ok(sent)
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: NodeId) -> Result<bool, LaunchError> {
        let sent = self.signal(id, libc::SIGCONT)?;
        if let Some(p) = self.procs.get_mut(&id) {
            p.paused = false;
        }
        Ok(sent)
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) -> Result<(), LaunchError> {
        for &x in a.iter().chain(b) {
            self.check(x)?;
        }
        for &x in a {
            for &y in b {
                if x != y {
                    self.cut.insert((x, y));
                    self.cut.insert((y, x));
                }
            }
        }
        self.apply_links();
        Ok(())
    }

    /// Cuts one direction of one link: `from`'s connections to `to` are blackholed.
    pub fn cut(&mut self, from: NodeId, to: NodeId) -> Result<(), LaunchError> {
        self.check(from)?;
        self.check(to)?;
        if from != to {
            self.cut.insert((from, to));
        }
        self.apply_links();
        Ok(())
    }

    /// Cuts `id` off from everyone.
    pub fn isolate(&mut self, id: NodeId) -> Result<(), LaunchError> {
        let rest: Vec<NodeId> = self.ids().into_iter().filter(|&i| i != id).collect();
        self.partition(&[id], &rest)
    }

    /// Restores every link (delays stay as set).
    pub fn heal(&mut self) {
        self.cut.clear();
        self.apply_links();
    }

    /// Delays every peer link by `d` in each direction (zero removes the delay).
    pub fn set_delay(&mut self, d: Duration) {
        self.delay = d;
        self.apply_links();
    }

    /// The links currently cut.
    pub fn cut_links(&self) -> &BTreeSet<(NodeId, NodeId)> {
        &self.cut
    }

    fn apply_links(&self) {
        for (link, p) in &self.proxies {
            let mode = if self.cut.contains(link) {
                LinkMode::Blackhole
            } else if self.delay.is_zero() {
                LinkMode::Pass
            } else {
                LinkMode::Delay(self.delay)
            };
            if p.mode() != mode {
                p.set_mode(mode);
            }
        }
    }

    /// Asks every running node for its status (short timeout: a paused node just shows as
    /// unreachable).
    pub async fn views(&mut self) -> BTreeMap<NodeId, NodeView> {
        let mut out = BTreeMap::new();
        for id in self.ids() {
            let process = if !self.is_up(id) {
                "down"
            } else if self.is_paused(id) {
                "paused"
            } else {
                "up"
            };
            let status = if process == "up" {
                status_of(self.addr(id)).await.ok()
            } else {
                None
            };
            out.insert(id, NodeView { status, process });
        }
        out
    }

    /// Stops every node (SIGTERM, then SIGKILL after `grace`).
    pub async fn shutdown(&mut self, grace: Duration) {
        for id in self.ids() {
            if self.is_paused(id) {
                let _ = self.signal(id, libc::SIGCONT);
            }
            let _ = self.signal(id, libc::SIGTERM);
        }
        for id in self.ids() {
            if let Some(p) = self.procs.get_mut(&id) {
                if let Some(mut c) = p.child.take() {
                    if tokio::time::timeout(grace, c.wait()).await.is_err() {
                        let _ = c.kill().await;
                    }
                }
            }
        }
    }
}

fn node_addr(cfg: &ClusterConfig, id: NodeId) -> SocketAddr {
    let port = cfg.base_port.saturating_add((id - 1) as u16);
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One node's status over gRPC, with a short timeout.
pub async fn status_of(addr: SocketAddr) -> Result<pb::StatusResponse, String> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_millis(700))
        .connect_lazy();
    let mut c = ClusterClient::new(ch);
    c.status(pb::StatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
}

/// The node that leads in the highest term among those that answered, with its status (an
/// isolated old leader may still believe it leads, in a lower term).
pub fn leader_of(views: &BTreeMap<NodeId, NodeView>) -> Option<(NodeId, &pb::StatusResponse)> {
    views
        .iter()
        .filter_map(|(id, v)| v.status.as_ref().map(|s| (*id, s)))
        .filter(|(_, s)| s.role == pb::Role::Leader as i32)
        .max_by_key(|(_, s)| s.term)
}

/// A one-line summary of the cluster for the live view.
pub fn summary_line(
    views: &BTreeMap<NodeId, NodeView>,
    cut: &BTreeSet<(NodeId, NodeId)>,
) -> String {
    let leader = leader_of(views).map(|(_, s)| s);
    let lead_last = leader.map_or(0, |l| l.last_index);
    let mut parts = vec![match leader {
        Some(l) if !l.learners.is_empty() => format!(
            "leader n{} term {} voters {:?} learners {:?}",
            l.id, l.term, l.voters, l.learners
        ),
        Some(l) => format!("leader n{} term {} voters {:?}", l.id, l.term, l.voters),
        None => "no leader".to_string(),
    }];
    for (id, v) in views {
        parts.push(match &v.status {
            Some(s) => format!(
                "n{id} {} t{} commit {} lag {}",
                crate::client::role_name(s.role),
                s.term,
                s.commit_index,
                lead_last.saturating_sub(s.applied_index)
            ),
            None => format!(
                "n{id} {}",
                if v.process == "up" {
                    "unreachable"
                } else {
                    v.process
                }
            ),
        });
    }
    if !cut.is_empty() {
        parts.push(format!("{} links cut", cut.len()));
    }
    parts.join(" | ")
}

#[derive(Clone)]
enum Sink {
    Stdout(String),
    File(PathBuf),
}

fn prefix(id: NodeId) -> String {
    if std::io::stdout().is_terminal() {
        // Six distinguishable ANSI colors, cycling.
        let color = 31 + (id as usize - 1) % 6;
        format!("\x1b[{color}mn{id} |\x1b[0m ")
    } else {
        format!("n{id} | ")
    }
}

/// Longest log line forwarded; longer lines are cut (bounded memory per child).
const MAX_LINE: usize = 8 * 1024;

async fn forward_lines(r: impl tokio::io::AsyncRead + Unpin, sink: Sink) {
    let mut lines = BufReader::new(r);
    let mut file = match &sink {
        Sink::File(p) => open_append(p).await,
        Sink::Stdout(_) => None,
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut lines)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') {
            buf.push(b'\n');
        }
        match &sink {
            Sink::Stdout(p) => {
                let line = String::from_utf8_lossy(&buf);
                print!("{p}{line}");
            }
            Sink::File(_) => {
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(&buf).await;
                }
            }
        }
    }
}

async fn open_append(p: &Path) -> Option<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .await
        .ok()
}
