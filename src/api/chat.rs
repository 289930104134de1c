//! `ChatService`: validation, forwarding to the leader, linearizable and sequential reads,
//! subscriptions and the bidirectional chat.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{author_for, caller, Caller};
use super::convert::{self, decode_room_token, decode_seq_token, encode_room_token};
use super::follow::follow;
use super::{chat_status, node_status};
use crate::chat::{validate_room, Applied, ChatMessage, Command};
use crate::node::{NodeError, NodeHandle};
use crate::pb;
use crate::pb::chat_service_client::ChatServiceClient;
use crate::pb::Reason;
use crate::raft::Role;
use crate::tls::Credentials;

/// How long a write keeps retrying through elections before answering UNAVAILABLE.
const SUBMIT_DEADLINE: Duration = Duration::from_secs(8);
/// Timeout of one forwarded call to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a linearizable read waits for its read index.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a sequential read waits for `min_index` to be applied.
const MIN_INDEX_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// Per-stream buffer of outgoing messages (bounded; a slow client slows only its own stream).
const STREAM_BUFFER: usize = 256;
/// Sends in flight on one `SendStream` call. Past it the handler stops reading the call's
/// requests, so HTTP/2 flow control pushes back on the client: the bound on the memory and
/// driver work one call can hold.
pub const SEND_STREAM_MAX_IN_FLIGHT: usize = 1024;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The `ChatService` implementation.
#[derive(Clone)]
pub struct ChatApi {
    node: NodeHandle,
    /// Clients to leaders, by address; connected lazily and reused. std Mutex: never held
    /// across an await.
    leaders: Arc<Mutex<HashMap<String, ChatServiceClient<Channel>>>>,
    /// How this node dials the leader: plain, or TLS trusting the cluster CA (`run --ca`).
    /// Never a token of its own: a forward carries the client's.
    dial: Credentials,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl ChatApi {
    /// Serves chat for `node`.
    pub fn new(node: NodeHandle) -> Self {
        ChatApi {
            node,
            leaders: Arc::new(Mutex::new(HashMap::new())),
            dial: Credentials::plain(),
        }
    }

    /// Forwards to the leader with `dial` (TLS when the cluster's client listeners run TLS).
    pub fn with_dial(mut self, dial: Credentials) -> Self {
        self.dial = dial;
        self
    }

    fn leader_client(&self, addr: &str) -> Result<ChatServiceClient<Channel>, Status> {
        let mut map = self
            .leaders
            .lock()
            .map_err(|_| Status::internal("client cache lock poisoned"))?;
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ep = self
            .dial
            .endpoint(addr)
            .map_err(|e| Status::internal(format!("bad leader address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
        let c = ChatServiceClient::new(ep.connect_lazy());
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    async fn forward(
        &self,
        addr: &str,
        cmd: &Command,
        caller: Option<&Caller>,
    ) -> Result<Applied, Status> {
        let mut client = self.leader_client(addr)?;
        // The client's own credentials go along: the leader checks the same token, so the
        // author stays the authenticated user and a follower cannot vouch for anyone.
        let auth = caller.map(|c| &c.authorization);
        fn req<T>(t: T, auth: Option<&MetadataValue<Ascii>>) -> Request<T> {
            let mut r = Request::new(t);
            r.set_timeout(FORWARD_TIMEOUT);
            r.metadata_mut()
                .insert(pb::meta::FORWARDED, MetadataValue::from_static("1"));
            if let Some(a) = auth {
                r.metadata_mut()
                    .insert(crate::tls::AUTHORIZATION, a.clone());
            }
            r
        }
        match cmd.clone() {
            Command::Send {
                room,
                author,
                text,
                id,
                ..
            } => {
                let resp = client
                    .send_message(req(
                        pb::SendMessageRequest {
                            room,
                            author,
                            text,
                            client_request_id: id,
                        },
                        auth,
                    ))
                    .await?
                    .into_inner();
                let m = resp
                    .message
                    .ok_or_else(|| Status::internal("leader answered without a message"))?;
                let m = ChatMessage::try_from(m).map_err(|e| Status::internal(e.to_string()))?;
                Ok(Applied::Sent {
                    message: Arc::new(m),
                    duplicate: false,
                })
            }
            Command::CreateRoom { room } => {
                let resp = client
                    .create_room(req(pb::CreateRoomRequest { room }, auth))
                    .await?
                    .into_inner();
                Ok(Applied::RoomCreated {
                    created: resp.created,
                    message_count: resp.room.map_or(0, |r| r.message_count),
                })
            }
        }
    }

    /// Commits `cmd` through the leader (this node or a forward), retrying through elections
    /// until [`SUBMIT_DEADLINE`]. Safe to retry because every send carries a request id.
    ///
    /// A refusal with reason `not-leader`, `no-leader`, `retry` or `overloaded` promises that
    /// this call proposed nothing, so a client may count the send as failed. Once any attempt
    /// may have been proposed (a proposal this node's driver failed after appending it, or a
    /// forward that timed out or came back `outcome-unknown`), the call answers
    /// `outcome-unknown` instead ([`settle`]).
    async fn submit(
        &self,
        cmd: Command,
        forwarded: bool,
        budget: Duration,
        caller: Option<&Caller>,
    ) -> Result<Applied, Status> {
        let deadline = Instant::now() + budget;
        let me = self.node.config().id;
        // Whether an attempt so far may have been proposed (then a refusal must not claim
        // that nothing happened).
        let mut ambiguous = false;
        loop {
            let last: Status;
            if self.node.role() == Role::Leader {
                match self.node.propose(&cmd).await {
                    Ok(a) => return Ok(a),
                    Err(
                        e @ (NodeError::NotLeader { .. }
                        | NodeError::Unavailable(_)
                        | NodeError::OutcomeUnknown(_)
                        | NodeError::Overloaded(_)),
                    ) => {
                        // The driver answers NotLeader both before proposing and for proposals
                        // it had appended when leadership was lost: it may have been proposed.
                        ambiguous |= matches!(
                            e,
                            NodeError::NotLeader { .. } | NodeError::OutcomeUnknown(_)
                        );
                        last = node_status(e);
                    }
                    Err(e) => return Err(settle(node_status(e), ambiguous)),
                }
            } else if forwarded {
                // The originating node retries; never forward twice.
                return Err(settle(
                    node_status(NodeError::NotLeader {
                        leader: self.node.leader(),
                    }),
                    ambiguous,
                ));
            } else if let Some((id, addr)) = self.node.leader().filter(|(id, _)| *id != me) {
                // The leader's client port: `--route` overrides only peer (Raft) links.
                match self.forward(&addr, &cmd, caller).await {
                    Ok(a) => return Ok(a),
                    Err(st)
                        if matches!(
                            st.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::DeadlineExceeded
                                | tonic::Code::Cancelled
                                | tonic::Code::Unknown
                        ) =>
                    {
                        tracing::debug!(leader = id, code = ?st.code(), "forward failed, retrying");
                        ambiguous |= !nothing_proposed(&st);
                        last = st;
                    }
                    Err(st) => return Err(settle(st, ambiguous)),
                }
            } else {
                last = node_status(NodeError::NotLeader { leader: None });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(settle(last, ambiguous));
            }
            // Wait for a status change (new leader) or a short pause, whichever comes first.
            self.node
                .status_changed((deadline - now).min(Duration::from_millis(100)))
                .await;
        }
    }

    /// Validates and commits a send; returns the stored (or original, on a retry) message.
    /// With authentication on, the author is the `caller`'s user ([`author_for`]).
    pub async fn send(
        &self,
        req: pb::SendMessageRequest,
        forwarded: bool,
        budget: Duration,
        caller: Option<&Caller>,
    ) -> Result<pb::Message, Status> {
        let author = author_for(caller, req.author)?;
        let id = if req.client_request_id.is_empty() {
            server_message_id()
        } else {
            req.client_request_id
        };
        let cmd = Command::Send {
            room: req.room,
            author,
            text: req.text,
            id,
            sent_at_unix_ms: now_ms(),
        };
        cmd.validate(self.node.config().max_text_bytes)
            .map_err(chat_status)?;
        match self.submit(cmd, forwarded, budget, caller).await? {
            Applied::Sent { message, .. } => Ok(pb::Message::from(&message)),
            other => Err(Status::internal(format!(
                "unexpected outcome of a send: {other:?}"
            ))),
        }
    }

    async fn read_barrier(&self, consistency: i32, min_index: u64) -> Result<(), Status> {
        match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Sequential) => {
                if min_index > 0 {
                    tokio::time::timeout(MIN_INDEX_TIMEOUT, self.node.wait_applied(min_index))
                        .await
                        .map_err(|_| {
                            Status::unavailable(format!(
                                "index {min_index} not applied on this node in time"
                            ))
                        })?
                        .map_err(node_status)?;
                }
                Ok(())
            }
            Ok(pb::Consistency::Unspecified | pb::Consistency::Linearizable) => self
                .node
                .linearizable_barrier(READ_TIMEOUT)
                .await
                .map(|_| ())
                .map_err(node_status),
            Err(_) => Err(Status::invalid_argument(format!(
                "unknown consistency {consistency}"
            ))),
        }
    }
}

/// Whether a refusal promises that nothing was proposed: UNAVAILABLE (or RESOURCE_EXHAUSTED,
/// for `overloaded`) with one of the reasons [`ChatApi::submit`] gives only then.
fn nothing_proposed(st: &Status) -> bool {
    matches!(
        st.code(),
        tonic::Code::Unavailable | tonic::Code::ResourceExhausted
    ) && matches!(
        Reason::of(st),
        Some(Reason::NotLeader | Reason::NoLeader | Reason::Retry | Reason::Overloaded)
    )
}

/// The status a submit answers with: `st`, unless it claims that nothing was proposed while an
/// earlier attempt may have been; then UNAVAILABLE with reason `outcome-unknown` (the leader
/// hint kept), so that a client never counts a send as failed that may yet appear.
fn settle(st: Status, ambiguous: bool) -> Status {
    if !ambiguous || !nothing_proposed(&st) {
        return st;
    }
    let mut out = Status::unavailable(format!(
        "outcome unknown: an earlier attempt may have been proposed; last: {}",
        st.message()
    ));
    Reason::OutcomeUnknown.attach(&mut out);
    if let Some(l) = st.metadata().get(pb::meta::LEADER) {
        out.metadata_mut().insert(pb::meta::LEADER, l.clone());
    }
    out
}

/// A request's page size: 0 means the default, anything above the cap is cut to it.
fn page_limit(limit: u32) -> usize {
    let n = match limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    n as usize
}

fn forwarded<T>(r: &Request<T>) -> bool {
    r.metadata().contains_key(pb::meta::FORWARDED)
}

/// The client's deadline (`grpc-timeout` header), if it sent one, so that retries inside the
/// server give up in time to answer UNAVAILABLE instead of letting the call expire.
fn client_timeout<T>(r: &Request<T>) -> Option<Duration> {
    let v = r.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How long a write may keep retrying: our own bound, or 80% of the client's deadline.
fn submit_budget<T>(r: &Request<T>) -> Duration {
    match client_timeout(r) {
        Some(t) => SUBMIT_DEADLINE.min(t.mul_f64(0.8)),
        None => SUBMIT_DEADLINE,
    }
}

/// A message id for a send that came without one: a random (version 4) UUID. The bits come
/// from the thread's fast generator (`fastrand`: 122 random bits, seeded per thread) rather
/// than a `getrandom` system call per message, which was 1 % of the leader's CPU under load:
/// the id must be unique, not unpredictable (a client that needs idempotent retries sends its
/// own).
fn server_message_id() -> String {
    let bytes = fastrand::u128(..).to_le_bytes();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// One send of a `SendStream` call, answered as its response.
async fn tagged_send(
    api: ChatApi,
    r: pb::SendStreamRequest,
    fwd: bool,
    caller: Option<Caller>,
) -> pb::SendStreamResponse {
    let result = match r.send {
        Some(send) => api.send(send, fwd, SUBMIT_DEADLINE, caller.as_ref()).await,
        None => Err(Status::invalid_argument("SendStreamRequest without a send")),
    };
    match result {
        Ok(m) => pb::SendStreamResponse {
            tag: r.tag,
            message: Some(m),
            error: None,
        },
        Err(st) => pb::SendStreamResponse {
            tag: r.tag,
            message: None,
            error: Some(pb::SendError {
                code: st.code() as i32,
                message: st.message().to_string(),
            }),
        },
    }
}

/// The body of a `SendStream` call: reads sends while fewer than
/// [`SEND_STREAM_MAX_IN_FLIGHT`] are pending, commits them concurrently (one task for the whole
/// call: the driver's replies wake it once for a batch), and writes each answer as it comes.
/// Ends when the client closes its side and every answer is out, when the client goes away, or
/// when the node drains.
async fn pipeline_sends(
    api: ChatApi,
    mut inbound: Streaming<pb::SendStreamRequest>,
    tx: mpsc::Sender<Result<pb::SendStreamResponse, Status>>,
    draining: tokio_util::sync::CancellationToken,
    fwd: bool,
    caller: Option<Caller>,
) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut pending = FuturesUnordered::new();
    let mut reading = true;
    loop {
        if !reading && pending.is_empty() {
            return;
        }
        tokio::select! {
            Some(resp) = pending.next(), if !pending.is_empty() => {
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            m = inbound.message(), if reading && pending.len() < SEND_STREAM_MAX_IN_FLIGHT => {
                match m {
                    Ok(Some(r)) => pending.push(tagged_send(api.clone(), r, fwd, caller.clone())),
                    // The client is done sending; answer what is pending.
                    Ok(None) => reading = false,
                    // The client went away (or sent garbage): nobody to answer.
                    Err(_) => return,
                }
            }
            () = draining.cancelled() => break,
        }
    }
    let _ = tx
        .send(Err(Status::unavailable("node is shutting down")))
        .await;
}

#[tonic::async_trait]
impl pb::chat_service_server::ChatService for ChatApi {
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let fwd = forwarded(&request);
        let budget = submit_budget(&request);
        let who = caller(&request);
        let m = self
            .send(request.into_inner(), fwd, budget, who.as_ref())
            .await?;
        Ok(Response::new(pb::SendMessageResponse { message: Some(m) }))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let r = request.into_inner();
        validate_room(&r.room).map_err(chat_status)?;
        let from = if r.page_token.is_empty() {
            r.from_seq
        } else {
            decode_seq_token(&r.page_token)?
        };
        let limit = page_limit(r.limit);
        self.read_barrier(r.consistency, r.min_index).await?;
        // Plan under the lock, read the disk outside it on a blocking thread.
        let (plan, room_len) = self
            .node
            .read(|sm| {
                let plan = sm.history_read(&r.room, from, limit, r.reverse)?;
                Ok((plan, sm.room_len(&r.room).unwrap_or(0)))
            })
            .map_err(node_status)?
            .map_err(chat_status)?;
        let msgs = tokio::task::spawn_blocking(move || plan.load())
            .await
            .map_err(|e| Status::internal(format!("history read: {e}")))?
            .map_err(chat_status)?;
        let next_page_token = match msgs.last() {
            Some(last) if msgs.len() == limit => {
                if r.reverse && last.seq > 1 {
                    convert::encode_seq_token(last.seq - 1)
                } else if !r.reverse && last.seq < room_len {
                    convert::encode_seq_token(last.seq + 1)
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::GetHistoryResponse {
            messages: msgs.iter().map(pb::Message::from).collect(),
            next_page_token,
        }))
    }

    type SendStreamStream = BoxStream<pb::SendStreamResponse>;

    async fn send_stream(
        &self,
        request: Request<Streaming<pb::SendStreamRequest>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        let fwd = forwarded(&request);
        let who = caller(&request);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let draining = self.node.draining();
        self.node.spawn(pipeline_sends(
            self.clone(),
            inbound,
            tx,
            draining,
            fwd,
            who,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = BoxStream<pb::Message>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        validate_room(&r.room).map_err(chat_status)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        self.node
            .spawn(follow(self.node.clone(), r.room, r.from_seq, tx, |m| m));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ChatStream = BoxStream<pb::ChatEvent>;

    async fn chat(
        &self,
        request: Request<Streaming<pb::ChatRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let who = caller(&request);
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("chat stream closed before naming a room"))?;
        validate_room(&first.room).map_err(chat_status)?;
        let room = first.room.clone();
        let start = if first.from_seq == 0 {
            self.node
                .read(|sm| sm.room_len(&room).unwrap_or(0) + 1)
                .map_err(node_status)?
        } else {
            first.from_seq
        };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        self.node.spawn(follow(
            self.node.clone(),
            room.clone(),
            start,
            tx.clone(),
            |m| pb::ChatEvent {
                event: Some(pb::chat_event::Event::Message(m)),
            },
        ));
        let api = self.clone();
        let draining = self.node.draining();
        self.node.spawn(async move {
            let mut pending = Some(first);
            loop {
                let r = match pending.take() {
                    Some(r) => r,
                    None => tokio::select! {
                        m = inbound.message() => match m {
                            Ok(Some(r)) => r,
                            // Client closed its side or went away: a normal end.
                            _ => return,
                        },
                        _ = draining.cancelled() => return,
                    },
                };
                if r.text.is_empty() {
                    continue;
                }
                let req = pb::SendMessageRequest {
                    room: if r.room.is_empty() {
                        room.clone()
                    } else {
                        r.room
                    },
                    author: r.author,
                    text: r.text,
                    client_request_id: r.client_request_id,
                };
                let event = match api.send(req, false, SUBMIT_DEADLINE, who.as_ref()).await {
                    Ok(m) => pb::chat_event::Event::Sent(m),
                    Err(st) => {
                        pb::chat_event::Event::Error(format!("{:?}: {}", st.code(), st.message()))
                    }
                };
                if tx
                    .send(Ok(pb::ChatEvent { event: Some(event) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_rooms(
        &self,
        request: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        let r = request.into_inner();
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(decode_room_token(&r.page_token)?)
        };
        let limit = page_limit(r.limit);
        let (rooms, more) = self
            .node
            .read(|sm| {
                let mut rooms = sm.list_rooms(after.as_deref(), limit + 1);
                let more = rooms.len() > limit;
                rooms.truncate(limit);
                (rooms, more)
            })
            .map_err(node_status)?;
        let next_page_token = match rooms.last() {
            Some(last) if more => encode_room_token(&last.name),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListRoomsResponse {
            rooms: rooms.into_iter().map(pb::RoomInfo::from).collect(),
            next_page_token,
        }))
    }

    async fn create_room(
        &self,
        request: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::CreateRoomResponse>, Status> {
        let fwd = forwarded(&request);
        let budget = submit_budget(&request);
        let who = caller(&request);
        let room = request.into_inner().room;
        validate_room(&room).map_err(chat_status)?;
        match self
            .submit(
                Command::CreateRoom { room: room.clone() },
                fwd,
                budget,
                who.as_ref(),
            )
            .await?
        {
            Applied::RoomCreated {
                created,
                message_count,
            } => Ok(Response::new(pb::CreateRoomResponse {
                created,
                room: Some(pb::RoomInfo {
                    name: room,
                    message_count,
                }),
            })),
            other => Err(Status::internal(format!(
                "unexpected outcome of create-room: {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{nothing_proposed, server_message_id, settle, Reason, Status};
    use crate::pb;

    fn refused(reason: Reason) -> Status {
        let mut st = Status::unavailable("refused");
        reason.attach(&mut st);
        st
    }

    /// A refusal that claims nothing was proposed is turned into `outcome-unknown` once an
    /// earlier attempt of the call may have been proposed; other answers pass unchanged.
    #[test]
    fn a_refusal_after_an_ambiguous_attempt_says_outcome_unknown() {
        for r in [
            Reason::NotLeader,
            Reason::NoLeader,
            Reason::Retry,
            Reason::Overloaded,
        ] {
            let mut st = refused(r);
            st.metadata_mut()
                .insert(pb::meta::LEADER, "2=127.0.0.1:1".parse().unwrap());
            assert!(nothing_proposed(&st));
            assert_eq!(Reason::of(&settle(st.clone(), false)), Some(r));
            let out = settle(st, true);
            assert_eq!(out.code(), tonic::Code::Unavailable);
            assert_eq!(Reason::of(&out), Some(Reason::OutcomeUnknown), "{r:?}");
            assert!(out.metadata().get(pb::meta::LEADER).is_some(), "hint kept");
        }
        let mut full = Status::resource_exhausted("64 MiB uncommitted");
        Reason::Overloaded.attach(&mut full);
        assert!(nothing_proposed(&full));
        assert_eq!(
            Reason::of(&settle(full, true)),
            Some(Reason::OutcomeUnknown)
        );
        for st in [
            refused(Reason::OutcomeUnknown),
            refused(Reason::ShuttingDown),
            Status::deadline_exceeded("late"),
            Status::unavailable("connection refused"),
            Status::invalid_argument("empty text"),
        ] {
            assert!(!nothing_proposed(&st), "{st:?}");
            let out = settle(st.clone(), true);
            assert_eq!((out.code(), Reason::of(&out)), (st.code(), Reason::of(&st)));
        }
    }

    #[test]
    fn server_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| server_message_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 4, "{id}");
        }
    }
}
