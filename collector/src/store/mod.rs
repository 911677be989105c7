//! Storage of nodes, enrollment tokens, raw signed envelopes, the latest
//! finding per node and check, and chain events.
//!
//! [`Store`] is the boundary: SQLite implements it now (embedded, the
//! default); a PostgreSQL implementation can follow for several collector
//! replicas. Ingest is a batch operation so that the writer can commit many
//! envelopes in one durable transaction: an ack is sent only after the
//! transaction holding its envelope has committed.

pub mod sqlite;
pub mod writer;

use kosmos_proto::v1::AttestationBody;

/// Errors from the store. Each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database error while {doing}: {source}")]
    Sql {
        doing: &'static str,
        #[source]
        source: rusqlite::Error,
    },
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

pub(crate) fn sql(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { doing, source }
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
    /// `store_failed`.
    pub kind: String,
    pub detail: String,
    pub at_ms: i64,
}

/// A stored envelope, verbatim: (seq, body, signature).
pub type StoredEnvelope = (u64, Vec<u8>, Vec<u8>);

/// The persistence boundary of the collector.
pub trait Store: Send {
    fn create_token(&mut self, token_sha256: &[u8; 32], created_ms: i64, expires_ms: i64) -> Result<(), StoreError>;
    /// Consume a one-time token atomically.
    fn consume_token(&mut self, token_sha256: &[u8; 32], now_ms: i64) -> Result<TokenUse, StoreError>;
    fn insert_node(&mut self, node: &NewNode) -> Result<(), StoreError>;
    /// Enroll a node with a one-time token, atomically: the token is
    /// consumed and the node recorded in one transaction, or neither.
    fn enroll(&mut self, token_sha256: &[u8; 32], now_ms: i64, node: &NewNode) -> Result<TokenUse, StoreError>;
    fn node(&mut self, id: &str) -> Result<Option<NodeRecord>, StoreError>;
    fn nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError>;
    /// Mark a node revoked; false when there is no such node.
    fn revoke_node(&mut self, id: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// Store a batch of verified envelopes in one transaction, durable when
    /// this returns (unless the store was told to defer that, see
    /// [`sqlite::SqliteStore::defer_ingest_sync`]). An error on one
    /// envelope fails that envelope ([`IngestResult::Failed`]) and the later
    /// envelopes of its node in the batch, never another node's: `Err` means
    /// the whole transaction could not be committed.
    fn ingest(&mut self, batch: &[IngestItem], now_ms: i64) -> Result<Vec<IngestResult>, StoreError>;
    fn record_event(&mut self, event: &NodeEvent) -> Result<(), StoreError>;
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
    /// When the collector received it.
    pub received_ms: i64,
}
