//! `check --state-dir`: the pending security updates are recorded after the
//! run (file 0600 in a 0700 directory) with the observation history that
//! tells which of them are known to be new (issue 14).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{fixture_root, run};

const PKG: &str = "openssh-server:amd64";
const CANDIDATE: &str = "1:8.4p1-5+deb11u5";

fn audit(args: &[&str]) -> serde_json::Value {
    let out: serde_json::Value = serde_json::from_slice(&run(args).stdout).unwrap();
    out["results"][0].clone()
}

#[test]
fn updates_pending_at_the_first_observation_fail_and_only_new_ones_get_the_grace_period() {
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
    // An empty state directory: every pending update is of unknown age.
    let first = audit(&args);
    assert_eq!(first["status"], "fail", "{first}");
    assert!(first["reason"].as_str().unwrap().contains("of unknown age"), "{first}");
    let file = state.join("first-seen.json");
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["format"], 2);
    assert_eq!(saved["updates"][PKG][CANDIDATE]["age_known"], false, "{saved}");

    // A second run does not make them young.
    let second = audit(&args);
    assert_eq!(second["status"], "fail", "{second}");
    assert!(second["reason"].as_str().unwrap().contains("of unknown age"), "{second}");

    // As if every update had appeared after the earlier observation: the
    // records are dropped, keeping the observation history.
    let mut edited = saved.clone();
    edited["updates"] = serde_json::json!({});
    std::fs::write(&file, edited.to_string()).unwrap();
    let third = audit(&args);
    assert_eq!(third["status"], "pass", "known new, within the 7-day grace: {third}");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["updates"][PKG][CANDIDATE]["age_known"], true, "{saved}");

    // Backdate one record beyond the grace period: overdue.
    let mut edited = saved.clone();
    edited["updates"][PKG][CANDIDATE]["first_seen"] = serde_json::json!("2020-01-01T00:00:00Z");
    std::fs::write(&file, edited.to_string()).unwrap();
    let fourth = audit(&args);
    assert_eq!(fourth["status"], "fail", "{fourth}");
    assert!(fourth["reason"].as_str().unwrap().contains("beyond the 7-day grace period"), "{fourth}");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["updates"][PKG][CANDIDATE]["first_seen"], "2020-01-01T00:00:00Z");
}
