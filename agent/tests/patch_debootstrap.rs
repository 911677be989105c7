//! The pending-update computation must agree with apt itself: on a real
//! Debian 12 root (debootstrap minbase from deb.debian.org, then
//! bookworm-security added and `apt-get update` run inside it, so its lists
//! hold security updates newer than its installed packages), our upgradable
//! set (package, candidate version, security flag) must equal the `Inst`
//! lines of `apt-get -s dist-upgrade` run in that root.
//!
//! The root is built once by `tests/debootstrap-root.sh` and cached under
//! `<target>/debootstrap-cache`. Needs root and network access to
//! deb.debian.org; it is skipped (loudly) only when debootstrap is missing
//! and we are not root, i.e. on a developer machine; under `CI=true` that
//! fails instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use kosmos_node_agent::audit::facts::Facts;
use kosmos_node_agent::audit::facts::packages::updates::UpdateFacts;
use kosmos_node_agent::audit::host::Host;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn have_debootstrap() -> bool {
    ["/usr/sbin/debootstrap", "/usr/bin/debootstrap", "/sbin/debootstrap"].iter().any(|p| Path::new(p).exists())
}

/// Build (or reuse) the cached root; `None` when the test must be skipped.
fn debian_root() -> Option<PathBuf> {
    let is_root = nix::unistd::geteuid().is_root();
    if !have_debootstrap() && !is_root {
        common::cannot_run(
            "patch_debootstrap",
            "debootstrap is not installed and we are not root; run as root (.ci/run installs debootstrap) to compare with apt-get",
        );
        return None;
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("debootstrap-cache");
    let out = Command::new("bash")
        .arg(repo().join("tests/debootstrap-root.sh"))
        .arg(&cache)
        .output()
        .expect("run tests/debootstrap-root.sh");
    assert!(
        out.status.success(),
        "tests/debootstrap-root.sh failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let root = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim().lines().last().unwrap());
    assert!(root.join("var/lib/dpkg/status").is_file(), "{} is not a Debian root", root.display());
    Some(root)
}

/// `Inst name [old] (new suite, suite [arch])` lines of apt's simulation.
fn apt_upgrades(root: &Path) -> BTreeSet<(String, String, bool)> {
    let out = Command::new("chroot")
        .arg(root)
        .args(["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"])
        .env("LC_ALL", "C")
        .output()
        .expect("chroot apt-get -s dist-upgrade");
    assert!(out.status.success(), "apt-get -s dist-upgrade failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut set = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("Inst ")) {
        let rest = &line[5..];
        let (name, rest) = rest.split_once(' ').unwrap();
        // New installs (no "[old]") are dependencies, not upgrades of installed packages.
        let Some(rest) = rest.strip_prefix('[') else { continue };
        let (_, rest) = rest.split_once("] (").unwrap();
        let (version, origins) = rest.split_once(' ').unwrap();
        let name = name.split(':').next().unwrap().to_string();
        set.insert((name, version.to_string(), origins.contains("-security")));
    }
    set
}

#[test]
fn pending_updates_match_apt_get_dist_upgrade() {
    let Some(root) = debian_root() else { return };
    let expected = apt_upgrades(&root);
    let host = Host::offline(&root);
    let facts = Facts::new(&host);
    let updates = facts.get::<UpdateFacts>();
    let status = updates.0.as_ref().unwrap_or_else(|e| panic!("pending updates not computed: {e}"));
    let ours: BTreeSet<(String, String, bool)> =
        status.pending.iter().map(|u| (u.name.clone(), u.candidate.clone(), u.security)).collect();
    assert!(!expected.is_empty(), "the root has no pending upgrades: the comparison would prove nothing");
    assert!(expected.iter().any(|(_, _, sec)| *sec), "no security upgrade in apt's plan: {expected:?}");
    assert_eq!(ours, expected, "ours (left) vs apt-get -s dist-upgrade (right)");
    assert!(status.held.is_empty(), "nothing is held in the root: {:?}", status.held);
}

/// Issue 14: the same real root, audited by the real binary with an empty
/// state directory, fails `patch.security_updates_pending`: every pending
/// security update is of unknown age (the agent never observed this node
/// without them), and the reason counts exactly apt's security upgrades.
#[test]
fn security_updates_of_unknown_age_fail_on_a_real_root() {
    let Some(root) = debian_root() else { return };
    let apt_security = apt_upgrades(&root).iter().filter(|(_, _, sec)| *sec).count();
    assert!(apt_security > 0, "no security upgrade in apt's plan: the check would prove nothing");
    let state = tempfile::tempdir().unwrap();
    let out = common::run(&[
        "check",
        "--root",
        root.to_str().unwrap(),
        "--only",
        "patch.security_updates_pending",
        "--output",
        "json",
        "--fail-on",
        "none",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &report["results"][0];
    assert_eq!(f["status"], "fail", "{f}");
    let reason = f["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("{apt_security} security update(s) of unknown age")),
        "apt plans {apt_security} security upgrades: {reason}"
    );
}
