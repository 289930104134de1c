//! `raft_client run <id> <addr> --join A[,B...]`: a new node joins a running cluster.
//!
//! 1. Before the node starts, [`prepare`] asks the targets for their Status ([`discover`]): the
//!    cluster id (so the data directory is stamped with the right one, and a node never joins a
//!    foreign cluster) and the members' addresses (so the fresh node can answer the leader's
//!    first messages before any configuration entry has reached it).
//! 2. The node starts with empty storage and no membership: it is nobody's voter, so it never
//!    campaigns, and it serves its gRPC so the leader can replicate to it.
//! 3. [`add_self`] calls `AddMember` for itself (as a voter unless `--learner`), following
//!    leader redirects and retrying through elections and in-flight changes, bounded by
//!    [`JOIN_DEADLINE`]. When the local storage already lists this node as a member (a restart)
//!    there is nothing to do.

use std::time::Duration;

use tonic::Code;

use super::{JoinConfig, NodeConfig, NodeHandle};
use crate::client::{Client, MembershipCall, MembershipReply};
use crate::pb;
use crate::pb::cluster_client::ClusterClient;

/// Learns what a joining node needs before it starts: the cluster id (from its own data
/// directory on a restart, else from the cluster) and the members' addresses. Updates `cfg`.
pub async fn prepare(cfg: &mut NodeConfig, j: &JoinConfig) -> Result<(), String> {
    let discovered = match super::stored_cluster_id(&cfg.data_dir) {
        Some(stored) => {
            // A restart: the data directory says which cluster this is; asking the cluster is
            // only a courtesy (it may be down), so it must not block or fail the start.
            if let Some(want) = j.expect_cluster_id.as_ref().filter(|w| **w != stored) {
                return Err(format!(
                    "--cluster-id is {want:?} but {} belongs to cluster {stored:?}",
                    cfg.data_dir.display()
                ));
            }
            cfg.cluster_id = stored;
            let quick = JoinConfig {
                expect_cluster_id: Some(cfg.cluster_id.clone()),
                ..j.clone()
            };
            tokio::time::timeout(Duration::from_secs(3), discover(&quick, &cfg.client.dial))
                .await
                .ok()
                .and_then(Result::ok)
        }
        None => {
            let s = discover(j, &cfg.client.dial).await?;
            cfg.cluster_id = s.cluster_id.clone();
            Some(s)
        }
    };
    if let Some(s) = discovered {
        tracing::info!(id = cfg.id, cluster_id = %s.cluster_id, leader = s.leader_id,
            members = ?s.addresses, "found the cluster to join");
        for (id, a) in s.addresses {
            cfg.known_addrs.entry(id).or_insert(a);
        }
        for (id, a) in s.peer_addresses {
            cfg.known_peer_addrs.entry(id).or_insert(a);
        }
        if s.leader_id != 0 && !s.leader_addr.is_empty() {
            cfg.known_addrs.entry(s.leader_id).or_insert(s.leader_addr);
        }
    }
    Ok(())
}

/// How long discovery keeps asking the targets for their Status.
pub const DISCOVER_DEADLINE: Duration = Duration::from_secs(30);
/// How long a node keeps trying to be added (catch-up included) before it gives up and exits.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(120);
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Asks the join targets for a Status, preferring one that knows a leader. Checks the cluster
/// id against `join.expect_cluster_id`. Bounded by [`DISCOVER_DEADLINE`]. `dial` is how the
/// targets are reached (TLS, token: `run --ca`, `--token`).
pub async fn discover(
    join: &JoinConfig,
    dial: &crate::tls::Credentials,
) -> Result<pb::StatusResponse, String> {
    if join.targets.is_empty() {
        return Err("--join needs at least one address".into());
    }
    let deadline = tokio::time::Instant::now() + DISCOVER_DEADLINE;
    let mut last = String::from("no answer");
    loop {
        let mut fallback = None;
        for t in &join.targets {
            match status_of(t, dial).await {
                Ok(s) if s.cluster_id.is_empty() => last = format!("{t}: no cluster id"),
                Ok(s) if s.leader_id != 0 => return check_cluster(join, s),
                Ok(s) => fallback = Some(s),
                Err(e) => last = format!("{t}: {e}"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return match fallback {
                Some(s) => check_cluster(join, s),
                None => Err(format!(
                    "could not reach any of {:?} within {}s (last error: {last})",
                    join.targets,
                    DISCOVER_DEADLINE.as_secs()
                )),
            };
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

fn check_cluster(join: &JoinConfig, s: pb::StatusResponse) -> Result<pb::StatusResponse, String> {
    match &join.expect_cluster_id {
        Some(want) if *want != s.cluster_id => Err(format!(
            "--cluster-id is {want:?} but the cluster at {:?} is {:?}; refusing to join",
            join.targets, s.cluster_id
        )),
        _ => Ok(s),
    }
}

async fn status_of(
    addr: &str,
    dial: &crate::tls::Credentials,
) -> Result<pb::StatusResponse, String> {
    let ch = dial
        .endpoint(addr)
        .map_err(|e| format!("bad address: {e}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    ClusterClient::with_interceptor(ch, dial.clone())
        .status(pb::StatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
}

/// Adds this node to the cluster through the join targets, unless the local storage already
/// lists it. Returns a one-line description of the outcome, or why it failed.
pub async fn add_self(node: NodeHandle, join: JoinConfig) -> Result<String, String> {
    let cfg = node.config().clone();
    let st = node.status();
    if st.voters.contains(&cfg.id) || st.learners.contains(&cfg.id) {
        return Ok(format!(
            "node {} is already a member according to its storage; --join has nothing to do",
            cfg.id
        ));
    }
    let addr = cfg.advertised_addr();
    let call = MembershipCall::Add {
        id: cfg.id,
        addr: addr.clone(),
        peer_addr: cfg.advertised_peer_addr(),
        learner: join.learner,
    };
    let mut client = Client::with_credentials(&join.targets.join(","), cfg.client.dial.clone())
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    tracing::info!(id = cfg.id, %addr, targets = ?join.targets, learner = join.learner,
        "joining the cluster");
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.membership(&call, left).await {
            Ok(MembershipReply::Conf(r)) => {
                let conf = r.conf.unwrap_or_default();
                return Ok(format!(
                    "joined the cluster as a {} (configuration index {}; voters {:?}, learners \
                     {:?})",
                    if conf.voters.contains(&cfg.id) {
                        "voter"
                    } else {
                        "learner"
                    },
                    r.index,
                    conf.voters,
                    conf.learners
                ));
            }
            Ok(MembershipReply::Leader(_)) => return Err("unexpected answer to AddMember".into()),
            Err(crate::client::ClientError::Status { code, message })
                if matches!(code, Code::FailedPrecondition | Code::DeadlineExceeded)
                    && tokio::time::Instant::now() < deadline =>
            {
                // Another change in flight, or catch-up still running: the learner stays in,
                // and the next try resumes from there.
                tracing::info!(id = cfg.id, ?code, %message, "join not done yet, retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(format!("could not join the cluster: {e}")),
        }
    }
}

/// Prefix of a join token (format version 1).
const JOIN_TOKEN_PREFIX: &str = "rrj1";

/// A join token: what a new node needs to speak Raft with a cluster, in one string an operator
/// can pass along: the cluster id and the signing cluster secret (`raft_client cluster
/// join-token --data-dir D` prints it from a member's data directory; `run --join ...
/// --join-token T` uses it). It is as sensitive as the secret itself.
pub fn encode_join_token(cluster_id: &str, secret: &str) -> String {
    format!(
        "{JOIN_TOKEN_PREFIX}.{}.{}",
        hex::encode(cluster_id),
        hex::encode(secret)
    )
}

/// Reads a join token back: `(cluster id, secret)`, or why it is not one.
pub fn decode_join_token(token: &str) -> Result<(String, String), String> {
    let bad =
        || "not a join token (expected rrj1.<hex>.<hex>, from `raft_client cluster join-token`)";
    let mut parts = token.trim().split('.');
    let (Some(JOIN_TOKEN_PREFIX), Some(id), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad().into());
    };
    let text = |h: &str| {
        hex::decode(h)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad().to_string())
    };
    Ok((text(id)?, text(secret)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_round_trip_and_garbage_is_refused() {
        let t = encode_join_token("my.cluster", "s3cret.with.dots-0123456789");
        assert_eq!(
            decode_join_token(&t).unwrap(),
            ("my.cluster".into(), "s3cret.with.dots-0123456789".into())
        );
        for junk in [
            "",
            "rrj1",
            "rrj1.zz.00",
            "rrj2.6161.6262",
            "rrj1.6161.6262.63",
            "rrj1..6262",
        ] {
            assert!(decode_join_token(junk).is_err(), "{junk:?}");
        }
    }
}
