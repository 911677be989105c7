//! The agent's side of the exchange formats (`check --output sarif|ocsf|oscal`):
//! a local report as the input of `kosmos_proto::exchange`, whose renderers
//! the collector shares.

pub use kosmos_proto::exchange::Format;
use kosmos_proto::exchange::{self, Assessment, NodeAssessment, Producer, RenderError};

use super::Report;

/// `report` as an exchange assessment of one node, not attested (a local
/// check is unsigned). The findings go through their JSON form, the one
/// contract the collector's copy of them also follows.
fn node(report: &Report) -> Result<NodeAssessment, serde_json::Error> {
    let findings = report
        .results
        .iter()
        .map(|f| serde_json::to_value(f).and_then(serde_json::from_value::<exchange::Finding>))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NodeAssessment {
        node_id: None,
        hostname: report.node.hostname.clone(),
        os: Some(report.node.os.pretty_name.clone()),
        assessed_at: report.started_at.clone(),
        attestation: None,
        findings,
    })
}

/// The rendered document.
pub fn render(report: &Report, format: Format) -> Result<String, RenderError> {
    let a = Assessment {
        producer: Producer { name: "kosmos-node-agent", version: &report.agent_version },
        generated_at: report.started_at.clone(),
        profile: Some(format!("{} {}", report.profile.name, report.profile.version)),
        evidence: None,
    };
    let nodes = std::iter::once(node(report).map_err(|e| e.to_string()));
    let mut out = Vec::new();
    format.write(&a, nodes, &mut out)?;
    String::from_utf8(out).map_err(|e| RenderError::Source(e.to_string()))
}
