//! Shared helpers for the agent's integration tests: fixture roots copied to
//! a temporary directory (with the modes, owners and hostile files that git
//! cannot carry applied), the real binary, and report validation.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
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

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let ty = entry.file_type().unwrap();
        let to = dst.join(entry.file_name());
        if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &to).unwrap();
        } else if ty.is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
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
    copy_tree(&src, dir.path());
    let setup = fixtures_dir().join(format!("{name}.setup"));
    let text = std::fs::read_to_string(&setup).unwrap_or_default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let target = dir.path().join(parts[1].trim_start_matches('/'));
        match parts[0] {
            "mode" => {
                let mode = u32::from_str_radix(parts[2], 8).unwrap();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            "owner" => {
                let uid: u32 = parts[2].parse().unwrap();
                let gid: u32 = parts[3].parse().unwrap();
                std::os::unix::fs::chown(&target, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {}: {e} (fixture tests run as root)", target.display()));
            }
            "sparse" => {
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                let f = std::fs::File::create(&target).unwrap();
                f.set_len(parts[2].parse().unwrap()).unwrap();
            }
            "fifo" => {
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                let _ = std::fs::remove_file(&target);
                nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
            }
            other => panic!("{}: unknown setup op {other}", setup.display()),
        }
    }
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
