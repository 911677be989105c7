//! The vocabulary of the check model: severities, statuses, references,
//! evidence, and the [`Outcome`] a check's evaluation produces.
//!
//! These types serialize exactly as the report contract
//! (`kosmos.report/v1`) spells them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

// The status and severity vocabulary is shared with the collector.
pub use kosmos_proto::verdict::{Severity, Status};

/// Who owns the control under Scaleway's shared responsibility model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Responsibility {
    Customer,
    Scaleway,
    Shared,
}

/// A benchmark control that a check implements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    pub standard: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    pub id: &'static str,
}

/// CIS Debian Linux 12 Benchmark v1.1.0 control.
pub const fn cis_debian(id: &'static str) -> Reference {
    Reference { standard: "CIS Debian Linux 12 Benchmark", version: Some("1.1.0"), id }
}

/// CIS Kubernetes Benchmark v1.12 control (section 4: worker nodes).
pub const fn cis_k8s(id: &'static str) -> Reference {
    Reference { standard: "CIS Kubernetes Benchmark", version: Some("1.12"), id }
}

/// ANSSI BP-028 (configuration recommendations of a GNU/Linux system) v2.0.
pub const fn anssi(id: &'static str) -> Reference {
    Reference { standard: "ANSSI BP-028", version: Some("2.0"), id }
}

/// ComplianceAsCode / SCAP Security Guide rule id.
pub const fn ssg(id: &'static str) -> Reference {
    Reference { standard: "SSG", version: None, id }
}

/// One piece of evidence: where a fact came from and what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// `path:line`, a path, or a command line.
    pub source: String,
    pub detail: String,
}

impl Evidence {
    pub fn new(source: impl Into<String>, detail: impl Into<String>) -> Self {
        Evidence { source: source.into(), detail: detail.into() }
    }
}

/// What evaluating a check produced, before profile waivers and metadata are
/// applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub observed: Option<Value>,
    pub expected: Option<Value>,
    pub evidence: Vec<Evidence>,
    pub reason: Option<String>,
}

impl Outcome {
    fn with_status(status: Status) -> Self {
        Outcome { status, observed: None, expected: None, evidence: Vec::new(), reason: None }
    }

    pub fn pass() -> Self {
        Self::with_status(Status::Pass)
    }

    pub fn fail() -> Self {
        Self::with_status(Status::Fail)
    }

    /// Pass when `ok`, fail otherwise.
    pub fn verdict(ok: bool) -> Self {
        if ok { Self::pass() } else { Self::fail() }
    }

    pub fn not_applicable(reason: impl Into<String>) -> Self {
        Outcome { reason: Some(reason.into()), ..Self::with_status(Status::NotApplicable) }
    }

    pub fn error(reason: impl Into<String>) -> Self {
        Outcome { reason: Some(reason.into()), ..Self::with_status(Status::Error) }
    }

    pub fn observed(mut self, v: impl Into<Value>) -> Self {
        self.observed = Some(v.into());
        self
    }

    pub fn expected(mut self, v: impl Into<Value>) -> Self {
        self.expected = Some(v.into());
        self
    }

    pub fn evidence(mut self, source: impl Into<String>, detail: impl Into<String>) -> Self {
        self.evidence.push(Evidence::new(source, detail));
        self
    }

    pub fn with_evidence(mut self, ev: impl IntoIterator<Item = Evidence>) -> Self {
        self.evidence.extend(ev);
        self
    }

    /// Attach an explanatory note to a pass or fail (kept in `reason`).
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.reason = Some(note.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_order_and_names() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Info < Severity::Low);
        for s in Severity::ALL {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
        assert_eq!(Severity::parse("severe"), None);
    }
}
