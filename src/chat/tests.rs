//! Tests of the chat state machine: commands, dedupe, history, snapshots and restore.

use super::command_format::{DedupePb, RoomPb, SnapshotPb, SNAPSHOT_VERSION_V1};
use super::*;

fn send(room: &str, text: &str, id: &str) -> Bytes {
    Command::Send {
        room: room.into(),
        author: "ada".into(),
        text: text.into(),
        id: id.into(),
        sent_at_unix_ms: 7,
    }
    .encode()
}

fn sent(a: Applied) -> (Arc<ChatMessage>, bool) {
    match a {
        Applied::Sent { message, duplicate } => (message, duplicate),
        other => panic!("expected Sent, got {other:?}"),
    }
}

#[test]
fn seq_is_gap_free_per_room() {
    let mut s = ChatState::new(10, 100);
    let (a1, _) = sent(s.apply(1, 1, &send("a", "x", "1")));
    let (b1, _) = sent(s.apply(2, 1, &send("b", "x", "2")));
    let (a2, _) = sent(s.apply(3, 1, &send("a", "y", "3")));
    assert_eq!((a1.seq, b1.seq, a2.seq), (1, 1, 2));
    assert_eq!(a2.index, 3);
    assert_eq!(s.applied(), 3);
}

#[test]
fn retry_with_same_id_returns_original() {
    let mut s = ChatState::new(10, 100);
    let (m1, d1) = sent(s.apply(1, 1, &send("a", "x", "req")));
    let (m2, d2) = sent(s.apply(2, 2, &send("a", "x", "req")));
    assert!(!d1);
    assert!(d2);
    assert_eq!(m1, m2);
    assert_eq!(s.room_len("a"), Some(1));
}

#[test]
fn dedupe_table_is_bounded_fifo() {
    let mut s = ChatState::new(2, 100);
    s.apply(1, 1, &send("a", "x", "r1"));
    s.apply(2, 1, &send("a", "x", "r2"));
    s.apply(3, 1, &send("a", "x", "r3"));
    // r1 was evicted: a retry is treated as new.
    let (m, dup) = sent(s.apply(4, 1, &send("a", "x", "r1")));
    assert!(!dup);
    assert_eq!(m.seq, 4);
    let (_, dup) = sent(s.apply(5, 1, &send("a", "x", "r3")));
    assert!(dup);
}

#[test]
fn invalid_and_garbage_entries_are_rejected_without_side_effects() {
    let mut s = ChatState::new(10, 4);
    assert!(matches!(
        s.apply(1, 1, &send("a", "too long", "1")),
        Applied::Rejected(ChatError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.apply(2, 1, &send("", "x", "2")),
        Applied::Rejected(ChatError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.apply(3, 1, &[0xff, 0xff, 0xff]),
        Applied::Rejected(ChatError::Corrupt(_))
    ));
    assert!(!s.has_room("a"));
    assert_eq!(s.applied(), 3);
}

#[test]
fn history_pages_both_ways_and_unknown_room_is_not_found() {
    let mut s = ChatState::new(10, 100);
    for i in 1..=5u64 {
        s.apply(i, 1, &send("a", "x", &i.to_string()));
    }
    let seqs = |v: Vec<Arc<ChatMessage>>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(s.history("a", 0, 2, false).unwrap()), vec![1, 2]);
    assert_eq!(seqs(s.history("a", 4, 10, false).unwrap()), vec![4, 5]);
    assert_eq!(
        seqs(s.history("a", 9, 10, false).unwrap()),
        Vec::<u64>::new()
    );
    assert_eq!(seqs(s.history("a", 0, 2, true).unwrap()), vec![5, 4]);
    assert_eq!(seqs(s.history("a", 2, 5, true).unwrap()), vec![2, 1]);
    assert_eq!(
        s.history("nope", 0, 1, false),
        Err(ChatError::RoomNotFound("nope".into()))
    );
}

#[test]
fn create_room_is_idempotent_and_listed() {
    let mut s = ChatState::new(10, 100);
    let c = Command::CreateRoom { room: "b".into() }.encode();
    assert_eq!(
        s.apply(1, 1, &c),
        Applied::RoomCreated {
            created: true,
            message_count: 0
        }
    );
    assert_eq!(
        s.apply(2, 1, &c),
        Applied::RoomCreated {
            created: false,
            message_count: 0
        }
    );
    s.apply(3, 1, &send("a", "x", "1"));
    let names: Vec<_> = s.list_rooms(None, 10).into_iter().map(|r| r.name).collect();
    assert_eq!(names, vec!["a", "b"]);
    let after: Vec<_> = s
        .list_rooms(Some("a"), 10)
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(after, vec!["b"]);
}

#[test]
fn snapshot_round_trips_including_dedupe() {
    let mut s = ChatState::new(10, 100);
    s.apply(1, 1, &send("a", "x", "r1"));
    s.apply(2, 1, &send("b", "y", "r2"));
    let img = s.snapshot().unwrap();
    let mut t = ChatState::new(10, 100);
    t.restore(&img).unwrap();
    assert_eq!(t.applied(), 2);
    assert_eq!(t.snapshot().unwrap(), img);
    let (m, dup) = sent(t.apply(3, 2, &send("a", "x", "r1")));
    assert!(dup);
    assert_eq!(m.seq, 1);
}

#[test]
fn restored_dedupe_table_keeps_its_eviction_order() {
    let mut s = ChatState::new(2, 100);
    s.apply(1, 1, &send("a", "x", "r1"));
    s.apply(2, 1, &send("b", "x", "r2"));
    s.apply(3, 1, &send("a", "x", "r3"));
    let mut t = ChatState::new(2, 100);
    t.restore(&s.snapshot().unwrap()).unwrap();
    // The table holds r2 and r3; r1 was evicted before the snapshot.
    assert!(!sent(t.apply(4, 1, &send("a", "x", "r1"))).1);
    // That send evicted r2, the oldest, exactly as it would have without the restore.
    assert!(!sent(t.apply(5, 1, &send("b", "x", "r2"))).1);
    assert!(!sent(s.apply(4, 1, &send("a", "x", "r1"))).1);
    assert!(!sent(s.apply(5, 1, &send("b", "x", "r2"))).1);
    assert_eq!(t.snapshot().unwrap(), s.snapshot().unwrap());
}

#[test]
fn a_view_is_the_state_as_of_when_it_was_taken() {
    let mut s = ChatState::new(10, 100);
    s.apply(1, 1, &send("a", "x", "r1"));
    let view = s.snapshot_view();
    let before = s.snapshot().unwrap();
    s.apply(2, 1, &send("a", "y", "r2"));
    s.apply(3, 1, &send("c", "z", "r3"));
    assert_eq!(view.applied(), 1);
    assert_eq!(view.encode().unwrap(), before);
    let mut t = ChatState::new(10, 100);
    t.restore(&view.encode().unwrap()).unwrap();
    assert_eq!(t.room_len("a"), Some(1));
    assert!(!t.has_room("c"));
}

#[test]
fn version_1_snapshots_still_restore() {
    let v1 = command_format::encode(&SnapshotPb {
        version: SNAPSHOT_VERSION_V1,
        applied: 2,
        rooms: vec![RoomPb {
            name: "a".into(),
            messages: vec![command_format::StoredMessagePb {
                seq: 1,
                index: 2,
                term: 1,
                author: "ada".into(),
                text: "hi".into(),
                id: "r1".into(),
                sent_at_unix_ms: 7,
            }],
        }],
        dedupe: vec![DedupePb {
            id: "r1".into(),
            room: "a".into(),
            seq: 1,
        }],
        ..Default::default()
    });
    let mut s = ChatState::new(10, 100);
    s.restore(&v1).unwrap();
    assert_eq!(s.applied(), 2);
    let m = &s.history("a", 0, 10, false).unwrap()[0];
    assert_eq!((m.text.as_str(), m.index, m.sent_at_unix_ms), ("hi", 2, 7));
    assert!(sent(s.apply(3, 1, &send("a", "hi", "r1"))).1);
}

#[test]
fn a_snapshot_with_an_invalid_message_is_refused() {
    let mut s = ChatState::new(10, 100);
    s.apply(1, 1, &send("a", "x".repeat(50).as_str(), "r1"));
    let img = s.snapshot().unwrap();
    // Same image, read by a node with a smaller text limit.
    let mut t = ChatState::new(10, 10);
    assert!(matches!(t.restore(&img), Err(ChatError::Corrupt(_))));
}

#[test]
fn restore_refuses_garbage_and_keeps_state() {
    let mut s = ChatState::new(10, 100);
    s.apply(1, 1, &send("a", "x", "r1"));
    assert!(s.restore(&Bytes::from_static(&[0xff, 0x01, 0x02])).is_err());
    let bad_version = command_format::encode(&SnapshotPb {
        version: 99,
        ..Default::default()
    });
    assert!(s.restore(&bad_version).is_err());
    assert_eq!(s.room_len("a"), Some(1));
}

proptest::proptest! {
    #[test]
    fn restore_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let mut s = ChatState::new(10, 100);
        let _ = s.restore(&Bytes::from(data.clone()));
        let _ = s.apply(1, 1, &data);
    }
}
