use super::*;

/// Every metric the operations guide documents is exposed, with its full name, even before
/// anything happened (so dashboards and alerts never see a missing series).
#[test]
fn text_exposition_has_every_metric() {
    let m = Metrics::new();
    m.proposal(ProposalOutcome::Ok);
    m.set_role("leader");
    m.peer(2).sent.inc();
    // Labelled families have no series until their first label set (a peer, a call).
    let peer = vec![("peer", "2".to_string())];
    m.peer_lag.get_or_create(&peer).set(3);
    m.peer_dropped.get_or_create(&peer).inc();
    let call = vec![("method", "/m".to_string())];
    m.grpc_seconds.get_or_create(&call).observe(0.01);
    m.grpc_requests
        .get_or_create(&vec![("method", "/m".to_string()), ("code", "OK".into())])
        .inc();
    let text = m.encode().unwrap();
    for name in [
        "rustyraft_term ",
        "rustyraft_role{role=\"leader\"} 1",
        "rustyraft_role{role=\"follower\"} 0",
        "rustyraft_leader_id ",
        "rustyraft_leader_changes_total ",
        "rustyraft_commit_index ",
        "rustyraft_applied_index ",
        "rustyraft_last_log_index ",
        "rustyraft_snapshot_index ",
        "rustyraft_proposals_total{outcome=\"ok\"} 1",
        "rustyraft_proposals_total{outcome=\"not_leader\"} 0",
        "rustyraft_peer_messages_received_total ",
        "rustyraft_fsync_duration_seconds_bucket",
        "rustyraft_disk_written_bytes_total ",
        "rustyraft_wal_bytes ",
        "rustyraft_wal_segments ",
        "rustyraft_snapshots_total{source=\"local\"} 0",
        "rustyraft_snapshot_duration_seconds_bucket",
        "rustyraft_snapshot_bytes ",
        "rustyraft_peer_messages_sent_total{peer=\"2\"} 1",
        "rustyraft_peer_replication_lag{peer=\"2\"} 3",
        "rustyraft_peer_messages_dropped_total{peer=\"2\"} 1",
        "rustyraft_peer_send_failures_total{peer=\"2\"} 0",
        "rustyraft_grpc_requests_total{method=\"/m\",code=\"OK\"} 1",
        "rustyraft_grpc_request_duration_seconds_bucket{le=",
        "rustyraft_subscribers ",
        "rustyraft_rooms ",
        "rustyraft_messages_stored ",
    ] {
        assert!(text.contains(name), "{name:?} missing from:\n{text}");
    }
}

#[test]
fn subscriber_guard_counts_while_alive() {
    let m = Metrics::new();
    let a = m.subscriber();
    let b = m.subscriber();
    assert_eq!(m.subscribers.get(), 2);
    drop(a);
    drop(b);
    assert_eq!(m.subscribers.get(), 0);
}
