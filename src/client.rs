//! The client side of `raft_client`: send, tail, chat and status against one or more nodes,
//! failing over between the addresses given.
//!
//! Sends carry a client request id generated once per message, so a retry on another node after
//! a failure can never duplicate the message.

use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

use crate::pb;
use crate::pb::chat_service_client::ChatServiceClient;
use crate::pb::cluster_client::ClusterClient;
use crate::tls::Credentials;

/// A channel to one node that adds the client's token (if any) to every call.
pub type AuthChannel = InterceptedService<Channel, Credentials>;

/// How long a client command keeps failing over before giving up.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(20);
/// How long one membership call may take: adding a voter waits up to 30 s for it to catch up.
const MEMBERSHIP_CALL_TIMEOUT: Duration = Duration::from_secs(45);
/// How long a node may take to answer a backup call with its first bytes (a barrier and a
/// snapshot); the stream itself has no deadline.
const BACKUP_OPEN_TIMEOUT: Duration = Duration::from_secs(120);
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Errors of client commands.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No address was given.
    #[error("no node address given")]
    NoAddress,
    /// An address is not usable.
    #[error("bad address {0:?}: {1}")]
    BadAddress(String, String),
    /// The server refused the call for a reason a retry cannot fix.
    #[error("{code:?}: {message}")]
    Status {
        /// gRPC code.
        code: Code,
        /// Server message.
        message: String,
    },
    /// Every node failed until the deadline.
    #[error("no node answered in time; last error: {0}")]
    Exhausted(String),
    /// Terminal I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether another attempt (on this node or the next) may succeed. RESOURCE_EXHAUSTED is
/// retried only when the server says it is overloaded (a full queue, a leader with too many
/// uncommitted entries), not when a request is too large.
fn retryable(st: &tonic::Status) -> bool {
    matches!(
        st.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    ) || (st.code() == Code::ResourceExhausted
        && pb::Reason::of(st) == Some(pb::Reason::Overloaded))
}

/// A failover client over several node addresses.
pub struct Client {
    addrs: Vec<String>,
    current: usize,
    creds: Credentials,
}

impl Client {
    /// Parses a comma-separated address list (`host:port` or `http://host:port`), for a
    /// cluster without TLS or authentication.
    pub fn new(addrs: &str) -> Result<Client, ClientError> {
        Self::with_credentials(addrs, Credentials::plain())
    }

    /// Like [`Client::new`], dialling with `creds` (TLS trusting the cluster CA, a token):
    /// `host:port` becomes `https://host:port` under TLS.
    pub fn with_credentials(addrs: &str, creds: Credentials) -> Result<Client, ClientError> {
        let addrs: Vec<String> = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| creds.url(a))
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::NoAddress);
        }
        for a in &addrs {
            creds
                .endpoint(a)
                .map_err(|e| ClientError::BadAddress(a.clone(), e))?;
        }
        Ok(Client {
            addrs,
            current: 0,
            creds,
        })
    }

    fn channel(&self, i: usize) -> Result<AuthChannel, ClientError> {
        self.channel_with_timeout(i, Duration::from_secs(10))
    }

    fn channel_with_timeout(
        &self,
        i: usize,
        timeout: Duration,
    ) -> Result<AuthChannel, ClientError> {
        let a = &self.addrs[i % self.addrs.len()];
        let ch = self
            .creds
            .endpoint(a)
            .map_err(|e| ClientError::BadAddress(a.clone(), e))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(timeout)
            .connect_lazy();
        Ok(InterceptedService::new(ch, self.creds.clone()))
    }

    /// Points the client at the leader named in an UNAVAILABLE answer's `x-rustyraft-leader`
    /// metadata (adding its address to the list); rotates to the next address when there is
    /// none. Returns whether a leader hint was followed.
    fn follow_leader_hint(&mut self, st: &tonic::Status) -> bool {
        let hint = st
            .metadata()
            .get(pb::meta::LEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once('='))
            .map(|(_, a)| a.trim().to_string())
            .filter(|a| !a.is_empty());
        let Some(addr) = hint else {
            self.rotate();
            return false;
        };
        let url = self.creds.url(&addr);
        if self.creds.endpoint(&url).is_err() {
            self.rotate();
            return false;
        }
        match self.addrs.iter().position(|a| *a == url) {
            Some(i) => self.current = i,
            None => {
                self.addrs.push(url);
                self.current = self.addrs.len() - 1;
            }
        }
        true
    }

    /// Runs one membership call against the leader: follows leader redirects, and retries
    /// on UNAVAILABLE (no leader, a new leader not ready yet, a node down) until `deadline`;
    /// DEADLINE_EXCEEDED is returned at once (`--join` retries it itself).
    /// When an earlier try's outcome was unknown (leadership lost mid-change) and a retry is
    /// refused because the change already holds (a removed node is NOT_FOUND, a promoted one is
    /// already a voter), the call succeeds: the first try did it.
    pub async fn membership(
        &mut self,
        call: &MembershipCall,
        deadline: Duration,
    ) -> Result<MembershipReply, ClientError> {
        let deadline = tokio::time::Instant::now() + deadline;
        let mut ambiguous = false;
        loop {
            let ch = self.channel_with_timeout(self.current, MEMBERSHIP_CALL_TIMEOUT)?;
            let mut c = ClusterClient::new(ch);
            let res = match call {
                MembershipCall::Add {
                    id,
                    addr,
                    peer_addr,
                    learner,
                } => c
                    .add_member(pb::AddMemberRequest {
                        id: *id,
                        addr: addr.clone(),
                        learner: *learner,
                        peer_addr: peer_addr.clone(),
                    })
                    .await
                    .map(|r| MembershipReply::Conf(r.into_inner())),
                MembershipCall::Promote { id } => c
                    .promote_learner(pb::PromoteLearnerRequest { id: *id })
                    .await
                    .map(|r| MembershipReply::Conf(r.into_inner())),
                MembershipCall::Remove { id } => c
                    .remove_member(pb::RemoveMemberRequest { id: *id })
                    .await
                    .map(|r| MembershipReply::Conf(r.into_inner())),
                MembershipCall::TransferLeader { id } => c
                    .transfer_leader(pb::TransferLeaderRequest { id: *id })
                    .await
                    .map(|r| MembershipReply::Leader(r.into_inner().leader_id)),
            };
            let st = match res {
                Ok(r) => return Ok(r),
                Err(st) => st,
            };
            let already_done = ambiguous
                && matches!(
                    (call, st.code()),
                    (MembershipCall::Remove { .. }, Code::NotFound)
                        | (MembershipCall::Promote { .. }, Code::FailedPrecondition)
                );
            if already_done {
                if let Ok(conf) = self.conf_if_done(call).await {
                    return Ok(MembershipReply::Conf(conf));
                }
            }
            // DEADLINE_EXCEEDED is final here: from the server it means catch-up ran out (a
            // retry would wait as long again); locally, the call already took its 45 s.
            let again = retryable(&st) && st.code() != Code::DeadlineExceeded;
            if !again || tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Status {
                    code: st.code(),
                    message: st.message().to_string(),
                });
            }
            if pb::Reason::of(&st) == Some(pb::Reason::OutcomeUnknown)
                || st.code() != Code::Unavailable
            {
                ambiguous = true;
            }
            if !self.follow_leader_hint(&st) {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// The membership as the current node reports it, if `call`'s change already holds there.
    async fn conf_if_done(&self, call: &MembershipCall) -> Result<pb::MembershipResponse, ()> {
        let mut c = ClusterClient::new(self.channel(self.current).map_err(|_| ())?);
        let s = c
            .status(pb::StatusRequest {})
            .await
            .map_err(|_| ())?
            .into_inner();
        let done = match call {
            MembershipCall::Remove { id } => !s.voters.contains(id) && !s.learners.contains(id),
            MembershipCall::Promote { id } => s.voters.contains(id),
            _ => false,
        };
        if !done {
            return Err(());
        }
        Ok(pb::MembershipResponse {
            conf: Some(pb::ConfState {
                voters: s.voters,
                learners: s.learners,
                addresses: s.addresses,
                peer_addresses: s.peer_addresses,
            }),
            index: 0,
        })
    }

    fn rotate(&mut self) {
        self.current = (self.current + 1) % self.addrs.len();
    }

    /// Sends one message; retries on other nodes with the same request id until committed.
    pub async fn send(
        &mut self,
        room: &str,
        author: &str,
        text: &str,
        request_id: Option<String>,
    ) -> Result<pb::Message, ClientError> {
        let id = request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let deadline = tokio::time::Instant::now() + FAILOVER_DEADLINE;
        loop {
            let mut c = ChatServiceClient::new(self.channel(self.current)?);
            let res = c
                .send_message(pb::SendMessageRequest {
                    room: room.into(),
                    author: author.into(),
                    text: text.into(),
                    client_request_id: id.clone(),
                })
                .await;
            match res {
                Ok(r) => {
                    return r.into_inner().message.ok_or(ClientError::Status {
                        code: Code::Internal,
                        message: "reply without a message".into(),
                    })
                }
                Err(st) if retryable(&st) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ClientError::Exhausted(st.message().to_string()));
                    }
                    self.rotate();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(st) => {
                    return Err(ClientError::Status {
                        code: st.code(),
                        message: st.message().to_string(),
                    })
                }
            }
        }
    }

    /// Follows a room from `from_seq`, calling `on_message` for each message in order. On a
    /// node failure it resubscribes elsewhere from the next seq, so output has no gaps and no
    /// duplicates. Returns only on a non-retryable error.
    pub async fn tail(
        &mut self,
        room: &str,
        from_seq: u64,
        mut on_message: impl FnMut(&pb::Message),
    ) -> Result<(), ClientError> {
        let mut next = from_seq.max(1);
        let mut failures_since_progress = 0u32;
        loop {
            let mut c = ChatServiceClient::new(self.channel(self.current)?);
            let res = c
                .subscribe(pb::SubscribeRequest {
                    room: room.into(),
                    from_seq: next,
                })
                .await;
            let err = match res {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(m)) => {
                                if m.seq == next {
                                    on_message(&m);
                                    next += 1;
                                    failures_since_progress = 0;
                                }
                            }
                            Ok(None) => break tonic::Status::unavailable("stream ended"),
                            Err(st) => break st,
                        }
                    }
                }
                Err(st) => st,
            };
            if !retryable(&err) {
                return Err(ClientError::Status {
                    code: err.code(),
                    message: err.message().to_string(),
                });
            }
            failures_since_progress += 1;
            if failures_since_progress > 100 {
                return Err(ClientError::Exhausted(err.message().to_string()));
            }
            self.rotate();
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// One page of history, failing over between nodes on UNAVAILABLE.
    pub async fn history(
        &mut self,
        req: pb::GetHistoryRequest,
    ) -> Result<pb::GetHistoryResponse, ClientError> {
        let deadline = tokio::time::Instant::now() + FAILOVER_DEADLINE;
        loop {
            let mut c = ChatServiceClient::new(self.channel(self.current)?);
            match c.get_history(req.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(st) if retryable(&st) && tokio::time::Instant::now() < deadline => {
                    self.rotate();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(st) => {
                    return Err(ClientError::Status {
                        code: st.code(),
                        message: st.message().to_string(),
                    })
                }
            }
        }
    }

    /// Highest seq of a room on the first node that answers (0 for an unknown room).
    pub async fn last_seq(&mut self, room: &str) -> Result<u64, ClientError> {
        for _ in 0..self.addrs.len() {
            let mut c = ChatServiceClient::new(self.channel(self.current)?);
            let res = c
                .get_history(pb::GetHistoryRequest {
                    room: room.into(),
                    limit: 1,
                    reverse: true,
                    ..Default::default()
                })
                .await;
            match res {
                Ok(r) => return Ok(r.into_inner().messages.first().map_or(0, |m| m.seq)),
                Err(st) if st.code() == Code::NotFound => return Ok(0),
                Err(st) if retryable(&st) => self.rotate(),
                Err(st) => {
                    return Err(ClientError::Status {
                        code: st.code(),
                        message: st.message().to_string(),
                    })
                }
            }
        }
        Err(ClientError::Exhausted("no node answered".into()))
    }

    /// Opens a backup stream (`Cluster.Backup`) on the first node that serves one, failing over
    /// on errors a retry may fix (no leader yet, a node down) until the failover deadline.
    /// The stream's chunks are the backup file's bytes (see `node::backup`).
    pub async fn backup(&mut self) -> Result<tonic::Streaming<pb::BackupChunk>, ClientError> {
        let deadline = tokio::time::Instant::now() + FAILOVER_DEADLINE;
        loop {
            let ch = self.channel_with_timeout(self.current, BACKUP_OPEN_TIMEOUT)?;
            let st = match ClusterClient::new(ch).backup(pb::BackupRequest {}).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(st) => st,
            };
            if !retryable(&st) || tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Status {
                    code: st.code(),
                    message: st.message().to_string(),
                });
            }
            self.rotate();
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Status of every node in the list (an unreachable node gives an error entry).
    pub async fn status_all(&self) -> Vec<(String, Result<pb::StatusResponse, String>)> {
        let mut out = Vec::new();
        for (i, a) in self.addrs.iter().enumerate() {
            let res = match self.channel(i) {
                Ok(ch) => {
                    let mut c = ClusterClient::new(ch);
                    let mut req = tonic::Request::new(pb::StatusRequest {});
                    req.set_timeout(Duration::from_secs(2));
                    c.status(req)
                        .await
                        .map(|r| r.into_inner())
                        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
                }
                Err(e) => Err(e.to_string()),
            };
            let shown = a.split_once("://").map_or(a.as_str(), |(_, rest)| rest);
            out.push((shown.to_string(), res));
        }
        out
    }
}

/// One membership call of `raft_client cluster` (and of a node's `--join`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipCall {
    /// `AddMember`.
    Add {
        /// New node id.
        id: u64,
        /// Its client host:port.
        addr: String,
        /// Its peer host:port; empty: the client port + 1000.
        peer_addr: String,
        /// Stay a learner.
        learner: bool,
    },
    /// `PromoteLearner`.
    Promote {
        /// The learner.
        id: u64,
    },
    /// `RemoveMember`.
    Remove {
        /// The member.
        id: u64,
    },
    /// `TransferLeader` (0: the most up-to-date other voter).
    TransferLeader {
        /// The target voter.
        id: u64,
    },
}

/// What a membership call answered.
#[derive(Clone, Debug, PartialEq)]
pub enum MembershipReply {
    /// The membership after a change (index 0: nothing had to change).
    Conf(pb::MembershipResponse),
    /// The new leader after a transfer.
    Leader(u64),
}

/// A membership on one line per role: `voters: 1=127.0.0.1:50051 2=...` / `learners: ...`.
pub fn format_conf(c: &pb::ConfState) -> String {
    let list = |ids: &[u64]| {
        if ids.is_empty() {
            return "(none)".to_string();
        }
        ids.iter()
            .map(|id| match c.addresses.get(id) {
                Some(a) => format!("{id}={a}"),
                None => id.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "voters: {}\nlearners: {}",
        list(&c.voters),
        list(&c.learners)
    )
}

/// Human-readable role name.
pub fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Leader) => "leader",
        Ok(pb::Role::Follower) => "follower",
        Ok(pb::Role::Candidate) => "candidate",
        Ok(pb::Role::PreCandidate) => "pre-candidate",
        Ok(pb::Role::Learner) => "learner",
        _ => "unknown",
    }
}

/// One line per message, as `tail` and `chat` print it.
pub fn format_message(m: &pb::Message) -> String {
    format!("[{} #{}] {}: {}", m.room, m.seq, m.author, m.text)
}

/// Status as JSON (for `status --json`).
pub fn status_json(all: &[(String, Result<pb::StatusResponse, String>)]) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = all
        .iter()
        .map(|(addr, r)| match r {
            Ok(s) => serde_json::json!({
                "addr": addr,
                "id": s.id,
                "role": role_name(s.role),
                "term": s.term,
                "leader_id": s.leader_id,
                "leader_addr": s.leader_addr,
                "commit_index": s.commit_index,
                "applied_index": s.applied_index,
                "last_index": s.last_index,
                "snapshot_index": s.snapshot_index,
                "voters": s.voters,
                "learners": s.learners,
                "addresses": s.addresses,
                "removed": s.removed,
                "cluster_id": s.cluster_id,
                "peers": s.peers.iter().map(|p| serde_json::json!({
                    "id": p.id, "addr": p.addr, "match_index": p.match_index,
                    "next_index": p.next_index, "lag": p.lag, "active": p.active,
                })).collect::<Vec<_>>(),
            }),
            Err(e) => serde_json::json!({ "addr": addr, "error": e }),
        })
        .collect();
    serde_json::Value::Array(nodes)
}

/// Status as a table (for `status`).
pub fn status_table(all: &[(String, Result<pb::StatusResponse, String>)]) -> String {
    let mut out = format!(
        "{:<22} {:>4} {:<14} {:>6} {:>7} {:>8} {:>8} {:>8}\n",
        "ADDR", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "SNAP"
    );
    for (addr, r) in all {
        match r {
            Ok(s) => {
                out.push_str(&format!(
                    "{:<22} {:>4} {:<14} {:>6} {:>7} {:>8} {:>8} {:>8}\n",
                    addr,
                    s.id,
                    role_name(s.role),
                    s.term,
                    s.leader_id,
                    s.commit_index,
                    s.applied_index,
                    s.snapshot_index
                ));
                if s.role == pb::Role::Leader as i32 {
                    let conf = pb::ConfState {
                        voters: s.voters.clone(),
                        learners: s.learners.clone(),
                        addresses: s.addresses.clone(),
                        peer_addresses: s.peer_addresses.clone(),
                    };
                    for line in format_conf(&conf).lines() {
                        out.push_str(&format!("    {line}\n"));
                    }
                }
                if s.removed {
                    out.push_str("    removed from the cluster: takes no further part\n");
                }
                for p in &s.peers {
                    out.push_str(&format!(
                        "    peer {:>3} {:<22} match={:<8} lag={:<6} {}\n",
                        p.id,
                        p.addr,
                        p.match_index,
                        p.lag,
                        match (p.active, p.learner) {
                            (true, false) => "active",
                            (false, false) => "inactive",
                            (true, true) => "active learner",
                            (false, true) => "inactive learner",
                        }
                    ));
                }
            }
            Err(e) => out.push_str(&format!("{addr:<22} unreachable: {e}\n")),
        }
    }
    out
}

/// Interactive chat: prints the room live and sends each line typed on stdin.
pub async fn interactive_chat(
    addrs: &str,
    creds: Credentials,
    room: &str,
    author: &str,
) -> Result<(), ClientError> {
    let mut tail_client = Client::with_credentials(addrs, creds.clone())?;
    let mut send_client = Client::with_credentials(addrs, creds)?;
    let room_t = room.to_string();
    // Show a little context (the last 20 messages), then everything live.
    let start = tail_client
        .last_seq(room)
        .await
        .unwrap_or(0)
        .saturating_sub(19)
        .max(1);
    let tail = tokio::spawn(async move {
        tail_client
            .tail(&room_t, start, |m| println!("{}", format_message(m)))
            .await
    });
    eprintln!("joined {room} as {author}; type a line and press Enter (Ctrl-D to leave)");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        if let Err(e) = send_client.send(room, author, text, None).await {
            eprintln!("send failed: {e}");
        }
    }
    tail.abort();
    // Joined, not left behind: the tail ends (aborted) before the command returns.
    let _ = tail.await;
    Ok(())
}

/// Asks one node's standard `grpc.health.v1.Health/Check` whether `service` ("" means the whole
/// server) is serving. A container HEALTHCHECK runs this through `raft_client health`, so the
/// image needs no extra probe tool. Returns `Ok(false)` for any answer other than SERVING.
pub async fn health_check(
    addr: &str,
    creds: Credentials,
    service: &str,
    timeout: Duration,
) -> Result<bool, ClientError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let c = Client::with_credentials(addr, creds)?;
    let mut h = HealthClient::new(c.channel(0)?);
    let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    });
    req.set_timeout(timeout);
    let fut = h.check(req);
    let res = match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => return Err(ClientError::Exhausted(format!("no answer in {timeout:?}"))),
    };
    match res {
        Ok(r) => Ok(r.into_inner().status == ServingStatus::Serving as i32),
        Err(st) => Err(ClientError::Status {
            code: st.code(),
            message: st.message().to_string(),
        }),
    }
}
