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

use ::postgres::{GenericClient, Row, Transaction};
use kosmos_proto::chain::ChainHead;
use kosmos_proto::report::{self, IndexedReport};
use kosmos_proto::verdict::Status;
use sha2::{Digest, Sha256};

use super::{Conn, PgSettings, pg, schema};
use crate::store::index::{self, Counts, IndexOp, LatestFinding, NodeDescription, ReportIndex};
use crate::store::judge::{self, Admission, BatchFailures, EventKind, NodeChain, hex};
use crate::store::{
    EvidenceEnvelope, EvidenceRead, IngestItem, IngestResult, NewNode, NodeEvent, NodeRecord, Store, StoreError,
    StoredEnvelope, TokenUse,
};

const DAY_MS: i64 = 86_400_000;

const NODE_COLUMNS: &str =
    "id, hostname, machine_id, cert_der, cert_sha256, enrolled_ms, revoked_ms, head_seq, head_hash, last_seen_ms";

/// The PostgreSQL implementation of [`Store`] and [`EvidenceRead`]: one
/// connection, owned by the writer thread.
pub struct PgStore {
    client: Conn,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
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
        Ok(PgStore { client })
    }
}

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

fn insert_event(tx: &mut impl GenericClient, e: &NodeEvent) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO events (node_id, seq, kind, detail, at_ms) VALUES ($1, $2, $3, $4, $5)",
        &[&e.node_id, &e.seq.map(seq_i64), &e.kind, &e.detail, &e.at_ms],
    )
    .map_err(pg("recording an event"))?;
    Ok(())
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
struct NodeState {
    chain: NodeChain,
    /// The last report indexed for the node: (index digest, full, counts).
    indexed: Option<([u8; 32], bool, Counts)>,
}

/// Index the report of a body, unless it is the report indexed last for
/// the node. Returns the node's counts after it, or None when the report
/// cannot be read (recorded as a `malformed_report` event).
fn index_body(
    tx: &mut Transaction<'_>,
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
    let json = match report::decode(body) {
        Ok(j) => j,
        Err(e) => {
            insert_event(tx, &event(EventKind::MalformedReport, format!("signed report cannot be read: {e}")))?;
            return Ok(None);
        }
    };
    let parts = match IndexedReport::parse(&json) {
        Ok(p) => p,
        Err(e) => {
            insert_event(tx, &event(EventKind::MalformedReport, format!("signed report is not a valid report: {e}")))?;
            return Ok(None);
        }
    };
    let digest = parts.digest();
    let parsed = match ReportIndex::from_parts(parts) {
        Ok(r) => r,
        Err(e) => {
            insert_event(tx, &event(EventKind::MalformedReport, format!("signed report is not a valid report: {e}")))?;
            return Ok(None);
        }
    };
    if !body.report_index_sha256.is_empty() && body.report_index_sha256.as_slice() != digest {
        insert_event(
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
    let mut latest: HashMap<String, LatestFinding> = HashMap::new();
    for r in tx
        .query(
            "SELECT check_id, finding_json, status, severity FROM findings_latest WHERE node_id = $1",
            &[&item.node_id],
        )
        .map_err(pg("loading findings"))?
    {
        let (check, json, status, severity): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if let Some(f) = LatestFinding::of_stored(&json, &status, &severity) {
            latest.insert(check, f);
        }
    }
    let plan = index::plan(&mut latest, &parsed, full, |check| -> Result<_, StoreError> {
        let stored: String = tx
            .query_one(
                "SELECT finding_json FROM findings_latest WHERE node_id = $1 AND check_id = $2",
                &[&item.node_id, &check],
            )
            .map_err(pg("reading a stored finding"))?
            .get(0);
        Ok(index::observed_of_stored(&stored))
    })?;
    let seq = seq_i64(body.seq);
    for op in &plan.ops {
        match op {
            IndexOp::Malformed { detail } => insert_event(
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
                tx.execute(
                    "INSERT INTO finding_changes (node_id, check_id, family, seq, at_ms, old_status, new_status,
                                                  old_observed, new_observed)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &item.node_id,
                        &c.check_id.as_ref(),
                        &c.family.as_ref(),
                        &seq,
                        &body.created_at_unix_ms,
                        &c.old_status.map(Status::as_str),
                        &c.new_status.as_str(),
                        &c.old_observed,
                        &c.new_observed,
                    ],
                )
                .map_err(pg("recording a finding change"))?;
            }
            IndexOp::Latest(f) => {
                tx.execute(
                    "INSERT INTO findings_latest (node_id, check_id, seq, status, severity, family, title, finding_json, changed_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (node_id, check_id) DO UPDATE SET seq = excluded.seq, status = excluded.status,
                       severity = excluded.severity, family = excluded.family, title = excluded.title,
                       finding_json = excluded.finding_json, changed_ms = excluded.changed_ms",
                    &[
                        &item.node_id,
                        &f.check_id.as_ref(),
                        &seq,
                        &f.status.as_str(),
                        &f.severity.as_ref(),
                        &f.family.as_ref(),
                        &f.title.as_ref(),
                        &f.finding_json,
                        &body.created_at_unix_ms,
                    ],
                )
                .map_err(pg("storing a finding"))?;
            }
            IndexOp::Forget { check_id } => {
                tx.execute(
                    "DELETE FROM findings_latest WHERE node_id = $1 AND check_id = $2",
                    &[&item.node_id, check_id],
                )
                .map_err(pg("forgetting a finding"))?;
            }
        }
    }
    let d = NodeDescription::of(&parsed);
    tx.execute(
        "UPDATE nodes SET os_pretty = COALESCE($2, os_pretty), kernel = COALESCE($3, kernel),
                          agent_version = COALESCE($4, agent_version), profile = COALESCE($5, profile),
                          hostname = COALESCE($6, hostname),
                          index_digest = $7, index_full = $8, index_counts = $9
         WHERE id = $1",
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

/// Judge and store one envelope of a locked node.
fn ingest_one(
    tx: &mut Transaction<'_>,
    state: &mut NodeState,
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
    let judgement = {
        let chain = state.chain;
        judge::judge(&chain, body, &hash, now_ms, |seq| -> Result<Option<[u8; 32]>, StoreError> {
            let row = tx
                .query_opt(
                    "SELECT body_sha256 FROM envelopes WHERE node_id = $1 AND seq = $2",
                    &[&item.node_id, &seq_i64(seq)],
                )
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
        insert_event(tx, &event(e.kind, e.detail.clone()))?;
    }
    match judgement.admission {
        Admission::Store => {}
        Admission::AckHead => return Ok(IngestResult::Acked { head_seq: state.chain.head_seq() }),
        Admission::Refuse { reason } => return Ok(IngestResult::Refused { reason }),
    }
    let counts = if body.report_json.is_empty() { None } else { index_body(tx, state, item, &event)? };
    let seq = seq_i64(body.seq);
    tx.execute(
        "INSERT INTO envelopes (node_id, seq, body, signature, body_sha256, created_ms, received_ms, trigger,
                                pass, fail, error, not_applicable, waived, blocking)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            &item.node_id,
            &seq,
            &&item.body_bytes[..],
            &item.signature,
            &hash.as_slice(),
            &body.created_at_unix_ms,
            &item.received_at_ms,
            &body.trigger,
            &counts.map(|c| c.pass),
            &counts.map(|c| c.fail),
            &counts.map(|c| c.error),
            &counts.map(|c| c.not_applicable),
            &counts.map(|c| c.waived),
            &counts.map(|c| c.blocking),
        ],
    )
    .map_err(pg("storing an envelope"))?;
    if let Some(c) = counts {
        let day = body.created_at_unix_ms.div_euclid(DAY_MS);
        tx.execute(
            "INSERT INTO node_days (node_id, day, seq, pass, fail, error, not_applicable, waived, blocking)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (node_id, day) DO UPDATE SET seq = excluded.seq, pass = excluded.pass,
               fail = excluded.fail, error = excluded.error, not_applicable = excluded.not_applicable,
               waived = excluded.waived, blocking = excluded.blocking
             WHERE excluded.seq >= node_days.seq",
            &[&item.node_id, &day, &seq, &c.pass, &c.fail, &c.error, &c.not_applicable, &c.waived, &c.blocking],
        )
        .map_err(pg("storing the node's day"))?;
    }
    tx.execute(
        "UPDATE nodes SET head_seq = $2, head_hash = $3, last_created_ms = $4, last_seen_ms = $5 WHERE id = $1",
        &[&item.node_id, &seq, &hash.as_slice(), &body.created_at_unix_ms, &now_ms],
    )
    .map_err(pg("updating the node head"))?;
    state.chain = state.chain.advanced(body, hash);
    Ok(IngestResult::Acked { head_seq: body.seq })
}

impl Store for PgStore {
    fn create_token(&mut self, token_sha256: &[u8; 32], created_ms: i64, expires_ms: i64) -> Result<(), StoreError> {
        self.client
            .execute(
                "INSERT INTO tokens (sha256, created_ms, expires_ms) VALUES ($1, $2, $3)",
                &[&token_sha256.as_slice(), &created_ms, &expires_ms],
            )
            .map_err(pg("creating a token"))?;
        Ok(())
    }

    fn consume_token(&mut self, token_sha256: &[u8; 32], now_ms: i64) -> Result<TokenUse, StoreError> {
        use_token(&mut *self.client, token_sha256, now_ms)
    }

    fn insert_node(&mut self, node: &NewNode) -> Result<(), StoreError> {
        insert_node(&mut *self.client, node)
    }

    fn enroll(&mut self, token_sha256: &[u8; 32], now_ms: i64, node: &NewNode) -> Result<TokenUse, StoreError> {
        let mut tx = self.client.transaction().map_err(pg("starting an enrollment"))?;
        let verdict = use_token(&mut tx, token_sha256, now_ms)?;
        if verdict == TokenUse::Accepted {
            insert_node(&mut tx, node)?;
        }
        tx.commit().map_err(pg("committing an enrollment"))?;
        Ok(verdict)
    }

    fn revoke_node(&mut self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .client
            .execute("UPDATE nodes SET revoked_ms = COALESCE(revoked_ms, $2) WHERE id = $1", &[&id, &now_ms])
            .map_err(pg("revoking a node"))?;
        Ok(n > 0)
    }

    fn ingest(&mut self, batch: &[IngestItem], now_ms: i64) -> Result<Vec<IngestResult>, StoreError> {
        let mut tx = self.client.transaction().map_err(pg("starting an ingest transaction"))?;
        // Lock every node of the batch, in id order, before judging.
        let mut ids: Vec<&str> = batch.iter().map(|i| i.node_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut states: HashMap<String, NodeState> = HashMap::new();
        for r in tx
            .query(
                "SELECT id, revoked_ms, head_seq, head_hash, last_created_ms, index_digest, index_full, index_counts
                 FROM nodes WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&ids],
            )
            .map_err(pg("locking the nodes of a batch"))?
        {
            let head_seq: i64 = r.get(2);
            let head = match (u64::try_from(head_seq), hash32(r.get(3))) {
                (Ok(seq), Some(hash)) if seq > 0 => Some(ChainHead { seq, hash }),
                _ => None,
            };
            let indexed = match (hash32(r.get(5)), r.get::<_, Option<bool>>(6), r.get::<_, Option<Vec<i64>>>(7)) {
                (Some(d), Some(full), Some(c)) => counts_from_array(&c).map(|c| (d, full, c)),
                _ => None,
            };
            let chain = NodeChain { revoked: r.get::<_, Option<i64>>(1).is_some(), head, last_created_ms: r.get(4) };
            states.insert(r.get(0), NodeState { chain, indexed });
        }
        let mut failures = BatchFailures::default();
        let mut results = Vec::with_capacity(batch.len());
        for item in batch {
            let Some(state) = states.get_mut(&item.node_id) else {
                results.push(IngestResult::Refused { reason: "unknown node".into() });
                continue;
            };
            if let Some(r) = failures.precheck(item) {
                results.push(r);
                continue;
            }
            // One envelope, one savepoint: an error undoes this envelope's
            // rows only, never another node's in the same transaction.
            let saved = (state.chain, state.indexed);
            let mut sp = tx.savepoint("envelope").map_err(pg("starting an envelope savepoint"))?;
            match ingest_one(&mut sp, state, item, now_ms) {
                Ok(r) => {
                    sp.commit().map_err(pg("releasing an envelope savepoint"))?;
                    results.push(r);
                }
                Err(e) => {
                    drop(sp);
                    (state.chain, state.indexed) = saved;
                    results.push(failures.failed(item, e.to_string()));
                }
            }
        }
        for e in failures.events(now_ms) {
            insert_event(&mut tx, &e)?;
        }
        tx.commit().map_err(pg("committing an ingest transaction"))?;
        Ok(results)
    }

    fn record_event(&mut self, event: &NodeEvent) -> Result<(), StoreError> {
        insert_event(&mut *self.client, event)
    }
}

impl EvidenceRead for PgStore {
    fn node(&mut self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let row = self
            .client
            .query_opt(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1"), &[&id])
            .map_err(pg("reading a node"))?;
        Ok(row.as_ref().map(node_from_row))
    }

    fn nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = self
            .client
            .query(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"), &[])
            .map_err(pg("listing nodes"))?;
        Ok(rows.iter().map(node_from_row).collect())
    }

    fn events(&mut self, node_id: &str) -> Result<Vec<NodeEvent>, StoreError> {
        let rows = self
            .client
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
            .client
            .query("SELECT seq, body, signature FROM envelopes WHERE node_id = $1 ORDER BY seq", &[&node_id])
            .map_err(pg("listing envelopes"))?;
        Ok(rows.iter().map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1), r.get(2))).collect())
    }

    fn envelope_span(&mut self, node_id: &str, from_ms: i64, to_ms: i64) -> Result<Option<(u64, u64)>, StoreError> {
        let r = self
            .client
            .query_one(
                "SELECT min(seq), max(seq) FROM envelopes WHERE node_id = $1 AND created_ms BETWEEN $2 AND $3",
                &[&node_id, &from_ms, &to_ms],
            )
            .map_err(pg("finding the envelopes of a time range"))?;
        let (first, last): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
        Ok(match (first.map(u64::try_from), last.map(u64::try_from)) {
            (Some(Ok(f)), Some(Ok(l))) => Some((f, l)),
            _ => None,
        })
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
            .client
            .query(
                "SELECT seq, body, signature, created_ms, received_ms FROM envelopes
                 WHERE node_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq LIMIT $4",
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
            .client
            .query_opt("SELECT body_sha256 FROM envelopes WHERE node_id = $1 AND seq = $2", &[&node_id, &seq_i64(seq)])
            .map_err(pg("looking up an envelope hash"))?;
        Ok(row.and_then(|r| hash32(r.get(0))))
    }
}
