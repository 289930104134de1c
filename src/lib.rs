//! RustyRaft: a chat service replicated by our own Raft.
//!
//! Module map (each layer depends only on the ones above it):
//!
//! - [`raft`]: the consensus core. Pure, synchronous and deterministic: no tokio, no clock, no
//!   I/O, no global RNG. Drive it with `step`/`tick`/`propose` and the `ready`/`advance` cycle.
//! - [`check`]: the history checker for chaos runs: is a recorded client history a
//!   linearizable, lossless, duplicate-free append-only log per room?
//! - [`pb`]: generated wire types for `proto/raft.proto`, used only at the gRPC edges.
#![deny(missing_docs)]

pub mod check;
pub mod pb;
pub mod raft;
