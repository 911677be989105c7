//! A panicking check in the shipped (release) agent becomes an `error`
//! finding and the daemon keeps running (issue 14).
//!
//! The binary under test is `kosmos-fault-agent` (`tests/fault-agent`):
//! the real agent program, from the same library, whose registry has one
//! more check, `fault.panic`, which panics. It must be a **release** build:
//! `.ci/run` builds it with the packaged binaries (`cargo build --release -p
//! kosmos-node-agent -p kosmos-collector -p kosmos-fault-agent`) into
//! `<target dir>/release/`; `KOSMOS_FAULT_AGENT` may name another path.
//! The packaged agent carries no `fault.*` check (`packaging/test.sh`
//! checks).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kosmos_e2e::*;

fn fault_agent() -> Option<PathBuf> {
    let path = std::env::var_os("KOSMOS_FAULT_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release/kosmos-fault-agent"));
    if path.is_file() {
        Some(path)
    } else {
        cannot_run(
            "fault_injection",
            &format!(
                "{} is not built: run `cargo build --release -p kosmos-fault-agent` (.ci/run does)",
                path.display()
            ),
        );
        None
    }
}

fn report_of(body: &kosmos_proto::v1::AttestationBody) -> serde_json::Value {
    let json = kosmos_proto::report::decode(body).unwrap();
    serde_json::from_slice(&json).unwrap()
}

fn finding<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["results"].as_array().unwrap().iter().find(|f| f["id"] == id).unwrap_or_else(|| panic!("no {id}"))
}

#[test]
fn a_panicking_check_is_an_error_finding_in_a_release_build_and_the_daemon_survives() {
    let Some(binary) = fault_agent() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = repo().join("tests/fixtures/hardened");

    // The binary is a release build and carries the fault check.
    let (code, out, err) = run(std::process::Command::new(&binary).arg("checks"));
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.contains("fault.panic")).unwrap_or_else(|| panic!("no fault.panic in:\n{out}"));
    assert!(line.contains("release build"), "not a release build: {line}");

    // `check`: the panic is an error finding naming the check; the other
    // checks of the run are evaluated as usual.
    let (code, out, err) = run(std::process::Command::new(&binary).args([
        "check",
        "--root",
        root.to_str().unwrap(),
        "--only",
        "fault.panic,ssh.permit_root_login",
        "--output",
        "json",
        "--fail-on",
        "none",
    ]));
    assert_eq!(code, 0, "check exited {code}: {err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = finding(&report, "fault.panic");
    assert_eq!(f["status"], "error", "{f}");
    assert!(
        f["reason"].as_str().unwrap().contains("internal error while evaluating fault.panic: injected fault"),
        "{f}"
    );
    assert_eq!(finding(&report, "ssh.permit_root_login")["status"], "pass");

    // The daemon: several audit rounds, each with the error finding, and the
    // process is still alive after them.
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let agent = Agent::with_binary(&tmp.path().join("agent"), &binary);
    let (code, out, err) = agent.enroll(&collector, &collector.token("1h"), &collector.fingerprint());
    assert_eq!(code, 0, "enroll: {out}{err}");
    let profile = tmp.path().join("fault-profile.toml");
    std::fs::write(
        &profile,
        "[profile]\nname = \"fault\"\nversion = \"1\"\nextends = \"linux-baseline\"\n[checks]\ninclude = [\"fault.*\"]\n",
    )
    .unwrap();
    agent.configure(
        &collector.url(),
        &root,
        &format!("interval_secs = 1\njitter_percent = 0\nprofile = \"{}\"\n", profile.display()),
    );
    let mut daemon = agent.spawn_daemon();
    let node = agent.node_id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let bodies = loop {
        let stored = collector.store().envelopes(&node).unwrap();
        if stored.len() >= 3 {
            break stored;
        }
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited after a panicking check");
        assert!(Instant::now() < deadline, "only {} rounds stored in 60 s", stored.len());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited after a panicking check");
    // The daemon's findings do not change from one round to the next, so
    // after its first full report it sends compact attestations (issue 17):
    // each must refer to a full report with the error finding.
    let mut full_reports = std::collections::BTreeSet::new();
    for (seq, body, _) in bodies {
        let b = <kosmos_proto::v1::AttestationBody as prost::Message>::decode(body.as_slice()).unwrap();
        if kosmos_proto::compact::is_compact(&b) {
            assert!(full_reports.contains(&b.same_as_seq), "seq {seq} refers to {}, not a full report", b.same_as_seq);
            continue;
        }
        let report = report_of(&b);
        let f = finding(&report, "fault.panic");
        assert_eq!(f["status"], "error", "seq {seq}: {f}");
        assert!(report["summary"]["pass"].as_u64().unwrap() > 10, "seq {seq}: the rest of the audit ran");
        full_reports.insert(seq);
    }
    assert!(!full_reports.is_empty(), "no full report stored");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon exit after SIGTERM: {status:?}");
}
