//! A local cluster of real `raft_client run` processes: start, kill, pause, restart, add and
//! remove nodes, and forward their logs.
//!
//! Node `i` listens on `127.0.0.1:<base + i - 1>` (clients use these real addresses, and so does
//! the replicated membership), and dials its peers through the link proxies of `links.rs`.
//! Nodes added later (`add`, ids up to [`MAX_NODES`]) join with `--join`.
//!
//! Children never outlive the launcher: each gets `PR_SET_PDEATHSIG = SIGKILL` (the kernel kills
//! it if the launcher dies, even by SIGKILL or a panic), `kill_on_drop`, and [`LocalCluster::shutdown`]
//! stops them with SIGTERM, then SIGKILL after a grace period.
//!
//! Tasks: [`LocalCluster`] owns one [`TaskTracker`] and one [`CancellationToken`] for the whole
//! launcher run. Its own tasks (the link proxies and their connections, the log forwarders) and
//! those of whoever drives it (the interactive stdin reader and load generator, the chaos
//! workload) are spawned on [`LocalCluster::tasks`]; a driver that must stop its tasks earlier
//! uses a [`LocalCluster::child_token`]. [`LocalCluster::shutdown`] stops the nodes, cancels the
//! token and awaits every task, so nothing the launcher started outlives it.

mod logs;
mod membership;
mod startup;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::logs::Forwarding;
pub use self::logs::LogSink;
use super::links::Links;
use super::status_view::{status_of, NodeView};

/// Node ids: 1..=n at the start, then the next unused id for each `add`, up to [`MAX_NODES`].
pub type NodeId = u64;

/// Highest node id the launcher manages (ports `base..base+MAX_NODES-1`). Ids are never reused
/// within a run: a removed node's id may still be in some node's old vote records.
pub const MAX_NODES: u64 = 9;

/// How long [`LocalCluster::start`] waits for every node's client port to answer: long enough
/// for a node to open its storage on a loaded machine, short enough that a hung start is
/// reported rather than waited on forever.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(30);

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
    /// Run the whole cluster over TLS (`--tls`): client listeners with TLS, peer links with
    /// mutual TLS (through the link proxies, which splice bytes), certificates from a local
    /// CA under `<data-dir>/certs`.
    pub tls: bool,
}

/// Makes (or keeps) the local CA and one node certificate for 127.0.0.1 under `<dir>/certs`,
/// and points the launcher's own dialling at that CA. Returns the directory.
fn ensure_certs(data_dir: &Path) -> Result<PathBuf, LaunchError> {
    let dir = data_dir.join("certs");
    let io = |what: &str, e: crate::tls::TlsError| {
        LaunchError::Io(what.to_string(), std::io::Error::other(e.to_string()))
    };
    match crate::tls::init_ca(&dir) {
        Ok(_) | Err(crate::tls::TlsError::Exists(_)) => {}
        Err(e) => return Err(io("make the local CA", e)),
    }
    crate::tls::issue(&dir, "node", &["127.0.0.1".to_string()])
        .map_err(|e| io("issue the node certificate", e))?;
    let creds = crate::tls::Credentials::plain()
        .with_ca(&dir.join("ca.pem"))
        .map_err(|e| io("load the local CA", e))?;
    super::set_dial(creds);
    Ok(dir)
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
    /// A node exited, or never answered on its client port, while the cluster was starting
    /// (typically: its port is taken by another process). The cluster is not started.
    #[error("n{id} failed to start on {addr}: {why}; its last log line: {last_line}")]
    Startup {
        /// The node.
        id: NodeId,
        /// Its client address (the port it should listen on).
        addr: SocketAddr,
        /// What went wrong: its exit status, or how long it was waited for.
        why: String,
        /// The last line the node logged, usually the cause.
        last_line: String,
    },
}

struct NodeProc {
    child: Option<Child>,
    paused: bool,
    /// Added with `add`: (re)started with `--join` rather than the initial peer list.
    joined: bool,
    /// How the last run of the process ended, once reaped by [`LocalCluster::is_up`].
    exit: Option<ExitStatus>,
    /// This run's log forwarders and last log line (for startup errors).
    logs: Forwarding,
}

impl NodeProc {
    fn new(joined: bool) -> NodeProc {
        NodeProc {
            child: None,
            paused: false,
            joined,
            exit: None,
            logs: Forwarding {
                last_line: Arc::default(),
                tasks: Vec::new(),
            },
        }
    }
}

/// A running local cluster.
pub struct LocalCluster {
    cfg: ClusterConfig,
    /// The managed nodes (members, as far as the launcher knows).
    procs: BTreeMap<NodeId, NodeProc>,
    /// Highest id ever started; `add` uses the next one.
    last_id: NodeId,
    /// The peer link proxies and the faults set on them.
    links: Links,
    /// Client and peer ports of ids not started yet, held open until `add` starts them:
    /// otherwise the kernel may hand one out as the local port of some outgoing connection
    /// (they are in the ephemeral range), and the node could not listen on it.
    reserved: BTreeMap<NodeId, (std::net::TcpListener, Option<std::net::TcpListener>)>,
    /// Every task the launcher starts (see the module doc), and what cancels them.
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl LocalCluster {
    /// Starts the proxies and every node, and waits until every node's client port answers
    /// (up to [`STARTUP_LIMIT`]). If a node exits or does not answer in time, every node is
    /// stopped and the error names the node, its address and its last log line.
    pub async fn start(cfg: ClusterConfig) -> Result<LocalCluster, LaunchError> {
        if !cfg.bin.is_file() {
            return Err(LaunchError::NoBinary(cfg.bin.clone()));
        }
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| LaunchError::Io(format!("create {}", cfg.data_dir.display()), e))?;
        if cfg.tls {
            ensure_certs(&cfg.data_dir)?;
        }
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let mut c = LocalCluster {
            procs: (1..=cfg.nodes).map(|i| (i, NodeProc::new(false))).collect(),
            last_id: cfg.nodes,
            reserved: (cfg.nodes + 1..=MAX_NODES)
                .filter_map(|j| {
                    let client = std::net::TcpListener::bind(node_addr(cfg.base_port, j)).ok()?;
                    let peer = std::net::TcpListener::bind(node_peer_addr(cfg.base_port, j)).ok();
                    Some((j, (client, peer)))
                })
                .collect(),
            links: Links::new(cfg.base_port, tasks.clone(), stop.clone()),
            cfg,
            tasks,
            stop,
        };
        let mut started = Ok(());
        for i in 1..=c.cfg.nodes {
            started = c.spawn(i).await;
            if started.is_err() {
                break;
            }
        }
        if started.is_ok() {
            started = c.wait_started(STARTUP_LIMIT).await;
        }
        match started {
            Ok(()) => Ok(c),
            Err(e) => {
                c.shutdown(Duration::from_secs(5)).await;
                Err(e)
            }
        }
    }

    /// The tracker every launcher task runs on: the cluster's own (proxies, log forwarders)
    /// and its drivers' (interactive mode, chaos workload). [`LocalCluster::shutdown`] awaits
    /// them all, so a driver that spawns here leaves no orphan even if it is interrupted.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// A token cancelled at [`LocalCluster::shutdown`], which its holder may also cancel
    /// earlier to stop just its own tasks (a child of the cluster's token).
    pub fn child_token(&self) -> CancellationToken {
        self.stop.child_token()
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
        node_addr(self.cfg.base_port, id)
    }

    /// Where node `id` serves `/metrics`, `/healthz` and `/readyz`: its client port +
    /// [`HTTP_PORT_OFFSET`].
    pub fn http_addr(&self, id: NodeId) -> SocketAddr {
        let client = self.addr(id);
        SocketAddr::new(client.ip(), client.port().saturating_add(HTTP_PORT_OFFSET))
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
        self.links.ensure(id).await?;
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
        let dir = self.cfg.data_dir.join(format!("node-{id}"));
        let secret = ensure_secret(&self.cfg.data_dir)?;
        let mut cmd = Command::new(&self.cfg.bin);
        cmd.arg("run")
            .arg(id.to_string())
            .arg(self.addr(id).to_string())
            .args(&members)
            .arg("--cluster-secret-file")
            .arg(&secret)
            .args(self.tls_args())
            .arg("--route")
            .arg(self.links.routes(id))
            .arg("--data-dir")
            .arg(&dir)
            .arg("--http-addr")
            .arg(self.http_addr(id).to_string())
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
        let logs = logs::forward(
            &mut child,
            id,
            &self.cfg.logs,
            &self.cfg.data_dir,
            &self.tasks,
            &self.stop,
        );
        let p = self.procs.entry(id).or_insert(NodeProc::new(joined));
        p.child = Some(child);
        p.paused = false;
        p.exit = None;
        p.logs = logs;
        Ok(())
    }

    /// Is node `id`'s process running (possibly paused)?
    pub fn is_up(&mut self, id: NodeId) -> bool {
        let Some(p) = self.procs.get_mut(&id) else {
            return false;
        };
        match p.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(exit) => {
                p.exit = exit.ok().flatten();
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
        self.links.partition(a, b);
        Ok(())
    }

    /// Cuts one direction of one link: `from`'s connections to `to` are blackholed.
    pub fn cut(&mut self, from: NodeId, to: NodeId) -> Result<(), LaunchError> {
        self.check(from)?;
        self.check(to)?;
        self.links.cut(from, to);
        Ok(())
    }

    /// Cuts `id` off from everyone.
    pub fn isolate(&mut self, id: NodeId) -> Result<(), LaunchError> {
        let rest: Vec<NodeId> = self.ids().into_iter().filter(|&i| i != id).collect();
        self.partition(&[id], &rest)
    }

    /// Restores every link (delays stay as set).
    pub fn heal(&mut self) {
        self.links.heal();
    }

    /// Delays every peer link by `d` in each direction (zero removes the delay).
    pub fn set_delay(&mut self, d: Duration) {
        self.links.set_delay(d);
    }

    /// The links currently cut.
    pub fn cut_links(&self) -> &BTreeSet<(NodeId, NodeId)> {
        self.links.cut_links()
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

    /// Stops every node (SIGTERM, then SIGKILL after `grace`), then cancels and awaits every
    /// task on [`LocalCluster::tasks`]. The cluster cannot be used afterwards.
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
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The launcher's nodes serve their metrics on their client port + 2000 (peers use + 1000).
pub const HTTP_PORT_OFFSET: u16 = 2000;

impl LocalCluster {
    /// The CA file clients need under `--tls`, as text; `None` without TLS.
    pub fn ca_file(&self) -> Option<String> {
        self.cfg.tls.then(|| {
            self.cfg
                .data_dir
                .join("certs")
                .join("ca.pem")
                .display()
                .to_string()
        })
    }

    /// A node's TLS flags under `--tls`: client TLS, and mutual TLS on peer links, with the
    /// one local certificate (every node listens on 127.0.0.1).
    fn tls_args(&self) -> Vec<String> {
        if !self.cfg.tls {
            return Vec::new();
        }
        let certs = self.cfg.data_dir.join("certs");
        let (ca, cert, key) = (
            certs.join("ca.pem").display().to_string(),
            certs.join("node.pem").display().to_string(),
            certs.join("node.key").display().to_string(),
        );
        [
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--ca",
            &ca,
            "--peer-tls-cert",
            &cert,
            "--peer-tls-key",
            &key,
            "--peer-ca",
            &ca,
        ]
        .map(String::from)
        .to_vec()
    }
}

/// Node `id`'s client address: `127.0.0.1:<base_port + id - 1>`.
pub(super) fn node_addr(base_port: u16, id: NodeId) -> SocketAddr {
    let port = base_port.saturating_add((id - 1) as u16);
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Node `id`'s peer address (its `Raft` service): the client port + 1000, the nodes' default.
pub(super) fn node_peer_addr(base_port: u16, id: NodeId) -> SocketAddr {
    let client = node_addr(base_port, id);
    SocketAddr::new(
        client.ip(),
        client.port().saturating_add(crate::raft::PEER_PORT_OFFSET),
    )
}

/// The cluster secret every node of this launcher gets (`<data-dir>/cluster.secret`), made
/// once with the OS's CSPRNG and kept, so a restarted launcher on the same data directory
/// still speaks to its nodes.
fn ensure_secret(data_dir: &Path) -> Result<PathBuf, LaunchError> {
    let path = data_dir.join(crate::node::SECRET_FILE);
    if path.exists() {
        return Ok(path);
    }
    let secret = crate::transport::generate_secret().map_err(|e| {
        LaunchError::Io(
            "generate the cluster secret".into(),
            std::io::Error::other(e),
        )
    })?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(format!("{secret}\n").as_bytes())?;
        f.sync_all()
    };
    write().map_err(|e| LaunchError::Io(format!("write {}", path.display()), e))?;
    Ok(path)
}
