//! The log's fsync, off the driver task.
//!
//! The driver writes each Ready's entries to the kernel at once, but the fdatasync that makes
//! them durable runs on a thread of its own, so the driver keeps stepping the core meanwhile:
//! it takes new proposals, receives acknowledgements and sends appends while the disk works
//! (etcd's `AsyncStorageWrites`, raft-rs's `on_persist_ready`). What waits for durability
//! waits in order:
//!
//! - each Ready's `persisted_messages` (votes, append acknowledgements) become a [`Batch`] with
//!   the last entry it wrote;
//! - a batch is released only once a sync that began after its writes has succeeded; then the
//!   driver tells the core (`Raft::on_persisted`, which is also when a leader's own entries
//!   count toward commit) and sends the messages;
//! - batches are released in the order they were made, so an acknowledgement can never
//!   overtake the durability of an earlier one, even one that wrote no entries.
//!
//! One sync runs at a time. Batches written while it runs wait for the next, which then covers
//! all of them: group commit across Readies. A failed sync poisons the storage and stops the
//! node: after a failed fsync the kernel may have dropped the pages, so nothing may continue
//! on the assumption they are durable ("fsyncgate").
//!
//! A Ready that changes the term or the vote, or installs a snapshot, is the exception: the
//! driver waits for the running sync ([`Persister::wait_idle`]), persists that Ready inline,
//! and only then sends any of its messages. A node must never speak in a term that a crash
//! could make it forget: a restarted sole voter would win the same term again and could give
//! two different entries the same index and term (the simulation found exactly that).

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::raft::{HardState, LogStore, Message, NodeId, Ready, StorageError, SyncJob};

use super::{Driver, NodeError};

/// What waits for one Ready's writes to be durable.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// (index, term) of the last entry the Ready wrote, if any.
    pub last: Option<(u64, u64)>,
    /// Messages that may leave only once those writes are durable.
    pub messages: Vec<Message>,
}

/// The sync thread and the batches waiting for it.
pub(super) struct Persister {
    /// To the sync thread; capacity 1, and at most one job is ever outstanding.
    jobs: std_mpsc::SyncSender<SyncJob>,
    /// From the sync thread: how the running job ended. A std channel, so that
    /// [`Persister::wait_idle`] can block on it from any runtime.
    results: std_mpsc::Receiver<Result<(), StorageError>>,
    /// Rung by the sync thread after each result, to wake the driver.
    finished_job: Arc<Notify>,
    /// Batches the running job covers (`None`: no job running).
    running: Option<Vec<Batch>>,
    /// Batches written since the running job began, in order.
    queued: Vec<Batch>,
    /// Term and vote of the last hard state handed to the storage.
    term_vote: Option<(u64, Option<NodeId>)>,
}

impl Persister {
    /// Starts the sync thread of node `id`. It ends when the `Persister` is dropped.
    pub fn start(id: u64) -> std::io::Result<Self> {
        let (jobs, jobs_rx) = std_mpsc::sync_channel::<SyncJob>(1);
        let (results_tx, results) = std_mpsc::sync_channel(1);
        let finished_job = Arc::new(Notify::new());
        let wake = finished_job.clone();
        std::thread::Builder::new()
            .name(format!("rr-sync-{id}"))
            .spawn(move || {
                while let Ok(job) = jobs_rx.recv() {
                    if results_tx.send(job()).is_err() {
                        break;
                    }
                    wake.notify_one();
                }
            })?;
        Ok(Persister {
            jobs,
            results,
            finished_job,
            running: None,
            queued: Vec::new(),
            term_vote: None,
        })
    }

    /// Whether `hs` moves the term or the vote (then its Ready is persisted inline).
    fn changes_term_or_vote(&mut self, hs: Option<HardState>) -> bool {
        let Some(hs) = hs else {
            return false;
        };
        let tv = (hs.term, hs.vote);
        let changed = self.term_vote != Some(tv);
        self.term_vote = Some(tv);
        changed
    }

    /// Queues `batch`, whose writes the storage already has, and starts a sync if none runs.
    /// Returns the batches that are durable already (nothing was left to sync).
    pub fn submit<S: LogStore>(
        &mut self,
        store: &mut S,
        batch: Batch,
    ) -> Result<Vec<Batch>, StorageError> {
        if batch.last.is_none() && batch.messages.is_empty() {
            return Ok(Vec::new());
        }
        self.queued.push(batch);
        if self.running.is_some() {
            return Ok(Vec::new());
        }
        self.start_next(store)
    }

    /// Resolves when the sync thread may have finished a job (then call [`Persister::poll`]).
    /// The future owns its handle, so the driver can hold it across an `await` (the
    /// `Persister` itself is not `Sync`).
    pub fn woken(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let finished_job = self.finished_job.clone();
        async move { finished_job.notified().await }
    }

    /// The durable batches, if the running sync has ended (see [`Persister::finished`]).
    pub fn poll<S: LogStore>(&mut self, store: &mut S) -> Result<Vec<Batch>, StorageError> {
        match self.results.try_recv() {
            Ok(result) => self.finished(store, result),
            Err(std_mpsc::TryRecvError::Empty) => Ok(Vec::new()),
            Err(std_mpsc::TryRecvError::Disconnected) => {
                Err(StorageError::Other("the sync thread is gone".into()))
            }
        }
    }

    /// Blocks until no sync runs and nothing waits for one, and returns every batch released
    /// meanwhile, in order. For the rare Readies that must be persisted inline.
    pub fn wait_idle<S: LogStore>(&mut self, store: &mut S) -> Result<Vec<Batch>, StorageError> {
        let mut durable = Vec::new();
        while self.running.is_some() {
            let result = self
                .results
                .recv()
                .map_err(|_| StorageError::Other("the sync thread is gone".into()))?;
            durable.extend(self.finished(store, result)?);
        }
        Ok(durable)
    }

    /// The running sync ended with `result`. Returns the batches now durable (the ones it
    /// covered, and any that need no further sync) and starts the next sync if batches wait.
    pub fn finished<S: LogStore>(
        &mut self,
        store: &mut S,
        result: Result<(), StorageError>,
    ) -> Result<Vec<Batch>, StorageError> {
        if let Err(e) = result {
            store.sync_failed(&e.to_string());
            return Err(e);
        }
        let mut durable = self.running.take().unwrap_or_default();
        durable.extend(self.start_next(store)?);
        Ok(durable)
    }

    fn start_next<S: LogStore>(&mut self, store: &mut S) -> Result<Vec<Batch>, StorageError> {
        if self.queued.is_empty() {
            return Ok(Vec::new());
        }
        match store.begin_sync()? {
            None => Ok(std::mem::take(&mut self.queued)),
            Some(job) => {
                self.jobs.try_send(job).map_err(|_| {
                    StorageError::Other("the sync thread is gone or already busy".into())
                })?;
                self.running = Some(std::mem::take(&mut self.queued));
                Ok(Vec::new())
            }
        }
    }
}

impl<S: LogStore + Send + 'static> Driver<S> {
    /// Steps 1-3 of a Ready: send what may leave now, write, and queue what must wait for
    /// the sync. Returns the batches already durable, to release after `advance`. Clears
    /// `rd.entries` when their sync is left to the sync thread (the core then hears of it
    /// through `on_persisted`).
    pub(super) fn persist_ready(&mut self, rd: &mut Ready) -> Result<Vec<Batch>, NodeError> {
        let inline = rd.snapshot.is_some() || self.persist.changes_term_or_vote(rd.hard_state);
        let store = self.raft.storage_mut();
        let mut durable = Vec::new();
        if inline {
            // Everything written before must be durable first, and its messages go first.
            durable = self.persist.wait_idle(store)?;
        } else {
            // Replication traffic leaves before our own fsync (thesis section 10.2.1).
            self.transport.send(std::mem::take(&mut rd.messages));
        }
        // A snapshot is durable when `apply_snapshot` returns.
        if let Some(s) = &rd.snapshot {
            store.apply_snapshot(s.clone())?;
        }
        if !rd.entries.is_empty() {
            store.append(&rd.entries)?;
        }
        if let Some(hs) = rd.hard_state {
            store.set_hard_state(hs)?;
        }
        if inline {
            store.sync()?;
            durable.push(Batch {
                last: None,
                messages: std::mem::take(&mut rd.messages),
            });
            durable.push(Batch {
                last: None,
                messages: std::mem::take(&mut rd.persisted_messages),
            });
            return Ok(durable);
        }
        let batch = Batch {
            last: rd.entries.last().map(|e| (e.index, e.term)),
            messages: std::mem::take(&mut rd.persisted_messages),
        };
        rd.entries.clear();
        Ok(self.persist.submit(store, batch)?)
    }

    /// The sync thread may have finished a job: release what it made durable.
    pub(super) fn on_synced(&mut self) -> Result<(), NodeError> {
        let durable = self.persist.poll(self.raft.storage_mut())?;
        self.release(durable)
    }

    /// Tells the core which entries are durable and sends what waited for them, in order.
    pub(super) fn release(&mut self, durable: Vec<Batch>) -> Result<(), NodeError> {
        for b in durable {
            if let Some((index, term)) = b.last {
                self.raft.on_persisted(index, term)?;
            }
            self.transport.send(b.messages);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ConfState, Entry, EntryKind, MemStorage};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A storage whose syncs are jobs, counted, and fail when told to.
    struct Jobs {
        inner: MemStorage,
        started: Arc<AtomicUsize>,
        fail: bool,
        poisoned: Option<String>,
    }

    impl crate::raft::Storage for Jobs {
        fn initial_state(&self) -> Result<crate::raft::RaftState, StorageError> {
            self.inner.initial_state()
        }
        fn entries(&self, lo: u64, hi: u64, max: Option<u64>) -> Result<Vec<Entry>, StorageError> {
            self.inner.entries(lo, hi, max)
        }
        fn term(&self, i: u64) -> Result<u64, StorageError> {
            self.inner.term(i)
        }
        fn first_index(&self) -> Result<u64, StorageError> {
            self.inner.first_index()
        }
        fn last_index(&self) -> Result<u64, StorageError> {
            self.inner.last_index()
        }
        fn snapshot(&self) -> Result<crate::raft::Snapshot, StorageError> {
            crate::raft::Storage::snapshot(&self.inner)
        }
    }

    impl LogStore for Jobs {
        fn append(&mut self, e: &[Entry]) -> Result<(), StorageError> {
            LogStore::append(&mut self.inner, e)
        }
        fn set_hard_state(&mut self, hs: crate::raft::HardState) -> Result<(), StorageError> {
            LogStore::set_hard_state(&mut self.inner, hs)
        }
        fn apply_snapshot(&mut self, s: crate::raft::Snapshot) -> Result<(), StorageError> {
            LogStore::apply_snapshot(&mut self.inner, s)
        }
        fn compact(&mut self, i: u64, c: ConfState, d: bytes::Bytes) -> Result<(), StorageError> {
            LogStore::compact(&mut self.inner, i, c, d)
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            Ok(())
        }
        fn begin_sync(&mut self) -> Result<Option<SyncJob>, StorageError> {
            self.started.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail;
            Ok(Some(Box::new(move || {
                if fail {
                    Err(StorageError::Other("EIO".into()))
                } else {
                    Ok(())
                }
            })))
        }
        fn sync_failed(&mut self, error: &str) {
            self.poisoned = Some(error.to_string());
        }
    }

    fn store(fail: bool) -> (Jobs, Arc<AtomicUsize>) {
        let started = Arc::new(AtomicUsize::new(0));
        let mut inner = MemStorage::new_with_conf(ConfState::with_voters([1]));
        let e = Entry {
            index: 1,
            term: 1,
            kind: EntryKind::Normal,
            data: bytes::Bytes::new(),
        };
        LogStore::append(&mut inner, &[e]).expect("append");
        let s = Jobs {
            inner,
            started: started.clone(),
            fail,
            poisoned: None,
        };
        (s, started)
    }

    fn batch(last: u64) -> Batch {
        Batch {
            last: Some((last, 1)),
            messages: Vec::new(),
        }
    }

    async fn next_release(p: &mut Persister, s: &mut Jobs) -> Vec<Batch> {
        loop {
            p.woken().await;
            let b = p.poll(s).expect("sync ok");
            if !b.is_empty() {
                return b;
            }
        }
    }

    /// `wait_idle` drains the running sync and the ones queued behind it, in order.
    #[tokio::test]
    async fn wait_idle_releases_everything_in_order() {
        let (mut s, started) = store(false);
        let mut p = Persister::start(1).expect("thread");
        for i in 1..=3 {
            assert!(p.submit(&mut s, batch(i)).expect("submit").is_empty());
        }
        let lasts: Vec<_> = p
            .wait_idle(&mut s)
            .expect("ok")
            .iter()
            .map(|b| b.last)
            .collect();
        assert_eq!(lasts, [Some((1, 1)), Some((2, 1)), Some((3, 1))]);
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert!(p.wait_idle(&mut s).expect("ok").is_empty());
    }

    /// Batches written while a sync runs wait for the next one, which covers all of them,
    /// and come back in the order they were made.
    #[tokio::test]
    async fn batches_wait_for_a_sync_that_began_after_them_and_stay_in_order() {
        let (mut s, started) = store(false);
        let mut p = Persister::start(1).expect("thread");
        assert!(p.submit(&mut s, batch(1)).expect("submit").is_empty());
        assert!(p.submit(&mut s, batch(2)).expect("submit").is_empty());
        assert!(p.submit(&mut s, batch(3)).expect("submit").is_empty());
        assert_eq!(started.load(Ordering::SeqCst), 1, "one sync at a time");
        let durable = next_release(&mut p, &mut s).await;
        let lasts: Vec<_> = durable.iter().map(|b| b.last).collect();
        assert_eq!(lasts, [Some((1, 1))], "only what the first sync covered");
        assert_eq!(
            started.load(Ordering::SeqCst),
            2,
            "the next sync covers 2 and 3"
        );
        let durable = next_release(&mut p, &mut s).await;
        let lasts: Vec<_> = durable.iter().map(|b| b.last).collect();
        assert_eq!(lasts, [Some((2, 1)), Some((3, 1))]);
        assert_eq!(started.load(Ordering::SeqCst), 2, "nothing left to sync");
    }

    /// A failed sync releases nothing and poisons the storage (fsyncgate).
    #[tokio::test]
    async fn a_failed_sync_releases_nothing_and_poisons_the_storage() {
        let (mut s, _) = store(true);
        let mut p = Persister::start(1).expect("thread");
        assert!(p.submit(&mut s, batch(1)).expect("submit").is_empty());
        p.woken().await;
        let r = loop {
            match p.poll(&mut s) {
                Ok(b) if b.is_empty() => p.woken().await,
                other => break other,
            }
        };
        assert!(r.is_err());
        assert_eq!(s.poisoned.as_deref(), Some("storage failure: EIO"));
    }
}
