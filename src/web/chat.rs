//! Rooms and messages over JSON: `GET/POST /v1/rooms`, `GET/POST /v1/rooms/{room}/messages`.
//! Each handler checks the token as the gRPC method it stands for, builds that method's
//! request and lets [`crate::api::ChatApi`] answer it.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tonic::Status;

use super::error::ApiError;
use super::json::{Message, Room};
use super::{grpc_request, Web};
use crate::pb;
use crate::pb::chat_service_server::ChatService;

const LIST_ROOMS: &str = "/rustyraft.v1.ChatService/ListRooms";
const CREATE_ROOM: &str = "/rustyraft.v1.ChatService/CreateRoom";
const GET_HISTORY: &str = "/rustyraft.v1.ChatService/GetHistory";
const SEND_MESSAGE: &str = "/rustyraft.v1.ChatService/SendMessage";

/// A malformed query string is INVALID_ARGUMENT, named like every other refusal.
pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| {
        ApiError(Status::invalid_argument(format!(
            "bad query: {}",
            e.body_text()
        )))
    })
}

/// A request body as JSON. The content type is not insisted on (`curl -d` sends a form type);
/// a body past the limit is 413, anything that is not the expected JSON is INVALID_ARGUMENT.
/// The refusal is boxed: a `Response` is large, and this is the rare path.
fn body<T: DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> Result<T, Box<Response>> {
    let bytes = b.map_err(|e| {
        Box::new(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            super::error::too_large()
        } else {
            let st = Status::invalid_argument(format!("cannot read the body: {}", e.body_text()));
            ApiError(st).into_response()
        })
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(ApiError(Status::invalid_argument(format!("bad JSON body: {e}"))).into_response())
    })
}

/// `GET /v1/rooms` parameters.
#[derive(Deserialize)]
pub struct ListRoomsQuery {
    limit: Option<u32>,
    page_token: Option<String>,
    access_token: Option<String>,
}

/// `GET /v1/rooms?limit=&page_token=`: `{rooms: [{name, message_count}], next_page_token}`.
pub async fn list_rooms(
    State(web): State<Web>,
    headers: HeaderMap,
    q: Result<Query<ListRoomsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let who = web.authorize(LIST_ROOMS, &headers, q.access_token.as_deref())?;
    let req = pb::ListRoomsRequest {
        limit: q.limit.unwrap_or(0),
        page_token: q.page_token.unwrap_or_default(),
    };
    let r = web
        .chat
        .list_rooms(grpc_request(req, who))
        .await?
        .into_inner();
    let rooms: Vec<Room> = r.rooms.into_iter().map(Room::from).collect();
    Ok(Json(serde_json::json!({
        "rooms": rooms,
        "next_page_token": r.next_page_token,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct CreateRoomBody {
    room: String,
}

/// `POST /v1/rooms` with `{"room": "name"}`: 201 with `{created: true, room}` when it is new,
/// 200 with `created: false` when it existed (creating is idempotent, as over gRPC).
pub async fn create_room(
    State(web): State<Web>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let run = async {
        let who = web.authorize(CREATE_ROOM, &headers, None)?;
        let b: CreateRoomBody = match body(b) {
            Ok(b) => b,
            Err(r) => return Ok(*r),
        };
        let r = web
            .chat
            .create_room(grpc_request(pb::CreateRoomRequest { room: b.room }, who))
            .await?
            .into_inner();
        let code = if r.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let room = r.room.map(Room::from);
        Ok::<_, ApiError>(
            (
                code,
                Json(serde_json::json!({ "created": r.created, "room": room })),
            )
                .into_response(),
        )
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/rooms/{room}/messages` parameters (those of `GetHistory`).
#[derive(Deserialize)]
pub struct HistoryQuery {
    from_seq: Option<u64>,
    limit: Option<u32>,
    reverse: Option<bool>,
    page_token: Option<String>,
    /// `linearizable` (the default) or `sequential`.
    consistency: Option<String>,
    min_index: Option<u64>,
    access_token: Option<String>,
}

/// `GET /v1/rooms/{room}/messages`: a page of history, `{messages, next_page_token}`.
/// Linearizable unless `consistency=sequential`.
pub async fn history(
    State(web): State<Web>,
    Path(room): Path<String>,
    headers: HeaderMap,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let who = web.authorize(GET_HISTORY, &headers, q.access_token.as_deref())?;
    let consistency = match q.consistency.as_deref() {
        None | Some("") | Some("linearizable") => pb::Consistency::Linearizable,
        Some("sequential") => pb::Consistency::Sequential,
        Some(other) => {
            return Err(ApiError(Status::invalid_argument(format!(
                "consistency {other:?}: use linearizable or sequential"
            ))))
        }
    };
    let req = pb::GetHistoryRequest {
        room,
        from_seq: q.from_seq.unwrap_or(0),
        limit: q.limit.unwrap_or(0),
        reverse: q.reverse.unwrap_or(false),
        page_token: q.page_token.unwrap_or_default(),
        consistency: consistency as i32,
        min_index: q.min_index.unwrap_or(0),
    };
    let r = web
        .chat
        .get_history(grpc_request(req, who))
        .await?
        .into_inner();
    let messages: Vec<Message> = r.messages.into_iter().map(Message::from).collect();
    Ok(Json(serde_json::json!({
        "messages": messages,
        "next_page_token": r.next_page_token,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct SendBody {
    #[serde(default)]
    author: String,
    text: String,
    #[serde(default)]
    client_request_id: String,
}

/// `POST /v1/rooms/{room}/messages` with `{author, text, client_request_id}`: commits the
/// message through the leader (forwarded if this node is not it) and answers 200 with
/// `{message}` once it is applied. Retrying with the same `client_request_id`, on any node,
/// returns the original message, never a second one.
pub async fn send(
    State(web): State<Web>,
    Path(room): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let run = async {
        let who = web.authorize(SEND_MESSAGE, &headers, None)?;
        let b: SendBody = match body(b) {
            Ok(b) => b,
            Err(r) => return Ok(*r),
        };
        let req = pb::SendMessageRequest {
            room,
            author: b.author,
            text: b.text,
            client_request_id: b.client_request_id,
        };
        let r = web
            .chat
            .send_message(grpc_request(req, who))
            .await?
            .into_inner();
        let m = r
            .message
            .map(Message::from)
            .ok_or_else(|| Status::internal("send answered without a message"))?;
        Ok::<_, ApiError>(Json(serde_json::json!({ "message": m })).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
