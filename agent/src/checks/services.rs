//! Service checks (family `services`): legacy clear-text servers are not
//! installed, and the audit daemon, time synchronization and a mandatory
//! access control system are in place.
//!
//! Presence comes from the package database ([`crate::facts::packages`]);
//! "enabled" from unit files ([`crate::facts::systemd_units`]). A package
//! that is unpacked but not configured still counts as present for the
//! "absent" checks: its programs are on disk.

use std::collections::BTreeSet;

use serde_json::json;

use crate::check::{Check, ParamSpec};
use crate::facts::Facts;
use crate::facts::kernel_cmdline::{GRUB_DEFAULT, GrubCmdline};
use crate::facts::packages::{PackageDb, PackageFacts};
use crate::facts::systemd_units::{SystemdUnits, UnitStatus};
use crate::model::{Evidence, Outcome, Reference, Severity, anssi, cis_debian, ssg};

/// Fail when any of `names` is present in the package database.
fn packages_absent(facts: &Facts<'_>, names: &[String]) -> Outcome {
    let pf = facts.get::<PackageFacts>();
    let db = match &pf.0 {
        Ok(db) => db,
        Err(e) => return Outcome::error(e.to_string()),
    };
    let found: Vec<_> = names.iter().filter_map(|n| db.present(n)).collect();
    let expected = json!({ "installed": [] });
    if !found.is_empty() {
        let list: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
        return Outcome::fail()
            .note(format!("installed: {}", list.join(", ")))
            .observed(json!({ "installed": list }))
            .expected(expected)
            .with_evidence(found.iter().map(|p| Evidence::new(&p.origin, p.describe())));
    }
    if let Some(why) = db.problem_summary() {
        return Outcome::error(format!("none of {} found, but {why}", names.join(", ")));
    }
    Outcome::pass()
        .observed(json!({ "installed": [] }))
        .expected(expected)
        .evidence(&db.source, format!("none of {} is installed", names.join(", ")))
}

fn absent_check(
    id: &str,
    title: &str,
    severity: Severity,
    packages: &[&str],
    refs: Vec<Reference>,
    rationale: &str,
) -> Check {
    let remediation = format!(
        "Remove the packages: `apt purge {}` (Debian/Ubuntu) or `dnf remove …` (RPM), whichever are installed.",
        packages.join(" ")
    );
    Check::new(format!("services.{id}"), title, severity, |facts, params| {
        packages_absent(facts, &params.list("packages"))
    })
    .rationale(rationale)
    .remediation(remediation)
    .refs(refs)
    .param(ParamSpec::list("packages", packages, "Package names (dpkg and RPM) that must not be installed"))
}

/// The first installed package of `names`, or why the database is unusable.
fn first_installed<'a>(
    db: &'a Result<PackageDb, crate::facts::FactError>,
    names: &[&str],
) -> Result<Option<&'a crate::facts::packages::InstalledPackage>, String> {
    let db = db.as_ref().map_err(|e| e.to_string())?;
    if let Some(p) = names.iter().find_map(|n| db.installed(n)) {
        return Ok(Some(p));
    }
    match db.problem_summary() {
        Some(why) => Err(format!("none of {} found, but {why}", names.join(", "))),
        None => Ok(None),
    }
}

fn units_uncertain(facts: &Facts<'_>) -> Option<String> {
    let u = facts.get::<SystemdUnits>();
    (!u.0.problems.is_empty()).then(|| u.0.problems.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
}

fn unit_status(facts: &Facts<'_>, unit: &str) -> UnitStatus {
    facts.get::<SystemdUnits>().0.status(facts.host(), unit)
}

fn auditd(facts: &Facts<'_>) -> Outcome {
    let pf = facts.get::<PackageFacts>();
    let pkg = match first_installed(&pf.0, &["auditd", "audit"]) {
        Ok(p) => p,
        Err(e) => return Outcome::error(e),
    };
    let unit = unit_status(facts, "auditd.service");
    let observed = json!({ "package": pkg.map(|p| p.name.clone()), "service_enabled": unit.is_enabled() });
    let expected = json!({ "package": "auditd (Debian) or audit (RPM)", "service_enabled": true });
    let mut ev = Vec::new();
    match pkg {
        Some(p) => ev.push(Evidence::new(&p.origin, p.describe())),
        None => {
            let src = pf.0.as_ref().map(|d| d.source.clone()).unwrap_or_default();
            ev.push(Evidence::new(src, "neither auditd nor audit is installed"));
        }
    }
    ev.push(unit.evidence());
    let ok = pkg.is_some() && unit.is_enabled();
    if !ok
        && pkg.is_some()
        && let Some(why) = units_uncertain(facts)
    {
        return Outcome::error(format!("auditd.service state unknown: {why}")).with_evidence(ev);
    }
    let mut o = Outcome::verdict(ok).observed(observed).expected(expected).with_evidence(ev);
    if pkg.is_none() {
        o = o.note("the audit daemon is not installed");
    } else if !ok {
        o = o.note("auditd is installed but auditd.service is not enabled");
    }
    o
}

/// A time synchronization daemon: its packages and units.
struct TimeDaemon {
    name: &'static str,
    packages: &'static [&'static str],
    units: &'static [&'static str],
}

const TIME_DAEMONS: [TimeDaemon; 4] = [
    TimeDaemon { name: "chrony", packages: &["chrony"], units: &["chrony.service", "chronyd.service"] },
    TimeDaemon { name: "systemd-timesyncd", packages: &["systemd-timesyncd"], units: &["systemd-timesyncd.service"] },
    TimeDaemon { name: "ntp", packages: &["ntp"], units: &["ntp.service", "ntpd.service"] },
    TimeDaemon { name: "ntpsec", packages: &["ntpsec"], units: &["ntpsec.service"] },
];

/// Exactly one time daemon must be active (installed and enabled). Several
/// are a failure, as in CIS 2.3.1.1: they step the clock against each other.
/// A unit file in a unit directory counts as installed, which covers
/// systemd-timesyncd shipped inside the `systemd` package before Debian 11;
/// aliases (ntp.service -> ntpsec.service) are counted once.
fn time_sync(facts: &Facts<'_>) -> Outcome {
    let pf = facts.get::<PackageFacts>();
    let db = pf.0.as_ref().ok();
    let mut active: Vec<(&str, String)> = Vec::new();
    let mut seen_units = BTreeSet::new();
    let mut ev = Vec::new();
    for d in &TIME_DAEMONS {
        let pkg = db.and_then(|db| d.packages.iter().find_map(|n| db.installed(n)));
        if let Some(p) = pkg {
            ev.push(Evidence::new(&p.origin, p.describe()));
        }
        let enabled = d.units.iter().map(|u| unit_status(facts, u)).find(UnitStatus::is_enabled);
        match enabled {
            Some(s) => {
                let first_time = seen_units.insert(s.canonical.clone());
                ev.push(s.evidence());
                if first_time {
                    active.push((d.name, s.canonical.clone()));
                }
            }
            None if pkg.is_some() => {
                if let Some(u) = d.units.first() {
                    ev.push(unit_status(facts, u).evidence());
                }
            }
            None => {}
        }
    }
    let names: Vec<&str> = active.iter().map(|(n, _)| *n).collect();
    let observed = json!({ "active": names });
    let expected = json!({ "active": "exactly one of chrony, systemd-timesyncd, ntp, ntpsec" });
    match active.len() {
        1 => Outcome::pass().observed(observed).expected(expected).with_evidence(ev),
        0 => {
            if let Some(why) = units_uncertain(facts) {
                return Outcome::error(format!("unit directories unreadable: {why}"));
            }
            if ev.is_empty() {
                ev.push(Evidence::new(
                    "/etc/systemd/system",
                    "no time synchronization service is installed and enabled",
                ));
            }
            Outcome::fail()
                .note("no time synchronization daemon is installed and enabled")
                .observed(observed)
                .expected(expected)
                .with_evidence(ev)
        }
        _ => Outcome::fail()
            .note(format!("several time daemons are enabled ({}): keep exactly one", names.join(", ")))
            .observed(observed)
            .expected(expected)
            .with_evidence(ev),
    }
}

/// How long sysfs MAC status files may be: one short line.
const SYSFS_LIMIT: u64 = 4096;

fn read_sys(facts: &Facts<'_>, path: &str) -> Result<Option<String>, String> {
    match facts.host().read_text_limited(path, SYSFS_LIMIT) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// AppArmor or SELinux (enforcing) is active. Live: the kernel's own status
/// files. Offline: the AppArmor package is installed and the boot loader's
/// command line does not disable it (Debian and Ubuntu kernels enable
/// AppArmor by default), or `/etc/selinux/config` has SELINUX=enforcing.
fn mac(facts: &Facts<'_>) -> Outcome {
    let expected = json!("AppArmor enabled, or SELinux enforcing");
    if facts.host().is_live() {
        const AA: &str = "/sys/module/apparmor/parameters/enabled";
        const SE: &str = "/sys/fs/selinux/enforce";
        let aa = read_sys(facts, AA);
        let se = read_sys(facts, SE);
        let mut ev = Vec::new();
        if let Ok(Some(v)) = &aa {
            ev.push(Evidence::new(AA, format!("AppArmor enabled = {v}")));
            if v == "Y" {
                return Outcome::pass().observed(json!({ "apparmor": true })).expected(expected).with_evidence(ev);
            }
        }
        if let Ok(Some(v)) = &se {
            ev.push(Evidence::new(SE, format!("SELinux enforce = {v}")));
            if v == "1" {
                return Outcome::pass()
                    .observed(json!({ "selinux": "enforcing" }))
                    .expected(expected)
                    .with_evidence(ev);
            }
        }
        if let Some(e) = aa.err().or(se.err()) {
            return Outcome::error(e);
        }
        if ev.is_empty() {
            ev.push(Evidence::new(AA, "absent: AppArmor is not in the running kernel"));
            ev.push(Evidence::new(SE, "absent: SELinux is not in the running kernel"));
        }
        return Outcome::fail()
            .note("neither AppArmor nor SELinux (enforcing) is active in the running kernel")
            .observed(json!({ "apparmor": false, "selinux": "not enforcing" }))
            .expected(expected)
            .with_evidence(ev);
    }
    let mut ev = Vec::new();
    // SELinux first: its config file decides on its own.
    const SELINUX_CONFIG: &str = "/etc/selinux/config";
    match facts.host().read_optional(SELINUX_CONFIG) {
        Ok(Some(text)) => {
            let mode = text
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("SELINUX="))
                .map(|v| v.trim().trim_matches('"').to_string());
            ev.push(Evidence::new(SELINUX_CONFIG, format!("SELINUX={}", mode.clone().unwrap_or_default())));
            if mode.as_deref() == Some("enforcing") {
                return Outcome::pass()
                    .observed(json!({ "selinux": "enforcing" }))
                    .expected(expected)
                    .with_evidence(ev)
                    .note("offline root: SELinux is configured enforcing in /etc/selinux/config");
            }
        }
        Ok(None) => {}
        Err(e) => return Outcome::error(e.to_string()),
    }
    let pf = facts.get::<PackageFacts>();
    let pkg = match first_installed(&pf.0, &["apparmor"]) {
        Ok(p) => p,
        Err(e) => return Outcome::error(e),
    };
    let Some(pkg) = pkg else {
        let src = pf.0.as_ref().map(|d| d.source.clone()).unwrap_or_default();
        ev.push(Evidence::new(src, "apparmor is not installed"));
        return Outcome::fail()
            .note("offline root: AppArmor is not installed and SELinux is not enforcing")
            .observed(json!({ "apparmor": false }))
            .expected(expected)
            .with_evidence(ev);
    };
    ev.push(Evidence::new(&pkg.origin, pkg.describe()));
    let grub = facts.get::<GrubCmdline>();
    if !grub.unreadable.is_empty() {
        let why = grub.unreadable.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
        return Outcome::error(format!("boot loader configuration unreadable: {why}"));
    }
    let mut disabled_by = None;
    if let Some((v, src)) = grub.last_param("apparmor")
        && v == "0"
    {
        disabled_by = Some((src, "apparmor=0".to_string()));
    }
    if let Some((v, src)) = grub.last_param("security")
        && !v.is_empty()
        && v != "apparmor"
    {
        disabled_by = Some((src, format!("security={v} selects another major LSM")));
    }
    if let Some((v, src)) = grub.last_param("lsm")
        && !v.split(',').any(|l| l == "apparmor")
    {
        disabled_by = Some((src, format!("lsm={v} does not include apparmor")));
    }
    if let Some((src, what)) = disabled_by {
        ev.push(Evidence::new(src, what.clone()));
        return Outcome::fail()
            .note(format!("AppArmor is installed but disabled on the kernel command line: {what}"))
            .observed(json!({ "apparmor": false }))
            .expected(expected)
            .with_evidence(ev);
    }
    let src = grub.files.first().cloned().unwrap_or_else(|| GRUB_DEFAULT.to_string());
    ev.push(Evidence::new(src, format!("kernel command line does not disable AppArmor: {}", grub.params().join(" "))));
    Outcome::pass()
        .observed(json!({ "apparmor": true }))
        .expected(expected)
        .with_evidence(ev)
        .note("offline root: AppArmor installed and not disabled in the GRUB configuration (the distribution kernel enables it by default)")
}

/// All service checks.
pub fn checks() -> Vec<Check> {
    vec![
        absent_check(
            "telnet_server_absent",
            "No telnet server is installed",
            Severity::High,
            &["telnetd", "inetutils-telnetd", "telnetd-ssl", "telnet-server"],
            vec![anssi("R62"), ssg("package_telnetd_removed"), ssg("package_telnet-server_removed")],
            "telnet sends credentials and sessions in clear text; SSH replaces it.",
        ),
        absent_check(
            "rsh_server_absent",
            "No rsh/rlogin/rexec server is installed",
            Severity::High,
            &["rsh-server", "rsh-redone-server"],
            vec![anssi("R62"), ssg("package_rsh-server_removed")],
            "The r-services authenticate by host name and send everything in clear text.",
        ),
        absent_check(
            "nis_absent",
            "NIS is not installed",
            Severity::Medium,
            &["nis", "ypserv"],
            vec![cis_debian("2.2.1"), cis_debian("2.1.10"), anssi("R62"), ssg("package_nis_removed"), ssg("package_ypserv_removed")],
            "NIS distributes password hashes and maps in clear text without real authentication.",
        ),
        absent_check(
            "tftp_server_absent",
            "No TFTP server is installed",
            Severity::Medium,
            &["tftpd", "tftpd-hpa", "atftpd", "tftp-server"],
            vec![cis_debian("2.1.16"), anssi("R62"), ssg("package_tftp-server_removed"), ssg("package_tftpd_removed")],
            "TFTP has no authentication at all; a node has no reason to serve files over it.",
        ),
        absent_check(
            "xinetd_absent",
            "No inetd super-server is installed",
            Severity::Medium,
            &["xinetd", "openbsd-inetd", "inetutils-inetd"],
            vec![cis_debian("2.1.19"), anssi("R62"), ssg("package_xinetd_removed")],
            "inetd-style super-servers exist to start legacy network services on demand; on a node they only widen the attack surface.",
        ),
        Check::new("services.auditd", "The audit daemon is installed and enabled", Severity::Medium, |facts, _| auditd(facts))
            .rationale("auditd records security-relevant kernel events (logins, privilege use, file and configuration changes) for incident investigation.")
            .remediation("`apt install auditd audispd-plugins` (Debian/Ubuntu) or `dnf install audit` (RPM), then `systemctl enable --now auditd`.")
            .refs([
                cis_debian("6.2.1.1"),
                cis_debian("6.2.1.2"),
                anssi("R33"),
                anssi("R73"),
                ssg("package_audit_installed"),
                ssg("service_auditd_enabled"),
            ]),
        Check::new("services.time_sync", "Exactly one time synchronization daemon is enabled", Severity::Medium, |facts, _| time_sync(facts))
            .rationale("Correct time is required by TLS certificate validation, Kubernetes tokens and log correlation. Two daemons step the clock against each other, so exactly one must be active.")
            .remediation("Install and enable one of chrony or systemd-timesyncd (e.g. `apt install chrony`, `systemctl enable --now chrony`) and disable/remove the others.")
            .refs([cis_debian("2.3.1.1"), anssi("R71")]),
        Check::new("services.mac", "A mandatory access control system (AppArmor or SELinux) is enabled", Severity::Medium, |facts, _| mac(facts))
            .rationale("Container runtimes confine containers with AppArmor or SELinux profiles; without an enabled MAC system the default container confinement silently does not apply.")
            .remediation("Debian/Ubuntu: `apt install apparmor apparmor-utils` and remove apparmor=0 / security=… from GRUB_CMDLINE_LINUX in /etc/default/grub, then `update-grub` and reboot. RPM: set SELINUX=enforcing in /etc/selinux/config.")
            .refs([cis_debian("1.3.1.1"), cis_debian("1.3.1.2"), anssi("R37"), anssi("R45")]),
    ]
}

#[cfg(test)]
mod tests {
    use crate::model::Status;
    use crate::testutil::{eval, eval_with, live_like, offline, root_with};
    use std::os::unix::fs::symlink;

    fn pkgs(names: &[&str]) -> String {
        names
            .iter()
            .map(|n| format!("Package: {n}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn link(root: &std::path::Path, target: &str, at: &str) {
        let p = root.join(at.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    #[test]
    fn absent_checks() {
        let status = pkgs(&["openssh-server", "telnetd", "tftpd-hpa"]);
        let d = root_with(&[("/var/lib/dpkg/status", &status)]);
        let h = offline(d.path());
        let o = eval("services.telnet_server_absent", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/var/lib/dpkg/status:6");
        assert_eq!(eval("services.tftp_server_absent", &h).status, Status::Fail);
        let o = eval("services.rsh_server_absent", &h);
        assert_eq!(o.status, Status::Pass);
        assert_eq!(o.evidence[0].source, "/var/lib/dpkg/status");
        assert_eq!(eval("services.nis_absent", &h).status, Status::Pass);
        assert_eq!(eval("services.xinetd_absent", &h).status, Status::Pass);
        let o = eval_with("services.xinetd_absent", &h, &[("packages", serde_json::json!(["openssh-server"]))]);
        assert_eq!(o.status, Status::Fail);
    }

    #[test]
    fn absent_check_errors_without_database_or_with_malformed_one() {
        let d = root_with(&[]);
        let o = eval("services.nis_absent", &offline(d.path()));
        assert_eq!(o.status, Status::Error);
        assert_eq!(o.reason.unwrap(), "no package database found (dpkg status or rpm)");
        let d = root_with(&[("/var/lib/dpkg/status", "Package: x\nStatus: broken\n")]);
        let o = eval("services.nis_absent", &offline(d.path()));
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("malformed"));
    }

    #[test]
    fn auditd_installed_and_enabled() {
        let status = pkgs(&["auditd"]);
        let d = root_with(&[("/var/lib/dpkg/status", &status), ("/lib/systemd/system/auditd.service", "[Unit]\n")]);
        let h = offline(d.path());
        let o = eval("services.auditd", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("not enabled"));
        link(
            d.path(),
            "/lib/systemd/system/auditd.service",
            "/etc/systemd/system/multi-user.target.wants/auditd.service",
        );
        let o = eval("services.auditd", &h);
        assert_eq!(o.status, Status::Pass, "{o:?}");
        assert!(o.evidence[1].source.contains("multi-user.target.wants"));
        let d = root_with(&[("/var/lib/dpkg/status", &pkgs(&["bash"]))]);
        let o = eval("services.auditd", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("not installed"));
        assert_eq!(eval("services.auditd", &offline(root_with(&[]).path())).status, Status::Error);
    }

    #[test]
    fn time_sync_counts_daemons_once() {
        let d = root_with(&[
            ("/var/lib/dpkg/status", &pkgs(&["chrony", "ntp", "ntpsec"])),
            ("/lib/systemd/system/chrony.service", "[Install]\nAlias=chronyd.service\n"),
            ("/lib/systemd/system/ntpsec.service", "[Install]\nAlias=ntp.service ntpd.service\n"),
        ]);
        let h = offline(d.path());
        let o = eval("services.time_sync", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("no time synchronization"));
        link(
            d.path(),
            "/lib/systemd/system/chrony.service",
            "/etc/systemd/system/multi-user.target.wants/chrony.service",
        );
        let o = eval("services.time_sync", &h);
        assert_eq!(o.status, Status::Pass, "{o:?}");
        // ntp is an alias of ntpsec: one daemon, not two — but with chrony, two.
        link(
            d.path(),
            "/lib/systemd/system/ntpsec.service",
            "/etc/systemd/system/multi-user.target.wants/ntpsec.service",
        );
        let o = eval("services.time_sync", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.observed.unwrap()["active"], serde_json::json!(["chrony", "ntpsec"]));
    }

    #[test]
    fn time_sync_timesyncd_without_separate_package() {
        let d = root_with(&[
            ("/var/lib/dpkg/status", &pkgs(&["systemd"])),
            ("/lib/systemd/system/systemd-timesyncd.service", "[Unit]\n"),
        ]);
        link(
            d.path(),
            "../systemd-timesyncd.service",
            "/lib/systemd/system/sysinit.target.wants/systemd-timesyncd.service",
        );
        assert_eq!(eval("services.time_sync", &offline(d.path())).status, Status::Pass);
    }

    #[test]
    fn mac_live() {
        let d = root_with(&[("/sys/module/apparmor/parameters/enabled", "Y\n")]);
        assert_eq!(eval("services.mac", &live_like(d.path())).status, Status::Pass);
        let d = root_with(&[("/sys/fs/selinux/enforce", "0")]);
        let o = eval("services.mac", &live_like(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/sys/fs/selinux/enforce");
        let d = root_with(&[("/sys/fs/selinux/enforce", "1")]);
        assert_eq!(eval("services.mac", &live_like(d.path())).status, Status::Pass);
        let d = root_with(&[]);
        assert_eq!(eval("services.mac", &live_like(d.path())).status, Status::Fail);
        std::fs::create_dir_all(d.path().join("sys/module/apparmor/parameters/enabled")).unwrap();
        assert_eq!(eval("services.mac", &live_like(d.path())).status, Status::Error);
    }

    #[test]
    fn mac_offline() {
        let status = pkgs(&["apparmor"]);
        let d =
            root_with(&[("/var/lib/dpkg/status", &status), ("/etc/default/grub", "GRUB_CMDLINE_LINUX=\"quiet\"\n")]);
        let h = offline(d.path());
        assert_eq!(eval("services.mac", &h).status, Status::Pass);
        crate::testutil::write(
            d.path(),
            "/etc/default/grub.d/99-x.cfg",
            b"GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX apparmor=0\"\n",
        );
        let o = eval("services.mac", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.evidence.iter().any(|e| e.source == "/etc/default/grub.d/99-x.cfg:1"));
        crate::testutil::write(d.path(), "/etc/default/grub.d/99-x.cfg", b"GRUB_CMDLINE_LINUX=\"security=selinux\"\n");
        assert_eq!(eval("services.mac", &h).status, Status::Fail);
        crate::testutil::write(d.path(), "/etc/default/grub.d/99-x.cfg", b"GRUB_CMDLINE_LINUX=\"lsm=landlock,yama\"\n");
        assert_eq!(eval("services.mac", &h).status, Status::Fail);

        let d = root_with(&[("/var/lib/dpkg/status", &pkgs(&["bash"]))]);
        assert_eq!(eval("services.mac", &offline(d.path())).status, Status::Fail);
        let d = root_with(&[("/etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n")]);
        assert_eq!(eval("services.mac", &offline(d.path())).status, Status::Pass);
        let d = root_with(&[("/etc/selinux/config", "SELINUX=permissive\n")]);
        assert_eq!(eval("services.mac", &offline(d.path())).status, Status::Error, "no package db to decide AppArmor");
    }
}
