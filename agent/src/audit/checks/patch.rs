//! OS patch level (family `patch`): pending (security) updates, freshness of
//! the package metadata they are computed from, pending reboots and
//! automatic updates. Under the shared responsibility model, patching an
//! external Kosmos node is entirely the customer's job.
//!
//! "No pending updates" is only a pass when the package lists are fresh:
//! computed from lists older than `max_list_age_days` it is an `error`
//! saying so, never a silent pass. Pending updates found in old lists are
//! still a certain failure (at least those are missing).

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::packages::debversion::DebVersion;
use crate::audit::facts::packages::first_seen::{FirstSeen, UpdateAge};
use crate::audit::facts::packages::rpm::rpmvercmp;
use crate::audit::facts::packages::updates::{Manager, PendingUpdate, UpdateFacts, UpdateStatus};
use crate::audit::facts::packages::{PackageFacts, PackageFormat};
use crate::audit::model::{Evidence, Outcome, Severity};

mod autoupdate;

/// Evidence lines per finding; the rest is counted.
const MAX_LISTED: usize = 50;

fn source_of(s: &UpdateStatus) -> String {
    match s.manager {
        Manager::Apt => "/var/lib/apt/lists".to_string(),
        Manager::Dnf => s.sources.get(1).cloned().unwrap_or_else(|| "dnf".into()),
    }
}

fn update_json(u: &PendingUpdate) -> serde_json::Value {
    json!({"package": u.name, "arch": u.arch, "installed": u.installed, "candidate": u.candidate,
           "suite": u.suites.join(", "), "security": u.security})
}

/// Evidence for held/pinned updates and notes of the computation.
fn context_evidence(s: &UpdateStatus, security_only: bool) -> Vec<Evidence> {
    let mut ev = Vec::new();
    for h in s.held.iter().filter(|h| !security_only || h.security) {
        ev.push(Evidence::new(
            "/var/lib/dpkg/status",
            format!("{}:{} {} -> {} not counted: {}", h.name, h.arch, h.installed, h.available, h.why),
        ));
    }
    if let Some(f) = &s.freshness {
        let when: DateTime<Utc> = f.refreshed.into();
        ev.push(Evidence::new(
            &f.source,
            format!("package metadata last refreshed {}", when.format("%Y-%m-%d %H:%M UTC")),
        ));
    }
    for n in &s.notes {
        ev.push(Evidence::new(source_of(s), n.clone()));
    }
    ev
}

/// The error for "nothing pending" computed from untrustworthy metadata,
/// or `None` when the metadata is fresh enough.
fn stale(s: &UpdateStatus, max_age_days: i64) -> Option<String> {
    match s.metadata_age_days(SystemTime::now()) {
        None => Some("no pending updates found, but when the package metadata was last refreshed is unknown".into()),
        Some(age) if i64::try_from(age).unwrap_or(i64::MAX) > max_age_days => Some(format!(
            "no pending updates found, but the package metadata is {age} days old (more than {max_age_days}): the result cannot be trusted; refresh it (apt-get update / dnf makecache)"
        )),
        _ => None,
    }
}

fn security_updates(facts: &Facts<'_>, p: &Params) -> Outcome {
    let uf = facts.get::<UpdateFacts>();
    let s = match &uf.0 {
        Ok(s) => s,
        Err(e) => return Outcome::error(e.to_string()),
    };
    let state = facts.get::<FirstSeen>();
    let now = Utc::now();
    let grace = p.int("grace_days");
    // Overdue first: an update of unknown age may be months old, so only an
    // update known to be new (absent from an earlier observation) gets the
    // grace period.
    let mut unknown = Vec::new();
    let mut overdue = Vec::new();
    let mut within = Vec::new();
    for u in s.security() {
        match state.age(u, s.manager, now) {
            UpdateAge::Unknown { first_seen } => unknown.push((
                u,
                format!(
                    "first seen {}, age unknown (already pending at the first observation of this node)",
                    first_seen.format("%Y-%m-%d")
                ),
            )),
            UpdateAge::Known { since } if (now - since).num_days() > grace => overdue
                .push((u, format!("pending since {} (absent from an earlier observation)", since.format("%Y-%m-%d")))),
            UpdateAge::Known { since } => within
                .push((u, format!("pending since {} (absent from an earlier observation)", since.format("%Y-%m-%d")))),
        }
    }
    let mut ev: Vec<Evidence> = unknown
        .iter()
        .chain(overdue.iter())
        .chain(within.iter())
        .take(MAX_LISTED)
        .map(|(u, age)| Evidence::new(source_of(s), format!("{}: {age}", u.describe())))
        .collect();
    let total = unknown.len() + overdue.len() + within.len();
    if total > MAX_LISTED {
        ev.push(Evidence::new(source_of(s), format!("... and {} more", total - MAX_LISTED)));
    }
    if let Some(why) = &state.unavailable
        && total > 0
    {
        ev.push(Evidence::new(
            "state",
            format!("{why}: no earlier observation is on record, so no pending update is known to be recent"),
        ));
    }
    ev.extend(context_evidence(s, true));
    let observed: Vec<_> = s.security().map(update_json).collect();
    let expected =
        json!(format!("no security update of unknown age, and none pending more than {grace} days after it appeared"));
    if !unknown.is_empty() || !overdue.is_empty() {
        let mut parts = Vec::new();
        if !unknown.is_empty() {
            parts.push(format!(
                "{} security update(s) of unknown age (already pending when this node was first observed, so possibly long overdue)",
                unknown.len()
            ));
        }
        if !overdue.is_empty() {
            parts.push(format!("{} pending beyond the {grace}-day grace period", overdue.len()));
        }
        return Outcome::fail()
            .observed(observed)
            .expected(expected)
            .with_evidence(ev)
            .note(format!("{} ({total} pending in all)", parts.join("; ")));
    }
    if total > 0 {
        return Outcome::pass().observed(observed).expected(expected).with_evidence(ev).note(format!(
            "{total} security update(s) pending, each absent from an earlier observation and within the {grace}-day grace period"
        ));
    }
    if let Some(why) = stale(s, p.int("max_list_age_days")) {
        return Outcome::error(why).with_evidence(ev);
    }
    Outcome::pass().observed(observed).expected(expected).with_evidence(ev)
}

fn all_updates(facts: &Facts<'_>, p: &Params) -> Outcome {
    let uf = facts.get::<UpdateFacts>();
    let s = match &uf.0 {
        Ok(s) => s,
        Err(e) => return Outcome::error(e.to_string()),
    };
    let mut ev: Vec<Evidence> =
        s.pending.iter().take(MAX_LISTED).map(|u| Evidence::new(source_of(s), u.describe())).collect();
    if s.pending.len() > MAX_LISTED {
        ev.push(Evidence::new(source_of(s), format!("... and {} more", s.pending.len() - MAX_LISTED)));
    }
    ev.extend(context_evidence(s, false));
    let observed: Vec<_> = s.pending.iter().map(update_json).collect();
    if !s.pending.is_empty() {
        let sec = s.security().count();
        return Outcome::fail()
            .observed(observed)
            .expected(json!([]))
            .with_evidence(ev)
            .note(format!("{} update(s) pending, {sec} of them security updates", s.pending.len()));
    }
    if let Some(why) = stale(s, p.int("max_list_age_days")) {
        return Outcome::error(why).with_evidence(ev);
    }
    Outcome::pass().observed(observed).expected(json!([])).with_evidence(ev)
}

fn lists_fresh(facts: &Facts<'_>, p: &Params) -> Outcome {
    let uf = facts.get::<UpdateFacts>();
    let s = match &uf.0 {
        Ok(s) => s,
        Err(e) => return Outcome::error(e.to_string()),
    };
    let max = p.int("max_age_days");
    let Some(f) = &s.freshness else {
        return Outcome::error("cannot tell when the package metadata was last refreshed");
    };
    let age = s.metadata_age_days(SystemTime::now()).unwrap_or(0);
    let when: DateTime<Utc> = f.refreshed.into();
    let o = Outcome::verdict(i64::try_from(age).unwrap_or(i64::MAX) <= max)
        .observed(json!({"age_days": age, "refreshed": when.to_rfc3339()}))
        .expected(json!(format!("at most {max} days old")))
        .evidence(&f.source, format!("last refreshed {}", when.format("%Y-%m-%d %H:%M UTC")));
    if o.status == crate::audit::model::Status::Fail {
        o.note(format!("package metadata is {age} days old: every patch verdict computed from it is uncertain"))
    } else {
        o
    }
}

/// Compare two kernel release strings with the package manager's ordering.
fn kernel_newer(format: PackageFormat, a: &str, b: &str) -> bool {
    match format {
        PackageFormat::Rpm => rpmvercmp(a, b).is_gt(),
        PackageFormat::Dpkg => match (DebVersion::parse(a), DebVersion::parse(b)) {
            (Ok(x), Ok(y)) => x > y,
            _ => a > b,
        },
    }
}

fn reboot_required(facts: &Facts<'_>, _p: &Params) -> Outcome {
    let host = facts.host();
    if !host.is_live() {
        return Outcome::not_applicable(
            "offline root: whether a reboot is pending depends on the running kernel and /run, which an offline root does not have",
        );
    }
    let mut ev = Vec::new();
    let mut reasons = Vec::new();
    match host.read_optional("/run/reboot-required") {
        Ok(Some(_)) => {
            let pkgs = host.read_optional("/run/reboot-required.pkgs").ok().flatten().unwrap_or_default();
            let list: Vec<&str> = pkgs.split_whitespace().collect();
            ev.push(Evidence::new(
                "/run/reboot-required",
                format!("present; packages: {}", if list.is_empty() { "unknown".into() } else { list.join(", ") }),
            ));
            reasons.push("/run/reboot-required exists".to_string());
        }
        Ok(None) => ev.push(Evidence::new("/run/reboot-required", "absent")),
        Err(e) => return Outcome::error(e.to_string()),
    }
    let format = match &facts.get::<PackageFacts>().0 {
        Ok(db) => db.format,
        Err(e) => return Outcome::error(e.to_string()),
    };
    let running = match host.read_text_limited("/proc/sys/kernel/osrelease", 4096) {
        Ok(t) => t.trim().to_string(),
        Err(e) => return Outcome::error(e.to_string()),
    };
    ev.push(Evidence::new("/proc/sys/kernel/osrelease", format!("running kernel {running}")));
    let installed: Vec<String> = match host.read_dir_optional("/boot") {
        Ok(v) => v.into_iter().filter_map(|e| e.name.strip_prefix("vmlinuz-").map(str::to_string)).collect(),
        Err(e) => return Outcome::error(e.to_string()),
    };
    let newest = installed.iter().fold(None::<&String>, |best, k| match best {
        Some(b) if !kernel_newer(format, k, b) => Some(b),
        _ => Some(k),
    });
    match newest {
        Some(n) => {
            ev.push(Evidence::new("/boot", format!("newest installed kernel {n} (of {})", installed.join(", "))));
            if kernel_newer(format, n, &running) {
                reasons.push(format!("kernel {n} is installed but {running} is running"));
            }
        }
        None => ev.push(Evidence::new("/boot", "no vmlinuz-* found (kernel managed outside /boot?)")),
    }
    if format == PackageFormat::Rpm {
        match host.run("needs-restarting", &["-r"]) {
            Ok(out) if out.status == Some(1) => {
                ev.push(Evidence::new("needs-restarting -r", String::from_utf8_lossy(&out.stdout).trim().to_string()));
                reasons.push("needs-restarting -r reports a reboot is required".into());
            }
            Ok(out) if out.success() => ev.push(Evidence::new("needs-restarting -r", "no reboot required")),
            Ok(out) => ev.push(Evidence::new("needs-restarting -r", format!("exit status {:?}: ignored", out.status))),
            Err(e) => ev.push(Evidence::new("needs-restarting -r", e.to_string())),
        }
    }
    let o = Outcome::verdict(reasons.is_empty())
        .observed(json!({"running_kernel": running, "reasons": reasons}))
        .expected(json!("no reboot pending"))
        .with_evidence(ev);
    if reasons.is_empty() { o } else { o.note(reasons.join("; ")) }
}

pub fn checks() -> Vec<Check> {
    vec![
        Check::new("patch.security_updates_pending", "No security update is pending beyond the grace period", Severity::High, security_updates)
            .rationale("Unpatched, publicly known vulnerabilities are the most common way into a server. On an external Kosmos node, OS patching is the customer's responsibility. The grace period applies only to a fix the agent knows to be recent: one absent from an earlier observation of this node (recorded in its state directory). A fix already pending when the agent first observed the node (first run, reinstalled node, lost state, offline audit without state) has an unknown age and counts as overdue.")
            .remediation("Install the pending security updates (`apt-get update && apt-get upgrade`, or `dnf upgrade --security`) and reboot if required; enable automatic security updates.")
            .param(ParamSpec::int("grace_days", 7, "days a security update may stay pending after the agent first saw it appear (only for updates absent from an earlier observation)"))
            .param(ParamSpec::int("max_list_age_days", 7, "package metadata older than this makes \"nothing pending\" an error")),
        Check::new("patch.updates_pending", "No package update is pending", Severity::Low, all_updates)
            .rationale("Non-security updates fix bugs and prepare later security fixes; a node far behind its distribution is harder to patch quickly when it matters.")
            .remediation("Apply pending updates regularly (`apt-get dist-upgrade` / `dnf upgrade`) in a maintenance window.")
            .param(ParamSpec::int("max_list_age_days", 7, "package metadata older than this makes \"nothing pending\" an error")),
        Check::new("patch.package_lists_fresh", "Package metadata (apt lists, dnf cache) is recent", Severity::Medium, lists_fresh)
            .rationale("Pending updates are computed from the package metadata on the node: if it is old, the node cannot even know which fixes it lacks, and every patch verdict is uncertain.")
            .remediation("Refresh the metadata regularly: enable apt-daily.timer (`APT::Periodic::Update-Package-Lists \"1\";`) or dnf-makecache.timer.")
            .param(ParamSpec::int("max_age_days", 7, "maximum age of the package metadata in days")),
        Check::new("patch.reboot_required", "No reboot is pending after updates", Severity::Medium, reboot_required)
            .rationale("Updated kernels and core libraries only take effect after a reboot: until then the node still runs the vulnerable code.")
            .remediation("Drain the node (`kubectl drain`), reboot it, and uncordon it."),
        autoupdate::check(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::Status;
    use crate::testutil::{eval, live_like, offline, root_with, write};

    const STATUS: &str = "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21.22\n\n\
Package: apt\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.6.1\n\n\
Package: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2026b-0+deb12u1\n";
    const L: &str = "/var/lib/apt/lists/deb.debian.org_debian";

    fn root(main: &str, security: &str) -> tempfile::TempDir {
        root_with(&[
            ("/var/lib/dpkg/status", STATUS),
            (&format!("{L}_dists_bookworm_InRelease"), "Label: Debian\nSuite: oldstable\nVersion: 12.15\n"),
            (&format!("{L}_dists_bookworm_main_binary-amd64_Packages"), main),
            (
                &format!("{L}-security_dists_bookworm-security_InRelease"),
                "Label: Debian-Security\nSuite: oldstable-security\nCodename: bookworm-security\n",
            ),
            (&format!("{L}-security_dists_bookworm-security_main_binary-amd64_Packages"), security),
        ])
    }

    fn age_lists(d: &tempfile::TempDir, days: u64) {
        let t = SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
        let lists = d.path().join("var/lib/apt/lists");
        for e in std::fs::read_dir(&lists).unwrap() {
            let f = std::fs::File::options().write(true).open(e.unwrap().path()).unwrap();
            f.set_modified(t).unwrap();
        }
    }

    #[test]
    fn security_updates_of_unknown_age_fail_and_known_new_ones_get_the_grace_period() {
        use crate::audit::facts::packages::first_seen::{FirstSeen, Seen};
        let d = root(
            "Package: apt\nVersion: 2.6.1\nArchitecture: amd64\n",
            "Package: apt\nVersion: 2.6.2\nArchitecture: amd64\n",
        );
        let h = offline(d.path());
        // No state: the update's age is unknown, so it is overdue (issue 14:
        // "first seen now" is not "appeared now").
        let o = eval("patch.security_updates_pending", &h);
        assert_eq!(o.status, Status::Fail, "{o:?}");
        assert!(o.reason.as_deref().unwrap().contains("1 security update(s) of unknown age"), "{o:?}");
        assert!(
            o.evidence.iter().any(|e| e.detail.contains("apt:amd64 2.6.1 -> 2.6.2") && e.detail.contains("[security]"))
        );
        assert!(o.evidence.iter().any(|e| e.detail.contains("no earlier observation is on record")));
        assert_eq!(eval("patch.updates_pending", &h).status, Status::Fail);
        assert_eq!(eval("patch.package_lists_fresh", &h).status, Status::Pass);

        // With an earlier observation on record, an update seen appearing
        // since is within its grace period, then overdue once it is over.
        let with_state = |state: FirstSeen, grace: Option<i64>| {
            let all = crate::audit::checks::registry();
            let c = all.iter().find(|c| c.id == "patch.security_updates_pending").unwrap();
            let facts = Facts::new(&h);
            facts.provide(state);
            let o: std::collections::BTreeMap<String, serde_json::Value> =
                grace.map(|g| ("grace_days".to_string(), json!(g))).into_iter().collect();
            crate::audit::engine::evaluate(c, &facts, &Params::new(&c.params, Some(&o)))
        };
        let now = Utc::now();
        let earlier = Some((now - chrono::Duration::days(30), now - chrono::Duration::days(1)));
        let new_state = FirstSeen { observations: earlier, ..FirstSeen::default() };
        let o = with_state(new_state.clone(), None);
        assert_eq!(o.status, Status::Pass, "{o:?}");
        assert!(o.reason.unwrap().contains("within the 7-day grace"));
        assert_eq!(with_state(new_state, Some(-1)).status, Status::Fail);
        let seen = |days: i64, age_known: bool| {
            let rec = [("2.6.2".to_string(), Seen { first_seen: now - chrono::Duration::days(days), age_known })];
            FirstSeen {
                observations: earlier,
                entries: [("apt:amd64".to_string(), rec.into_iter().collect())].into_iter().collect(),
                ..FirstSeen::default()
            }
        };
        assert_eq!(with_state(seen(3, true), None).status, Status::Pass);
        let o = with_state(seen(10, true), None);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("1 pending beyond the 7-day grace period"));
        // Recorded, but already pending at the first observation: overdue.
        let o = with_state(seen(1, false), None);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("unknown age"));
    }

    #[test]
    fn nothing_pending_is_pass_only_with_fresh_lists() {
        let d = root(
            "Package: apt\nVersion: 2.6.1\nArchitecture: amd64\n",
            "Package: tzdata\nVersion: 2026a-1\nArchitecture: all\n",
        );
        let h = offline(d.path());
        assert_eq!(eval("patch.security_updates_pending", &h).status, Status::Pass);
        assert_eq!(eval("patch.updates_pending", &h).status, Status::Pass);
        age_lists(&d, 30);
        let o = eval("patch.security_updates_pending", &h);
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("30 days old"));
        assert_eq!(eval("patch.updates_pending", &h).status, Status::Error);
        let o = eval("patch.package_lists_fresh", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("uncertain"));
    }

    #[test]
    fn broken_or_missing_data_is_an_error() {
        let d = root("Package: apt\nVersion: 2.6.1\n", "garbage");
        let o = eval("patch.security_updates_pending", &offline(d.path()));
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("bookworm-security_main_binary-amd64_Packages:1"));
        let d = root_with(&[("/var/lib/dpkg/status", STATUS)]);
        for id in ["patch.security_updates_pending", "patch.updates_pending", "patch.package_lists_fresh"] {
            assert_eq!(eval(id, &offline(d.path())).status, Status::Error, "{id}");
        }
        let d = root_with(&[("/var/lib/dpkg/status", "Package: x\nStatus: install ok installed\n\ngarbage\n")]);
        assert_eq!(eval("patch.updates_pending", &offline(d.path())).status, Status::Error);
    }

    #[test]
    fn reboot_required_paths() {
        let d = root_with(&[
            ("/var/lib/dpkg/status", STATUS),
            ("/proc/sys/kernel/osrelease", "6.1.0-27-amd64\n"),
            ("/boot/vmlinuz-6.1.0-27-amd64", ""),
        ]);
        assert_eq!(eval("patch.reboot_required", &offline(d.path())).status, Status::NotApplicable);
        assert_eq!(eval("patch.reboot_required", &live_like(d.path())).status, Status::Pass);
        write(d.path(), "/boot/vmlinuz-6.1.0-28-amd64", b"");
        let o = eval("patch.reboot_required", &live_like(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("6.1.0-28-amd64 is installed but 6.1.0-27-amd64 is running"));
        std::fs::remove_file(d.path().join("boot/vmlinuz-6.1.0-28-amd64")).unwrap();
        write(d.path(), "/run/reboot-required", b"*** System restart required ***\n");
        write(d.path(), "/run/reboot-required.pkgs", b"libc6\n");
        let o = eval("patch.reboot_required", &live_like(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert!(o.evidence.iter().any(|e| e.detail.contains("libc6")));
        let d = root_with(&[("/proc/sys/kernel/osrelease", "6.1.0-27-amd64\n")]);
        assert_eq!(eval("patch.reboot_required", &live_like(d.path())).status, Status::Error);
    }
}
