//! Storage of nodes, enrollment tokens, raw signed envelopes, the latest
//! finding per node and check, and chain events.
//!
//! The boundary is two traits whose errors name no backend: [`Store`]
//! (enrollment, ingest, administration and the evidence reads) and
//! [`FleetRead`] (fleet reports, the dashboard and its change detection).
//! The chain policy every backend applies is [`judge`], and what a report
//! changes in a node's index is [`index`]: pure functions both.
//! SQLite implements both traits now (embedded, the default); a
//! [`StoreLocation`] says where a store is and opens it. Ingest is a batch
//! operation so that the writer can commit many envelopes in one durable
//! transaction: an ack is sent only after the transaction holding its
//! envelope has committed.

pub mod index;
pub mod judge;
pub mod migrate;
pub mod outbox;
pub mod postgres;
pub mod retention;
pub mod sqlite;
pub mod writer;

use std::path::PathBuf;

use kosmos_proto::v1::AttestationBody;

use crate::fleet::{FleetReport, NodeFinding, Options};

/// A backend's own error (SQLite's, PostgreSQL's), kept as the source of a
/// [`StoreError`] so that the message shows it without the collector's
/// types naming a backend.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The (first, last) seq of a `MIN(seq), MAX(seq)` query, None when it
/// matched nothing (or a seq is negative, which no store keeps).
pub(crate) fn seq_span(first: Option<i64>, last: Option<i64>) -> Option<(u64, u64)> {
    Some((u64::try_from(first?).ok()?, u64::try_from(last?).ok()?))
}

/// Errors from the store. Each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: BackendError,
    },
    #[error("database error while {doing}: {source}")]
    Backend {
        doing: &'static str,
        #[source]
        source: BackendError,
    },
    /// The store holds something its own schema rules out.
    #[error("the store is corrupt: {0}")]
    Corrupt(String),
    #[error("the ingest transaction failed: {0}")]
    Batch(String),
    #[error("the store writer has stopped")]
    WriterGone,
    #[error("cannot make {path} durable: {source}")]
    Sync {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the {thread} thread: {source}")]
    Thread {
        thread: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What happened to an enrollment token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// Valid and now consumed.
    Accepted,
    Unknown,
    AlreadyUsed,
    Expired,
}

/// An enrolled node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub hostname: String,
    pub machine_id: String,
    /// The client certificate issued at enrollment (DER).
    pub cert_der: Vec<u8>,
    /// SHA-256 of `cert_der`: only this certificate is accepted for the node.
    pub cert_sha256: [u8; 32],
    pub enrolled_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub head_seq: u64,
    pub head_hash: Option<[u8; 32]>,
    pub last_seen_ms: Option<i64>,
}

/// A new node to record at enrollment.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub id: String,
    pub hostname: String,
    pub machine_id: String,
    pub cert_der: Vec<u8>,
    pub enrolled_at_ms: i64,
}

/// One verified envelope to store: the signature was checked against the
/// node's certificate key and the body's node id against the certificate.
#[derive(Debug, Clone)]
pub struct IngestItem {
    pub node_id: String,
    /// The body as received (shared with the decoded `body`'s report: one
    /// buffer per envelope in flight).
    pub body_bytes: prost::bytes::Bytes,
    /// SHA-256 of `body_bytes` (the chain link), computed by
    /// [`IngestItem::new`] on the connection's task rather than on the
    /// single writer thread.
    pub body_sha256: [u8; 32],
    pub signature: Vec<u8>,
    pub body: AttestationBody,
    pub received_at_ms: i64,
}

impl IngestItem {
    pub fn new(
        node_id: String,
        body_bytes: impl Into<prost::bytes::Bytes>,
        signature: Vec<u8>,
        body: AttestationBody,
        received_at_ms: i64,
    ) -> Self {
        let body_bytes = body_bytes.into();
        let body_sha256 = kosmos_proto::chain::body_hash(&body_bytes);
        IngestItem { node_id, body_bytes, body_sha256, signature, body, received_at_ms }
    }
}

/// The outcome of one ingested envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestResult {
    /// Stored (or an identical copy was already stored); `head_seq` is the
    /// highest seq now durably stored for the node.
    Acked { head_seq: u64 },
    /// Refused; the reason is sent to the agent and recorded as an event.
    Refused { reason: String },
    /// Refused for good: this envelope will never be accepted as it is (a
    /// compact attestation whose claim does not hold). The agent is told to
    /// set it aside.
    Rejected { reason: String },
    /// Storing this envelope failed (a database error on its rows only): it
    /// was not stored and not acked, the agent retries it. Every other
    /// envelope of the batch was stored: one node's failure is its own.
    Failed { reason: String },
}

/// A chain or security event recorded on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    pub node_id: String,
    pub seq: Option<u64>,
    /// `gap`, `fork`, `replay`, `spool_overflow`, `clock_skew`,
    /// `clock_backwards`, `bad_signature`, `identity_mismatch`, `revoked`,
    /// `seq_out_of_range`, `malformed_envelope`, `malformed_report`,
    /// `store_failed`, `false_claim`.
    pub kind: String,
    pub detail: String,
    pub at_ms: i64,
}

/// A stored envelope, verbatim: (seq, body, signature).
pub type StoredEnvelope = (u64, Vec<u8>, Vec<u8>);

/// Enrollment, ingest and administration: the collector's writes, and the
/// reads that go with them. One writer thread owns a `Store` ([`writer`]).
pub trait Store: EvidenceRead + outbox::OutboxStore + Send {
    fn create_token(&mut self, token_sha256: &[u8; 32], created_ms: i64, expires_ms: i64) -> Result<(), StoreError>;
    /// Consume a one-time token atomically.
    fn consume_token(&mut self, token_sha256: &[u8; 32], now_ms: i64) -> Result<TokenUse, StoreError>;
    fn insert_node(&mut self, node: &NewNode) -> Result<(), StoreError>;
    /// Enroll a node with a one-time token, atomically: the token is
    /// consumed and the node recorded in one transaction, or neither.
    fn enroll(&mut self, token_sha256: &[u8; 32], now_ms: i64, node: &NewNode) -> Result<TokenUse, StoreError>;
    /// Mark a node revoked; false when there is no such node.
    fn revoke_node(&mut self, id: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// Store a batch of verified envelopes in one transaction, durable when
    /// this returns (unless the store was told to defer that, see
    /// [`DeferredSync`]). Each envelope is judged by [`judge::judge`]. An
    /// error on one envelope fails that envelope ([`IngestResult::Failed`])
    /// and the later envelopes of its node in the batch, never another
    /// node's: `Err` means the whole transaction could not be committed.
    fn ingest(&mut self, batch: &[IngestItem], now_ms: i64) -> Result<Vec<IngestResult>, StoreError>;
    fn record_event(&mut self, event: &NodeEvent) -> Result<(), StoreError>;
    /// Apply retention's cutoffs to one node's chain (see [`retention`]):
    /// everything before its first full report inside the expiry horizon,
    /// then at most `limit` compact attestations past `keep_all`, recording
    /// each removed run. One transaction.
    fn prune_node(
        &mut self,
        node_id: &str,
        cut: &retention::Cutoffs,
        now_ms: i64,
        limit: usize,
    ) -> Result<retention::PruneSummary, StoreError>;
    /// Remove the drift timeline, daily standings and events older than
    /// `before_ms`.
    fn prune_history(&mut self, before_ms: i64) -> Result<retention::PruneSummary, StoreError>;
    /// Record a retention run that removed something.
    fn record_prune_run(&mut self, at_ms: i64, policy: &str, run: &retention::PruneSummary) -> Result<(), StoreError>;
    /// Give the space retention freed back: SQLite returns free pages to
    /// the file system (incremental auto-vacuum, or a full `VACUUM` when
    /// `full` is set, which also turns incremental auto-vacuum on for a
    /// database created without it); PostgreSQL vacuums the tables retention
    /// deletes from, which makes their space reusable.
    fn reclaim(&mut self, full: bool) -> Result<Reclaimed, StoreError>;
}

/// What [`Store::reclaim`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Bytes the database file shrank by (SQLite).
    pub file_bytes: u64,
    /// Bytes still free inside the file (SQLite without incremental
    /// auto-vacuum: reused by new rows, returned by `prune --vacuum`).
    pub free_bytes: u64,
    /// What was done, in a few words.
    pub how: String,
}

/// The reads behind evidence exports (and the CLI's node listing): nodes,
/// their events and their stored envelopes, verbatim.
pub trait EvidenceRead {
    fn node(&mut self, id: &str) -> Result<Option<NodeRecord>, StoreError>;
    fn nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError>;
    fn events(&mut self, node_id: &str) -> Result<Vec<NodeEvent>, StoreError>;
    /// Raw stored envelopes of a node in seq order: (seq, body, signature).
    fn envelopes(&mut self, node_id: &str) -> Result<Vec<StoredEnvelope>, StoreError>;
    /// The first and last seq of the node's stored envelopes whose body was
    /// created (by the node's clock, as signed) within `from_ms..=to_ms`, or
    /// None when there is none. An evidence export takes every stored
    /// envelope between the two, so a clock that went backwards inside the
    /// window cannot punch holes into the exported chain.
    fn envelope_span(&mut self, node_id: &str, from_ms: i64, to_ms: i64) -> Result<Option<(u64, u64)>, StoreError>;
    /// Stored envelopes of a node with `first_seq <= seq <= last_seq`, in seq
    /// order, at most `limit` of them (callers page with the last seq + 1,
    /// so memory stays bounded however long the chain).
    fn envelopes_in(
        &mut self,
        node_id: &str,
        first_seq: u64,
        last_seq: u64,
        limit: usize,
    ) -> Result<Vec<EvidenceEnvelope>, StoreError>;
    /// SHA-256 of the stored body at `seq`, when that seq is stored.
    fn envelope_hash(&mut self, node_id: &str, seq: u64) -> Result<Option<[u8; 32]>, StoreError>;
    /// What retention removed from the node's chain, in seq order.
    fn pruned_ranges(&mut self, node_id: &str) -> Result<Vec<PrunedRange>, StoreError>;
}

/// A run of consecutive seqs of one node that retention removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedRange {
    pub first_seq: u64,
    pub last_seq: u64,
    /// How many stored envelopes the run held (fewer than its seqs when the
    /// chain already had a gap there).
    pub count: u64,
    /// `compact` (compact attestations past `keep_all_days`) or `expired`
    /// (everything past `max_days`).
    pub reason: String,
    /// The `prev_hash` of the first removed body, when it was stored.
    pub prev_sha256: Option<[u8; 32]>,
    /// SHA-256 of the last removed body: what the next body chains on.
    pub last_sha256: Option<[u8; 32]>,
    pub pruned_ms: i64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A stored envelope as an evidence export needs it: verbatim body and
/// signature, plus the times the collector indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceEnvelope {
    pub seq: u64,
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
    /// `created_at_unix_ms` of the body (the node's clock).
    pub created_ms: i64,
    /// When the collector received it (not kept for compact attestations).
    pub received_ms: Option<i64>,
}

/// The reads behind fleet reports, the dashboard and a node's page. A
/// reader sees committed data only; it never blocks the writer.
pub trait FleetRead: Send {
    /// The fleet report as of `opts.now_ms`.
    fn fleet_report(&mut self, opts: &Options) -> Result<FleetReport, StoreError>;
    /// The latest finding of every check on one node, most urgent first.
    fn node_findings(&mut self, node_id: &str) -> Result<Vec<NodeFinding>, StoreError>;
    /// An opaque token for the store's committed content as this reader sees
    /// it: two calls on the same reader return the same token when no write
    /// was committed in between (by this process or any other), and
    /// different tokens otherwise. The dashboard polls it to rebuild only
    /// after a change; it costs no scan.
    fn change_token(&mut self) -> Result<i64, StoreError>;
    /// The findings the notifier's expiry scan reads: those of the
    /// [`outbox::END_OF_LIFE_CHECKS`] and every waived one.
    fn watched_findings(&mut self) -> Result<Vec<outbox::WatchedFinding>, StoreError>;
}

/// Makes ingest transactions that a store committed without waiting for
/// the disk durable, all of them in one call (the store writer's acker calls
/// it before it acks; see [`writer`]).
pub trait DeferredSync: Send + Sync {
    /// Return once every transaction committed so far is on disk.
    fn sync(&self) -> Result<(), StoreError>;
}

/// A store opened for `serve`: the store for the writer thread, how its
/// deferred durability is reached, and the backend's background upkeep
/// (SQLite: the WAL checkpointer), which runs until it is dropped.
pub struct ServingStore {
    pub store: Box<dyn Store>,
    pub deferred_sync: Option<Box<dyn DeferredSync>>,
    pub upkeep: Box<dyn std::any::Any + Send>,
}

impl std::fmt::Debug for ServingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingStore").finish_non_exhaustive()
    }
}

/// Where a collector's store lives.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// An SQLite database file (the default: `collector.db` in `data_dir`).
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by any number of collector replicas.
    Postgres(Box<postgres::PgSettings>),
}

impl StoreLocation {
    /// Open the store (created and migrated when it does not exist yet).
    pub fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        match self {
            StoreLocation::Sqlite(path) => Ok(Box::new(sqlite::SqliteStore::open(path)?)),
            StoreLocation::Postgres(settings) => Ok(Box::new(postgres::store::PgStore::open(settings)?)),
        }
    }

    /// Open the store for `serve`. SQLite: ingest commits without waiting
    /// for the disk and the writer makes them durable in groups before
    /// acking, while a checkpointer copies the WAL. PostgreSQL: every ingest
    /// commit is durable when it returns (the server's own group commit).
    pub fn open_for_serving(&self) -> Result<ServingStore, StoreError> {
        match self {
            StoreLocation::Sqlite(path) => {
                let mut store = sqlite::SqliteStore::open(path)?;
                let checkpointer = sqlite::Checkpointer::start(path)?;
                store.kick_after_ingest(&checkpointer);
                let wal_sync = store.defer_ingest_sync();
                Ok(ServingStore {
                    store: Box::new(store),
                    deferred_sync: Some(Box::new(wal_sync)),
                    upkeep: Box::new(checkpointer),
                })
            }
            StoreLocation::Postgres(settings) => Ok(ServingStore {
                store: Box::new(postgres::store::PgStore::open(settings)?),
                deferred_sync: None,
                upkeep: Box::new(()),
            }),
        }
    }

    /// A reader for fleet reports. Fails when the store does not exist.
    pub fn fleet_reader(&self) -> Result<Box<dyn FleetRead>, StoreError> {
        match self {
            StoreLocation::Sqlite(path) => Ok(Box::new(crate::fleet::query::SqliteFleetReader::open(path)?)),
            StoreLocation::Postgres(settings) => Ok(Box::new(postgres::fleet::PgFleetReader::open(settings)?)),
        }
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreLocation::Postgres(settings) => write!(f, "{settings}"),
        }
    }
}
