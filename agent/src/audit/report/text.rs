//! Human-readable report: one table per family, details under failures and
//! errors, and a summary line.

use std::fmt::Write;

use super::{Finding, Report};
use crate::audit::model::Status;

fn status_label(s: Status) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::NotApplicable => "N/A",
        Status::Error => "ERROR",
        Status::Waived => "WAIVED",
    }
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn details(out: &mut String, f: &Finding) {
    if let Some(o) = &f.observed {
        let _ = writeln!(out, "        observed: {}", compact(o));
    }
    if let Some(e) = &f.expected {
        let _ = writeln!(out, "        expected: {}", compact(e));
    }
    if let Some(r) = &f.reason {
        let _ = writeln!(out, "        reason:   {r}");
    }
    for e in f.evidence.iter().take(5) {
        let _ = writeln!(out, "        evidence: {}: {}", e.source, e.detail);
    }
    if f.evidence.len() > 5 {
        let _ = writeln!(out, "        evidence: … {} more (see --output json)", f.evidence.len() - 5);
    }
    if let Some(w) = &f.waiver {
        let state = if w.expired { "EXPIRED" } else { "until" };
        let _ = writeln!(out, "        waiver:   {state} {}: {}", w.expires, w.reason);
    }
    if let (Status::Fail, Some(r)) = (f.status, &f.remediation) {
        let _ = writeln!(out, "        fix:      {r}");
    }
}

/// Render the report as text.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kosmos-node-agent {} · {} ({}) · root {} · profile {} v{}",
        report.agent_version,
        report.node.hostname,
        report.node.os.pretty_name,
        report.root,
        report.profile.name,
        report.profile.version
    );
    let mut family: Option<&str> = None;
    let id_width = report.results.iter().map(|f| f.id.len()).max().unwrap_or(10);
    for f in &report.results {
        if family != Some(f.family.as_str()) {
            family = Some(f.family.as_str());
            let _ = writeln!(out, "\n[{}]", f.family);
        }
        let _ = writeln!(
            out,
            "  {:<6} {:<8} {:<width$}  {}",
            status_label(f.status),
            f.severity.as_str(),
            f.id,
            f.title,
            width = id_width
        );
        if matches!(f.status, Status::Fail | Status::Error | Status::Waived)
            || (f.status == Status::NotApplicable && f.reason.is_some())
        {
            if f.status == Status::NotApplicable {
                if let Some(r) = &f.reason {
                    let _ = writeln!(out, "        reason:   {r}");
                }
            } else {
                details(&mut out, f);
            }
        }
    }
    let s = report.summary;
    let _ = writeln!(
        out,
        "\n{} checks: {} pass, {} fail, {} error, {} not applicable, {} waived ({} ms)",
        report.results.len(),
        s.pass,
        s.fail,
        s.error,
        s.not_applicable,
        s.waived,
        report.duration_ms
    );
    out
}
