//! The composition root: the one place that wires a node together and takes it apart again.
//!
//! [`run`] binds the listener; [`serve`] prepares a `--join`, starts the node (storage, driver,
//! transport), builds the gRPC services (peer `Raft`, `ChatService`, `Cluster`, health,
//! reflection), spawns the join task, and owns shutdown, in this order:
//!
//! 1. the caller's `shutdown` resolves, or the node stops on its own (a fatal error, or a failed
//!    join): health turns NOT_SERVING and the node drains, which ends every long-lived stream;
//! 2. tonic stops accepting and finishes the in-flight unary calls;
//! 3. the driver is stopped (it syncs storage) and awaited;
//! 4. every task the node and its services spawned is awaited (bounded by [`TASKS_GRACE`]).
//!
//! The services in [`crate::api`] only answer calls; none of them starts or stops anything.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::auth::{Authenticated, TokenStore};
use crate::api::{ChatApi, ClusterApi, CHAT_DECODE_LIMIT};
use crate::chat::disk::ChatDir;
use crate::metrics::grpc::GrpcMetricsLayer;
use crate::node::{join, Driver, NodeConfig, NodeError, NodeHandle};
use crate::pb;
use crate::transport::RaftService;

/// Largest peer message decoded or encoded: up to 1 MiB of entries (4 MiB when coalesced) plus
/// one 64 KiB message, with headroom.
const PEER_MESSAGE_LIMIT: usize = 8 << 20;

/// How long shutdown waits for the node's tasks after the driver has stopped. They all select
/// on the drain or stop tokens, so they end at once; the bound only guards against a bug
/// turning into a hung process.
pub const TASKS_GRACE: Duration = Duration::from_secs(10);

/// Errors that stop a node from serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Could not bind the listen address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
    /// The node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(String),
    /// `--join` failed: the cluster could not be reached, or refused to add this node.
    #[error("join: {0}")]
    Join(String),
    /// The client listener's TLS files or token file are unusable (the message names the file).
    #[error("client security: {0}")]
    Security(String),
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Runs a whole node until `shutdown` resolves: binds `cfg.addr` (clients) and `cfg.peer_addr`
/// (peers), then [`serve`]s on them.
pub async fn run(cfg: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    if cfg.addr == cfg.peer_addr {
        return Err(ServeError::Node(NodeError::Config(format!(
            "the client and peer listeners cannot share {}",
            cfg.addr
        ))));
    }
    let client = bind(cfg.addr).await?;
    let peer = bind(cfg.peer_addr).await?;
    serve(cfg, client, peer, shutdown).await
}

/// Like [`run`], on already bound listeners: `client` serves `ChatService`, `Cluster`, health
/// and reflection; `peer` serves only the `Raft` service, behind peer authentication.
pub async fn serve(
    mut cfg: NodeConfig,
    client: TcpListener,
    peer: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    // Checked before anything starts, so a bad file is a clean refusal naming it.
    let client_tls = match &cfg.client.tls {
        Some((cert, key)) => Some(
            crate::tls::server_config(cert, key)
                .map_err(|e| ServeError::Security(e.to_string()))?,
        ),
        None => None,
    };
    let tokens = match &cfg.client.tokens {
        Some(path) => {
            Some(TokenStore::open(path, cfg.client.open_reads).map_err(ServeError::Security)?)
        }
        None => None,
    };
    if let Some(j) = cfg.join.clone() {
        join::prepare(&mut cfg, &j)
            .await
            .map_err(ServeError::Join)?;
    }
    let http = match cfg.http_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let max_snapshot = cfg.max_snapshot_bytes;
    let (node, inbound, driver) = Driver::start(cfg)?;
    let cfg = node.config().clone();
    let raft = RaftService::new(cfg.id, cfg.cluster_id.clone(), inbound, max_snapshot)
        .with_auth(cfg.peer_auth()?)
        .with_draining(node.draining())
        .with_chat_dir(Some(ChatDir::new(cfg.data_dir.join("chat"), true)));
    // Forwards carry the client's token, never this node's own (`--token` is for `--join`).
    let chat =
        ChatApi::new(node.clone()).with_dial(cfg.client.dial.clone().with_authorization(None));
    let cluster = ClusterApi::new(node.clone());

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::chat_service_server::ChatServiceServer<ChatApi>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let stop = {
        let (node, reporter) = (node.clone(), health_reporter.clone());
        let stopped = node.stopped();
        async move {
            tokio::select! {
                _ = shutdown => {}
                // A fatal driver error (or a failed join) also stops the server.
                _ = stopped.cancelled() => {}
            }
            // Tell health checkers first, then end the long-lived streams so the graceful
            // drain only waits for unary calls.
            reporter
                .set_not_serving::<pb::chat_service_server::ChatServiceServer<ChatApi>>()
                .await;
            node.drain();
        }
    };
    let join_failed = Arc::new(Mutex::new(None::<String>));
    if let Some(j) = cfg.join.clone() {
        spawn_join(&node, j, join_failed.clone());
    }
    tracing::info!(id = cfg.id, addr = %cfg.addr, peer_addr = %cfg.peer_addr,
        peer_auth = !cfg.cluster_secrets.is_empty(), peer_tls = cfg.peer_tls.is_some(), tls = client_tls.is_some(),
        auth = tokens.is_some(), "serving gRPC");
    // The peer listener serves the Raft service and nothing else; it stops with the drain.
    let peer_drained = node.draining();
    let mut peer_builder = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(t) = &cfg.peer_tls {
        let tls = t
            .server()
            .map_err(|e| ServeError::Security(format!("peer TLS: {e}")))?;
        peer_builder = peer_builder.tls_config(tls)?;
    }
    let peer_server = node.spawn(
        peer_builder
            .add_service(
                pb::raft_server::RaftServer::new(raft)
                    .max_decoding_message_size(PEER_MESSAGE_LIMIT)
                    .max_encoding_message_size(PEER_MESSAGE_LIMIT),
            )
            .serve_with_incoming_shutdown(nodelay_incoming(peer), peer_drained.cancelled_owned()),
    );
    if let Some(listener) = http {
        let web = crate::web::Web::new(node.clone(), cfg.client.dial.clone(), tokens.clone());
        spawn_http(&node, listener, web);
    }
    // Decode well past the text limit, so an oversized message gets the precise
    // INVALID_ARGUMENT from validation rather than a transport-level refusal.
    let chat = pb::chat_service_server::ChatServiceServer::new(chat)
        .max_decoding_message_size(CHAT_DECODE_LIMIT);
    let chat = Authenticated::new(chat, tokens.clone());
    let cluster = Authenticated::new(pb::cluster_server::ClusterServer::new(cluster), tokens);
    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(tls) = client_tls {
        builder = builder.tls_config(tls)?;
    }
    let served = builder
        .layer(GrpcMetricsLayer(cfg.metrics.clone()))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(chat)
        .add_service(cluster)
        .serve_with_incoming_shutdown(nodelay_incoming(client), stop)
        .await;
    tracing::info!(id = cfg.id, "gRPC server stopped; stopping the driver");
    node.drain();
    let peer_served: Result<(), ServeError> = match peer_server.await {
        Ok(r) => r.map_err(ServeError::from),
        Err(e) => Err(NodeError::Internal(format!("peer server task: {e}")).into()),
    };
    node.stop();
    let driver_result = match driver.await {
        Ok(r) => r,
        Err(e) => Err(NodeError::Internal(format!("driver task: {e}"))),
    };
    if tokio::time::timeout(TASKS_GRACE, node.wait_tasks())
        .await
        .is_err()
    {
        tracing::warn!(
            id = cfg.id,
            "some node tasks did not end within the grace period"
        );
    }
    served?;
    peer_served?;
    driver_result?;
    if let Some(e) = join_failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(ServeError::Join(e));
    }
    Ok(())
}

/// Asks the cluster to add this node (`--join`), on a tracked task. A failed join stops the
/// node (the error is left in `failed` for [`serve`] to return); shutdown cancels the asking.
fn spawn_join(node: &NodeHandle, j: crate::node::JoinConfig, failed: Arc<Mutex<Option<String>>>) {
    let me = node.clone();
    let draining = node.draining();
    node.spawn(async move {
        let joined = tokio::select! {
            r = join::add_self(me.clone(), j) => r,
            // Shutting down: stop asking (the node may join on its next start).
            _ = draining.cancelled() => return,
        };
        match joined {
            Ok(msg) => tracing::info!(id = me.config().id, "{msg}"),
            Err(e) => {
                tracing::error!(id = me.config().id, error = %e, "join failed; stopping");
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                me.stop();
            }
        }
    });
}

/// Serves the web side ([`crate::web`]: the JSON API, event streams, the pages, `/metrics`,
/// `/healthz` and `/readyz`) on `listener` (`--http-addr`), on a tracked task, until the node
/// stops (while it drains, `/readyz` says so and event streams end).
fn spawn_http(node: &NodeHandle, listener: TcpListener, web: crate::web::Web) {
    let id = node.config().id;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(id, http_addr = %addr, "serving the web page, the HTTP API and /metrics");
    let metrics = node.config().metrics.clone();
    let probe: Arc<dyn crate::metrics::http::Probe> = Arc::new(node.clone());
    let stopped = node.stopped();
    node.spawn(async move {
        let done = crate::web::serve(listener, web, metrics, probe, stopped.cancelled_owned());
        if let Err(e) = done.await {
            tracing::warn!(id, error = %e, "HTTP listener failed");
        }
    });
}

/// The listener's connections with `TCP_NODELAY` set. The builder's `tcp_nodelay` only reaches
/// sockets tonic accepts itself; these come from our own listener. Without it, Nagle holds the
/// last frame of a response until the client's delayed ACK (40 ms): measured as a 42 ms p99 at
/// one client.
fn nodelay_incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |sock| {
            if let Ok(s) = &sock {
                let _ = s.set_nodelay(true);
            }
            sock
        },
    )
}

/// Resolves on Ctrl-C or SIGTERM: the one shutdown trigger of the node and the launcher.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
    tracing::info!("shutdown signal received");
}
