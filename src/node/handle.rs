//! [`NodeHandle`]: the only way into a running node. It offers narrow operations (propose, read
//! the state under its lock, wait for an index, subscribe to applied messages, drain, stop) and
//! keeps the driver's channels, its lock and its lifecycle tokens to itself, so no caller can
//! write the applied index or flip the node's lifecycle behind the driver's back.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ConfChanged, ConfOp, NodeConfig, NodeError, NodeStatus};
use crate::chat::{Applied, ChatMessage, ChatState, Command};
use crate::raft::{NodeId, Snapshot};

/// Capacity of the applied-message broadcast.
pub const EVENTS_CAPACITY: usize = 1024;
/// Capacity of the driver's request queue.
pub const REQUEST_QUEUE: usize = 4096;
/// Capacity of the driver's inbound peer-message queue.
pub const INBOUND_QUEUE: usize = 4096;

/// A request to the driver.
pub(crate) enum Request {
    /// Propose a command and answer once it is applied.
    Propose {
        /// An encoded, validated [`Command`].
        data: bytes::Bytes,
        reply: oneshot::Sender<Result<Applied, NodeError>>,
    },
    /// Obtain a linearizable read index.
    ReadIndex {
        reply: oneshot::Sender<Result<u64, NodeError>>,
    },
    /// Compact the log now.
    Snapshot {
        reply: oneshot::Sender<Result<(u64, u64), NodeError>>,
    },
    /// Compact the log now and answer with the latest snapshot, data included (a backup).
    Backup {
        reply: oneshot::Sender<Result<Snapshot, NodeError>>,
    },
    /// Change the membership; answered once the configuration entry is committed.
    ChangeConf {
        op: ConfOp,
        reply: oneshot::Sender<Result<ConfChanged, NodeError>>,
    },
    /// Start handing leadership to a voter (0: the most up-to-date one); answered with the
    /// chosen target as soon as the transfer has started.
    TransferLeader {
        target: NodeId,
        reply: oneshot::Sender<Result<NodeId, NodeError>>,
    },
}

/// State the driver writes and the handle reads. Private to the node: the handle hands out
/// receivers and read access, never the senders.
pub(crate) struct Shared {
    /// The chat state. A std `RwLock`, not a tokio one: it is never held across an `.await`,
    /// and writers (the driver applying a batch) hold it only for the batch.
    pub(crate) sm: RwLock<ChatState>,
    /// Last applied index, for `min_index` and ReadIndex waits. Written by the driver only.
    pub(crate) applied: watch::Sender<u64>,
    /// This node's view of the cluster, updated after every driver iteration.
    pub(crate) status: watch::Sender<NodeStatus>,
    /// Every newly applied message, for subscribers. Bounded: a lagging receiver gets
    /// `Lagged` and catches up from the state machine instead.
    pub(crate) events: broadcast::Sender<Arc<ChatMessage>>,
}

/// How a node ends, in order: `draining` (long-lived streams end, so a graceful server drain
/// only waits for unary calls), then `stop` (the driver syncs storage and exits; the transport's
/// peer tasks end with it), then every tracked task is awaited.
///
/// Why tokens and a tracker instead of `watch<bool>`s and bare `tokio::spawn`: a token cannot be
/// "un-cancelled", a child token ends with its parent, and the tracker lets the server wait for
/// every task the node and its services started, so nothing outlives the node.
#[derive(Clone)]
pub(crate) struct Lifecycle {
    /// Cancelled as soon as shutdown begins (or the driver stops on its own).
    pub(crate) draining: CancellationToken,
    /// Cancelled to stop the driver, or by the driver when it stops on a fatal error.
    pub(crate) stop: CancellationToken,
    /// Every task spawned on behalf of the node: the driver, peer links, streams.
    pub(crate) tasks: TaskTracker,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Lifecycle {
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }
}

/// A cheap, cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: Arc<NodeConfig>,
    pub(crate) life: Lifecycle,
}

impl NodeHandle {
    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Runs `f` on the chat state under its read lock. Keep `f` short and never `.await` in it:
    /// the driver waits for this lock to apply the next batch.
    pub fn read<R>(&self, f: impl FnOnce(&ChatState) -> R) -> Result<R, NodeError> {
        let sm = self
            .shared
            .sm
            .read()
            .map_err(|_| NodeError::Internal("state machine lock poisoned".into()))?;
        Ok(f(&sm))
    }

    /// Every message applied from now on, for subscribers. The broadcast is bounded: a receiver
    /// that falls [`EVENTS_CAPACITY`] behind gets `Lagged` and must catch up with [`Self::read`].
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<ChatMessage>> {
        self.shared.events.subscribe()
    }

    /// The last applied index, as it moves.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    /// The node's status, as it changes.
    pub fn subscribe_status(&self) -> watch::Receiver<NodeStatus> {
        self.shared.status.subscribe()
    }

    /// Latest status snapshot.
    pub fn status(&self) -> NodeStatus {
        self.shared.status.borrow().clone()
    }

    /// Begins shutdown: long-lived streams (Subscribe, Chat, SendStream, peer streams) end. The
    /// driver keeps running until [`Self::stop`], so in-flight unary calls still complete.
    pub fn drain(&self) {
        self.life.draining.cancel();
    }

    /// Stops the driver (it syncs storage first); in-flight requests fail with
    /// [`NodeError::Stopped`]. Implies [`Self::drain`].
    pub fn stop(&self) {
        self.life.draining.cancel();
        self.life.stop.cancel();
    }

    /// A token cancelled once shutdown has begun ([`Self::drain`], [`Self::stop`], or the
    /// driver ended on its own); long-lived streams select on its `cancelled()`. It is a child
    /// token: cancelling it ends only the holder's own work, never the node.
    pub fn draining(&self) -> CancellationToken {
        self.life.draining.child_token()
    }

    /// A token cancelled once the driver is told to stop or has stopped (a fatal error stops
    /// it too). A child token, like [`Self::draining`]'s.
    pub fn stopped(&self) -> CancellationToken {
        self.life.stop.child_token()
    }

    /// Spawns `task` on behalf of the node: it is tracked, and [`Self::wait_tasks`] waits for
    /// it. Every task a service starts for a call (streams, pipelines) goes through here.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.life.tasks.spawn(task)
    }

    /// Waits until every tracked task has ended. Call it after [`Self::stop`]: tasks that
    /// select on [`Self::draining`] end soon after.
    pub async fn wait_tasks(&self) {
        self.life.tasks.close();
        self.life.tasks.wait().await;
    }

    /// Known leader (id and the address clients use, from the replicated membership), if any.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let s = self.shared.status.borrow();
        s.leader_id.map(|id| (id, self.addr_in(&s, id)))
    }

    fn addr_in(&self, s: &NodeStatus, id: NodeId) -> String {
        s.addrs
            .get(&id)
            .map(String::as_str)
            .or_else(|| self.config.addr_of(id))
            .unwrap_or_default()
            .to_string()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, NodeError>>) -> Request,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.requests.try_send(make(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                NodeError::Overloaded("node overloaded, request queue full".into())
            }
            mpsc::error::TrySendError::Closed(_) => NodeError::Stopped,
        })?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Proposes a command on this node (which must be the leader) and waits until it is applied.
    /// The command is checked and encoded here, in the caller's task, so the driver task (one
    /// for the whole node) only appends bytes.
    pub async fn propose(&self, cmd: &Command) -> Result<Applied, NodeError> {
        cmd.validate(self.config.max_text_bytes)?;
        let data = cmd.encode();
        self.request(|reply| Request::Propose { data, reply }).await
    }

    /// This node's role, without copying the whole status.
    pub fn role(&self) -> crate::raft::Role {
        self.shared.status.borrow().role
    }

    /// Obtains a read index through ReadIndex and waits until it is applied locally, bounded by
    /// `timeout`. After it returns, local reads are linearizable.
    pub async fn linearizable_barrier(&self, timeout: Duration) -> Result<u64, NodeError> {
        let fut = async {
            let index = self.request(|reply| Request::ReadIndex { reply }).await?;
            self.wait_applied(index).await?;
            Ok(index)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| NodeError::Unavailable("read index not confirmed in time".into()))?
    }

    /// Waits until `index` is applied locally.
    pub async fn wait_applied(&self, index: u64) -> Result<(), NodeError> {
        let mut rx = self.shared.applied.subscribe();
        rx.wait_for(|&a| a >= index)
            .await
            .map(|_| ())
            .map_err(|_| NodeError::Stopped)
    }

    /// Asks the driver for one membership change and waits until its configuration entry is
    /// committed (or refused). Leader only; see [`ConfOp`] for what each change does.
    pub async fn change_conf(&self, op: ConfOp) -> Result<ConfChanged, NodeError> {
        self.request(|reply| Request::ChangeConf { op, reply })
            .await
    }

    /// Starts a leadership transfer to `target` (0: the most up-to-date other voter) and
    /// returns the chosen target. The transfer itself completes asynchronously: watch the
    /// status for the new leader.
    pub async fn transfer_leader(&self, target: NodeId) -> Result<NodeId, NodeError> {
        self.request(|reply| Request::TransferLeader { target, reply })
            .await
    }

    /// Takes a snapshot now; returns its (index, term).
    pub async fn snapshot(&self) -> Result<(u64, u64), NodeError> {
        self.request(|reply| Request::Snapshot { reply }).await
    }

    /// A backup point: a ReadIndex barrier (bounded by `timeout`), then a snapshot at an applied
    /// index at or past it. Returns the snapshot (for a chat directory, its data is the
    /// manifest; the files it names are only ever appended to while this node serves them).
    pub async fn backup_snapshot(&self, timeout: Duration) -> Result<Snapshot, NodeError> {
        self.linearizable_barrier(timeout).await?;
        self.request(|reply| Request::Backup { reply }).await
    }

    /// Waits until the status changes or `timeout` passes; used to retry after a leader change.
    pub async fn status_changed(&self, timeout: Duration) {
        let mut rx = self.shared.status.subscribe();
        rx.mark_unchanged();
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
    }
}
