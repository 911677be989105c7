//! CSV rendering for spreadsheets: one row per node finding (the findings
//! the report's detail level carries), with the node's standing repeated on
//! each row so that a pivot table needs nothing else.

use super::{FindingView, FleetReport, json_text};

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

fn evidence(v: &FindingView<'_>) -> String {
    v.evidence.iter().map(|e| format!("{}: {}", e.source, e.detail)).collect::<Vec<_>>().join("\n")
}

/// Write the findings as CSV (RFC 4180 quoting by the csv crate).
pub fn render<W: std::io::Write>(report: &FleetReport, out: W) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    for n in &report.nodes {
        for f in &n.findings {
            let view = f.view().map_err(|e| csv::Error::from(std::io::Error::other(e)))?;
            let waiver = view.waiver.as_ref();
            let record = [
                n.id.as_str(),
                &n.hostname,
                n.state.as_str(),
                n.last_attestation_at.as_deref().unwrap_or(""),
                if n.compliant { "true" } else { "false" },
                &f.check_id,
                &view.title,
                &f.family,
                &f.severity,
                &f.status,
                &json_text(view.observed),
                &json_text(view.expected),
                view.reason.as_deref().unwrap_or(""),
                &evidence(&view),
                waiver.and_then(|w| w.reason.as_deref()).unwrap_or(""),
                waiver.and_then(|w| w.expires.as_deref()).unwrap_or(""),
                match waiver.and_then(|w| w.expired) {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => "",
                },
                &f.seq.to_string(),
            ];
            // Every cell is node-controlled or harmless: all go through the
            // CSV guard (display controls, spreadsheet formulas).
            w.write_record(
                record.iter().map(|c| crate::untrusted::csv_cell(c)).collect::<Vec<_>>().iter().map(|c| c.as_bytes()),
            )?;
        }
    }
    w.flush()?;
    Ok(())
}
