//! OCSF 1.5.0 Compliance Finding events (class 2003, category Findings):
//! one JSON object per finding, every status included, for SIEMs and
//! security data lakes that track the state of each control on each node.
//!
//! The compliance status maps pass to Pass (1) and fail to Fail (3). A check
//! that could not decide (`error`) is Unknown (0), never Pass; not-applicable
//! and waived findings are Other (99), named in `compliance.status`. The
//! reason or first piece of evidence goes to `compliance.status_detail`.

use std::collections::BTreeSet;
use std::io::Write;

use serde_json::{Value, json};

use super::{Assessment, Finding, NodeAssessment, NodeItem, RenderError, put};
use crate::verdict::{Severity, Status};

pub const OCSF_VERSION: &str = "1.5.0";
const CATEGORY_FINDINGS: u32 = 2;
const CLASS_COMPLIANCE_FINDING: u32 = 2003;
const ACTIVITY_CREATE: u32 = 1;

fn severity_id(severity: Severity) -> u32 {
    match severity {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

/// (status_id, status) of `compliance`.
fn compliance_status(status: Status) -> (u32, &'static str) {
    match status {
        Status::Pass => (1, "Pass"),
        Status::Fail => (3, "Fail"),
        Status::Error => (0, "Unknown"),
        Status::NotApplicable => (99, "Not applicable"),
        Status::Waived => (99, "Waived"),
    }
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "Informational",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High => "High",
        Severity::Critical => "Critical",
    }
}

/// Milliseconds since the epoch of an RFC 3339 time (0 when unreadable;
/// the callers format these times themselves, so it does not happen).
fn epoch_ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or(0, |t| t.timestamp_millis())
}

/// What every event of one node shares, built once per node.
struct Subject<'n> {
    node: &'n NodeAssessment,
    /// The attestation's creation time, or the local run's (RFC 3339).
    time: &'n str,
    time_ms: i64,
    resource: Value,
    metadata: Value,
}

fn subject<'n>(a: &Assessment<'_>, n: &'n NodeAssessment) -> Subject<'n> {
    let time = n.attestation.as_ref().map_or(n.assessed_at.as_str(), |att| att.created_at.as_str());
    let mut resource = json!({
        "uid": n.uid(),
        "name": n.hostname,
        "hostname": n.hostname,
        "type": "Kubernetes node",
    });
    if let Some(os) = &n.os {
        resource["labels"] = json!([format!("os:{os}")]);
    }
    let mut metadata = json!({
        "product": { "name": a.producer.name, "vendor_name": "kosmos-node-agent", "version": a.producer.version },
        "version": OCSF_VERSION,
    });
    if let Some(att) = &n.attestation {
        // The signed attestation the finding arrived in: what an auditor
        // verifies it against.
        metadata["sequence"] = json!(att.seq);
        metadata["correlation_uid"] = json!(att.body_sha256);
    }
    Subject { node: n, time, time_ms: epoch_ms(time), resource, metadata }
}

fn event(s: &Subject<'_>, f: &Finding) -> Value {
    let (status_id, status) = compliance_status(f.status);
    let standards: BTreeSet<String> = f.references.iter().map(|r| r.standard_with_version()).collect();
    let control = match f.references.as_slice() {
        [] => f.id.clone(),
        [one] => one.id.clone(),
        many => many.iter().map(|r| format!("{} {}", r.standard, r.id)).collect::<Vec<_>>().join("; "),
    };
    let explanation = f.explanation();
    let mut compliance = json!({
        "control": control,
        "standards": standards,
        "status": status,
        "status_id": status_id,
    });
    let mut finding_info = json!({
        "uid": super::stable_uuid(&[s.node.uid(), &f.id, s.time]),
        "title": f.title,
        "types": [f.family],
        "created_time": s.time_ms,
    });
    if let Some(e) = explanation {
        compliance["status_detail"] = json!(e);
        finding_info["desc"] = json!(e);
    }
    let mut e = json!({
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": CATEGORY_FINDINGS,
        "category_name": "Findings",
        "class_uid": CLASS_COMPLIANCE_FINDING,
        "class_name": "Compliance Finding",
        "type_uid": CLASS_COMPLIANCE_FINDING * 100 + ACTIVITY_CREATE,
        "type_name": "Compliance Finding: Create",
        "severity_id": severity_id(f.severity),
        "severity": severity_name(f.severity),
        "time": s.time_ms,
        "message": f.title,
        "compliance": compliance,
        "finding_info": finding_info,
        "metadata": s.metadata.clone(),
        "resources": [s.resource.clone()],
    });
    if let Some(r) = f.remediation.as_deref().filter(|r| !r.is_empty()) {
        e["remediation"] = json!({ "desc": r });
    }
    if f.status == Status::Waived {
        // Suppressed: an owner accepted the finding for a while.
        e["status_id"] = json!(3);
        e["status"] = json!("Suppressed");
    }
    e
}

/// Write one Compliance Finding event per finding of every node, one JSON
/// object per line (the form SIEM collectors ingest), as the nodes come.
pub fn write(a: &Assessment<'_>, nodes: impl Iterator<Item = NodeItem>, w: &mut dyn Write) -> Result<(), RenderError> {
    for n in nodes {
        let n = n.map_err(RenderError::Source)?;
        let s = subject(a, &n);
        for f in &n.findings {
            put(w, &event(&s, f))?;
            w.write_all(b"\n")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_become_epoch_milliseconds() {
        assert_eq!(epoch_ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(epoch_ms("2026-12-03T07:51:30.250+01:00"), 1_796_280_690_250);
    }

    #[test]
    fn an_undecided_check_is_unknown_never_pass() {
        assert_eq!(compliance_status(Status::Error), (0, "Unknown"));
        assert_eq!(compliance_status(Status::Fail).0, 3);
    }
}
