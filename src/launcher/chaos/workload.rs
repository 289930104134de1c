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
use crate::check::{MsgId, Op, SendFailure, Subscription};
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

/// Whether a refused attempt certainly did nothing: refused before anything was proposed. The
/// server promises that for the reasons `not-leader`, `no-leader`, `retry` and `overloaded`
/// (it answers `outcome-unknown` instead once any attempt of the call may have been proposed),
/// and for requests refused as invalid or unauthorized. Everything else (a timeout, a lost
/// connection, `outcome-unknown`, `shutting-down`, an internal error) may have taken effect.
pub(super) fn refused_before_proposing(st: &tonic::Status) -> bool {
    use pb::Reason;
    match st.code() {
        Code::Unavailable | Code::ResourceExhausted => matches!(
            Reason::of(st),
            Some(Reason::NotLeader | Reason::NoLeader | Reason::Retry | Reason::Overloaded)
        ),
        Code::InvalidArgument
        | Code::OutOfRange
        | Code::Unauthenticated
        | Code::PermissionDenied
        | Code::NotFound => true,
        _ => false,
    }
}

/// The canonical gRPC name of a code (`UNAVAILABLE`), as the history file spells it.
pub(super) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// How long a writer retries one message. Writer 0 is impatient, so that faults leave sends it
/// gave up on (definite failures and unknown outcomes) for the check to hold to their rules;
/// the others almost always get through.
fn send_budget(k: usize) -> Duration {
    if k == 0 {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(20)
    }
}

/// One writer: sends until told to stop; each message is retried with its id until it is
/// acknowledged or its budget ([`send_budget`]) runs out. A send never acknowledged is recorded
/// with its last error and whether it failed definitely (every attempt
/// [`refused_before_proposing`]).
pub(super) async fn writer(sh: Arc<Shared>, k: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let client_name = format!("writer-{k}");
    let mut node = k;
    let mut n = 0u64;
    while !sh.stop_clients.is_cancelled() {
        n += 1;
        let id = uuid::Uuid::from_u128(rng.u128(..)).to_string();
        let invoked = sh.clock.now();
        let deadline = Instant::now() + send_budget(k);
        let mut acked = None;
        // Until an attempt may have been proposed, the send has definitely done nothing.
        let mut definite = true;
        let mut last: Option<tonic::Status> = None;
        loop {
            let mut c = client(sh.addr(node));
            let r = c
                .send_message(pb::SendMessageRequest {
                    room: ROOM.into(),
                    author: client_name.clone(),
                    text: format!("w{k} #{n}"),
                    client_request_id: id.clone(),
                })
                .await;
            match r {
                Ok(resp) => {
                    match resp.into_inner().message {
                        Some(m) => acked = Some(m.seq),
                        // An answer without the message: it did something, but what is unknown.
                        None => {
                            definite = false;
                            last = Some(tonic::Status::internal("answer without a message"));
                        }
                    }
                    break;
                }
                Err(st) => {
                    definite &= refused_before_proposing(&st);
                    let again = retryable(&st) && Instant::now() < deadline;
                    if !again {
                        tracing::warn!(code = ?st.code(), msg = st.message(), "send gave up");
                    }
                    last = Some(st);
                    if !again {
                        break;
                    }
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let returned = sh.clock.now();
        let failure = match (acked, last) {
            (Some(_), _) | (None, None) => None,
            (None, Some(st)) => Some(SendFailure {
                definite,
                code: code_name(st.code()).to_string(),
                reason: pb::Reason::of(&st).map(|r| r.as_str().to_string()),
                gave_up: returned,
            }),
        };
        sh.record(Op::Send {
            id,
            invoked,
            returned,
            acked,
            client: client_name.clone(),
            failure,
        });
        pause(&sh, Duration::from_millis(20 + rng.u64(0..40))).await;
    }
}

/// Page size of tail reads; a full page is not a complete tail, so it is not recorded.
const READ_LIMIT: u32 = 1000;

/// One reader: linearizable reads of the room's last few messages.
pub(super) async fn reader(sh: Arc<Shared>, k: usize) {
    let client_name = format!("reader-{k}");
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
                    let seqs = msgs.iter().map(|m| m.seq).collect();
                    let ids = msgs.into_iter().map(|m| m.id).collect();
                    sh.record(Op::Read {
                        invoked,
                        returned,
                        from_seq,
                        ids,
                        seqs,
                        client: client_name.clone(),
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
                    seqs: Vec::new(),
                    client: client_name.clone(),
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
