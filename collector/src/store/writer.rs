//! The dedicated store writer: one thread owns the store, and everything that
//! touches it goes through a channel.
//!
//! Ingest requests that queue up while a transaction commits are taken
//! together as the next batch, so under load one fsync covers hundreds of
//! envelopes, and under light load an envelope is committed alone without
//! waiting for company. Each requester gets its own result only after the
//! batch's transaction has committed: that is when the ack may be sent.

use tokio::sync::{mpsc, oneshot};

use super::{IngestItem, IngestResult, Store, StoreError, now_ms};

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
    pub fn spawn(store: Box<dyn Store>) -> (StoreWriter, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8192);
        let join =
            std::thread::Builder::new().name("store-writer".into()).spawn(move || run(store, rx)).unwrap_or_else(|e| {
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

type Pending = Vec<(IngestItem, oneshot::Sender<Result<IngestResult, String>>)>;

fn flush(store: &mut dyn Store, pending: &mut Pending) {
    if pending.is_empty() {
        return;
    }
    let (items, replies): (Vec<IngestItem>, Vec<_>) = std::mem::take(pending).into_iter().unzip();
    match store.ingest(&items, now_ms()) {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) => {
            tracing::error!("ingest transaction failed, {} envelopes not acked: {e}", items.len());
            for reply in replies {
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }
}

fn run(mut store: Box<dyn Store>, mut rx: mpsc::Receiver<Request>) {
    let mut pending: Pending = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(req) = next.take() {
            match req {
                Request::Ingest { item, reply } => pending.push((*item, reply)),
                Request::Call(call) => {
                    // Keep order: earlier ingests commit before a later call runs.
                    flush(store.as_mut(), &mut pending);
                    call(store.as_mut());
                }
            }
            if pending.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        flush(store.as_mut(), &mut pending);
    }
}
