//! [`PgStore`]: enrollment, ingest, administration and the evidence reads
//! on PostgreSQL, with the same chain policy ([`judge`]) and index plan
//! ([`index`]) as SQLite.
//!
//! Several replicas may write one database. Each ingest batch locks the rows
//! of its nodes (`SELECT … FOR UPDATE`, in id order so that two batches
//! never wait on each other in a circle) before judging anything, so a node
//! whose envelopes reach two replicas at once is judged against one head at
//! a time. Nothing that decides a verdict is cached in the process: what the
//! SQLite store keeps in memory (the digest of the last indexed report and
//! the node's counts) lives in the node's row here, which the lock covers.

use std::collections::HashMap;

use ::postgres::{GenericClient, Row, Statement, Transaction};
use kosmos_proto::chain::ChainHead;
use kosmos_proto::compact::{self, Baseline};
use kosmos_proto::report::{self, IndexedReport};
use kosmos_proto::v1::Trigger;
use kosmos_proto::verdict::Status;
use sha2::{Digest, Sha256};

use super::{Conn, PgSettings, pg, schema};
use crate::store::index::{self, Counts, IndexOp, LatestFinding, NodeDescription, ReportIndex};
use crate::store::judge::{self, Admission, BatchFailures, EventKind, NodeChain, hex};
use crate::store::{
    EvidenceEnvelope, EvidenceRead, IngestItem, IngestResult, NewNode, NodeEvent, NodeRecord, PrunedRange, Store,
    StoreError, StoredEnvelope, TokenUse, retention,
};

const DAY_MS: i64 = 86_400_000;

const NODE_COLUMNS: &str =
    "id, hostname, machine_id, cert_der, cert_sha256, enrolled_ms, revoked_ms, head_seq, head_hash, last_seen_ms";

/// The PostgreSQL implementation of [`Store`] and [`EvidenceRead`]: one
/// connection, owned by the writer thread, opened again when the database
/// closed it (a restart, a failover): the batch that met the closed
/// connection fails unacked, and the agents resend it.
pub struct PgStore {
    settings: PgSettings,
    live: Option<Live>,
}

/// An open connection and the statements prepared on it.
struct Live {
    client: Conn,
    sql: Statements,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The ingest path's statements, prepared once per connection: parsing and
/// planning them for every envelope cost a round trip each and most of the
/// database's CPU. The bulk ones take one array per column (`unnest`), so a
/// batch writes its envelopes, days and heads in three statements whatever
/// its size.
struct Statements {
    lock_nodes: Statement,
    envelope_hash: Statement,
    insert_event: Statement,
    load_latest: Statement,
    stored_finding: Statement,
    insert_changes: Statement,
    upsert_latest: Statement,
    forget_latest: Statement,
    describe_node: Statement,
    insert_envelopes: Statement,
    insert_compact: Statement,
    baseline_counts: Statement,
    upsert_days: Statement,
    advance_heads: Statement,
}

impl Statements {
    fn prepare(client: &mut ::postgres::Client) -> Result<Statements, StoreError> {
        let mut prepare = |sql: &str| client.prepare(sql).map_err(pg("preparing the ingest statements"));
        Ok(Statements {
            lock_nodes: prepare(
                "SELECT id, revoked_ms, head_seq, head_hash, last_created_ms, index_digest, index_full, index_counts,
                        baseline_seq, baseline_digest
                 FROM nodes WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
            )?,
            envelope_hash: prepare(ENVELOPE_HASH)?,
            insert_event: prepare("INSERT INTO events (node_id, seq, kind, detail, at_ms) VALUES ($1, $2, $3, $4, $5)")?,
            load_latest: prepare(
                // The findings' digests, not their JSON: what the plan compares,
                // hashed where the JSON lies (a tenth of the bytes to send).
                "SELECT check_id, sha256(convert_to(finding_json, 'UTF8')), status, severity
                 FROM findings_latest WHERE node_id = $1",
            )?,
            stored_finding: prepare("SELECT finding_json FROM findings_latest WHERE node_id = $1 AND check_id = $2")?,
            insert_changes: prepare(
                "INSERT INTO finding_changes (node_id, check_id, family, seq, at_ms, old_status, new_status,
                                              old_observed, new_observed)
                 SELECT $1::text, u.check_id, u.family, $4::int8, $5::int8, u.old_status, u.new_status,
                        u.old_observed, u.new_observed
                 FROM unnest($2::text[], $3::text[], $6::text[], $7::text[], $8::text[], $9::text[])
                      WITH ORDINALITY AS u(check_id, family, old_status, new_status, old_observed, new_observed, n)
                 ORDER BY u.n",
            )?,
            upsert_latest: prepare(
                "INSERT INTO findings_latest (node_id, check_id, seq, status, severity, family, title, finding_json, changed_ms)
                 SELECT $1::text, u.check_id, $3::int8, u.status, u.severity, u.family, u.title, u.finding_json, $9::int8
                 FROM unnest($2::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
                      AS u(check_id, status, severity, family, title, finding_json)
                 ON CONFLICT (node_id, check_id) DO UPDATE SET seq = excluded.seq, status = excluded.status,
                   severity = excluded.severity, family = excluded.family, title = excluded.title,
                   finding_json = excluded.finding_json, changed_ms = excluded.changed_ms",
            )?,
            forget_latest: prepare("DELETE FROM findings_latest WHERE node_id = $1 AND check_id = ANY($2::text[])")?,
            describe_node: prepare(
                "UPDATE nodes SET os_pretty = COALESCE($2, os_pretty), kernel = COALESCE($3, kernel),
                                  agent_version = COALESCE($4, agent_version), profile = COALESCE($5, profile),
                                  hostname = COALESCE($6, hostname),
                                  index_digest = $7, index_full = $8, index_counts = $9
                 WHERE id = $1",
            )?,
            insert_envelopes: prepare(
                "INSERT INTO envelopes (node_id, seq, body, signature, body_sha256, created_ms, received_ms, trigger,
                                        pass, fail, error, not_applicable, waived, blocking)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::bytea[], $5::bytea[], $6::int8[],
                                      $7::int8[], $8::int4[], $9::int8[], $10::int8[], $11::int8[], $12::int8[],
                                      $13::int8[], $14::int8[])",
            )?,
            insert_compact: prepare(
                "INSERT INTO compact_envelopes (node_id, seq, created_ms, body, signature)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::bytea[], $5::bytea[])",
            )?,
            baseline_counts: prepare(
                "SELECT pass, fail, error, not_applicable, waived, blocking FROM envelopes WHERE node_id = $1 AND seq = $2",
            )?,
            upsert_days: prepare(
                "INSERT INTO node_days (node_id, day, seq, pass, fail, error, not_applicable, waived, blocking)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[],
                                      $7::int8[], $8::int8[], $9::int8[])
                 ON CONFLICT (node_id, day) DO UPDATE SET seq = excluded.seq, pass = excluded.pass,
                   fail = excluded.fail, error = excluded.error, not_applicable = excluded.not_applicable,
                   waived = excluded.waived, blocking = excluded.blocking
                 WHERE excluded.seq >= node_days.seq",
            )?,
            advance_heads: prepare(
                "UPDATE nodes SET head_seq = u.seq, head_hash = u.hash, last_created_ms = u.created, last_seen_ms = $5,
                                  baseline_seq = u.baseline_seq, baseline_digest = u.baseline_digest
                 FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::int8[], $6::int8[], $7::bytea[])
                      AS u(id, seq, hash, created, baseline_seq, baseline_digest)
                 WHERE nodes.id = u.id",
            )?,
        })
    }
}

impl PgStore {
    /// Connect and bring the schema up to date (see [`schema::migrate`]).
    pub fn open(settings: &PgSettings) -> Result<PgStore, StoreError> {
        let mut client = settings.conn()?;
        let applied = schema::migrate(&mut client)?;
        if !applied.is_empty() {
            tracing::info!("PostgreSQL schema migrations {applied:?} applied");
        }
        let sql = Statements::prepare(&mut client)?;
        Ok(PgStore { settings: settings.clone(), live: Some(Live { client, sql }) })
    }

    /// The open connection; a new one when the database closed the last.
    fn live(&mut self) -> Result<&mut Live, StoreError> {
        if self.live.as_ref().is_some_and(|l| l.client.is_closed()) {
            tracing::warn!("the database closed the store's connection; connecting again");
            self.live = None;
        }
        let live = match self.live.take() {
            Some(live) => live,
            None => {
                let mut client = self.settings.conn()?;
                let sql = Statements::prepare(&mut client)?;
                tracing::info!("connected to the database again");
                Live { client, sql }
            }
        };
        Ok(self.live.insert(live))
    }

    pub(super) fn client(&mut self) -> Result<&mut ::postgres::Client, StoreError> {
        Ok(&mut *self.live()?.client)
    }
}

/// The chain hash of the body stored at (node, seq): the column of a full
/// envelope, computed for a compact one.
pub(super) const ENVELOPE_HASH: &str = "SELECT body_sha256 FROM envelopes WHERE node_id = $1 AND seq = $2
     UNION ALL SELECT sha256(body) FROM compact_envelopes WHERE node_id = $1 AND seq = $2 LIMIT 1";

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn hash32(bytes: Option<Vec<u8>>) -> Option<[u8; 32]> {
    bytes.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
}

fn node_from_row(r: &Row) -> NodeRecord {
    let sha: Vec<u8> = r.get(4);
    NodeRecord {
        id: r.get(0),
        hostname: r.get(1),
        machine_id: r.get(2),
        cert_der: r.get(3),
        cert_sha256: sha.as_slice().try_into().unwrap_or([0; 32]),
        enrolled_at_ms: r.get(5),
        revoked_at_ms: r.get(6),
        head_seq: r.get::<_, i64>(7).try_into().unwrap_or(0),
        head_hash: hash32(r.get(8)),
        last_seen_ms: r.get(9),
    }
}

fn counts_to_array(c: Counts) -> Vec<i64> {
    vec![c.pass, c.fail, c.error, c.not_applicable, c.waived, c.blocking]
}

fn counts_from_array(a: &[i64]) -> Option<Counts> {
    match a {
        &[pass, fail, error, not_applicable, waived, blocking] => {
            Some(Counts { pass, fail, error, not_applicable, waived, blocking })
        }
        _ => None,
    }
}

/// Check a one-time token and, when it is valid, mark it used, in one
/// statement: of two replicas consuming the same token at once, exactly
/// one sees the row change.
fn use_token(tx: &mut impl GenericClient, token_sha256: &[u8; 32], now_ms: i64) -> Result<TokenUse, StoreError> {
    let consumed = tx
        .execute(
            "UPDATE tokens SET used_ms = $2 WHERE sha256 = $1 AND used_ms IS NULL AND expires_ms > $2",
            &[&token_sha256.as_slice(), &now_ms],
        )
        .map_err(pg("consuming a token"))?;
    if consumed == 1 {
        return Ok(TokenUse::Accepted);
    }
    let row = tx
        .query_opt("SELECT used_ms FROM tokens WHERE sha256 = $1", &[&token_sha256.as_slice()])
        .map_err(pg("consuming a token"))?;
    Ok(match row {
        None => TokenUse::Unknown,
        Some(r) if r.get::<_, Option<i64>>(0).is_some() => TokenUse::AlreadyUsed,
        Some(_) => TokenUse::Expired,
    })
}

fn insert_node(tx: &mut impl GenericClient, node: &NewNode) -> Result<(), StoreError> {
    let sha: [u8; 32] = Sha256::digest(&node.cert_der).into();
    tx.execute(
        "INSERT INTO nodes (id, hostname, machine_id, cert_der, cert_sha256, enrolled_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&node.id, &node.hostname, &node.machine_id, &node.cert_der, &sha.as_slice(), &node.enrolled_at_ms],
    )
    .map_err(pg("recording a node"))?;
    Ok(())
}

/// What an ingest batch holds of one locked node.
#[derive(Clone)]
struct NodeState {
    chain: NodeChain,
    /// The last report indexed for the node: (index digest, full, counts).
    indexed: Option<([u8; 32], bool, Counts)>,
    /// The chain advanced in this batch: its head is written at the end.
    advanced: bool,
    /// day -> (seq, counts) of the newest envelope stored this batch.
    days: HashMap<i64, (i64, Counts)>,
}

/// The rows a batch writes at its end, in one statement per table.
#[derive(Default)]
struct Deferred<'b> {
    envelopes: Vec<(&'b IngestItem, Option<Counts>)>,
    compact: Vec<&'b IngestItem>,
    /// (node, seq) -> body hash of the envelopes above, for the chain
    /// judgement of a later envelope of the same batch.
    hashes: HashMap<(&'b str, u64), [u8; 32]>,
}

fn insert_event(tx: &mut impl GenericClient, sql: &Statements, e: &NodeEvent) -> Result<(), StoreError> {
    tx.execute(&sql.insert_event, &[&e.node_id, &e.seq.map(seq_i64), &e.kind, &e.detail, &e.at_ms])
        .map_err(pg("recording an event"))?;
    Ok(())
}

/// Index the report of a body, unless it is the report indexed last for
/// the node. Returns the node's counts after it, or None when the report
/// cannot be read (recorded as a `malformed_report` event). Only a changed
/// report gets here, so its statements run at once rather than in bulk.
fn index_body(
    tx: &mut Transaction<'_>,
    sql: &Statements,
    state: &mut NodeState,
    item: &IngestItem,
    event: &dyn Fn(EventKind, String) -> NodeEvent,
) -> Result<Option<Counts>, StoreError> {
    let body = &item.body;
    let full = body.families.is_empty();
    if let Some((digest, was_full, counts)) = state.indexed
        && was_full == full
        && body.report_index_sha256.as_slice() == digest
    {
        return Ok(Some(counts));
    }
    let malformed =
        |tx: &mut Transaction<'_>, detail: String| insert_event(tx, sql, &event(EventKind::MalformedReport, detail));
    let json = match report::decode(body) {
        Ok(j) => j,
        Err(e) => {
            malformed(tx, format!("signed report cannot be read: {e}"))?;
            return Ok(None);
        }
    };
    let parts = match IndexedReport::parse(&json) {
        Ok(p) => p,
        Err(e) => {
            malformed(tx, format!("signed report is not a valid report: {e}"))?;
            return Ok(None);
        }
    };
    let digest = parts.digest();
    let parsed = match ReportIndex::from_parts(parts) {
        Ok(r) => r,
        Err(e) => {
            malformed(tx, format!("signed report is not a valid report: {e}"))?;
            return Ok(None);
        }
    };
    if !body.report_index_sha256.is_empty() && body.report_index_sha256.as_slice() != digest {
        malformed(
            tx,
            format!(
                "report_index_sha256 {} does not match the signed report ({}); the report was indexed",
                hex(&body.report_index_sha256),
                hex(&digest)
            ),
        )?;
    }
    let mut latest: HashMap<String, LatestFinding> = HashMap::new();
    for r in tx.query(&sql.load_latest, &[&item.node_id]).map_err(pg("loading findings"))? {
        let (check, digest, status, severity): (String, Vec<u8>, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let digest = <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| {
            StoreError::Corrupt(format!("node {}: a finding digest of {} bytes", item.node_id, digest.len()))
        })?;
        if let Some(f) = LatestFinding::of_stored_digest(digest, &status, &severity) {
            latest.insert(check, f);
        }
    }
    let plan = index::plan(&mut latest, &parsed, full, |check| -> Result<_, StoreError> {
        let stored: String =
            tx.query_one(&sql.stored_finding, &[&item.node_id, &check]).map_err(pg("reading a stored finding"))?.get(0);
        Ok(index::observed_of_stored(&stored))
    })?;
    let seq = seq_i64(body.seq);
    // The plan's writes in three statements. A check's last write wins, as
    // it would applying the steps one by one.
    let mut changes: Vec<&index::FindingChange<'_>> = Vec::new();
    let mut steps: Vec<(&str, Option<&index::LatestRow<'_>>)> = Vec::new();
    for op in &plan.ops {
        match op {
            IndexOp::Malformed { detail } => insert_event(
                tx,
                sql,
                &NodeEvent {
                    node_id: item.node_id.clone(),
                    seq: Some(body.seq),
                    kind: EventKind::MalformedReport.as_str().into(),
                    detail: detail.clone(),
                    at_ms: item.received_at_ms,
                },
            )?,
            IndexOp::Change(c) => changes.push(c),
            IndexOp::Latest(f) => steps.push((f.check_id.as_ref(), Some(f))),
            IndexOp::Forget { check_id } => steps.push((check_id.as_str(), None)),
        }
    }
    let mut last_step: HashMap<&str, usize> = HashMap::new();
    for (i, (check, _)) in steps.iter().enumerate() {
        last_step.insert(check, i);
    }
    let writes: Vec<_> =
        steps.iter().enumerate().filter(|(i, (check, _))| last_step.get(check) == Some(i)).map(|(_, w)| *w).collect();
    if !changes.is_empty() {
        let checks: Vec<&str> = changes.iter().map(|c| c.check_id.as_ref()).collect();
        let families: Vec<&str> = changes.iter().map(|c| c.family.as_ref()).collect();
        let old_status: Vec<Option<&str>> = changes.iter().map(|c| c.old_status.map(Status::as_str)).collect();
        let new_status: Vec<&str> = changes.iter().map(|c| c.new_status.as_str()).collect();
        let old_observed: Vec<Option<&str>> = changes.iter().map(|c| c.old_observed.as_deref()).collect();
        let new_observed: Vec<Option<&str>> = changes.iter().map(|c| c.new_observed.as_deref()).collect();
        tx.execute(
            &sql.insert_changes,
            &[
                &item.node_id,
                &checks,
                &families,
                &seq,
                &body.created_at_unix_ms,
                &old_status,
                &new_status,
                &old_observed,
                &new_observed,
            ],
        )
        .map_err(pg("recording finding changes"))?;
    }
    let forgotten: Vec<&str> = writes.iter().filter(|w| w.1.is_none()).map(|w| w.0).collect();
    if !forgotten.is_empty() {
        tx.execute(&sql.forget_latest, &[&item.node_id, &forgotten]).map_err(pg("forgetting findings"))?;
    }
    let latest: Vec<&index::LatestRow<'_>> = writes.iter().filter_map(|w| w.1).collect();
    if !latest.is_empty() {
        let checks: Vec<&str> = latest.iter().map(|f| f.check_id.as_ref()).collect();
        let status: Vec<&str> = latest.iter().map(|f| f.status.as_str()).collect();
        let severity: Vec<&str> = latest.iter().map(|f| f.severity.as_ref()).collect();
        let family: Vec<&str> = latest.iter().map(|f| f.family.as_ref()).collect();
        let title: Vec<&str> = latest.iter().map(|f| f.title.as_ref()).collect();
        let json: Vec<&str> = latest.iter().map(|f| f.finding_json).collect();
        tx.execute(
            &sql.upsert_latest,
            &[&item.node_id, &checks, &seq, &status, &severity, &family, &title, &json, &body.created_at_unix_ms],
        )
        .map_err(pg("storing findings"))?;
    }
    let d = NodeDescription::of(&parsed);
    tx.execute(
        &sql.describe_node,
        &[
            &item.node_id,
            &d.os_pretty,
            &d.kernel,
            &d.agent_version,
            &d.profile,
            &d.hostname,
            &digest.as_slice(),
            &full,
            &counts_to_array(plan.counts),
        ],
    )
    .map_err(pg("describing a node"))?;
    state.indexed = Some((digest, full, plan.counts));
    Ok(Some(plan.counts))
}

/// Judge one envelope of a locked node; when it is stored, its rows join
/// `deferred` (and the node's head and day move in `state`).
fn ingest_one<'b>(
    tx: &mut Transaction<'_>,
    sql: &Statements,
    state: &mut NodeState,
    deferred: &mut Deferred<'b>,
    item: &'b IngestItem,
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
    let judgement = {
        let chain = state.chain;
        let pending = &deferred.hashes;
        judge::judge(&chain, body, &hash, now_ms, |seq| -> Result<Option<[u8; 32]>, StoreError> {
            if let Some(h) = pending.get(&(item.node_id.as_str(), seq)) {
                return Ok(Some(*h));
            }
            let row = tx
                .query_opt(&sql.envelope_hash, &[&item.node_id, &seq_i64(seq)])
                .map_err(pg("looking up an envelope"))?;
            row.map(|r| {
                let h: Vec<u8> = r.get(0);
                <[u8; 32]>::try_from(h.as_slice()).map_err(|_| {
                    StoreError::Corrupt(format!("node {} seq {seq}: a body hash of {} bytes", item.node_id, h.len()))
                })
            })
            .transpose()
        })?
    };
    for e in &judgement.events {
        insert_event(tx, sql, &event(e.kind, e.detail.clone()))?;
    }
    match judgement.admission {
        Admission::Store => {}
        Admission::AckHead => return Ok(IngestResult::Acked { head_seq: state.chain.head_seq() }),
        Admission::Refuse { reason } => return Ok(IngestResult::Refused { reason }),
        Admission::Reject { reason } => return Ok(IngestResult::Rejected { reason }),
    }
    let seq = seq_i64(body.seq);
    let (counts, digest) = if compact::is_compact(body) {
        // The judge confirmed the claim: the node's standing is the
        // baseline report's.
        let counts = match state.chain.baseline {
            Some(b) => baseline_counts(tx, sql, state, &item.node_id, b)?,
            None => None,
        };
        deferred.compact.push(item);
        (counts, None)
    } else {
        let counts = if body.report_json.is_empty() { None } else { index_body(tx, sql, state, item, &event)? };
        deferred.envelopes.push((item, counts));
        // The digest the store computed from this report: what compact
        // rounds may refer to next.
        (counts, counts.and(state.indexed.map(|(d, _, _)| d)))
    };
    deferred.hashes.insert((item.node_id.as_str(), body.seq), hash);
    if let Some(c) = counts {
        let day = body.created_at_unix_ms.div_euclid(DAY_MS);
        let newest = state.days.get(&day).is_none_or(|(s, _)| seq >= *s);
        if newest {
            state.days.insert(day, (seq, c));
        }
    }
    state.chain = state.chain.advanced(body, hash, digest);
    state.advanced = true;
    Ok(IngestResult::Acked { head_seq: body.seq })
}

/// The node's counts after its baseline report: from the indexed report
/// when it is that one, else from the report's row.
fn baseline_counts(
    tx: &mut Transaction<'_>,
    sql: &Statements,
    state: &NodeState,
    node_id: &str,
    baseline: Baseline,
) -> Result<Option<Counts>, StoreError> {
    if let Some((digest, true, counts)) = state.indexed
        && digest == baseline.digest
    {
        return Ok(Some(counts));
    }
    let row = tx
        .query_opt(&sql.baseline_counts, &[&node_id, &seq_i64(baseline.seq)])
        .map_err(pg("reading the baseline's counts"))?;
    Ok(row.and_then(|r| {
        Some(Counts {
            pass: r.get::<_, Option<i64>>(0)?,
            fail: r.get::<_, Option<i64>>(1).unwrap_or(0),
            error: r.get::<_, Option<i64>>(2).unwrap_or(0),
            not_applicable: r.get::<_, Option<i64>>(3).unwrap_or(0),
            waived: r.get::<_, Option<i64>>(4).unwrap_or(0),
            blocking: r.get::<_, Option<i64>>(5).unwrap_or(0),
        })
    }))
}

/// The baseline a node's head row is written with.
type Baselined = Option<Baseline>;

/// Write what a batch deferred: its envelopes, the nodes' days and heads.
fn write_deferred(
    tx: &mut Transaction<'_>,
    sql: &Statements,
    deferred: &Deferred<'_>,
    states: &HashMap<String, NodeState>,
    now_ms: i64,
) -> Result<(), StoreError> {
    if !deferred.envelopes.is_empty() {
        let rows = &deferred.envelopes;
        let count =
            |f: fn(&Counts) -> i64| -> Vec<Option<i64>> { rows.iter().map(|(_, c)| c.as_ref().map(f)).collect() };
        let node_ids: Vec<&str> = rows.iter().map(|(i, _)| i.node_id.as_str()).collect();
        let seqs: Vec<i64> = rows.iter().map(|(i, _)| seq_i64(i.body.seq)).collect();
        let bodies: Vec<&[u8]> = rows.iter().map(|(i, _)| &i.body_bytes[..]).collect();
        let signatures: Vec<&[u8]> = rows.iter().map(|(i, _)| i.signature.as_slice()).collect();
        let hashes: Vec<&[u8]> = rows.iter().map(|(i, _)| i.body_sha256.as_slice()).collect();
        let created: Vec<i64> = rows.iter().map(|(i, _)| i.body.created_at_unix_ms).collect();
        let received: Vec<i64> = rows.iter().map(|(i, _)| i.received_at_ms).collect();
        let triggers: Vec<i32> = rows.iter().map(|(i, _)| i.body.trigger).collect();
        tx.execute(
            &sql.insert_envelopes,
            &[
                &node_ids,
                &seqs,
                &bodies,
                &signatures,
                &hashes,
                &created,
                &received,
                &triggers,
                &count(|c| c.pass),
                &count(|c| c.fail),
                &count(|c| c.error),
                &count(|c| c.not_applicable),
                &count(|c| c.waived),
                &count(|c| c.blocking),
            ],
        )
        .map_err(pg("storing envelopes"))?;
    }
    if !deferred.compact.is_empty() {
        let rows = &deferred.compact;
        let node_ids: Vec<&str> = rows.iter().map(|i| i.node_id.as_str()).collect();
        let seqs: Vec<i64> = rows.iter().map(|i| seq_i64(i.body.seq)).collect();
        let created: Vec<i64> = rows.iter().map(|i| i.body.created_at_unix_ms).collect();
        let bodies: Vec<&[u8]> = rows.iter().map(|i| &i.body_bytes[..]).collect();
        let signatures: Vec<&[u8]> = rows.iter().map(|i| i.signature.as_slice()).collect();
        tx.execute(&sql.insert_compact, &[&node_ids, &seqs, &created, &bodies, &signatures])
            .map_err(pg("storing compact attestations"))?;
    }
    let mut days: Vec<(&str, i64, i64, Counts)> = Vec::new();
    let mut heads: Vec<(&str, i64, [u8; 32], i64, Baselined)> = Vec::new();
    for (id, state) in states {
        days.extend(state.days.iter().map(|(day, (seq, c))| (id.as_str(), *day, *seq, *c)));
        if state.advanced
            && let (Some(head), Some(created)) = (state.chain.head, state.chain.last_created_ms)
        {
            heads.push((id.as_str(), seq_i64(head.seq), head.hash, created, state.chain.baseline));
        }
    }
    if !days.is_empty() {
        let col = |f: fn(&Counts) -> i64| -> Vec<i64> { days.iter().map(|d| f(&d.3)).collect() };
        let ids: Vec<&str> = days.iter().map(|d| d.0).collect();
        let day: Vec<i64> = days.iter().map(|d| d.1).collect();
        let seq: Vec<i64> = days.iter().map(|d| d.2).collect();
        tx.execute(
            &sql.upsert_days,
            &[
                &ids,
                &day,
                &seq,
                &col(|c| c.pass),
                &col(|c| c.fail),
                &col(|c| c.error),
                &col(|c| c.not_applicable),
                &col(|c| c.waived),
                &col(|c| c.blocking),
            ],
        )
        .map_err(pg("storing the nodes' days"))?;
    }
    if !heads.is_empty() {
        let ids: Vec<&str> = heads.iter().map(|h| h.0).collect();
        let seqs: Vec<i64> = heads.iter().map(|h| h.1).collect();
        let hashes: Vec<&[u8]> = heads.iter().map(|h| h.2.as_slice()).collect();
        let created: Vec<i64> = heads.iter().map(|h| h.3).collect();
        let baseline_seqs: Vec<Option<i64>> = heads.iter().map(|h| h.4.map(|b| seq_i64(b.seq))).collect();
        let baseline_digests: Vec<Option<&[u8]>> = heads.iter().map(|h| h.4.as_ref().map(|b| &b.digest[..])).collect();
        tx.execute(&sql.advance_heads, &[&ids, &seqs, &hashes, &created, &now_ms, &baseline_seqs, &baseline_digests])
            .map_err(pg("updating the node heads"))?;
    }
    Ok(())
}

/// Lock the nodes of a batch (in id order, so that two replicas' batches
/// never wait on each other in a circle) and read their chains.
fn lock_nodes(
    tx: &mut Transaction<'_>,
    sql: &Statements,
    batch: &[&IngestItem],
) -> Result<HashMap<String, NodeState>, StoreError> {
    let mut ids: Vec<&str> = batch.iter().map(|i| i.node_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut states = HashMap::new();
    for r in tx.query(&sql.lock_nodes, &[&ids]).map_err(pg("locking the nodes of a batch"))? {
        let head_seq: i64 = r.get(2);
        let head = match (u64::try_from(head_seq), hash32(r.get(3))) {
            (Ok(seq), Some(hash)) if seq > 0 => Some(ChainHead { seq, hash }),
            _ => None,
        };
        let indexed = match (hash32(r.get(5)), r.get::<_, Option<bool>>(6), r.get::<_, Option<Vec<i64>>>(7)) {
            (Some(d), Some(full), Some(c)) => counts_from_array(&c).map(|c| (d, full, c)),
            _ => None,
        };
        let baseline = match (r.get::<_, Option<i64>>(8).and_then(|s| u64::try_from(s).ok()), hash32(r.get(9))) {
            (Some(seq), Some(digest)) => Some(Baseline { seq, digest }),
            _ => None,
        };
        let chain =
            NodeChain { revoked: r.get::<_, Option<i64>>(1).is_some(), head, last_created_ms: r.get(4), baseline };
        states.insert(r.get(0), NodeState { chain, indexed, advanced: false, days: HashMap::new() });
    }
    Ok(states)
}

/// Judge and store `batch` in one transaction. An error from any envelope
/// fails the whole transaction (it is rolled back on return): the caller
/// then stores the envelopes one transaction each, so that the error stays
/// with its envelope.
fn ingest_together(
    client: &mut ::postgres::Client,
    sql: &Statements,
    batch: &[&IngestItem],
    failures: &BatchFailures,
    now_ms: i64,
) -> Result<Vec<IngestResult>, StoreError> {
    let mut tx = client.transaction().map_err(pg("starting an ingest transaction"))?;
    let mut states = lock_nodes(&mut tx, sql, batch)?;
    let mut deferred = Deferred::default();
    let mut results = Vec::with_capacity(batch.len());
    for &item in batch {
        let Some(state) = states.get_mut(&item.node_id) else {
            results.push(IngestResult::Refused { reason: "unknown node".into() });
            continue;
        };
        if let Some(r) = failures.precheck(item) {
            results.push(r);
            continue;
        }
        results.push(ingest_one(&mut tx, sql, state, &mut deferred, item, now_ms)?);
    }
    write_deferred(&mut tx, sql, &deferred, &states, now_ms)?;
    tx.commit().map_err(pg("committing an ingest transaction"))?;
    Ok(results)
}

impl Store for PgStore {
    fn create_token(&mut self, token_sha256: &[u8; 32], created_ms: i64, expires_ms: i64) -> Result<(), StoreError> {
        self.client()?
            .execute(
                "INSERT INTO tokens (sha256, created_ms, expires_ms) VALUES ($1, $2, $3)",
                &[&token_sha256.as_slice(), &created_ms, &expires_ms],
            )
            .map_err(pg("creating a token"))?;
        Ok(())
    }

    fn consume_token(&mut self, token_sha256: &[u8; 32], now_ms: i64) -> Result<TokenUse, StoreError> {
        use_token(self.client()?, token_sha256, now_ms)
    }

    fn insert_node(&mut self, node: &NewNode) -> Result<(), StoreError> {
        insert_node(self.client()?, node)
    }

    fn enroll(&mut self, token_sha256: &[u8; 32], now_ms: i64, node: &NewNode) -> Result<TokenUse, StoreError> {
        let mut tx = self.client()?.transaction().map_err(pg("starting an enrollment"))?;
        let verdict = use_token(&mut tx, token_sha256, now_ms)?;
        if verdict == TokenUse::Accepted {
            insert_node(&mut tx, node)?;
        }
        tx.commit().map_err(pg("committing an enrollment"))?;
        Ok(verdict)
    }

    fn revoke_node(&mut self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .client()?
            .execute("UPDATE nodes SET revoked_ms = COALESCE(revoked_ms, $2) WHERE id = $1", &[&id, &now_ms])
            .map_err(pg("revoking a node"))?;
        Ok(n > 0)
    }

    fn ingest(&mut self, batch: &[IngestItem], now_ms: i64) -> Result<Vec<IngestResult>, StoreError> {
        let Live { client, sql } = self.live()?;
        let all: Vec<&IngestItem> = batch.iter().collect();
        let mut failures = BatchFailures::default();
        let error = match ingest_together(client, sql, &all, &failures, now_ms) {
            Ok(results) => return Ok(results),
            Err(e) => e,
        };
        // A lost connection fails every envelope alike: nothing was stored,
        // nothing is acked, the agents resend.
        if client.is_closed() {
            return Err(error);
        }
        tracing::warn!(
            "an ingest transaction of {} envelopes failed ({error}); storing them one transaction each",
            batch.len()
        );
        let mut results = Vec::with_capacity(batch.len());
        for item in &all {
            match ingest_together(client, sql, std::slice::from_ref(item), &failures, now_ms) {
                Ok(mut r) => results.append(&mut r),
                Err(e) if client.is_closed() => return Err(e),
                Err(e) => results.push(failures.failed(item, e.to_string())),
            }
        }
        let events = failures.events(now_ms);
        if !events.is_empty() {
            let recorded = client.transaction().map_err(pg("starting a transaction")).and_then(|mut tx| {
                for e in &events {
                    insert_event(&mut tx, sql, e)?;
                }
                tx.commit().map_err(pg("recording store failures"))
            });
            if let Err(e) = recorded {
                // The envelopes' own transactions are committed: their
                // results stand; the failures are in the log above.
                tracing::error!("recording {} store_failed events failed: {e}", events.len());
            }
        }
        Ok(results)
    }

    fn record_event(&mut self, event: &NodeEvent) -> Result<(), StoreError> {
        let Live { client, sql } = self.live()?;
        insert_event(&mut **client, sql, event)
    }

    fn prune_node(
        &mut self,
        node_id: &str,
        cut: &retention::Cutoffs,
        now_ms: i64,
        limit: usize,
    ) -> Result<retention::PruneSummary, StoreError> {
        let doing = "applying retention to a node";
        let mut tx = self.client()?.transaction().map_err(pg(doing))?;
        // Replicas prune too: one at a time per node.
        if tx.query_opt("SELECT 1 FROM nodes WHERE id = $1 FOR UPDATE", &[&node_id]).map_err(pg(doing))?.is_none() {
            return Ok(retention::PruneSummary::default());
        }
        let mut summary = retention::PruneSummary::default();
        let mut ranges = Vec::new();
        if let Some(before) = cut.expired_before_ms {
            let start: Option<i64> = tx
                .query_one(
                    "SELECT min(seq) FROM envelopes WHERE node_id = $1 AND created_ms >= $2 AND trigger <> $3",
                    &[&node_id, &before, &(Trigger::Gap as i32)],
                )
                .map_err(pg(doing))?
                .get(0);
            let bound = match start {
                Some(s) => s,
                None => {
                    let last: Option<i64> = tx
                        .query_one(
                            "SELECT max(seq) FROM (SELECT seq FROM envelopes WHERE node_id = $1 AND created_ms < $2
                             UNION ALL SELECT seq FROM compact_envelopes WHERE node_id = $1 AND created_ms < $2) AS s",
                            &[&node_id, &before],
                        )
                        .map_err(pg(doing))?
                        .get(0);
                    last.map_or(0, |l| l.saturating_add(1))
                }
            };
            let mut edge = |order: &str| -> Result<Option<retention::AgedBody>, StoreError> {
                let row = tx
                    .query_opt(
                        &format!(
                            "SELECT seq, body FROM (SELECT seq, body FROM envelopes WHERE node_id = $1 AND seq < $2
                             UNION ALL SELECT seq, body FROM compact_envelopes WHERE node_id = $1 AND seq < $2) AS s
                             ORDER BY seq {order} LIMIT 1"
                        ),
                        &[&node_id, &bound],
                    )
                    .map_err(pg(doing))?;
                Ok(row.map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1))))
            };
            if let (Some(first), Some(last)) = (edge("ASC")?, edge("DESC")?) {
                let full = tx
                    .execute("DELETE FROM envelopes WHERE node_id = $1 AND seq < $2", &[&node_id, &bound])
                    .map_err(pg(doing))?;
                let compact = tx
                    .execute("DELETE FROM compact_envelopes WHERE node_id = $1 AND seq < $2", &[&node_id, &bound])
                    .map_err(pg(doing))?;
                summary.envelopes += full;
                summary.compact_envelopes += compact;
                ranges.push(retention::expired_range(&first, &last, full + compact, now_ms));
            }
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = tx
            .query(
                "SELECT seq, created_ms, body FROM compact_envelopes WHERE node_id = $1 ORDER BY seq LIMIT $2",
                &[&node_id, &limit],
            )
            .map_err(pg(doing))?;
        let aged: Vec<retention::AgedBody> = rows
            .iter()
            .take_while(|r| r.get::<_, i64>(1) < cut.compact_before_ms)
            .map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(2)))
            .collect();
        for r in retention::ranges_of(&aged, "compact", now_ms) {
            let n = tx
                .execute(
                    "DELETE FROM compact_envelopes WHERE node_id = $1 AND seq BETWEEN $2 AND $3",
                    &[&node_id, &seq_i64(r.first_seq), &seq_i64(r.last_seq)],
                )
                .map_err(pg(doing))?;
            summary.compact_envelopes += n;
            ranges.push(r);
        }
        for r in &ranges {
            tx.execute(
                "INSERT INTO pruned_ranges (node_id, first_seq, last_seq, count, reason, prev_sha256, last_sha256, pruned_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &node_id,
                    &seq_i64(r.first_seq),
                    &seq_i64(r.last_seq),
                    &seq_i64(r.count),
                    &r.reason,
                    &r.prev_sha256.map(|h| h.to_vec()),
                    &r.last_sha256.map(|h| h.to_vec()),
                    &r.pruned_ms,
                ],
            )
            .map_err(pg("recording a pruned range"))?;
        }
        summary.ranges = ranges.len() as u64;
        tx.commit().map_err(pg(doing))?;
        Ok(summary)
    }

    fn prune_history(&mut self, before_ms: i64) -> Result<retention::PruneSummary, StoreError> {
        let doing = "applying retention to the history";
        let mut tx = self.client()?.transaction().map_err(pg(doing))?;
        let changes = tx.execute("DELETE FROM finding_changes WHERE at_ms < $1", &[&before_ms]).map_err(pg(doing))?;
        let days =
            tx.execute("DELETE FROM node_days WHERE day < $1", &[&before_ms.div_euclid(DAY_MS)]).map_err(pg(doing))?;
        let events = tx.execute("DELETE FROM events WHERE at_ms < $1", &[&before_ms]).map_err(pg(doing))?;
        tx.commit().map_err(pg(doing))?;
        Ok(retention::PruneSummary { finding_changes: changes, node_days: days, events, ..Default::default() })
    }

    fn record_prune_run(&mut self, at_ms: i64, policy: &str, run: &retention::PruneSummary) -> Result<(), StoreError> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.client()?
            .execute(
                "INSERT INTO prune_runs (at_ms, policy, envelopes, compact_envelopes, finding_changes, node_days, events)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &at_ms,
                    &policy,
                    &n(run.envelopes),
                    &n(run.compact_envelopes),
                    &n(run.finding_changes),
                    &n(run.node_days),
                    &n(run.events),
                ],
            )
            .map_err(pg("recording a retention run"))?;
        Ok(())
    }

    fn reclaim(&mut self, full: bool) -> Result<crate::store::Reclaimed, StoreError> {
        // VACUUM cannot run in a transaction block: one statement each.
        let verb = if full { "VACUUM FULL" } else { "VACUUM" };
        for table in ["compact_envelopes", "envelopes", "finding_changes", "node_days", "events"] {
            self.client()?.batch_execute(&format!("{verb} {table}")).map_err(pg("vacuuming"))?;
        }
        Ok(crate::store::Reclaimed {
            how: if full {
                "VACUUM FULL (tables rewritten, space returned to the file system)".into()
            } else {
                "VACUUM (space reusable by new rows; `--vacuum` runs VACUUM FULL)".into()
            },
            ..Default::default()
        })
    }
}

impl EvidenceRead for PgStore {
    fn node(&mut self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let row = self
            .client()?
            .query_opt(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1"), &[&id])
            .map_err(pg("reading a node"))?;
        Ok(row.as_ref().map(node_from_row))
    }

    fn nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = self
            .client()?
            .query(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"), &[])
            .map_err(pg("listing nodes"))?;
        Ok(rows.iter().map(node_from_row).collect())
    }

    fn events(&mut self, node_id: &str) -> Result<Vec<NodeEvent>, StoreError> {
        let rows = self
            .client()?
            .query("SELECT node_id, seq, kind, detail, at_ms FROM events WHERE node_id = $1 ORDER BY id", &[&node_id])
            .map_err(pg("listing events"))?;
        Ok(rows
            .iter()
            .map(|r| NodeEvent {
                node_id: r.get(0),
                seq: r.get::<_, Option<i64>>(1).and_then(|s| u64::try_from(s).ok()),
                kind: r.get(2),
                detail: r.get(3),
                at_ms: r.get(4),
            })
            .collect())
    }

    fn envelopes(&mut self, node_id: &str) -> Result<Vec<StoredEnvelope>, StoreError> {
        let rows = self
            .client()?
            .query(
                "SELECT seq, body, signature FROM envelopes WHERE node_id = $1
                 UNION ALL SELECT seq, body, signature FROM compact_envelopes WHERE node_id = $1
                 ORDER BY seq",
                &[&node_id],
            )
            .map_err(pg("listing envelopes"))?;
        Ok(rows.iter().map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1), r.get(2))).collect())
    }

    fn envelope_span(&mut self, node_id: &str, from_ms: i64, to_ms: i64) -> Result<Option<(u64, u64)>, StoreError> {
        let r = self
            .client()?
            .query_one(
                "SELECT min(lo), max(hi) FROM (
                   SELECT min(seq) AS lo, max(seq) AS hi FROM envelopes
                   WHERE node_id = $1 AND created_ms BETWEEN $2 AND $3
                   UNION ALL
                   SELECT min(seq), max(seq) FROM compact_envelopes
                   WHERE node_id = $1 AND created_ms BETWEEN $2 AND $3) AS spans",
                &[&node_id, &from_ms, &to_ms],
            )
            .map_err(pg("finding the envelopes of a time range"))?;
        let (first, last): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
        Ok(crate::store::seq_span(first, last))
    }

    fn envelopes_in(
        &mut self,
        node_id: &str,
        first_seq: u64,
        last_seq: u64,
        limit: usize,
    ) -> Result<Vec<EvidenceEnvelope>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()?
            .query(
                "SELECT seq, body, signature, created_ms, received_ms FROM envelopes
                 WHERE node_id = $1 AND seq BETWEEN $2 AND $3
                 UNION ALL
                 SELECT seq, body, signature, created_ms, NULL::int8 FROM compact_envelopes
                 WHERE node_id = $1 AND seq BETWEEN $2 AND $3
                 ORDER BY seq LIMIT $4",
                &[&node_id, &seq_i64(first_seq), &seq_i64(last_seq), &limit],
            )
            .map_err(pg("reading envelopes"))?;
        Ok(rows
            .iter()
            .map(|r| EvidenceEnvelope {
                seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                body: r.get(1),
                signature: r.get(2),
                created_ms: r.get(3),
                received_ms: r.get(4),
            })
            .collect())
    }

    fn envelope_hash(&mut self, node_id: &str, seq: u64) -> Result<Option<[u8; 32]>, StoreError> {
        let row = self
            .client()?
            .query_opt(ENVELOPE_HASH, &[&node_id, &seq_i64(seq)])
            .map_err(pg("looking up an envelope hash"))?;
        Ok(row.and_then(|r| hash32(r.get(0))))
    }

    fn pruned_ranges(&mut self, node_id: &str) -> Result<Vec<PrunedRange>, StoreError> {
        let rows = self
            .client()?
            .query(
                "SELECT first_seq, last_seq, count, reason, prev_sha256, last_sha256, pruned_ms FROM pruned_ranges
                 WHERE node_id = $1 ORDER BY first_seq",
                &[&node_id],
            )
            .map_err(pg("listing pruned ranges"))?;
        Ok(rows
            .iter()
            .map(|r| PrunedRange {
                first_seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                last_seq: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                count: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                reason: r.get(3),
                prev_sha256: hash32(r.get(4)),
                last_sha256: hash32(r.get(5)),
                pruned_ms: r.get(6),
            })
            .collect())
    }
}
