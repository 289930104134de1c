//! RustyRaft: a chat service replicated by our own Raft.
//!
//! Module map. Each module depends only on the modules listed above it (`tests/architecture.rs`
//! checks this list against every `crate::` path in the code, and keeps files under 800 lines):
//!
//! - [`raft`]: the consensus core. Pure, synchronous and deterministic: no tokio, no clock, no
//!   I/O, no global RNG. Drive it with `step`/`tick`/`propose` and the `ready`/`advance` cycle.
//! - [`storage`]: durable storage for the core: a segmented, checksummed write-ahead log with
//!   group commit, atomic hard state and snapshot files ([`storage::DiskStorage`]).
//! - [`pb`]: generated wire types for `proto/raft.proto`, the wire-level metadata keys and the
//!   machine-readable refusal reasons ([`pb::Reason`]). Used only at the gRPC edges.
//! - [`tls`]: the cluster CA and node certificates (`raft_client certs`), PEM files loaded into
//!   tonic's TLS configs, and the [`tls::Credentials`] (CA, bearer token) clients dial with.
//! - [`metrics`]: Prometheus metrics of one node (a typed registry, no global state), the HTTP
//!   listener for `/metrics`, `/healthz` and `/readyz`, and the tower layer counting gRPC calls.
//! - [`chat`]: the replicated chat state machine (rooms, per-room seq, dedupe), its history in
//!   append-only segment files (`chat::disk`), manifest snapshots and the transfer bundle.
//! - [`client`]: the client commands of `raft_client` (send, tail, chat, history, status,
//!   health, membership calls) with failover between nodes.
//! - [`transport`]: the `Raft` gRPC service and one bounded, reconnecting client per peer.
//! - [`node`]: the driver task that owns the core, persists, sends, applies and answers; the
//!   narrow [`node::NodeHandle`] to it; and `--join` (which calls the cluster as a client).
//! - [`api`]: the `ChatService` and `Cluster` gRPC services, over a `NodeHandle`.
//! - [`web`]: the HTTP side of a node: a JSON API and Server-Sent Events over the same
//!   services as gRPC, the embedded chat page and the live cluster view, and the metrics
//!   routes, on `--http-addr`.
//! - [`server`]: the composition root: wires storage, driver, transport and services into one
//!   gRPC server, and owns shutdown ([`server::run`]).
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
pub mod metrics;
pub mod node;
pub mod pb;
pub mod raft;
pub mod server;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod web;
