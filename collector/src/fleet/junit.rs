//! JUnit XML for CI gates: a `checks` suite with one testcase per check
//! (failing when any node fails it, an error when any node could not decide
//! it) and a `nodes` suite with one testcase per node (failing when the node
//! is not compliant: blocking findings, or silent for too long).

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::{FleetReport, NodeState};

fn failure(kind: NonSuccessKind, message: String, ty: &str, description: String) -> TestCaseStatus {
    let mut st = TestCaseStatus::non_success(kind);
    st.set_message(message);
    st.set_type(ty);
    st.set_description(description);
    st
}

/// Render the report as JUnit XML.
pub fn render(report: &FleetReport) -> Result<String, quick_junit::SerializeError> {
    let mut junit = Report::new(format!("kosmos fleet report {}", report.generated_at));
    let names: std::collections::HashMap<&str, &str> =
        report.nodes.iter().map(|n| (n.id.as_str(), n.hostname.as_str())).collect();
    let name_list = |ids: &[String]| -> String {
        ids.iter().map(|id| names.get(id.as_str()).copied().unwrap_or(id.as_str())).collect::<Vec<_>>().join(", ")
    };

    let mut checks = TestSuite::new("checks");
    for c in &report.checks {
        let status = if !c.failing_nodes.is_empty() {
            failure(
                NonSuccessKind::Failure,
                format!("fails on {} of {} node(s)", c.failing_nodes.len(), c.counts.total()),
                &c.severity,
                format!(
                    "failing: {}\nremediation: {}",
                    name_list(&c.failing_nodes),
                    c.remediation.clone().unwrap_or_default()
                ),
            )
        } else if !c.error_nodes.is_empty() {
            failure(
                NonSuccessKind::Error,
                format!("undecided (error) on {} node(s)", c.error_nodes.len()),
                "error",
                format!("error: {}", name_list(&c.error_nodes)),
            )
        } else if c.counts.pass == 0 && c.counts.waived == 0 {
            let mut st = TestCaseStatus::skipped();
            st.set_message("not applicable on any node");
            st
        } else {
            TestCaseStatus::success()
        };
        let mut tc = TestCase::new(format!("{}: {}", c.id, c.title), status);
        tc.set_classname(format!("kosmos.check.{}", c.family));
        checks.add_test_case(tc);
    }

    let mut nodes = TestSuite::new("nodes");
    for n in &report.nodes {
        let status = match n.state {
            NodeState::Revoked => {
                let mut st = TestCaseStatus::skipped();
                st.set_message(format!("revoked at {}", n.revoked_at.clone().unwrap_or_default()));
                st
            }
            NodeState::NeverReported => failure(
                NonSuccessKind::Failure,
                "enrolled but never reported".into(),
                "stale",
                "an external node that does not attest is itself a connectivity or health finding".into(),
            ),
            NodeState::Stale => failure(
                NonSuccessKind::Failure,
                format!(
                    "no attestation for {} s (stale after {} s)",
                    n.last_attestation_age_secs.unwrap_or(0),
                    report.settings.stale_after_secs
                ),
                "stale",
                format!("last attestation {}", n.last_attestation_at.clone().unwrap_or_default()),
            ),
            NodeState::Ok if n.blocking > 0 => {
                let blocking: Vec<String> = n
                    .findings
                    .iter()
                    .filter(|f| {
                        matches!(f.status.as_str(), "fail" | "error")
                            && matches!(f.severity.as_str(), "critical" | "high")
                    })
                    .map(|f| format!("{} ({} {})", f.check_id, f.severity, f.status))
                    .collect();
                failure(
                    NonSuccessKind::Failure,
                    format!("{} blocking finding(s) at high or critical", n.blocking),
                    "blocking",
                    blocking.join("\n"),
                )
            }
            NodeState::Ok => TestCaseStatus::success(),
        };
        let mut tc = TestCase::new(format!("{} ({})", n.hostname, n.id), status);
        tc.set_classname("kosmos.node");
        nodes.add_test_case(tc);
    }
    junit.add_test_suites([checks, nodes]);
    // Node-controlled text (hostnames, titles, remediation) may hold
    // characters XML 1.0 cannot carry at all: spell them out.
    Ok(crate::untrusted::xml_text(&junit.to_string()?).into_owned())
}
