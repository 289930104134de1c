//! Domain to wire conversions for the client API, and the opaque page tokens.

use std::sync::Arc;

use tonic::Status;

use crate::chat::{ChatMessage, RoomInfo};
use crate::node::NodeStatus;
use crate::pb;
use crate::raft::{ConfState, Role};

impl From<&ChatMessage> for pb::Message {
    fn from(m: &ChatMessage) -> Self {
        pb::Message {
            room: m.room.clone(),
            seq: m.seq,
            index: m.index,
            term: m.term,
            author: m.author.clone(),
            text: m.text.clone(),
            id: m.id.clone(),
            sent_at_unix_ms: m.sent_at_unix_ms,
        }
    }
}

impl From<&Arc<ChatMessage>> for pb::Message {
    fn from(m: &Arc<ChatMessage>) -> Self {
        pb::Message::from(m.as_ref())
    }
}

/// Error of a wire message that lacks what the domain needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid message from leader: {0}")]
pub struct MessageError(&'static str);

impl TryFrom<pb::Message> for ChatMessage {
    type Error = MessageError;
    fn try_from(m: pb::Message) -> Result<Self, MessageError> {
        if m.room.is_empty() {
            return Err(MessageError("missing room"));
        }
        if m.seq == 0 {
            return Err(MessageError("missing seq"));
        }
        if m.index == 0 {
            return Err(MessageError("missing index"));
        }
        Ok(ChatMessage {
            room: m.room,
            seq: m.seq,
            index: m.index,
            term: m.term,
            author: m.author,
            text: m.text,
            id: m.id,
            sent_at_unix_ms: m.sent_at_unix_ms,
        })
    }
}

impl From<RoomInfo> for pb::RoomInfo {
    fn from(r: RoomInfo) -> Self {
        pb::RoomInfo {
            name: r.name,
            message_count: r.message_count,
        }
    }
}

/// Maps the core's role to the wire enum.
pub fn role_to_pb(r: Role) -> pb::Role {
    match r {
        Role::Follower => pb::Role::Follower,
        Role::PreCandidate => pb::Role::PreCandidate,
        Role::Candidate => pb::Role::Candidate,
        Role::Leader => pb::Role::Leader,
    }
}

/// A membership on the wire, addresses included.
pub fn conf_to_pb(c: &ConfState) -> pb::ConfState {
    pb::ConfState {
        voters: c.voters.iter().copied().collect(),
        learners: c.learners.iter().copied().collect(),
        addresses: c.addrs.clone().into_iter().collect(),
        peer_addresses: c.peer_addrs.clone().into_iter().collect(),
    }
}

/// Builds the `Status` response from a node status. A learner that follows reports
/// `ROLE_LEARNER`, so an operator sees at a glance which nodes do not vote.
pub fn status_to_pb(s: &NodeStatus, leader_addr: String) -> pb::StatusResponse {
    let role = if s.role == Role::Follower && s.learners.contains(&s.id) {
        pb::Role::Learner
    } else {
        role_to_pb(s.role)
    };
    pb::StatusResponse {
        id: s.id,
        addr: s.addr.clone(),
        role: role as i32,
        term: s.term,
        leader_id: s.leader_id.unwrap_or(0),
        leader_addr,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        last_index: s.last_index,
        snapshot_index: s.snapshot_index,
        peers: s
            .peers
            .iter()
            .map(|p| pb::PeerProgress {
                id: p.id,
                addr: p.addr.clone(),
                match_index: p.match_index,
                next_index: p.next_index,
                lag: p.lag,
                learner: p.learner,
                active: p.active,
            })
            .collect(),
        voters: s.voters.clone(),
        learners: s.learners.clone(),
        cluster_id: s.cluster_id.clone(),
        addresses: s.addrs.clone().into_iter().collect(),
        peer_addresses: s.peer_addrs.clone().into_iter().collect(),
        removed: s.removed,
        http_addr: String::new(),
    }
}

const TOKEN_PREFIX: &str = "v1.";

/// A history page token: the next seq to read.
pub fn encode_seq_token(seq: u64) -> String {
    format!("{TOKEN_PREFIX}{seq}")
}

/// Decodes a history page token; malformed is INVALID_ARGUMENT.
pub fn decode_seq_token(t: &str) -> Result<u64, Status> {
    t.strip_prefix(TOKEN_PREFIX)
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .ok_or_else(|| Status::invalid_argument(format!("malformed page_token {t:?}")))
}

/// A room-list page token: the last room name returned, hex-encoded.
pub fn encode_room_token(room: &str) -> String {
    let mut s = String::from(TOKEN_PREFIX);
    for b in room.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Decodes a room-list page token; malformed is INVALID_ARGUMENT.
pub fn decode_room_token(t: &str) -> Result<String, Status> {
    let bad = || Status::invalid_argument(format!("malformed page_token {t:?}"));
    let hex = t.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
    if hex.is_empty() || hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    String::from_utf8(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_invalid_argument() {
        assert_eq!(decode_seq_token(&encode_seq_token(42)).unwrap(), 42);
        assert_eq!(
            decode_room_token(&encode_room_token("général")).unwrap(),
            "général"
        );
        for bad in ["", "42", "v1.", "v1.x", "v1.0", "v2.5"] {
            assert_eq!(
                decode_seq_token(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument
            );
        }
        for bad in ["", "v1.", "v1.0", "v1.zz", "v1.ff"] {
            assert_eq!(
                decode_room_token(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument
            );
        }
    }
}
