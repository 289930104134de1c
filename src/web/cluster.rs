//! `GET /v1/cluster/status`: this node's status and every member's, for the cluster view and
//! for the chat page's failover (each member reports its web address).
//!
//! The other members are asked over their client gRPC listener (`Cluster/Status`), all at
//! once and each bounded by [`MEMBER_TIMEOUT`], with the browser's own token: a member that
//! is down or cut off shows as unreachable instead of slowing the view down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use tonic::Status;

use super::chat::query;
use super::error::{code_name, ApiError};
use super::json;
use super::{grpc_request, Web};
use crate::api::auth::Caller;
use crate::pb;
use crate::pb::cluster_client::ClusterClient;
use crate::pb::cluster_server::Cluster;
use crate::tls::Credentials;

const STATUS: &str = "/rustyraft.v1.Cluster/Status";
/// How long the view waits for one other member's status.
const MEMBER_TIMEOUT: Duration = Duration::from_millis(800);

/// Clients to the other members' client listeners, by address; connected lazily and reused.
#[derive(Clone)]
pub struct Members {
    dial: Credentials,
    /// std Mutex: never held across an await.
    clients: Arc<Mutex<HashMap<String, ClusterClient<Channel>>>>,
}

impl Members {
    /// Dials members with `dial` (plain or TLS; never a token of its own).
    pub fn new(dial: Credentials) -> Self {
        Members {
            dial,
            clients: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn client(&self, addr: &str) -> Result<ClusterClient<Channel>, Status> {
        let mut map = self
            .clients
            .lock()
            .map_err(|_| Status::internal("client cache lock poisoned"))?;
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ep = self
            .dial
            .endpoint(addr)
            .map_err(|e| Status::internal(format!("bad member address {addr:?}: {e}")))?
            .connect_timeout(MEMBER_TIMEOUT);
        let c = ClusterClient::new(ep.connect_lazy());
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// One member's status, asked with the caller's credentials.
    async fn status(
        &self,
        addr: &str,
        caller: Option<&Caller>,
    ) -> Result<pb::StatusResponse, Status> {
        let mut client = self.client(addr)?;
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(MEMBER_TIMEOUT);
        if let Some(c) = caller {
            req.metadata_mut()
                .insert(crate::tls::AUTHORIZATION, c.authorization.clone());
        }
        let fut = client.status(req);
        match tokio::time::timeout(MEMBER_TIMEOUT, fut).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("no answer in time")),
        }
    }
}

/// One member as the view shows it: its status, or why it could not be had.
#[derive(Serialize)]
struct Member {
    id: u64,
    addr: String,
    voter: bool,
    status: Option<json::Status>,
    error: Option<serde_json::Value>,
}

/// `GET /v1/cluster/status` parameters.
#[derive(Deserialize)]
pub struct StatusQuery {
    access_token: Option<String>,
}

/// `GET /v1/cluster/status`: `{node: <this node's status>, members: [{id, addr, voter, status |
/// error}]}`, members in id order, this node included.
pub async fn status(
    State(web): State<Web>,
    headers: HeaderMap,
    q: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let who = web.authorize(STATUS, &headers, q.access_token.as_deref())?;
    let me = web
        .cluster
        .status(grpc_request(pb::StatusRequest {}, who.clone()))
        .await?
        .into_inner();
    let mut ids: Vec<u64> = me.voters.iter().chain(&me.learners).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let asks = ids.iter().map(|&id| {
        let addr = me.addresses.get(&id).cloned().unwrap_or_default();
        let (web, who, mine) = (&web, who.as_ref(), me.clone());
        async move {
            let r = if id == mine.id {
                Ok(mine)
            } else if addr.is_empty() {
                Err(Status::not_found("no address known"))
            } else {
                web.peers.status(&addr, who).await
            };
            (id, addr, r)
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    let members: Vec<Member> = answers
        .into_iter()
        .map(|(id, addr, r)| {
            let voter = me.voters.contains(&id);
            match r {
                Ok(s) => Member {
                    id,
                    addr,
                    voter,
                    status: Some(json::Status::from(s)),
                    error: None,
                },
                Err(st) => Member {
                    id,
                    addr,
                    voter,
                    status: None,
                    error: Some(serde_json::json!({
                        "code": code_name(st.code()),
                        "message": st.message(),
                    })),
                },
            }
        })
        .collect();
    Ok(Json(serde_json::json!({
        "node": json::Status::from(me),
        "members": members,
    }))
    .into_response())
}
