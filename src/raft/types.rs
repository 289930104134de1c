//! Plain data types of the consensus core: log entries, persistent state, configuration,
//! snapshots and messages. They are deliberately free of any wire format; the transport converts
//! them to and from protobuf at the edge.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

/// Identifies a node. Ids are small positive integers; 0 is never a valid id (the wire format
/// uses 0 for "none").
pub type NodeId = u64;

/// What an entry carries. Only `Normal` entries reach the application's state machine as
/// commands; the others are consensus bookkeeping that the application may skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An application command.
    Normal,
    /// The empty entry every new leader appends at the start of its term, so that it can commit
    /// entries of earlier terms (Raft paper, section 8).
    Noop,
    /// A membership change; `data` holds an encoded [`ConfState`] (see [`ConfState::encode`]).
    ConfChange,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, starting at 1.
    pub index: u64,
    /// Term of the leader that created the entry.
    pub term: u64,
    /// What the entry carries.
    pub kind: EntryKind,
    /// Payload. `Bytes` so that fanning an entry out to many followers never copies it.
    pub data: Bytes,
}

impl Entry {
    /// Approximate in-memory and on-wire size, used to cap message and batch sizes.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// The state that must be on stable storage before the node answers any RPC (Figure 2 of the
/// paper, plus the commit index so that a restart need not re-learn it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: u64,
    /// Candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// Highest index known to be committed. Persisting it is an optimisation, not a safety
    /// requirement: a node that loses it re-learns it from the leader.
    pub commit: u64,
}

/// Cluster membership. It lives in configuration entries and snapshot metadata, so that a node
/// restarting from disk knows its peers without any side channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    /// Nodes whose votes and acknowledgements count toward quorums.
    pub voters: BTreeSet<NodeId>,
    /// Nodes that receive the log but never count toward a quorum.
    pub learners: BTreeSet<NodeId>,
    /// Transport address (`host:port`) of each member. Opaque to the core, which only carries
    /// it: replicating addresses with the membership is what lets a node that joins later, or
    /// restarts, find its peers without any side channel.
    pub addrs: BTreeMap<NodeId, String>,
    /// Peer address (`host:port`) of each member: where its `Raft` service listens, apart from
    /// the client address in `addrs`. Opaque to the core, like `addrs`. A member missing here
    /// (a configuration written before peer listeners existed) is reached at its client port
    /// plus [`PEER_PORT_OFFSET`] (see [`ConfState::peer_addr`]).
    pub peer_addrs: BTreeMap<NodeId, String>,
}

/// What a member's peer port is when nobody said otherwise: its client port plus this.
pub const PEER_PORT_OFFSET: u16 = 1000;

/// The default peer address for a client address: the same host, port + [`PEER_PORT_OFFSET`].
/// `None` when `client` has no numeric port or the sum overflows.
pub fn default_peer_addr(client: &str) -> Option<String> {
    let (host, port) = client.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some(format!("{host}:{}", port.checked_add(PEER_PORT_OFFSET)?))
}

impl ConfState {
    /// A configuration of voters only.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        ConfState {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
            addrs: BTreeMap::new(),
            peer_addrs: BTreeMap::new(),
        }
    }

    /// Where member `id`'s `Raft` service listens: its recorded peer address, else the default
    /// derived from its client address.
    pub fn peer_addr(&self, id: NodeId) -> Option<String> {
        match self.peer_addrs.get(&id) {
            Some(a) => Some(a.clone()),
            None => self.addrs.get(&id).and_then(|a| default_peer_addr(a)),
        }
    }

    /// Number of voters that form a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// True when `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// The members (voters and learners) in id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.union(&self.learners).copied()
    }

    /// Number of voters that differ between `self` and `other` (added plus removed). Single-server
    /// membership changes keep this at most 1, which is what makes any majority of the old
    /// voters intersect any majority of the new ones.
    pub fn voter_delta(&self, other: &ConfState) -> usize {
        self.voters.symmetric_difference(&other.voters).count()
    }

    /// Encodes the configuration for a `ConfChange` entry: voter count, voters, learner count,
    /// learners, then address count and (id, length, UTF-8 bytes) per address, then the same
    /// for peer addresses; integers are little-endian u64. Trailing sections may be absent (an
    /// empty book), which is also how configurations written before peer addresses decode.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(24 + 8 * (self.voters.len() + self.learners.len()));
        out.extend_from_slice(&(self.voters.len() as u64).to_le_bytes());
        for v in &self.voters {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.learners.len() as u64).to_le_bytes());
        for l in &self.learners {
            out.extend_from_slice(&l.to_le_bytes());
        }
        let book = |out: &mut Vec<u8>, b: &BTreeMap<NodeId, String>| {
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            for (id, a) in b {
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&(a.len() as u64).to_le_bytes());
                out.extend_from_slice(a.as_bytes());
            }
        };
        if !self.addrs.is_empty() || !self.peer_addrs.is_empty() {
            book(&mut out, &self.addrs);
        }
        if !self.peer_addrs.is_empty() {
            book(&mut out, &self.peer_addrs);
        }
        Bytes::from(out)
    }

    /// Decodes what [`ConfState::encode`] wrote. Returns `None` on any malformed input instead
    /// of panicking, since the bytes may come from the network or the disk.
    pub fn decode(mut buf: &[u8]) -> Option<ConfState> {
        fn take_u64(buf: &mut &[u8]) -> Option<u64> {
            let (head, rest) = buf.split_first_chunk::<8>()?;
            *buf = rest;
            Some(u64::from_le_bytes(*head))
        }
        fn take_ids(buf: &mut &[u8], into: &mut BTreeSet<NodeId>) -> Option<()> {
            let n = take_u64(buf)?;
            if n > (buf.len() / 8) as u64 {
                return None;
            }
            for _ in 0..n {
                into.insert(take_u64(buf)?);
            }
            Some(())
        }
        let mut conf = ConfState::default();
        take_ids(&mut buf, &mut conf.voters)?;
        take_ids(&mut buf, &mut conf.learners)?;
        fn take_book(buf: &mut &[u8], into: &mut BTreeMap<NodeId, String>) -> Option<()> {
            let n = take_u64(buf)?;
            if n > (buf.len() / 16) as u64 {
                return None;
            }
            for _ in 0..n {
                let id = take_u64(buf)?;
                let len = usize::try_from(take_u64(buf)?).ok()?;
                if len > buf.len() {
                    return None;
                }
                let (a, rest) = buf.split_at(len);
                *buf = rest;
                into.insert(id, String::from_utf8(a.to_vec()).ok()?);
            }
            Some(())
        }
        if !buf.is_empty() {
            take_book(&mut buf, &mut conf.addrs)?;
        }
        if !buf.is_empty() {
            take_book(&mut buf, &mut conf.peer_addrs)?;
        }
        buf.is_empty().then_some(conf)
    }
}

/// Describes what a snapshot replaces: the log up to and including `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Last log index the snapshot covers.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
    /// Membership as of `index`.
    pub conf: ConfState,
}

/// A point-in-time image of the state machine plus the metadata that lets the log be cut
/// behind it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// Opaque state-machine image, produced and consumed by the application.
    pub data: Bytes,
}

/// A message between two nodes. `term` is the sender's term, except for pre-vote requests and
/// granted pre-vote responses, which carry the term the pre-candidate would campaign in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// See the type documentation.
    pub term: u64,
    /// The message itself.
    pub body: MessageBody,
}

/// The kinds of messages the core exchanges. The transport maps them onto the `Raft` gRPC
/// service (heartbeats travel as empty `AppendEntries` with the heartbeat flag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// "Vote for me" (section 5.2), or "would you vote for me" when `pre_vote` is set.
    RequestVote {
        /// Pre-vote round (thesis section 9.6): does not change anyone's term.
        pre_vote: bool,
        /// Candidate's last log index, for the up-to-date check.
        last_log_index: u64,
        /// Candidate's last log term, for the up-to-date check.
        last_log_term: u64,
        /// Set by a leadership transfer: voters skip their leader-lease check.
        transfer: bool,
    },
    /// Answer to `RequestVote`.
    RequestVoteResponse {
        /// Echo of the request's flag.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
        /// On rejection, the leader the voter follows, if known.
        leader_hint: Option<NodeId>,
    },
    /// Log replication (section 5.3).
    AppendEntries {
        /// Index of the entry immediately before `entries`.
        prev_log_index: u64,
        /// Term of that entry.
        prev_log_term: u64,
        /// Entries to append, possibly empty.
        entries: Vec<Entry>,
        /// Leader's commit index.
        commit: u64,
    },
    /// Answer to `AppendEntries` or `InstallSnapshot`.
    AppendEntriesResponse {
        /// True when the follower's log now matches the leader's up to `match_index`.
        success: bool,
        /// On success, the highest index known to match.
        match_index: u64,
        /// On rejection, the `prev_log_index` that did not match.
        reject_index: u64,
        /// On rejection, the follower's term at `reject_index` (0 if its log is shorter).
        conflict_term: u64,
        /// On rejection, the first index of `conflict_term` in the follower's log, or its last
        /// index + 1 when its log is shorter.
        conflict_index: u64,
        /// The follower's last log index.
        last_index: u64,
        /// On rejection, the leader the follower follows, if known.
        leader_hint: Option<NodeId>,
    },
    /// Leader liveness and commit propagation, plus ReadIndex leadership confirmation.
    Heartbeat {
        /// `min(leader commit, follower match)`: never beyond what the follower is known to hold.
        commit: u64,
        /// ReadIndex round being confirmed; echoed back.
        read_round: u64,
    },
    /// Answer to `Heartbeat`.
    HeartbeatResponse {
        /// Echo of the heartbeat's round.
        read_round: u64,
    },
    /// Leader sends its snapshot to a follower that needs compacted entries.
    InstallSnapshot {
        /// The snapshot (the transport streams it in chunks).
        snapshot: Snapshot,
    },
    /// Leadership transfer: "start an election now".
    TimeoutNow,
    /// A follower forwards a linearizable read to its leader.
    ReadIndex {
        /// Caller-chosen id, echoed in the answer.
        ctx: u64,
    },
    /// The leader's answer to a forwarded `ReadIndex`.
    ReadIndexResponse {
        /// Echo of the request's id.
        ctx: u64,
        /// The read index, or `None` when the leader could not serve it (it lost leadership).
        index: Option<u64>,
    },
}

impl MessageBody {
    /// A short, stable name, used in traces and logs.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResp",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResp",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResp",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResp",
        }
    }
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes; has not changed its term.
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Volatile state that the application may want to show or react to: it changes only on
/// elections, so the Ready carries it only when it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// This node's role.
    pub role: Role,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
}

/// The result of a ReadIndex request: once the state machine has applied `index`, a read made
/// then reflects every write acknowledged before the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id for the request.
    pub ctx: u64,
    /// The read index, or `None` when leadership was lost and the caller should retry.
    pub index: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_state_round_trips_and_rejects_garbage() {
        let mut c = ConfState::with_voters([1, 2, 3]);
        c.learners.insert(9);
        let enc = c.encode();
        assert_eq!(ConfState::decode(&enc), Some(c.clone()));
        assert_eq!(ConfState::decode(&enc[..enc.len() - 1]), None);
        assert_eq!(ConfState::decode(&[0xff; 8]), None);
        assert_eq!(ConfState::decode(&[]), None);

        c.addrs.insert(1, "10.0.0.1:50051".into());
        c.addrs.insert(9, "node-9:7000".into());
        let enc = c.encode();
        assert_eq!(ConfState::decode(&enc).as_ref(), Some(&c));
        for cut in 1..enc.len() {
            let d = ConfState::decode(&enc[..cut]);
            // Cutting exactly before the address section decodes the ids alone.
            assert!(
                d.is_none() || d.as_ref().is_some_and(|d| d.addrs.is_empty()),
                "cut {cut}"
            );
        }
        let mut bad = enc.to_vec();
        let n = bad.len();
        bad[n - 1] = 0xff; // not UTF-8
        assert_eq!(ConfState::decode(&bad), None);

        // Peer addresses: a third section; the old two-section form still decodes (no peer
        // addresses), and then every peer address is derived from the client address.
        let old = c.clone();
        assert_eq!(old.peer_addr(1).as_deref(), Some("10.0.0.1:51051"));
        c.peer_addrs.insert(9, "node-9:7100".into());
        let enc = c.encode();
        assert_eq!(ConfState::decode(&enc).as_ref(), Some(&c));
        assert!(enc.starts_with(&old.encode()));
        assert_eq!(c.peer_addr(9).as_deref(), Some("node-9:7100"));
        assert_eq!(c.peer_addr(1).as_deref(), Some("10.0.0.1:51051"));
        assert_eq!(c.peer_addr(2), None);
        // Peer addresses without client addresses keep an (empty) client section.
        let mut p = ConfState::with_voters([1]);
        p.peer_addrs.insert(1, "h:1".into());
        assert_eq!(ConfState::decode(&p.encode()), Some(p));
        assert_eq!(default_peer_addr("h:65000"), None);
        assert_eq!(default_peer_addr("no-port"), None);
    }

    proptest::proptest! {
        #[test]
        fn conf_state_decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Some(c) = ConfState::decode(&bytes) {
                proptest::prop_assert_eq!(ConfState::decode(&c.encode()), Some(c));
            }
        }
    }
}
