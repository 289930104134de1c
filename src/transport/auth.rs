//! Peer authentication: only nodes that hold the cluster secret speak Raft.
//!
//! Every peer call carries, in [`PEER_AUTH_METADATA`], `v1.<from>.<unix secs>.<hmac>` where
//! `hmac = HMAC-SHA256(secret, "rustyraft-peer-v1|<cluster id>|<from>|<to>|<unix secs>")` in hex.
//! The receiver checks the MAC against each secret it accepts, that the call is addressed to it,
//! and that the time is within [`MAX_CLOCK_SKEW`] of its own; the `from` it authenticated is
//! then the only sender its messages may name.
//!
//! Why a MAC and not the secret itself: the secret never crosses the network, so a passive
//! observer of a plaintext peer link learns nothing that lets it open a call of its own (a
//! captured header is only good for the same sender, receiver and a few minutes). Against an
//! active attacker on the path, run the peer listener over mutual TLS as well.
//!
//! Rotation: a node accepts every secret of its [`PeerAuth`] and signs with the first. Add the
//! new secret as a second line everywhere (rolling restart), then make it the first line
//! everywhere, then drop the old one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::Status;

use crate::raft::NodeId;

/// Metadata key of a peer call's credentials.
pub const PEER_AUTH_METADATA: &str = "x-rustyraft-peer-auth";

/// How far a caller's clock may be from ours before its credentials are refused.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Bytes of a generated cluster secret (256 bits).
pub const SECRET_BYTES: usize = 32;

/// A cluster's peer secrets, as this node uses them.
#[derive(Clone)]
pub struct PeerAuth {
    cluster_id: String,
    /// An HMAC-SHA256 key per accepted secret; the first signs. Invariant: not empty.
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for PeerAuth {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAuth")
            .field("cluster_id", &self.cluster_id)
            .field("secrets", &self.keys.len())
            .finish()
    }
}

/// Why a secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No secret at all.
    #[error("no cluster secret given")]
    Empty,
    /// A secret is too short to resist guessing.
    #[error("a cluster secret must have at least 16 characters (got {0})")]
    TooShort(usize),
}

impl PeerAuth {
    /// Uses `secrets` (the first signs, all verify) for `cluster_id`. Each secret is used as
    /// text (a generated one is 64 hex characters); surrounding whitespace is ignored.
    pub fn new(cluster_id: &str, secrets: &[String]) -> Result<PeerAuth, SecretError> {
        let secrets: Vec<Vec<u8>> = secrets
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        if secrets.is_empty() {
            return Err(SecretError::Empty);
        }
        if let Some(short) = secrets.iter().find(|s| s.len() < 16) {
            return Err(SecretError::TooShort(short.len()));
        }
        let keys = secrets
            .iter()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s))
            .collect();
        Ok(PeerAuth {
            cluster_id: cluster_id.to_string(),
            keys,
        })
    }

    /// The signed text of a call from `from` to `to` at `ts`.
    fn message(&self, from: NodeId, to: NodeId, ts: u64) -> String {
        format!("rustyraft-peer-v1|{}|{from}|{to}|{ts}", self.cluster_id)
    }

    /// The credentials node `from` puts on a call to node `to`, valid for a few minutes.
    pub fn sign(&self, from: NodeId, to: NodeId) -> MetadataValue<Ascii> {
        let ts = unix_secs();
        let tag = hmac::sign(&self.keys[0], self.message(from, to, ts).as_bytes());
        let v = format!("v1.{from}.{ts}.{}", hex::encode(tag.as_ref()));
        // Only ASCII digits, dots and hex: always a valid header value.
        MetadataValue::try_from(v).unwrap_or_else(|_| MetadataValue::from_static("invalid"))
    }

    /// Checks a call's credentials for node `me`; returns the authenticated sender.
    pub fn verify(&self, me: NodeId, md: &MetadataMap) -> Result<NodeId, Status> {
        let unauth = |why: &str| Status::unauthenticated(format!("peer call refused: {why}"));
        let v = md
            .get(PEER_AUTH_METADATA)
            .ok_or_else(|| unauth("no peer credentials (is this node in the cluster?)"))?
            .to_str()
            .map_err(|_| unauth("malformed peer credentials"))?;
        let mut parts = v.split('.');
        let (Some("v1"), Some(from), Some(ts), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(unauth("malformed peer credentials"));
        };
        let from: NodeId = from.parse().map_err(|_| unauth("malformed sender"))?;
        let ts: u64 = ts.parse().map_err(|_| unauth("malformed timestamp"))?;
        let tag = hex::decode(tag).map_err(|_| unauth("malformed signature"))?;
        if unix_secs().abs_diff(ts) > MAX_CLOCK_SKEW.as_secs() {
            return Err(unauth("credentials expired or clock skew above 5 minutes"));
        }
        let msg = self.message(from, me, ts);
        // `hmac::verify` compares in constant time.
        let ok = self
            .keys
            .iter()
            .any(|k| hmac::verify(k, msg.as_bytes(), &tag).is_ok());
        if !ok {
            return Err(unauth("wrong cluster secret"));
        }
        Ok(from)
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh cluster secret from the operating system's CSPRNG: 32 bytes as 64 hex characters.
pub fn generate_secret() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; SECRET_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "no randomness from the OS".to_string())?;
    Ok(hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(v: MetadataValue<Ascii>) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(PEER_AUTH_METADATA, v);
        m
    }

    #[test]
    fn a_signed_call_verifies_only_for_its_receiver_secret_and_cluster() {
        let s = generate_secret().unwrap();
        assert_eq!(s.len(), 64);
        assert_ne!(s, generate_secret().unwrap());
        let a = PeerAuth::new("c", std::slice::from_ref(&s)).unwrap();
        assert_eq!(a.verify(2, &md(a.sign(1, 2))).unwrap(), 1);
        // Another receiver, another secret, another cluster, nothing at all: refused.
        let code = |r: Result<NodeId, Status>| r.unwrap_err().code();
        assert_eq!(
            code(a.verify(3, &md(a.sign(1, 2)))),
            tonic::Code::Unauthenticated
        );
        let other = PeerAuth::new("c", &[generate_secret().unwrap()]).unwrap();
        assert_eq!(
            code(a.verify(2, &md(other.sign(1, 2)))),
            tonic::Code::Unauthenticated
        );
        let foreign = PeerAuth::new("d", std::slice::from_ref(&s)).unwrap();
        assert_eq!(
            code(a.verify(2, &md(foreign.sign(1, 2)))),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(a.verify(2, &MetadataMap::new())),
            tonic::Code::Unauthenticated
        );
        for junk in [
            "v1.1.2",
            "v2.1.1.aa",
            "v1.x.1.aa",
            "v1.1.1.zz",
            "v1.1.1.aa.b",
        ] {
            assert_eq!(
                code(a.verify(2, &md(MetadataValue::from_static(junk)))),
                tonic::Code::Unauthenticated,
                "{junk}"
            );
        }
        // A forged sender with a valid-looking but recomputed-without-secret tag fails too.
        let v = a.sign(1, 2);
        let forged = v.to_str().unwrap().replacen("v1.1.", "v1.7.", 1);
        assert!(a
            .verify(2, &md(MetadataValue::try_from(forged).unwrap()))
            .is_err());
    }

    #[test]
    fn rotation_accepts_every_listed_secret_and_signs_with_the_first() {
        let (old, new) = (generate_secret().unwrap(), generate_secret().unwrap());
        let before = PeerAuth::new("c", std::slice::from_ref(&old)).unwrap();
        let during = PeerAuth::new("c", &[new.clone(), old.clone()]).unwrap();
        let after = PeerAuth::new("c", std::slice::from_ref(&new)).unwrap();
        assert!(during.verify(2, &md(before.sign(1, 2))).is_ok());
        assert!(after.verify(2, &md(during.sign(1, 2))).is_ok());
        assert!(before.verify(2, &md(after.sign(1, 2))).is_err());
    }

    #[test]
    fn weak_or_missing_secrets_are_refused() {
        assert_eq!(PeerAuth::new("c", &[]).unwrap_err(), SecretError::Empty);
        assert_eq!(
            PeerAuth::new("c", &["  ".into()]).unwrap_err(),
            SecretError::Empty
        );
        assert_eq!(
            PeerAuth::new("c", &["short".into()]).unwrap_err(),
            SecretError::TooShort(5)
        );
    }
}
