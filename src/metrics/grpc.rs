//! A tower layer for the client gRPC server: counts every call by method and status code and
//! records its latency (`rustyraft_grpc_requests_total`, `rustyraft_grpc_request_duration_seconds`).
//!
//! What it sees: the response headers. A failed call is answered "trailers only", so its
//! `grpc-status` is in the headers; a call whose headers carry no status succeeded (a unary
//! call) or opened its stream, and counts as `OK`. For streams, the latency is the time to open
//! the stream, not its lifetime (`rustyraft_subscribers` counts the open ones).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{Request, Response};

use super::Metrics;

/// Adds [`GrpcMetrics`] around a service.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// Longest method label kept; the paths of our services are far shorter.
const MAX_METHOD: usize = 96;

/// The `grpc-status` of a response's headers, as its canonical name; `OK` when absent.
fn code_of<B>(res: &Response<B>) -> &'static str {
    let code = res
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "OTHER",
    }
}

/// The method label: the request path (`/package.Service/Method`). A path no service knows
/// (answered UNIMPLEMENTED) or an overlong one becomes `unknown`, so a client cannot grow the
/// label set without bound.
fn method_label(path: &str, code: &str) -> String {
    if code == "UNIMPLEMENTED" || path.len() > MAX_METHOD || !path.starts_with('/') {
        "unknown".to_string()
    } else {
        path.to_string()
    }
}

impl<S, B, ResBody> tower::Service<Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let metrics = self.metrics.clone();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let code = match &res {
                Ok(r) => code_of(r),
                Err(_) => "TRANSPORT_ERROR",
            };
            let method = method_label(&path, code);
            metrics
                .grpc_seconds
                .get_or_create(&vec![("method", method.clone())])
                .observe(start.elapsed().as_secs_f64());
            metrics
                .grpc_requests
                .get_or_create(&vec![("method", method), ("code", code.to_string())])
                .inc();
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_do_not_grow_the_label_set() {
        assert_eq!(method_label("/a.B/C", "OK"), "/a.B/C");
        assert_eq!(method_label("/x.Y/Z", "UNIMPLEMENTED"), "unknown");
        assert_eq!(
            method_label(&format!("/{}", "a".repeat(200)), "OK"),
            "unknown"
        );
    }
}
