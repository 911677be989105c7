//! The agent's side of the exchange formats (`check --output sarif|ocsf|oscal`):
//! a local report as the input of `kosmos_proto::exchange`, whose renderers
//! the collector shares.

use kosmos_proto::exchange::{self, Assessment, NodeAssessment, Producer};

use super::Report;

/// `report` as an exchange assessment of one node, not attested (a local
/// check is unsigned). The findings go through their JSON form, the one
/// contract the collector's copy of them also follows.
pub fn assessment(report: &Report) -> Result<Assessment<'_>, serde_json::Error> {
    let findings = report
        .results
        .iter()
        .map(|f| serde_json::to_value(f).and_then(serde_json::from_value::<exchange::Finding>))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Assessment {
        producer: Producer { name: "kosmos-node-agent", version: &report.agent_version },
        generated_at: report.started_at.clone(),
        profile: Some(format!("{} {}", report.profile.name, report.profile.version)),
        nodes: vec![NodeAssessment {
            node_id: None,
            hostname: report.node.hostname.clone(),
            os: Some(report.node.os.pretty_name.clone()),
            assessed_at: report.started_at.clone(),
            attestation: None,
            findings,
        }],
        evidence: None,
    })
}

/// The rendered document, newline-terminated.
pub fn render(report: &Report, format: Format) -> Result<String, serde_json::Error> {
    let a = assessment(report)?;
    Ok(match format {
        Format::Sarif => serde_json::to_string_pretty(&exchange::sarif::render(&a))? + "\n",
        Format::Ocsf => exchange::ocsf::render_lines(&a),
        Format::Oscal => serde_json::to_string_pretty(&exchange::oscal::render(&a))? + "\n",
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sarif,
    Ocsf,
    Oscal,
}
