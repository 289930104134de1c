//! The JSON shapes of the HTTP API, converted from the gRPC messages the services answer with.
//! Field names are the proto's, so a JSON client and a gRPC client read the same fields; enums
//! are lower-case words (`"leader"`), not numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pb;

/// A stored chat message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    /// Its room.
    pub room: String,
    /// Its position in the room, from 1, without gaps.
    pub seq: u64,
    /// The Raft log index it was committed at.
    pub index: u64,
    /// The Raft term it was committed in.
    pub term: u64,
    /// Who sent it.
    pub author: String,
    /// What was said.
    pub text: String,
    /// The client request id (or one the server gave it).
    pub id: String,
    /// When the accepting node received it, Unix milliseconds.
    pub sent_at_unix_ms: i64,
}

impl From<pb::Message> for Message {
    fn from(m: pb::Message) -> Self {
        Message {
            room: m.room,
            seq: m.seq,
            index: m.index,
            term: m.term,
            author: m.author,
            text: m.text,
            id: m.id,
            sent_at_unix_ms: m.sent_at_unix_ms,
        }
    }
}

/// A room and its size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Room {
    /// Its name.
    pub name: String,
    /// Messages in it.
    pub message_count: u64,
}

impl From<pb::RoomInfo> for Room {
    fn from(r: pb::RoomInfo) -> Self {
        Room {
            name: r.name,
            message_count: r.message_count,
        }
    }
}

/// A follower's replication progress, as the leader sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    /// The follower.
    pub id: u64,
    /// Its address.
    pub addr: String,
    /// Highest log index known to be replicated on it.
    pub match_index: u64,
    /// Next index the leader sends it.
    pub next_index: u64,
    /// Entries it trails the leader's log by.
    pub lag: u64,
    /// Non-voting.
    pub learner: bool,
    /// Heard from recently.
    pub active: bool,
}

/// One node's view of the cluster (the gRPC `Cluster/Status` answer).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The node.
    pub id: u64,
    /// Its client (gRPC) address.
    pub addr: String,
    /// Its web address (host:port), empty if it has none.
    pub http_addr: String,
    /// `leader`, `follower`, `candidate`, `pre_candidate`, `learner` or `unknown`.
    pub role: &'static str,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of (0: none).
    pub leader_id: u64,
    /// The leader's client address, if known.
    pub leader_addr: String,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index applied to its chat state.
    pub applied_index: u64,
    /// Last index in its log.
    pub last_index: u64,
    /// Index of its latest snapshot.
    pub snapshot_index: u64,
    /// Followers' progress (leader only).
    pub peers: Vec<Peer>,
    /// Voting members.
    pub voters: Vec<u64>,
    /// Non-voting members.
    pub learners: Vec<u64>,
    /// Every member's client address.
    pub addresses: BTreeMap<u64, String>,
    /// The cluster id.
    pub cluster_id: String,
    /// It was removed from the cluster.
    pub removed: bool,
}

fn role_name(r: i32) -> &'static str {
    match pb::Role::try_from(r) {
        Ok(pb::Role::Leader) => "leader",
        Ok(pb::Role::Follower) => "follower",
        Ok(pb::Role::Candidate) => "candidate",
        Ok(pb::Role::PreCandidate) => "pre_candidate",
        Ok(pb::Role::Learner) => "learner",
        _ => "unknown",
    }
}

impl From<pb::StatusResponse> for Status {
    fn from(s: pb::StatusResponse) -> Self {
        Status {
            id: s.id,
            addr: s.addr,
            http_addr: s.http_addr,
            role: role_name(s.role),
            term: s.term,
            leader_id: s.leader_id,
            leader_addr: s.leader_addr,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            last_index: s.last_index,
            snapshot_index: s.snapshot_index,
            peers: s
                .peers
                .into_iter()
                .map(|p| Peer {
                    id: p.id,
                    addr: p.addr,
                    match_index: p.match_index,
                    next_index: p.next_index,
                    lag: p.lag,
                    learner: p.learner,
                    active: p.active,
                })
                .collect(),
            voters: s.voters,
            learners: s.learners,
            addresses: s.addresses.into_iter().collect(),
            cluster_id: s.cluster_id,
            removed: s.removed,
        }
    }
}
