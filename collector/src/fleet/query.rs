//! Reads a [`FleetReport`] from the SQLite store.
//!
//! The connection is read-only (WAL lets it run beside the writer). Counts
//! come from one scan of the narrow `findings_by_status` index, aggregated
//! here; only the findings a node's section shows are read in full. Drift
//! comes from `finding_changes`, the trend from `node_days`, integrity from
//! `events`: none of them reads the envelopes themselves, so the cost does
//! not grow with the retained history of raw attestations.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use serde::Deserialize;

use super::srm::{self, AREAS};
use super::{
    CheckReport, DRIFT_FAMILIES, Detail, DriftEntry, FleetReport, INTEGRITY_EVENTS_SHOWN, IntegrityEvent, NodeFinding,
    NodeIntegrity, NodeReport, NodeState, Options, Reference, SCHEMA, SEVERITIES, Settings, SrmArea, StatusCounts,
    Summary, TrendDay, WAIVER_SOON_DAYS, WaiverEntry, rfc3339, round1,
};
use crate::store::{StoreError, sql};

const DAY_MS: i64 = 86_400_000;

/// Open the store read-only.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open { path: path.display().to_string(), source };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(open_err)?;
    Ok(conn)
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
    sample_node: String,
    counts: StatusCounts,
    failing_nodes: Vec<String>,
    error_nodes: Vec<String>,
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

/// Column `i` of `r` as borrowed text.
fn text_at<'r>(r: &'r rusqlite::Row<'_>, i: usize, doing: &'static str) -> Result<&'r str, StoreError> {
    r.get_ref(i).and_then(|v| v.as_str().map_err(rusqlite::Error::from)).map_err(sql(doing))
}

fn ms_to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Build the fleet report.
pub fn build(conn: &Connection, opts: &Options) -> Result<FleetReport, StoreError> {
    let since = opts.since_ms.unwrap_or(i64::MIN);
    let stale_after_ms = i64::try_from(opts.interval_secs.saturating_mul(3).saturating_mul(1000)).unwrap_or(i64::MAX);

    // Nodes.
    let mut nodes: Vec<NodeReport> = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT id, hostname, enrolled_ms, revoked_ms, head_seq, last_created_ms, os_pretty, kernel,
                        agent_version, profile
                 FROM nodes ORDER BY hostname, id",
            )
            .map_err(sql("listing nodes"))?;
        let mut rows = stmt.query([]).map_err(sql("listing nodes"))?;
        while let Some(r) = rows.next().map_err(sql("listing nodes"))? {
            let revoked_ms: Option<i64> = r.get(3).map_err(sql("listing nodes"))?;
            let last: Option<i64> = r.get(5).map_err(sql("listing nodes"))?;
            let state = match (revoked_ms, last) {
                (Some(_), _) => NodeState::Revoked,
                (None, None) => NodeState::NeverReported,
                (None, Some(t)) if opts.now_ms.saturating_sub(t) > stale_after_ms => NodeState::Stale,
                _ => NodeState::Ok,
            };
            let enrolled: i64 = r.get(2).map_err(sql("listing nodes"))?;
            nodes.push(NodeReport {
                id: r.get(0).map_err(sql("listing nodes"))?,
                hostname: r.get(1).map_err(sql("listing nodes"))?,
                state,
                os: r.get(6).map_err(sql("listing nodes"))?,
                kernel: r.get(7).map_err(sql("listing nodes"))?,
                agent_version: r.get(8).map_err(sql("listing nodes"))?,
                profile: r.get(9).map_err(sql("listing nodes"))?,
                enrolled_at: rfc3339(enrolled),
                revoked_at: revoked_ms.map(rfc3339),
                last_attestation_at: last.map(rfc3339),
                last_attestation_age_secs: last.map(|t| opts.now_ms.saturating_sub(t) / 1000),
                head_seq: ms_to_u64(r.get(4).map_err(sql("listing nodes"))?),
                counts: StatusCounts::default(),
                blocking: 0,
                failing_by_severity: BTreeMap::new(),
                score_pct: None,
                compliant: false,
                integrity_events: 0,
                findings: Vec::new(),
            });
        }
    }
    let node_index: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect();

    // One scan of the status index: node, check, family and severity counts.
    let mut checks: Vec<CheckAgg> = Vec::new();
    let mut check_index: HashMap<String, usize> = HashMap::new();
    let mut findings = StatusCounts::default();
    let mut failures_by_family: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures_by_severity: BTreeMap<String, u64> = SEVERITIES.iter().map(|s| (s.to_string(), 0)).collect();
    let mut marks: Vec<Vec<AreaMark>> = vec![vec![AreaMark::default(); AREAS.len()]; nodes.len()];
    let mut unmapped: BTreeMap<String, Vec<AreaMark>> = BTreeMap::new();
    let mut unmapped_failing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    {
        let doing = "scanning findings";
        let mut stmt = conn
            .prepare(
                "SELECT status, node_id, check_id, severity, family FROM findings_latest INDEXED BY findings_by_status",
            )
            .map_err(sql(doing))?;
        let mut rows = stmt.query([]).map_err(sql(doing))?;
        let text = |r: &rusqlite::Row<'_>, i: usize| -> Result<String, StoreError> {
            r.get::<_, String>(i).map_err(sql(doing))
        };
        while let Some(r) = rows.next().map_err(sql(doing))? {
            let status = text_at(r, 0, doing)?;
            let node_id = text_at(r, 1, doing)?;
            let check_id = text_at(r, 2, doing)?;
            let severity = text_at(r, 3, doing)?;
            let family = text_at(r, 4, doing)?;
            let Some(&ni) = node_index.get(node_id) else { continue };
            findings.add(status);
            let failing = matches!(status, "fail" | "error");
            let node = &mut nodes[ni];
            node.counts.add(status);
            if failing && matches!(severity, "critical" | "high") {
                node.blocking += 1;
            }
            if status == "fail" {
                *node.failing_by_severity.entry(severity.to_string()).or_insert(0) += 1;
                *failures_by_severity.entry(severity.to_string()).or_insert(0) += 1;
                match failures_by_family.get_mut(family) {
                    Some(n) => *n += 1,
                    None => {
                        failures_by_family.insert(family.to_string(), 1);
                    }
                }
            }
            let decided = matches!(status, "pass" | "fail" | "error" | "waived");
            let mark = match srm::area_of(family) {
                Some(a) => &mut marks[ni][a],
                None => {
                    if failing {
                        unmapped_failing.entry(family.to_string()).or_default().push(check_id.to_string());
                    }
                    let v =
                        unmapped.entry(family.to_string()).or_insert_with(|| vec![AreaMark::default(); marks.len()]);
                    &mut v[ni]
                }
            };
            mark.decided |= decided;
            mark.failing |= failing;
            let ci = match check_index.get(check_id) {
                Some(&ci) => ci,
                None => {
                    checks.push(CheckAgg {
                        id: text(r, 2)?,
                        family: family.to_string(),
                        severity: severity.to_string(),
                        sample_node: node_id.to_string(),
                        ..CheckAgg::default()
                    });
                    check_index.insert(check_id.to_string(), checks.len() - 1);
                    checks.len() - 1
                }
            };
            let c = &mut checks[ci];
            c.counts.add(status);
            match status {
                "fail" => c.failing_nodes.push(node_id.to_string()),
                "error" => c.error_nodes.push(node_id.to_string()),
                _ => {}
            }
        }
    }

    // Findings shown in each node's section.
    {
        let doing = "reading findings";
        let query = match opts.detail {
            Detail::Failing => {
                "SELECT node_id, seq, finding_json FROM findings_latest
                 WHERE status IN ('fail', 'error', 'waived', 'not_applicable')"
            }
            Detail::All => "SELECT node_id, seq, finding_json FROM findings_latest",
        };
        let mut stmt = conn.prepare(query).map_err(sql(doing))?;
        let mut rows = stmt.query([]).map_err(sql(doing))?;
        while let Some(r) = rows.next().map_err(sql(doing))? {
            let node_id = text_at(r, 0, doing)?;
            let Some(&ni) = node_index.get(node_id) else { continue };
            let seq: i64 = r.get(1).map_err(sql(doing))?;
            let json = text_at(r, 2, doing)?;
            // The store only holds findings that indexed cleanly at ingest.
            if let Ok(mut f) = serde_json::from_str::<NodeFinding>(json) {
                f.seq = ms_to_u64(seq);
                nodes[ni].findings.push(f);
            }
        }
    }
    let status_rank = |s: &str| ["fail", "error", "waived", "not_applicable", "pass"].iter().position(|x| *x == s);
    let severity_rank = |s: &str| SEVERITIES.iter().position(|x| *x == s);
    for n in &mut nodes {
        n.findings.sort_by(|a, b| {
            (status_rank(&a.status), severity_rank(&a.severity), &a.id).cmp(&(
                status_rank(&b.status),
                severity_rank(&b.severity),
                &b.id,
            ))
        });
        n.score_pct = n.counts.score_pct();
        n.compliant = n.state == NodeState::Ok && n.blocking == 0 && n.counts.total() > 0;
    }

    // Check metadata, from one stored finding per check.
    let mut check_reports = Vec::with_capacity(checks.len());
    {
        let doing = "reading check metadata";
        let mut stmt = conn
            .prepare("SELECT title, finding_json FROM findings_latest WHERE node_id = ?1 AND check_id = ?2")
            .map_err(sql(doing))?;
        for c in checks {
            let (title, json): (String, String) =
                stmt.query_row(params![c.sample_node, c.id], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql(doing))?;
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
                failing_nodes: c.failing_nodes,
                error_nodes: c.error_nodes,
            });
        }
    }
    check_reports.sort_by(|a, b| {
        let failing = |c: &CheckReport| std::cmp::Reverse(c.counts.fail + c.counts.error);
        (failing(a), severity_rank(&a.severity), &a.id).cmp(&(failing(b), severity_rank(&b.severity), &b.id))
    });

    // Drift timeline.
    let hostname_of = |id: &str| node_index.get(id).map_or_else(String::new, |&i| nodes[i].hostname.clone());
    let mut drift = Vec::new();
    {
        let doing = "reading the drift timeline";
        let families = DRIFT_FAMILIES.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(", ");
        let mut stmt = conn
            .prepare(&format!(
                "SELECT at_ms, node_id, check_id, family, seq, old_status, new_status, old_observed, new_observed
                 FROM finding_changes WHERE at_ms >= ?1 AND family IN ({families}) ORDER BY at_ms DESC, id DESC"
            ))
            .map_err(sql(doing))?;
        let mut rows = stmt.query([since]).map_err(sql(doing))?;
        while let Some(r) = rows.next().map_err(sql(doing))? {
            let node_id: String = r.get(1).map_err(sql(doing))?;
            drift.push(DriftEntry {
                at: rfc3339(r.get(0).map_err(sql(doing))?),
                hostname: hostname_of(&node_id),
                node_id,
                check_id: r.get(2).map_err(sql(doing))?,
                family: r.get(3).map_err(sql(doing))?,
                seq: ms_to_u64(r.get(4).map_err(sql(doing))?),
                old_status: r.get(5).map_err(sql(doing))?,
                new_status: r.get(6).map_err(sql(doing))?,
                old_observed: r.get(7).map_err(sql(doing))?,
                new_observed: r.get(8).map_err(sql(doing))?,
            });
        }
    }

    // Integrity.
    let mut by_kind: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    {
        let doing = "counting events";
        let mut stmt = conn
            .prepare("SELECT node_id, kind, COUNT(*) FROM events WHERE at_ms >= ?1 GROUP BY node_id, kind")
            .map_err(sql(doing))?;
        let mut rows = stmt.query([since]).map_err(sql(doing))?;
        while let Some(r) = rows.next().map_err(sql(doing))? {
            let n: i64 = r.get(2).map_err(sql(doing))?;
            by_kind
                .entry(r.get(0).map_err(sql(doing))?)
                .or_default()
                .insert(r.get(1).map_err(sql(doing))?, ms_to_u64(n));
        }
    }
    let mut integrity = Vec::with_capacity(nodes.len());
    {
        let doing = "reading events";
        let mut stmt = conn
            .prepare(
                "SELECT at_ms, kind, seq, detail FROM events WHERE node_id = ?1 AND at_ms >= ?2
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(sql(doing))?;
        for n in &mut nodes {
            let events_by_kind = by_kind.remove(&n.id).unwrap_or_default();
            n.integrity_events = events_by_kind.values().sum();
            let mut recent = Vec::new();
            if n.integrity_events > 0 {
                let limit = i64::try_from(INTEGRITY_EVENTS_SHOWN).unwrap_or(20);
                let mut rows = stmt.query(params![n.id, since, limit]).map_err(sql(doing))?;
                while let Some(r) = rows.next().map_err(sql(doing))? {
                    recent.push(IntegrityEvent {
                        at: rfc3339(r.get(0).map_err(sql(doing))?),
                        kind: r.get(1).map_err(sql(doing))?,
                        seq: r.get::<_, Option<i64>>(2).map_err(sql(doing))?.map(ms_to_u64),
                        detail: r.get(3).map_err(sql(doing))?,
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

    // Waivers.
    let soon_ms = opts.now_ms + WAIVER_SOON_DAYS * DAY_MS;
    let mut waivers = Vec::new();
    for n in &nodes {
        for f in &n.findings {
            let Some(w) = &f.waiver else { continue };
            let expires_ms = w.expires.as_deref().and_then(|d| super::parse_date(d).ok());
            let expired = w.expired.unwrap_or(false) || expires_ms.is_some_and(|t| t <= opts.now_ms);
            waivers.push(WaiverEntry {
                node_id: n.id.clone(),
                hostname: n.hostname.clone(),
                check_id: f.id.clone(),
                reason: w.reason.clone(),
                expires: w.expires.clone(),
                expired,
                expires_soon: !expired && expires_ms.is_some_and(|t| t <= soon_ms),
                status: f.status.clone(),
            });
        }
    }

    // Trend.
    let mut trend = Vec::new();
    {
        let doing = "reading the trend";
        let mut stmt = conn
            .prepare(
                "SELECT day, COUNT(*), SUM(blocking = 0), SUM(pass), SUM(pass + fail + error)
                 FROM node_days WHERE day >= ?1 GROUP BY day ORDER BY day",
            )
            .map_err(sql(doing))?;
        let since_day = if since == i64::MIN { i64::MIN } else { since.div_euclid(DAY_MS) };
        let mut rows = stmt.query([since_day]).map_err(sql(doing))?;
        while let Some(r) = rows.next().map_err(sql(doing))? {
            let day: i64 = r.get(0).map_err(sql(doing))?;
            let reporting = ms_to_u64(r.get(1).map_err(sql(doing))?);
            let compliant = ms_to_u64(r.get::<_, Option<i64>>(2).map_err(sql(doing))?.unwrap_or(0));
            let pass: i64 = r.get::<_, Option<i64>>(3).map_err(sql(doing))?.unwrap_or(0);
            let decided: i64 = r.get::<_, Option<i64>>(4).map_err(sql(doing))?.unwrap_or(0);
            trend.push(TrendDay {
                day: rfc3339(day * DAY_MS).chars().take(10).collect(),
                nodes_reporting: reporting,
                nodes_compliant: compliant,
                compliant_pct: if reporting > 0 { round1(100.0 * compliant as f64 / reporting as f64) } else { 0.0 },
                score_pct: (decided > 0).then(|| round1(100.0 * pass as f64 / decided as f64)),
            });
        }
    }

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
        nodes,
        checks: check_reports,
        drift,
        integrity,
        waivers,
        trend,
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

/// Every finding of one node (passes included), for the dashboard's node
/// page.
pub fn node_findings(conn: &Connection, node_id: &str) -> Result<Vec<NodeFinding>, StoreError> {
    let doing = "reading a node's findings";
    let mut stmt = conn
        .prepare("SELECT seq, finding_json FROM findings_latest WHERE node_id = ?1 ORDER BY check_id")
        .map_err(sql(doing))?;
    let mut rows = stmt.query([node_id]).map_err(sql(doing))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql(doing))? {
        let seq: i64 = r.get(0).map_err(sql(doing))?;
        let json: String = r.get(1).map_err(sql(doing))?;
        if let Ok(mut f) = serde_json::from_str::<NodeFinding>(&json) {
            f.seq = ms_to_u64(seq);
            out.push(f);
        }
    }
    Ok(out)
}
