//! Following a room: catch up from the state machine, then go live on the broadcast of applied
//! messages, tracking the next seq so nothing is skipped or repeated. A subscriber that lags
//! behind the bounded broadcast (or sees a seq jump, e.g. after a snapshot install) simply
//! catches up from the state machine again: memory per subscriber stays bounded.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::chat::{ChatError, ChatMessage};
use crate::node::NodeHandle;
use crate::pb;

/// Messages read from the state machine per catch-up step.
const CATCH_UP_BATCH: usize = 256;

/// One catch-up batch: planned under the state's lock, read from disk on a blocking thread.
async fn read_batch(
    node: &NodeHandle,
    room: &str,
    from: u64,
) -> Result<Vec<Arc<ChatMessage>>, Status> {
    let plan = node
        .read(|sm| sm.history_read(room, from, CATCH_UP_BATCH, false))
        .map_err(super::node_status)?;
    let read = match plan {
        Ok(plan) => tokio::task::spawn_blocking(move || plan.load())
            .await
            .map_err(|e| Status::internal(format!("history read: {e}")))?,
        Err(e) => Err(e),
    };
    match read {
        Ok(v) => Ok(v),
        // The room may not exist yet: following it waits for its first message.
        Err(ChatError::RoomNotFound(_)) => Ok(Vec::new()),
        Err(e) => Err(super::chat_status(e)),
    }
}

/// Streams `room` from seq `next` into `tx` until the client leaves or the node stops.
pub async fn follow<T>(
    node: NodeHandle,
    room: String,
    mut next: u64,
    tx: mpsc::Sender<Result<T, Status>>,
    wrap: impl Fn(pb::Message) -> T,
) {
    let draining = node.draining();
    // Counted while this stream is open (Subscribe, and Chat's receiving half).
    let _live = node.config().metrics.subscriber();
    next = next.max(1);
    'resync: loop {
        // Subscribe before reading, so nothing applied in between is missed; duplicates are
        // filtered by seq below.
        let mut rx = node.subscribe_events();
        loop {
            let batch = match read_batch(&node, &room, next).await {
                Ok(b) => b,
                Err(st) => {
                    let _ = tx.send(Err(st)).await;
                    return;
                }
            };
            let full = batch.len() == CATCH_UP_BATCH;
            for m in batch {
                if tx.send(Ok(wrap(pb::Message::from(&m)))).await.is_err() {
                    return;
                }
                next = m.seq + 1;
            }
            if !full {
                break;
            }
        }
        loop {
            let m = tokio::select! {
                _ = draining.cancelled() => {
                    let _ = tx.try_send(Err(Status::unavailable("node is shutting down")));
                    return;
                }
                _ = tx.closed() => return,
                r = rx.recv() => match r {
                    Ok(m) => m,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(room = %room, skipped = n, "subscriber lagged; catching up from state");
                        continue 'resync;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if m.room != room || m.seq < next {
                continue;
            }
            if m.seq > next {
                continue 'resync;
            }
            if tx.send(Ok(wrap(pb::Message::from(&m)))).await.is_err() {
                return;
            }
            next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::chat::Command;
    use crate::node::{Driver, NodeConfig, EVENTS_CAPACITY};
    use crate::raft::{ConfState, MemStorage, Role};

    #[tokio::test]
    async fn a_lagging_subscriber_catches_up_without_gaps_or_duplicates() {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut cfg = NodeConfig::new(1, addr, BTreeMap::from([(1, addr.to_string())]));
        cfg.heartbeat = Duration::from_millis(5);
        cfg.election_ticks = 2;
        let store = MemStorage::new_with_conf(ConfState::with_voters([1]));
        let (node, _inbound, task) = Driver::start_with(cfg, store).unwrap();
        node.subscribe_status()
            .wait_for(|s| s.role == Role::Leader)
            .await
            .unwrap();
        // A one-slot stream that nobody reads yet: the follower falls far behind the broadcast.
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(follow(node.clone(), "r".into(), 1, tx, |m| m));
        let n = (EVENTS_CAPACITY * 3) as u64;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let node = node.clone();
            set.spawn(async move {
                node.propose(&Command::Send {
                    room: if i % 2 == 0 { "r" } else { "other" }.into(),
                    author: "a".into(),
                    text: format!("{i}"),
                    id: format!("id-{i}"),
                    sent_at_unix_ms: 0,
                })
                .await
            });
        }
        for r in set.join_all().await {
            r.unwrap();
        }
        let want = n / 2;
        let mut seqs = Vec::new();
        while (seqs.len() as u64) < want {
            let m = rx.recv().await.unwrap().unwrap();
            seqs.push(m.seq);
        }
        assert_eq!(seqs, (1..=want).collect::<Vec<_>>());
        node.stop();
        task.await.unwrap().unwrap();
    }
}
