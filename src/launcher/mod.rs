//! Building blocks of `run_n_clients`, the local cluster launcher: the per-link fault proxy
//! that partitions and delays real nodes without touching their code.

pub mod proxy;
