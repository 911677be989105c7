//! The state notifications: a node going stale and coming back, and
//! expiry approaching (node certificates, end-of-life dates, waivers).
//! Nothing in the store changes when time passes, so these come from
//! periodic scans, and a mark per announced state makes each go out once
//! (and `node.back` only after a `node.stale`). Pure functions of the
//! store's rows, the marks and the time.

use std::collections::HashSet;

use chrono::NaiveDate;
use kosmos_proto::verdict::Severity;
use serde_json::{Value, json};

use super::notice::{Notice, node_label, rfc3339};
use crate::store::NodeRecord;
use crate::store::outbox::{END_OF_LIFE_CHECKS, MarkChanges, WatchedFinding};

/// The mark prefix of stale nodes.
pub const STALE: &str = "stale:";
/// The mark prefixes of the expiry scan.
pub const EXPIRY_PREFIXES: [&str; 3] = ["cert:", "eol:", "waiver:"];

const DAY_MS: i64 = 86_400_000;

/// Nodes that went stale or came back since the marks were set. A node is
/// stale when it has reported before and nothing came from it for
/// `stale_after_ms`; a revoked or deleted node's mark is cleared quietly.
pub fn stale_transitions(
    nodes: &[NodeRecord],
    marks: &HashSet<String>,
    now_ms: i64,
    stale_after_ms: i64,
) -> (Vec<Notice>, MarkChanges) {
    let mut notices = Vec::new();
    let mut changes = MarkChanges::default();
    let mut known = HashSet::new();
    for n in nodes {
        let key = format!("{STALE}{}", n.id);
        let marked = marks.contains(&key);
        known.insert(key.clone());
        let Some(seen) = n.last_seen_ms else { continue };
        if n.revoked_at_ms.is_some() {
            if marked {
                changes.clear.push(key);
            }
            continue;
        }
        let silent_ms = now_ms.saturating_sub(seen);
        let stale = silent_ms > stale_after_ms;
        let node = node_label(&n.id, Some(&n.hostname));
        let detail = json!({"last_seen_at": rfc3339(seen), "silent_for_secs": silent_ms / 1000});
        let notice = |kind: &str, severity, origin: String, summary: String| Notice {
            kind: kind.into(),
            severity,
            subject: "node".into(),
            node_id: n.id.clone(),
            hostname: Some(n.hostname.clone()).filter(|h| !h.is_empty()),
            at_ms: now_ms,
            origin,
            summary,
            detail: detail.clone(),
        };
        if stale && !marked {
            notices.push(notice(
                "node.stale",
                Severity::High,
                format!("stale:{}:{seen}", n.id),
                format!("{node} has not reported for {} s (last seen {})", silent_ms / 1000, rfc3339(seen)),
            ));
            changes.set.push(key);
        } else if !stale && marked {
            notices.push(notice(
                "node.back",
                Severity::Info,
                format!("back:{}:{seen}", n.id),
                format!("{node} reports again (last seen {})", rfc3339(seen)),
            ));
            changes.clear.push(key);
        }
    }
    changes.clear.extend(marks.iter().filter(|k| k.starts_with(STALE) && !known.contains(*k)).cloned());
    (notices, changes)
}

/// An expiry warning's decision: the thresholds (days) crossed with
/// `days_left` to go, and whether the smallest of them is not marked yet.
/// Returns (marks to set, the threshold to announce).
fn crossed(prefix: &str, thresholds: &[i64], days_left: i64, marks: &HashSet<String>) -> Option<(Vec<String>, i64)> {
    let crossed: Vec<i64> = thresholds.iter().copied().filter(|t| days_left <= *t).collect();
    let smallest = *crossed.iter().min()?;
    if marks.contains(&format!("{prefix}:{smallest}")) {
        return None;
    }
    let set = crossed.iter().map(|t| format!("{prefix}:{t}")).filter(|k| !marks.contains(k)).collect();
    Some((set, smallest))
}

/// Settings of the expiry scan.
#[derive(Debug, Clone)]
pub struct ExpiryWarnings {
    pub certificate_days: Vec<i64>,
    pub end_of_life_days: Vec<i64>,
    pub waiver_days: Vec<i64>,
}

fn days_until(date: NaiveDate, today: NaiveDate) -> i64 {
    (date - today).num_days()
}

fn parse_date(v: Option<&Value>) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(v?.as_str()?, "%Y-%m-%d").ok()
}

/// Node certificates, end-of-life dates and waivers that crossed a
/// warning threshold and were not announced at it yet.
pub fn expiry_warnings(
    nodes: &[NodeRecord],
    findings: &[WatchedFinding],
    marks: &HashSet<String>,
    now_ms: i64,
    warn: &ExpiryWarnings,
) -> (Vec<Notice>, MarkChanges) {
    let mut notices = Vec::new();
    let mut changes = MarkChanges::default();
    let Some(today) = chrono::DateTime::from_timestamp_millis(now_ms).map(|t| t.date_naive()) else {
        return (notices, changes);
    };
    for n in nodes.iter().filter(|n| n.revoked_at_ms.is_none()) {
        let Ok(not_after) = crate::pki::not_after(&n.cert_der) else {
            tracing::warn!(node = %n.id, "the node's stored certificate cannot be read: no expiry warning for it");
            continue;
        };
        let days_left = (not_after * 1000 - now_ms).div_euclid(DAY_MS);
        let prefix = format!("cert:{}:{}", n.id, crate::store::judge::hex(&n.cert_sha256[..8]));
        let Some((set, threshold)) = crossed(&prefix, &warn.certificate_days, days_left, marks) else { continue };
        let node = node_label(&n.id, Some(&n.hostname));
        notices.push(Notice {
            kind: "certificate.node_expiring".into(),
            severity: if days_left <= 7 { Severity::Critical } else { Severity::High },
            subject: "node_certificate".into(),
            node_id: n.id.clone(),
            hostname: Some(n.hostname.clone()).filter(|h| !h.is_empty()),
            at_ms: now_ms,
            origin: format!("{prefix}:{threshold}"),
            summary: if days_left < 0 {
                format!("{node}: its collector client certificate expired on {}", rfc3339(not_after * 1000))
            } else {
                format!(
                    "{node}: its collector client certificate expires in {days_left} days ({}); re-enroll the node",
                    rfc3339(not_after * 1000)
                )
            },
            detail: json!({"not_after": rfc3339(not_after * 1000), "days_left": days_left, "threshold_days": threshold}),
        });
        changes.set.extend(set);
    }
    for f in findings {
        let Ok(finding) = serde_json::from_str::<Value>(&f.finding_json) else {
            tracing::warn!(node = %f.node_id, check = %f.check_id, "a stored finding is not JSON: no expiry warning for it");
            continue;
        };
        let node = node_label(&f.node_id, f.hostname.as_deref());
        if END_OF_LIFE_CHECKS.contains(&f.check_id.as_str()) && f.status == "pass" {
            let observed = finding.get("observed");
            // The end of any security support: extended when there is one.
            let date = observed.and_then(|o| {
                parse_date(o.get("extended_support_end"))
                    .or_else(|| parse_date(o.get("standard_support_end")))
                    .or_else(|| parse_date(o.get("end_of_life")))
            });
            let Some(date) = date else { continue };
            let days_left = days_until(date, today);
            if days_left < 0 {
                // Reached: the check itself fails from the next report on.
                continue;
            }
            let prefix = format!("eol:{}:{}:{date}", f.node_id, f.check_id);
            let Some((set, threshold)) = crossed(&prefix, &warn.end_of_life_days, days_left, marks) else { continue };
            let what = observed
                .and_then(|o| o.get("os").or_else(|| o.get("version")))
                .and_then(Value::as_str)
                .unwrap_or(&f.check_id)
                .to_string();
            notices.push(Notice {
                kind: "end_of_life.approaching".into(),
                severity: if days_left <= 30 { Severity::High } else { Severity::Medium },
                subject: f.check_id.clone(),
                node_id: f.node_id.clone(),
                hostname: f.hostname.clone(),
                at_ms: now_ms,
                origin: format!("{prefix}:{threshold}"),
                summary: format!("{node}: {what} reaches its end of life in {days_left} days ({date})"),
                detail: json!({"check_id": f.check_id, "title": f.title, "end_of_life": date.to_string(),
                               "days_left": days_left, "threshold_days": threshold}),
            });
            changes.set.extend(set);
        }
        if f.status == "waived"
            && let Some(w) = finding.get("waiver")
            && let Some(expires) = parse_date(w.get("expires"))
        {
            let days_left = days_until(expires, today);
            if days_left < 0 {
                // Expired: the next report fails the check (waiver.expired).
                continue;
            }
            let prefix = format!("waiver:{}:{}:{expires}", f.node_id, f.check_id);
            let Some((set, threshold)) = crossed(&prefix, &warn.waiver_days, days_left, marks) else { continue };
            let reason = w.get("reason").and_then(Value::as_str).unwrap_or_default();
            notices.push(Notice {
                kind: "waiver.expiring".into(),
                severity: Severity::parse(&f.severity).unwrap_or(Severity::Medium),
                subject: f.check_id.clone(),
                node_id: f.node_id.clone(),
                hostname: f.hostname.clone(),
                at_ms: now_ms,
                origin: format!("{prefix}:{threshold}"),
                summary: format!(
                    "{node}: the waiver of {} ({}) expires in {days_left} days ({expires}); the check counts again after",
                    f.check_id, f.title
                ),
                detail: json!({"check_id": f.check_id, "title": f.title, "expires": expires.to_string(),
                               "reason": reason, "days_left": days_left, "threshold_days": threshold}),
            });
            changes.set.extend(set);
        }
    }
    (notices, changes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn node(id: &str, last_seen: Option<i64>) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            hostname: format!("h-{id}"),
            machine_id: String::new(),
            cert_der: Vec::new(),
            cert_sha256: [7; 32],
            enrolled_at_ms: 0,
            revoked_at_ms: None,
            head_seq: 0,
            head_hash: None,
            last_seen_ms: last_seen,
        }
    }

    #[test]
    fn stale_goes_out_once_and_back_only_after_stale() {
        let now = 10_000_000;
        let nodes = [node("a", Some(now - 1000)), node("b", Some(now - 900_001)), node("never", None)];
        let (n, m) = stale_transitions(&nodes, &HashSet::new(), now, 900_000);
        assert_eq!(n.iter().map(|n| (n.kind.as_str(), n.node_id.as_str())).collect::<Vec<_>>(), [("node.stale", "b")]);
        assert_eq!(m.set, ["stale:b"]);
        let marks: HashSet<String> = m.set.into_iter().collect();
        let (n, m) = stale_transitions(&nodes, &marks, now + 1000, 900_000);
        assert!(n.is_empty() && m.is_empty());
        let back = [node("a", Some(now)), node("b", Some(now))];
        let (n, m) = stale_transitions(&back, &marks, now + 1000, 900_000);
        assert_eq!(n.iter().map(|n| n.kind.as_str()).collect::<Vec<_>>(), ["node.back"]);
        assert_eq!(m.clear, ["stale:b"]);
        // A deleted node's mark goes quietly.
        let (n, m) = stale_transitions(&[], &marks, now, 900_000);
        assert!(n.is_empty());
        assert_eq!(m.clear, ["stale:b"]);
    }

    fn watched(check: &str, status: &str, json: &str) -> WatchedFinding {
        WatchedFinding {
            node_id: "n1".into(),
            hostname: Some("h1".into()),
            check_id: check.into(),
            status: status.into(),
            severity: "high".into(),
            title: "t".into(),
            finding_json: json.into(),
        }
    }

    #[test]
    fn expiry_warnings_fire_at_each_threshold_once() {
        let warn =
            ExpiryWarnings { certificate_days: vec![30, 7], end_of_life_days: vec![90, 30], waiver_days: vec![14, 3] };
        // 2026-12-03T00:00:00Z
        let now = 1_796_256_000_000;
        let findings = [
            watched(
                "os.end_of_life",
                "pass",
                r#"{"observed":{"os":"Debian GNU/Linux 12","standard_support_end":"2026-06-10","extended_support_end":"2027-01-31"}}"#,
            ),
            watched("ssh.x", "waived", r#"{"waiver":{"reason":"CHG-1","expires":"2026-12-05","expired":false}}"#),
            watched("ssh.y", "waived", r#"{"waiver":{"reason":"CHG-2","expires":"2027-12-05","expired":false}}"#),
        ];
        let (n, m) = expiry_warnings(&[], &findings, &HashSet::new(), now, &warn);
        let got: Vec<(&str, i64)> =
            n.iter().map(|n| (n.kind.as_str(), n.detail["threshold_days"].as_i64().unwrap())).collect();
        assert_eq!(got, [("end_of_life.approaching", 90), ("waiver.expiring", 3)]);
        assert_eq!(n[0].detail["days_left"], 59);
        // Both waiver thresholds are marked: the 14-day one never goes out late.
        assert!(m.set.contains(&"waiver:n1:ssh.x:2026-12-05:14".to_string()), "{:?}", m.set);
        let marks: HashSet<String> = m.set.into_iter().collect();
        let (n, _) = expiry_warnings(&[], &findings, &marks, now, &warn);
        assert!(n.is_empty());
        // 30 days before the end of life: the next threshold.
        let (n, _) = expiry_warnings(&[], &findings, &marks, now + 30 * DAY_MS, &warn);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].detail["threshold_days"], 30);
    }
}
