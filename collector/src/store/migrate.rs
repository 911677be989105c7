//! `kosmos-collector store migrate --to postgres://…`: move a SQLite store
//! to PostgreSQL verbatim, resumably, and prove the copy.
//!
//! Every row is copied as it is: envelopes byte for byte (body, signature,
//! the hash the chain links), nodes with their certificates and chain
//! heads, tokens (used or not), events and the drift timeline with their
//! ids, the latest findings and the daily standings. Nothing is judged or
//! indexed again: the copy is the evidence, not a replay of it.
//!
//! The copy runs in chunks, each its own PostgreSQL transaction. The
//! envelopes' progress is recorded in the `store_migration` row in the same
//! transaction as each chunk, so an interrupted copy resumes where it
//! stopped; the smaller tables are copied again whole on a resume, their
//! rows upserted. A database that holds anything not put there by an
//! unfinished copy of the same source is refused: a copy never mixes with a
//! store that replicas have served.
//!
//! Verification compares, from the source's snapshot and the copy: the row
//! count of every table, each node's chain head, a digest of each node's
//! (seq, body hash) sequence; the copy's bodies against their recorded
//! hashes; and finally exports an evidence bundle of every node from the
//! copy and verifies it as an auditor would.

use std::path::{Path, PathBuf};

use ::postgres::types::ToSql;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use super::judge::hex;
use super::postgres::{PgSettings, pg, store::PgStore};
use super::{EvidenceRead, StoreError, now_ms, sqlite};

/// Rows per PostgreSQL transaction (envelopes are 10-20 KiB each).
const CHUNK: usize = 500;

/// What went wrong in a migration.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the SQLite store {path}: {source}")]
    Source {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("--to {to}: {why}")]
    Destination { to: String, why: String },
    #[error("the copy does not match its source: {0}")]
    Mismatch(String),
    #[error("verifying the copy's evidence: {0}")]
    Evidence(String),
}

/// What the copy did, and what its verification found.
#[derive(Debug, Default)]
pub struct MigrationSummary {
    /// (table, rows in the source snapshot) after the copy, all verified equal.
    pub tables: Vec<(&'static str, i64)>,
    /// Envelopes copied by this run (fewer than the total on a resume).
    pub envelopes_copied: i64,
    pub resumed: bool,
    pub nodes_verified: usize,
    /// The evidence bundle exported from the copy and verified (None when
    /// that check was skipped).
    pub bundle: Option<PathBuf>,
    pub bundle_envelopes: u64,
}

/// A column's values across a chunk, typed as PostgreSQL takes them.
enum Column {
    Text(Vec<Option<String>>),
    Int8(Vec<Option<i64>>),
    Int4(Vec<Option<i32>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Column {
    fn pg_array(&self) -> &'static str {
        match self {
            Column::Text(_) => "text[]",
            Column::Int8(_) => "int8[]",
            Column::Int4(_) => "int4[]",
            Column::Bytes(_) => "bytea[]",
        }
    }

    fn clear(&mut self) {
        match self {
            Column::Text(v) => v.clear(),
            Column::Int8(v) => v.clear(),
            Column::Int4(v) => v.clear(),
            Column::Bytes(v) => v.clear(),
        }
    }

    fn push(&mut self, row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<()> {
        match self {
            Column::Text(v) => v.push(row.get(i)?),
            Column::Int8(v) => v.push(row.get(i)?),
            Column::Int4(v) => v.push(row.get(i)?),
            Column::Bytes(v) => v.push(row.get(i)?),
        }
        Ok(())
    }

    fn as_param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Column::Text(v) => v,
            Column::Int8(v) => v,
            Column::Int4(v) => v,
            Column::Bytes(v) => v,
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int8,
    Int4,
    Bytes,
}

/// One table's copy: its columns (the same names on both sides), its key,
/// and what a row already in the copy becomes.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    key: &'static str,
    /// The SET list of `ON CONFLICT DO UPDATE`; None: keep the copy's row
    /// (rows that never change once written).
    update: Option<&'static str>,
    /// An identity column whose values are copied as they are.
    identity: bool,
}

use Kind::{Bytes, Int4, Int8, Text};

const TOKENS: Table = Table {
    name: "tokens",
    columns: &[("sha256", Bytes), ("created_ms", Int8), ("expires_ms", Int8), ("used_ms", Int8)],
    key: "sha256",
    update: Some("used_ms = excluded.used_ms"),
    identity: false,
};

const NODES: Table = Table {
    name: "nodes",
    columns: &[
        ("id", Text),
        ("hostname", Text),
        ("machine_id", Text),
        ("cert_der", Bytes),
        ("cert_sha256", Bytes),
        ("enrolled_ms", Int8),
        ("revoked_ms", Int8),
        ("head_seq", Int8),
        ("head_hash", Bytes),
        ("last_created_ms", Int8),
        ("last_seen_ms", Int8),
        ("os_pretty", Text),
        ("kernel", Text),
        ("agent_version", Text),
        ("profile", Text),
        ("baseline_seq", Int8),
        ("baseline_digest", Bytes),
    ],
    key: "id",
    // A resumed copy takes the source's newest state of a node. The index
    // digest stays unset: the node's next report is indexed in full, which
    // costs one report's work and changes no finding.
    update: Some(
        "hostname = excluded.hostname, machine_id = excluded.machine_id, cert_der = excluded.cert_der,
         cert_sha256 = excluded.cert_sha256, enrolled_ms = excluded.enrolled_ms, revoked_ms = excluded.revoked_ms,
         head_seq = excluded.head_seq, head_hash = excluded.head_hash, last_created_ms = excluded.last_created_ms,
         last_seen_ms = excluded.last_seen_ms, os_pretty = excluded.os_pretty, kernel = excluded.kernel,
         agent_version = excluded.agent_version, profile = excluded.profile,
         baseline_seq = excluded.baseline_seq, baseline_digest = excluded.baseline_digest",
    ),
    identity: false,
};

const ENVELOPES: Table = Table {
    name: "envelopes",
    columns: &[
        ("node_id", Text),
        ("seq", Int8),
        ("body", Bytes),
        ("signature", Bytes),
        ("body_sha256", Bytes),
        ("created_ms", Int8),
        ("received_ms", Int8),
        ("trigger", Int4),
        ("pass", Int8),
        ("fail", Int8),
        ("error", Int8),
        ("not_applicable", Int8),
        ("waived", Int8),
        ("blocking", Int8),
    ],
    key: "node_id, seq",
    update: None,
    identity: false,
};

const FINDINGS_LATEST: Table = Table {
    name: "findings_latest",
    columns: &[
        ("node_id", Text),
        ("check_id", Text),
        ("seq", Int8),
        ("status", Text),
        ("severity", Text),
        ("family", Text),
        ("title", Text),
        ("finding_json", Text),
        ("changed_ms", Int8),
    ],
    key: "node_id, check_id",
    update: Some(
        "seq = excluded.seq, status = excluded.status, severity = excluded.severity, family = excluded.family,
         title = excluded.title, finding_json = excluded.finding_json, changed_ms = excluded.changed_ms",
    ),
    identity: false,
};

const NODE_DAYS: Table = Table {
    name: "node_days",
    columns: &[
        ("node_id", Text),
        ("day", Int8),
        ("seq", Int8),
        ("pass", Int8),
        ("fail", Int8),
        ("error", Int8),
        ("not_applicable", Int8),
        ("waived", Int8),
        ("blocking", Int8),
    ],
    key: "node_id, day",
    update: Some(
        "seq = excluded.seq, pass = excluded.pass, fail = excluded.fail, error = excluded.error,
         not_applicable = excluded.not_applicable, waived = excluded.waived, blocking = excluded.blocking",
    ),
    identity: false,
};

const FINDING_CHANGES: Table = Table {
    name: "finding_changes",
    columns: &[
        ("id", Int8),
        ("node_id", Text),
        ("check_id", Text),
        ("family", Text),
        ("seq", Int8),
        ("at_ms", Int8),
        ("old_status", Text),
        ("new_status", Text),
        ("old_observed", Text),
        ("new_observed", Text),
    ],
    key: "id",
    update: None,
    identity: true,
};

const EVENTS: Table = Table {
    name: "events",
    columns: &[("id", Int8), ("node_id", Text), ("seq", Int8), ("kind", Text), ("detail", Text), ("at_ms", Int8)],
    key: "id",
    update: None,
    identity: true,
};

const COMPACT_ENVELOPES: Table = Table {
    name: "compact_envelopes",
    columns: &[("node_id", Text), ("seq", Int8), ("created_ms", Int8), ("body", Bytes), ("signature", Bytes)],
    key: "node_id, seq",
    update: None,
    identity: false,
};

const PRUNED_RANGES: Table = Table {
    name: "pruned_ranges",
    columns: &[
        ("node_id", Text),
        ("first_seq", Int8),
        ("last_seq", Int8),
        ("count", Int8),
        ("reason", Text),
        ("prev_sha256", Bytes),
        ("last_sha256", Bytes),
        ("pruned_ms", Int8),
    ],
    key: "node_id, first_seq",
    update: None,
    identity: false,
};

const PRUNE_RUNS: Table = Table {
    name: "prune_runs",
    columns: &[
        ("id", Int8),
        ("at_ms", Int8),
        ("policy", Text),
        ("envelopes", Int8),
        ("compact_envelopes", Int8),
        ("finding_changes", Int8),
        ("node_days", Int8),
        ("events", Int8),
    ],
    key: "id",
    update: None,
    identity: true,
};

/// The notification marks (what was announced: stale nodes, expiry
/// warnings), so that the copy does not announce them again.
const NOTIFY_MARKS: Table = Table {
    name: "notify_marks",
    columns: &[("key", Text), ("at_ms", Int8)],
    key: "key",
    update: None,
    identity: false,
};

/// The notification outbox: messages not delivered yet are delivered from
/// the copy; delivered ones stay the record of what was sent. (The cursor is
/// not copied: the copy's starts at its end, as the store is stopped and
/// its notifier had read what there was.)
const NOTIFY_OUTBOX: Table = Table {
    name: "notify_outbox",
    columns: &[
        ("id", Int8),
        ("endpoint", Text),
        ("key", Text),
        ("kind", Text),
        ("body", Text),
        ("created_ms", Int8),
        ("occurred_ms", Int8),
        ("next_ms", Int8),
        ("attempts", Int8),
        ("lease_ms", Int8),
        ("last_error", Text),
        ("delivered_ms", Int8),
    ],
    key: "id",
    update: None,
    identity: true,
};

/// In the order the copy writes them (nodes before the rows naming them).
const TABLES: [&Table; 12] = [
    &TOKENS,
    &NODES,
    &ENVELOPES,
    &COMPACT_ENVELOPES,
    &FINDINGS_LATEST,
    &NODE_DAYS,
    &FINDING_CHANGES,
    &EVENTS,
    &PRUNED_RANGES,
    &PRUNE_RUNS,
    &NOTIFY_MARKS,
    &NOTIFY_OUTBOX,
];

impl Table {
    fn select(&self, after_id: Option<i64>) -> String {
        let mut cols: Vec<&str> = self.columns.iter().map(|c| c.0).collect();
        if self.name == "envelopes" {
            // The source's row id, after the copied columns: the resume point.
            cols.push("id");
        }
        let mut sql = format!("SELECT {} FROM {}", cols.join(", "), self.name);
        if let Some(id) = after_id {
            sql.push_str(&format!(" WHERE id > {id}"));
        }
        let order = if self.name == "envelopes" { "id" } else { self.key };
        sql.push_str(&format!(" ORDER BY {order}"));
        sql
    }

    fn insert(&self) -> String {
        let cols: Vec<&str> = self.columns.iter().map(|c| c.0).collect();
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, k))| format!("${}::{}", i + 1, empty(*k).pg_array()))
            .collect();
        format!(
            "INSERT INTO {} ({}) {} SELECT * FROM unnest({}) ON CONFLICT ({}) {}",
            self.name,
            cols.join(", "),
            if self.identity { "OVERRIDING SYSTEM VALUE" } else { "" },
            arrays.join(", "),
            self.key,
            match self.update {
                Some(set) => format!("DO UPDATE SET {set}"),
                None => "DO NOTHING".into(),
            }
        )
    }
}

fn empty(kind: Kind) -> Column {
    match kind {
        Text => Column::Text(Vec::new()),
        Int8 => Column::Int8(Vec::new()),
        Int4 => Column::Int4(Vec::new()),
        Bytes => Column::Bytes(Vec::new()),
    }
}

/// Copy the SQLite store at `source` into the PostgreSQL database of `to`,
/// then verify it (module documentation). `ca_pem` is the collector CA's
/// certificate (the evidence bundle carries it); `scratch` is a directory
/// for that bundle, None to skip that last check. `progress` is told what happens, a line at a time.
pub fn migrate(
    source: &Path,
    to: &PgSettings,
    ca_pem: &str,
    ca_fingerprint: &str,
    scratch: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<MigrationSummary, MigrateError> {
    let shown_source = format!("sqlite:{}", source.display());
    let shown_to = to.to_string();
    let src_err = |source_err: rusqlite::Error| MigrateError::Source { path: shown_source.clone(), source: source_err };
    if !source.exists() {
        return Err(MigrateError::Source {
            path: shown_source.clone(),
            source: rusqlite::Error::InvalidPath(source.to_path_buf()),
        });
    }
    // The source's schema brought up to date first (as a collector start
    // would), then read in one snapshot.
    drop(sqlite::SqliteStore::open(source)?);
    let mut lite =
        Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(src_err)?;
    let snapshot = lite.transaction().map_err(src_err)?;
    // Reading a table makes the snapshot; counting them all takes it now.
    let mut counts = Vec::new();
    for t in TABLES {
        let n: i64 =
            snapshot.query_row(&format!("SELECT COUNT(*) FROM {}", t.name), [], |r| r.get(0)).map_err(src_err)?;
        counts.push((t.name, n));
    }

    // Opening the store brings the destination's schema up to date; the
    // same store exports the evidence bundle at the end.
    let mut copy = PgStore::open(to)?;
    let mut pgc = to.connect()?;
    let dest_err = |why: String| MigrateError::Destination { to: shown_to.clone(), why };
    let marker = pgc
        .query_opt("SELECT source, finished_ms, envelopes_through_id FROM store_migration", &[])
        .map_err(pg("reading the migration marker"))?;
    let (resumed, mut through_id) = match marker {
        Some(r) => {
            let (from, finished, through): (String, Option<i64>, i64) = (r.get(0), r.get(1), r.get(2));
            if from != shown_source {
                return Err(dest_err(format!(
                    "holds an unfinished copy of {from}, not of {shown_source}: use an empty database"
                )));
            }
            if finished.is_some() {
                return Err(dest_err(format!(
                    "the copy of {from} finished already, and collectors may have written to it since: \
                     a second copy would take nodes back to older chain heads"
                )));
            }
            progress(&format!("resuming the copy of {from}: envelopes after source id {through}"));
            (true, through)
        }
        None => {
            for t in TABLES {
                let any = pgc
                    .query_opt(&format!("SELECT 1 FROM {} LIMIT 1", t.name), &[])
                    .map_err(pg("checking that the destination is empty"))?;
                if any.is_some() {
                    return Err(dest_err(format!(
                        "table {} holds rows: a store is copied only into an empty database",
                        t.name
                    )));
                }
            }
            pgc.execute(
                "INSERT INTO store_migration (source, started_ms, envelopes_through_id) VALUES ($1, $2, 0)",
                &[&shown_source, &now_ms()],
            )
            .map_err(pg("writing the migration marker"))?;
            (false, 0)
        }
    };

    let mut summary = MigrationSummary { resumed, ..MigrationSummary::default() };
    for table in TABLES {
        let started = std::time::Instant::now();
        let insert = pgc.prepare(&table.insert()).map_err(pg("preparing the copy"))?;
        let is_envelopes = table.name == "envelopes";
        let mut stmt = snapshot.prepare(&table.select(is_envelopes.then_some(through_id))).map_err(src_err)?;
        let mut rows = stmt.query([]).map_err(src_err)?;
        let mut columns: Vec<Column> = table.columns.iter().map(|(_, k)| empty(*k)).collect();
        let (mut in_chunk, mut copied, mut last_id) = (0usize, 0i64, through_id);
        let mut flush = |columns: &mut Vec<Column>, last_id: i64| -> Result<(), MigrateError> {
            let params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(Column::as_param).collect();
            let mut tx = pgc.transaction().map_err(pg("starting a copy transaction"))?;
            tx.execute(&insert, &params).map_err(pg("copying rows"))?;
            if is_envelopes {
                tx.execute("UPDATE store_migration SET envelopes_through_id = $1", &[&last_id])
                    .map_err(pg("recording the copy's progress"))?;
            }
            tx.commit().map_err(pg("committing a copy transaction"))?;
            columns.iter_mut().for_each(Column::clear);
            Ok(())
        };
        while let Some(row) = rows.next().map_err(src_err)? {
            for (i, c) in columns.iter_mut().enumerate() {
                c.push(row, i).map_err(src_err)?;
            }
            if is_envelopes {
                last_id = row.get(columns.len()).map_err(src_err)?;
            }
            in_chunk += 1;
            copied += 1;
            if in_chunk == CHUNK {
                flush(&mut columns, last_id)?;
                in_chunk = 0;
                if is_envelopes && copied % (CHUNK as i64 * 20) == 0 {
                    progress(&format!("envelopes: {copied} copied"));
                }
            }
        }
        if in_chunk > 0 {
            flush(&mut columns, last_id)?;
        }
        if is_envelopes {
            through_id = last_id;
            summary.envelopes_copied = copied;
        }
        if table.identity {
            pgc.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', 'id'), GREATEST((SELECT max(id) FROM {0}), 1))",
                    table.name
                ),
                &[],
            )
            .map_err(pg("moving an identity past the copied ids"))?;
        }
        progress(&format!("{}: {copied} rows copied in {:.1}s", table.name, started.elapsed().as_secs_f64()));
    }

    // Verification.
    for &(table, expected) in &counts {
        let n: i64 = pgc
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .map_err(pg("counting the copy's rows"))?
            .get(0);
        if n != expected {
            return Err(MigrateError::Mismatch(format!("{table}: {expected} rows in the source, {n} in the copy")));
        }
    }
    summary.tables = counts;
    let bad: i64 = pgc
        .query_one("SELECT COUNT(*) FROM envelopes WHERE sha256(body) <> body_sha256", &[])
        .map_err(pg("checking the copy's bodies"))?
        .get(0);
    if bad != 0 {
        return Err(MigrateError::Mismatch(format!("{bad} envelope bodies do not hash to their recorded sha256")));
    }
    let source_nodes = node_chains_sqlite(&snapshot).map_err(src_err)?;
    let copy_nodes = node_chains_pg(&mut pgc)?;
    if source_nodes.len() != copy_nodes.len() {
        return Err(MigrateError::Mismatch(format!(
            "{} nodes in the source, {} in the copy",
            source_nodes.len(),
            copy_nodes.len()
        )));
    }
    for (a, b) in source_nodes.iter().zip(&copy_nodes) {
        if a != b {
            return Err(MigrateError::Mismatch(format!(
                "node {}: head {} / chain digest {} in the source, node {} head {} / {} in the copy",
                a.0,
                a.1,
                hex(&a.2),
                b.0,
                b.1,
                hex(&b.2)
            )));
        }
    }
    summary.nodes_verified = source_nodes.len();
    progress(&format!(
        "verified: row counts, {} nodes' chain heads and (seq, body hash) sequences",
        source_nodes.len()
    ));

    let Some(scratch) = scratch else {
        progress("evidence bundle check skipped (--no-evidence-check)");
        pgc.execute("UPDATE store_migration SET finished_ms = $1", &[&now_ms()])
            .map_err(pg("finishing the migration"))?;
        return Ok(summary);
    };
    let bundle = scratch.join(format!("migration-check-{}.tar.zst", now_ms()));
    let request = crate::evidence::ExportRequest {
        nodes: Vec::new(),
        all: true,
        from_ms: None,
        to_ms: None,
        out: bundle.clone(),
    };
    let exported = crate::evidence::export(&mut copy as &mut dyn EvidenceRead, ca_pem, &request, now_ms())
        .map_err(|e| MigrateError::Evidence(e.to_string()))?;
    let verdict = crate::evidence::verify_bundle(&bundle, Some(ca_fingerprint))
        .map_err(|e| MigrateError::Evidence(e.to_string()))?;
    if !verdict.verified {
        return Err(MigrateError::Evidence(format!(
            "the bundle exported from the copy ({}) does not verify:\n{}",
            bundle.display(),
            verdict.to_text()
        )));
    }
    let _ = std::fs::remove_file(&bundle);
    summary.bundle = Some(bundle);
    summary.bundle_envelopes = exported.envelopes;
    progress(&format!(
        "verified: an evidence bundle of every node ({} envelopes) exported from the copy",
        exported.envelopes
    ));
    pgc.execute("UPDATE store_migration SET finished_ms = $1", &[&now_ms()]).map_err(pg("finishing the migration"))?;
    Ok(summary)
}

/// (node, head seq, digest of its ordered (seq, body hash) pairs), by node id.
type NodeChainDigest = (String, i64, [u8; 32]);

/// Folds a store's nodes and envelopes into [`NodeChainDigest`]s, the same
/// way whichever backend the rows come from.
#[derive(Default)]
struct ChainDigests(std::collections::BTreeMap<String, (i64, Sha256)>);

impl ChainDigests {
    fn node(&mut self, id: String, head_seq: i64, head_hash: Option<Vec<u8>>) {
        let mut h = Sha256::new();
        h.update(head_hash.unwrap_or_default());
        self.0.insert(id, (head_seq, h));
    }

    /// An envelope, in (node, seq) order.
    fn envelope(&mut self, node_id: &str, seq: i64, body_sha256: &[u8]) {
        if let Some((_, h)) = self.0.get_mut(node_id) {
            h.update(seq.to_be_bytes());
            h.update(body_sha256);
        }
    }

    fn finish(self) -> Vec<NodeChainDigest> {
        self.0.into_iter().map(|(id, (seq, h))| (id, seq, h.finalize().into())).collect()
    }
}

fn node_chains_sqlite(conn: &Connection) -> rusqlite::Result<Vec<NodeChainDigest>> {
    let mut chains = ChainDigests::default();
    let mut stmt = conn.prepare("SELECT id, head_seq, head_hash FROM nodes")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        chains.node(r.get(0)?, r.get(1)?, r.get(2)?);
    }
    // Compact attestations keep no hash column: theirs is computed.
    let mut stmt = conn.prepare(
        "SELECT node_id, seq, body_sha256, NULL FROM envelopes
         UNION ALL SELECT node_id, seq, NULL, body FROM compact_envelopes
         ORDER BY 1, 2",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (id, seq, hash, body): (String, i64, Option<Vec<u8>>, Option<Vec<u8>>) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let hash = hash.unwrap_or_else(|| kosmos_proto::chain::body_hash(&body.unwrap_or_default()).to_vec());
        chains.envelope(&id, seq, &hash);
    }
    Ok(chains.finish())
}

fn node_chains_pg(client: &mut ::postgres::Client) -> Result<Vec<NodeChainDigest>, StoreError> {
    use ::postgres::fallible_iterator::FallibleIterator;
    let mut chains = ChainDigests::default();
    for r in client.query("SELECT id, head_seq, head_hash FROM nodes", &[]).map_err(pg("reading the copy's nodes"))? {
        chains.node(r.get(0), r.get(1), r.get(2));
    }
    let doing = "reading the copy's chains";
    let mut rows = client
        .query_raw(
            "SELECT node_id, seq, body_sha256 FROM envelopes
             UNION ALL SELECT node_id, seq, sha256(body) FROM compact_envelopes
             ORDER BY 1, 2",
            Vec::<&(dyn ToSql + Sync)>::new(),
        )
        .map_err(pg(doing))?;
    while let Some(r) = rows.next().map_err(pg(doing))? {
        let (id, seq, hash): (&str, i64, &[u8]) = (r.get(0), r.get(1), r.get(2));
        chains.envelope(id, seq, hash);
    }
    Ok(chains.finish())
}
