//! Shared helpers for the agent's integration tests: fixture roots copied to
//! a temporary directory (with the modes, owners and hostile files that git
//! cannot carry applied), the real binary, and report validation.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fixture;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's top directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn fixtures_dir() -> PathBuf {
    repo().join("tests/fixtures")
}

/// The agent binary built by cargo for this test run.
pub fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kosmos-node-agent"));
    c.env_remove("KOSMOS_AGENT_LOG");
    c
}

pub fn run(args: &[&str]) -> Output {
    // `check` gets a fresh state directory unless the test gives one: tests
    // must neither read nor write the machine's /var/lib/kosmos-node-agent.
    let state = tempfile::tempdir().unwrap();
    let mut cmd = agent();
    cmd.args(args);
    if args.first() == Some(&"check") && !args.contains(&"--state-dir") {
        cmd.arg("--state-dir").arg(state.path());
    }
    cmd.output().expect("spawn kosmos-node-agent")
}

/// A fixture root copied to a temporary directory with its `.setup` applied.
pub struct FixtureRoot {
    pub dir: tempfile::TempDir,
}

impl FixtureRoot {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn root_arg(&self) -> String {
        self.dir.path().display().to_string()
    }
}

pub fn fixture_root(name: &str) -> FixtureRoot {
    let src = fixtures_dir().join(name);
    assert!(src.is_dir(), "no fixture {name}");
    let dir = tempfile::Builder::new().prefix(&format!("kna-{name}-")).tempdir().unwrap();
    fixture::prepare(&fixtures_dir(), name, dir.path());
    FixtureRoot { dir }
}

/// Validate a report against the repository's JSON Schema.
pub fn validate_report(report: &serde_json::Value) {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/report.v1.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(report).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "report violates the schema:\n{}", errors.join("\n"));
}

/// Run `check --output json` on a root and return the parsed, validated report.
pub fn check_json(root: &str, extra: &[&str]) -> (serde_json::Value, i32) {
    let mut args = vec!["check", "--root", root, "--output", "json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}); exit {:?}; stderr: {stderr}", out.status.code()));
    validate_report(&report);
    (report, out.status.code().unwrap_or(-1))
}

/// Status of each check, by id.
pub fn statuses(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect()
}

pub fn finding<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["results"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("no finding {id}"))
}

/// Whether this run is CI (`CI=true`, as `.ci/run` and every CI service set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A test that cannot set up its real component (network namespaces, a
/// Debian mirror, a tool): in CI this fails the test, loudly, because a
/// test that passes without running proves nothing; elsewhere (a developer
/// machine without root) it prints that the test was skipped and why, and
/// the caller returns.
pub fn cannot_run(test: &str, why: &str) {
    assert!(!in_ci(), "{test} cannot set up its real component in CI: {why}");
    eprintln!("\n*** SKIPPED {test}: {why} (in CI, with CI=true, this fails) ***\n");
}
