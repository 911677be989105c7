//! The report contract `kosmos.report/v1` (see `schemas/report.v1.schema.json`)
//! and its renderings: JSON (the contract itself), text and JUnit.
//!
//! The types are owned and deserializable so that the collector can read the
//! same structure back from attestations.

pub mod exchange;
pub mod junit;
pub mod text;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::model::{Evidence, Responsibility, Severity, Status};

/// The schema identifier every report carries.
pub const SCHEMA: &str = "kosmos.report/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub agent_version: String,
    pub node: Node,
    pub root: String,
    pub profile: ProfileRef,
    pub started_at: String,
    pub duration_ms: u64,
    pub summary: Summary,
    pub results: Vec<Finding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub hostname: String,
    pub machine_id: Option<String>,
    pub os: Os,
    pub kernel: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Os {
    pub id: String,
    pub version_id: String,
    pub pretty_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRef {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub pass: u32,
    pub fail: u32,
    pub not_applicable: u32,
    pub error: u32,
    pub waived: u32,
}

impl Summary {
    pub fn count(&mut self, s: Status) {
        match s {
            Status::Pass => self.pass += 1,
            Status::Fail => self.fail += 1,
            Status::NotApplicable => self.not_applicable += 1,
            Status::Error => self.error += 1,
            Status::Waived => self.waived += 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceOut {
    pub standard: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub id: String,
}

/// A waiver as shown on a finding. `expired` is an optional extension of the
/// v1 schema: an expired waiver no longer changes the status, and says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiverOut {
    pub reason: String,
    pub expires: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub title: String,
    pub family: String,
    pub severity: Severity,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    pub evidence: Vec<Evidence>,
    pub reason: Option<String>,
    pub remediation: Option<String>,
    pub references: Vec<ReferenceOut>,
    pub responsibility: Responsibility,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiver: Option<WaiverOut>,
}

impl Report {
    /// True when a finding at or above `threshold` failed or could not be
    /// decided. An `error` counts: a gate that passes on "unknown" would
    /// claim compliance nobody verified.
    pub fn breaches(&self, threshold: Severity) -> bool {
        self.results.iter().any(|f| f.severity >= threshold && matches!(f.status, Status::Fail | Status::Error))
    }

    pub fn to_json(&self) -> String {
        // Serializing plain data structures to a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
