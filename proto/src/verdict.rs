//! The report vocabulary the agent and the collector share: a finding's
//! [`Status`] and [`Severity`], spelled exactly as the report contract
//! (`kosmos.report/v1`) spells them, and what makes a finding blocking.
//! The agent writes reports with these types and the collector indexes
//! and judges them with the same ones, so the two cannot drift apart.

use serde::{Deserialize, Serialize};

/// How bad a failing check is. Ordered: `Info < Low < … < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Every severity, most severe first (the order of reports).
    pub const ALL: [Severity; 5] =
        [Severity::Critical, Severity::High, Severity::Medium, Severity::Low, Severity::Info];

    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// The check does not apply here (with a reason), e.g. sshd not installed.
    NotApplicable,
    /// The check could not decide (with a reason): never reported as a pass.
    Error,
    /// Failed, but covered by an unexpired waiver in the profile.
    Waived,
}

impl Status {
    /// Every status, in the order of report summaries.
    pub const ALL: [Status; 5] = [Status::Pass, Status::Fail, Status::Error, Status::NotApplicable, Status::Waived];

    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::NotApplicable => "not_applicable",
            Status::Error => "error",
            Status::Waived => "waived",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A blocking finding makes its node non-compliant in fleet reports: a check
/// of high or critical severity that failed, or that could not decide (an
/// `error` is never taken for a pass). A waived failure is not blocking.
pub fn is_blocking(status: Status, severity: Severity) -> bool {
    matches!(status, Status::Fail | Status::Error) && severity >= Severity::High
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for s in Severity::ALL {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.to_string(), s.as_str());
        }
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(Severity::parse("HIGH"), None);
        assert_eq!(Status::parse("notapplicable"), None);
    }

    #[test]
    fn severities_are_ordered() {
        assert!(Severity::Info < Severity::Low && Severity::Medium < Severity::High);
        assert!(Severity::High < Severity::Critical);
    }

    #[test]
    fn blocking_is_a_failure_or_an_error_at_high_or_critical() {
        for status in Status::ALL {
            for severity in Severity::ALL {
                let expected = matches!(status, Status::Fail | Status::Error)
                    && matches!(severity, Severity::High | Severity::Critical);
                assert_eq!(is_blocking(status, severity), expected, "{status} {severity}");
            }
        }
    }
}
