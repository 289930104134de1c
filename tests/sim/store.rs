//! What the simulation needs from a storage backend: write what a Ready carries, compact, and
//! survive a crash (give back only what was persisted).

use bytes::Bytes;
use rustyraft::raft::{
    ConfState, Entry, HardState, LogStore, MemStorage, Raft, Snapshot, Storage, StorageError,
};
use rustyraft::storage::DiskStorage;

/// A storage backend the simulation can drive and crash.
pub trait SimStore: Storage + Sized {
    fn sim_append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    fn sim_set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError>;
    fn sim_apply_snapshot(&mut self, snap: Snapshot) -> Result<(), StorageError>;
    fn sim_compact(&mut self, index: u64, conf: ConfState, data: Bytes)
        -> Result<(), StorageError>;
    fn sim_sync(&mut self) -> Result<(), StorageError>;
    /// Takes the storage out of a crashed node: only what was made durable survives.
    fn crash(raft: Raft<Self>) -> Self;
    /// A copy of the storage as it is now, which a crash after later unsynced writes gives
    /// back; `None` if the backend cannot model that (then every Ready is synced inline).
    fn durable_copy(&self) -> Option<Self> {
        None
    }
    /// Whether `durable_copy` models unsynced writes (asynchronous persistence is simulated
    /// only then).
    const MODELS_UNSYNCED: bool = false;
}

impl SimStore for MemStorage {
    fn sim_append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.append(entries)
    }
    fn sim_set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        self.set_hard_state(hs);
        Ok(())
    }
    fn sim_apply_snapshot(&mut self, snap: Snapshot) -> Result<(), StorageError> {
        self.apply_snapshot(snap);
        Ok(())
    }
    fn sim_compact(
        &mut self,
        index: u64,
        conf: ConfState,
        data: Bytes,
    ) -> Result<(), StorageError> {
        self.compact(index, conf, data)
    }
    fn sim_sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
    fn crash(raft: Raft<Self>) -> Self {
        // With nothing unsynced, everything written to MemStorage is durable (the harness
        // keeps a `durable_copy` while writes wait for their sync).
        raft.log().storage.clone()
    }
    fn durable_copy(&self) -> Option<Self> {
        Some(self.clone())
    }
    const MODELS_UNSYNCED: bool = true;
}

impl SimStore for DiskStorage {
    fn sim_append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        LogStore::append(self, entries)
    }
    fn sim_set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        LogStore::set_hard_state(self, hs)
    }
    fn sim_apply_snapshot(&mut self, snap: Snapshot) -> Result<(), StorageError> {
        LogStore::apply_snapshot(self, snap)
    }
    fn sim_compact(
        &mut self,
        index: u64,
        conf: ConfState,
        data: Bytes,
    ) -> Result<(), StorageError> {
        LogStore::compact(self, index, conf, data)
    }
    fn sim_sync(&mut self) -> Result<(), StorageError> {
        LogStore::sync(self)
    }
    fn crash(raft: Raft<Self>) -> Self {
        // Drop the storage (the "crash"), then recover from the directory. The harness syncs
        // every Ready before advance, and a crash mid-Ready happens before anything of that
        // Ready is written, so what is in the files is exactly what was made durable.
        let cfg = raft.log().storage.config().clone();
        drop(raft);
        match DiskStorage::open(cfg, ConfState::default()) {
            Ok(s) => s,
            Err(e) => panic!("recovery after a simulated crash failed: {e}"),
        }
    }
}
