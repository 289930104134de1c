//! The web front end of a node, on its HTTP listener (`--http-addr`): an HTTP/JSON API with the
//! semantics of `ChatService` and `Cluster`, Server-Sent Events per room, the chat page at `/`
//! and the live cluster view at `/cluster`, next to `/metrics`, `/healthz` and `/readyz`.
//!
//! Why a gateway over the gRPC services instead of a second implementation: every JSON call is
//! turned into the same request the gRPC service gets and answered by [`ChatApi`] or
//! [`ClusterApi`] in-process. Validation, forwarding to the leader, idempotent
//! `client_request_id`s, ReadIndex reads, the catch-up-then-live subscription and the error
//! mapping are therefore the gRPC ones, byte for byte; this module only translates JSON and
//! query strings in, and JSON, SSE and HTTP statuses out ([`error`]). Client tokens are
//! checked by the same [`TokenStore`] with the same policy (each route names the gRPC method
//! whose rule it follows).
//!
//! Bounds: request bodies are capped at [`BODY_LIMIT`], at most [`MAX_EVENT_STREAMS`] event
//! streams are open at once (past it: 429), and each stream has the gRPC subscription's
//! bounded buffer and lag policy (a slow reader catches up from the state machine).

mod assets;
mod chat;
mod cluster;
mod error;
mod events;
mod json;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::Status;
use tower_http::cors::{Any, CorsLayer};

use crate::api::auth::{Caller, TokenStore};
use crate::api::{ChatApi, ClusterApi, CHAT_DECODE_LIMIT};
use crate::metrics::http::Probe;
use crate::metrics::Metrics;
use crate::node::NodeHandle;
use crate::tls::Credentials;

pub use self::error::{code_name, http_status};

/// Largest request body accepted (the gRPC decode limit): a text above `--max-text-bytes` but
/// below this gets the precise INVALID_ARGUMENT from validation; a larger body gets 413.
pub const BODY_LIMIT: usize = CHAT_DECODE_LIMIT;
/// Event streams (`/v1/rooms/{room}/events`) open at once on one node. Each holds a task and a
/// bounded buffer; past this a new stream is refused with 429 (RESOURCE_EXHAUSTED).
pub const MAX_EVENT_STREAMS: usize = 1024;

/// What every handler needs: the node, the two gRPC services it answers through, the token
/// check, and the clients to the other members for the cluster view.
#[derive(Clone)]
pub struct Web {
    node: NodeHandle,
    chat: ChatApi,
    cluster: ClusterApi,
    tokens: Option<Arc<TokenStore>>,
    peers: cluster::Members,
    streams: Arc<Semaphore>,
}

impl Web {
    /// The web front end of `node`. `dial` is how this node reaches other members' client
    /// listeners (plain or TLS, never a token of its own: calls carry the browser's token),
    /// `tokens` the client token store when authentication is on.
    pub fn new(node: NodeHandle, dial: Credentials, tokens: Option<Arc<TokenStore>>) -> Self {
        let dial = dial.with_authorization(None);
        Web {
            chat: ChatApi::new(node.clone()).with_dial(dial.clone()),
            cluster: ClusterApi::new(node.clone()),
            peers: cluster::Members::new(dial),
            tokens,
            streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
            node,
        }
    }

    /// Checks the caller's token for what `grpc_method` (a full gRPC path) needs: the same
    /// policy as the gRPC listener. The token comes from `Authorization: Bearer <token>`, or
    /// from the `access_token` query parameter (a browser's `EventSource` cannot set headers).
    fn authorize(
        &self,
        grpc_method: &str,
        headers: &HeaderMap,
        access_token: Option<&str>,
    ) -> Result<Option<Caller>, Status> {
        let Some(store) = &self.tokens else {
            return Ok(None);
        };
        match access_token.filter(|_| !headers.contains_key(header::AUTHORIZATION)) {
            Some(t) => {
                let mut h = HeaderMap::new();
                let v = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| Status::unauthenticated("malformed access_token"))?;
                h.insert(header::AUTHORIZATION, v);
                store.authorize(grpc_method, &h)
            }
            None => store.authorize(grpc_method, headers),
        }
    }
}

/// A gRPC request as the gRPC listener would hand it to the service, with the authenticated
/// caller in its extensions.
fn grpc_request<T>(message: T, caller: Option<Caller>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(c) = caller {
        r.extensions_mut().insert(c);
    }
    r
}

/// The whole router of the HTTP listener: the API, the pages, and the metrics routes.
///
/// CORS allows any origin, without cookies: the page of one node talks to the others when it
/// fails over, and credentials are bearer tokens the page sends explicitly, never ambient ones
/// a foreign page could ride on.
pub fn router(web: Web, metrics: Arc<Metrics>, probe: Arc<dyn Probe>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ]);
    let api = Router::new()
        .route("/v1/rooms", get(chat::list_rooms).post(chat::create_room))
        .route(
            "/v1/rooms/{room}/messages",
            get(chat::history).post(chat::send),
        )
        .route("/v1/rooms/{room}/events", get(events::events))
        .route("/v1/cluster/status", get(cluster::status))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(web)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(error::refuse_oversized))
        .layer(cors);
    assets::routes()
        .merge(crate::metrics::http::router(metrics, probe))
        .merge(api)
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    web: Web,
    metrics: Arc<Metrics>,
    probe: Arc<dyn Probe>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(web, metrics, probe))
        .with_graceful_shutdown(shutdown)
        .await
}
