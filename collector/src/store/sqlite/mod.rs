//! The embedded SQLite store (the default).
//!
//! WAL mode with `synchronous=FULL`: a commit is on disk when it returns, so
//! an acked envelope survives a crash or power loss. Throughput comes from
//! batching (one transaction, one fsync, for many envelopes), done by the
//! dedicated writer in [`super::writer`]. The collector's `serve` goes one
//! step further for ingests only: their transactions commit without the
//! fsync and a [`WalSync`] on another thread makes them durable before they
//! are acked, so the next batch is written while the last one reaches the
//! disk. WAL frames are copied into the database by a [`Checkpointer`] that
//! every ingest commit wakes.
//!
//! The latest finding per (node, check) is rewritten only when it changed;
//! an in-memory digest of each stored finding avoids a write per finding per
//! report, which is what makes thousands of reports a second possible.

mod outbox;
pub mod schema;

use std::collections::HashMap;
use std::path::Path;

use kosmos_proto::chain::ChainHead;
use kosmos_proto::compact::{self, Baseline};
use kosmos_proto::report::{self, IndexedReport};
use kosmos_proto::v1::Trigger;
use kosmos_proto::verdict::Status;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use super::index::{self, Counts, IndexOp, LatestFinding, NodeDescription, ReportIndex};
use super::judge::{self, Admission, BatchFailures, EventKind, NodeChain, hex};
use super::{
    DeferredSync, EvidenceRead, IngestItem, IngestResult, NewNode, NodeEvent, NodeRecord, Store, StoreError,
    StoredEnvelope, TokenUse, retention,
};

/// What the store remembers of a node's indexed state.
#[derive(Default, Debug)]
struct NodeIndexCache {
    /// check -> what is stored for it in `findings_latest`; loaded when a
    /// changed report needs it and dropped again for the least recently
    /// used nodes (see [`MAX_LOADED_FINDINGS`]).
    findings: Option<HashMap<String, LatestFinding>>,
    /// When the findings were last needed (a counter, for eviction).
    used: u64,
    /// The last report indexed for the node: the index digest the store
    /// computed from its content, whether it was a full report, and the
    /// node's counts after it. Indexing the same report again changes
    /// nothing, so a body that signs the same digest is stored without
    /// decoding its report.
    last_report: Option<IndexedDigest>,
    /// The `node_days` row last written for the node: (day, counts). A
    /// report that leaves the node's standing that day as it was needs no
    /// write.
    last_day: Option<(i64, Counts)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IndexedDigest {
    digest: [u8; 32],
    full: bool,
    counts: Counts,
}

const DAY_MS: i64 = 86_400_000;

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    conn: Connection,
    /// node -> what its rows in `findings_latest` hold.
    finding_digests: HashMap<String, NodeIndexCache>,
    /// Told after each ingest commit, when the collector runs a
    /// [`Checkpointer`].
    checkpoint_kick: Option<CheckpointKick>,
    /// Ingest commits skip their fsync; the writer acks them only after a
    /// [`WalSync`] ([`SqliteStore::defer_ingest_sync`]).
    deferred_ingest_sync: bool,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Wake `checkpointer` after every ingest commit.
    pub fn kick_after_ingest(&mut self, checkpointer: &Checkpointer) {
        self.checkpoint_kick = Some(checkpointer.kick());
    }

    /// From now on [`Store::ingest`] returns once its transaction is
    /// committed, before the commit is on disk (`synchronous=NORMAL` for
    /// that transaction only; every other write still syncs before it
    /// returns). The caller must run the returned [`WalSync`] after an
    /// ingest and before acking it: that is what
    /// [`super::writer::StoreWriter`] does, on a thread of its own, so the
    /// next batch is written while the last one reaches the disk.
    pub fn defer_ingest_sync(&mut self) -> WalSync {
        self.deferred_ingest_sync = true;
        WalSync::new(&self.path)
    }

    /// Open (and create) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err =
            |source: rusqlite::Error| StoreError::Open { path: path.display().to_string(), source: source.into() };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(open_err)?;
        // Small pages: every ingest batch rewrites an index leaf per node in
        // each per-node index, and a WAL frame is a whole page, so the page
        // size multiplies the bytes written per envelope. (Bodies are 10-20
        // KiB of gzip and sit in overflow pages either way.) Only takes
        // effect on a new database.
        conn.pragma_update(None, "page_size", 4096).map_err(open_err)?;
        // Retention frees pages; with incremental auto-vacuum it can also
        // give them back to the file system, a step at a time, without a
        // full VACUUM. Only takes effect on a new database (an older one is
        // converted by `prune --vacuum`).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        // 16 MiB of page cache (the default is 2 MiB): the indexes an
        // ingest touches stay in memory instead of being re-read from the
        // OS on every insert.
        conn.pragma_update(None, "cache_size", -16384).map_err(open_err)?;
        // The collector copies WAL frames into the database from its own
        // thread ([`Checkpointer`]). Under continuous writes that copy never
        // catches up with the last frame, so the WAL would never restart;
        // the writer checkpoints at 64 MiB, finds almost everything already
        // copied, and the WAL starts over. (At 16 MiB the writer's own
        // checkpoint came due every 140 ms at full load, measurably more
        // often than needed.)
        conn.pragma_update(None, "wal_autocheckpoint", 16384).map_err(open_err)?;
        let mut conn = conn;
        let applied = schema::migrate(&mut conn, path)?;
        if !applied.is_empty() {
            tracing::info!("{}: schema migrations {applied:?} applied", path.display());
        }
        Ok(SqliteStore {
            conn,
            finding_digests: HashMap::new(),
            checkpoint_kick: None,
            deferred_ingest_sync: false,
            path: path.to_path_buf(),
        })
    }

    /// Make sure the node has an index cache entry. Its findings are loaded
    /// lazily (only a changed report needs them).
    fn load_digests(&mut self, node_id: &str) -> Result<(), StoreError> {
        if !self.finding_digests.contains_key(node_id) {
            self.finding_digests.insert(node_id.to_string(), NodeIndexCache::default());
        }
        Ok(())
    }

    /// Drop the findings of the least recently used nodes once more than
    /// [`MAX_LOADED_FINDINGS`] are held: a node's findings take about 15 KB
    /// (146 checks), which for a fleet of 10,000 would pin 150 MB for
    /// reports that are almost always unchanged (an unchanged report needs
    /// only its digest, which every node keeps).
    fn evict_findings(&mut self) {
        let loaded: Vec<(u64, String)> = self
            .finding_digests
            .iter()
            .filter(|(_, c)| c.findings.is_some())
            .map(|(n, c)| (c.used, n.clone()))
            .collect();
        if loaded.len() <= MAX_LOADED_FINDINGS {
            return;
        }
        let mut loaded = loaded;
        loaded.sort_unstable();
        for (_, node) in loaded.iter().take(loaded.len() - MAX_LOADED_FINDINGS / 2) {
            if let Some(c) = self.finding_digests.get_mut(node) {
                c.findings = None;
            }
        }
    }
}

/// How many nodes' findings the store keeps in memory at most (the rest are
/// read back from `findings_latest` when their next changed report comes).
const MAX_LOADED_FINDINGS: usize = 1024;

/// A node's latest findings as `findings_latest` holds them.
fn load_findings(conn: &rusqlite::Connection, node_id: &str) -> Result<HashMap<String, LatestFinding>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT check_id, finding_json, status, severity FROM findings_latest WHERE node_id = ?1")
        .map_err(sql("loading findings"))?;
    let rows = stmt
        .query_map([node_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })
        .map_err(sql("loading findings"))?;
    let mut map = HashMap::new();
    for row in rows {
        let (check, json, status, severity) = row.map_err(sql("loading findings"))?;
        // Rows this code wrote always have a known status; anything else
        // is rewritten by the next report.
        if let Some(latest) = LatestFinding::of_stored(&json, &status, &severity) {
            map.insert(check, latest);
        }
    }
    Ok(map)
}

/// Copies committed WAL frames into the database file from a thread and
/// connection of its own, so that the writer thread (the one every ack waits
/// for) spends its time on transactions, not on checkpoints. The writer
/// wakes it after every ingest commit ([`CheckpointKick`]), so the copy
/// trails the WAL by about one batch: when the writer's own checkpoint comes
/// due (at 64 MiB of WAL), almost every frame is already copied and the WAL
/// starts over at once. (On a timer alone, the WAL filled 16 MiB between two
/// runs at 4,000 envelopes/s and the writer did most of the copying itself.)
/// A passive checkpoint never blocks the writer or a reader. Stops when
/// dropped.
#[derive(Debug)]
pub struct Checkpointer {
    kick: CheckpointKick,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    join: Option<std::thread::JoinHandle<()>>,
}

/// Wakes the [`Checkpointer`]: frames were committed. Never blocks; kicks
/// that arrive while it is busy fold into one.
#[derive(Debug, Clone)]
pub struct CheckpointKick(std::sync::mpsc::SyncSender<()>);

impl CheckpointKick {
    fn kick(&self) {
        let _ = self.0.try_send(());
    }
}

/// How long the checkpointer sleeps without a kick (writes other than
/// ingests, such as enrollments and events, do not kick it).
const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

impl Checkpointer {
    pub fn start(path: &Path) -> Result<Self, StoreError> {
        Self::start_with_idle(path, CHECKPOINT_IDLE)
    }

    fn start_with_idle(path: &Path, idle: std::time::Duration) -> Result<Self, StoreError> {
        use std::sync::atomic::Ordering;
        let open_err =
            |source: rusqlite::Error| StoreError::Open { path: path.display().to_string(), source: source.into() };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(open_err)?;
        let (kick, kicked) = std::sync::mpsc::sync_channel::<()>(1);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let join = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || {
                loop {
                    let woken = kicked.recv_timeout(idle);
                    if stopping.load(Ordering::Acquire) || woken == Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
                    {
                        break;
                    }
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!("WAL checkpoint failed (the writer checkpoints at 64 MiB instead): {e}");
                    }
                }
            })
            .map_err(|source| StoreError::Thread { thread: "WAL checkpoint", source })?;
        Ok(Checkpointer { kick: CheckpointKick(kick), stop, join: Some(join) })
    }

    /// The handle the store kicks after each ingest commit.
    pub fn kick(&self) -> CheckpointKick {
        self.kick.clone()
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.kick.kick();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Makes ingest transactions that were committed without an fsync
/// ([`SqliteStore::defer_ingest_sync`]) durable. SQLite appends every commit
/// to the WAL file in order, and recovery replays the WAL up to its last
/// complete commit, so one `fdatasync` of the WAL covers every commit written
/// before it. (Checkpoints stay safe without per-commit syncs: with
/// `synchronous=NORMAL` SQLite syncs the WAL before it copies frames and the
/// database before the WAL starts over.)
#[derive(Debug)]
pub struct WalSync {
    wal: std::path::PathBuf,
    dir: std::path::PathBuf,
    /// The WAL's directory entry was synced once (a new WAL file is not
    /// durable until its directory is).
    dir_synced: std::sync::atomic::AtomicBool,
}

impl DeferredSync for WalSync {
    fn sync(&self) -> Result<(), StoreError> {
        WalSync::sync(self)
    }
}

impl WalSync {
    fn new(db: &Path) -> Self {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let dir = match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        WalSync { wal: wal.into(), dir, dir_synced: std::sync::atomic::AtomicBool::new(false) }
    }

    /// Wait until every commit made so far is on disk.
    pub fn sync(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let failed = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Sync { path, source }
        };
        // Opened anew each time: cheap next to the sync, and it cannot hold
        // on to a WAL file SQLite has since replaced.
        match std::fs::File::open(&self.wal) {
            Ok(f) => f.sync_data().map_err(failed(&self.wal))?,
            // SQLite removes the WAL only when its last connection closes,
            // after copying everything into the database and syncing it:
            // nothing is left to sync.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(failed(&self.wal)(e)),
        }
        if !self.dir_synced.load(Ordering::Acquire) {
            std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(failed(&self.dir))?;
            self.dir_synced.store(true, Ordering::Release);
        }
        Ok(())
    }
}

fn node_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRecord> {
    let sha: Vec<u8> = r.get(4)?;
    let head_hash: Option<Vec<u8>> = r.get(8)?;
    Ok(NodeRecord {
        id: r.get(0)?,
        hostname: r.get(1)?,
        machine_id: r.get(2)?,
        cert_der: r.get(3)?,
        cert_sha256: sha.as_slice().try_into().unwrap_or([0; 32]),
        enrolled_at_ms: r.get(5)?,
        revoked_at_ms: r.get(6)?,
        head_seq: r.get::<_, i64>(7)?.try_into().unwrap_or(0),
        head_hash: head_hash.and_then(|h| h.as_slice().try_into().ok()),
        last_seen_ms: r.get(9)?,
    })
}

const NODE_COLUMNS: &str =
    "id, hostname, machine_id, cert_der, cert_sha256, enrolled_ms, revoked_ms, head_seq, head_hash, last_seen_ms";

/// The baseline a node row holds (None when either column is unset or
/// the digest is not 32 bytes, which only a foreign write could do).
fn stored_baseline(seq: Option<i64>, digest: Option<Vec<u8>>) -> Option<Baseline> {
    Some(Baseline { seq: u64::try_from(seq?).ok()?, digest: <[u8; 32]>::try_from(digest?).ok()? })
}

/// The chain hash of the body stored at (node, seq): the column of a full
/// envelope, computed for a compact one.
fn stored_body_hash(conn: &rusqlite::Connection, node_id: &str, seq: u64) -> Result<Option<[u8; 32]>, StoreError> {
    let stored: Option<Vec<u8>> = conn
        .prepare_cached("SELECT body_sha256 FROM envelopes WHERE node_id = ?1 AND seq = ?2")
        .and_then(|mut s| s.query_row(params![node_id, seq_i64(seq)], |r| r.get(0)).optional())
        .map_err(sql("looking up an envelope"))?;
    if let Some(h) = stored {
        return <[u8; 32]>::try_from(h.as_slice())
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("node {node_id} seq {seq}: a body hash of {} bytes", h.len())));
    }
    let compact: Option<Vec<u8>> = conn
        .prepare_cached("SELECT body FROM compact_envelopes WHERE node_id = ?1 AND seq = ?2")
        .and_then(|mut s| s.query_row(params![node_id, seq_i64(seq)], |r| r.get(0)).optional())
        .map_err(sql("looking up a compact attestation"))?;
    Ok(compact.map(|body| kosmos_proto::chain::body_hash(&body)))
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Wrap a SQLite error with what the store was doing.
pub(crate) fn sql(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Backend { doing, source: source.into() }
}

/// (revoked_ms, head_seq, head_hash, last_created_ms, baseline_seq,
/// baseline_digest) of a node.
type HeadRow = (Option<i64>, i64, Option<Vec<u8>>, Option<i64>, Option<i64>, Option<Vec<u8>>);

impl SqliteStore {
    /// Check a one-time token and, when it is valid, mark it used.
    fn use_token(tx: &rusqlite::Connection, token_sha256: &[u8; 32], now_ms: i64) -> Result<TokenUse, StoreError> {
        let row: Option<(i64, Option<i64>)> = tx
            .query_row("SELECT expires_ms, used_ms FROM tokens WHERE sha256 = ?1", [token_sha256.as_slice()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(sql("consuming a token"))?;
        Ok(match row {
            None => TokenUse::Unknown,
            Some((_, Some(_))) => TokenUse::AlreadyUsed,
            Some((exp, None)) if exp <= now_ms => TokenUse::Expired,
            Some(_) => {
                tx.execute(
                    "UPDATE tokens SET used_ms = ?2 WHERE sha256 = ?1",
                    params![token_sha256.as_slice(), now_ms],
                )
                .map_err(sql("consuming a token"))?;
                TokenUse::Accepted
            }
        })
    }

    fn insert_node_tx(tx: &rusqlite::Connection, node: &NewNode) -> Result<(), StoreError> {
        let sha: [u8; 32] = Sha256::digest(&node.cert_der).into();
        tx.execute(
            "INSERT INTO nodes (id, hostname, machine_id, cert_der, cert_sha256, enrolled_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![node.id, node.hostname, node.machine_id, node.cert_der, sha.as_slice(), node.enrolled_at_ms],
        )
        .map_err(sql("recording a node"))?;
        Ok(())
    }

    fn event_tx(tx: &rusqlite::Connection, e: &NodeEvent) -> Result<(), StoreError> {
        tx.prepare_cached("INSERT INTO events (node_id, seq, kind, detail, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")
            .and_then(|mut s| s.execute(params![e.node_id, e.seq.map(seq_i64), e.kind, e.detail, e.at_ms]))
            .map_err(sql("recording an event"))?;
        Ok(())
    }

    /// Update the latest findings of a node from one report: rewrite what
    /// changed, record status or observed-value changes (the drift
    /// timeline), forget checks a full report no longer carries, refresh the
    /// node's description. Returns the node's counts after the report.
    fn index_report(
        tx: &rusqlite::Connection,
        latest: &mut HashMap<String, LatestFinding>,
        item: &IngestItem,
        report: &ReportIndex<'_>,
    ) -> Result<Counts, StoreError> {
        let body = &item.body;
        let plan = index::plan(latest, report, body.families.is_empty(), |check| -> Result<_, StoreError> {
            let stored: String = tx
                .prepare_cached("SELECT finding_json FROM findings_latest WHERE node_id = ?1 AND check_id = ?2")
                .and_then(|mut s| s.query_row(params![item.node_id, check], |r| r.get(0)))
                .map_err(sql("reading a stored finding"))?;
            Ok(index::observed_of_stored(&stored))
        })?;
        for op in &plan.ops {
            match op {
                IndexOp::Malformed { detail } => Self::event_tx(
                    tx,
                    &NodeEvent {
                        node_id: item.node_id.clone(),
                        seq: Some(body.seq),
                        kind: EventKind::MalformedReport.as_str().into(),
                        detail: detail.clone(),
                        at_ms: item.received_at_ms,
                    },
                )?,
                IndexOp::Change(c) => {
                    tx.prepare_cached(
                        "INSERT INTO finding_changes (node_id, check_id, family, seq, at_ms, old_status, new_status,
                                                      old_observed, new_observed)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            item.node_id,
                            c.check_id.as_ref(),
                            c.family.as_ref(),
                            seq_i64(body.seq),
                            body.created_at_unix_ms,
                            c.old_status.map(Status::as_str),
                            c.new_status.as_str(),
                            c.old_observed,
                            c.new_observed
                        ])
                    })
                    .map_err(sql("recording a finding change"))?;
                }
                IndexOp::Latest(f) => {
                    tx.prepare_cached(
                        "INSERT INTO findings_latest (node_id, check_id, seq, status, severity, family, title, finding_json, changed_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT(node_id, check_id) DO UPDATE SET seq = excluded.seq, status = excluded.status,
                           severity = excluded.severity, family = excluded.family, title = excluded.title,
                           finding_json = excluded.finding_json, changed_ms = excluded.changed_ms",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            item.node_id,
                            f.check_id.as_ref(),
                            seq_i64(body.seq),
                            f.status.as_str(),
                            f.severity.as_ref(),
                            f.family.as_ref(),
                            f.title.as_ref(),
                            f.finding_json,
                            body.created_at_unix_ms
                        ])
                    })
                    .map_err(sql("storing a finding"))?;
                }
                IndexOp::Forget { check_id } => {
                    tx.prepare_cached("DELETE FROM findings_latest WHERE node_id = ?1 AND check_id = ?2")
                        .and_then(|mut s| s.execute(params![item.node_id, check_id]))
                        .map_err(sql("forgetting a finding"))?;
                }
            }
        }
        let d = NodeDescription::of(report);
        tx.prepare_cached(
            "UPDATE nodes SET os_pretty = COALESCE(?2, os_pretty), kernel = COALESCE(?3, kernel),
                              agent_version = COALESCE(?4, agent_version), profile = COALESCE(?5, profile),
                              hostname = COALESCE(?6, hostname)
             WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![item.node_id, d.os_pretty, d.kernel, d.agent_version, d.profile, d.hostname])
        })
        .map_err(sql("describing a node"))?;
        Ok(plan.counts)
    }

    /// Index the report of a body, unless it is the report indexed last for
    /// the node (the digest the node signed equals the one the store computed
    /// then). Returns the node's counts after it, or None when the report
    /// cannot be read, which is recorded as a `malformed_report` event.
    fn index_body(
        tx: &rusqlite::Connection,
        cache: &mut NodeIndexCache,
        item: &IngestItem,
        event: &dyn Fn(EventKind, String) -> NodeEvent,
    ) -> Result<Option<Counts>, StoreError> {
        let body = &item.body;
        let full = body.families.is_empty();
        if let Some(last) = cache.last_report
            && last.full == full
            && body.report_index_sha256.as_slice() == last.digest
        {
            return Ok(Some(last.counts));
        }
        // The cache now describes something else until this report is indexed.
        cache.last_report = None;
        let malformed = |detail: String| Self::event_tx(tx, &event(EventKind::MalformedReport, detail)).map(|()| None);
        let json = match report::decode(body) {
            Ok(j) => j,
            Err(e) => return malformed(format!("signed report cannot be read: {e}")),
        };
        let parts = match IndexedReport::parse(&json) {
            Ok(p) => p,
            Err(e) => return malformed(format!("signed report is not a valid report: {e}")),
        };
        let digest = parts.digest();
        let report = match ReportIndex::from_parts(parts) {
            Ok(r) => r,
            Err(e) => return malformed(format!("signed report is not a valid report: {e}")),
        };
        if !body.report_index_sha256.is_empty() && body.report_index_sha256.as_slice() != digest {
            Self::event_tx(
                tx,
                &event(
                    EventKind::MalformedReport,
                    format!(
                        "report_index_sha256 {} does not match the signed report ({}); the report was indexed",
                        hex(&body.report_index_sha256),
                        hex(&digest)
                    ),
                ),
            )?;
        }
        cache.used = item.received_at_ms.unsigned_abs().max(cache.used + 1);
        let findings = match &mut cache.findings {
            Some(f) => f,
            slot @ None => slot.insert(load_findings(tx, &item.node_id)?),
        };
        let counts = Self::index_report(tx, findings, item, &report)?;
        cache.last_report = Some(IndexedDigest { digest, full, counts });
        Ok(Some(counts))
    }

    fn ingest_one(
        tx: &rusqlite::Connection,
        cache: &mut NodeIndexCache,
        state: &mut NodeChain,
        item: &IngestItem,
        now_ms: i64,
    ) -> Result<IngestResult, StoreError> {
        let body = &item.body;
        let event = |kind: EventKind, detail: String| NodeEvent {
            node_id: item.node_id.clone(),
            seq: Some(body.seq),
            kind: kind.as_str().to_string(),
            detail,
            at_ms: now_ms,
        };
        let hash = item.body_sha256;
        let judgement = judge::judge(state, body, &hash, now_ms, |seq| stored_body_hash(tx, &item.node_id, seq))?;
        for e in &judgement.events {
            Self::event_tx(tx, &event(e.kind, e.detail.clone()))?;
        }
        match judgement.admission {
            Admission::Store => {}
            Admission::AckHead => return Ok(IngestResult::Acked { head_seq: state.head_seq() }),
            Admission::Refuse { reason } => return Ok(IngestResult::Refused { reason }),
            Admission::Reject { reason } => return Ok(IngestResult::Rejected { reason }),
        }
        if compact::is_compact(body) {
            // The judge confirmed the claim against the baseline: the
            // node's standing is the baseline report's.
            let counts = match state.baseline {
                Some(b) => Self::baseline_counts(tx, cache, &item.node_id, b)?,
                None => None,
            };
            tx.prepare_cached(
                "INSERT INTO compact_envelopes (node_id, seq, created_ms, body, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    item.node_id,
                    seq_i64(body.seq),
                    body.created_at_unix_ms,
                    &item.body_bytes[..],
                    item.signature
                ])
            })
            .map_err(sql("storing a compact attestation"))?;
            Self::record_day(tx, cache, item, counts)?;
            Self::advance_head(tx, state, item, hash, now_ms, None)?;
            return Ok(IngestResult::Acked { head_seq: body.seq });
        }
        let counts = if body.report_json.is_empty() { None } else { Self::index_body(tx, cache, item, &event)? };
        // The digest the store computed from this report (index_body keeps
        // it as the node's last report), which compact rounds may refer to.
        let digest = counts.and(cache.last_report.map(|l| l.digest));
        tx.prepare_cached(
            "INSERT INTO envelopes (node_id, seq, body, signature, body_sha256, created_ms, received_ms, trigger,
                                    pass, fail, error, not_applicable, waived, blocking)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .and_then(|mut s| {
            s.execute(params![
                item.node_id,
                seq_i64(body.seq),
                &item.body_bytes[..],
                item.signature,
                hash.as_slice(),
                body.created_at_unix_ms,
                item.received_at_ms,
                body.trigger,
                counts.map(|c| c.pass),
                counts.map(|c| c.fail),
                counts.map(|c| c.error),
                counts.map(|c| c.not_applicable),
                counts.map(|c| c.waived),
                counts.map(|c| c.blocking)
            ])
        })
        .map_err(sql("storing an envelope"))?;
        Self::record_day(tx, cache, item, counts)?;
        Self::advance_head(tx, state, item, hash, now_ms, digest)?;
        Ok(IngestResult::Acked { head_seq: body.seq })
    }

    /// The node's counts after its baseline report: from the index cache
    /// when it still describes that report, else from the report's row.
    fn baseline_counts(
        tx: &rusqlite::Connection,
        cache: &NodeIndexCache,
        node_id: &str,
        baseline: Baseline,
    ) -> Result<Option<Counts>, StoreError> {
        if let Some(last) = cache.last_report.filter(|l| l.full && l.digest == baseline.digest) {
            return Ok(Some(last.counts));
        }
        tx.prepare_cached(
            "SELECT pass, fail, error, not_applicable, waived, blocking FROM envelopes WHERE node_id = ?1 AND seq = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![node_id, seq_i64(baseline.seq)], |r| {
                let pass: Option<i64> = r.get(0)?;
                Ok(pass.map(|pass| -> rusqlite::Result<Counts> {
                    Ok(Counts {
                        pass,
                        fail: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                        error: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                        not_applicable: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                        waived: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                        blocking: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                    })
                }))
            })
            .optional()
        })
        .map_err(sql("reading the baseline's counts"))?
        .flatten()
        .transpose()
        .map_err(sql("reading the baseline's counts"))
    }

    /// The node's standing on the day of `item` (written only when it
    /// changes the day's row).
    fn record_day(
        tx: &rusqlite::Connection,
        cache: &mut NodeIndexCache,
        item: &IngestItem,
        counts: Option<Counts>,
    ) -> Result<(), StoreError> {
        let body = &item.body;
        let day = body.created_at_unix_ms.div_euclid(DAY_MS);
        if let Some(c) = counts.filter(|c| cache.last_day != Some((day, *c))) {
            cache.last_day = Some((day, c));
            tx.prepare_cached(
                "INSERT INTO node_days (node_id, day, seq, pass, fail, error, not_applicable, waived, blocking)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(node_id, day) DO UPDATE SET seq = excluded.seq, pass = excluded.pass,
                   fail = excluded.fail, error = excluded.error, not_applicable = excluded.not_applicable,
                   waived = excluded.waived, blocking = excluded.blocking
                 WHERE excluded.seq >= node_days.seq",
            )
            .and_then(|mut s| {
                s.execute(params![
                    item.node_id,
                    day,
                    seq_i64(body.seq),
                    c.pass,
                    c.fail,
                    c.error,
                    c.not_applicable,
                    c.waived,
                    c.blocking
                ])
            })
            .map_err(sql("storing the node's day"))?;
        }
        Ok(())
    }

    /// Make `item` the node's head (and its report, when it carries one
    /// with `digest`, the baseline).
    fn advance_head(
        tx: &rusqlite::Connection,
        state: &mut NodeChain,
        item: &IngestItem,
        hash: [u8; 32],
        now_ms: i64,
        digest: Option<[u8; 32]>,
    ) -> Result<(), StoreError> {
        let body = &item.body;
        let next = state.advanced(body, hash, digest);
        tx.prepare_cached(
            "UPDATE nodes SET head_seq = ?2, head_hash = ?3, last_created_ms = ?4, last_seen_ms = ?5,
                              baseline_seq = ?6, baseline_digest = ?7
             WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                item.node_id,
                seq_i64(body.seq),
                hash.as_slice(),
                body.created_at_unix_ms,
                now_ms,
                next.baseline.map(|b| seq_i64(b.seq)),
                next.baseline.map(|b| b.digest.to_vec())
            ])
        })
        .map_err(sql("updating the node head"))?;
        *state = next;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn create_token(&mut self, token_sha256: &[u8; 32], created_ms: i64, expires_ms: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO tokens (sha256, created_ms, expires_ms) VALUES (?1, ?2, ?3)",
                params![token_sha256.as_slice(), created_ms, expires_ms],
            )
            .map_err(sql("creating a token"))?;
        Ok(())
    }

    fn consume_token(&mut self, token_sha256: &[u8; 32], now_ms: i64) -> Result<TokenUse, StoreError> {
        let tx =
            self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql("consuming a token"))?;
        let verdict = Self::use_token(&tx, token_sha256, now_ms)?;
        tx.commit().map_err(sql("consuming a token"))?;
        Ok(verdict)
    }

    fn enroll(&mut self, token_sha256: &[u8; 32], now_ms: i64, node: &NewNode) -> Result<TokenUse, StoreError> {
        let tx =
            self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql("enrolling a node"))?;
        let verdict = Self::use_token(&tx, token_sha256, now_ms)?;
        if verdict == TokenUse::Accepted {
            Self::insert_node_tx(&tx, node)?;
            tx.commit().map_err(sql("enrolling a node"))?;
        }
        // Otherwise the transaction rolls back on drop: nothing changed.
        Ok(verdict)
    }

    fn insert_node(&mut self, node: &NewNode) -> Result<(), StoreError> {
        Self::insert_node_tx(&self.conn, node)
    }

    fn revoke_node(&mut self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("UPDATE nodes SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE id = ?1", params![id, now_ms])
            .map_err(sql("revoking a node"))?;
        Ok(n > 0)
    }

    fn ingest(&mut self, batch: &[IngestItem], now_ms: i64) -> Result<Vec<IngestResult>, StoreError> {
        for item in batch {
            self.load_digests(&item.node_id)?;
        }
        if self.deferred_ingest_sync {
            self.conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql("deferring the ingest fsync"))?;
        }
        let mut digests = std::mem::take(&mut self.finding_digests);
        let result = (|| {
            // IMMEDIATE: the write lock is taken first, waiting out another
            // process's write (a CLI opening the store) within the busy
            // timeout. A deferred transaction that read first and then
            // found the database changed failed at once with "database is
            // locked", failing the whole batch.
            let mut tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("starting an ingest transaction"))?;
            let mut states: HashMap<String, NodeChain> = HashMap::new();
            let mut failures = BatchFailures::default();
            let mut results = Vec::with_capacity(batch.len());
            for item in batch {
                if !states.contains_key(&item.node_id) {
                    let row: Option<HeadRow> = tx
                        .prepare_cached(
                            "SELECT revoked_ms, head_seq, head_hash, last_created_ms, baseline_seq, baseline_digest
                             FROM nodes WHERE id = ?1",
                        )
                        .and_then(|mut s| {
                            s.query_row([&item.node_id], |r| {
                                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                            })
                            .optional()
                        })
                        .map_err(sql("reading a node head"))?;
                    let Some((revoked, head_seq, head_hash, last_created, baseline_seq, baseline_digest)) = row else {
                        results.push(IngestResult::Refused { reason: "unknown node".into() });
                        continue;
                    };
                    let head = match (u64::try_from(head_seq), head_hash.and_then(|h| <[u8; 32]>::try_from(h).ok())) {
                        (Ok(seq), Some(hash)) if seq > 0 => Some(ChainHead { seq, hash }),
                        _ => None,
                    };
                    let baseline = stored_baseline(baseline_seq, baseline_digest);
                    states.insert(
                        item.node_id.clone(),
                        NodeChain { revoked: revoked.is_some(), head, last_created_ms: last_created, baseline },
                    );
                }
                let Some(state) = states.get_mut(&item.node_id) else { continue };
                if let Some(r) = failures.precheck(item) {
                    results.push(r);
                    continue;
                }
                // One envelope, one savepoint: an error undoes this envelope's
                // rows only, never another node's in the same transaction.
                let sp = tx.savepoint().map_err(sql("starting an envelope savepoint"))?;
                let saved_state = *state;
                let cache = digests.entry(item.node_id.clone()).or_default();
                match Self::ingest_one(&sp, cache, state, item, now_ms) {
                    Ok(r) => {
                        sp.commit().map_err(sql("releasing an envelope savepoint"))?;
                        results.push(r);
                    }
                    Err(e) => {
                        drop(sp);
                        *state = saved_state;
                        // The index cache may describe rows just rolled back:
                        // it is reloaded from the database on the next batch.
                        digests.remove(&item.node_id);
                        results.push(failures.failed(item, e.to_string()));
                    }
                }
            }
            // The failures are recorded in the same transaction, after the
            // savepoints that failed were undone.
            for e in failures.events(now_ms) {
                Self::event_tx(&tx, &e)?;
            }
            tx.commit().map_err(sql("committing an ingest transaction"))?;
            Ok(results)
        })();
        // On failure the transaction rolled back: the cached digests may
        // describe rows that were never written, so drop them.
        if result.is_ok() {
            self.finding_digests = digests;
            self.evict_findings();
            if let Some(kick) = &self.checkpoint_kick {
                kick.kick();
            }
        }
        if self.deferred_ingest_sync {
            // Every other write commits durably again. (Should this fail
            // after a commit, the batch is reported failed and not acked;
            // agents resend it and find it stored.)
            self.conn.pragma_update(None, "synchronous", "FULL").map_err(sql("restoring synchronous=FULL"))?;
        }
        result
    }

    fn record_event(&mut self, event: &NodeEvent) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO events (node_id, seq, kind, detail, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![event.node_id, event.seq.map(seq_i64), event.kind, event.detail, event.at_ms],
            )
            .map_err(sql("recording an event"))?;
        Ok(())
    }

    fn prune_node(
        &mut self,
        node_id: &str,
        cut: &retention::Cutoffs,
        now_ms: i64,
        limit: usize,
    ) -> Result<retention::PruneSummary, StoreError> {
        let doing = "applying retention to a node";
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(doing))?;
        let mut summary = retention::PruneSummary::default();
        let mut ranges = Vec::new();
        if let Some(before) = cut.expired_before_ms {
            // The chain is cut at the node's first report inside the horizon
            // (a gap marker carries none): no compact attestation kept can
            // refer to anything removed.
            let start: Option<i64> = tx
                .query_row(
                    "SELECT MIN(seq) FROM envelopes WHERE node_id = ?1 AND created_ms >= ?2 AND trigger <> ?3",
                    params![node_id, before, Trigger::Gap as i32],
                    |r| r.get(0),
                )
                .map_err(sql(doing))?;
            let bound = match start {
                Some(s) => s,
                None => {
                    let last: Option<i64> = tx
                        .query_row(
                            "SELECT MAX(seq) FROM (SELECT seq FROM envelopes WHERE node_id = ?1 AND created_ms < ?2
                             UNION ALL SELECT seq FROM compact_envelopes WHERE node_id = ?1 AND created_ms < ?2)",
                            params![node_id, before],
                            |r| r.get(0),
                        )
                        .map_err(sql(doing))?;
                    last.map_or(0, |l| l.saturating_add(1))
                }
            };
            let edge = |order: &str| -> Result<Option<retention::AgedBody>, StoreError> {
                tx.query_row(
                    &format!(
                        "SELECT seq, body FROM (SELECT seq, body FROM envelopes WHERE node_id = ?1 AND seq < ?2
                         UNION ALL SELECT seq, body FROM compact_envelopes WHERE node_id = ?1 AND seq < ?2)
                         ORDER BY seq {order} LIMIT 1"
                    ),
                    params![node_id, bound],
                    |r| Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?)),
                )
                .optional()
                .map_err(sql(doing))
            };
            if let (Some(first), Some(last)) = (edge("ASC")?, edge("DESC")?) {
                let full = tx
                    .execute("DELETE FROM envelopes WHERE node_id = ?1 AND seq < ?2", params![node_id, bound])
                    .map_err(sql(doing))?;
                let compact = tx
                    .execute("DELETE FROM compact_envelopes WHERE node_id = ?1 AND seq < ?2", params![node_id, bound])
                    .map_err(sql(doing))?;
                summary.envelopes += full as u64;
                summary.compact_envelopes += compact as u64;
                ranges.push(retention::expired_range(&first, &last, (full + compact) as u64, now_ms));
            }
        }
        // Compact attestations past keep_all, in seq order up to the first
        // one inside the window.
        let mut stmt = tx
            .prepare_cached(
                "SELECT seq, created_ms, body FROM compact_envelopes WHERE node_id = ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(sql(doing))?;
        let rows = stmt
            .query_map(params![node_id, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))
            })
            .map_err(sql(doing))?;
        let mut aged = Vec::new();
        for row in rows {
            let (seq, created, body) = row.map_err(sql(doing))?;
            if created >= cut.compact_before_ms {
                break;
            }
            aged.push((u64::try_from(seq).unwrap_or(0), body));
        }
        drop(stmt);
        for r in retention::ranges_of(&aged, "compact", now_ms) {
            let n = tx
                .execute(
                    "DELETE FROM compact_envelopes WHERE node_id = ?1 AND seq BETWEEN ?2 AND ?3",
                    params![node_id, seq_i64(r.first_seq), seq_i64(r.last_seq)],
                )
                .map_err(sql(doing))?;
            summary.compact_envelopes += n as u64;
            ranges.push(r);
        }
        for r in &ranges {
            tx.prepare_cached(
                "INSERT INTO pruned_ranges (node_id, first_seq, last_seq, count, reason, prev_sha256, last_sha256, pruned_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    node_id,
                    seq_i64(r.first_seq),
                    seq_i64(r.last_seq),
                    seq_i64(r.count),
                    r.reason,
                    r.prev_sha256.map(|h| h.to_vec()),
                    r.last_sha256.map(|h| h.to_vec()),
                    r.pruned_ms
                ])
            })
            .map_err(sql("recording a pruned range"))?;
        }
        summary.ranges = ranges.len() as u64;
        tx.commit().map_err(sql(doing))?;
        Ok(summary)
    }

    fn prune_history(&mut self, before_ms: i64) -> Result<retention::PruneSummary, StoreError> {
        let doing = "applying retention to the history";
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(doing))?;
        // The newest row of the drift timeline and of the events always
        // stays: SQLite gives a new row the largest id plus one, so deleting
        // the largest would hand its id out again, behind the notifier's
        // cursor (store::outbox). (Rows are deleted by the node's clock, not
        // by id: the newest row can be "old".)
        let changes = tx
            .execute(
                "DELETE FROM finding_changes WHERE at_ms < ?1 AND id < (SELECT max(id) FROM finding_changes)",
                [before_ms],
            )
            .map_err(sql(doing))?;
        // Whole days only: the day holding the horizon keeps its standing.
        let days =
            tx.execute("DELETE FROM node_days WHERE day < ?1", [before_ms.div_euclid(DAY_MS)]).map_err(sql(doing))?;
        let events = tx
            .execute("DELETE FROM events WHERE at_ms < ?1 AND id < (SELECT max(id) FROM events)", [before_ms])
            .map_err(sql(doing))?;
        tx.commit().map_err(sql(doing))?;
        Ok(retention::PruneSummary {
            finding_changes: changes as u64,
            node_days: days as u64,
            events: events as u64,
            ..Default::default()
        })
    }

    fn record_prune_run(&mut self, at_ms: i64, policy: &str, run: &retention::PruneSummary) -> Result<(), StoreError> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.conn
            .execute(
                "INSERT INTO prune_runs (at_ms, policy, envelopes, compact_envelopes, finding_changes, node_days, events)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    at_ms,
                    policy,
                    n(run.envelopes),
                    n(run.compact_envelopes),
                    n(run.finding_changes),
                    n(run.node_days),
                    n(run.events)
                ],
            )
            .map_err(sql("recording a retention run"))?;
        Ok(())
    }

    fn reclaim(&mut self, full: bool) -> Result<super::Reclaimed, StoreError> {
        let doing = "returning free space to the file system";
        let pragma = |conn: &Connection, name: &str| -> Result<i64, StoreError> {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).map_err(sql(doing))
        };
        let page = pragma(&self.conn, "page_size")?;
        let size = |conn: &Connection| -> Result<i64, StoreError> { Ok(pragma(conn, "page_count")? * page) };
        let before = size(&self.conn)?;
        let how = if full {
            // Switching auto-vacuum on takes a VACUUM; the VACUUM also
            // returns every free page.
            self.conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(sql(doing))?;
            self.conn.execute_batch("VACUUM").map_err(sql(doing))?;
            "VACUUM (incremental auto-vacuum now on)".to_string()
        } else if pragma(&self.conn, "auto_vacuum")? == 2 {
            // A step at a time, so that a serving collector's ingest waits
            // at most one step.
            loop {
                let free = pragma(&self.conn, "freelist_count")?;
                if free == 0 {
                    break;
                }
                self.conn.execute_batch("PRAGMA incremental_vacuum(4096)").map_err(sql(doing))?;
                if pragma(&self.conn, "freelist_count")? >= free {
                    break;
                }
            }
            "incremental vacuum".to_string()
        } else {
            "none: this database was created without incremental auto-vacuum; its free pages are reused by new \
             rows, and `kosmos-collector prune --vacuum` returns them"
                .to_string()
        };
        // The file shrinks at the next checkpoint of the WAL.
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(sql(doing))?;
        let after = size(&self.conn)?;
        let free = pragma(&self.conn, "freelist_count")? * page;
        Ok(super::Reclaimed {
            file_bytes: u64::try_from(before - after).unwrap_or(0),
            free_bytes: u64::try_from(free).unwrap_or(0),
            how,
        })
    }
}

impl EvidenceRead for SqliteStore {
    fn node(&mut self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.conn
            .query_row(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1"), [id], node_from_row)
            .optional()
            .map_err(sql("reading a node"))
    }

    fn nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"))
            .map_err(sql("listing nodes"))?;
        let rows = stmt.query_map([], node_from_row).map_err(sql("listing nodes"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql("listing nodes"))
    }

    fn events(&mut self, node_id: &str) -> Result<Vec<NodeEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT node_id, seq, kind, detail, at_ms FROM events WHERE node_id = ?1 ORDER BY id")
            .map_err(sql("listing events"))?;
        let rows = stmt
            .query_map([node_id], |r| {
                Ok(NodeEvent {
                    node_id: r.get(0)?,
                    seq: r.get::<_, Option<i64>>(1)?.and_then(|s| u64::try_from(s).ok()),
                    kind: r.get(2)?,
                    detail: r.get(3)?,
                    at_ms: r.get(4)?,
                })
            })
            .map_err(sql("listing events"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql("listing events"))
    }

    fn envelopes(&mut self, node_id: &str) -> Result<Vec<StoredEnvelope>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, body, signature FROM envelopes WHERE node_id = ?1
                 UNION ALL SELECT seq, body, signature FROM compact_envelopes WHERE node_id = ?1
                 ORDER BY seq",
            )
            .map_err(sql("listing envelopes"))?;
        let rows = stmt
            .query_map([node_id], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?)))
            .map_err(sql("listing envelopes"))?;
        rows.map(|r| r.map(|(s, b, g)| (u64::try_from(s).unwrap_or(0), b, g)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("listing envelopes"))
    }

    fn envelope_span(&mut self, node_id: &str, from_ms: i64, to_ms: i64) -> Result<Option<(u64, u64)>, StoreError> {
        let (first, last): (Option<i64>, Option<i64>) = self
            .conn
            .prepare_cached(
                "SELECT MIN(lo), MAX(hi) FROM (
                   SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM envelopes INDEXED BY envelopes_by_node_created
                   WHERE node_id = ?1 AND created_ms BETWEEN ?2 AND ?3
                   UNION ALL
                   SELECT MIN(seq), MAX(seq) FROM compact_envelopes
                   WHERE node_id = ?1 AND created_ms BETWEEN ?2 AND ?3)",
            )
            .and_then(|mut s| s.query_row(params![node_id, from_ms, to_ms], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(sql("finding the envelopes of a time range"))?;
        Ok(super::seq_span(first, last))
    }

    fn envelopes_in(
        &mut self,
        node_id: &str,
        first_seq: u64,
        last_seq: u64,
        limit: usize,
    ) -> Result<Vec<super::EvidenceEnvelope>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, body, signature, created_ms, received_ms FROM envelopes
                 WHERE node_id = ?1 AND seq BETWEEN ?2 AND ?3
                 UNION ALL
                 SELECT seq, body, signature, created_ms, NULL FROM compact_envelopes
                 WHERE node_id = ?1 AND seq BETWEEN ?2 AND ?3
                 ORDER BY seq LIMIT ?4",
            )
            .map_err(sql("reading envelopes"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![node_id, seq_i64(first_seq), seq_i64(last_seq), limit], |r| {
                Ok(super::EvidenceEnvelope {
                    seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    body: r.get(1)?,
                    signature: r.get(2)?,
                    created_ms: r.get(3)?,
                    received_ms: r.get(4)?,
                })
            })
            .map_err(sql("reading envelopes"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql("reading envelopes"))
    }

    fn envelope_hash(&mut self, node_id: &str, seq: u64) -> Result<Option<[u8; 32]>, StoreError> {
        stored_body_hash(&self.conn, node_id, seq)
    }

    fn pruned_ranges(&mut self, node_id: &str) -> Result<Vec<super::PrunedRange>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT first_seq, last_seq, count, reason, prev_sha256, last_sha256, pruned_ms FROM pruned_ranges
                 WHERE node_id = ?1 ORDER BY first_seq",
            )
            .map_err(sql("listing pruned ranges"))?;
        let rows = stmt
            .query_map([node_id], |r| {
                let hash = |v: Option<Vec<u8>>| v.and_then(|h| <[u8; 32]>::try_from(h).ok());
                Ok(super::PrunedRange {
                    first_seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    last_seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    count: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    reason: r.get(3)?,
                    prev_sha256: hash(r.get(4)?),
                    last_sha256: hash(r.get(5)?),
                    pruned_ms: r.get(6)?,
                })
            })
            .map_err(sql("listing pruned ranges"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql("listing pruned ranges"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kosmos_proto::chain;
    use kosmos_proto::v1::AttestationBody;
    use prost::Message;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&d.path().join("c.db")).unwrap();
        (d, s)
    }

    fn enroll(s: &mut SqliteStore, id: &str) {
        s.insert_node(&NewNode {
            id: id.into(),
            hostname: "h".into(),
            machine_id: "m".into(),
            cert_der: vec![1, 2, 3],
            enrolled_at_ms: 0,
        })
        .unwrap();
    }

    fn item(node: &str, seq: u64, prev: [u8; 32], report: &str) -> IngestItem {
        let body = AttestationBody {
            node_id: node.into(),
            seq,
            prev_hash: prev.to_vec(),
            created_at_unix_ms: 1_000i64.saturating_mul(i64::try_from(seq).unwrap_or(i64::MAX)),
            report_json: report.as_bytes().to_vec().into(),
            ..Default::default()
        };
        IngestItem::new(node.into(), body.encode_to_vec(), vec![0; 64], body, 0)
    }

    /// The item again after its body was edited.
    fn rebuilt(i: IngestItem) -> IngestItem {
        IngestItem::new(i.node_id, i.body.encode_to_vec(), i.signature, i.body, i.received_at_ms)
    }

    const REPORT: &str = r#"{"summary":{"pass":1,"fail":1,"error":0,"not_applicable":0,"waived":0},
        "results":[{"id":"a.b","status":"pass","severity":"low","family":"a","title":"t"},
                   {"id":"a.c","status":"fail","severity":"high","family":"a","title":"u"}]}"#;

    /// A compact attestation of `prev`'s chain claiming equality with the
    /// report at `same_as` (digest `digest`).
    fn compact_item(node: &str, seq: u64, prev: [u8; 32], same_as: u64, digest: [u8; 32]) -> IngestItem {
        let body = AttestationBody {
            node_id: node.into(),
            seq,
            prev_hash: prev.to_vec(),
            created_at_unix_ms: 1_000i64.saturating_mul(i64::try_from(seq).unwrap_or(i64::MAX)),
            same_as_seq: same_as,
            report_index_sha256: digest.to_vec(),
            trigger: kosmos_proto::v1::Trigger::Schedule as i32,
            ..Default::default()
        };
        IngestItem::new(node.into(), body.encode_to_vec(), vec![0; 64], body, 0)
    }

    fn report_digest(report: &str) -> [u8; 32] {
        kosmos_proto::report::IndexedReport::parse(report.as_bytes()).unwrap().digest()
    }

    /// Issue 17: compact attestations are stored when their claim holds
    /// (also after the store is reopened: the baseline is in the node row),
    /// refused for good and recorded when it does not, and read back with
    /// the full envelopes in seq order.
    #[test]
    fn compact_attestations_are_confirmed_against_the_baseline() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c.db");
        let mut s = SqliteStore::open(&path).unwrap();
        enroll(&mut s, "n");
        let digest = report_digest(REPORT);
        let full = item("n", 1, chain::GENESIS_PREV_HASH, REPORT);
        let c2 = compact_item("n", 2, chain::body_hash(&full.body_bytes), 1, digest);
        let r = s.ingest(&[full.clone(), c2.clone()], 10).unwrap();
        assert_eq!(r, [IngestResult::Acked { head_seq: 1 }, IngestResult::Acked { head_seq: 2 }]);
        drop(s);
        let mut s = SqliteStore::open(&path).unwrap();
        let c3 = compact_item("n", 3, chain::body_hash(&c2.body_bytes), 1, digest);
        // A false digest, a reference to a report that is not the latest.
        let lie = compact_item("n", 4, chain::body_hash(&c3.body_bytes), 1, [9; 32]);
        let stale = compact_item("n", 4, chain::body_hash(&c3.body_bytes), 2, digest);
        let r = s.ingest(&[c3.clone(), lie, stale], 10).unwrap();
        assert_eq!(r[0], IngestResult::Acked { head_seq: 3 });
        assert!(matches!(&r[1], IngestResult::Rejected { reason } if reason.contains("digest")), "{:?}", r[1]);
        assert!(matches!(&r[2], IngestResult::Rejected { reason } if reason.contains("latest full report is seq 1")));
        let kinds: Vec<String> = s.events("n").unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["false_claim", "false_claim"]);
        assert_eq!(s.node("n").unwrap().unwrap().head_seq, 3);
        // Every body in seq order, verbatim; a compact one's hash computed.
        let all = s.envelopes("n").unwrap();
        assert_eq!(all.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(all[1].1, c2.body_bytes.to_vec());
        assert_eq!(s.envelope_hash("n", 2).unwrap(), Some(chain::body_hash(&c2.body_bytes)));
        assert_eq!(s.envelope_span("n", 2000, 3000).unwrap(), Some((2, 3)));
        let page = s.envelopes_in("n", 1, 3, 10).unwrap();
        assert_eq!(
            page.iter().map(|e| (e.seq, e.received_ms)).collect::<Vec<_>>(),
            [(1, Some(0)), (2, None), (3, None)]
        );
        // A changed report moves the baseline: a claim about seq 1 is now false.
        let changed = REPORT.replace("\"fail\"", "\"pass\"");
        let f4 = item("n", 4, chain::body_hash(&c3.body_bytes), &changed);
        let old_claim = compact_item("n", 5, chain::body_hash(&f4.body_bytes), 1, digest);
        let r = s.ingest(&[f4, old_claim], 10).unwrap();
        assert_eq!(r[0], IngestResult::Acked { head_seq: 4 });
        assert!(matches!(&r[1], IngestResult::Rejected { .. }), "{:?}", r[1]);
        // The day's standing after a compact round is the baseline's.
        let days: i64 =
            s.conn.query_row("SELECT COUNT(*) FROM node_days WHERE node_id = 'n'", [], |r| r.get(0)).unwrap();
        assert_eq!(days, 1);
    }

    /// Issue 17: retention removes compact attestations past keep_all as
    /// recorded runs (with the hashes around them) and everything before
    /// the first report inside max_age; incremental auto-vacuum gives the
    /// pages back.
    #[test]
    fn retention_removes_and_records_what_it_removed() {
        let (_d, mut s) = store();
        enroll(&mut s, "n");
        let digest = report_digest(REPORT);
        // 1 full, 2..=9 compact, 10 full, 11..=12 compact (created at seq*1000).
        let mut items = vec![item("n", 1, chain::GENESIS_PREV_HASH, REPORT)];
        for seq in 2..=12 {
            let prev = chain::body_hash(&items[items.len() - 1].body_bytes);
            items.push(match seq {
                10 => item("n", 10, prev, REPORT),
                11 | 12 => compact_item("n", seq, prev, 10, digest),
                _ => compact_item("n", seq, prev, 1, digest),
            });
        }
        let r = s.ingest(&items, 10).unwrap();
        assert!(r.iter().all(|x| matches!(x, IngestResult::Acked { .. })), "{r:?}");
        // Compact rounds created before 6,500 ms go (2..=6); 7.. stay.
        let cut = retention::Cutoffs { compact_before_ms: 6_500, expired_before_ms: None };
        let done = s.prune_node("n", &cut, 99, 100).unwrap();
        assert_eq!((done.compact_envelopes, done.envelopes, done.ranges), (5, 0, 1));
        let ranges = s.pruned_ranges("n").unwrap();
        assert_eq!((ranges[0].first_seq, ranges[0].last_seq, ranges[0].reason.as_str()), (2, 6, "compact"));
        assert_eq!(ranges[0].prev_sha256, Some(chain::body_hash(&items[0].body_bytes)));
        assert_eq!(ranges[0].last_sha256, Some(chain::body_hash(&items[5].body_bytes)));
        // Again: nothing more in that window.
        assert_eq!(s.prune_node("n", &cut, 99, 100).unwrap().compact_envelopes, 0);
        // Expiry before 9,500 ms: everything before the first report inside
        // it (seq 10), the full report of seq 1 included.
        let cut = retention::Cutoffs { compact_before_ms: 0, expired_before_ms: Some(9_500) };
        let done = s.prune_node("n", &cut, 99, 100).unwrap();
        assert_eq!((done.compact_envelopes, done.envelopes), (3, 1));
        let seqs: Vec<u64> = s.envelopes("n").unwrap().iter().map(|e| e.0).collect();
        assert_eq!(seqs, [10, 11, 12]);
        let expired = s.pruned_ranges("n").unwrap().into_iter().find(|r| r.reason == "expired").unwrap();
        assert_eq!((expired.first_seq, expired.last_seq, expired.count), (1, 9, 4));
        assert_eq!(expired.last_sha256, Some(chain::body_hash(&items[8].body_bytes)));
        s.record_prune_run(99, "test", &done).unwrap();
        let runs: i64 = s.conn.query_row("SELECT COUNT(*) FROM prune_runs", [], |r| r.get(0)).unwrap();
        assert_eq!(runs, 1);
        // A new database has incremental auto-vacuum.
        let mode: i64 = s.conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 2);
        assert!(s.reclaim(false).unwrap().how.contains("incremental"));
    }

    #[test]
    fn tokens_are_single_use_and_expire() {
        let (_d, mut s) = store();
        s.create_token(&[1; 32], 0, 100).unwrap();
        s.create_token(&[2; 32], 0, 100).unwrap();
        assert_eq!(s.consume_token(&[1; 32], 50).unwrap(), TokenUse::Accepted);
        assert_eq!(s.consume_token(&[1; 32], 60).unwrap(), TokenUse::AlreadyUsed);
        assert_eq!(s.consume_token(&[2; 32], 100).unwrap(), TokenUse::Expired);
        assert_eq!(s.consume_token(&[3; 32], 1).unwrap(), TokenUse::Unknown);
    }

    /// Issue 15: an error storing one node's envelope fails that envelope
    /// (and that node's later ones in the batch), never another node's in
    /// the same transaction.
    #[test]
    fn one_nodes_storage_failure_does_not_fail_the_batch() {
        let (_d, mut s) = store();
        for n in ["bad", "good1", "good2"] {
            enroll(&mut s, n);
        }
        // A row the store did not write through ingest (a damaged store, or
        // a bug) makes the next insert of `bad` violate the unique index.
        s.conn
            .execute(
                "INSERT INTO envelopes (node_id, seq, body, signature, body_sha256, created_ms, received_ms, trigger)
                 VALUES ('bad', 1, x'00', x'00', x'00', 0, 0, 0)",
                [],
            )
            .unwrap();
        let g1 = item("good1", 1, chain::GENESIS_PREV_HASH, REPORT);
        let b1 = item("bad", 1, chain::GENESIS_PREV_HASH, REPORT);
        let b2 = item("bad", 2, chain::body_hash(&b1.body_bytes), REPORT);
        let g2 = item("good2", 1, chain::GENESIS_PREV_HASH, REPORT);
        let g1b = item("good1", 2, chain::body_hash(&g1.body_bytes), REPORT);
        let r = s.ingest(&[g1, b1, b2, g2, g1b], 10).unwrap();
        assert_eq!(r[0], IngestResult::Acked { head_seq: 1 });
        assert!(matches!(&r[1], IngestResult::Failed { reason } if reason.contains("UNIQUE")), "{:?}", r[1]);
        assert!(matches!(&r[2], IngestResult::Failed { reason } if reason.contains("earlier envelope")), "{:?}", r[2]);
        assert_eq!(r[3], IngestResult::Acked { head_seq: 1 });
        assert_eq!(r[4], IngestResult::Acked { head_seq: 2 });
        assert_eq!(s.envelopes("good1").unwrap().len(), 2);
        assert_eq!(s.envelopes("good2").unwrap().len(), 1);
        // The failed node's head did not move, and the failure is recorded.
        assert_eq!(s.node("bad").unwrap().unwrap().head_seq, 0);
        let kinds: Vec<String> = s.events("bad").unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["store_failed"]);
        // No finding of the failed envelope leaked into the index.
        let n: i64 =
            s.conn.query_row("SELECT COUNT(*) FROM findings_latest WHERE node_id = 'bad'", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }

    /// A finding whose strings carry JSON escapes (a quote, a newline) is
    /// indexed like any other: it was a `malformed_report` before, because
    /// the index borrowed the strings.
    #[test]
    fn findings_with_escaped_strings_are_indexed() {
        let (_d, mut s) = store();
        enroll(&mut s, "n");
        let report = r#"{"summary":{"pass":0,"fail":1,"error":0,"not_applicable":0,"waived":0},
            "results":[{"id":"a.b","status":"fail","severity":"high","family":"a","title":"say \"no\"\nplease"}]}"#;
        let r = s.ingest(&[item("n", 1, chain::GENESIS_PREV_HASH, report)], 10).unwrap();
        assert_eq!(r, vec![IngestResult::Acked { head_seq: 1 }]);
        assert!(s.events("n").unwrap().is_empty(), "{:?}", s.events("n").unwrap());
        assert_eq!(latest_status(&s, "a.b"), "fail");
    }

    #[test]
    fn a_seq_the_store_cannot_represent_is_refused_not_capped() {
        let (_d, mut s) = store();
        enroll(&mut s, "n");
        let huge = item("n", 1 << 63, chain::GENESIS_PREV_HASH, REPORT);
        let r = s.ingest(&[huge.clone(), huge], 10).unwrap();
        assert!(r.iter().all(|x| matches!(x, IngestResult::Refused { .. })), "{r:?}");
        assert!(s.envelopes("n").unwrap().is_empty());
    }

    #[test]
    fn enrollment_consumes_the_token_and_records_the_node_together() {
        let (_d, mut s) = store();
        s.create_token(&[7; 32], 0, 100).unwrap();
        let node = |id: &str| NewNode {
            id: id.into(),
            hostname: "h".into(),
            machine_id: "m".into(),
            cert_der: vec![1],
            enrolled_at_ms: 0,
        };
        assert_eq!(s.enroll(&[7; 32], 10, &node("a")).unwrap(), TokenUse::Accepted);
        assert!(s.node("a").unwrap().is_some());
        assert_eq!(s.enroll(&[7; 32], 11, &node("b")).unwrap(), TokenUse::AlreadyUsed);
        assert!(s.node("b").unwrap().is_none(), "no node without a token");
        assert_eq!(s.enroll(&[8; 32], 11, &node("c")).unwrap(), TokenUse::Unknown);
        assert!(s.node("c").unwrap().is_none());
    }

    #[test]
    fn chain_events_and_idempotent_ingest() {
        let (_d, mut s) = store();
        enroll(&mut s, "n1");
        let i1 = item("n1", 1, chain::GENESIS_PREV_HASH, REPORT);
        let h1 = chain::body_hash(&i1.body_bytes);
        let i2 = item("n1", 2, h1, REPORT);
        let r = s.ingest(&[i1.clone(), i2.clone()], 10).unwrap();
        assert_eq!(r, vec![IngestResult::Acked { head_seq: 1 }, IngestResult::Acked { head_seq: 2 }]);
        // Re-sent: stored once, acked at the head, recorded as a replay.
        assert_eq!(s.ingest(&[i1], 11).unwrap(), vec![IngestResult::Acked { head_seq: 2 }]);
        assert_eq!(s.envelopes("n1").unwrap().len(), 2);
        // A skipped sequence and a forked one.
        let h2 = chain::body_hash(&i2.body_bytes);
        let i5 = item("n1", 5, h2, REPORT);
        let h5 = chain::body_hash(&i5.body_bytes);
        s.ingest(&[i5], 12).unwrap();
        s.ingest(&[item("n1", 6, [9; 32], REPORT)], 13).unwrap();
        let _ = h5;
        let kinds: Vec<String> = s.events("n1").unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["replay", "gap", "fork"]);
        // Latest findings are indexed.
        let n: i64 = s.conn.query_row("SELECT COUNT(*) FROM findings_latest", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn revoked_and_unknown_nodes_are_refused() {
        let (_d, mut s) = store();
        enroll(&mut s, "n1");
        assert!(s.revoke_node("n1", 5).unwrap());
        assert!(!s.revoke_node("nope", 5).unwrap());
        let r = s.ingest(&[item("n1", 1, chain::GENESIS_PREV_HASH, REPORT)], 10).unwrap();
        assert!(matches!(&r[0], IngestResult::Refused { .. }));
        let r = s.ingest(&[item("n2", 1, chain::GENESIS_PREV_HASH, REPORT)], 10).unwrap();
        assert!(matches!(&r[0], IngestResult::Refused { .. }));
    }

    #[test]
    fn malformed_report_is_stored_and_flagged() {
        let (_d, mut s) = store();
        enroll(&mut s, "n1");
        s.ingest(&[item("n1", 1, chain::GENESIS_PREV_HASH, "{not json")], 10).unwrap();
        assert_eq!(s.envelopes("n1").unwrap().len(), 1);
        assert_eq!(s.events("n1").unwrap()[0].kind, "malformed_report");
    }

    /// A body as the agent sends it: gzip-encoded report with its signed
    /// index digest (`digest` overrides the true one).
    fn packed_item(node: &str, seq: u64, prev: [u8; 32], report: &str, digest: Option<[u8; 32]>) -> IngestItem {
        let mut i = item(node, seq, prev, "");
        kosmos_proto::report::pack(report.as_bytes()).into_body(&mut i.body);
        if let Some(d) = digest {
            i.body.report_index_sha256 = d.to_vec();
        }
        rebuilt(i)
    }

    fn latest_status(s: &SqliteStore, check: &str) -> String {
        s.conn.query_row("SELECT status FROM findings_latest WHERE check_id = ?1", [check], |r| r.get(0)).unwrap()
    }

    fn stored_counts(s: &SqliteStore, seq: i64) -> (Option<i64>, Option<i64>) {
        s.conn
            .query_row("SELECT pass, fail FROM envelopes WHERE seq = ?1", [seq], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
    }

    #[test]
    fn gzip_reports_are_indexed_and_an_unchanged_digest_skips_decoding() {
        let (_d, mut s) = store();
        enroll(&mut s, "n1");
        let true_digest = IndexedReport::parse(REPORT.as_bytes()).unwrap().digest();
        let i1 = packed_item("n1", 1, chain::GENESIS_PREV_HASH, REPORT, None);
        assert_eq!(i1.body.report_encoding, kosmos_proto::v1::ReportEncoding::Gzip as i32);
        let h1 = chain::body_hash(&i1.body_bytes);
        s.ingest(&[i1], 10).unwrap();
        assert_eq!(latest_status(&s, "a.c"), "fail");
        assert_eq!(stored_counts(&s, 1), (Some(1), Some(1)));
        // Same digest, different content (a node contradicting itself): the
        // store trusts the digest it verified before and keeps its index,
        // which proves the report was not decoded. The stored envelope still
        // carries what the node signed, for `evidence verify` to flag.
        let fixed = REPORT.replace(r#""status":"fail""#, r#""status":"pass""#);
        let i2 = packed_item("n1", 2, h1, &fixed, Some(true_digest));
        let h2 = chain::body_hash(&i2.body_bytes);
        s.ingest(&[i2], 11).unwrap();
        assert_eq!(latest_status(&s, "a.c"), "fail");
        assert_eq!(stored_counts(&s, 2), (Some(1), Some(1)));
        assert!(s.events("n1").unwrap().is_empty());
        // The honest digest of the changed report is a new one: indexed.
        let i3 = packed_item("n1", 3, h2, &fixed, None);
        let h3 = chain::body_hash(&i3.body_bytes);
        s.ingest(&[i3], 12).unwrap();
        assert_eq!(latest_status(&s, "a.c"), "pass");
        assert_eq!(stored_counts(&s, 3), (Some(2), Some(0)));
        // A digest that matches nothing the store computed: indexed, and the
        // mismatch recorded.
        let i4 = packed_item("n1", 4, h3, REPORT, Some([7; 32]));
        let h4 = chain::body_hash(&i4.body_bytes);
        s.ingest(&[i4], 13).unwrap();
        assert_eq!(latest_status(&s, "a.c"), "fail");
        let events = s.events("n1").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "malformed_report");
        assert!(events[0].detail.contains("does not match"), "{}", events[0].detail);
        // A partial report with the digest of the last full one is indexed
        // as what it is (a partial report never forgets checks).
        let mut i5 = packed_item("n1", 5, h4, REPORT, None);
        i5.body.families = vec!["a".into()];
        let i5 = rebuilt(i5);
        s.ingest(&[i5], 14).unwrap();
        assert_eq!(stored_counts(&s, 5), (Some(1), Some(1)));
        // After a restart the cache is empty, so the first body is decoded.
        drop(s);
        let mut s = SqliteStore::open(&_d.path().join("c.db")).unwrap();
        let h5 = s.envelope_hash("n1", 5).unwrap().unwrap();
        s.ingest(&[packed_item("n1", 6, h5, &fixed, Some(true_digest))], 15).unwrap();
        assert_eq!(latest_status(&s, "a.c"), "pass");
    }

    #[test]
    fn the_checkpointer_copies_the_wal_into_the_database_and_stops_when_dropped() {
        let (d, mut s) = store();
        let db = d.path().join("c.db");
        enroll(&mut s, "n1");
        let mut prev = chain::GENESIS_PREV_HASH;
        for seq in 1..=20 {
            let i = item("n1", seq, prev, REPORT);
            prev = i.body_sha256;
            s.ingest(&[i], 10).unwrap();
        }
        // Far below the writer's own checkpoint threshold: all in the WAL.
        let before = std::fs::metadata(&db).unwrap().len();
        let cp = Checkpointer::start(&db).unwrap();
        assert!(database_grows(&db, before), "nothing was checkpointed");
        stops_promptly(cp);
        // The store keeps working, and a reader sees everything.
        assert_eq!(s.envelopes("n1").unwrap().len(), 20);
    }

    /// Waits up to 10 s for the database file to grow past `before` bytes
    /// (a checkpoint copied pages into it).
    fn database_grows(db: &Path, before: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(db).unwrap().len() == before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::metadata(db).unwrap().len() > before
    }

    fn stops_promptly(cp: Checkpointer) {
        let started = std::time::Instant::now();
        drop(cp);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn an_ingest_kicks_the_checkpointer_without_waiting_for_its_timer() {
        let (d, mut s) = store();
        let db = d.path().join("c.db");
        enroll(&mut s, "n1");
        // Its timer would not fire within the test: only the kick can wake it.
        let cp = Checkpointer::start_with_idle(&db, std::time::Duration::from_secs(3600)).unwrap();
        s.kick_after_ingest(&cp);
        let before = std::fs::metadata(&db).unwrap().len();
        let mut prev = chain::GENESIS_PREV_HASH;
        let batch: Vec<IngestItem> = (1..=20)
            .map(|seq| {
                let i = item("n1", seq, prev, REPORT);
                prev = i.body_sha256;
                i
            })
            .collect();
        s.ingest(&batch, 10).unwrap();
        assert!(database_grows(&db, before), "the kick did not start a checkpoint");
        stops_promptly(cp);
        // Kicking a stopped checkpointer is harmless.
        s.ingest(&[item("n1", 21, prev, REPORT)], 10).unwrap();
    }

    #[test]
    fn a_deferred_ingest_is_synced_by_wal_sync_and_every_other_write_stays_full() {
        let (d, mut s) = store();
        let sync = s.defer_ingest_sync();
        enroll(&mut s, "n1");
        let i = item("n1", 1, chain::GENESIS_PREV_HASH, REPORT);
        assert_eq!(s.ingest(&[i], 10).unwrap(), vec![IngestResult::Acked { head_seq: 1 }]);
        // Back to FULL (2) for enrollments, tokens and events.
        let mode: i64 = s.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 2);
        assert!(d.path().join("c.db-wal").exists());
        sync.sync().unwrap();
        sync.sync().unwrap();
        // No WAL (no connection ever opened this database): nothing to sync.
        WalSync::new(&d.path().join("none.db")).sync().unwrap();
        // A WAL that cannot be opened is an error naming it, not a silent pass.
        let looped = d.path().join("loop.db");
        std::os::unix::fs::symlink("loop.db-wal", d.path().join("loop.db-wal")).unwrap();
        let e = WalSync::new(&looped).sync().unwrap_err().to_string();
        assert!(e.contains("loop.db-wal"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_acks_deferred_ingests_once_synced_and_calls_see_them() {
        let (d, mut s) = store();
        enroll(&mut s, "n1");
        let sync = s.defer_ingest_sync();
        let (writer, thread) = super::super::writer::StoreWriter::spawn(Box::new(s), Some(Box::new(sync)));
        let mut prev = chain::GENESIS_PREV_HASH;
        for seq in 1..=30 {
            let i = item("n1", seq, prev, REPORT);
            prev = i.body_sha256;
            assert_eq!(writer.ingest(i).await.unwrap(), IngestResult::Acked { head_seq: seq });
            if seq % 10 == 0 {
                // A call after ingests waits for them to be on disk, and sees them.
                let head = writer.call(|s| s.node("n1")).await.unwrap().unwrap().unwrap().head_seq;
                assert_eq!(head, seq);
            }
        }
        // Ingests queued together are acked together, in order.
        let a = item("n1", 31, prev, REPORT);
        let b = item("n1", 32, a.body_sha256, REPORT);
        let (r1, r2) = tokio::join!(writer.ingest(a), writer.ingest(b));
        assert_eq!(r1.unwrap(), IngestResult::Acked { head_seq: 31 });
        assert_eq!(r2.unwrap(), IngestResult::Acked { head_seq: 32 });
        drop(writer);
        tokio::task::spawn_blocking(move || thread.join()).await.unwrap().unwrap();
        let mut reopened = SqliteStore::open(&d.path().join("c.db")).unwrap();
        assert_eq!(reopened.envelopes("n1").unwrap().len(), 32);
        assert!(reopened.events("n1").unwrap().is_empty());
    }

    #[test]
    fn unreadable_gzip_is_stored_and_flagged() {
        let (_d, mut s) = store();
        enroll(&mut s, "n1");
        let mut i = packed_item("n1", 1, chain::GENESIS_PREV_HASH, REPORT, None);
        i.body.report_json.truncate(20);
        let i = rebuilt(i);
        assert_eq!(s.ingest(&[i], 10).unwrap(), vec![IngestResult::Acked { head_seq: 1 }]);
        let e = s.events("n1").unwrap();
        assert_eq!(e[0].kind, "malformed_report");
        assert!(e[0].detail.contains("gzip"), "{}", e[0].detail);
        assert_eq!(stored_counts(&s, 1), (None, None));
    }

    fn report(findings: &[(&str, &str, &str, &str)]) -> String {
        let results: Vec<String> = findings
            .iter()
            .map(|(id, status, severity, observed)| {
                format!(
                    r#"{{"id":"{id}","status":"{status}","severity":"{severity}","family":"{}","title":"t","observed":{observed}}}"#,
                    id.split('.').next().unwrap()
                )
            })
            .collect();
        format!(
            r#"{{"node":{{"hostname":"node-a","kernel":"6.1","os":{{"pretty_name":"Debian 12"}}}},"agent_version":"0.1.0",
                "profile":{{"name":"kosmos-external","version":"1"}},"results":[{}]}}"#,
            results.join(",")
        )
    }

    fn rows(s: &SqliteStore, q: &str) -> Vec<Vec<Option<String>>> {
        let mut stmt = s.conn.prepare(q).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            Ok((0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => None,
                    rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                    rusqlite::types::ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                    _ => Some("?".into()),
                })
                .collect())
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    #[test]
    fn drift_days_and_forgotten_checks() {
        let (_d, mut s) = store();
        enroll(&mut s, "n1");
        let r1 = report(&[
            ("ssh.root", "pass", "high", r#""no""#),
            ("sysctl.fwd", "fail", "medium", "1"),
            ("kubelet.anon", "pass", "critical", "false"),
        ]);
        let i1 = item("n1", 1, chain::GENESIS_PREV_HASH, &r1);
        // Root login switched on, kubelet check gone, a new check appears;
        // sysctl.fwd only changes its evidence-free JSON order (no drift).
        let r2 = report(&[
            ("ssh.root", "fail", "high", r#""yes""#),
            ("sysctl.fwd", "fail", "medium", "1"),
            ("files.shadow", "pass", "low", "null"),
        ]);
        let i2 = item("n1", 2, chain::body_hash(&i1.body_bytes), &r2);
        s.ingest(&[i1], 10).unwrap();
        // The first report is a baseline: no change recorded.
        assert!(rows(&s, "SELECT * FROM finding_changes").is_empty());
        assert_eq!(
            rows(&s, "SELECT pass, fail, blocking FROM node_days"),
            vec![vec![Some("2".into()), Some("1".into()), Some("0".into())]]
        );
        s.ingest(&[i2], 11).unwrap();
        let changes = rows(
            &s,
            "SELECT check_id, old_status, new_status, old_observed, new_observed FROM finding_changes ORDER BY id",
        );
        assert_eq!(
            changes,
            vec![
                vec![
                    Some("ssh.root".into()),
                    Some("pass".into()),
                    Some("fail".into()),
                    Some(r#""no""#.into()),
                    Some(r#""yes""#.into())
                ],
                vec![Some("files.shadow".into()), None, Some("pass".into()), None, None],
            ]
        );
        // The kubelet check is no longer "latest"; counts follow.
        let latest = rows(&s, "SELECT check_id FROM findings_latest ORDER BY check_id");
        assert_eq!(
            latest,
            vec![vec![Some("files.shadow".into())], vec![Some("ssh.root".into())], vec![Some("sysctl.fwd".into())]]
        );
        assert_eq!(
            rows(&s, "SELECT pass, fail, blocking FROM node_days"),
            vec![vec![Some("1".into()), Some("2".into()), Some("1".into())]],
            "same day: the row follows the last report"
        );
        assert_eq!(
            rows(&s, "SELECT hostname, os_pretty, kernel, profile FROM nodes"),
            vec![vec![
                Some("node-a".into()),
                Some("Debian 12".into()),
                Some("6.1".into()),
                Some("kosmos-external v1".into())
            ]]
        );
        // A fresh store object (empty digest cache) sees the same state.
        drop(s);
        let mut s = SqliteStore::open(&_d.path().join("c.db")).unwrap();
        let i3 = item("n1", 3, [0; 32], &r2);
        s.ingest(&[i3], 12).unwrap();
        assert_eq!(rows(&s, "SELECT COUNT(*) FROM finding_changes"), vec![vec![Some("2".into())]]);
    }

    #[test]
    fn evidence_span_pages_and_hashes() {
        let (_d, mut s) = store();
        enroll(&mut s, "n1");
        enroll(&mut s, "n2");
        // Created times (seq * 1000) except seq 4, whose clock went back.
        let mut prev = chain::GENESIS_PREV_HASH;
        let mut hashes = Vec::new();
        for seq in 1..=6 {
            let mut it = item("n1", seq, prev, REPORT);
            if seq == 4 {
                it.body.created_at_unix_ms = 500;
                it = rebuilt(it);
            }
            prev = chain::body_hash(&it.body_bytes);
            hashes.push(prev);
            s.ingest(&[it], 10).unwrap();
        }
        s.ingest(&[item("n2", 1, chain::GENESIS_PREV_HASH, REPORT)], 10).unwrap();
        // 3000..=5000 covers seqs 3 and 5; seq 4 (created at 500) lies between.
        assert_eq!(s.envelope_span("n1", 3000, 5000).unwrap(), Some((3, 5)));
        assert_eq!(s.envelope_span("n1", 0, 600).unwrap(), Some((4, 4)));
        assert_eq!(s.envelope_span("n1", 7000, 9000).unwrap(), None);
        assert_eq!(s.envelope_span("nope", 0, i64::MAX).unwrap(), None);
        let page = s.envelopes_in("n1", 2, 6, 3).unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(page[2].created_ms, 500);
        assert_eq!(page[0].received_ms, Some(0));
        assert_eq!(chain::body_hash(&page[1].body), hashes[2]);
        assert_eq!(s.envelopes_in("n1", 6, 9, 10).unwrap().len(), 1);
        assert_eq!(s.envelope_hash("n1", 3).unwrap(), Some(hashes[2]));
        assert_eq!(s.envelope_hash("n1", 7).unwrap(), None);
    }
}
