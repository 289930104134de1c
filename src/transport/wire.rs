//! Conversions between the core's [`Message`] and the `Raft` service's wire types.
//!
//! Outbound, every message becomes exactly one [`Outbound`] call. Inbound, every request is
//! checked with `TryFrom`: a missing header or an unknown enum value is an error, never a panic
//! and never a default that could be mistaken for real data.

use bytes::Bytes;

use crate::pb;
use crate::raft::{
    ConfState, Entry, EntryKind, Message, MessageBody, NodeId, Snapshot, SnapshotMeta,
};

/// Why a wire message could not be turned into a core message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field holds a value the receiver does not understand.
    #[error("invalid field {0}: {1}")]
    Invalid(&'static str, String),
}

/// A peer message as received: the sender's cluster id plus the core message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Cluster id claimed by the sender.
    pub cluster_id: String,
    /// The message for the core.
    pub message: Message,
}

/// One outbound call on the `Raft` service.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// `RequestVote`.
    Vote(pb::RequestVoteRequest),
    /// `AppendEntries` (entries or heartbeat).
    Append(pb::AppendEntriesRequest),
    /// `InstallSnapshot`: header, metadata and the whole image (chunked by the sender task).
    Snapshot {
        /// Header of every chunk.
        header: pb::PeerHeader,
        /// Snapshot metadata (first chunk).
        meta: pb::SnapshotMeta,
        /// The image.
        data: Bytes,
    },
    /// `TimeoutNow`.
    TimeoutNow(pb::TimeoutNowRequest),
    /// `Reply`.
    Reply(pb::PeerReply),
}

fn header(cluster_id: &str, m: &Message) -> pb::PeerHeader {
    pb::PeerHeader {
        cluster_id: cluster_id.to_string(),
        from: m.from,
        to: m.to,
        term: m.term,
    }
}

fn entry_to_pb(e: &Entry) -> pb::Entry {
    let kind = match e.kind {
        EntryKind::Normal => pb::EntryKind::Normal,
        EntryKind::Noop => pb::EntryKind::Noop,
        EntryKind::ConfChange => pb::EntryKind::ConfChange,
    };
    pb::Entry {
        index: e.index,
        term: e.term,
        kind: kind as i32,
        data: e.data.clone(),
    }
}

impl TryFrom<pb::Entry> for Entry {
    type Error = CodecError;
    fn try_from(e: pb::Entry) -> Result<Self, CodecError> {
        let kind = match pb::EntryKind::try_from(e.kind) {
            Ok(pb::EntryKind::Normal) => EntryKind::Normal,
            Ok(pb::EntryKind::Noop) => EntryKind::Noop,
            Ok(pb::EntryKind::ConfChange) => EntryKind::ConfChange,
            Err(_) => return Err(CodecError::Invalid("entry.kind", e.kind.to_string())),
        };
        if e.index == 0 {
            return Err(CodecError::Invalid("entry.index", "0".into()));
        }
        Ok(Entry {
            index: e.index,
            term: e.term,
            kind,
            data: e.data,
        })
    }
}

/// Converts the core's membership to the wire form.
pub fn conf_to_pb(c: &ConfState) -> pb::ConfState {
    pb::ConfState {
        voters: c.voters.iter().copied().collect(),
        learners: c.learners.iter().copied().collect(),
        addresses: c.addrs.iter().map(|(k, v)| (*k, v.clone())).collect(),
        peer_addresses: c.peer_addrs.iter().map(|(k, v)| (*k, v.clone())).collect(),
    }
}

impl TryFrom<pb::SnapshotMeta> for SnapshotMeta {
    type Error = CodecError;
    fn try_from(m: pb::SnapshotMeta) -> Result<Self, CodecError> {
        let conf = m.conf.ok_or(CodecError::Missing("snapshot_meta.conf"))?;
        Ok(SnapshotMeta {
            index: m.last_included_index,
            term: m.last_included_term,
            conf: ConfState {
                voters: conf.voters.into_iter().collect(),
                learners: conf.learners.into_iter().collect(),
                addrs: conf.addresses.into_iter().collect(),
                peer_addrs: conf.peer_addresses.into_iter().collect(),
            },
        })
    }
}

fn opt_id(id: u64) -> Option<NodeId> {
    (id != 0).then_some(id)
}

/// Maps a core message to the call that carries it.
pub fn to_outbound(cluster_id: &str, m: &Message) -> Outbound {
    let h = Some(header(cluster_id, m));
    match &m.body {
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            transfer,
        } => Outbound::Vote(pb::RequestVoteRequest {
            header: h,
            pre_vote: *pre_vote,
            last_log_index: *last_log_index,
            last_log_term: *last_log_term,
            transfer: *transfer,
        }),
        MessageBody::RequestVoteResponse {
            pre_vote,
            granted,
            leader_hint,
        } => reply(pb::peer_reply::Reply::Vote(pb::RequestVoteResponse {
            header: h,
            pre_vote: *pre_vote,
            granted: *granted,
            leader_hint: leader_hint.unwrap_or(0),
        })),
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            commit,
        } => Outbound::Append(pb::AppendEntriesRequest {
            header: h,
            prev_log_index: *prev_log_index,
            prev_log_term: *prev_log_term,
            entries: entries.iter().map(entry_to_pb).collect(),
            leader_commit: *commit,
            read_round: 0,
            heartbeat: false,
        }),
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            reject_index,
            conflict_term,
            conflict_index,
            last_index,
            leader_hint,
        } => reply(pb::peer_reply::Reply::Append(pb::AppendEntriesResponse {
            header: h,
            success: *success,
            match_index: *match_index,
            reject_index: *reject_index,
            conflict_term: *conflict_term,
            conflict_index: *conflict_index,
            read_round: 0,
            last_index: *last_index,
            leader_hint: leader_hint.unwrap_or(0),
        })),
        MessageBody::Heartbeat { commit, read_round } => {
            Outbound::Append(pb::AppendEntriesRequest {
                header: h,
                prev_log_index: 0,
                prev_log_term: 0,
                entries: Vec::new(),
                leader_commit: *commit,
                read_round: *read_round,
                heartbeat: true,
            })
        }
        MessageBody::HeartbeatResponse { read_round } => {
            reply(pb::peer_reply::Reply::Heartbeat(pb::HeartbeatResponse {
                header: h,
                read_round: *read_round,
            }))
        }
        MessageBody::InstallSnapshot { snapshot } => Outbound::Snapshot {
            header: header(cluster_id, m),
            meta: pb::SnapshotMeta {
                last_included_index: snapshot.meta.index,
                last_included_term: snapshot.meta.term,
                conf: Some(conf_to_pb(&snapshot.meta.conf)),
            },
            data: snapshot.data.clone(),
        },
        MessageBody::TimeoutNow => Outbound::TimeoutNow(pb::TimeoutNowRequest { header: h }),
        MessageBody::ReadIndex { ctx } => {
            reply(pb::peer_reply::Reply::ReadIndex(pb::ReadIndexRequest {
                header: h,
                ctx: *ctx,
            }))
        }
        MessageBody::ReadIndexResponse { ctx, index } => reply(
            pb::peer_reply::Reply::ReadIndexResponse(pb::ReadIndexResponse {
                header: h,
                ctx: *ctx,
                ok: index.is_some(),
                index: index.unwrap_or(0),
            }),
        ),
    }
}

fn reply(r: pb::peer_reply::Reply) -> Outbound {
    Outbound::Reply(pb::PeerReply { reply: Some(r) })
}

/// Turns a header and body into an envelope, refusing a missing header or a zero id.
fn envelope(h: Option<pb::PeerHeader>, body: MessageBody) -> Result<Envelope, CodecError> {
    let h = h.ok_or(CodecError::Missing("header"))?;
    if h.from == 0 {
        return Err(CodecError::Invalid("header.from", "0".into()));
    }
    if h.to == 0 {
        return Err(CodecError::Invalid("header.to", "0".into()));
    }
    Ok(Envelope {
        cluster_id: h.cluster_id,
        message: Message {
            from: h.from,
            to: h.to,
            term: h.term,
            body,
        },
    })
}

impl TryFrom<pb::RequestVoteRequest> for Envelope {
    type Error = CodecError;
    fn try_from(r: pb::RequestVoteRequest) -> Result<Self, CodecError> {
        envelope(
            r.header,
            MessageBody::RequestVote {
                pre_vote: r.pre_vote,
                last_log_index: r.last_log_index,
                last_log_term: r.last_log_term,
                transfer: r.transfer,
            },
        )
    }
}

impl TryFrom<pb::AppendEntriesRequest> for Envelope {
    type Error = CodecError;
    fn try_from(r: pb::AppendEntriesRequest) -> Result<Self, CodecError> {
        let body = if r.heartbeat {
            if !r.entries.is_empty() {
                return Err(CodecError::Invalid(
                    "entries",
                    "a heartbeat carries no entries".into(),
                ));
            }
            MessageBody::Heartbeat {
                commit: r.leader_commit,
                read_round: r.read_round,
            }
        } else {
            let entries = r
                .entries
                .into_iter()
                .map(Entry::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            // The core relies on consecutive indexes right after prev_log_index.
            for (i, e) in entries.iter().enumerate() {
                if e.index != r.prev_log_index + 1 + i as u64 {
                    return Err(CodecError::Invalid(
                        "entries",
                        format!(
                            "index {} at position {i} after {}",
                            e.index, r.prev_log_index
                        ),
                    ));
                }
            }
            MessageBody::AppendEntries {
                prev_log_index: r.prev_log_index,
                prev_log_term: r.prev_log_term,
                entries,
                commit: r.leader_commit,
            }
        };
        envelope(r.header, body)
    }
}

impl TryFrom<pb::TimeoutNowRequest> for Envelope {
    type Error = CodecError;
    fn try_from(r: pb::TimeoutNowRequest) -> Result<Self, CodecError> {
        envelope(r.header, MessageBody::TimeoutNow)
    }
}

impl TryFrom<pb::PeerReply> for Envelope {
    type Error = CodecError;
    fn try_from(r: pb::PeerReply) -> Result<Self, CodecError> {
        use pb::peer_reply::Reply;
        match r.reply.ok_or(CodecError::Missing("reply"))? {
            Reply::Vote(v) => envelope(
                v.header,
                MessageBody::RequestVoteResponse {
                    pre_vote: v.pre_vote,
                    granted: v.granted,
                    leader_hint: opt_id(v.leader_hint),
                },
            ),
            Reply::Append(a) => envelope(
                a.header,
                MessageBody::AppendEntriesResponse {
                    success: a.success,
                    match_index: a.match_index,
                    reject_index: a.reject_index,
                    conflict_term: a.conflict_term,
                    conflict_index: a.conflict_index,
                    last_index: a.last_index,
                    leader_hint: opt_id(a.leader_hint),
                },
            ),
            Reply::Heartbeat(h) => envelope(
                h.header,
                MessageBody::HeartbeatResponse {
                    read_round: h.read_round,
                },
            ),
            Reply::ReadIndex(r) => envelope(r.header, MessageBody::ReadIndex { ctx: r.ctx }),
            Reply::ReadIndexResponse(r) => envelope(
                r.header,
                MessageBody::ReadIndexResponse {
                    ctx: r.ctx,
                    index: r.ok.then_some(r.index),
                },
            ),
        }
    }
}

/// Builds the InstallSnapshot envelope once all chunks are reassembled.
pub fn snapshot_envelope(
    header: Option<pb::PeerHeader>,
    meta: pb::SnapshotMeta,
    data: Bytes,
) -> Result<Envelope, CodecError> {
    let meta = SnapshotMeta::try_from(meta)?;
    envelope(
        header,
        MessageBody::InstallSnapshot {
            snapshot: Snapshot { meta, data },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Message) {
        let got = match to_outbound("c", &m) {
            Outbound::Vote(r) => Envelope::try_from(r),
            Outbound::Append(r) => Envelope::try_from(r),
            Outbound::TimeoutNow(r) => Envelope::try_from(r),
            Outbound::Reply(r) => Envelope::try_from(r),
            Outbound::Snapshot { header, meta, data } => {
                snapshot_envelope(Some(header), meta, data)
            }
        }
        .unwrap();
        assert_eq!(got.cluster_id, "c");
        assert_eq!(got.message, m);
    }

    #[test]
    fn every_message_kind_round_trips() {
        let msg = |body| Message {
            from: 1,
            to: 2,
            term: 3,
            body,
        };
        let e = Entry {
            index: 5,
            term: 3,
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"x"),
        };
        for body in [
            MessageBody::RequestVote {
                pre_vote: true,
                last_log_index: 4,
                last_log_term: 2,
                transfer: true,
            },
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
                leader_hint: None,
            },
            MessageBody::AppendEntries {
                prev_log_index: 4,
                prev_log_term: 2,
                entries: vec![e],
                commit: 3,
            },
            MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 0,
                reject_index: 4,
                conflict_term: 1,
                conflict_index: 2,
                last_index: 3,
                leader_hint: Some(1),
            },
            MessageBody::Heartbeat {
                commit: 3,
                read_round: 9,
            },
            MessageBody::HeartbeatResponse { read_round: 9 },
            MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 7,
                        term: 2,
                        conf: ConfState::with_voters([1, 2, 3]),
                    },
                    data: Bytes::from_static(b"image"),
                },
            },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex { ctx: 11 },
            MessageBody::ReadIndexResponse {
                ctx: 11,
                index: Some(8),
            },
            MessageBody::ReadIndexResponse {
                ctx: 12,
                index: None,
            },
        ] {
            round_trip(msg(body));
        }
    }

    #[test]
    fn missing_header_and_bad_fields_are_errors() {
        assert_eq!(
            Envelope::try_from(pb::TimeoutNowRequest { header: None }),
            Err(CodecError::Missing("header"))
        );
        assert_eq!(
            Envelope::try_from(pb::PeerReply { reply: None }),
            Err(CodecError::Missing("reply"))
        );
        let bad_kind = pb::AppendEntriesRequest {
            header: Some(pb::PeerHeader {
                cluster_id: "c".into(),
                from: 1,
                to: 2,
                term: 1,
            }),
            entries: vec![pb::Entry {
                index: 1,
                term: 1,
                kind: 42,
                data: Bytes::new(),
            }],
            ..Default::default()
        };
        assert!(Envelope::try_from(bad_kind).is_err());
        let gap = pb::AppendEntriesRequest {
            header: Some(pb::PeerHeader {
                cluster_id: "c".into(),
                from: 1,
                to: 2,
                term: 1,
            }),
            prev_log_index: 3,
            entries: vec![pb::Entry {
                index: 5,
                term: 1,
                kind: 0,
                data: Bytes::new(),
            }],
            ..Default::default()
        };
        assert!(Envelope::try_from(gap).is_err());
    }
}
