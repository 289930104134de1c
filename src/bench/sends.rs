//! RustyRaft's side of the closed loop: one send in flight per worker, over unary
//! `SendMessage` or over `SendStream` calls shared by the workers of a connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::{closed_loop, Api, BenchError, LoadConfig, Report, Target};
use crate::pb;
use crate::pb::chat_service_client::ChatServiceClient;
use crate::pb::cluster_client::ClusterClient;

fn http_addr(a: &str) -> String {
    if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

/// Splits a comma-separated address list, dropping blanks.
pub fn split_addrs(addrs: &str) -> Vec<String> {
    addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// Opens one HTTP/2 connection (a tonic `Channel` connected eagerly, so connection set-up is
/// not inside the measured window).
pub async fn connect(addr: &str) -> Result<Channel, BenchError> {
    let url = http_addr(addr);
    let err = |e: String| BenchError::Connect {
        addr: addr.to_string(),
        reason: e,
    };
    Endpoint::from_shared(url)
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| err(e.to_string()))
}

/// Asks each node for its view of the leader and returns the leader's client address.
pub async fn find_leader(addrs: &[String]) -> Result<String, BenchError> {
    let mut last = String::from("no address given");
    for a in addrs {
        let ch = match connect(a).await {
            Ok(ch) => ch,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        match ClusterClient::new(ch).status(req).await {
            Ok(r) => {
                let s = r.into_inner();
                if s.leader_id != 0 && !s.leader_addr.is_empty() {
                    return Ok(s.leader_addr);
                }
                last = format!("{a} knows no leader");
            }
            Err(st) => last = format!("{a}: {}", st.message()),
        }
    }
    Err(BenchError::NoLeader(last))
}

/// The text of every bench message: `value_size` bytes of filler.
fn filler(value_size: usize) -> String {
    "x".repeat(value_size)
}

/// Sends still waiting for their answer on one `SendStream` call, by tag.
type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<(), String>>>>>;

/// One open `SendStream` call shared by several workers: they queue requests on `tx` and a
/// reader task hands each answer to the worker whose tag it carries.
struct SendStreamConn {
    tx: mpsc::Sender<pb::SendStreamRequest>,
    waiters: Waiters,
    next_tag: AtomicU64,
    /// The task that reads the answers: owned here, so it ends with the connection.
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SendStreamConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl SendStreamConn {
    /// Opens the call on `channel` and starts its reader. When the call ends (the node went
    /// away), every waiting send fails and so do later ones: the closed loop counts them.
    async fn open(channel: Channel, in_flight: usize) -> Result<Self, BenchError> {
        let (tx, rx) = mpsc::channel(in_flight.max(1));
        let mut answers = ChatServiceClient::new(channel)
            .send_stream(ReceiverStream::new(rx))
            .await
            .map_err(|st| BenchError::Setup(format!("SendStream: {}", st.message())))?
            .into_inner();
        let waiters: Waiters = Arc::default();
        let w = Arc::clone(&waiters);
        let reader = tokio::spawn(async move {
            let end = loop {
                match answers.message().await {
                    Ok(Some(r)) => {
                        let outcome = match r.error {
                            None => Ok(()),
                            Some(e) => Err(e.message),
                        };
                        let waiter = w.lock().ok().and_then(|mut m| m.remove(&r.tag));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(outcome);
                        }
                    }
                    Ok(None) => break "SendStream ended".to_string(),
                    Err(st) => break format!("SendStream failed: {}", st.message()),
                }
            };
            if let Ok(mut m) = w.lock() {
                for (_, waiter) in m.drain() {
                    let _ = waiter.send(Err(end.clone()));
                }
            }
        });
        Ok(SendStreamConn {
            tx,
            waiters,
            next_tag: AtomicU64::new(0),
            reader,
        })
    }

    /// One send, answered when it commits or fails.
    async fn send(&self, send: pb::SendMessageRequest) -> Result<(), String> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        self.waiters
            .lock()
            .map_err(|_| "waiter table poisoned".to_string())?
            .insert(tag, done);
        let req = pb::SendStreamRequest {
            tag,
            send: Some(send),
        };
        if self.tx.send(req).await.is_err() {
            if let Ok(mut m) = self.waiters.lock() {
                m.remove(&tag);
            }
            return Err("SendStream is closed".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("SendStream reader ended".into()))
    }
}

/// `raft_client bench`: the closed loop of sends (`SendMessage` calls, or `SendStream` with
/// `Api::Stream`) against a RustyRaft cluster.
pub async fn run_rustyraft(
    addrs: &[String],
    target: Target,
    api: Api,
    cfg: &LoadConfig,
) -> Result<Report, BenchError> {
    cfg.validate()?;
    if addrs.is_empty() {
        return Err(BenchError::Invalid("--addr lists no address".into()));
    }
    let targets = match target {
        Target::Leader => vec![find_leader(addrs).await?],
        Target::All => addrs.to_vec(),
    };
    let mut channels = Vec::with_capacity(cfg.connections);
    for i in 0..cfg.connections {
        channels.push(connect(&targets[i % targets.len()]).await?);
    }
    let rooms: Arc<Vec<String>> = Arc::new((0..cfg.rooms).map(|r| format!("bench-{r}")).collect());
    let text = Arc::new(filler(cfg.value_size));
    if api == Api::Stream {
        let mut conns = Vec::with_capacity(channels.len());
        for ch in channels {
            conns.push(SendStreamConn::open(ch, cfg.concurrency).await?);
        }
        let conns = Arc::new(conns);
        let report = closed_loop("rustyraft-stream", cfg, move |w, _n| {
            let conns = Arc::clone(&conns);
            let req = pb::SendMessageRequest {
                room: rooms[w % rooms.len()].clone(),
                author: "bench".into(),
                text: text.as_str().to_owned(),
                client_request_id: String::new(),
            };
            async move { conns[w % conns.len()].send(req).await }
        })
        .await;
        return Ok(report);
    }
    let channels = Arc::new(channels);
    let report = closed_loop("rustyraft-unary", cfg, move |w, _n| {
        let mut c = ChatServiceClient::new(channels[w % channels.len()].clone());
        let req = pb::SendMessageRequest {
            room: rooms[w % rooms.len()].clone(),
            author: "bench".into(),
            text: text.as_str().to_owned(),
            client_request_id: String::new(),
        };
        async move {
            c.send_message(req)
                .await
                .map(|_| ())
                .map_err(|st| st.message().to_string())
        }
    })
    .await;
    Ok(report)
}
