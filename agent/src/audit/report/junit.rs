//! JUnit XML: one testcase per check, one testsuite per family, so CI systems
//! (GitLab, Jenkins, GitHub) show the audit as a test run.

use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};

use super::{Finding, Report};
use crate::audit::model::Status;

fn message(f: &Finding) -> String {
    let mut parts = Vec::new();
    if let Some(o) = &f.observed {
        parts.push(format!("observed: {o}"));
    }
    if let Some(e) = &f.expected {
        parts.push(format!("expected: {e}"));
    }
    if let Some(r) = &f.reason {
        parts.push(format!("reason: {r}"));
    }
    parts.join("; ")
}

fn body(f: &Finding) -> String {
    let mut s = String::new();
    for e in &f.evidence {
        s.push_str(&format!("{}: {}\n", e.source, e.detail));
    }
    if let Some(r) = &f.remediation {
        s.push_str(&format!("remediation: {r}\n"));
    }
    s
}

/// Render the report as JUnit XML.
pub fn render(report: &Report) -> String {
    let mut junit = JReport::new(format!("kosmos-node-agent {} on {}", report.profile.name, report.node.hostname));
    let mut suites: Vec<TestSuite> = Vec::new();
    for f in &report.results {
        if suites.last().is_none_or(|s| s.name.as_str() != f.family) {
            suites.push(TestSuite::new(f.family.clone()));
        }
        let status = match f.status {
            Status::Pass => TestCaseStatus::success(),
            Status::Fail => {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                st.set_message(message(f));
                st.set_type(f.severity.as_str());
                st.set_description(body(f));
                st
            }
            Status::Error => {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
                st.set_message(message(f));
                st.set_type("error");
                st.set_description(body(f));
                st
            }
            Status::NotApplicable | Status::Waived => {
                let mut st = TestCaseStatus::skipped();
                let why = match (&f.status, &f.waiver, &f.reason) {
                    (Status::Waived, Some(w), _) => format!("waived until {}: {}", w.expires, w.reason),
                    (_, _, Some(r)) => format!("not applicable: {r}"),
                    _ => "not applicable".to_string(),
                };
                st.set_message(why);
                st
            }
        };
        let mut tc = TestCase::new(format!("{}: {}", f.id, f.title), status);
        tc.set_classname(format!("kosmos.{}", f.family));
        if let Some(suite) = suites.last_mut() {
            suite.add_test_case(tc);
        }
    }
    junit.add_test_suites(suites);
    junit.to_string().unwrap_or_default()
}
