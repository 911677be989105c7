//! Builds a [`FleetReport`] from the rows a store gives ([`FleetRows`]):
//! the aggregation is written once here, and each backend answers the
//! trait's few queries with its own SQL (SQLite: [`SqliteFleetReader`];
//! PostgreSQL: `store::postgres::fleet`).
//!
//! The connection is read-only (WAL lets it run beside the writer). Counts
//! come from one scan of the narrow `findings_by_status` index, aggregated
//! here; only the findings a node's section shows are read in full. Drift
//! comes from `finding_changes`, the trend from `node_days`, integrity from
//! `events`: none of them reads the envelopes themselves, so the cost does
//! not grow with the retained history of raw attestations.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kosmos_proto::verdict::{self, Severity, Status};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Deserialize;

use super::srm::{self, AREAS};
use super::{
    CheckReport, DRIFT_FAMILIES, Detail, DriftEntry, FleetReport, INTEGRITY_EVENTS_SHOWN, IntegrityEvent, NodeFinding,
    NodeIntegrity, NodeReport, NodeState, Options, Reference, SCHEMA, SEVERITIES, Settings, SrmArea, StatusCounts,
    Summary, TrendDay, WAIVER_SOON_DAYS, WaiverEntry, rfc3339, round1,
};
use crate::store::sqlite::sql;
use crate::store::{FleetRead, StoreError};

const DAY_MS: i64 = 86_400_000;

/// One enrolled node, as the fleet report lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub hostname: String,
    pub enrolled_ms: i64,
    pub revoked_ms: Option<i64>,
    pub head_seq: i64,
    pub last_created_ms: Option<i64>,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub agent_version: Option<String>,
    pub profile: Option<String>,
    /// The node's client certificate (DER), for its expiry.
    pub cert_der: Vec<u8>,
    /// SHA-256 of the body at `head_seq` (the chain head).
    pub head_hash: Option<Vec<u8>>,
}

/// One row of the latest findings, as the report scans them. Each cell is
/// decoded when asked for: most rows need only the first three (the
/// finding's JSON is read only for the findings a report shows).
pub trait FindingCells {
    fn node_id(&self) -> Result<&str, StoreError>;
    fn check_id(&self) -> Result<&str, StoreError>;
    fn status(&self) -> Result<&str, StoreError>;
    fn severity(&self) -> Result<&str, StoreError>;
    fn family(&self) -> Result<&str, StoreError>;
    fn seq(&self) -> Result<i64, StoreError>;
    fn finding_json(&self) -> Result<&str, StoreError>;
}

/// One entry of the drift timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftRow {
    pub at_ms: i64,
    pub node_id: String,
    pub check_id: String,
    pub family: String,
    pub seq: i64,
    pub old_status: Option<String>,
    pub new_status: String,
    pub old_observed: Option<String>,
    pub new_observed: Option<String>,
}

/// One recorded event of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub at_ms: i64,
    pub kind: String,
    pub seq: Option<i64>,
    pub detail: String,
}

/// The fleet's standing on one UTC day (from `node_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRow {
    pub day: i64,
    /// Nodes with a row that day.
    pub reporting: i64,
    /// Of those, the ones without a blocking finding.
    pub compliant: i64,
    pub pass: i64,
    /// pass + fail + error.
    pub decided: i64,
}

/// The rows a fleet report is built from. Each backend answers these with
/// its own SQL; [`build`] does the rest, once for all backends. Node ids
/// and hostnames order bytewise (as SQLite's BINARY collation does), so the
/// report is the same whichever store it comes from.
pub trait FleetRows {
    /// Every node, ordered by hostname, then id.
    fn nodes(&mut self) -> Result<Vec<NodeRow>, StoreError>;
    /// The id in the middle of the node ids (the split of a parallel scan);
    /// None without nodes.
    fn median_node(&mut self) -> Result<Option<String>, StoreError>;
    /// Another reader of the same store, for the second half of a parallel
    /// scan; None when the backend cannot open one.
    fn second_reader(&self) -> Result<Option<Box<dyn FleetRows + Send>>, StoreError>;
    /// The latest findings of the nodes with `from <= node_id < to`, grouped
    /// by node, each passed to `each`. `detail` says whose `finding_json`
    /// will be asked for (a backend that sends rows over the network leaves
    /// the others out).
    fn scan_findings(
        &mut self,
        from: Option<&str>,
        to: Option<&str>,
        detail: Detail,
        each: &mut dyn FnMut(&dyn FindingCells) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// (title, finding JSON) of one stored finding.
    fn sample_finding(&mut self, node_id: &str, check_id: &str) -> Result<(String, String), StoreError>;
    /// Changes of the given families since `since_ms`, newest first.
    fn drift(&mut self, since_ms: i64, families: &[&str]) -> Result<Vec<DriftRow>, StoreError>;
    /// (node, kind, count) of the events since `since_ms`.
    fn event_counts(&mut self, since_ms: i64) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// A node's most recent events since `since_ms`, newest first, at most `limit`.
    fn recent_events(&mut self, node_id: &str, since_ms: i64, limit: i64) -> Result<Vec<EventRow>, StoreError>;
    /// The fleet's days from `since_day` on, in order.
    fn trend(&mut self, since_day: i64) -> Result<Vec<DayRow>, StoreError>;
    /// Every latest finding of one node, unsorted.
    fn findings_of(&mut self, node_id: &str) -> Result<Vec<NodeFinding>, StoreError>;
}

/// Every [`FleetRows`] is a [`FleetRead`].
pub(crate) fn fleet_report(src: &mut dyn FleetRows, opts: &Options) -> Result<FleetReport, StoreError> {
    build(src, opts)
}

/// Every latest finding of one node, most urgent first.
pub(crate) fn findings_of_node(src: &mut dyn FleetRows, node_id: &str) -> Result<Vec<NodeFinding>, StoreError> {
    node_findings(src, node_id)
}

/// The SQLite store's [`FleetRead`]: one read-only connection.
#[derive(Debug)]
pub struct SqliteFleetReader {
    conn: Connection,
}

impl SqliteFleetReader {
    /// Open the database at `path` read-only.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(SqliteFleetReader { conn: open(path)? })
    }
}

impl FleetRead for SqliteFleetReader {
    fn fleet_report(&mut self, opts: &Options) -> Result<FleetReport, StoreError> {
        build(self, opts)
    }

    fn node_findings(&mut self, node_id: &str) -> Result<Vec<NodeFinding>, StoreError> {
        node_findings(self, node_id)
    }

    fn change_token(&mut self) -> Result<i64, StoreError> {
        // SQLite's own counter: it changes when another connection commits,
        // and this reader never writes.
        self.conn.query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(sql("reading the data version"))
    }

    fn watched_findings(&mut self) -> Result<Vec<crate::store::outbox::WatchedFinding>, StoreError> {
        let doing = "reading the findings the expiry scan watches";
        let mut stmt = self.conn.prepare(crate::store::outbox::WATCHED_FINDINGS).map_err(sql(doing))?;
        stmt.query_map([], |r| {
            Ok(crate::store::outbox::WatchedFinding {
                node_id: r.get(0)?,
                hostname: r.get(1)?,
                check_id: r.get(2)?,
                status: r.get(3)?,
                severity: r.get(4)?,
                title: r.get(5)?,
                finding_json: r.get(6)?,
            })
        })
        .map_err(sql(doing))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql(doing))
    }
}

/// Open the store read-only.
fn open(path: &Path) -> Result<Connection, StoreError> {
    let open_err =
        |source: rusqlite::Error| StoreError::Open { path: path.display().to_string(), source: source.into() };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(open_err)?;
    Ok(conn)
}

/// Column `i` of `r` as borrowed text.
fn text_at<'r>(r: &'r rusqlite::Row<'_>, i: usize, doing: &'static str) -> Result<&'r str, StoreError> {
    r.get_ref(i).and_then(|v| v.as_str().map_err(rusqlite::Error::from)).map_err(sql(doing))
}

/// A row of `findings_latest` from SQLite.
struct SqliteCells<'a, 'b>(&'a rusqlite::Row<'b>);

const SCAN: &str = "reading the latest findings";

impl FindingCells for SqliteCells<'_, '_> {
    fn node_id(&self) -> Result<&str, StoreError> {
        text_at(self.0, 0, SCAN)
    }
    fn check_id(&self) -> Result<&str, StoreError> {
        text_at(self.0, 1, SCAN)
    }
    fn status(&self) -> Result<&str, StoreError> {
        text_at(self.0, 2, SCAN)
    }
    fn severity(&self) -> Result<&str, StoreError> {
        text_at(self.0, 3, SCAN)
    }
    fn family(&self) -> Result<&str, StoreError> {
        text_at(self.0, 4, SCAN)
    }
    fn seq(&self) -> Result<i64, StoreError> {
        self.0.get(5).map_err(sql(SCAN))
    }
    fn finding_json(&self) -> Result<&str, StoreError> {
        text_at(self.0, 6, SCAN)
    }
}

impl FleetRows for SqliteFleetReader {
    fn nodes(&mut self) -> Result<Vec<NodeRow>, StoreError> {
        let doing = "listing nodes";
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, hostname, enrolled_ms, revoked_ms, head_seq, last_created_ms, os_pretty, kernel,
                        agent_version, profile, cert_der, head_hash
                 FROM nodes ORDER BY hostname, id",
            )
            .map_err(sql(doing))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(NodeRow {
                    id: r.get(0)?,
                    hostname: r.get(1)?,
                    enrolled_ms: r.get(2)?,
                    revoked_ms: r.get(3)?,
                    head_seq: r.get(4)?,
                    last_created_ms: r.get(5)?,
                    os: r.get(6)?,
                    kernel: r.get(7)?,
                    agent_version: r.get(8)?,
                    profile: r.get(9)?,
                    cert_der: r.get(10)?,
                    head_hash: r.get(11)?,
                })
            })
            .map_err(sql(doing))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql(doing))
    }

    fn median_node(&mut self) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT id FROM nodes ORDER BY id LIMIT 1 OFFSET (SELECT COUNT(*) / 2 FROM nodes)", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("splitting the node range"))
    }

    fn second_reader(&self) -> Result<Option<Box<dyn FleetRows + Send>>, StoreError> {
        match self.conn.path() {
            Some(path) if !path.is_empty() => {
                Ok(Some(Box::new(SqliteFleetReader { conn: open(&PathBuf::from(path))? })))
            }
            _ => Ok(None),
        }
    }

    fn scan_findings(
        &mut self,
        from: Option<&str>,
        to: Option<&str>,
        _detail: Detail,
        each: &mut dyn FnMut(&dyn FindingCells) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let doing = "reading the latest findings";
        // Explicit bounds (not `?1 IS NULL OR …`), so that SQLite reads only
        // the key range instead of scanning the whole table and filtering.
        let base = "SELECT node_id, check_id, status, severity, family, seq, finding_json FROM findings_latest";
        let (query, bounds): (String, Vec<&str>) = match (from, to) {
            (Some(f), Some(t)) => (format!("{base} WHERE node_id >= ?1 AND node_id < ?2"), vec![f, t]),
            (Some(f), None) => (format!("{base} WHERE node_id >= ?1"), vec![f]),
            (None, Some(t)) => (format!("{base} WHERE node_id < ?1"), vec![t]),
            (None, None) => (base.to_string(), vec![]),
        };
        let mut stmt = self.conn.prepare(&query).map_err(sql(doing))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(bounds)).map_err(sql(doing))?;
        while let Some(r) = rows.next().map_err(sql(doing))? {
            each(&SqliteCells(r))?;
        }
        Ok(())
    }

    fn sample_finding(&mut self, node_id: &str, check_id: &str) -> Result<(String, String), StoreError> {
        self.conn
            .prepare_cached("SELECT title, finding_json FROM findings_latest WHERE node_id = ?1 AND check_id = ?2")
            .and_then(|mut s| s.query_row(params![node_id, check_id], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(sql("reading check metadata"))
    }

    fn drift(&mut self, since_ms: i64, families: &[&str]) -> Result<Vec<DriftRow>, StoreError> {
        let doing = "reading the drift timeline";
        let families = families.iter().map(|f| format!("'{}'", f.replace('\'', "''"))).collect::<Vec<_>>().join(", ");
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT at_ms, node_id, check_id, family, seq, old_status, new_status, old_observed, new_observed
                 FROM finding_changes WHERE at_ms >= ?1 AND family IN ({families}) ORDER BY at_ms DESC, id DESC"
            ))
            .map_err(sql(doing))?;
        let rows = stmt
            .query_map([since_ms], |r| {
                Ok(DriftRow {
                    at_ms: r.get(0)?,
                    node_id: r.get(1)?,
                    check_id: r.get(2)?,
                    family: r.get(3)?,
                    seq: r.get(4)?,
                    old_status: r.get(5)?,
                    new_status: r.get(6)?,
                    old_observed: r.get(7)?,
                    new_observed: r.get(8)?,
                })
            })
            .map_err(sql(doing))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql(doing))
    }

    fn event_counts(&mut self, since_ms: i64) -> Result<Vec<(String, String, i64)>, StoreError> {
        let doing = "counting events";
        let mut stmt = self
            .conn
            .prepare("SELECT node_id, kind, COUNT(*) FROM events WHERE at_ms >= ?1 GROUP BY node_id, kind")
            .map_err(sql(doing))?;
        let rows = stmt.query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(sql(doing))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql(doing))
    }

    fn recent_events(&mut self, node_id: &str, since_ms: i64, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        let doing = "reading events";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT at_ms, kind, seq, detail FROM events WHERE node_id = ?1 AND at_ms >= ?2
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(sql(doing))?;
        let rows = stmt
            .query_map(params![node_id, since_ms, limit], |r| {
                Ok(EventRow { at_ms: r.get(0)?, kind: r.get(1)?, seq: r.get(2)?, detail: r.get(3)? })
            })
            .map_err(sql(doing))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql(doing))
    }

    fn trend(&mut self, since_day: i64) -> Result<Vec<DayRow>, StoreError> {
        let doing = "reading the trend";
        let mut stmt = self
            .conn
            .prepare(
                "SELECT day, COUNT(*), SUM(blocking = 0), SUM(pass), SUM(pass + fail + error)
                 FROM node_days WHERE day >= ?1 GROUP BY day ORDER BY day",
            )
            .map_err(sql(doing))?;
        let rows = stmt
            .query_map([since_day], |r| {
                Ok(DayRow {
                    day: r.get(0)?,
                    reporting: r.get(1)?,
                    compliant: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                    pass: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                    decided: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                })
            })
            .map_err(sql(doing))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql(doing))
    }

    fn findings_of(&mut self, node_id: &str) -> Result<Vec<NodeFinding>, StoreError> {
        let doing = "reading a node's findings";
        let mut stmt = self
            .conn
            .prepare(
                "SELECT check_id, family, severity, status, seq, finding_json FROM findings_latest WHERE node_id = ?1",
            )
            .map_err(sql(doing))?;
        let rows = stmt
            .query_map([node_id], |r| {
                Ok(NodeFinding {
                    check_id: r.get(0)?,
                    family: r.get(1)?,
                    severity: r.get(2)?,
                    status: r.get(3)?,
                    seq: ms_to_u64(r.get(4)?),
                    finding: r.get(5)?,
                })
            })
            .map_err(sql(doing))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql(doing))
    }
}

/// Per-node standing in one SRM area, gathered during the index scan.
#[derive(Debug, Clone, Copy, Default)]
struct AreaMark {
    decided: bool,
    failing: bool,
}

#[derive(Debug, Default)]
struct CheckAgg {
    id: String,
    family: String,
    severity: String,
    severity_rank: usize,
    area: Option<usize>,
    sample_node: String,
    counts: StatusCounts,
    /// Indexes into the node list.
    failing_nodes: Vec<usize>,
    error_nodes: Vec<usize>,
}

fn severity_rank(s: &str) -> usize {
    SEVERITIES.iter().position(|x| *x == s).unwrap_or(SEVERITIES.len())
}

/// Most urgent first; a status the vocabulary does not know sorts last.
fn status_rank(s: &str) -> usize {
    match Status::parse(s) {
        Some(Status::Fail) => 0,
        Some(Status::Error) => 1,
        Some(Status::Waived) => 2,
        Some(Status::NotApplicable) => 3,
        Some(Status::Pass) => 4,
        None => 5,
    }
}

/// Most urgent first: by status, then severity, then check id.
pub fn sort_findings(findings: &mut [NodeFinding]) {
    findings.sort_by(|a, b| {
        (status_rank(&a.status), severity_rank(&a.severity), &a.check_id).cmp(&(
            status_rank(&b.status),
            severity_rank(&b.severity),
            &b.check_id,
        ))
    });
}

/// Check metadata, read from one stored finding of the check.
#[derive(Deserialize)]
struct CheckMeta {
    title: String,
    #[serde(default)]
    remediation: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
    #[serde(default)]
    responsibility: Option<String>,
}

fn ms_to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Below this many nodes one thread scans everything.
const PARALLEL_MIN_NODES: usize = 200;

/// What one node's rows added up to.
#[derive(Debug)]
struct NodePart {
    counts: StatusCounts,
    blocking: u64,
    failing_by_severity: [u64; 6],
    findings: Vec<NodeFinding>,
    marks: Vec<AreaMark>,
}

/// The aggregates of one scanned node range.
#[derive(Debug, Default)]
struct ScanPart {
    checks: Vec<CheckAgg>,
    findings: StatusCounts,
    nodes: HashMap<usize, NodePart>,
    unmapped: BTreeMap<String, Vec<(usize, AreaMark)>>,
    unmapped_failing: BTreeMap<String, Vec<String>>,
}

/// Scan the latest findings of nodes with `from <= node_id < to`.
fn scan(
    src: &mut dyn FleetRows,
    from: Option<&str>,
    to: Option<&str>,
    node_index: &HashMap<String, usize>,
    detail: Detail,
) -> Result<ScanPart, StoreError> {
    let mut part = ScanPart::default();
    let mut check_index: HashMap<String, usize> = HashMap::new();
    let mut current: Option<(String, Option<usize>)> = None;
    let mut unmapped_marks: BTreeMap<String, HashMap<usize, AreaMark>> = BTreeMap::new();
    src.scan_findings(from, to, detail, &mut |r: &dyn FindingCells| {
        let node_id = r.node_id()?;
        // Rows arrive grouped by node: look the node up once per group.
        let ni = match &current {
            Some((id, ni)) if id == node_id => *ni,
            _ => {
                let ni = node_index.get(node_id).copied();
                current = Some((node_id.to_string(), ni));
                ni
            }
        };
        let Some(ni) = ni else { return Ok(()) };
        let (check_id, status) = (r.check_id()?, r.status()?);
        let ci = match check_index.get(check_id) {
            Some(&ci) => ci,
            None => {
                let (family, severity) = (r.family()?, r.severity()?);
                part.checks.push(CheckAgg {
                    id: check_id.to_string(),
                    family: family.to_string(),
                    severity: severity.to_string(),
                    severity_rank: severity_rank(severity),
                    area: srm::area_of(family),
                    sample_node: node_id.to_string(),
                    ..CheckAgg::default()
                });
                check_index.insert(check_id.to_string(), part.checks.len() - 1);
                part.checks.len() - 1
            }
        };
        let c = &mut part.checks[ci];
        part.findings.add(status);
        c.counts.add(status);
        let parsed = Status::parse(status);
        let failing = matches!(parsed, Some(Status::Fail | Status::Error));
        let node = part.nodes.entry(ni).or_insert_with(|| NodePart {
            counts: StatusCounts::default(),
            blocking: 0,
            failing_by_severity: [0; 6],
            findings: Vec::new(),
            marks: vec![AreaMark::default(); AREAS.len()],
        });
        node.counts.add(status);
        // SEVERITIES is the vocabulary's order, so the rank names the severity.
        let severity = Severity::ALL.get(c.severity_rank).copied();
        if let (Some(st), Some(sev)) = (parsed, severity)
            && verdict::is_blocking(st, sev)
        {
            node.blocking += 1;
        }
        match parsed {
            Some(Status::Fail) => {
                c.failing_nodes.push(ni);
                node.failing_by_severity[c.severity_rank.min(5)] += 1;
            }
            Some(Status::Error) => c.error_nodes.push(ni),
            _ => {}
        }
        let decided = matches!(parsed, Some(Status::Pass | Status::Fail | Status::Error | Status::Waived));
        let mark = match c.area {
            Some(a) => &mut node.marks[a],
            None => {
                if failing {
                    part.unmapped_failing.entry(c.family.clone()).or_default().push(c.id.clone());
                }
                unmapped_marks.entry(c.family.clone()).or_default().entry(ni).or_default()
            }
        };
        mark.decided |= decided;
        mark.failing |= failing;
        let shown = match detail {
            Detail::Failing => parsed != Some(Status::Pass),
            Detail::All => true,
            Detail::Summary => false,
        };
        if shown {
            // Kept as text; it is checked to be JSON when rendered.
            node.findings.push(NodeFinding {
                check_id: c.id.clone(),
                family: c.family.clone(),
                severity: c.severity.clone(),
                status: status.to_string(),
                seq: ms_to_u64(r.seq()?),
                finding: r.finding_json()?.to_string(),
            });
        }
        Ok(())
    })?;
    part.unmapped = unmapped_marks.into_iter().map(|(f, m)| (f, m.into_iter().collect())).collect();
    Ok(part)
}

/// Build the fleet report.
fn build(src: &mut dyn FleetRows, opts: &Options) -> Result<FleetReport, StoreError> {
    build_with(src, opts, if opts.parallel { None } else { Some(false) })
}

/// [`build`], with the choice of a parallel scan forced (tests compare both).
fn build_with(src: &mut dyn FleetRows, opts: &Options, parallel: Option<bool>) -> Result<FleetReport, StoreError> {
    let started = std::time::Instant::now();
    let phase = |name: &str| tracing::debug!("fleet report: {name} done at {:?}", started.elapsed());
    let since = opts.since_ms.unwrap_or(i64::MIN);
    let stale_after_ms = i64::try_from(opts.interval_secs.saturating_mul(3).saturating_mul(1000)).unwrap_or(i64::MAX);

    // Nodes.
    let mut nodes: Vec<NodeReport> = Vec::new();
    let mut unreadable_certificates = 0usize;
    for r in src.nodes()? {
        let state = match (r.revoked_ms, r.last_created_ms) {
            (Some(_), _) => NodeState::Revoked,
            (None, None) => NodeState::NeverReported,
            (None, Some(t)) if opts.now_ms.saturating_sub(t) > stale_after_ms => NodeState::Stale,
            _ => NodeState::Ok,
        };
        let last = r.last_created_ms;
        // The collector issued and stored the certificate, so an unreadable
        // one is a damaged row: the node shows no expiry rather than a
        // made-up one, and the report logs it once (not once per node).
        let not_after = crate::pki::not_after(&r.cert_der).ok();
        unreadable_certificates += usize::from(not_after.is_none());
        let certificate_expires_at = not_after.map(|t| rfc3339(t.saturating_mul(1000)));
        nodes.push(NodeReport {
            id: r.id,
            hostname: r.hostname,
            state,
            os: r.os,
            kernel: r.kernel,
            agent_version: r.agent_version,
            profile: r.profile,
            enrolled_at: rfc3339(r.enrolled_ms),
            revoked_at: r.revoked_ms.map(rfc3339),
            certificate_expires_at,
            last_attestation_at: last.map(rfc3339),
            last_attestation_age_secs: last.map(|t| opts.now_ms.saturating_sub(t) / 1000),
            head_seq: ms_to_u64(r.head_seq),
            head_sha256: r.head_hash.as_deref().map(crate::store::judge::hex),
            counts: StatusCounts::default(),
            blocking: 0,
            failing_by_severity: BTreeMap::new(),
            score_pct: None,
            compliant: false,
            integrity_events: 0,
            findings: Vec::new(),
        });
    }
    if unreadable_certificates > 0 {
        tracing::warn!("{unreadable_certificates} stored node certificate(s) cannot be read: no expiry shown for them");
    }
    let node_index: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect();

    phase("nodes");

    // The latest findings, read in primary-key order (node, check): a
    // sequential read of the table, cheaper than an index scan followed by
    // random lookups of the rows a section shows. The node range is split
    // in two, each half scanned on its own read connection and thread (the
    // collector's machines have at least two cores), then merged.
    let split = src.median_node()?;
    let (low, high) = match split {
        Some(mid) if parallel.unwrap_or(nodes.len() >= PARALLEL_MIN_NODES) => match src.second_reader()? {
            Some(mut other) => {
                let (a, b) = std::thread::scope(|scope| {
                    let high = scope.spawn(|| scan(&mut *other, Some(&mid), None, &node_index, opts.detail));
                    let low = scan(&mut *src, None, Some(&mid), &node_index, opts.detail);
                    (low, high.join())
                });
                let high = b.map_err(|_| StoreError::Batch("the report's scan thread failed".into()))??;
                (a?, Some(high))
            }
            None => (scan(&mut *src, None, None, &node_index, opts.detail)?, None),
        },
        _ => (scan(&mut *src, None, None, &node_index, opts.detail)?, None),
    };
    let mut checks: Vec<CheckAgg> = Vec::new();
    let mut check_index: HashMap<String, usize> = HashMap::new();
    let mut findings = StatusCounts::default();
    let mut marks: Vec<Vec<AreaMark>> = vec![vec![AreaMark::default(); AREAS.len()]; nodes.len()];
    let mut unmapped: BTreeMap<String, Vec<AreaMark>> = BTreeMap::new();
    let mut unmapped_failing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in std::iter::once(low).chain(high) {
        findings.merge(&part.findings);
        for c in part.checks {
            match check_index.get(&c.id) {
                Some(&ci) => {
                    let into = &mut checks[ci];
                    into.counts.merge(&c.counts);
                    into.failing_nodes.extend(c.failing_nodes);
                    into.error_nodes.extend(c.error_nodes);
                }
                None => {
                    check_index.insert(c.id.clone(), checks.len());
                    checks.push(c);
                }
            }
        }
        for (ni, p) in part.nodes {
            let node = &mut nodes[ni];
            node.counts = p.counts;
            node.blocking = p.blocking;
            for (rank, n) in p.failing_by_severity.iter().enumerate() {
                if *n > 0 {
                    let name = SEVERITIES.get(rank).copied().unwrap_or("unknown");
                    node.failing_by_severity.insert(name.to_string(), *n);
                }
            }
            node.findings = p.findings;
            marks[ni] = p.marks;
        }
        for (family, entries) in part.unmapped {
            let n = nodes.len();
            let v = unmapped.entry(family).or_insert_with(|| vec![AreaMark::default(); n]);
            for (ni, m) in entries {
                v[ni] = m;
            }
        }
        for (family, ids) in part.unmapped_failing {
            unmapped_failing.entry(family).or_default().extend(ids);
        }
    }
    for c in &mut checks {
        // Node order, whichever half a node was scanned in.
        c.failing_nodes.sort_unstable();
        c.error_nodes.sort_unstable();
    }
    let mut failures_by_family: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures_by_severity: BTreeMap<String, u64> = SEVERITIES.iter().map(|s| (s.to_string(), 0)).collect();
    for c in checks.iter().filter(|c| c.counts.fail > 0) {
        *failures_by_family.entry(c.family.clone()).or_insert(0) += c.counts.fail;
        *failures_by_severity.entry(c.severity.clone()).or_insert(0) += c.counts.fail;
    }
    phase("findings");
    for n in &mut nodes {
        sort_findings(&mut n.findings);
        n.score_pct = n.counts.score_pct();
        n.compliant = n.state == NodeState::Ok && n.blocking == 0 && n.counts.total() > 0;
    }

    phase("details");
    // Check metadata, from one stored finding per check.
    let mut check_reports = Vec::with_capacity(checks.len());
    {
        for c in checks {
            let (title, json) = src.sample_finding(&c.sample_node, &c.id)?;
            let meta = serde_json::from_str::<CheckMeta>(&json).ok();
            check_reports.push(CheckReport {
                title: meta.as_ref().map_or(title, |m| m.title.clone()),
                remediation: meta.as_ref().and_then(|m| m.remediation.clone()),
                references: meta.as_ref().map(|m| m.references.clone()).unwrap_or_default(),
                responsibility: meta.and_then(|m| m.responsibility),
                pass_rate_pct: c.counts.score_pct(),
                id: c.id,
                family: c.family,
                severity: c.severity,
                counts: c.counts,
                failing_nodes: c.failing_nodes.iter().map(|&i| nodes[i].id.clone()).collect(),
                error_nodes: c.error_nodes.iter().map(|&i| nodes[i].id.clone()).collect(),
            });
        }
    }
    check_reports.sort_by(|a, b| {
        let failing = |c: &CheckReport| std::cmp::Reverse(c.counts.fail + c.counts.error);
        (failing(a), severity_rank(&a.severity), &a.id).cmp(&(failing(b), severity_rank(&b.severity), &b.id))
    });

    phase("check metadata");
    // Drift timeline.
    let hostname_of = |id: &str| node_index.get(id).map_or_else(String::new, |&i| nodes[i].hostname.clone());
    let mut drift = Vec::new();
    for r in src.drift(since, &DRIFT_FAMILIES)? {
        drift.push(DriftEntry {
            at: rfc3339(r.at_ms),
            hostname: hostname_of(&r.node_id),
            node_id: r.node_id,
            check_id: r.check_id,
            family: r.family,
            seq: ms_to_u64(r.seq),
            old_status: r.old_status,
            new_status: r.new_status,
            old_observed: r.old_observed,
            new_observed: r.new_observed,
        });
    }

    phase("drift");
    // Integrity.
    let mut by_kind: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (node_id, kind, n) in src.event_counts(since)? {
        by_kind.entry(node_id).or_default().insert(kind, ms_to_u64(n));
    }
    let mut integrity = Vec::with_capacity(nodes.len());
    {
        for n in &mut nodes {
            let events_by_kind = by_kind.remove(&n.id).unwrap_or_default();
            n.integrity_events = events_by_kind.values().sum();
            let mut recent = Vec::new();
            if n.integrity_events > 0 {
                let limit = i64::try_from(INTEGRITY_EVENTS_SHOWN).unwrap_or(20);
                for r in src.recent_events(&n.id, since, limit)? {
                    recent.push(IntegrityEvent {
                        at: rfc3339(r.at_ms),
                        kind: r.kind,
                        seq: r.seq.map(ms_to_u64),
                        detail: r.detail,
                    });
                }
            }
            integrity.push(NodeIntegrity {
                node_id: n.id.clone(),
                hostname: n.hostname.clone(),
                head_seq: n.head_seq,
                chain: if n.integrity_events == 0 { "intact".into() } else { "events".into() },
                events_by_kind,
                recent_events: recent,
            });
        }
    }

    phase("integrity");
    // Waivers.
    let soon_ms = opts.now_ms + WAIVER_SOON_DAYS * DAY_MS;
    let mut waivers = Vec::new();
    for n in &nodes {
        // Only findings that mention a waiver are parsed.
        for f in n.findings.iter().filter(|f| f.finding.contains("\"waiver\":{")) {
            let Ok(view) = f.view() else { continue };
            let Some(w) = view.waiver else { continue };
            let expires_ms = w.expires.as_deref().and_then(|d| super::parse_date(d).ok());
            let expired = w.expired.unwrap_or(false) || expires_ms.is_some_and(|t| t <= opts.now_ms);
            waivers.push(WaiverEntry {
                node_id: n.id.clone(),
                hostname: n.hostname.clone(),
                check_id: f.check_id.clone(),
                reason: w.reason.map(Cow::into_owned),
                expires: w.expires.map(Cow::into_owned),
                expired,
                expires_soon: !expired && expires_ms.is_some_and(|t| t <= soon_ms),
                status: f.status.clone(),
            });
        }
    }
    phase("waivers");
    // Trend.
    let mut trend = Vec::new();
    let since_day = if since == i64::MIN { i64::MIN } else { since.div_euclid(DAY_MS) };
    for r in src.trend(since_day)? {
        let (reporting, compliant) = (ms_to_u64(r.reporting), ms_to_u64(r.compliant));
        trend.push(TrendDay {
            day: rfc3339(r.day * DAY_MS).chars().take(10).collect(),
            nodes_reporting: reporting,
            nodes_compliant: compliant,
            compliant_pct: if reporting > 0 { round1(100.0 * compliant as f64 / reporting as f64) } else { 0.0 },
            score_pct: (r.decided > 0).then(|| round1(100.0 * r.pass as f64 / r.decided as f64)),
        });
    }

    phase("trend");
    // SRM view.
    let mut srm_areas = Vec::new();
    for (ai, area) in AREAS.iter().enumerate() {
        let (mut ok, mut failing, mut unknown) = (0u64, 0u64, 0u64);
        for (ni, n) in nodes.iter().enumerate() {
            if n.state == NodeState::Revoked {
                continue;
            }
            let m = marks[ni][ai];
            let silent = area.name == srm::MONITORING && matches!(n.state, NodeState::Stale | NodeState::NeverReported);
            if m.failing || silent {
                failing += 1;
            } else if m.decided {
                ok += 1;
            } else {
                unknown += 1;
            }
        }
        let failing_checks = check_reports
            .iter()
            .filter(|c| area.families.contains(&c.family.as_str()) && c.counts.fail + c.counts.error > 0)
            .map(|c| c.id.clone())
            .collect();
        srm_areas.push(area_view(area.name, area.srm_text, area.families, ok, failing, unknown, failing_checks));
    }
    for (family, v) in unmapped {
        let (mut ok, mut failing, mut unknown) = (0u64, 0u64, 0u64);
        for (ni, n) in nodes.iter().enumerate() {
            if n.state == NodeState::Revoked {
                continue;
            }
            match v.get(ni) {
                Some(m) if m.failing => failing += 1,
                Some(m) if m.decided => ok += 1,
                _ => unknown += 1,
            }
        }
        let mut fc = unmapped_failing.remove(&family).unwrap_or_default();
        fc.sort();
        fc.dedup();
        let name = format!("Unmapped family {family}");
        srm_areas.push(area_view(
            &name,
            "No SRM responsibility is mapped to this family.",
            &[&family],
            ok,
            failing,
            unknown,
            fc,
        ));
    }

    let active = nodes.iter().filter(|n| n.state != NodeState::Revoked).count() as u64;
    let compliant = nodes.iter().filter(|n| n.compliant).count() as u64;
    let count_state = |s: NodeState| nodes.iter().filter(|n| n.state == s).count() as u64;
    let summary = Summary {
        nodes_total: nodes.len() as u64,
        nodes_ok: count_state(NodeState::Ok),
        nodes_stale: count_state(NodeState::Stale),
        nodes_never_reported: count_state(NodeState::NeverReported),
        nodes_revoked: count_state(NodeState::Revoked),
        nodes_compliant: compliant,
        compliant_pct: (active > 0).then(|| round1(100.0 * compliant as f64 / active as f64)),
        errors_total: findings.error,
        findings,
        failures_by_severity,
        failures_by_family,
        nodes_with_integrity_events: nodes.iter().filter(|n| n.integrity_events > 0).count() as u64,
        waivers_total: waivers.len() as u64,
        waivers_expiring_soon: waivers.iter().filter(|w| w.expires_soon).count() as u64,
        waivers_expired: waivers.iter().filter(|w| w.expired).count() as u64,
    };
    Ok(FleetReport {
        schema: SCHEMA.into(),
        generated_at: rfc3339(opts.now_ms),
        collector_version: env!("CARGO_PKG_VERSION").into(),
        since: opts.since_ms.map(rfc3339),
        settings: Settings {
            interval_secs: opts.interval_secs,
            stale_after_secs: opts.interval_secs.saturating_mul(3),
            detail: opts.detail,
            compliance_rule: "reporting on time (not stale, revoked or silent) and no fail or error finding at high or critical severity in its latest report".into(),
            score_rule: "pass / (pass + fail + error) of the latest findings; waived and not_applicable are left out".into(),
        },
        summary,
        srm: srm_areas,
        checks: check_reports,
        drift,
        integrity,
        waivers,
        trend,
        nodes,
    })
}

fn area_view(
    name: &str,
    text: &str,
    families: &[&str],
    ok: u64,
    failing: u64,
    unknown: u64,
    failing_checks: Vec<String>,
) -> SrmArea {
    let status = if failing > 0 {
        "failing"
    } else if unknown > 0 || ok == 0 {
        "incomplete"
    } else {
        "ok"
    };
    SrmArea {
        area: name.into(),
        srm_text: text.into(),
        families: families.iter().map(|f| f.to_string()).collect(),
        status: status.into(),
        nodes_ok: ok,
        nodes_failing: failing,
        nodes_unknown: unknown,
        failing_checks,
    }
}

/// Every finding of one node (passes included), most urgent first, for
/// the dashboard's node page.
fn node_findings(src: &mut dyn FleetRows, node_id: &str) -> Result<Vec<NodeFinding>, StoreError> {
    let mut out = src.findings_of(node_id)?;
    sort_findings(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{IngestItem, NewNode, Store};
    use kosmos_proto::chain;
    use kosmos_proto::v1::AttestationBody;
    use prost::Message;

    /// A store of `n` nodes with varied findings (unmapped family included).
    fn store(n: usize) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&d.path().join("c.db")).unwrap();
        let statuses = ["pass", "fail", "error", "not_applicable", "waived"];
        let mut batch = Vec::new();
        for i in 0..n {
            let id = format!("node-{i:04}");
            s.insert_node(&NewNode {
                id: id.clone(),
                hostname: format!("h{i}"),
                machine_id: "m".into(),
                cert_der: vec![1],
                enrolled_at_ms: 0,
            })
            .unwrap();
            let results: Vec<String> = (0..12)
                .map(|c| {
                    let family = ["ssh", "kubelet", "firewall", "patch", "newfamily", "logging"][c % 6];
                    let st = statuses[(i * 7 + c * 3) % 5];
                    let waiver = if st == "waived" { r#","waiver":{"reason":"r","expires":"2027-01-01"}"# } else { "" };
                    let reason = if matches!(st, "error" | "not_applicable") { r#""why""# } else { "null" };
                    format!(
                        r#"{{"id":"{family}.c{c}","title":"t","family":"{family}","severity":"{}","status":"{st}","observed":"{i}","evidence":[],"reason":{reason}{waiver}}}"#,
                        ["critical", "high", "medium", "low"][c % 4]
                    )
                })
                .collect();
            let report = format!(r#"{{"results":[{}]}}"#, results.join(","));
            let body = AttestationBody {
                node_id: id.clone(),
                seq: 1,
                prev_hash: chain::GENESIS_PREV_HASH.to_vec(),
                created_at_unix_ms: 1_000,
                report_json: report.into_bytes().into(),
                ..Default::default()
            };
            batch.push(IngestItem::new(id, body.encode_to_vec(), vec![0; 64], body, 1_000));
        }
        s.ingest(&batch, 1_000).unwrap();
        d
    }

    #[test]
    fn parallel_and_single_scans_agree() {
        let d = store(60);
        let mut reader = SqliteFleetReader::open(&d.path().join("c.db")).unwrap();
        for detail in [Detail::Failing, Detail::All] {
            let opts = Options { now_ms: 2_000, since_ms: None, interval_secs: 300, detail, parallel: true };
            let one = serde_json::to_value(build_with(&mut reader, &opts, Some(false)).unwrap()).unwrap();
            let two = serde_json::to_value(build_with(&mut reader, &opts, Some(true)).unwrap()).unwrap();
            assert_eq!(one, two);
            assert_eq!(one["summary"]["nodes_total"], 60);
            let total: u64 = ["pass", "fail", "error", "not_applicable", "waived"]
                .iter()
                .map(|k| one["summary"]["findings"][k].as_u64().unwrap())
                .sum();
            assert_eq!(total, 60 * 12);
            assert!(one["srm"].as_array().unwrap().iter().any(|a| a["area"] == "Unmapped family newfamily"));
            assert!(!one["waivers"].as_array().unwrap().is_empty());
        }
    }

    #[test]
    fn the_change_token_moves_exactly_when_another_connection_commits() {
        let d = store(2);
        let path = d.path().join("c.db");
        let mut reader = SqliteFleetReader::open(&path).unwrap();
        let first = reader.change_token().unwrap();
        assert_eq!(reader.change_token().unwrap(), first, "no write: the same token");
        // Reads change nothing.
        let opts =
            Options { now_ms: 2_000, since_ms: None, interval_secs: 300, detail: Detail::Summary, parallel: true };
        reader.fleet_report(&opts).unwrap();
        assert_eq!(reader.change_token().unwrap(), first);
        let mut writer = SqliteStore::open(&path).unwrap();
        writer.revoke_node("node-0000", 3_000).unwrap();
        let after = reader.change_token().unwrap();
        assert_ne!(after, first, "a commit by another connection changes the token");
        assert_eq!(reader.change_token().unwrap(), after);
        assert_eq!(reader.node_findings("node-0001").unwrap().len(), 12);
    }
}
