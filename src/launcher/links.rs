//! The peer links of a local cluster: one [`LinkProxy`] per ordered pair of node ids, and the
//! faults set on them (cut links, a delay on every link).
//!
//! Node `i` dials peer `j` through proxy `(i, j)` (it is started with `--route j=<proxy>`), so
//! a partition, a one-way cut or a delay is a mode set on proxies from outside, with no hook
//! in the node. The proxies of a node are created when it first starts, for every possible
//! peer id up to [`MAX_NODES`], so links to nodes that join later are proxied too.
//!
//! [`Links`] knows nothing of processes: `LocalCluster` (processes.rs) owns it, checks
//! node ids, and delegates here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::processes::{node_peer_addr, LaunchError, NodeId, HTTP_PORT_OFFSET, MAX_NODES};
use super::proxy::{LinkMode, LinkProxy};

/// Every proxied peer link of the cluster and the faults set on them.
pub(super) struct Links {
    /// Node 1's client port: peer `j`'s real address is derived from it.
    base_port: u16,
    proxies: BTreeMap<(NodeId, NodeId), LinkProxy>,
    /// Links currently cut, as (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    delay: Duration,
    /// Where the proxies' tasks run (the cluster's tracker), and what stops them.
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Links {
    /// No links yet; proxies are spawned on `tasks` and stop with `stop`.
    pub(super) fn new(base_port: u16, tasks: TaskTracker, stop: CancellationToken) -> Links {
        Links {
            base_port,
            proxies: BTreeMap::new(),
            cut: BTreeSet::new(),
            delay: Duration::ZERO,
            tasks,
            stop,
        }
    }

    /// Creates node `i`'s outgoing proxies, one per possible peer id, if not there yet.
    pub(super) async fn ensure(&mut self, i: NodeId) -> Result<(), LaunchError> {
        for j in 1..=MAX_NODES {
            if i == j || self.proxies.contains_key(&(i, j)) {
                continue;
            }
            // Peer links go to the peer listener (client port + 1000), never the client port.
            let target = node_peer_addr(self.base_port, j);
            let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
            // An ephemeral port may fall inside the nodes' port range and take the port of a
            // node that starts later: pick again (a few tries, then accept it).
            let nodes = self.base_port..self.base_port.saturating_add(MAX_NODES as u16);
            let peer_base = node_peer_addr(self.base_port, 1).port();
            let peers = peer_base..peer_base.saturating_add(MAX_NODES as u16);
            let http_base = self.base_port.saturating_add(HTTP_PORT_OFFSET);
            let http = http_base..http_base.saturating_add(MAX_NODES as u16);
            let mut tries = 0;
            let p = loop {
                let p = LinkProxy::start(any, target, &self.tasks, &self.stop)
                    .await
                    .map_err(|e| LaunchError::Io(format!("proxy {i}->{j}"), e))?;
                tries += 1;
                let port = p.addr().port();
                let taken = nodes.contains(&port) || peers.contains(&port) || http.contains(&port);
                if !taken || tries >= 20 {
                    break p;
                }
            };
            self.proxies.insert((i, j), p);
        }
        self.apply();
        Ok(())
    }

    /// Node `i`'s `--route` argument: `j=<proxy address>` for every peer id it may dial.
    pub(super) fn routes(&self, i: NodeId) -> String {
        (1..=MAX_NODES)
            .filter(|&j| j != i)
            .filter_map(|j| {
                self.proxies
                    .get(&(i, j))
                    .map(|p| format!("{j}={}", p.addr()))
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Cuts every link between the two groups, both ways.
    pub(super) fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                if x != y {
                    self.cut.insert((x, y));
                    self.cut.insert((y, x));
                }
            }
        }
        self.apply();
    }

    /// Cuts one direction of one link: `from`'s connections to `to` are blackholed.
    pub(super) fn cut(&mut self, from: NodeId, to: NodeId) {
        if from != to {
            self.cut.insert((from, to));
        }
        self.apply();
    }

    /// Restores every link (delays stay as set).
    pub(super) fn heal(&mut self) {
        self.cut.clear();
        self.apply();
    }

    /// Delays every peer link by `d` in each direction (zero removes the delay).
    pub(super) fn set_delay(&mut self, d: Duration) {
        self.delay = d;
        self.apply();
    }

    /// Forgets the cuts of a node that left the cluster.
    pub(super) fn forget(&mut self, id: NodeId) {
        self.cut.retain(|(a, b)| *a != id && *b != id);
        self.apply();
    }

    /// The links currently cut.
    pub(super) fn cut_links(&self) -> &BTreeSet<(NodeId, NodeId)> {
        &self.cut
    }

    /// Sets every proxy's mode from the cut set and the delay.
    fn apply(&self) {
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
}
