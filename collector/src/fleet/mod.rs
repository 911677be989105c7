//! The fleet hardening report: how every enrolled node stands against the
//! customer's responsibilities, built offline from the store.
//!
//! [`FleetReport`] is the machine contract (`kosmos.fleet-report/v1`,
//! `schemas/fleet-report.v1.schema.json`); the HTML, Markdown, CSV and JUnit
//! renderings and the live dashboard are views of it. [`query`] reads it
//! from the SQLite store through a read-only connection, so a report never
//! blocks ingest.
//!
//! Definitions an auditor needs, stated once here and in the report:
//! - a node is **stale** when its newest attestation is older than three
//!   attestation intervals: for an external node, silence is itself a
//!   connectivity or health finding;
//! - a node is **compliant** when it is neither stale, revoked nor silent,
//!   and its latest report has no `fail` or `error` finding at `high` or
//!   `critical` severity (the agent's default `--fail-on`);
//! - a node's **score** is pass / (pass + fail + error): waived and
//!   not-applicable findings are left out, errors count against it.

pub mod csv;
pub mod exchange;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod query;
pub mod srm;
mod svg;

use std::borrow::Cow;
use std::collections::BTreeMap;

use kosmos_proto::verdict::{Severity, Status};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The schema identifier of the fleet report.
pub const SCHEMA: &str = "kosmos.fleet-report/v1";

/// Severities, most severe first.
pub const SEVERITIES: [&str; 5] = {
    // The shared vocabulary's names, most severe first.
    let mut names = [""; 5];
    let mut i = 0;
    while i < names.len() {
        names[i] = Severity::ALL[i].as_str();
        i += 1;
    }
    names
};

/// Families whose changes make the drift timeline.
pub const DRIFT_FAMILIES: [&str; 6] = ["kubelet", "kube_proxy", "firewall", "exposure", "ssh", "sysctl"];

/// Waivers expiring within this many days are flagged.
pub const WAIVER_SOON_DAYS: i64 = 30;

/// Which findings each node's section carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    /// Everything that is not a pass: fail, error, waived, not_applicable
    /// (passes are counted).
    Failing,
    /// Every finding, passes included.
    All,
    /// No finding listed, only counted (`--findings summary`): also what the
    /// live dashboard keeps in memory (a node's page reads that node's findings when asked), so its
    /// snapshot stays small however many findings the fleet has.
    Summary,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// "Now" for staleness and ages (milliseconds since the epoch).
    pub now_ms: i64,
    /// Drift, events and trend start here; latest findings are always current.
    pub since_ms: Option<i64>,
    /// The expected attestation interval.
    pub interval_secs: u64,
    pub detail: Detail,
    /// May the scan of a large fleet take two connections and two cores?
    /// The dashboard's background refresh says no: it must leave a core
    /// to ingest, whose acks wait behind any core it takes.
    pub parallel: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetReport {
    pub schema: String,
    pub generated_at: String,
    pub collector_version: String,
    pub since: Option<String>,
    pub settings: Settings,
    pub summary: Summary,
    pub srm: Vec<SrmArea>,
    pub checks: Vec<CheckReport>,
    pub drift: Vec<DriftEntry>,
    pub integrity: Vec<NodeIntegrity>,
    pub waivers: Vec<WaiverEntry>,
    pub trend: Vec<TrendDay>,
    /// Last, so that a large report can stream it (see [`write_json`]).
    pub nodes: Vec<NodeReport>,
}

/// Render `items` in chunks on two threads and write the chunks in order:
/// the large per-node parts of a report are most of its rendering time.
/// `render(first_index, chunk, buffer)`.
pub fn write_parallel<T: Sync, W: std::io::Write + ?Sized>(
    items: &[T],
    out: &mut W,
    render: impl Fn(usize, &[T], &mut Vec<u8>) -> std::io::Result<()> + Sync,
) -> std::io::Result<()> {
    const CHUNK: usize = 200;
    let chunks: Vec<(usize, &[T])> = items.chunks(CHUNK).enumerate().map(|(i, c)| (i * CHUNK, c)).collect();
    for pair in chunks.chunks(2) {
        let (first, second) = std::thread::scope(|scope| {
            let second = pair.get(1).map(|&(at, chunk)| {
                let render = &render;
                scope.spawn(move || {
                    let mut buf = Vec::new();
                    render(at, chunk, &mut buf).map(|()| buf)
                })
            });
            let mut buf = Vec::new();
            let first = pair.first().map_or(Ok(()), |&(at, chunk)| render(at, chunk, &mut buf)).map(|()| buf);
            (first, second.map(|h| h.join()))
        });
        out.write_all(&first?)?;
        if let Some(second) = second {
            out.write_all(&second.map_err(|_| std::io::Error::other("a report rendering thread failed"))??)?;
        }
    }
    Ok(())
}

/// Write the report as JSON, the nodes rendered in parallel.
pub fn write_json<W: std::io::Write + ?Sized>(report: &FleetReport, out: &mut W) -> std::io::Result<()> {
    let head = report.clone_without_nodes();
    let text = serde_json::to_string(&head).map_err(std::io::Error::other)?;
    // `nodes` is the last field: `…,"nodes":[]}`.
    let open = text.strip_suffix("[]}").ok_or_else(|| std::io::Error::other("unexpected report layout"))?;
    out.write_all(open.as_bytes())?;
    out.write_all(b"[")?;
    write_parallel(&report.nodes, out, |at, chunk, buf| {
        for (i, node) in chunk.iter().enumerate() {
            if at + i > 0 {
                buf.push(b',');
            }
            serde_json::to_writer(&mut *buf, node).map_err(std::io::Error::other)?;
        }
        Ok(())
    })?;
    out.write_all(b"]}")
}

impl FleetReport {
    /// A copy without the (large) node list.
    pub fn clone_without_nodes(&self) -> FleetReport {
        FleetReport {
            schema: self.schema.clone(),
            generated_at: self.generated_at.clone(),
            collector_version: self.collector_version.clone(),
            since: self.since.clone(),
            settings: self.settings.clone(),
            summary: self.summary.clone(),
            srm: self.srm.clone(),
            checks: self.checks.clone(),
            drift: self.drift.clone(),
            integrity: self.integrity.clone(),
            waivers: self.waivers.clone(),
            trend: self.trend.clone(),
            nodes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub interval_secs: u64,
    pub stale_after_secs: u64,
    pub detail: Detail,
    pub compliance_rule: String,
    pub score_rule: String,
}

/// Counts of findings by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub pass: u64,
    pub fail: u64,
    pub error: u64,
    pub not_applicable: u64,
    pub waived: u64,
}

impl StatusCounts {
    /// Count one finding; a status the vocabulary does not know counts
    /// nowhere (the store only indexes known ones).
    pub fn add(&mut self, status: &str) {
        match Status::parse(status) {
            Some(Status::Pass) => self.pass += 1,
            Some(Status::Fail) => self.fail += 1,
            Some(Status::Error) => self.error += 1,
            Some(Status::NotApplicable) => self.not_applicable += 1,
            Some(Status::Waived) => self.waived += 1,
            None => {}
        }
    }

    pub fn merge(&mut self, other: &StatusCounts) {
        self.pass += other.pass;
        self.fail += other.fail;
        self.error += other.error;
        self.not_applicable += other.not_applicable;
        self.waived += other.waived;
    }

    pub fn total(&self) -> u64 {
        self.pass + self.fail + self.error + self.not_applicable + self.waived
    }

    /// pass / (pass + fail + error), in percent; None when nothing was decided.
    pub fn score_pct(&self) -> Option<f64> {
        let decided = self.pass + self.fail + self.error;
        (decided > 0).then(|| round1(100.0 * self.pass as f64 / decided as f64))
    }
}

/// One decimal, so that every rendering shows the same number.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub nodes_total: u64,
    pub nodes_ok: u64,
    pub nodes_stale: u64,
    pub nodes_never_reported: u64,
    pub nodes_revoked: u64,
    pub nodes_compliant: u64,
    /// Compliant nodes among the nodes that are not revoked.
    pub compliant_pct: Option<f64>,
    pub findings: StatusCounts,
    /// `fail` findings by severity (every severity present, zeros included).
    pub failures_by_severity: BTreeMap<String, u64>,
    /// `fail` findings by family.
    pub failures_by_family: BTreeMap<String, u64>,
    pub errors_total: u64,
    pub nodes_with_integrity_events: u64,
    pub waivers_total: u64,
    pub waivers_expiring_soon: u64,
    pub waivers_expired: u64,
}

/// Where a node stands as a reporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Ok,
    Stale,
    NeverReported,
    Revoked,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ok => "ok",
            NodeState::Stale => "stale",
            NodeState::NeverReported => "never_reported",
            NodeState::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    pub id: String,
    pub hostname: String,
    pub state: NodeState,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub agent_version: Option<String>,
    pub profile: Option<String>,
    pub enrolled_at: String,
    pub revoked_at: Option<String>,
    /// notAfter of the node's client certificate (None when the stored
    /// certificate cannot be read); past it the node can no longer attest.
    pub certificate_expires_at: Option<String>,
    pub last_attestation_at: Option<String>,
    pub last_attestation_age_secs: Option<i64>,
    pub head_seq: u64,
    /// SHA-256 (hex) of the body of the node's newest attestation, the one
    /// at `head_seq`: the chain link an evidence bundle verifies.
    pub head_sha256: Option<String>,
    pub counts: StatusCounts,
    /// `fail` and `error` findings at `high` or `critical`.
    pub blocking: u64,
    pub failing_by_severity: BTreeMap<String, u64>,
    pub score_pct: Option<f64>,
    pub compliant: bool,
    pub integrity_events: u64,
    pub findings: Vec<NodeFinding>,
}

/// One finding of a node: the agent's signed finding object verbatim
/// (`finding`, as in `kosmos.report/v1`), indexed by the fields the views
/// sort and filter on, and the attestation it last changed in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeFinding {
    pub check_id: String,
    pub family: String,
    pub severity: String,
    pub status: String,
    pub seq: u64,
    /// The finding object's JSON text, embedded as JSON (not as a string)
    /// when the report is serialized; invalid JSON fails serialization.
    #[serde(with = "embedded_json")]
    pub finding: String,
}

impl NodeFinding {
    /// The finding's fields, borrowed from the stored JSON.
    pub fn view(&self) -> Result<FindingView<'_>, serde_json::Error> {
        serde_json::from_str(&self.finding)
    }
}

/// A JSON text field written into the document as the value it holds.
mod embedded_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Box::<RawValue>::deserialize(d)?.get().to_string())
    }
}

/// A stored finding's fields, borrowed (strings with escapes are copied).
#[derive(Debug, Deserialize)]
pub struct FindingView<'a> {
    #[serde(borrow, default)]
    pub title: Cow<'a, str>,
    #[serde(borrow, default)]
    pub observed: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub expected: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub evidence: Vec<Evidence<'a>>,
    #[serde(borrow, default)]
    pub reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub waiver: Option<Waiver<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Evidence<'a> {
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    #[serde(borrow)]
    pub detail: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub struct Waiver<'a> {
    #[serde(borrow, default)]
    pub reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub expires: Option<Cow<'a, str>>,
    #[serde(default)]
    pub expired: Option<bool>,
}

/// A JSON value as display text: strings unquoted, `null` empty.
pub fn json_text(v: Option<&RawValue>) -> String {
    match v.map(RawValue::get) {
        None | Some("null") => String::new(),
        Some(t) => serde_json::from_str::<String>(t).unwrap_or_else(|_| t.to_string()),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub id: String,
    pub title: String,
    pub family: String,
    pub severity: String,
    pub responsibility: Option<String>,
    pub remediation: Option<String>,
    pub references: Vec<Reference>,
    pub counts: StatusCounts,
    /// pass / (pass + fail + error) across the fleet, in percent.
    pub pass_rate_pct: Option<f64>,
    pub failing_nodes: Vec<String>,
    pub error_nodes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    pub standard: String,
    #[serde(default)]
    pub version: Option<String>,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftEntry {
    pub at: String,
    pub node_id: String,
    pub hostname: String,
    pub check_id: String,
    pub family: String,
    pub seq: u64,
    pub old_status: Option<String>,
    pub new_status: String,
    pub old_observed: Option<String>,
    pub new_observed: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeIntegrity {
    pub node_id: String,
    pub hostname: String,
    /// Every stored envelope's signature was verified against the node's
    /// enrolled key before it was stored; refused ones are events.
    pub head_seq: u64,
    /// `intact` when the node has no chain or security event in range.
    pub chain: String,
    pub events_by_kind: BTreeMap<String, u64>,
    /// The most recent events (at most [`INTEGRITY_EVENTS_SHOWN`]).
    pub recent_events: Vec<IntegrityEvent>,
}

/// Events listed per node; the counts cover all of them.
pub const INTEGRITY_EVENTS_SHOWN: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntegrityEvent {
    pub at: String,
    pub kind: String,
    pub seq: Option<u64>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SrmArea {
    pub area: String,
    /// The responsibility as the shared responsibility model words it.
    pub srm_text: String,
    pub families: Vec<String>,
    /// ok: every node evidenced and nothing failing; failing: a node fails;
    /// incomplete: nothing failing but some nodes are not evidenced.
    pub status: String,
    pub nodes_ok: u64,
    pub nodes_failing: u64,
    pub nodes_unknown: u64,
    pub failing_checks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaiverEntry {
    pub node_id: String,
    pub hostname: String,
    pub check_id: String,
    pub reason: Option<String>,
    pub expires: Option<String>,
    pub expired: bool,
    pub expires_soon: bool,
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrendDay {
    pub day: String,
    pub nodes_reporting: u64,
    pub nodes_compliant: u64,
    pub compliant_pct: f64,
    pub score_pct: Option<f64>,
}

/// Format milliseconds since the epoch as RFC 3339 (UTC, seconds).
pub fn rfc3339(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => format!("@{ms}ms"),
    }
}

/// Parse `--since`: RFC 3339, or a bare `YYYY-MM-DD` (midnight UTC).
pub fn parse_date(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) => Ok(d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp_millis()),
        Err(_) => Err(format!("{s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_rendering_keeps_order() {
        let items: Vec<u32> = (0..1234).collect();
        let mut out = Vec::new();
        write_parallel(&items, &mut out, |at, chunk, buf| {
            for (i, x) in chunk.iter().enumerate() {
                assert_eq!(at + i, *x as usize);
                buf.extend_from_slice(format!("{x},").as_bytes());
            }
            Ok(())
        })
        .unwrap();
        let expected: String = items.iter().map(|x| format!("{x},")).collect();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        // A failing chunk fails the whole write.
        let err = write_parallel(&items, &mut Vec::new(), |at, _, _| {
            if at == 600 { Err(std::io::Error::other("boom")) } else { Ok(()) }
        });
        assert!(err.is_err());
    }

    #[test]
    fn score_and_dates() {
        let c = StatusCounts { pass: 2, fail: 1, error: 0, not_applicable: 5, waived: 1 };
        assert_eq!(c.score_pct(), Some(66.7));
        assert_eq!(StatusCounts::default().score_pct(), None);
        assert_eq!(parse_date("2026-11-22").unwrap(), 1_795_305_600_000);
        assert_eq!(parse_date("2026-11-22T00:00:00Z").unwrap(), 1_795_305_600_000);
        assert!(parse_date("yesterday").is_err());
        assert_eq!(rfc3339(1_795_305_600_000), "2026-11-22T00:00:00Z");
    }
}
