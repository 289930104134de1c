//! The operational routes of the node's HTTP listener (`--http-addr`): `GET /metrics`
//! (Prometheus text format), `GET /healthz` (liveness) and `GET /readyz` (readiness). They need
//! no credentials. The same listener also serves the chat API and pages, which
//! `crate::web` adds around this router (and which do check client tokens when they are on).

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::Metrics;

/// What `/healthz` and `/readyz` ask the node. Implemented by the node (this module knows
/// nothing of it), so the answers come from the node's own status.
pub trait Probe: Send + Sync + 'static {
    /// Alive: the node is running (not stopped or stopping). `Err` says why not.
    fn live(&self) -> Result<(), String>;
    /// Ready for clients: see the implementation's documentation. `Err` says why not.
    fn ready(&self) -> Result<(), String>;
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    probe: Arc<dyn Probe>,
}

/// The router of the HTTP listener.
pub fn router(metrics: Arc<Metrics>, probe: Arc<dyn Probe>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, probe })
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    match s.metrics.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

fn answer(r: Result<(), String>) -> Response {
    match r {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    answer(s.probe.live())
}

async fn readyz(State(s): State<AppState>) -> Response {
    answer(s.probe.ready())
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    probe: Arc<dyn Probe>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, probe))
        .with_graceful_shutdown(shutdown)
        .await
}
