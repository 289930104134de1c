//! The client-facing gRPC services: `ChatService` ([`ChatApi`]) and `Cluster` ([`ClusterApi`]).
//! They answer calls through a [`crate::node::NodeHandle`] and nothing else; wiring them into
//! a server (with the peer service, health and reflection) is [`crate::server`]'s job. This is
//! the only place that maps node and chat errors to `tonic::Status`, with the precise codes the
//! contract promises and a machine-readable [`pb::Reason`] where a client has a decision to make.
//! [`auth`] checks client tokens in front of both services.

mod admin;
pub mod auth;
mod chat;
mod convert;
mod follow;

use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::chat::ChatError;
use crate::node::NodeError;
use crate::pb::{self, Reason};

pub use self::admin::ClusterApi;
pub use self::chat::ChatApi;

/// Largest client request decoded (8 MiB); texts above `max_text_bytes` but below this get
/// INVALID_ARGUMENT from validation, larger requests are refused by tonic (OUT_OF_RANGE).
pub const CHAT_DECODE_LIMIT: usize = 8 << 20;

/// Maps a node error to the status a client sees.
pub fn node_status(e: NodeError) -> Status {
    let with = |mut st: Status, r: Reason| {
        r.attach(&mut st);
        st
    };
    match e {
        NodeError::NotLeader { leader } => {
            let msg = match &leader {
                Some((id, addr)) => format!("not the leader; the leader is node {id} at {addr}"),
                None => "no leader known (an election is in progress); retry".to_string(),
            };
            let reason = if leader.is_some() {
                Reason::NotLeader
            } else {
                Reason::NoLeader
            };
            let mut st = with(Status::unavailable(msg), reason);
            if let Some((id, addr)) = leader {
                if let Ok(v) = MetadataValue::try_from(format!("{id}={addr}")) {
                    st.metadata_mut().insert(pb::meta::LEADER, v);
                }
            }
            st
        }
        NodeError::Unavailable(m) => with(Status::unavailable(m), Reason::Retry),
        NodeError::OutcomeUnknown(m) => with(
            Status::unavailable(format!("outcome unknown: {m}")),
            Reason::OutcomeUnknown,
        ),
        // UNAVAILABLE, not RESOURCE_EXHAUSTED: every gRPC client retries UNAVAILABLE, and a
        // full queue is a moment's congestion; the reason tells a client to back off.
        NodeError::Overloaded(m) => with(Status::resource_exhausted(m), Reason::Overloaded),
        NodeError::Chat(c) => chat_status(c),
        NodeError::Membership(m) => membership_status(m),
        NodeError::Stopped => with(
            Status::unavailable("node is shutting down"),
            Reason::ShuttingDown,
        ),
        NodeError::Config(m) => Status::failed_precondition(m),
        e @ (NodeError::Storage(_)
        | NodeError::Raft(_)
        | NodeError::Io(_)
        | NodeError::Internal(_)) => Status::internal(e.to_string()),
    }
}

/// Maps a refused membership change to its status.
pub fn membership_status(e: crate::node::MembershipError) -> Status {
    use crate::node::MembershipError as M;
    let msg = e.to_string();
    match e {
        M::InvalidArgument(_) => Status::invalid_argument(msg),
        M::AlreadyExists(_) => Status::already_exists(msg),
        M::NotFound(_) => Status::not_found(msg),
        M::FailedPrecondition(_) | M::Pending | M::NotCaughtUp { .. } => {
            Status::failed_precondition(msg)
        }
        M::Timeout(_) => Status::deadline_exceeded(msg),
    }
}

/// Maps a chat error to a status.
pub fn chat_status(e: ChatError) -> Status {
    match e {
        ChatError::InvalidArgument(m) => Status::invalid_argument(m),
        ChatError::RoomNotFound(r) => Status::not_found(format!("room {r:?} not found")),
        ChatError::Corrupt(m) => Status::internal(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// Clients act on the reason, not on the message: every refusal a client must decide about
    /// carries one, with the code the contract promises.
    #[test]
    fn node_errors_map_to_codes_and_machine_readable_reasons() {
        let cases = [
            (
                NodeError::NotLeader {
                    leader: Some((2, "h:2".into())),
                },
                Code::Unavailable,
                Some(Reason::NotLeader),
            ),
            (
                NodeError::NotLeader { leader: None },
                Code::Unavailable,
                Some(Reason::NoLeader),
            ),
            (
                NodeError::OutcomeUnknown("x".into()),
                Code::Unavailable,
                Some(Reason::OutcomeUnknown),
            ),
            (
                NodeError::Overloaded("x".into()),
                Code::ResourceExhausted,
                Some(Reason::Overloaded),
            ),
            (
                NodeError::Unavailable("x".into()),
                Code::Unavailable,
                Some(Reason::Retry),
            ),
            (
                NodeError::Stopped,
                Code::Unavailable,
                Some(Reason::ShuttingDown),
            ),
            (NodeError::Internal("x".into()), Code::Internal, None),
            (
                NodeError::Config("x".into()),
                Code::FailedPrecondition,
                None,
            ),
        ];
        for (e, code, reason) in cases {
            let what = format!("{e:?}");
            let st = node_status(e);
            assert_eq!(st.code(), code, "{what}");
            assert_eq!(Reason::of(&st), reason, "{what}");
        }
        let st = node_status(NodeError::NotLeader {
            leader: Some((2, "h:2".into())),
        });
        let hint = st
            .metadata()
            .get(pb::meta::LEADER)
            .and_then(|v| v.to_str().ok());
        assert_eq!(hint, Some("2=h:2"));
    }
}
