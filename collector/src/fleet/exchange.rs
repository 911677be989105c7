//! The fleet in the exchange formats (`report --format sarif|ocsf|oscal`):
//! the fleet report's nodes, each with the signed attestation at its chain
//! head, fed one at a time to `kosmos_proto::exchange`, whose renderers the
//! agent's `check --output` shares. The report is built without findings
//! (`--findings summary`); each node's findings are read from the store
//! when its turn comes, so memory holds one node's findings, not the
//! fleet's.

use kosmos_proto::exchange::{self, Assessment, Attestation, EvidenceSource, NodeAssessment, NodeItem, Producer};

use super::{FleetReport, NodeReport, NodeState};
use crate::store::FleetRead;

/// The document's description of itself.
pub fn assessment(report: &FleetReport, evidence: EvidenceSource) -> Assessment<'static> {
    let mut profiles: Vec<&str> = report.nodes.iter().filter_map(|n| n.profile.as_deref()).collect();
    profiles.sort_unstable();
    profiles.dedup();
    Assessment {
        producer: Producer { name: "kosmos-collector", version: env!("CARGO_PKG_VERSION") },
        generated_at: report.generated_at.clone(),
        profile: (!profiles.is_empty()).then(|| profiles.join(", ")),
        evidence: Some(evidence),
    }
}

/// Every node that has reported (revoked nodes and nodes that never
/// reported have no findings to exchange), its findings read from `store`
/// and parsed when the renderer asks for it.
pub fn nodes<'r>(report: &'r FleetReport, store: &'r mut dyn FleetRead) -> impl Iterator<Item = NodeItem> + 'r {
    report
        .nodes
        .iter()
        .filter(|n| !matches!(n.state, NodeState::Revoked | NodeState::NeverReported))
        .map(move |n| node(n, &mut *store, &report.generated_at))
}

fn node(n: &NodeReport, store: &mut dyn FleetRead, generated_at: &str) -> NodeItem {
    let stored = store.node_findings(&n.id).map_err(|e| format!("node {}: {e}", n.id))?;
    let findings = stored
        .iter()
        .map(|f| {
            exchange::Finding::parse(&f.finding)
                .map_err(|e| format!("node {}, check {}: the stored finding cannot be read: {e}", n.id, f.check_id))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let attestation = match (&n.last_attestation_at, &n.head_sha256) {
        (Some(at), Some(hash)) if n.head_seq > 0 => {
            Some(Attestation { seq: n.head_seq, created_at: at.clone(), body_sha256: hash.clone() })
        }
        _ => None,
    };
    Ok(NodeAssessment {
        node_id: Some(n.id.clone()),
        hostname: n.hostname.clone(),
        os: n.os.clone(),
        assessed_at: n.last_attestation_at.clone().unwrap_or_else(|| generated_at.to_string()),
        attestation,
        findings,
    })
}
