//! gRPC statuses as HTTP answers: the status code an HTTP client expects, and a JSON body that
//! keeps everything a gRPC client would see (the code's canonical name, the message, the
//! machine-readable reason and the leader hint), so both front ends tell a client the same.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tonic::{Code, Status};

use crate::pb::{self, Reason};

/// A refused call, answered as JSON: `{"error": {"code", "message", "reason"?, "leader"?}}`.
#[derive(Debug)]
pub struct ApiError(pub Status);

impl From<Status> for ApiError {
    fn from(s: Status) -> Self {
        ApiError(s)
    }
}

/// The canonical name of a gRPC code (`INVALID_ARGUMENT`), as in the gRPC spec and grpcurl.
pub fn code_name(code: Code) -> &'static str {
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

/// The HTTP status of a gRPC status: the usual gateway mapping (as grpc-gateway and Google's
/// APIs use), except that an UNAVAILABLE whose reason is `overloaded` (a full queue: back off)
/// is 429 rather than 503.
pub fn http_status(st: &Status) -> StatusCode {
    let client_closed = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
    match st.code() {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => client_closed,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable if Reason::of(st) == Some(Reason::Overloaded) => {
            StatusCode::TOO_MANY_REQUESTS
        }
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON of a status: code name, message, and the reason and leader hint when present.
pub fn error_json(st: &Status) -> serde_json::Value {
    let mut e = serde_json::json!({
        "code": code_name(st.code()),
        "message": st.message(),
    });
    if let Some(r) = Reason::of(st) {
        e["reason"] = r.as_str().into();
    }
    if let Some(l) = st
        .metadata()
        .get(pb::meta::LEADER)
        .and_then(|v| v.to_str().ok())
    {
        e["leader"] = l.into();
    }
    serde_json::json!({ "error": e })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = http_status(&self.0);
        let mut resp = (status, Json(error_json(&self.0))).into_response();
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.0.code() == Code::Unauthenticated {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// A request body over [`super::BODY_LIMIT`]: 413, with RESOURCE_EXHAUSTED in the body.
pub fn too_large() -> Response {
    let st = Status::resource_exhausted(format!(
        "request body larger than {} bytes",
        super::BODY_LIMIT
    ));
    let mut r = ApiError(st).into_response();
    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    r
}

/// Refuses a request whose `Content-Length` is over [`super::BODY_LIMIT`] before reading any
/// of it (a body without a length is cut at the limit while it is read).
pub async fn refuse_oversized(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > super::BODY_LIMIT as u64);
    if too_big {
        return too_large();
    }
    next.run(req).await
}

/// A path served, with a method it does not take: 405, with UNIMPLEMENTED in the body.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let st = Status::unimplemented(format!("{method} is not served on {:?}", uri.path()));
    let mut r = ApiError(st).into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// Any path the listener does not serve: 404 in the API's error shape.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(Status::not_found(format!("no such path {:?}", uri.path())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http_statuses_and_keep_reason_and_leader() {
        let cases = [
            (Status::invalid_argument("x"), 400),
            (Status::failed_precondition("x"), 400),
            (Status::unauthenticated("x"), 401),
            (Status::permission_denied("x"), 403),
            (Status::not_found("x"), 404),
            (Status::already_exists("x"), 409),
            (Status::resource_exhausted("x"), 429),
            (Status::unavailable("x"), 503),
            (Status::internal("x"), 500),
            (Status::deadline_exceeded("x"), 504),
        ];
        for (st, want) in cases {
            assert_eq!(http_status(&st).as_u16(), want, "{:?}", st.code());
        }
        let mut busy = Status::unavailable("queue full");
        Reason::Overloaded.attach(&mut busy);
        assert_eq!(http_status(&busy).as_u16(), 429);

        let st = crate::api::node_status(crate::node::NodeError::NotLeader {
            leader: Some((2, "h:2".into())),
        });
        let j = error_json(&st);
        assert_eq!(j["error"]["code"], "UNAVAILABLE");
        assert_eq!(j["error"]["reason"], "not-leader");
        assert_eq!(j["error"]["leader"], "2=h:2");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
    }
}
