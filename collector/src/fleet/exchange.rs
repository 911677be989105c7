//! The fleet in the exchange formats (`report --format sarif|ocsf|oscal`):
//! the fleet report's nodes, each with the signed attestation at its chain
//! head, as the input of `kosmos_proto::exchange`, whose renderers the
//! agent's `check --output` shares.

use kosmos_proto::exchange::{self, Assessment, Attestation, EvidenceSource, NodeAssessment, Producer};

use super::{FleetReport, NodeState};

/// A stored finding that is not a `kosmos.report/v1` finding object.
#[derive(Debug, thiserror::Error)]
#[error("node {node}, check {check}: the stored finding cannot be read: {source}")]
pub struct UnreadableFinding {
    pub node: String,
    pub check: String,
    #[source]
    pub source: serde_json::Error,
}

/// The assessment of every node that has reported (revoked nodes and nodes
/// that never reported have no findings to exchange), with `evidence`
/// describing where the attestations can be verified.
pub fn assessment(report: &FleetReport, evidence: EvidenceSource) -> Result<Assessment<'_>, UnreadableFinding> {
    let mut nodes = Vec::new();
    for n in report.nodes.iter().filter(|n| !matches!(n.state, NodeState::Revoked | NodeState::NeverReported)) {
        let findings = n
            .findings
            .iter()
            .map(|f| {
                exchange::Finding::parse(&f.finding).map_err(|source| UnreadableFinding {
                    node: n.id.clone(),
                    check: f.check_id.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let attestation = match (&n.last_attestation_at, &n.head_sha256) {
            (Some(at), Some(hash)) if n.head_seq > 0 => {
                Some(Attestation { seq: n.head_seq, created_at: at.clone(), body_sha256: hash.clone() })
            }
            _ => None,
        };
        nodes.push(NodeAssessment {
            node_id: Some(n.id.clone()),
            hostname: n.hostname.clone(),
            os: n.os.clone(),
            assessed_at: n.last_attestation_at.clone().unwrap_or_else(|| report.generated_at.clone()),
            attestation,
            findings,
        });
    }
    let mut profiles: Vec<&str> = report.nodes.iter().filter_map(|n| n.profile.as_deref()).collect();
    profiles.sort_unstable();
    profiles.dedup();
    Ok(Assessment {
        producer: Producer { name: "kosmos-collector", version: env!("CARGO_PKG_VERSION") },
        generated_at: report.generated_at.clone(),
        profile: (!profiles.is_empty()).then(|| profiles.join(", ")),
        nodes,
        evidence: Some(evidence),
    })
}
