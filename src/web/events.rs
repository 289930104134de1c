//! `GET /v1/rooms/{room}/events`: a room's messages as Server-Sent Events, one `message` event
//! per chat message with `id:` = its seq.
//!
//! The stream starts after the `Last-Event-ID` header when there is one (a browser's
//! `EventSource` sends it when it reconnects), else at `from_seq` (default 1: the whole room).
//! It is the gRPC `Subscribe` stream underneath: catch-up from the state machine, then live, no
//! gap and no duplicate, served by any node. Since seqs are the same on every node, resuming
//! after event N works on any node too. When the node shuts down the stream ends with an
//! `error` event; a client reconnects (anywhere) with the last id it saw.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

use super::chat::query;
use super::error::{error_json, ApiError};
use super::json::Message;
use super::{grpc_request, Web};
use crate::pb;
use crate::pb::chat_service_server::ChatService;

const SUBSCRIBE: &str = "/rustyraft.v1.ChatService/Subscribe";
/// How long a browser waits before reconnecting a dropped stream (sent as `retry:`).
const RECONNECT: Duration = Duration::from_secs(1);
/// Comment lines sent on an idle stream, so proxies keep it open and a vanished client is
/// noticed (the write fails) within this period.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /v1/rooms/{room}/events` parameters.
#[derive(Deserialize)]
pub struct EventsQuery {
    from_seq: Option<u64>,
    access_token: Option<String>,
}

/// Where a stream starts: after `Last-Event-ID`, else `from_seq`. A `Last-Event-ID` that is
/// not a seq is INVALID_ARGUMENT (this server never sends such an id).
fn start_seq(headers: &HeaderMap, from_seq: Option<u64>) -> Result<u64, Status> {
    match headers.get("last-event-id") {
        Some(v) => {
            let text = v.to_str().unwrap_or("").trim();
            let last: u64 = text.parse().map_err(|_| {
                Status::invalid_argument(format!("Last-Event-ID {text:?} is not a message seq"))
            })?;
            Ok(last.saturating_add(1))
        }
        None => Ok(from_seq.unwrap_or(1).max(1)),
    }
}

fn message_event(m: pb::Message) -> Event {
    let id = m.seq.to_string();
    let data = serde_json::to_string(&Message::from(m)).unwrap_or_else(|_| "{}".to_string());
    Event::default().event("message").id(id).data(data)
}

/// The SSE body over a subscription: message events until the subscription ends; an error
/// (the node shutting down) becomes a final `error` event. `permit` holds this stream's place
/// among [`super::MAX_EVENT_STREAMS`] until the stream is dropped.
fn sse_stream<S>(
    inner: S,
    node_id: u64,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    S: Stream<Item = Result<pb::Message, Status>> + Send + Unpin + 'static,
{
    let hello = Event::default()
        .retry(RECONNECT)
        .comment(format!("rustyraft node {node_id}"));
    let body = stream::unfold(Some((inner, permit)), |state| async move {
        let (mut inner, permit) = state?;
        match inner.next().await {
            Some(Ok(m)) => Some((Ok(message_event(m)), Some((inner, permit)))),
            Some(Err(st)) => {
                let data = error_json(&st).to_string();
                Some((Ok(Event::default().event("error").data(data)), None))
            }
            None => None,
        }
    });
    stream::once(async move { Ok(hello) }).chain(body)
}

/// `GET /v1/rooms/{room}/events?from_seq=`: see the module documentation.
pub async fn events(
    State(web): State<Web>,
    Path(room): Path<String>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let who = web.authorize(SUBSCRIBE, &headers, q.access_token.as_deref())?;
    let from_seq = start_seq(&headers, q.from_seq)?;
    let permit = web.streams.clone().try_acquire_owned().map_err(|_| {
        Status::resource_exhausted(format!(
            "this node serves {} event streams already; use another node or retry later",
            super::MAX_EVENT_STREAMS
        ))
    })?;
    let req = pb::SubscribeRequest { room, from_seq };
    let inner = web
        .chat
        .subscribe(grpc_request(req, who))
        .await?
        .into_inner();
    let body = sse_stream(inner, web.node.config().id, permit);
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_wins_over_from_seq_and_garbage_is_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(start_seq(&h, None).unwrap(), 1);
        assert_eq!(start_seq(&h, Some(0)).unwrap(), 1);
        assert_eq!(start_seq(&h, Some(7)).unwrap(), 7);
        h.insert("last-event-id", "41".parse().unwrap());
        assert_eq!(start_seq(&h, Some(7)).unwrap(), 42);
        h.insert("last-event-id", "x".parse().unwrap());
        assert_eq!(
            start_seq(&h, None).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
