//! RustyRaft: a chat service replicated by our own Raft.
//!
//! Module map (each layer depends only on the ones above it):
//!
//! - [`raft`]: the consensus core. Pure, synchronous and deterministic: no tokio, no clock, no
//!   I/O, no global RNG. Drive it with `step`/`tick`/`propose` and the `ready`/`advance` cycle.
//! - [`storage`]: durable storage for the core: a segmented, checksummed write-ahead log with
//!   group commit, atomic hard state and streamable snapshots ([`storage::DiskStorage`]).
//! - [`pb`]: generated wire types for `proto/raft.proto`, used only at the gRPC edges.
//! - [`chat`]: the replicated chat state machine (rooms, per-room seq, dedupe, snapshots).
//! - [`transport`]: the `Raft` gRPC service and one bounded, reconnecting client per peer.
//! - [`node`]: the driver task that owns the core, persists, sends, applies and answers.
//! - [`api`]: `ChatService` and `Cluster` gRPC services, health, reflection, and [`api::run`].
//! - [`client`]: the client commands of `raft_client` (send, tail, chat, history, status,
//!   health) with failover between nodes.
//! - [`check`]: the history checker for chaos runs: is a recorded client history a
//!   linearizable, lossless, duplicate-free append-only log per room?
//! - [`launcher`]: `run_n_clients`: local node processes behind fault-injecting link proxies,
//!   stdin commands, and the chaos driver.
//! - [`bench`]: the load generators of `raft_client bench` and the etcd comparison.
#![deny(missing_docs)]

pub mod api;
pub mod bench;
pub mod chat;
pub mod check;
pub mod client;
pub mod launcher;
pub mod node;
pub mod pb;
pub mod raft;
pub mod server;
pub mod storage;
pub mod transport;
