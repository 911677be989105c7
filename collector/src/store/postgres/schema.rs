//! The PostgreSQL schema and its versioned migrations.
//!
//! Migrations are applied in order, each once, recorded in
//! `schema_migrations`, all in one transaction that first takes a
//! transaction-scoped advisory lock: replicas that start together apply them
//! one after the other, and the second finds nothing left to do. A database
//! whose schema is newer than this binary knows is refused rather than
//! written with rules it does not follow.

use ::postgres::GenericClient;

use super::pg;
use crate::store::StoreError;

/// The advisory lock key of schema migrations (any constant shared by every
/// replica; "kosmos-migrate" in ASCII, truncated to 63 bits).
const MIGRATION_LOCK: i64 = 0x6b6f_736d_6f73_2d6d;

/// (version, SQL), in order. A released migration never changes: a change
/// of schema is a new version. Ids and hostnames use the "C" collation:
/// bytewise, as SQLite compares them, whatever the database's locale, so
/// reports order nodes the same on both backends.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE tokens (
    sha256 BYTEA PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms BIGINT
);
CREATE TABLE nodes (
    id TEXT COLLATE "C" PRIMARY KEY,
    hostname TEXT COLLATE "C" NOT NULL,
    machine_id TEXT NOT NULL,
    cert_der BYTEA NOT NULL,
    cert_sha256 BYTEA NOT NULL,
    enrolled_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    head_seq BIGINT NOT NULL DEFAULT 0,
    head_hash BYTEA,
    last_created_ms BIGINT,
    last_seen_ms BIGINT,
    os_pretty TEXT,
    kernel TEXT,
    agent_version TEXT,
    profile TEXT,
    -- The last report indexed for the node: the index digest computed from
    -- it, whether it was full, and the node's counts after it. Kept in the
    -- row every replica locks, so that any replica can skip re-indexing an
    -- unchanged report without a cache of its own.
    index_digest BYTEA,
    index_full BOOLEAN,
    index_counts BIGINT[]
);
CREATE TABLE envelopes (
    node_id TEXT COLLATE "C" NOT NULL REFERENCES nodes(id),
    seq BIGINT NOT NULL,
    body BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    body_sha256 BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    trigger INTEGER NOT NULL,
    pass BIGINT, fail BIGINT, error BIGINT, not_applicable BIGINT, waived BIGINT, blocking BIGINT,
    PRIMARY KEY (node_id, seq)
);
CREATE INDEX envelopes_by_node_created ON envelopes (node_id, created_ms, seq);
CREATE TABLE findings_latest (
    node_id TEXT COLLATE "C" NOT NULL REFERENCES nodes(id),
    check_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    family TEXT NOT NULL,
    title TEXT NOT NULL,
    finding_json TEXT NOT NULL,
    changed_ms BIGINT NOT NULL,
    PRIMARY KEY (node_id, check_id)
);
CREATE TABLE node_days (
    node_id TEXT COLLATE "C" NOT NULL REFERENCES nodes(id),
    day BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    pass BIGINT NOT NULL, fail BIGINT NOT NULL, error BIGINT NOT NULL,
    not_applicable BIGINT NOT NULL, waived BIGINT NOT NULL, blocking BIGINT NOT NULL,
    PRIMARY KEY (node_id, day)
);
CREATE TABLE finding_changes (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id TEXT COLLATE "C" NOT NULL REFERENCES nodes(id),
    check_id TEXT COLLATE "C" NOT NULL,
    family TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    old_status TEXT,
    new_status TEXT NOT NULL,
    old_observed TEXT,
    new_observed TEXT
);
CREATE INDEX finding_changes_by_time ON finding_changes (at_ms);
CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX events_by_node ON events (node_id, id);
"#,
    ),
    (
        2,
        // Envelope bodies are gzip already: PostgreSQL's own compression of
        // them (pglz) failed on every row and cost a tenth of the database's
        // CPU under ingest. Stored out of line as they are.
        "ALTER TABLE envelopes ALTER COLUMN body SET STORAGE EXTERNAL;",
    ),
    (
        3,
        // `kosmos-collector store migrate`: where the store was copied from,
        // how far the envelopes' copy went (the source's row id), and when
        // it finished. At most one row. Kept after the copy: provenance.
        "CREATE TABLE store_migration (
             source TEXT NOT NULL,
             started_ms BIGINT NOT NULL,
             envelopes_through_id BIGINT NOT NULL,
             finished_ms BIGINT,
             one_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one_row)
         );",
    ),
    (
        4,
        // Compact attestations, the baseline they refer to, and retention's
        // records (as SQLite's schema version 2 explains).
        r#"
CREATE TABLE compact_envelopes (
    node_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    body BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    PRIMARY KEY (node_id, seq)
);
ALTER TABLE nodes ADD COLUMN baseline_seq BIGINT;
ALTER TABLE nodes ADD COLUMN baseline_digest BYTEA;
CREATE TABLE pruned_ranges (
    node_id TEXT COLLATE "C" NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    count BIGINT NOT NULL,
    reason TEXT NOT NULL,
    prev_sha256 BYTEA,
    last_sha256 BYTEA,
    pruned_ms BIGINT NOT NULL,
    PRIMARY KEY (node_id, first_seq)
);
CREATE TABLE prune_runs (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    policy TEXT NOT NULL,
    envelopes BIGINT NOT NULL,
    compact_envelopes BIGINT NOT NULL,
    finding_changes BIGINT NOT NULL,
    node_days BIGINT NOT NULL,
    events BIGINT NOT NULL
);
"#,
    ),
    (
        5,
        // Notifications (see store::outbox and this backend's outbox.rs).
        // The source rows record their writing transaction: the notifier
        // reads in (tx, id) order only what no running transaction can
        // still add to. Rows from before this version all get the
        // migration's transaction, which is history by the time anything
        // reads it.
        r#"
ALTER TABLE finding_changes ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX finding_changes_by_tx ON finding_changes (tx, id);
ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX events_by_tx ON events (tx, id);
CREATE TABLE notify_cursor (
    source TEXT PRIMARY KEY,
    tx BIGINT NOT NULL,
    id BIGINT NOT NULL
);
CREATE TABLE notify_marks (
    key TEXT COLLATE "C" PRIMARY KEY,
    at_ms BIGINT NOT NULL
);
CREATE TABLE notify_outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    occurred_ms BIGINT NOT NULL,
    next_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_ms BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_ms BIGINT
);
CREATE UNIQUE INDEX notify_outbox_by_key ON notify_outbox (endpoint, key);
CREATE INDEX notify_outbox_pending ON notify_outbox (endpoint, id) WHERE delivered_ms IS NULL;
"#,
    ),
];

/// The newest schema version this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Bring the database to [`latest_version`]; returns the versions applied
/// (none when it was up to date).
pub fn migrate(client: &mut ::postgres::Client) -> Result<Vec<i32>, StoreError> {
    let mut tx = client.transaction().map_err(pg("starting the migration transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(pg("taking the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)",
    )
    .map_err(pg("creating schema_migrations"))?;
    let current = current_version(&mut tx)?;
    if current > latest_version() {
        return Err(StoreError::Corrupt(format!(
            "the database schema is version {current}, newer than this collector knows ({}): upgrade the collector",
            latest_version()
        )));
    }
    let mut applied = Vec::new();
    for &(version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).map_err(pg("applying a schema migration"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)",
            &[&version, &crate::store::now_ms()],
        )
        .map_err(pg("recording a schema migration"))?;
        applied.push(version);
    }
    tx.commit().map_err(pg("committing the schema migrations"))?;
    Ok(applied)
}

/// The schema version of the database (0: none applied).
pub fn current_version(client: &mut impl GenericClient) -> Result<i32, StoreError> {
    let row = client
        .query_one("SELECT COALESCE(max(version), 0) FROM schema_migrations", &[])
        .map_err(pg("reading the schema version"))?;
    Ok(row.get(0))
}
