//! Logging checks (family `logging`): logs survive a reboot, and core dumps
//! (which may contain secrets) are not written.

use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::logging::{CoredumpFacts, JournaldFacts, LIMITS_CONF, LimitsFacts};
use crate::audit::facts::packages::PackageFacts;
use crate::audit::facts::systemd_units::SystemdUnits;
use crate::audit::model::{Evidence, Outcome, Severity, cis_debian, ssg};

/// Logs are persistent when journald is configured with an explicit
/// `Storage=persistent` (CIS Debian 12 6.1.2.4 audits that line: the default
/// `auto` stores on disk only while `/var/log/journal` exists, which nothing
/// guarantees), or when rsyslog is installed and enabled (6.1.3.2). Either
/// passes; the note says which.
fn persistent_journal(facts: &Facts<'_>) -> Outcome {
    let j = facts.get::<JournaldFacts>();
    let mut ev = Vec::new();
    let setting = j.conf.value("Journal", "Storage");
    let raw = setting.map_or("auto", |e| e.value.as_str());
    let storage = match raw {
        "persistent" | "volatile" | "none" | "auto" => raw,
        // journald ignores invalid values and keeps the default.
        _ => "auto",
    };
    match setting {
        Some(e) => ev.push(Evidence::new(&e.source, format!("Storage={}", e.value))),
        None => {
            let src = j.conf.files.last().cloned().unwrap_or_else(|| "/etc/systemd/journald.conf".to_string());
            ev.push(Evidence::new(src, "Storage is not set: the default is auto"));
        }
    }
    let journald_persistent = match storage {
        "persistent" => true,
        "auto" => {
            ev.push(Evidence::new(
                "/var/log/journal",
                if j.var_log_journal {
                    "exists: auto stores on disk for now, but CIS 6.1.2.4 requires an explicit Storage=persistent"
                } else {
                    "absent: auto keeps logs in memory only"
                },
            ));
            false
        }
        _ => false,
    };
    let journald_uncertain = j.conf.unreadable_summary();
    let rsyslog = rsyslog_active(facts);
    let mut observed = json!({ "journald_storage": storage, "journald_persistent": journald_persistent });
    let expected = json!("journald Storage=persistent (set explicitly), or rsyslog enabled");
    match &rsyslog {
        Ok((active, e)) => {
            ev.extend(e.iter().cloned());
            observed["rsyslog_enabled"] = json!(active);
        }
        Err(_) => observed["rsyslog_enabled"] = json!(null),
    }
    let rsyslog_on = matches!(rsyslog, Ok((true, _)));
    if journald_persistent && journald_uncertain.is_none() {
        let why = if rsyslog_on {
            "journald stores logs on disk (rsyslog is enabled too)"
        } else {
            "journald stores logs on disk"
        };
        return Outcome::pass().note(why).observed(observed).expected(expected).with_evidence(ev);
    }
    if rsyslog_on {
        return Outcome::pass()
            .note("rsyslog is installed and enabled and writes logs to disk")
            .observed(observed)
            .expected(expected)
            .with_evidence(ev);
    }
    if let Some(why) = journald_uncertain {
        return Outcome::error(format!("journald configuration unreadable: {why}")).with_evidence(ev);
    }
    if let Err(why) = rsyslog {
        return Outcome::error(format!("journald is not persistent and rsyslog's state is unknown: {why}"))
            .with_evidence(ev);
    }
    Outcome::fail()
        .note(format!("journald Storage={storage} does not keep logs across reboots and rsyslog is not enabled"))
        .observed(observed)
        .expected(expected)
        .with_evidence(ev)
}

/// rsyslog installed (package) and rsyslog.service enabled.
fn rsyslog_active(facts: &Facts<'_>) -> Result<(bool, Vec<Evidence>), String> {
    let pf = facts.get::<PackageFacts>();
    let db = pf.0.as_ref().map_err(|e| e.to_string())?;
    let Some(pkg) = db.installed("rsyslog") else {
        if let Some(why) = db.problem_summary() {
            return Err(why);
        }
        return Ok((false, vec![Evidence::new(&db.source, "rsyslog is not installed")]));
    };
    let units = facts.get::<SystemdUnits>();
    let s = units.0.status(facts.host(), "rsyslog.service");
    let ev = vec![Evidence::new(&pkg.origin, pkg.describe()), s.evidence()];
    if !s.is_enabled() && !units.0.problems.is_empty() {
        return Err(units.0.problems.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "));
    }
    Ok((s.is_enabled(), ev))
}

/// `0`, `0B`, `0K`… : a size of zero in systemd's size syntax.
fn is_zero_size(v: &str) -> bool {
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    let unit = v.get(digits.len()..).unwrap_or_default().trim();
    !digits.is_empty()
        && digits.chars().all(|c| c == '0')
        && matches!(unit, "" | "B" | "K" | "M" | "G" | "T" | "P" | "E")
}

/// A hard `core` limit of 0 for everyone (CIS 1.5.3, SSG
/// disable_users_coredumps), and, when the profile asks for it
/// (`require_coredump_disabled`) and systemd-coredump is installed,
/// `Storage=none` and `ProcessSizeMax=0`: CIS lists those as remediation,
/// not audit, so they are not required by default. The setuid side
/// (`fs.suid_dumpable`) is checked by `sysctl.suid_dumpable`.
fn coredumps_restricted(facts: &Facts<'_>, p: &Params) -> Outcome {
    let limits = facts.get::<LimitsFacts>();
    if !limits.unreadable.is_empty() {
        let why = limits.unreadable.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
        return Outcome::error(format!("limits configuration unreadable: {why}"));
    }
    let mut ev = Vec::new();
    let mut problems = Vec::new();
    let hard = limits.wildcard_hard_core();
    match hard {
        Some(l) => ev.push(Evidence::new(&l.source, format!("{} {} {} {}", l.domain, l.kind, l.item, l.value))),
        None => {
            ev.push(Evidence::new(LIMITS_CONF, "no `* hard core` line in limits.conf or limits.d/*.conf"));
            problems.push("no `* hard core 0` limit".to_string());
        }
    }
    if let Some(l) = hard
        && l.value != "0"
    {
        problems.push(format!("`* hard core` is {}", l.value));
    }
    let cd = facts.get::<CoredumpFacts>();
    let mut observed = json!({ "hard_core_limit": hard.map(|l| l.value.clone()) });
    let strict = p.bool("require_coredump_disabled");
    if let Some(helper) = &cd.helper {
        if let Some(why) = cd.conf.unreadable_summary()
            && strict
        {
            return Outcome::error(format!("coredump.conf unreadable: {why}"));
        }
        ev.push(Evidence::new(helper, "systemd-coredump is installed"));
        for (key, ok_if, default) in [("Storage", "none", "external"), ("ProcessSizeMax", "0", "1G or more")] {
            match cd.conf.value("Coredump", key) {
                Some(e) => {
                    ev.push(Evidence::new(&e.source, format!("{key}={}", e.value)));
                    let ok = if key == "Storage" { e.value == ok_if } else { is_zero_size(&e.value) };
                    if !ok && strict {
                        problems.push(format!("coredump.conf {key}={} (want {ok_if})", e.value));
                    }
                    observed[key] = json!(e.value);
                }
                None => {
                    ev.push(Evidence::new("/etc/systemd/coredump.conf", format!("{key} not set: default {default}")));
                    if strict {
                        problems.push(format!("coredump.conf {key} not set (want {ok_if})"));
                    }
                    observed[key] = json!(null);
                }
            }
        }
    } else {
        ev.push(Evidence::new("/usr/lib/systemd/systemd-coredump", "absent: systemd-coredump is not installed"));
    }
    let expected = if strict {
        json!({ "hard_core_limit": "0", "coredump.conf": "Storage=none, ProcessSizeMax=0 (if systemd-coredump is installed)" })
    } else {
        json!({ "hard_core_limit": "0" })
    };
    let mut o = Outcome::verdict(problems.is_empty()).observed(observed).expected(expected).with_evidence(ev);
    if !problems.is_empty() {
        o = o.note(problems.join("; "));
    }
    o
}

/// All logging checks.
pub fn checks() -> Vec<Check> {
    vec![
        Check::new(
            "logging.persistent_journal",
            "System logs are kept across reboots (persistent journal or rsyslog)",
            Severity::Medium,
            |facts, _| persistent_journal(facts),
        )
        .rationale("Logs held only in memory are lost at the reboot that often follows an incident. journald with persistent storage or rsyslog writing to /var/log both keep them.")
        .remediation("Set `Storage=persistent` in a drop-in such as /etc/systemd/journald.conf.d/60-persistent.conf ([Journal] section) and `systemctl restart systemd-journald`; or install and enable rsyslog.")
        .refs([cis_debian("6.1.2.4"), cis_debian("6.1.3.2")]),
        Check::new(
            "logging.coredumps_restricted",
            "Core dumps are restricted",
            Severity::Medium,
            coredumps_restricted,
        )
        .param(ParamSpec::bool(
            "require_coredump_disabled",
            false,
            "Also require Storage=none and ProcessSizeMax=0 in coredump.conf when systemd-coredump is installed (stricter than CIS 1.5.3's audit)",
        ))
        .rationale("A core dump contains the process's memory: keys, tokens and passwords. `* hard core 0` stops users' processes from writing them, as CIS Debian 12 1.5.3 and SSG disable_users_coredumps audit; with require_coredump_disabled, systemd-coredump must also neither store nor process them. The setuid case is covered by sysctl.suid_dumpable.")
        .remediation("Add `* hard core 0` to /etc/security/limits.d/60-coredump.conf; if systemd-coredump is installed, add a drop-in /etc/systemd/coredump.conf.d/60-disable.conf with `[Coredump]`, `Storage=none`, `ProcessSizeMax=0`.")
        .refs([cis_debian("1.5.3"), ssg("disable_users_coredumps")]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::Status;
    use crate::testutil::{eval, offline, root_with, write};
    use std::os::unix::fs::symlink;

    const DPKG: &str = "/var/lib/dpkg/status";

    #[test]
    fn journald_storage_variants() {
        let d = root_with(&[(DPKG, "Package: bash\nStatus: install ok installed\n")]);
        let h = offline(d.path());
        let o = eval("logging.persistent_journal", &h);
        assert_eq!(o.status, Status::Fail, "auto without /var/log/journal");
        assert!(o.reason.unwrap().contains("Storage=auto"));
        // auto with /var/log/journal stores on disk, but CIS 6.1.2.4 wants
        // Storage=persistent written down.
        std::fs::create_dir_all(d.path().join("var/log/journal")).unwrap();
        let o = eval("logging.persistent_journal", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.evidence.iter().any(|e| e.detail.contains("requires an explicit Storage=persistent")));
        write(d.path(), "/etc/systemd/journald.conf", b"[Journal]\nStorage=volatile\n");
        assert_eq!(eval("logging.persistent_journal", &h).status, Status::Fail);
        write(d.path(), "/usr/lib/systemd/journald.conf.d/10-x.conf", b"[Journal]\nStorage=persistent\n");
        let o = eval("logging.persistent_journal", &h);
        assert_eq!(o.status, Status::Pass);
        assert_eq!(o.evidence[0].source, "/usr/lib/systemd/journald.conf.d/10-x.conf:2");
        write(d.path(), "/etc/systemd/journald.conf.d/90-x.conf", b"[Journal]\nStorage=none\n");
        assert_eq!(eval("logging.persistent_journal", &h).status, Status::Fail);
        write(d.path(), "/etc/systemd/journald.conf.d/95-bin.conf", &[0xff]);
        assert_eq!(eval("logging.persistent_journal", &h).status, Status::Error);
    }

    #[test]
    fn rsyslog_is_an_alternative() {
        let d = root_with(&[
            (DPKG, "Package: rsyslog\nStatus: install ok installed\n"),
            ("/etc/systemd/journald.conf", "[Journal]\nStorage=volatile\n"),
            ("/lib/systemd/system/rsyslog.service", "[Install]\nAlias=syslog.service\n"),
        ]);
        let h = offline(d.path());
        assert_eq!(eval("logging.persistent_journal", &h).status, Status::Fail);
        let w = d.path().join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&w).unwrap();
        symlink("/lib/systemd/system/rsyslog.service", w.join("rsyslog.service")).unwrap();
        let o = eval("logging.persistent_journal", &h);
        assert_eq!(o.status, Status::Pass);
        assert!(o.reason.unwrap().contains("rsyslog"));
        // Without a package database, rsyslog cannot be judged.
        let d = root_with(&[("/etc/systemd/journald.conf", "[Journal]\nStorage=volatile\n")]);
        assert_eq!(eval("logging.persistent_journal", &offline(d.path())).status, Status::Error);
    }

    #[test]
    fn coredumps() {
        let d = root_with(&[]);
        let h = offline(d.path());
        let o = eval("logging.coredumps_restricted", &h);
        assert_eq!(o.status, Status::Fail);
        write(d.path(), "/etc/security/limits.d/60-core.conf", b"* hard core 0\n");
        assert_eq!(eval("logging.coredumps_restricted", &h).status, Status::Pass);
        // systemd-coredump present: its config matters only when the profile
        // asks for it (CIS 1.5.3 audits the limit alone).
        write(d.path(), "/usr/lib/systemd/systemd-coredump", b"");
        assert_eq!(eval("logging.coredumps_restricted", &h).status, Status::Pass);
        let strict = [("require_coredump_disabled", serde_json::Value::Bool(true))];
        let o = crate::testutil::eval_with("logging.coredumps_restricted", &h, &strict);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("Storage not set"));
        write(d.path(), "/etc/systemd/coredump.conf.d/60.conf", b"[Coredump]\nStorage=none\nProcessSizeMax=0\n");
        assert_eq!(crate::testutil::eval_with("logging.coredumps_restricted", &h, &strict).status, Status::Pass);
        write(d.path(), "/etc/security/limits.d/90-dev.conf", b"* - core unlimited\n");
        let o = eval("logging.coredumps_restricted", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("unlimited"));
        write(d.path(), "/etc/security/limits.conf", &[0xff]);
        assert_eq!(eval("logging.coredumps_restricted", &h).status, Status::Error);
    }

    #[test]
    fn zero_sizes() {
        assert!(is_zero_size("0") && is_zero_size("0B") && is_zero_size("00K"));
        assert!(!is_zero_size("1G") && !is_zero_size("") && !is_zero_size("0X"));
    }
}
