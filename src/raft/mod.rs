//! The consensus core: a deterministic, sans-IO Raft in the style of etcd-io/raft and
//! tikv/raft-rs.
//!
//! It performs no I/O, reads no clock and uses no global randomness: time is [`Raft::tick`],
//! randomness comes from [`Config::seed`], and everything the node must do leaves through a
//! [`Ready`]. The same inputs always give the same outputs, which is what lets the seeded
//! simulation in `tests/` replay any failure exactly.
//!
//! Features: pre-vote, check-quorum with leader lease, fast conflict back-off, the current-term
//! commit rule with a no-op per term, batched ReadIndex, log compaction with InstallSnapshot,
//! membership in log entries and snapshots, and leadership transfer with TimeoutNow.
//!
//! [`Raft`]'s behaviour is split by concern into `impl` blocks, one per file:
//! - `core.rs`: [`Config`], the struct and its accessors, `tick`, `step` (term handling, then
//!   dispatch by role), `propose` and `read_index`;
//! - `election.rs`: who may stand, pre-vote and vote rounds, granting votes, role changes, and
//!   the leader's check-quorum count;
//! - `membership.rs`: membership changes, the history of configurations in force, and
//!   leadership transfer;
//! - `follower.rs`: the follower side (appends, heartbeats and snapshots from the leader);
//! - `replication.rs`: the leader side (appends, snapshots, their answers, the commit rule);
//! - `read_index.rs`: batched ReadIndex;
//! - `ready.rs`: [`Ready`] and the Ready/advance cycle.
//!
//! What they work on: the log, stable and unstable parts ([`RaftLog`], `log.rs`); the
//! leader's view of each follower ([`Progress`], `progress.rs`); the storage contract
//! ([`Storage`], [`LogStore`], `log_store.rs`) and its in-memory implementation
//! ([`MemStorage`], `mem_storage.rs`; the durable one is [`crate::storage`]); plain data types
//! (`types.rs`) and errors (`errors.rs`).
//!
//! The driving loop:
//! ```text
//! loop {
//!     tick() on a timer; step(msg) for each peer message; propose(data) for each command;
//!     if has_ready() {
//!         let rd = ready()?;
//!         send(rd.messages); persist(rd.snapshot, rd.entries, rd.hard_state); fsync;
//!         send(rd.persisted_messages); apply(rd.committed_entries);
//!         advance(rd)?;
//!     }
//! }
//! ```

mod core;
mod election;
mod errors;
mod follower;
mod log;
mod log_store;
mod mem_storage;
mod membership;
mod progress;
mod read_index;
mod ready;
mod replication;
mod types;

pub use self::core::{Config, Raft};
pub use self::errors::{Error, ProposeError, Result, StorageError};
pub use self::log::RaftLog;
pub use self::log_store::{after_snapshot, LogStore, RaftState, SnapshotStager, Storage, SyncJob};
pub use self::mem_storage::MemStorage;
pub use self::progress::{Progress, ProgressState};
pub use self::ready::Ready;
pub use self::types::{
    default_peer_addr, ConfState, Entry, EntryKind, HardState, Message, MessageBody, NodeId,
    ReadState, Role, Snapshot, SnapshotMeta, SoftState, PEER_PORT_OFFSET,
};
