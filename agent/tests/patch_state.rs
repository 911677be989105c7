//! `check --state-dir`: first-seen times of pending updates are recorded
//! after the run (file 0600 in a 0700 directory) and reused by later runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{fixture_root, run};

#[test]
fn first_seen_state_is_recorded_and_reused() {
    let weak = fixture_root("weak");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let args = [
        "check",
        "--root",
        &weak.root_arg(),
        "--only",
        "patch.security_updates_pending",
        "--output",
        "json",
        "--fail-on",
        "none",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let first: serde_json::Value = serde_json::from_slice(&run(&args).stdout).unwrap();
    let text = serde_json::to_string(&first).unwrap();
    assert!(text.contains("is absent (first run?)"), "{text}");
    let file = state.join("first-seen.json");
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(saved.get("openssh-server:amd64 1:8.4p1-5+deb11u5").is_some(), "{saved}");
    // Backdate the record: the update is now overdue and the check fails.
    std::fs::write(&file, r#"{"openssh-server:amd64 1:8.4p1-5+deb11u5": "2020-01-01T00:00:00Z"}"#).unwrap();
    let second: serde_json::Value = serde_json::from_slice(&run(&args).stdout).unwrap();
    assert_eq!(second["results"][0]["status"], "fail", "{second}");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["openssh-server:amd64 1:8.4p1-5+deb11u5"], "2020-01-01T00:00:00Z");
}
