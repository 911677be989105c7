//! CSV rendering for spreadsheets: one row per node finding (the findings
//! the report's detail level carries), with the node's standing repeated on
//! each row so that a pivot table needs nothing else.

use super::{FleetReport, NodeFinding};

/// The header row, in order.
pub const COLUMNS: [&str; 18] = [
    "node_id",
    "hostname",
    "node_state",
    "last_attestation_at",
    "node_compliant",
    "check_id",
    "title",
    "family",
    "severity",
    "status",
    "observed",
    "expected",
    "reason",
    "evidence",
    "waiver_reason",
    "waiver_expires",
    "waiver_expired",
    "seq",
];

fn json_text(v: &Option<Box<serde_json::value::RawValue>>) -> String {
    match v.as_deref().map(serde_json::value::RawValue::get) {
        None | Some("null") => String::new(),
        Some(t) => serde_json::from_str::<String>(t).unwrap_or_else(|_| t.to_string()),
    }
}

fn evidence(f: &NodeFinding) -> String {
    f.evidence.iter().map(|e| format!("{}: {}", e.source, e.detail)).collect::<Vec<_>>().join("\n")
}

/// Render the findings as CSV (RFC 4180 quoting by the csv crate).
pub fn render(report: &FleetReport) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for n in &report.nodes {
        for f in &n.findings {
            let waiver = f.waiver.as_ref();
            w.write_record([
                n.id.as_str(),
                &n.hostname,
                n.state.as_str(),
                n.last_attestation_at.as_deref().unwrap_or(""),
                if n.compliant { "true" } else { "false" },
                &f.id,
                &f.title,
                &f.family,
                &f.severity,
                &f.status,
                &json_text(&f.observed),
                &json_text(&f.expected),
                f.reason.as_deref().unwrap_or(""),
                &evidence(f),
                waiver.and_then(|w| w.reason.as_deref()).unwrap_or(""),
                waiver.and_then(|w| w.expires.as_deref()).unwrap_or(""),
                match waiver.and_then(|w| w.expired) {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => "",
                },
                &f.seq.to_string(),
            ])?;
        }
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}
