//! Membership changes as the node sees them: the operations an operator asks for, the rules
//! that turn one into the next configuration (or refuse it with a precise reason), and the
//! errors the API maps to gRPC codes.
//!
//! The rules are a pure function of the configuration in force ([`crate::raft::Raft::conf`])
//! and the leader's replication progress, so they are unit-tested here without a cluster. The
//! driver applies them when a request arrives and proposes the result; the consensus core still
//! enforces its own invariants (one change in flight, one voter changed at a time).

use crate::raft::{default_peer_addr, ConfState, NodeId};

/// Most entries a learner may trail the leader's last index by and still be promoted: small, so
/// that a freshly promoted voter never makes the cluster wait for it to catch up, and large
/// enough that a learner under steady write load (a few batches in flight) qualifies.
pub const PROMOTE_MAX_LAG: u64 = 100;

/// One membership change, as asked for by an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfOp {
    /// Add node `id`, reachable at `addr`. A new node always enters as a learner; `learner`
    /// says whether the caller wants it to stay one (a voter is promoted once it has caught up,
    /// in a second change).
    Add {
        /// The new node's id.
        id: NodeId,
        /// Its client `host:port`.
        addr: String,
        /// Its peer `host:port` (where its `Raft` service listens); empty: the client port +
        /// 1000.
        peer_addr: String,
        /// Stay a learner.
        learner: bool,
    },
    /// Turn a caught-up learner into a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Remove a voter or a learner (the leader itself included).
    Remove {
        /// The member.
        id: NodeId,
    },
}

/// What a membership request achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChanged {
    /// The configuration after the change (or the one in force, when nothing had to change).
    pub conf: ConfState,
    /// Index of the committed configuration entry; 0 when nothing had to change (the request
    /// asked for what was already true, like a retried `--join`).
    pub index: u64,
}

/// Why a membership change was refused. Each maps to one gRPC code at the API edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The request itself is malformed (id 0, a bad address). INVALID_ARGUMENT.
    #[error("{0}")]
    InvalidArgument(String),
    /// The id or address is already taken. ALREADY_EXISTS.
    #[error("{0}")]
    AlreadyExists(String),
    /// No such member. NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// The cluster is not in a state that allows this change. FAILED_PRECONDITION.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another configuration change is still in flight. FAILED_PRECONDITION.
    #[error("another membership change is in flight; retry once it has committed")]
    Pending,
    /// The learner is too far behind to be promoted, or has not answered the leader yet.
    /// FAILED_PRECONDITION.
    #[error("learner {id} is not caught up: {detail}; promote it once it has caught up")]
    NotCaughtUp {
        /// The learner.
        id: NodeId,
        /// How far behind it is, or that it has not answered.
        detail: String,
    },
    /// A bounded wait ran out. DEADLINE_EXCEEDED.
    #[error("{0}")]
    Timeout(String),
}

/// The replication facts the rules need, as the leader knows them.
pub struct LeaderView<'a> {
    /// The leader's last log index.
    pub last_index: u64,
    /// Each follower's match index (learners included).
    pub matched: &'a dyn Fn(NodeId) -> Option<u64>,
}

/// Decides what `op` does to `conf`: `Ok(Some(next))` is the configuration to propose,
/// `Ok(None)` means it already holds (an identical retry) and nothing is proposed.
pub fn plan(
    conf: &ConfState,
    leader: &LeaderView<'_>,
    op: &ConfOp,
) -> Result<Option<ConfState>, MembershipError> {
    match op {
        ConfOp::Add {
            id,
            addr,
            peer_addr,
            learner,
        } => {
            let id = *id;
            if id == 0 {
                return Err(MembershipError::InvalidArgument(
                    "node id 0 is not valid".into(),
                ));
            }
            let peer_addr = match peer_addr.as_str() {
                "" => default_peer_addr(addr).ok_or_else(|| {
                    MembershipError::InvalidArgument(format!(
                        "no default peer address for {addr}: give one"
                    ))
                })?,
                p => p.to_string(),
            };
            if let Some(other) = conf
                .members()
                .find(|&o| o != id && conf.peer_addr(o).as_deref() == Some(peer_addr.as_str()))
            {
                return Err(MembershipError::AlreadyExists(format!(
                    "peer address {peer_addr} is already used by node {other}"
                )));
            }
            if let Some((other, _)) = conf
                .addrs
                .iter()
                .find(|(o, a)| **o != id && conf.contains(**o) && *a == addr)
            {
                return Err(MembershipError::AlreadyExists(format!(
                    "address {addr} is already used by node {other}"
                )));
            }
            if conf.contains(id) {
                let known = conf.addrs.get(&id).map(String::as_str).unwrap_or("");
                if known != addr {
                    return Err(MembershipError::AlreadyExists(format!(
                        "node {id} is already a member, at {known:?}"
                    )));
                }
                let is_voter = conf.voters.contains(&id);
                return match (is_voter, learner) {
                    (true, true) => Err(MembershipError::AlreadyExists(format!(
                        "node {id} is already a voter (demotion to learner is not supported)"
                    ))),
                    // Identical retry, or a learner about to be promoted by the caller.
                    _ => Ok(None),
                };
            }
            let mut next = conf.clone();
            next.learners.insert(id);
            next.addrs.insert(id, addr.clone());
            next.peer_addrs.insert(id, peer_addr);
            Ok(Some(next))
        }
        ConfOp::Promote { id } => {
            let id = *id;
            if conf.voters.contains(&id) {
                return Err(MembershipError::FailedPrecondition(format!(
                    "node {id} is already a voter"
                )));
            }
            if !conf.learners.contains(&id) {
                return Err(MembershipError::NotFound(format!(
                    "node {id} is not a member"
                )));
            }
            // A learner that never acknowledged anything (not running, unreachable) may look
            // close on a short log: it must have answered at least once.
            let matched = (leader.matched)(id).unwrap_or(0);
            if matched == 0 {
                return Err(MembershipError::NotCaughtUp {
                    id,
                    detail: "it has not acknowledged any entry yet (is it running and \
                             reachable?)"
                        .into(),
                });
            }
            let lag = leader.last_index.saturating_sub(matched);
            if lag > PROMOTE_MAX_LAG {
                return Err(MembershipError::NotCaughtUp {
                    id,
                    detail: format!(
                        "{lag} entries behind the leader (at most {PROMOTE_MAX_LAG} allowed)"
                    ),
                });
            }
            let mut next = conf.clone();
            next.learners.remove(&id);
            next.voters.insert(id);
            Ok(Some(next))
        }
        ConfOp::Remove { id } => {
            let id = *id;
            if !conf.contains(id) {
                return Err(MembershipError::NotFound(format!(
                    "node {id} is not a member"
                )));
            }
            if conf.voters.len() == 1 && conf.voters.contains(&id) {
                return Err(MembershipError::FailedPrecondition(format!(
                    "node {id} is the last voter; removing it would leave no cluster"
                )));
            }
            let mut next = conf.clone();
            next.voters.remove(&id);
            next.learners.remove(&id);
            next.addrs.remove(&id);
            Ok(Some(next))
        }
    }
}

/// Checks a member address: `host:port` with a numeric port, no scheme, no spaces. Addresses
/// are replicated to every node and dialled by all of them, so a typo must be refused here, not
/// discovered as a silent partition later.
pub fn validate_addr(addr: &str) -> Result<(), MembershipError> {
    let bad = |why: &str| {
        MembershipError::InvalidArgument(format!("address {addr:?} is not host:port ({why})"))
    };
    if addr.is_empty() {
        return Err(bad("empty"));
    }
    if addr.contains("://") || addr.chars().any(char::is_whitespace) {
        return Err(bad("no scheme or spaces allowed"));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("bad port")),
    }
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| bad(&e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[NodeId], learners: &[NodeId]) -> ConfState {
        let mut c = ConfState::with_voters(voters.iter().copied());
        c.learners = learners.iter().copied().collect();
        for id in voters.iter().chain(learners) {
            c.addrs.insert(*id, format!("h:{}", 5000 + id));
        }
        c
    }

    fn view(last: u64, m: &dyn Fn(NodeId) -> Option<u64>) -> LeaderView<'_> {
        LeaderView {
            last_index: last,
            matched: m,
        }
    }

    #[test]
    fn add_enters_as_learner_and_retries_are_idempotent() {
        let c = conf(&[1, 2, 3], &[]);
        let none = |_| None;
        let add = |id, addr: &str, learner| ConfOp::Add {
            peer_addr: String::new(),
            id,
            addr: addr.into(),
            learner,
        };
        let next = plan(&c, &view(10, &none), &add(4, "h:5004", false))
            .unwrap()
            .unwrap();
        assert!(next.learners.contains(&4) && !next.voters.contains(&4));
        assert_eq!(next.addrs[&4], "h:5004");
        // Identical retries change nothing; a learner asked to become a voter goes on.
        assert_eq!(
            plan(&c, &view(10, &none), &add(3, "h:5003", false)),
            Ok(None)
        );
        assert_eq!(
            plan(&next, &view(10, &none), &add(4, "h:5004", true)),
            Ok(None)
        );
        assert_eq!(
            plan(&next, &view(10, &none), &add(4, "h:5004", false)),
            Ok(None)
        );
        // Duplicates.
        for bad in [
            add(3, "h:9", false),    // same id, other address
            add(3, "h:5003", true),  // a voter asked to be a learner
            add(7, "h:5002", false), // another member's address
        ] {
            assert!(
                matches!(
                    plan(&c, &view(10, &none), &bad),
                    Err(MembershipError::AlreadyExists(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            plan(&c, &view(10, &none), &add(0, "h:1", true)),
            Err(MembershipError::InvalidArgument(_))
        ));
    }

    #[test]
    fn promote_needs_a_caught_up_learner() {
        let c = conf(&[1, 2, 3], &[4]);
        let behind = |_| Some(10);
        let close = |_| Some(990);
        let silent = |_| Some(0);
        let p = |id| ConfOp::Promote { id };
        for v in [&behind as &dyn Fn(NodeId) -> Option<u64>, &silent] {
            let e = plan(&c, &view(1000, v), &p(4)).unwrap_err();
            assert!(
                matches!(e, MembershipError::NotCaughtUp { id: 4, .. }),
                "{e}"
            );
        }
        assert!(plan(&c, &view(1000, &behind), &p(4))
            .unwrap_err()
            .to_string()
            .contains("990 entries behind"));
        let next = plan(&c, &view(1000, &close), &p(4)).unwrap().unwrap();
        assert!(next.voters.contains(&4) && next.learners.is_empty());
        assert!(matches!(
            plan(&c, &view(1000, &close), &p(2)),
            Err(MembershipError::FailedPrecondition(_))
        ));
        assert!(matches!(
            plan(&c, &view(1000, &close), &p(9)),
            Err(MembershipError::NotFound(_))
        ));
    }

    #[test]
    fn remove_refuses_unknown_ids_and_the_last_voter() {
        let none = |_| None;
        let r = |id| ConfOp::Remove { id };
        let c = conf(&[1, 2], &[3]);
        let next = plan(&c, &view(1, &none), &r(2)).unwrap().unwrap();
        assert_eq!(next.voters.iter().copied().collect::<Vec<_>>(), vec![1]);
        assert!(!next.addrs.contains_key(&2));
        assert!(plan(&c, &view(1, &none), &r(3)).unwrap().is_some());
        assert!(matches!(
            plan(&c, &view(1, &none), &r(5)),
            Err(MembershipError::NotFound(_))
        ));
        assert!(matches!(
            plan(&conf(&[1], &[3]), &view(1, &none), &r(1)),
            Err(MembershipError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn addresses_must_be_host_port() {
        for ok in ["127.0.0.1:5000", "node4:50051", "[::1]:7"] {
            assert_eq!(validate_addr(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "host",
            ":5000",
            "h:0",
            "h:99999",
            "http://h:1",
            "h :1",
            "h:x",
        ] {
            assert!(validate_addr(bad).is_err(), "{bad:?}");
        }
    }
}
