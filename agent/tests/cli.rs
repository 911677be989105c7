//! The command-line contract through the real binary: exit codes, output
//! formats, profiles and waivers, `checks`, `explain`, and an audit of the
//! machine the tests run on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_json, finding, fixture_root, run, validate_report};

#[test]
fn exit_codes() {
    let weak = fixture_root("weak");
    // Weak fails high-severity checks: exit 1 at the default threshold.
    assert_eq!(run(&["check", "--root", &weak.root_arg()]).status.code(), Some(1));
    assert_eq!(run(&["check", "--root", &weak.root_arg(), "--fail-on", "none"]).status.code(), Some(0));
    // Usage and configuration errors: exit 2 with a message naming the culprit.
    let out = run(&["check", "--root", "/nonexistent/kosmos-root"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kosmos-root"));
    let out = run(&["check", "--root", &weak.root_arg(), "--profile", "no-such-profile"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-profile"));
    let out = run(&["check", "--root", &weak.root_arg(), "--only", "sysctl.kptr_restrict,nope.nothing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.nothing"));
    assert_eq!(run(&["check", "--fail-on", "severe"]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn fail_on_threshold_counts_only_at_or_above() {
    let weak = fixture_root("weak");
    // Only a low-severity failing check selected: high threshold passes, low fails.
    let only = ["check", "--root", &weak.root_arg(), "--only", "sysctl.log_martians"];
    let (report, _) = check_json(&weak.root_arg(), &["--only", "sysctl.log_martians", "--fail-on", "none"]);
    assert_eq!(finding(&report, "sysctl.log_martians")["status"], "fail");
    assert_eq!(finding(&report, "sysctl.log_martians")["severity"], "low");
    let mut a = only.to_vec();
    a.extend(["--fail-on", "high"]);
    assert_eq!(run(&a).status.code(), Some(0));
    let mut a = only.to_vec();
    a.extend(["--fail-on", "low"]);
    assert_eq!(run(&a).status.code(), Some(1));
}

#[test]
fn only_restricts_the_run() {
    let weak = fixture_root("weak");
    let (report, _) =
        check_json(&weak.root_arg(), &["--only", "sysctl.kptr_restrict,sysctl.tcp_syncookies", "--fail-on", "none"]);
    assert_eq!(report["results"].as_array().unwrap().len(), 2);
}

#[test]
fn text_output_is_grouped_with_a_summary() {
    let weak = fixture_root("weak");
    let out = run(&["check", "--root", &weak.root_arg(), "--fail-on", "none"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[sysctl]"));
    assert!(text.contains("FAIL"));
    let last = text.lines().rev().find(|l| !l.is_empty()).unwrap();
    assert!(last.contains(" pass, ") && last.contains(" fail, "), "summary line: {last}");
}

#[test]
fn junit_has_one_testcase_per_check() {
    let weak = fixture_root("weak");
    let (report, _) = check_json(&weak.root_arg(), &["--fail-on", "none"]);
    let out = run(&["check", "--root", &weak.root_arg(), "--output", "junit", "--fail-on", "none"]);
    let xml = String::from_utf8(out.stdout).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    let results = report["results"].as_array().unwrap();
    assert_eq!(cases.len(), results.len());
    let failures = cases.iter().filter(|c| c.children().any(|n| n.has_tag_name("failure"))).count();
    assert_eq!(failures as u64, report["summary"]["fail"].as_u64().unwrap());
    let errors = cases.iter().filter(|c| c.children().any(|n| n.has_tag_name("error"))).count();
    assert_eq!(errors as u64, report["summary"]["error"].as_u64().unwrap());
}

#[test]
fn waivers_apply_until_they_expire() {
    let weak = fixture_root("weak");
    let profile = weak.path().join("waivers.toml");
    std::fs::write(
        &profile,
        r#"
[profile]
name = "with-waivers"
version = "7"
extends = "kosmos-external"

[[waiver]]
check = "sysctl.kptr_restrict"
reason = "vendor kernel needs pointers for its profiler, ticket SEC-42"
expires = "2999-12-31"

[[waiver]]
check = "sysctl.dmesg_restrict"
reason = "temporary exception"
expires = "2020-01-01"
"#,
    )
    .unwrap();
    let (report, _) = check_json(&weak.root_arg(), &["--profile", profile.to_str().unwrap(), "--fail-on", "none"]);
    assert_eq!(report["profile"]["name"], "with-waivers");
    let active = finding(&report, "sysctl.kptr_restrict");
    assert_eq!(active["status"], "waived");
    assert_eq!(active["waiver"]["expires"], "2999-12-31");
    let expired = finding(&report, "sysctl.dmesg_restrict");
    assert_eq!(expired["status"], "fail");
    assert_eq!(expired["waiver"]["expired"], true);
    assert!(expired["reason"].as_str().unwrap().contains("expired"));
    assert!(report["summary"]["waived"].as_u64().unwrap() >= 1);
    // As of a day before its expiry, the same waiver still applies.
    let (report, _) = check_json(
        &weak.root_arg(),
        &["--profile", profile.to_str().unwrap(), "--fail-on", "none", "--as-of", "2019-12-31"],
    );
    assert_eq!(finding(&report, "sysctl.dmesg_restrict")["status"], "waived");
    let out = run(&["check", "--root", &weak.root_arg(), "--as-of", "last tuesday"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn invalid_user_profile_is_a_config_error_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[profile]\nname='bad'\nversion='1'\n[params.\"sysctl.ip_forward\"]\nkubernetes_node='maybe'\n[[waiver]]\ncheck='x.y'\nreason='r'\nexpires='soon'\n",
    )
    .unwrap();
    let out = run(&["check", "--root", dir.path().to_str().unwrap(), "--profile", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("kubernetes_node") && err.contains("x.y") && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn checks_and_explain() {
    let out = run(&["checks", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list.len() >= 70, "only {} checks", list.len());
    for c in &list {
        assert!(c["rationale"].as_str().is_some_and(|s| !s.is_empty()), "{} lacks a rationale", c["id"]);
    }
    let out = run(&["checks"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("sysctl.kptr_restrict"));
    let out = run(&["explain", "sysctl.ip_forward"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kubernetes_node") && text.contains("remediation"));
    assert_eq!(run(&["explain", "no.such_check"]).status.code(), Some(2));
}

#[test]
fn live_host_audit_completes_without_internal_errors() {
    let out = run(&["check", "--output", "json", "--fail-on", "none"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    validate_report(&report);
    assert_eq!(report["root"], "/");
    for f in report["results"].as_array().unwrap() {
        let reason = f["reason"].as_str().unwrap_or_default();
        assert!(!reason.contains("a bug"), "{}: {reason}", f["id"]);
    }
    let errors: Vec<String> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "error")
        .map(|f| format!("{}: {}", f["id"], f["reason"]))
        .collect();
    assert!(errors.is_empty(), "errors on the live host:\n{}", errors.join("\n"));
}
