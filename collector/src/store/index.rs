//! What one report changes in a node's index, decided once for every
//! backend: which findings become the node's latest, which changes enter the
//! drift timeline, which checks are forgotten, what the node now says about
//! itself, and the node's counts afterwards.
//!
//! [`plan`] is pure. It works on the backend's memory of the node's latest
//! findings (a digest and a status per check, so that an unchanged finding
//! costs nothing) and asks the database only for the observed value of a
//! stored finding whose digest changed, through a lookup the backend passes
//! in. The backend applies the returned [`IndexOp`]s in order, in the
//! transaction that stores the envelope.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use kosmos_proto::report::IndexedReport;
use kosmos_proto::verdict::{self, Severity, Status};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The parts of a report the store indexes, read from the raw parts the
/// index digest covers ([`IndexedReport`]).
#[derive(Debug)]
pub struct ReportIndex<'a> {
    pub results: Vec<&'a RawValue>,
    pub agent_version: Option<String>,
    pub node: Option<NodeIndex>,
    pub profile: Option<ProfileIndex>,
}

impl<'a> ReportIndex<'a> {
    pub fn from_parts(parts: IndexedReport<'a>) -> Result<Self, String> {
        fn part<T: DeserializeOwned>(raw: Option<&RawValue>, name: &str) -> Result<Option<T>, String> {
            raw.map(|r| serde_json::from_str::<T>(r.get()).map_err(|e| format!("{name}: {e}"))).transpose()
        }
        Ok(ReportIndex {
            agent_version: part(parts.agent_version, "agent_version")?,
            node: part(parts.node, "node")?,
            profile: part(parts.profile, "profile")?,
            results: parts.results,
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct NodeIndex {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub kernel: Option<String>,
    #[serde(default)]
    pub os: Option<OsIndex>,
}

#[derive(Debug, Deserialize)]
pub struct OsIndex {
    #[serde(default)]
    pub pretty_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ProfileIndex {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
}

/// What a node says about itself in a report; an absent field leaves the
/// stored value as it was.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeDescription<'r> {
    pub os_pretty: Option<&'r str>,
    pub kernel: Option<&'r str>,
    pub agent_version: Option<&'r str>,
    /// `name vVERSION`, or the name alone.
    pub profile: Option<String>,
    /// The name the node reports for itself (enrollment recorded the name
    /// of wherever enrollment ran); an empty name is no name.
    pub hostname: Option<&'r str>,
}

impl<'r> NodeDescription<'r> {
    pub fn of(report: &'r ReportIndex<'_>) -> Self {
        let node = report.node.as_ref();
        NodeDescription {
            os_pretty: node.and_then(|n| n.os.as_ref()).and_then(|o| o.pretty_name.as_deref()),
            kernel: node.and_then(|n| n.kernel.as_deref()),
            agent_version: report.agent_version.as_deref(),
            profile: report.profile.as_ref().map(|p| match &p.version {
                Some(v) => format!("{} v{v}", p.name),
                None => p.name.clone(),
            }),
            hostname: node.and_then(|n| n.hostname.as_deref()).filter(|h| !h.is_empty()),
        }
    }
}

/// Counts of a node's latest findings by status, plus the blocking ones
/// ([`verdict::is_blocking`]).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub pass: i64,
    pub fail: i64,
    pub error: i64,
    pub not_applicable: i64,
    pub waived: i64,
    pub blocking: i64,
}

impl Counts {
    pub fn of<'a>(findings: impl Iterator<Item = &'a LatestFinding>) -> Counts {
        let mut c = Counts::default();
        for f in findings {
            match f.status {
                Status::Pass => c.pass += 1,
                Status::Fail => c.fail += 1,
                Status::Error => c.error += 1,
                Status::NotApplicable => c.not_applicable += 1,
                Status::Waived => c.waived += 1,
            }
            if f.blocking {
                c.blocking += 1;
            }
        }
        c
    }
}

/// What a backend remembers of a node's latest finding for a check, so that
/// an unchanged finding costs no write and the node's counts need no query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatestFinding {
    /// SHA-256 of the finding's JSON as the report carried it.
    pub digest: [u8; 32],
    pub status: Status,
    pub blocking: bool,
}

impl LatestFinding {
    /// The memory of a stored finding (`finding_json` as stored, with its
    /// status and severity columns); None for a status the vocabulary does
    /// not know.
    pub fn of_stored(finding_json: &str, status: &str, severity: &str) -> Option<LatestFinding> {
        LatestFinding::of_stored_digest(Sha256::digest(finding_json.as_bytes()).into(), status, severity)
    }

    /// [`LatestFinding::of_stored`], from the SHA-256 of the stored
    /// `finding_json` (a database that hashes it where it lies).
    pub fn of_stored_digest(digest: [u8; 32], status: &str, severity: &str) -> Option<LatestFinding> {
        let status = Status::parse(status)?;
        Some(LatestFinding { digest, status, blocking: is_blocking(status, severity) })
    }
}

/// Blocking as the report vocabulary defines it; a severity the vocabulary
/// does not know is never blocking (the report schema rules it out).
pub fn is_blocking(status: Status, severity: &str) -> bool {
    Severity::parse(severity).is_some_and(|s| verdict::is_blocking(status, s))
}

/// One finding of a report, as far as the index reads it.
#[derive(Deserialize)]
struct FindingIndex<'a> {
    // Cow: borrowed when the JSON string has no escape, owned when it has
    // one (a quote or a newline in a title must not make a finding
    // unindexable).
    #[serde(borrow)]
    id: Cow<'a, str>,
    status: Status,
    #[serde(borrow)]
    severity: Cow<'a, str>,
    #[serde(borrow)]
    family: Cow<'a, str>,
    #[serde(borrow)]
    title: Cow<'a, str>,
    #[serde(borrow, default)]
    observed: Option<&'a RawValue>,
}

/// The observed value of a stored finding, as JSON text.
#[derive(Deserialize)]
struct ObservedOnly<'a> {
    #[serde(borrow, default)]
    observed: Option<&'a RawValue>,
}

/// JSON `null` and an absent value are the same: nothing observed.
fn observed_text(v: Option<&RawValue>) -> Option<String> {
    v.map(RawValue::get).filter(|t| *t != "null").map(str::to_string)
}

/// The observed value (JSON text) of a finding as stored; None when it has
/// none or the stored JSON cannot be read.
pub fn observed_of_stored(finding_json: &str) -> Option<String> {
    serde_json::from_str::<ObservedOnly<'_>>(finding_json).ok().and_then(|o| observed_text(o.observed))
}

/// A change of a finding's status or observed value: one row of the drift
/// timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingChange<'a> {
    pub check_id: Cow<'a, str>,
    pub family: Cow<'a, str>,
    /// None: the check is new on a node that had findings before.
    pub old_status: Option<Status>,
    pub new_status: Status,
    pub old_observed: Option<String>,
    pub new_observed: Option<String>,
}

/// A finding that becomes the node's latest for its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestRow<'a> {
    pub check_id: Cow<'a, str>,
    pub status: Status,
    pub severity: Cow<'a, str>,
    pub family: Cow<'a, str>,
    pub title: Cow<'a, str>,
    /// The finding's JSON as the report carried it.
    pub finding_json: &'a str,
}

/// One step of applying a report to the index, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOp<'a> {
    /// A finding of the signed report cannot be indexed: record a
    /// `malformed_report` event with this detail; the others are indexed.
    Malformed { detail: String },
    /// Append to the drift timeline.
    Change(FindingChange<'a>),
    /// Write the node's latest finding for a check.
    Latest(LatestRow<'a>),
    /// Forget a check a full report no longer carries.
    Forget { check_id: String },
}

/// What applying a report takes, and the node's counts afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPlan<'a> {
    pub ops: Vec<IndexOp<'a>>,
    pub counts: Counts,
}

/// Plan the index update for `report` on a node whose latest findings are
/// `latest` (updated in place to the state after the report). `full`: the
/// report covers the whole profile (not a subset of families), so checks it
/// does not carry are forgotten. The first report of a node is its
/// baseline, not a change. `stored_observed(check)` returns the observed
/// value of the node's stored finding for `check`; it is called only for a
/// check whose finding changed, and its error is returned as is.
pub fn plan<'a, E>(
    latest: &mut HashMap<String, LatestFinding>,
    report: &ReportIndex<'a>,
    full: bool,
    mut stored_observed: impl FnMut(&str) -> Result<Option<String>, E>,
) -> Result<IndexPlan<'a>, E> {
    let had_findings = !latest.is_empty();
    let mut ops = Vec::new();
    let mut seen: HashSet<String> = HashSet::with_capacity(report.results.len());
    for &raw in &report.results {
        let f = match serde_json::from_str::<FindingIndex<'a>>(raw.get()) {
            Ok(f) => f,
            Err(e) => {
                ops.push(IndexOp::Malformed {
                    detail: format!("a finding of the signed report cannot be indexed: {e}"),
                });
                continue;
            }
        };
        seen.insert(f.id.to_string());
        let digest: [u8; 32] = Sha256::digest(raw.get().as_bytes()).into();
        let previous = latest.get(f.id.as_ref()).copied();
        if previous.is_some_and(|p| p.digest == digest) {
            continue;
        }
        let new_observed = observed_text(f.observed);
        let change = match previous {
            Some(p) => {
                let old_observed = stored_observed(&f.id)?;
                (p.status != f.status || old_observed != new_observed).then_some((Some(p.status), old_observed))
            }
            None if had_findings => Some((None, None)),
            None => None,
        };
        if let Some((old_status, old_observed)) = change {
            ops.push(IndexOp::Change(FindingChange {
                check_id: f.id.clone(),
                family: f.family.clone(),
                old_status,
                new_status: f.status,
                old_observed,
                new_observed,
            }));
        }
        latest.insert(
            f.id.to_string(),
            LatestFinding { digest, status: f.status, blocking: is_blocking(f.status, &f.severity) },
        );
        ops.push(IndexOp::Latest(LatestRow {
            check_id: f.id,
            status: f.status,
            severity: f.severity,
            family: f.family,
            title: f.title,
            finding_json: raw.get(),
        }));
    }
    if full {
        // A check the profile no longer runs must not linger as "latest".
        let mut gone: Vec<String> = latest.keys().filter(|k| !seen.contains(k.as_str())).cloned().collect();
        gone.sort();
        for check_id in gone {
            latest.remove(&check_id);
            ops.push(IndexOp::Forget { check_id });
        }
    }
    Ok(IndexPlan { ops, counts: Counts::of(latest.values()) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::convert::Infallible;

    use super::*;

    fn finding(id: &str, status: &str, severity: &str, observed: &str) -> String {
        format!(
            r#"{{"id":"{id}","title":"t {id}","family":"{}","severity":"{severity}","status":"{status}","observed":{observed},"evidence":[]}}"#,
            id.split('.').next().unwrap()
        )
    }

    fn report_json(findings: &[String], extra: &str) -> String {
        format!(r#"{{{extra}"results":[{}]}}"#, findings.join(","))
    }

    /// Plan `json` on `latest`, with the stored observed values of `stored`.
    fn apply<'j>(
        latest: &mut HashMap<String, LatestFinding>,
        stored: &HashMap<String, String>,
        json: &'j str,
        full: bool,
    ) -> IndexPlan<'j> {
        let report = ReportIndex::from_parts(IndexedReport::parse(json.as_bytes()).unwrap()).unwrap();
        let plan =
            plan(latest, &report, full, |c| Ok::<_, Infallible>(stored.get(c).and_then(|j| observed_of_stored(j))))
                .unwrap();
        // The plan borrows from the report's JSON, not from the report.
        IndexPlan { ops: plan.ops, counts: plan.counts }
    }

    fn kinds(p: &IndexPlan<'_>) -> Vec<String> {
        p.ops
            .iter()
            .map(|op| match op {
                IndexOp::Malformed { .. } => "malformed".to_string(),
                IndexOp::Change(c) => format!("change {}", c.check_id),
                IndexOp::Latest(r) => format!("latest {}", r.check_id),
                IndexOp::Forget { check_id } => format!("forget {check_id}"),
            })
            .collect()
    }

    #[test]
    fn the_first_report_is_the_baseline_not_a_change() {
        let mut latest = HashMap::new();
        let json = report_json(
            &[finding("ssh.root", "pass", "high", r#""no""#), finding("kubelet.anon", "fail", "critical", "true")],
            "",
        );
        let p = apply(&mut latest, &HashMap::new(), &json, true);
        assert_eq!(kinds(&p), ["latest ssh.root", "latest kubelet.anon"]);
        assert_eq!(p.counts, Counts { pass: 1, fail: 1, blocking: 1, ..Counts::default() });
        assert_eq!(latest.len(), 2);
    }

    #[test]
    fn an_unchanged_finding_costs_nothing_and_asks_nothing() {
        let json = report_json(&[finding("ssh.root", "pass", "high", r#""no""#)], "");
        let mut latest = HashMap::new();
        apply(&mut latest, &HashMap::new(), &json, true);
        let report = ReportIndex::from_parts(IndexedReport::parse(json.as_bytes()).unwrap()).unwrap();
        let p = plan(&mut latest, &report, true, |_| Err("must not be asked")).unwrap();
        assert!(p.ops.is_empty(), "{p:?}");
        assert_eq!(p.counts.pass, 1);
    }

    #[test]
    fn a_status_change_enters_the_drift_timeline_with_both_observed_values() {
        let before = finding("ssh.root", "pass", "high", r#""no""#);
        let mut latest = HashMap::new();
        apply(&mut latest, &HashMap::new(), &report_json(std::slice::from_ref(&before), ""), true);
        let stored = HashMap::from([("ssh.root".to_string(), before)]);
        let after = report_json(&[finding("ssh.root", "fail", "high", r#""yes""#)], "");
        let p = apply(&mut latest, &stored, &after, true);
        assert_eq!(kinds(&p), ["change ssh.root", "latest ssh.root"]);
        let IndexOp::Change(c) = &p.ops[0] else { unreachable!() };
        assert_eq!(c.old_status, Some(Status::Pass));
        assert_eq!(c.new_status, Status::Fail);
        assert_eq!(c.old_observed.as_deref(), Some(r#""no""#));
        assert_eq!(c.new_observed.as_deref(), Some(r#""yes""#));
        assert_eq!(c.family, "ssh");
        assert_eq!(p.counts, Counts { fail: 1, blocking: 1, ..Counts::default() });
    }

    #[test]
    fn a_new_observed_value_is_a_change_other_text_is_not() {
        let before = finding("sysctl.fwd", "fail", "medium", "1");
        let mut latest = HashMap::new();
        apply(&mut latest, &HashMap::new(), &report_json(std::slice::from_ref(&before), ""), true);
        let stored = HashMap::from([("sysctl.fwd".to_string(), before)]);
        // Same status, other observed value: a change.
        let observed_two = report_json(&[finding("sysctl.fwd", "fail", "medium", "2")], "");
        let p = apply(&mut latest.clone(), &stored, &observed_two, true);
        assert_eq!(kinds(&p), ["change sysctl.fwd", "latest sysctl.fwd"]);
        // Same status and observed value, other text (the title): rewritten, no change.
        let retitled =
            report_json(&[finding("sysctl.fwd", "fail", "medium", "1").replace("t sysctl.fwd", "new title")], "");
        let p = apply(&mut latest, &stored, &retitled, true);
        assert_eq!(kinds(&p), ["latest sysctl.fwd"]);
    }

    #[test]
    fn null_and_absent_observed_values_are_the_same() {
        assert_eq!(observed_of_stored(r#"{"observed":null}"#), None);
        assert_eq!(observed_of_stored(r#"{}"#), None);
        assert_eq!(observed_of_stored("not json"), None);
        assert_eq!(observed_of_stored(r#"{"observed":[1, 2]}"#).as_deref(), Some("[1, 2]"));
    }

    #[test]
    fn a_new_check_after_the_baseline_is_a_change_from_nothing() {
        let mut latest = HashMap::new();
        apply(&mut latest, &HashMap::new(), &report_json(&[finding("ssh.root", "pass", "high", "null")], ""), true);
        let json = report_json(
            &[finding("ssh.root", "pass", "high", "null"), finding("files.shadow", "pass", "low", "null")],
            "",
        );
        let p = apply(&mut latest, &HashMap::new(), &json, true);
        assert_eq!(kinds(&p), ["change files.shadow", "latest files.shadow"]);
        let IndexOp::Change(c) = &p.ops[0] else { unreachable!() };
        assert_eq!((c.old_status, c.old_observed.as_deref()), (None, None));
    }

    #[test]
    fn a_full_report_forgets_missing_checks_a_partial_one_does_not() {
        let two = report_json(
            &[finding("ssh.root", "pass", "high", "null"), finding("kubelet.anon", "fail", "critical", "true")],
            "",
        );
        let one = report_json(&[finding("ssh.root", "pass", "high", "null")], "");
        let mut latest = HashMap::new();
        apply(&mut latest, &HashMap::new(), &two, true);
        let p = apply(&mut latest.clone(), &HashMap::new(), &one, false);
        assert!(p.ops.is_empty(), "{p:?}");
        assert_eq!(p.counts, Counts { pass: 1, fail: 1, blocking: 1, ..Counts::default() });
        let p = apply(&mut latest, &HashMap::new(), &one, true);
        assert_eq!(kinds(&p), ["forget kubelet.anon"]);
        assert_eq!(p.counts, Counts { pass: 1, ..Counts::default() });
        assert!(!latest.contains_key("kubelet.anon"));
    }

    #[test]
    fn a_finding_that_cannot_be_indexed_is_reported_and_the_others_are_indexed() {
        let json = report_json(
            &[r#"{"id":"x.y","status":"maybe"}"#.to_string(), finding("ssh.root", "error", "high", "null")],
            "",
        );
        let p = apply(&mut HashMap::new(), &HashMap::new(), &json, true);
        assert_eq!(kinds(&p), ["malformed", "latest ssh.root"]);
        let IndexOp::Malformed { detail } = &p.ops[0] else { unreachable!() };
        assert!(detail.contains("cannot be indexed"), "{detail}");
        assert_eq!(p.counts, Counts { error: 1, blocking: 1, ..Counts::default() });
    }

    #[test]
    fn escaped_strings_are_indexed() {
        let json = report_json(
            &[r#"{"id":"a.b","status":"fail","severity":"high","family":"a","title":"say \"no\"\nplease"}"#
                .to_string()],
            "",
        );
        let p = apply(&mut HashMap::new(), &HashMap::new(), &json, true);
        let IndexOp::Latest(row) = &p.ops[0] else { unreachable!() };
        assert_eq!(row.title, "say \"no\"\nplease");
    }

    #[test]
    fn blocking_follows_the_shared_vocabulary() {
        assert!(is_blocking(Status::Fail, "high"));
        assert!(is_blocking(Status::Error, "critical"));
        assert!(!is_blocking(Status::Waived, "critical"));
        assert!(!is_blocking(Status::Fail, "medium"));
        assert!(!is_blocking(Status::Fail, "HIGH"), "an unknown severity is never blocking");
        let stored = LatestFinding::of_stored("{}", "fail", "critical").unwrap();
        assert!(stored.blocking);
        assert_eq!(stored.digest, <[u8; 32]>::from(Sha256::digest(b"{}")));
        assert_eq!(LatestFinding::of_stored("{}", "failed", "critical"), None);
    }

    #[test]
    fn the_node_description_reads_what_the_report_says() {
        let json = report_json(
            &[],
            r#""agent_version":"1.2.3","node":{"hostname":"","kernel":"6.1","os":{"pretty_name":"Debian 12"}},"profile":{"name":"kosmos-external","version":"3"},"#,
        );
        let report = ReportIndex::from_parts(IndexedReport::parse(json.as_bytes()).unwrap()).unwrap();
        let d = NodeDescription::of(&report);
        assert_eq!(
            d,
            NodeDescription {
                os_pretty: Some("Debian 12"),
                kernel: Some("6.1"),
                agent_version: Some("1.2.3"),
                profile: Some("kosmos-external v3".into()),
                hostname: None,
            }
        );
        let bare = report_json(&[], r#""profile":{"name":"p"},"#);
        let report = ReportIndex::from_parts(IndexedReport::parse(bare.as_bytes()).unwrap()).unwrap();
        assert_eq!(NodeDescription::of(&report).profile.as_deref(), Some("p"));
    }
}
