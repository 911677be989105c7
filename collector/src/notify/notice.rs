//! What is worth a message: [`Notice`]s made from the drift timeline, the
//! chain events and the scans, each with a stable kind; and the messages
//! ([`Message`]) they become, single or grouped, with the JSON body that
//! `schemas/notification.v1.schema.json` describes. Pure functions: the
//! notifier feeds them rows and writes what they return.

use std::collections::BTreeMap;

use kosmos_proto::verdict::Severity;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::store::outbox::{ChangeRow, EventRow};

/// The body's schema identifier.
pub const SCHEMA: &str = "kosmos.notification/v1";

/// The check families whose changes are drift worth a message, and the
/// name of the drift kind (`drift.<name>`).
pub const DRIFT_FAMILIES: &[(&str, &str)] = &[
    ("kubelet", "kubelet"),
    ("kube_proxy", "kube_proxy"),
    ("firewall", "firewall"),
    ("exposure", "exposure"),
    ("ssh", "sshd"),
    ("sysctl", "sysctl"),
];

/// Checks about the kubelet's own certificates.
const KUBELET_CERTIFICATE_CHECKS: &[&str] = &[
    "kubelet.client_cert_expiring",
    "kubelet.client_cert_expiry",
    "kubelet.serving_cert_expiring",
    "kubelet.serving_cert_expiry",
];

/// Every kind a message can have (the JSON Schema's enum; the tests check
/// both agree).
pub const KINDS: &[&str] = &[
    "finding.failing",
    "finding.erroring",
    "finding.fixed",
    "drift.kubelet",
    "drift.kube_proxy",
    "drift.firewall",
    "drift.exposure",
    "drift.sshd",
    "drift.sysctl",
    "chain.gap",
    "chain.fork",
    "chain.replay",
    "chain.spool_overflow",
    "chain.clock_skew",
    "chain.clock_backwards",
    "chain.bad_signature",
    "chain.identity_mismatch",
    "chain.revoked",
    "chain.seq_out_of_range",
    "chain.malformed_envelope",
    "chain.malformed_report",
    "chain.store_failed",
    "chain.false_claim",
    "node.stale",
    "node.back",
    "certificate.node_expiring",
    "certificate.kubelet_expiring",
    "end_of_life.approaching",
    "waiver.expiring",
    "waiver.expired",
    "notification.test",
];

/// One event for one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: String,
    pub severity: Severity,
    /// What the event is about (a check id, a chain event kind, `node`):
    /// a storm is many notices of one kind and subject.
    pub subject: String,
    pub node_id: String,
    pub hostname: Option<String>,
    pub at_ms: i64,
    /// Unique per source event: the idempotency key is derived from it.
    pub origin: String,
    /// One line for people.
    pub summary: String,
    /// The kind's own fields.
    pub detail: Value,
}

fn severity_of(s: Option<&str>) -> Severity {
    s.and_then(Severity::parse).unwrap_or(Severity::Medium)
}

/// Parse a stored observed value (JSON text); a value that is not JSON is
/// kept as text.
fn observed(v: Option<&str>) -> Value {
    match v {
        None => Value::Null,
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
    }
}

pub(crate) fn node_label(node_id: &str, hostname: Option<&str>) -> String {
    match hostname {
        Some(h) if !h.is_empty() => format!("{h} ({node_id})"),
        _ => node_id.to_string(),
    }
}

/// The waiver of a stored finding: (expires, reason, expired).
fn waiver_of(finding_json: Option<&str>) -> Option<(String, String, bool)> {
    let v: Value = serde_json::from_str(finding_json?).ok()?;
    let w = v.get("waiver")?;
    Some((
        w.get("expires")?.as_str()?.to_string(),
        w.get("reason").and_then(Value::as_str).unwrap_or_default().to_string(),
        w.get("expired").and_then(Value::as_bool).unwrap_or(false),
    ))
}

/// The notices a drift row makes. (A node's first report makes no drift
/// rows: it is the node's baseline. A row without a previous status is a
/// check new to the node's profile: failing, it is news; otherwise not.)
pub fn from_change(c: &ChangeRow) -> Vec<Notice> {
    let new = c.new_status.as_str();
    let old = c.old_status.as_deref();
    let was = old.unwrap_or("not evaluated");
    let severity = severity_of(c.severity.as_deref());
    let title = c.title.clone().unwrap_or_else(|| c.check_id.clone());
    let node = node_label(&c.node_id, c.hostname.as_deref());
    let detail = json!({
        "check_id": c.check_id,
        "title": title,
        "family": c.family,
        "seq": c.seq,
        "previous_status": old,
        "status": new,
        "previous_observed": observed(c.old_observed.as_deref()),
        "observed": observed(c.new_observed.as_deref()),
    });
    let origin = format!("change:{}:{}", c.position.tx, c.position.id);
    let notice = |kind: &str, severity: Severity, summary: String| Notice {
        kind: kind.to_string(),
        severity,
        subject: c.check_id.clone(),
        node_id: c.node_id.clone(),
        hostname: c.hostname.clone(),
        at_ms: c.at_ms,
        origin: origin.clone(),
        summary,
        detail: detail.clone(),
    };
    let bad = |s: &str| s == "fail" || s == "error";
    let mut out = Vec::new();
    if old != Some(new) {
        match new {
            "fail" => out.push(notice(
                "finding.failing",
                severity,
                format!("{node} now fails {} ({title}), was {was}", c.check_id),
            )),
            "error" if old != Some("fail") => out.push(notice(
                "finding.erroring",
                severity,
                format!("{node} can no longer evaluate {} ({title}), was {was}", c.check_id),
            )),
            "pass" if old.is_some_and(bad) => out.push(notice(
                "finding.fixed",
                severity,
                format!("{node} passes {} ({title}) again, was {was}", c.check_id),
            )),
            _ => {}
        }
        if old == Some("waived")
            && let Some((expires, reason, true)) = waiver_of(c.finding_json.as_deref())
        {
            let mut n = notice(
                "waiver.expired",
                severity,
                format!("{node}: the waiver of {} expired on {expires}; it counts as {new} again", c.check_id),
            );
            n.detail["expires"] = json!(expires);
            n.detail["reason"] = json!(reason);
            out.push(n);
        }
        if new == "fail" && KUBELET_CERTIFICATE_CHECKS.contains(&c.check_id.as_str()) {
            out.push(notice(
                "certificate.kubelet_expiring",
                severity,
                format!("{node}: {title} no longer holds ({})", c.check_id),
            ));
        }
    }
    if let Some(old) = old
        && let Some((_, drift)) = DRIFT_FAMILIES.iter().find(|(family, _)| *family == c.family)
        && (c.old_observed != c.new_observed || new != old)
    {
        let what = if new == old { "observed value changed".to_string() } else { format!("{old} -> {new}") };
        out.push(notice(
            &format!("drift.{drift}"),
            severity,
            format!("{node}: {drift} drift on {} ({what})", c.check_id),
        ));
    }
    out
}

/// The severity of a chain or security event.
fn chain_severity(kind: &str) -> Severity {
    match kind {
        "fork" | "bad_signature" | "identity_mismatch" | "false_claim" | "revoked" | "replay" => Severity::Critical,
        "clock_skew" | "clock_backwards" | "spool_overflow" => Severity::Medium,
        _ => Severity::High,
    }
}

/// The notice of a chain or security event.
pub fn from_event(e: &EventRow) -> Notice {
    let node = node_label(&e.node_id, e.hostname.as_deref());
    Notice {
        kind: format!("chain.{}", e.kind),
        severity: chain_severity(&e.kind),
        subject: e.kind.clone(),
        node_id: e.node_id.clone(),
        hostname: e.hostname.clone(),
        at_ms: e.at_ms,
        origin: format!("event:{}:{}", e.position.tx, e.position.id),
        summary: format!("{node}: {} event: {}", e.kind, e.detail),
        detail: json!({"event": e.kind, "seq": e.seq, "detail": e.detail}),
    }
}

/// RFC 3339 UTC with milliseconds, always `YYYY-MM-DDTHH:MM:SS.mmmZ`: a
/// time a node's clock put outside years 1970 to 9999 is shown at the
/// nearer end (the event's real time is not known then anyway).
pub fn rfc3339(ms: i64) -> String {
    const LAST: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    chrono::DateTime::from_timestamp_millis(ms.clamp(0, LAST))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into())
}

/// A message for one endpoint: one notice, or a storm of one kind and
/// subject grouped.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub key: String,
    pub kind: String,
    pub occurred_ms: i64,
    pub body: String,
}

/// The most events a grouped message lists (its `count` is always the
/// whole storm's).
pub const MAX_LISTED: usize = 1000;

#[derive(Serialize)]
struct Body<'a> {
    schema: &'static str,
    id: &'a str,
    kind: &'a str,
    severity: &'static str,
    subject: &'a str,
    summary: String,
    occurred_at: String,
    first_occurred_at: String,
    grouped: bool,
    count: usize,
    truncated: bool,
    events: Vec<BodyEvent<'a>>,
}

#[derive(Serialize)]
struct BodyEvent<'a> {
    node_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    at: String,
    summary: &'a str,
    detail: &'a Value,
}

/// The idempotency key of a message: a digest of its notices' origins, so
/// the same events always give the same key.
fn key_of(kind: &str, subject: &str, notices: &[&Notice]) -> String {
    let mut h = Sha256::new();
    h.update(SCHEMA.as_bytes());
    for part in [kind, subject] {
        h.update([0]);
        h.update(part.as_bytes());
    }
    for n in notices {
        h.update([0]);
        h.update(n.origin.as_bytes());
    }
    crate::store::judge::hex(&h.finalize()[..16])
}

/// The message of `notices` (one kind and subject; more than one: a
/// grouped storm).
pub fn message(notices: &[&Notice]) -> Option<Message> {
    let first = notices.first()?;
    let grouped = notices.len() > 1;
    let key = key_of(&first.kind, &first.subject, notices);
    let occurred_ms = notices.iter().map(|n| n.at_ms).max().unwrap_or(first.at_ms);
    let first_ms = notices.iter().map(|n| n.at_ms).min().unwrap_or(first.at_ms);
    let severity = notices.iter().map(|n| n.severity).max().unwrap_or(first.severity);
    let summary = if grouped {
        let mut nodes: Vec<&str> = notices.iter().map(|n| n.node_id.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        format!(
            "{} events {} on {} ({} nodes) between {} and {}",
            notices.len(),
            first.kind,
            first.subject,
            nodes.len(),
            rfc3339(first_ms),
            rfc3339(occurred_ms)
        )
    } else {
        first.summary.clone()
    };
    let body = Body {
        schema: SCHEMA,
        id: &key,
        kind: &first.kind,
        severity: severity.as_str(),
        subject: &first.subject,
        summary,
        occurred_at: rfc3339(occurred_ms),
        first_occurred_at: rfc3339(first_ms),
        grouped,
        count: notices.len(),
        truncated: notices.len() > MAX_LISTED,
        events: notices
            .iter()
            .take(MAX_LISTED)
            .map(|n| BodyEvent {
                node_id: &n.node_id,
                hostname: n.hostname.as_deref(),
                at: rfc3339(n.at_ms),
                summary: &n.summary,
                detail: &n.detail,
            })
            .collect(),
    };
    let body = serde_json::to_string(&body).ok()?;
    Some(Message { kind: first.kind.clone(), key, occurred_ms, body })
}

/// The message `kosmos-collector notifications test` sends to `endpoint`.
pub fn test_message(endpoint: &str, now_ms: i64) -> Message {
    let notice = Notice {
        kind: "notification.test".into(),
        severity: Severity::Info,
        subject: "test".into(),
        node_id: "-".into(),
        hostname: None,
        at_ms: now_ms,
        origin: format!("test:{endpoint}:{now_ms}"),
        summary: format!("a test message to the webhook {endpoint}: the URL, the secret and the receiver work"),
        detail: json!({}),
    };
    // Serializing a Body of plain strings and numbers cannot fail; the
    // fallback keeps the type total.
    message(&[&notice]).unwrap_or(Message {
        key: String::new(),
        kind: notice.kind,
        occurred_ms: now_ms,
        body: "{}".into(),
    })
}

/// Notices grouped by (kind, subject), in order of first appearance.
pub fn by_group(notices: &[Notice]) -> Vec<((String, String), Vec<&Notice>)> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<&Notice>> = BTreeMap::new();
    for n in notices {
        let k = (n.kind.clone(), n.subject.clone());
        let g = groups.entry(k.clone()).or_default();
        if g.is_empty() {
            order.push(k);
        }
        g.push(n);
    }
    order.into_iter().filter_map(|k| groups.remove(&k).map(|g| (k, g))).collect()
}

/// Whether `webhook` wants `notice`.
pub fn wanted(webhook: &super::config::Webhook, n: &Notice) -> bool {
    n.severity >= webhook.min_severity
        && (webhook.kinds.is_empty() || webhook.kinds.iter().any(|p| p.matches(&n.kind)))
        && (webhook.nodes.is_empty()
            || webhook
                .nodes
                .iter()
                .any(|p| p.matches(&n.node_id) || n.hostname.as_deref().is_some_and(|h| p.matches(h))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::outbox::Position;

    fn change(id: i64, family: &str, check: &str, old: Option<&str>, new: &str) -> ChangeRow {
        ChangeRow {
            position: Position { tx: 0, id },
            node_id: format!("node-{id}"),
            hostname: Some(format!("host-{id}")),
            check_id: check.into(),
            family: family.into(),
            seq: 7,
            at_ms: 1_700_000_000_000 + id,
            old_status: old.map(str::to_string),
            new_status: new.into(),
            old_observed: Some("\"no\"".into()),
            new_observed: Some("\"yes\"".into()),
            severity: Some("high".into()),
            title: Some("Root login over SSH is disabled".into()),
            finding_json: None,
        }
    }

    fn kinds(c: &ChangeRow) -> Vec<String> {
        from_change(c).into_iter().map(|n| n.kind).collect()
    }

    #[test]
    fn a_change_makes_the_notices_its_statuses_and_family_call_for() {
        assert_eq!(
            kinds(&change(1, "ssh", "ssh.permit_root_login", Some("pass"), "fail")),
            ["finding.failing", "drift.sshd"]
        );
        assert_eq!(kinds(&change(1, "accounts", "accounts.x", Some("fail"), "pass")), ["finding.fixed"]);
        assert_eq!(kinds(&change(1, "accounts", "accounts.x", Some("pass"), "error")), ["finding.erroring"]);
        // fail -> error is not news about the node's state.
        assert!(kinds(&change(1, "accounts", "accounts.x", Some("fail"), "error")).is_empty());
        // A check new to the node's profile: news when it fails, not drift.
        assert_eq!(kinds(&change(1, "ssh", "ssh.permit_root_login", None, "fail")), ["finding.failing"]);
        assert!(kinds(&change(1, "ssh", "ssh.permit_root_login", None, "pass")).is_empty());
        // An observed value moving without a status change is drift only.
        assert_eq!(kinds(&change(1, "sysctl", "sysctl.ip_forward", Some("pass"), "pass")), ["drift.sysctl"]);
        assert_eq!(
            kinds(&change(1, "kubelet", "kubelet.client_cert_expiring", Some("pass"), "fail")),
            ["finding.failing", "certificate.kubelet_expiring", "drift.kubelet"]
        );
        let mut expired = change(1, "accounts", "accounts.x", Some("waived"), "fail");
        expired.finding_json = Some(r#"{"waiver":{"reason":"ticket 4","expires":"2026-01-01","expired":true}}"#.into());
        assert_eq!(kinds(&expired), ["finding.failing", "waiver.expired"]);
        let n = &from_change(&expired)[1];
        assert_eq!(n.detail["expires"], "2026-01-01");
        for n in from_change(&change(1, "kubelet", "kubelet.client_cert_expiring", Some("pass"), "fail")) {
            assert!(KINDS.contains(&n.kind.as_str()), "{}", n.kind);
        }
    }

    #[test]
    fn a_single_message_carries_its_event_and_a_storm_one_grouped_body() {
        let notices: Vec<Notice> =
            (1..=3).flat_map(|i| from_change(&change(i, "accounts", "accounts.x", Some("pass"), "fail"))).collect();
        let groups = by_group(&notices);
        assert_eq!(groups.len(), 1);
        let single = message(&groups[0].1[..1]).unwrap();
        let v: Value = serde_json::from_str(&single.body).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["grouped"].as_bool(), v["count"].as_u64()),
            (Some("finding.failing"), Some(false), Some(1))
        );
        assert_eq!(v["events"][0]["detail"]["observed"], "yes");
        assert_eq!(v["id"].as_str(), Some(single.key.as_str()));
        let storm = message(&groups[0].1).unwrap();
        let v: Value = serde_json::from_str(&storm.body).unwrap();
        assert_eq!((v["grouped"].as_bool(), v["count"].as_u64()), (Some(true), Some(3)));
        assert!(v["summary"].as_str().unwrap().contains("3 nodes"), "{v}");
        // The same events give the same key; other events another.
        assert_eq!(message(&groups[0].1).unwrap().key, storm.key);
        assert_ne!(single.key, storm.key);
    }
}
