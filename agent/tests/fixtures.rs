//! Whole-host fixture roots: every check's status is asserted through the
//! real binary's JSON output, which is validated against the schema.
//!
//! The expected statuses live in `tests/fixtures/<name>.expected` (`id status`
//! per line). After a deliberate change, regenerate with
//! `KOSMOS_BLESS=1 cargo test --test fixtures` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::{check_json, fixture_root, fixtures_dir, statuses};

fn assert_fixture(name: &str) -> serde_json::Value {
    let root = fixture_root(name);
    // Dates (end of life, waivers) are judged as of a fixed day, so the
    // expectations do not change as support periods end.
    let (report, code) = check_json(&root.root_arg(), &["--fail-on", "none", "--as-of", "2026-11-22"]);
    assert_eq!(code, 0, "--fail-on none must exit 0");
    let got = statuses(&report);
    let path = fixtures_dir().join(format!("{name}.expected"));
    if std::env::var_os("KOSMOS_BLESS").is_some() {
        let text: String = got.iter().map(|(id, s)| format!("{id} {s}\n")).collect();
        std::fs::write(&path, text).unwrap();
    }
    let expected: BTreeMap<String, String> = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (id, s) = l.split_once(' ').unwrap();
            (id.to_string(), s.trim().to_string())
        })
        .collect();
    let mut diffs = Vec::new();
    for (id, want) in &expected {
        match got.get(id) {
            Some(have) if have == want => {}
            Some(have) => diffs.push(format!("{id}: expected {want}, got {have}")),
            None => diffs.push(format!("{id}: expected {want}, missing from the report")),
        }
    }
    for id in got.keys().filter(|id| !expected.contains_key(*id)) {
        diffs.push(format!("{id}: in the report but not in {name}.expected"));
    }
    assert!(diffs.is_empty(), "fixture {name}:\n{}", diffs.join("\n"));
    report
}

#[test]
fn hardened_node() {
    let report = assert_fixture("hardened");
    assert_eq!(report["node"]["hostname"], "node-hardened-01");
    assert_eq!(report["node"]["os"]["version_id"], "13");
    assert_eq!(report["summary"]["fail"], 0, "a hardened node must not fail anything");
    assert_eq!(report["summary"]["error"], 0);
}

#[test]
fn weak_node() {
    let report = assert_fixture("weak");
    assert!(report["summary"]["fail"].as_u64().unwrap() >= 40);
}

#[test]
fn minimal_root() {
    let report = assert_fixture("minimal");
    // An almost empty root must never be judged compliant by default.
    assert_eq!(report["node"]["hostname"], "unknown");
}

#[test]
fn hostile_root_never_passes_what_it_cannot_read() {
    let report = assert_fixture("hostile");
    // Every finding that names a hostile file must be an error, never a pass.
    for f in report["results"].as_array().unwrap() {
        if f["status"] == "error" {
            assert!(!f["reason"].as_str().unwrap_or_default().is_empty(), "{} has no reason", f["id"]);
        }
    }
}
