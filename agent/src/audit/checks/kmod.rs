//! Kernel module checks (family `kmod`): rarely needed file systems and
//! network protocols must not be loadable.
//!
//! A module is disabled when modprobe.d makes loading it run a no-op,
//! written exactly as the benchmarks audit it: `install <m> /bin/false` or
//! `/bin/true` (SSG's OVAL matches `install\s+<m>\s+(/bin/false|/bin/true)$`
//! and CIS's audit the same commands). `/usr/bin/false` or the shell builtin
//! `false` also make modprobe do nothing, but the benchmarks do not accept
//! them, so neither do we: the finding names the form to use. This also
//! stops auto-loading through aliases, because
//! modprobe resolves the alias first and then runs the install command —
//! AND, by default, it is `blacklist`ed, as CIS 1.1.1.x and 3.2.x require
//! both (the blacklist keeps the module out of alias-driven auto-loading
//! even if the install line is later removed). Profiles may relax the
//! blacklist requirement with `require_blacklist = false`. On a live host a
//! module that is loaded, or built into the running kernel, fails whatever
//! the configuration says: modprobe.d cannot unload it.

use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::kernel_modules::{KernelModuleFacts, Runtime, normalize_module};
use crate::audit::model::{Outcome, Reference, Severity, cis_debian, ssg};

/// Install commands that make `modprobe <m>` do nothing, as the benchmarks
/// accept them.
const NOOP_COMMANDS: [&str; 2] = ["/bin/false", "/bin/true"];

/// No-ops that the benchmarks' audits do not recognise.
const OTHER_NOOPS: [&str; 4] = ["/usr/bin/false", "/usr/bin/true", "false", "true"];

fn is_noop(command: &str) -> bool {
    NOOP_COMMANDS.contains(&command.trim())
}

fn evaluate(facts: &Facts<'_>, module: &str, params: &Params) -> Outcome {
    let f = facts.get::<KernelModuleFacts>();
    let cfg = &f.config;
    let name = normalize_module(module);
    let install = cfg.install_for(module);
    let blacklist = cfg.blacklist_for(module);
    let require_blacklist = params.bool("require_blacklist");
    let mut evidence = Vec::new();
    match install {
        Some(d) => evidence.push((d.source.clone(), format!("install {} {}", d.module, d.command))),
        None => evidence
            .push(("/etc/modprobe.d".to_string(), format!("no install line for {module} in any modprobe.d directory"))),
    }
    match blacklist {
        Some(d) => evidence.push((d.source.clone(), format!("blacklist {}", d.module))),
        None => evidence.push(("/etc/modprobe.d".to_string(), format!("no blacklist line for {module}"))),
    }
    let mut observed = serde_json::Map::new();
    observed.insert("install".into(), json!(install.map(|d| d.command.clone())));
    observed.insert("blacklisted".into(), json!(blacklist.is_some()));
    let expected = json!({
        "install": "/bin/false (or /bin/true)",
        "blacklisted": require_blacklist,
        "loaded": false,
    });
    let finish = |o: Outcome, observed: serde_json::Map<String, serde_json::Value>, ev: &[(String, String)]| {
        let mut o = o.observed(serde_json::Value::Object(observed)).expected(expected.clone());
        for (s, d) in ev {
            o = o.evidence(s, d);
        }
        o
    };
    let mut note = None;
    match &f.runtime {
        Runtime::Offline => {
            observed.insert("loaded".into(), json!(null));
            note = Some("offline root: configuration only, loaded modules not checked".to_string());
        }
        Runtime::Unreadable(e) => return finish(Outcome::error(e.to_string()), observed, &evidence),
        Runtime::Known { loaded, builtin, builtin_source } => {
            let is_loaded = loaded.contains(&name);
            observed.insert("loaded".into(), json!(is_loaded));
            if is_loaded {
                evidence.insert(0, ("/proc/modules".to_string(), format!("{name} is loaded")));
                return finish(
                    Outcome::fail().note(format!("{module} is loaded in the running kernel; unload it (modprobe -r)")),
                    observed,
                    &evidence,
                );
            }
            if builtin.as_ref().is_some_and(|b| b.contains(&name)) {
                evidence.insert(0, (builtin_source.clone(), format!("{name} is built into the running kernel")));
                return finish(
                    Outcome::fail()
                        .note(format!("{module} is built into the running kernel: modprobe.d cannot disable it")),
                    observed,
                    &evidence,
                );
            }
            evidence.push(("/proc/modules".to_string(), format!("{name} is not loaded")));
        }
    }
    let install_ok = install.is_some_and(|d| is_noop(&d.command));
    let blacklist_ok = blacklist.is_some() || !require_blacklist;
    // An unreadable file may hold an earlier (winning) install line.
    if !cfg.unreadable.is_empty() {
        let why = cfg.unreadable.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
        return finish(Outcome::error(format!("modprobe configuration incomplete: {why}")), observed, &evidence);
    }
    let mut missing = Vec::new();
    if !install_ok {
        missing.push(match install {
            Some(d) if OTHER_NOOPS.contains(&d.command.trim()) => format!(
                "install {module} /bin/false (the line at {} runs `{}`, which does nothing too, but CIS and SSG audit for /bin/false or /bin/true)",
                d.source,
                d.command.trim()
            ),
            _ => format!("install {module} /bin/false"),
        });
    }
    if !blacklist_ok {
        missing.push(format!("blacklist {module}"));
    }
    let mut o = Outcome::verdict(missing.is_empty());
    if !missing.is_empty() {
        note = Some(format!("missing in /etc/modprobe.d: {}", missing.join(", ")));
    }
    if let Some(n) = note {
        o = o.note(n);
    }
    finish(o, observed, &evidence)
}

struct Module {
    id: &'static str,
    module: &'static str,
    what: &'static str,
    severity: Severity,
    refs: Vec<Reference>,
    rationale: &'static str,
}

fn module_check(m: Module) -> Check {
    let module = m.module;
    let remediation = format!(
        "printf 'install {module} /bin/false\\nblacklist {module}\\n' > /etc/modprobe.d/{module}.conf; then `modprobe -r {module}` (or reboot) if it is loaded."
    );
    Check::new(
        format!("kmod.{}_disabled", m.id),
        format!("The {} module ({module}) is disabled", m.what),
        m.severity,
        move |facts, params| evaluate(facts, module, params),
    )
    .rationale(m.rationale)
    .remediation(remediation)
    .refs(m.refs)
    .param(ParamSpec::bool(
        "require_blacklist",
        true,
        "Also require a `blacklist` line (CIS requires both the install no-op and the blacklist)",
    ))
}

const FS_RATIONALE: &str = "Rarely used file-system drivers are attack surface: a crafted image mounted (or auto-probed) through them exercises little-audited kernel code. A Kubernetes node never needs them.";

/// All kernel module checks.
pub fn checks() -> Vec<Check> {
    let fs = |id, module, what, refs: Vec<Reference>| Module {
        id,
        module,
        what,
        severity: Severity::Low,
        refs,
        rationale: FS_RATIONALE,
    };
    let mut v: Vec<Check> = vec![
        fs("cramfs", "cramfs", "cramfs file system", vec![cis_debian("1.1.1.1"), ssg("kernel_module_cramfs_disabled")]),
        fs(
            "freevxfs",
            "freevxfs",
            "freevxfs file system",
            vec![cis_debian("1.1.1.2"), ssg("kernel_module_freevxfs_disabled")],
        ),
        fs("hfs", "hfs", "HFS file system", vec![cis_debian("1.1.1.3"), ssg("kernel_module_hfs_disabled")]),
        fs(
            "hfsplus",
            "hfsplus",
            "HFS+ file system",
            vec![cis_debian("1.1.1.4"), ssg("kernel_module_hfsplus_disabled")],
        ),
        fs("jffs2", "jffs2", "JFFS2 file system", vec![cis_debian("1.1.1.5"), ssg("kernel_module_jffs2_disabled")]),
        fs("udf", "udf", "UDF file system", vec![cis_debian("1.1.1.8"), ssg("kernel_module_udf_disabled")]),
    ]
    .into_iter()
    .map(module_check)
    .collect();
    v.push(module_check(Module {
        id: "usb_storage",
        module: "usb-storage",
        what: "USB mass storage",
        severity: Severity::Medium,
        refs: vec![cis_debian("1.1.1.9"), ssg("kernel_module_usb-storage_disabled")],
        rationale: "USB storage lets anyone with physical (or virtual-console USB passthrough) access exfiltrate data or introduce malware; nodes have no use for it.",
    }));
    let net =
        |id, module, what, refs, rationale| Module { id, module, what, severity: Severity::Medium, refs, rationale };
    v.push(module_check(net(
        "dccp",
        "dccp",
        "DCCP protocol",
        vec![cis_debian("3.2.1"), ssg("kernel_module_dccp_disabled")],
        "Unused network protocols are auto-loaded when any unprivileged process opens such a socket, exposing rarely audited kernel code (DCCP: CVE-2017-6074 local root).",
    )));
    v.push(module_check(net(
        "tipc",
        "tipc",
        "TIPC protocol",
        vec![cis_debian("3.2.2"), ssg("kernel_module_tipc_disabled")],
        "Unused network protocols are auto-loaded when any unprivileged process opens such a socket, exposing rarely audited kernel code (TIPC: CVE-2021-43267 remote heap overflow).",
    )));
    v.push(module_check(net(
        "rds",
        "rds",
        "RDS protocol",
        vec![cis_debian("3.2.3"), ssg("kernel_module_rds_disabled")],
        "Unused network protocols are auto-loaded when any unprivileged process opens such a socket, exposing rarely audited kernel code (RDS: CVE-2010-3904 local root).",
    )));
    v.push(sctp_check());
    v
}

/// SCTP is the one protocol a Kubernetes cluster may legitimately use
/// (Services and NetworkPolicies with `protocol: SCTP`), so the check has
/// low severity and a parameter to declare that workloads need it.
fn sctp_check() -> Check {
    let base = module_check(Module {
        id: "sctp",
        module: "sctp",
        what: "SCTP protocol",
        severity: Severity::Low,
        refs: vec![cis_debian("3.2.4"), ssg("kernel_module_sctp_disabled")],
        rationale: "SCTP is auto-loaded when any process opens an SCTP socket and has had remotely reachable bugs. Unlike DCCP/TIPC/RDS, Kubernetes supports SCTP Services, so this check is low severity and a profile can set `required_by_workloads = true` when the cluster uses SCTP, which makes it not applicable.",
    });
    let Check { id, title, severity, rationale, remediation, references, params, .. } = base;
    let mut c = Check::new(id, title, severity, |facts, p: &Params| {
        if p.bool("required_by_workloads") {
            return Outcome::not_applicable(
                "the profile declares that workloads use SCTP (Kubernetes Services with protocol: SCTP)",
            );
        }
        evaluate(facts, "sctp", p)
    })
    .rationale(rationale)
    .remediation(remediation)
    .refs(references)
    .param(ParamSpec::bool(
        "required_by_workloads",
        false,
        "Workloads use SCTP (Kubernetes Services with protocol: SCTP): the module must stay loadable",
    ));
    for p in params {
        c = c.param(p);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::Status;
    use crate::testutil::{eval, eval_with, live_like, offline, root_with, write};
    use serde_json::Value;

    const CIS_CONF: &str = "install cramfs /bin/false\nblacklist cramfs\ninstall usb_storage /bin/true\nblacklist usb-storage\ninstall sctp /bin/false\nblacklist sctp\n";

    #[test]
    fn configured_passes_offline_and_missing_fails() {
        let d = root_with(&[
            ("/etc/modprobe.d/cis.conf", CIS_CONF),
            ("/etc/modprobe.d/hfs.conf", "install hfs /bin/false\n"),
        ]);
        let h = offline(d.path());
        let o = eval("kmod.cramfs_disabled", &h);
        assert_eq!(o.status, Status::Pass, "{o:?}");
        assert!(o.reason.unwrap().contains("offline root"));
        assert_eq!(o.evidence[0].source, "/etc/modprobe.d/cis.conf:1");
        // `usb_storage` spelled with `_` in install and `-` in blacklist.
        assert_eq!(eval("kmod.usb_storage_disabled", &h).status, Status::Pass);
        // install without blacklist: CIS wants both.
        let o = eval("kmod.hfs_disabled", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("blacklist hfs"));
        assert_eq!(
            eval_with("kmod.hfs_disabled", &h, &[("require_blacklist", Value::Bool(false))]).status,
            Status::Pass
        );
        assert_eq!(eval("kmod.udf_disabled", &h).status, Status::Fail);
    }

    #[test]
    fn only_the_no_op_commands_the_benchmarks_audit_count() {
        let d = root_with(&[(
            "/etc/modprobe.d/x.conf",
            "install cramfs false\nblacklist cramfs\ninstall hfs /usr/bin/true\nblacklist hfs\ninstall udf /bin/true\nblacklist udf\n",
        )]);
        let h = offline(d.path());
        for id in ["kmod.cramfs_disabled", "kmod.hfs_disabled"] {
            let o = eval(id, &h);
            assert_eq!(o.status, Status::Fail, "{id}: {o:?}");
            assert!(o.reason.unwrap().contains("CIS and SSG audit for /bin/false or /bin/true"), "{id}");
        }
        assert_eq!(eval("kmod.udf_disabled", &h).status, Status::Pass);
    }

    #[test]
    fn install_that_loads_anyway_fails() {
        let d = root_with(&[(
            "/etc/modprobe.d/x.conf",
            "install dccp /sbin/modprobe --ignore-install dccp\nblacklist dccp\n",
        )]);
        assert_eq!(eval("kmod.dccp_disabled", &offline(d.path())).status, Status::Fail);
    }

    #[test]
    fn loaded_or_builtin_fails_even_if_configured() {
        let d = root_with(&[
            ("/etc/modprobe.d/cis.conf", CIS_CONF),
            ("/proc/modules", "usb_storage 77824 0 - Live 0x0\n"),
            ("/proc/sys/kernel/osrelease", "6.1.0\n"),
            ("/lib/modules/6.1.0/modules.builtin", "kernel/fs/cramfs/cramfs.ko\n"),
        ]);
        let h = live_like(d.path());
        let o = eval("kmod.usb_storage_disabled", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/proc/modules");
        let o = eval("kmod.cramfs_disabled", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("built into"));
        let o = eval("kmod.sctp_disabled", &h);
        assert_eq!(o.status, Status::Pass, "{o:?}");
        assert_eq!(o.observed.unwrap()["loaded"], Value::Bool(false));
    }

    #[test]
    fn unreadable_config_is_an_error() {
        let d = root_with(&[]);
        write(d.path(), "/etc/modprobe.d/bin.conf", &[0xff, 0xfe]);
        let o = eval("kmod.rds_disabled", &offline(d.path()));
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("bin.conf"));
        // Unreadable /proc/modules on a live host.
        std::fs::create_dir_all(d.path().join("proc/modules")).unwrap();
        assert_eq!(eval("kmod.tipc_disabled", &live_like(d.path())).status, Status::Error);
    }

    #[test]
    fn sctp_can_be_declared_needed() {
        let d = root_with(&[]);
        let h = offline(d.path());
        assert_eq!(eval("kmod.sctp_disabled", &h).status, Status::Fail);
        let o = eval_with("kmod.sctp_disabled", &h, &[("required_by_workloads", Value::Bool(true))]);
        assert_eq!(o.status, Status::NotApplicable);
        let all = crate::audit::checks::registry();
        let c = all.iter().find(|c| c.id == "kmod.sctp_disabled").unwrap();
        assert_eq!(c.severity, Severity::Low);
        assert_eq!(c.params.len(), 2);
    }
}
