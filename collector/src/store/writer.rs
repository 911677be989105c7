//! The dedicated store writer: one thread owns the store, and everything that
//! touches it goes through a channel.
//!
//! Ingest requests that queue up while a transaction commits are taken
//! together as the next batch, so under load one fsync covers hundreds of
//! envelopes, and under light load an envelope is committed alone without
//! waiting for company. Each requester gets its own result only after the
//! batch's transaction is on disk: that is when the ack may be sent.
//!
//! With a [`DeferredSync`] (the collector's `serve` on SQLite: the WAL
//! sync), ingest transactions commit without their fsync and the results go to a second thread, the acker,
//! which syncs the WAL and only then answers. The writer meanwhile writes the
//! next batch, so disk and CPU overlap instead of taking turns; one sync
//! covers every batch that was queued for it. Acks leave in commit order.
//! Any other operation first waits for the WAL sync, so it never reads, and
//! never answers from, state that is not on disk yet. A failed sync ends the
//! process: after a failed `fsync` the kernel may already have dropped the
//! unwritten pages, so no later sync can prove anything. systemd restarts
//! the collector, SQLite recovers from the WAL, and the agents resend what
//! was not acked.

use tokio::sync::{mpsc, oneshot};

use super::{DeferredSync, IngestItem, IngestResult, Store, StoreError, now_ms};

/// Most envelopes committed in one transaction.
const MAX_BATCH: usize = 512;

type Call = Box<dyn FnOnce(&mut dyn Store) + Send>;

enum Request {
    Ingest { item: Box<IngestItem>, reply: oneshot::Sender<Result<IngestResult, String>> },
    Call(Call),
}

/// A cloneable handle to the writer thread.
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter").finish_non_exhaustive()
    }
}

impl StoreWriter {
    /// Start the writer thread. It stops when every handle is dropped.
    /// `wal_sync`: the store defers its ingest fsync to this (see the module
    /// documentation); None when every ingest is durable on return.
    pub fn spawn(
        store: Box<dyn Store>,
        wal_sync: Option<Box<dyn DeferredSync>>,
    ) -> (StoreWriter, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8192);
        let join = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(store, rx, wal_sync))
            .unwrap_or_else(|e| {
                // Without a writer thread the collector cannot store anything;
                // failing to spawn one at start-up is fatal by design.
                tracing::error!("cannot start the store writer thread: {e}");
                std::process::exit(1)
            });
        (StoreWriter { tx }, join)
    }

    /// Store one verified envelope; resolves after its transaction committed.
    pub async fn ingest(&self, item: IngestItem) -> Result<IngestResult, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Ingest { item: Box::new(item), reply }).await.map_err(|_| StoreError::WriterGone)?;
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(msg)) => Err(StoreError::Batch(msg)),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    /// Run any other store operation on the writer thread.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Store) -> R + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let call: Call = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.tx.send(Request::Call(call)).await.map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)
    }
}

type Reply = oneshot::Sender<Result<IngestResult, String>>;
type Pending = Vec<(IngestItem, Reply)>;
/// Results of a committed batch, waiting for the WAL sync.
type Committed = Vec<(Reply, IngestResult)>;

/// The thread that acks committed batches once they are on disk.
struct Acker {
    sync: std::sync::Arc<dyn DeferredSync>,
    tx: Option<std::sync::mpsc::Sender<Committed>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Acker {
    fn start(sync: Box<dyn DeferredSync>) -> Acker {
        let sync: std::sync::Arc<dyn DeferredSync> = std::sync::Arc::from(sync);
        let (tx, rx) = std::sync::mpsc::channel::<Committed>();
        let syncing = std::sync::Arc::clone(&sync);
        let join = std::thread::Builder::new()
            .name("store-acker".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Everything committed by now is covered by one sync.
                    let batches: Vec<Committed> = std::iter::once(first).chain(rx.try_iter()).collect();
                    durable_or_exit(&*syncing);
                    batches.into_iter().for_each(send_acks);
                }
            })
            .unwrap_or_else(|e| {
                tracing::error!("cannot start the store acker thread: {e}");
                std::process::exit(1)
            });
        Acker { sync, tx: Some(tx), join: Some(join) }
    }

    fn ack_when_durable(&self, committed: Committed) {
        if let Some(tx) = &self.tx {
            // The acker ends only once this sender is dropped.
            let _ = tx.send(committed);
        }
    }

    /// Wait until everything committed so far is on disk.
    fn barrier(&self) {
        durable_or_exit(&*self.sync);
    }
}

impl Drop for Acker {
    /// The last acks go out before the writer thread ends.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn send_acks(committed: Committed) {
    for (reply, result) in committed {
        let _ = reply.send(Ok(result));
    }
}

fn durable_or_exit(sync: &dyn DeferredSync) {
    if let Err(e) = sync.sync() {
        tracing::error!("{e}; stopping: nothing more can be acked safely, unacked envelopes will be resent");
        std::process::exit(1);
    }
}

/// Commit the pending ingests; true when a transaction was attempted.
fn flush(store: &mut dyn Store, pending: &mut Pending, acker: Option<&Acker>) -> bool {
    if pending.is_empty() {
        return false;
    }
    let (items, replies): (Vec<IngestItem>, Vec<_>) = std::mem::take(pending).into_iter().unzip();
    match store.ingest(&items, now_ms()) {
        Ok(results) => {
            let committed: Committed = replies.into_iter().zip(results).collect();
            match acker {
                Some(acker) => acker.ack_when_durable(committed),
                None => send_acks(committed),
            }
        }
        Err(e) => {
            tracing::error!("ingest transaction failed, {} envelopes not acked: {e}", items.len());
            for reply in replies {
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }
    true
}

fn run(mut store: Box<dyn Store>, mut rx: mpsc::Receiver<Request>, wal_sync: Option<Box<dyn DeferredSync>>) {
    let acker = wal_sync.map(Acker::start);
    let mut pending: Pending = Vec::new();
    // Ingests were committed since the last barrier (calls that follow
    // calls need no sync of their own).
    let mut unsynced = false;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(req) = next.take() {
            match req {
                Request::Ingest { item, reply } => pending.push((*item, reply)),
                Request::Call(call) => {
                    // Keep order: earlier ingests commit before a later call
                    // runs, and are on disk before it reads or answers.
                    unsynced |= flush(store.as_mut(), &mut pending, acker.as_ref());
                    if let Some(acker) = acker.as_ref().filter(|_| unsynced) {
                        acker.barrier();
                        unsynced = false;
                    }
                    call(store.as_mut());
                }
            }
            if pending.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        unsynced |= flush(store.as_mut(), &mut pending, acker.as_ref());
    }
}
