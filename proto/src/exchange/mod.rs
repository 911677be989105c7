//! Exchange formats: the findings of one node (`kosmos-node-agent check`) or
//! of a fleet (`kosmos-collector report`) rendered as the documents security
//! teams already ingest: SARIF 2.1.0 ([`sarif`]) for code-scanning and CI
//! views, OCSF 1.5.0 Compliance Finding events ([`ocsf`]) for SIEMs and
//! security data lakes, and OSCAL 1.2.3 Assessment Results ([`oscal`]) for
//! auditors.
//!
//! Both binaries feed the same input: an [`Assessment`] (who produced the
//! document, when, under which profile, where the evidence is) and the
//! nodes, one [`NodeAssessment`] at a time: the finding objects of
//! `kosmos.report/v1` as the agent wrote them (the collector stores them
//! verbatim), with the attestation that carried them when there is one. One
//! renderer per format serves both, so a node's SARIF is the same whether it
//! came from the node or from the collector.
//!
//! The renderers write as they go and keep only what the format makes them
//! gather (SARIF's rules, OSCAL's findings per control): a fleet's 1.5
//! million findings are never all parsed at once.

pub mod ocsf;
pub mod oscal;
pub mod sarif;

use std::io::Write;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::verdict::{Severity, Status};

/// The program that produced the document.
#[derive(Debug, Clone, Copy)]
pub struct Producer<'a> {
    pub name: &'a str,
    pub version: &'a str,
}

/// The signed attestation a node's findings arrived in.
#[derive(Debug, Clone)]
pub struct Attestation {
    pub seq: u64,
    /// RFC 3339.
    pub created_at: String,
    /// SHA-256 of the envelope's body, lowercase hex (the chain link that
    /// `evidence verify` checks).
    pub body_sha256: String,
}

/// One assessed node and its findings.
#[derive(Debug, Clone)]
pub struct NodeAssessment {
    /// The collector's node id; `None` for a local `check` of a node that
    /// need not be enrolled.
    pub node_id: Option<String>,
    pub hostname: String,
    /// The OS's pretty name, when known.
    pub os: Option<String>,
    /// When the findings were produced (RFC 3339).
    pub assessed_at: String,
    pub attestation: Option<Attestation>,
    pub findings: Vec<Finding>,
}

impl NodeAssessment {
    /// The node's stable identifier in the documents: its node id, else its
    /// hostname.
    pub fn uid(&self) -> &str {
        self.node_id.as_deref().unwrap_or(&self.hostname)
    }
}

/// Where the signed evidence of an assessment can be verified.
#[derive(Debug, Clone)]
pub struct EvidenceSource {
    /// What the bundle is and how to verify it.
    pub description: String,
    /// The bundle's file name or URL, when one was named.
    pub href: Option<String>,
}

/// What a document says about itself; the nodes come separately, one at a
/// time.
#[derive(Debug, Clone)]
pub struct Assessment<'a> {
    pub producer: Producer<'a>,
    /// RFC 3339.
    pub generated_at: String,
    /// The profile the checks ran under (name and version), when known.
    pub profile: Option<String>,
    pub evidence: Option<EvidenceSource>,
}

/// The exchange formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sarif,
    Ocsf,
    Oscal,
}

impl Format {
    /// Write the document of `a` and `nodes` to `w` in this format.
    pub fn write(
        self,
        a: &Assessment<'_>,
        nodes: impl Iterator<Item = NodeItem>,
        w: &mut dyn Write,
    ) -> Result<(), RenderError> {
        match self {
            Format::Sarif => sarif::write(a, nodes, w),
            Format::Ocsf => ocsf::write(a, nodes, w),
            Format::Oscal => oscal::write(a, nodes, w),
        }
    }
}

/// A node to render, or why its findings could not be read.
pub type NodeItem = Result<NodeAssessment, String>;

/// Why a document could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot write the document: {0}")]
    Write(#[from] std::io::Error),
    #[error("cannot serialize the document: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The source could not provide a node (for example, a stored finding
    /// that is not a finding object).
    #[error("{0}")]
    Source(String),
}

/// Write `value` as compact JSON.
fn put(w: &mut dyn Write, value: &serde_json::Value) -> Result<(), RenderError> {
    serde_json::to_writer(&mut *w, value)?;
    Ok(())
}

/// A finding object of `kosmos.report/v1`, the fields the formats use.
#[derive(Debug, Clone, Deserialize)]
pub struct Finding {
    pub id: String,
    pub title: String,
    pub family: String,
    pub severity: Severity,
    pub status: Status,
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub remediation: Option<String>,
    #[serde(default)]
    pub references: Vec<Reference>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Evidence {
    pub source: String,
    pub detail: String,
}

/// A control of a published standard that the check implements.
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    pub standard: String,
    #[serde(default)]
    pub version: Option<String>,
    pub id: String,
}

impl Reference {
    /// "CIS Kubernetes Benchmark v1.9", or the bare standard name.
    pub fn standard_with_version(&self) -> String {
        match &self.version {
            Some(v) if !v.is_empty() => format!("{} {v}", self.standard),
            _ => self.standard.clone(),
        }
    }
}

impl Finding {
    /// Parse one finding object (JSON text).
    pub fn parse(json: &str) -> Result<Finding, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// A finding that did not pass and was not set aside: what the formats
    /// report as a problem (`fail`) or as undecided (`error`).
    pub fn is_open(&self) -> bool {
        matches!(self.status, Status::Fail | Status::Error)
    }

    /// The one-line explanation: the reason for an error or a
    /// not-applicable, else the first piece of evidence.
    pub fn explanation(&self) -> Option<String> {
        self.reason
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| self.evidence.first().map(|e| format!("{}: {}", e.source, e.detail)))
    }
}

/// A UUID (RFC 9562 version 5 layout) derived from `parts`: the same inputs
/// give the same identifier, so that a report written twice from the same
/// store names its objects the same way.
pub fn stable_uuid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(b"kosmos-node-agent exchange/v1");
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let mut b: [u8; 16] = [0; 16];
    b.copy_from_slice(&h.finalize()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_uuids_are_version_5_shaped_and_depend_on_every_part() {
        let a = stable_uuid(&["node", "check"]);
        assert_eq!(a, stable_uuid(&["node", "check"]));
        assert_ne!(a, stable_uuid(&["nodec", "heck"]), "parts are length-prefixed");
        let bytes: Vec<char> = a.chars().collect();
        assert_eq!(a.len(), 36);
        assert_eq!(bytes[14], '5');
        assert!(matches!(bytes[19], '8' | '9' | 'a' | 'b'));
    }

    #[test]
    fn a_finding_without_optional_fields_parses_and_explains_itself() {
        let f = Finding::parse(
            r#"{"id":"a.b","title":"t","family":"f","severity":"high","status":"error","reason":"cannot read x"}"#,
        )
        .unwrap();
        assert!(f.is_open());
        assert_eq!(f.explanation().as_deref(), Some("cannot read x"));
    }
}
