//! The SQLite schema and its versioned migrations.
//!
//! Migrations are applied in order, each once, recorded in
//! `schema_migrations`, in one `BEGIN IMMEDIATE` transaction: it takes the
//! database's write lock first, so two collectors opening the same file
//! apply them one after the other, and the second finds nothing left to do.
//! A database whose schema is newer than this binary knows is refused rather
//! than written with rules it does not follow.
//!
//! Version 1 is the schema as it stood when migrations became versioned. It
//! is written so that it also brings a database created by an earlier build
//! (which has no `schema_migrations`) to that state: its tables are created
//! only when missing, and the columns added over time only when absent.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior, params};

use crate::store::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    sha256 BLOB PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER
);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    cert_der BLOB NOT NULL,
    cert_sha256 BLOB NOT NULL,
    enrolled_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    head_seq INTEGER NOT NULL DEFAULT 0,
    head_hash BLOB,
    last_created_ms INTEGER,
    last_seen_ms INTEGER,
    os_pretty TEXT,
    kernel TEXT,
    agent_version TEXT,
    profile TEXT
);
-- A rowid table: envelopes are appended in arrival order and their large
-- bodies never move; (node_id, seq) is enforced by a unique index. (A
-- WITHOUT ROWID table clustered on (node_id, seq) rewrites pages of 100 KiB
-- rows on every insert between two nodes.)
CREATE TABLE IF NOT EXISTS envelopes (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    signature BLOB NOT NULL,
    body_sha256 BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    trigger INTEGER NOT NULL,
    pass INTEGER, fail INTEGER, error INTEGER, not_applicable INTEGER, waived INTEGER,
    blocking INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS envelopes_by_node_seq ON envelopes(node_id, seq);
CREATE TABLE IF NOT EXISTS findings_latest (
    node_id TEXT NOT NULL,
    check_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    family TEXT NOT NULL,
    title TEXT NOT NULL,
    finding_json TEXT NOT NULL,
    changed_ms INTEGER NOT NULL,
    PRIMARY KEY (node_id, check_id)
) WITHOUT ROWID;
-- Reports read findings_latest in key order (one sequential pass); an
-- index an earlier build created for them is not needed.
DROP INDEX IF EXISTS findings_by_status;
-- One row per node and UTC day: the node's standing after its last report
-- of that day (seq: the report that set it; later reports that leave it as
-- it was are not written). The compliance trend reads this, not the
-- envelopes.
CREATE TABLE IF NOT EXISTS node_days (
    node_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    pass INTEGER NOT NULL, fail INTEGER NOT NULL, error INTEGER NOT NULL,
    not_applicable INTEGER NOT NULL, waived INTEGER NOT NULL,
    blocking INTEGER NOT NULL,
    PRIMARY KEY (node_id, day)
) WITHOUT ROWID;
-- A finding whose status or observed value changed between two reports of
-- a node: the drift timeline.
CREATE TABLE IF NOT EXISTS finding_changes (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    check_id TEXT NOT NULL,
    family TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    old_status TEXT,
    new_status TEXT NOT NULL,
    old_observed TEXT,
    new_observed TEXT
);
CREATE INDEX IF NOT EXISTS finding_changes_by_time ON finding_changes(at_ms);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    seq INTEGER,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_node ON events(node_id, id);
";

/// (table, column, type) added to the schema after its first release.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("nodes", "os_pretty", "TEXT"),
    ("nodes", "kernel", "TEXT"),
    ("nodes", "agent_version", "TEXT"),
    ("nodes", "profile", "TEXT"),
    ("envelopes", "blocking", "INTEGER"),
];

/// The index evidence exports select by: the node's creation times, with
/// the seq, so [`crate::store::EvidenceRead::envelope_span`] never reads a body (reading a column
/// stored after a large body walks its overflow pages).
const EVIDENCE_SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS envelopes_by_node_created ON envelopes(node_id, created_ms, seq);
";

/// One migration: a version and the step that applies it.
type Migration = (i32, fn(&Connection) -> rusqlite::Result<()>);

/// In order. A released migration never changes: a change of schema is a
/// new version.
const MIGRATIONS: &[Migration] = &[(1, schema_v1), (2, schema_v2), (3, schema_v3)];

/// Version 2: compact attestations, the baseline they refer to, and
/// retention's records.
const SCHEMA_V2: &str = "
-- Compact attestations (a round that found what the node's latest full
-- report found), verbatim. They are a couple of hundred bytes and most of a
-- healthy fleet's rounds, so they get a table of their own, clustered on
-- (node_id, seq), without the per-envelope columns and indexes of
-- `envelopes`: a row costs about as much as its signed bytes. The chain
-- hash of a body is computed when it is needed, not stored.
CREATE TABLE compact_envelopes (
    node_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (node_id, seq)
) WITHOUT ROWID;
-- The report compact attestations may refer to (see judge::NodeChain).
ALTER TABLE nodes ADD COLUMN baseline_seq INTEGER;
ALTER TABLE nodes ADD COLUMN baseline_digest BLOB;
-- What retention removed, per node and run of consecutive seqs: the hash
-- the first removed body chained on and the hash of the last one, so that
-- the chain across the hole can still be checked against what was there.
CREATE TABLE pruned_ranges (
    node_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    reason TEXT NOT NULL,
    prev_sha256 BLOB,
    last_sha256 BLOB,
    pruned_ms INTEGER NOT NULL,
    PRIMARY KEY (node_id, first_seq)
) WITHOUT ROWID;
-- One row per retention run that removed anything.
CREATE TABLE prune_runs (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    policy TEXT NOT NULL,
    envelopes INTEGER NOT NULL,
    compact_envelopes INTEGER NOT NULL,
    finding_changes INTEGER NOT NULL,
    node_days INTEGER NOT NULL,
    events INTEGER NOT NULL
);
";

fn schema_v2(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA_V2)
}

const SCHEMA_V3: &str = "
-- Notifications (see store::outbox): how far the notifier has read each
-- source table (finding_changes, events),
CREATE TABLE notify_cursor (
    source TEXT PRIMARY KEY,
    tx INTEGER NOT NULL,
    id INTEGER NOT NULL
);
-- the states already announced (a node stale, an expiry warning sent),
CREATE TABLE notify_marks (
    key TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- and the durable outbox: one row per message and endpoint, delivered
-- oldest first. AUTOINCREMENT: ids are never reused, so their order stays
-- the order of enqueueing after old rows are deleted.
CREATE TABLE notify_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    occurred_ms INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_ms INTEGER
);
CREATE UNIQUE INDEX notify_outbox_by_key ON notify_outbox(endpoint, key);
CREATE INDEX notify_outbox_pending ON notify_outbox(endpoint, id) WHERE delivered_ms IS NULL;
";

fn schema_v3(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA_V3)
}

/// The newest schema version this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

fn schema_v1(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    for (table, column, decl) in ADDED_COLUMNS {
        let present = conn
            .prepare(&format!("PRAGMA table_info({table})"))?
            .query_map([], |r| r.get::<_, String>(1))?
            .filter_map(Result::ok)
            .any(|c| c == *column);
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    conn.execute_batch(EVIDENCE_SCHEMA)
}

/// Bring the database at `path` (open as `conn`) to [`latest_version`];
/// returns the versions applied (none when it was up to date).
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<Vec<i32>, StoreError> {
    let failed = |source: rusqlite::Error| StoreError::Open { path: path.display().to_string(), source: source.into() };
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(failed)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)",
    )
    .map_err(failed)?;
    let current = current_version(&tx).map_err(failed)?;
    if current > latest_version() {
        return Err(StoreError::Corrupt(format!(
            "{}: the database schema is version {current}, newer than this collector knows ({}): upgrade the collector",
            path.display(),
            latest_version()
        )));
    }
    let mut applied = Vec::new();
    for &(version, step) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        step(&tx).map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)",
            params![version, crate::store::now_ms()],
        )
        .map_err(failed)?;
        applied.push(version);
    }
    tx.commit().map_err(failed)?;
    Ok(applied)
}

/// The schema version of the database (0: none recorded).
pub fn current_version(conn: &Connection) -> rusqlite::Result<i32> {
    conn.query_row("SELECT COALESCE(max(version), 0) FROM schema_migrations", [], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn columns(conn: &Connection, table: &str) -> Vec<String> {
        conn.prepare(&format!("PRAGMA table_info({table})"))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(1))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_new_database_gets_every_migration_once() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c.db");
        let mut conn = Connection::open(&path).unwrap();
        assert_eq!(migrate(&mut conn, &path).unwrap(), (1..=latest_version()).collect::<Vec<_>>());
        assert!(migrate(&mut conn, &path).unwrap().is_empty());
        assert_eq!(current_version(&conn).unwrap(), latest_version());
        assert!(columns(&conn, "envelopes").contains(&"blocking".to_string()));
    }

    #[test]
    fn a_database_from_before_versioning_is_brought_to_version_one() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("old.db");
        let mut conn = Connection::open(&path).unwrap();
        // The first release's tables, without the columns added since, and
        // a node in them.
        conn.execute_batch(
            "CREATE TABLE nodes (id TEXT PRIMARY KEY, hostname TEXT NOT NULL, machine_id TEXT NOT NULL,
                 cert_der BLOB NOT NULL, cert_sha256 BLOB NOT NULL, enrolled_ms INTEGER NOT NULL,
                 revoked_ms INTEGER, head_seq INTEGER NOT NULL DEFAULT 0, head_hash BLOB,
                 last_created_ms INTEGER, last_seen_ms INTEGER);
             INSERT INTO nodes (id, hostname, machine_id, cert_der, cert_sha256, enrolled_ms)
                 VALUES ('n1', 'h', 'm', x'01', x'02', 5);
             CREATE TABLE envelopes (id INTEGER PRIMARY KEY, node_id TEXT NOT NULL, seq INTEGER NOT NULL,
                 body BLOB NOT NULL, signature BLOB NOT NULL, body_sha256 BLOB NOT NULL,
                 created_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL, trigger INTEGER NOT NULL,
                 pass INTEGER, fail INTEGER, error INTEGER, not_applicable INTEGER, waived INTEGER);",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, &path).unwrap(), (1..=latest_version()).collect::<Vec<_>>());
        for c in ["os_pretty", "kernel", "agent_version", "profile"] {
            assert!(columns(&conn, "nodes").contains(&c.to_string()), "nodes.{c}");
        }
        assert!(columns(&conn, "envelopes").contains(&"blocking".to_string()));
        let kept: String = conn.query_row("SELECT hostname FROM nodes WHERE id = 'n1'", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, "h", "the data is kept");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("new.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        conn.execute("INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, 0)", [latest_version() + 1])
            .unwrap();
        let e = migrate(&mut conn, &path).unwrap_err().to_string();
        assert!(e.contains("newer than this collector knows") && e.contains("new.db"), "{e}");
    }

    #[test]
    fn two_connections_migrating_at_once_apply_each_version_once() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("race.db");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut conn = Connection::open(&path).unwrap();
                    conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                    barrier.wait();
                    migrate(&mut conn, &path).unwrap()
                })
            })
            .collect();
        let mut applied: Vec<Vec<i32>> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        applied.sort();
        assert_eq!(applied, [vec![], (1..=latest_version()).collect::<Vec<_>>()]);
    }
}
