//! How snapshot transfers ended, for the leader's core.
//!
//! The core sends a follower at most one snapshot and then waits (etcd's `StateSnapshot`):
//! nothing else goes to that follower until the follower answers or the transport says the
//! transfer is over. This is where the transport says so. A transfer ends in exactly one of:
//! delivered (the follower's `InstallSnapshot` call returned), or lost (no route, full
//! outbox, failed call, or dropped from the outbox after a failed call). Without a report a
//! lost snapshot would leave the follower paused forever.
//!
//! Bounded by construction: one slot per peer, the latest outcome wins.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::raft::{Message, MessageBody, NodeId};

/// Outcomes of snapshot transfers not yet handed to the core, one per peer.
#[derive(Debug, Default)]
pub struct SnapshotReports {
    outcomes: Mutex<BTreeMap<NodeId, bool>>,
    notify: Notify,
}

impl SnapshotReports {
    /// Records that the transfer to `to` ended (`ok`: delivered) and wakes the driver.
    pub fn report(&self, to: NodeId, ok: bool) {
        // A poisoned lock only means another reporter panicked mid-insert; the map is still
        // a valid map, so keep reporting.
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        outcomes.insert(to, ok);
        drop(outcomes);
        self.notify.notify_one();
    }

    /// Reports a message as lost if it is a snapshot (for the transport's drop paths).
    pub fn lost(&self, m: &Message) {
        if matches!(m.body, MessageBody::InstallSnapshot { .. }) {
            tracing::debug!(to = m.to, "snapshot dropped before delivery");
            self.report(m.to, false);
        }
    }

    /// Takes every outcome recorded since the last call.
    pub fn take(&self) -> BTreeMap<NodeId, bool> {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *outcomes)
    }

    /// Resolves once an outcome was recorded since the last wake-up (a report made while
    /// nobody waits is remembered, so none is missed).
    pub async fn reported(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Snapshot, SnapshotMeta};

    #[tokio::test]
    async fn a_report_made_before_anyone_waits_still_wakes_the_waiter() {
        let r = SnapshotReports::default();
        r.report(2, false);
        r.report(2, true);
        r.report(3, false);
        tokio::time::timeout(std::time::Duration::from_secs(5), r.reported())
            .await
            .expect("the stored permit wakes the waiter");
        assert_eq!(r.take(), BTreeMap::from([(2, true), (3, false)]));
        assert!(r.take().is_empty());
    }

    #[test]
    fn only_snapshots_are_reported_lost() {
        let r = SnapshotReports::default();
        let snap = Message {
            from: 1,
            to: 4,
            term: 2,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta::default(),
                    data: Default::default(),
                },
            },
        };
        let other = Message {
            from: 1,
            to: 5,
            term: 2,
            body: MessageBody::TimeoutNow,
        };
        r.lost(&other);
        assert!(r.take().is_empty());
        r.lost(&snap);
        assert_eq!(r.take(), BTreeMap::from([(4, false)]));
    }
}
