//! The chaos workload: writers, readers and subscribers that record the client history, and
//! [`read_room`], which reads a node's whole copy of the room once the cluster has converged.
//!
//! Every client records an operation only once it is complete, and stops between operations
//! when told to (`Shared::stop_clients`), so the history never holds half an operation.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

use super::{Shared, ROOM};
use crate::check::{MsgId, Op, Subscription};
use crate::pb;
use crate::pb::chat_service_client::ChatServiceClient;

fn client(addr: SocketAddr) -> ChatServiceClient<tonic::transport::Channel> {
    let ch = crate::launcher::endpoint(&addr.to_string())
        .map(|e| {
            e.connect_timeout(Duration::from_millis(300))
                .timeout(Duration::from_secs(3))
                .connect_lazy()
        })
        .unwrap_or_else(|_| unreachable_channel());
    ChatServiceClient::new(ch)
}

/// A channel to nowhere, for an address that cannot be a URI (never happens for a SocketAddr,
/// but the type system does not know that, and we never unwrap).
fn unreachable_channel() -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy()
}

fn retryable(st: &tonic::Status) -> bool {
    let overloaded = st.code() == Code::ResourceExhausted
        && crate::pb::Reason::of(st) == Some(crate::pb::Reason::Overloaded);
    overloaded
        || matches!(
            st.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Unknown
                | Code::Aborted
        )
}

/// Sleeps for `d`, or less if the clients are told to stop meanwhile.
async fn pause(sh: &Shared, d: Duration) {
    tokio::select! {
        _ = sh.stop_clients.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// One writer: sends until told to stop; each message is retried with its id until it is
/// acknowledged or its 20 s budget runs out.
pub(super) async fn writer(sh: Arc<Shared>, k: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut node = k;
    let mut n = 0u64;
    while !sh.stop_clients.is_cancelled() {
        n += 1;
        let id = uuid::Uuid::from_u128(rng.u128(..)).to_string();
        let invoked = sh.clock.now();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut acked = None;
        let mut returned = invoked;
        loop {
            let mut c = client(sh.addr(node));
            let r = c
                .send_message(pb::SendMessageRequest {
                    room: ROOM.into(),
                    author: format!("writer-{k}"),
                    text: format!("w{k} #{n}"),
                    client_request_id: id.clone(),
                })
                .await;
            match r {
                Ok(resp) => {
                    if let Some(m) = resp.into_inner().message {
                        acked = Some(m.seq);
                        returned = sh.clock.now();
                    }
                    break;
                }
                Err(st) if retryable(&st) && Instant::now() < deadline => {
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(st) => {
                    tracing::warn!(code = ?st.code(), msg = st.message(), "send gave up");
                    break;
                }
            }
        }
        sh.record(Op::Send {
            id,
            invoked,
            returned,
            acked,
        });
        pause(&sh, Duration::from_millis(20 + rng.u64(0..40))).await;
    }
}

/// Page size of tail reads; a full page is not a complete tail, so it is not recorded.
const READ_LIMIT: u32 = 1000;

/// One reader: linearizable reads of the room's last few messages.
pub(super) async fn reader(sh: Arc<Shared>, k: usize) {
    let mut node = k;
    let mut known_len = 0u64;
    while !sh.stop_clients.is_cancelled() {
        let from_seq = known_len.saturating_sub(5).max(1);
        let invoked = sh.clock.now();
        let r = client(sh.addr(node))
            .get_history(pb::GetHistoryRequest {
                room: ROOM.into(),
                from_seq,
                limit: READ_LIMIT,
                consistency: pb::Consistency::Linearizable as i32,
                ..Default::default()
            })
            .await;
        let returned = sh.clock.now();
        match r {
            Ok(resp) => {
                let msgs = resp.into_inner().messages;
                if msgs.len() < READ_LIMIT as usize {
                    known_len = from_seq - 1 + msgs.len() as u64;
                    let ids = msgs.into_iter().map(|m| m.id).collect();
                    sh.record(Op::Read {
                        invoked,
                        returned,
                        from_seq,
                        ids,
                    });
                }
            }
            // The room does not exist yet: a linearizable answer that it is empty.
            Err(st) if st.code() == Code::NotFound && from_seq == 1 => {
                sh.record(Op::Read {
                    invoked,
                    returned,
                    from_seq: 1,
                    ids: Vec::new(),
                });
            }
            Err(_) => node += 1,
        }
        pause(&sh, Duration::from_millis(150)).await;
    }
}

/// One subscriber, starting on node `start`: records every (seq, id) exactly as delivered and
/// resumes from the next seq on another node when its stream breaks. Returns once it has seen
/// the whole room (`Shared::final_len`, set after convergence).
pub(super) async fn subscriber(sh: Arc<Shared>, start: usize) -> Subscription {
    let mut sub = Subscription {
        name: format!("sub@n{}", start + 1),
        from_seq: 1,
        seen: Vec::new(),
    };
    let mut node = start;
    let mut next = 1u64;
    let done = |next: u64| {
        let len = sh.final_len.load(Ordering::Relaxed);
        len != u64::MAX && next > len
    };
    loop {
        if done(next) {
            return sub;
        }
        let ch = crate::launcher::endpoint(&sh.addr(node).to_string())
            .map(|e| e.connect_timeout(Duration::from_millis(300)).connect_lazy())
            .unwrap_or_else(|_| unreachable_channel());
        let r = ChatServiceClient::new(ch)
            .subscribe(pb::SubscribeRequest {
                room: ROOM.into(),
                from_seq: next,
            })
            .await;
        if let Ok(stream) = r {
            let mut stream = stream.into_inner();
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if done(next) { return sub; }
                        continue;
                    }
                };
                match msg {
                    Ok(Some(m)) => {
                        next = m.seq + 1;
                        sub.seen.push((m.seq, m.id));
                    }
                    _ => break,
                }
            }
        }
        node += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a node's whole copy of the room (SEQUENTIAL, paginated): after convergence it is
/// stable, so pages form one consistent picture.
pub(super) async fn read_room(addr: SocketAddr) -> Result<Vec<(u64, MsgId)>, String> {
    let mut out = Vec::new();
    let mut from = 1u64;
    loop {
        let r = client(addr)
            .get_history(pb::GetHistoryRequest {
                room: ROOM.into(),
                from_seq: from,
                limit: READ_LIMIT,
                consistency: pb::Consistency::Sequential as i32,
                ..Default::default()
            })
            .await;
        let msgs = match r {
            Ok(r) => r.into_inner().messages,
            Err(st) if st.code() == Code::NotFound => return Ok(out),
            Err(st) => return Err(format!("{:?}: {}", st.code(), st.message())),
        };
        let n = msgs.len();
        for m in msgs {
            from = m.seq + 1;
            out.push((m.seq, m.id));
        }
        if n < READ_LIMIT as usize {
            return Ok(out);
        }
    }
}
