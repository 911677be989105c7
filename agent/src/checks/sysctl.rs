//! Kernel parameter checks (family `sysctl`).
//!
//! Each check names one or more keys and the values that are acceptable. The
//! verdict combines the runtime value (live hosts) with the configured value
//! that will apply at the next boot, and says which one failed:
//! a good runtime value that a configuration file would undo at boot is a
//! failure too. Offline, the configured value decides; when nothing configures
//! a key, the upstream kernel default is used only where it is fixed upstream
//! (not a build option), otherwise the check cannot decide.

use serde_json::{Value, json};

use crate::check::{Check, ParamSpec, Params};
use crate::facts::Facts;
use crate::facts::sysctl::{Runtime, SysctlFacts, runtime};
use crate::model::{Evidence, Outcome, Reference, Severity, Status, anssi, cis_debian, ssg};

/// What values a key may take.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Exactly one of these values.
    OneOf(&'static [&'static str]),
}

impl Want {
    fn accepts(self, v: &str) -> bool {
        let Want::OneOf(vals) = self;
        vals.contains(&v)
    }

    fn describe(self) -> String {
        match self {
            Want::OneOf([one]) => (*one).to_string(),
            Want::OneOf(vals) => format!("one of {}", vals.join(", ")),
        }
    }
}

/// One key of a check.
#[derive(Debug, Clone, Copy)]
struct KeySpec {
    key: &'static str,
    want: Want,
    /// The upstream kernel default, where it does not depend on the build.
    kernel_default: Option<&'static str>,
}

const fn key(key: &'static str, want: Want, kernel_default: Option<&'static str>) -> KeySpec {
    KeySpec { key, want, kernel_default }
}

/// The verdict for one key, with its evidence.
struct KeyVerdict {
    status: Status,
    observed: Value,
    evidence: Vec<Evidence>,
    reason: Option<String>,
}

fn eval_key(facts: &Facts<'_>, spec: &KeySpec, want: Want) -> KeyVerdict {
    let cfg = &facts.get::<SysctlFacts>().config;
    let configured = cfg.configured(spec.key);
    let mut evidence = Vec::new();
    if let Some(a) = configured {
        evidence.push(Evidence::new(&a.source, format!("{} = {}", spec.key, a.value)));
    }
    // An unreadable file may set this key: the configured value is unknown.
    let config_unknown = (!cfg.unreadable.is_empty())
        .then(|| cfg.unreadable.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "));
    let configured_ok = configured.map(|a| want.accepts(&a.value));
    let runtime = runtime(facts.host(), spec.key);
    let mut observed = serde_json::Map::new();
    if let Some(a) = configured {
        observed.insert("configured".into(), json!(a.value));
    }
    let verdict = |status, reason: Option<String>, observed: serde_json::Map<String, Value>, evidence| KeyVerdict {
        status,
        observed: Value::Object(observed),
        evidence,
        reason,
    };
    match runtime {
        // Some keys need privileges to read (net.core.bpf_jit_harden needs
        // CAP_SYS_ADMIN, which the hardened unit does not grant). A bad
        // configured value is still a certain failure: it applies at the
        // next boot whatever runs now. A good one proves nothing about now.
        Runtime::Unreadable(e) => match (configured_ok, &config_unknown, configured) {
            (Some(false), None, Some(a)) => verdict(
                Status::Fail,
                Some(format!(
                    "the running value cannot be read ({e}), and the configuration sets {}, which applies at the next boot",
                    a.value
                )),
                observed,
                evidence,
            ),
            (_, _, Some(a)) => verdict(
                Status::Error,
                Some(format!(
                    "the running value cannot be read ({e}); the configuration sets {}, but that only says what applies at the next boot",
                    a.value
                )),
                observed,
                evidence,
            ),
            _ => verdict(Status::Error, Some(e.to_string()), observed, evidence),
        },
        Runtime::Absent => verdict(
            Status::NotApplicable,
            Some(format!("the running kernel does not provide {} (feature not built in or disabled)", spec.key)),
            observed,
            evidence,
        ),
        Runtime::Value(v) => {
            let runtime_ok = want.accepts(&v);
            evidence.insert(
                0,
                Evidence::new(crate::facts::sysctl::proc_path(spec.key), format!("runtime {} = {v}", spec.key)),
            );
            observed.insert("runtime".into(), json!(v));
            if !runtime_ok {
                return verdict(Status::Fail, None, observed, evidence);
            }
            match (configured_ok, config_unknown) {
                (Some(false), _) => verdict(
                    Status::Fail,
                    Some("the running value is correct, but the configuration would change it at the next boot".into()),
                    observed,
                    evidence,
                ),
                (_, Some(why)) => verdict(
                    Status::Error,
                    Some(format!("runtime value is correct, but whether it persists is unknown: {why}")),
                    observed,
                    evidence,
                ),
                (Some(true), None) => verdict(Status::Pass, None, observed, evidence),
                (None, None) => {
                    evidence.push(Evidence::new(
                        "sysctl.d",
                        format!("{} is not set in any sysctl configuration file", spec.key),
                    ));
                    verdict(
                        Status::Pass,
                        Some(
                            "correct at runtime; not persisted in sysctl.d, so it relies on the kernel's default"
                                .into(),
                        ),
                        observed,
                        evidence,
                    )
                }
            }
        }
        Runtime::Offline => {
            if let Some(why) = config_unknown {
                return verdict(Status::Error, Some(format!("configured value unknown: {why}")), observed, evidence);
            }
            match (configured_ok, spec.kernel_default) {
                (Some(ok), _) => verdict(if ok { Status::Pass } else { Status::Fail }, None, observed, evidence),
                (None, Some(default)) => {
                    evidence.push(Evidence::new(
                        "sysctl.d",
                        format!(
                            "{} is not configured; the upstream kernel default {default} applies at boot",
                            spec.key
                        ),
                    ));
                    observed.insert("kernel_default".into(), json!(default));
                    let status = if want.accepts(default) { Status::Pass } else { Status::Fail };
                    verdict(status, None, observed, evidence)
                }
                (None, None) => verdict(
                    Status::NotApplicable,
                    Some(format!(
                        "offline root: {} is not configured and its kernel default depends on the kernel build",
                        spec.key
                    )),
                    observed,
                    evidence,
                ),
            }
        }
    }
}

/// Combine per-key verdicts: any fail fails; else any error errors; else
/// not applicable only when every key is; else pass.
fn combine(keys: &[KeySpec], wants: &[Want], facts: &Facts<'_>) -> Outcome {
    let mut observed = serde_json::Map::new();
    let mut expected = serde_json::Map::new();
    let mut evidence = Vec::new();
    let mut reasons = Vec::new();
    let mut statuses = Vec::new();
    for (spec, want) in keys.iter().zip(wants) {
        let v = eval_key(facts, spec, *want);
        observed.insert(spec.key.to_string(), v.observed);
        expected.insert(spec.key.to_string(), json!(want.describe()));
        evidence.extend(v.evidence);
        if let Some(r) = v.reason {
            reasons.push(format!("{}: {r}", spec.key));
        }
        statuses.push(v.status);
    }
    let status = if statuses.contains(&Status::Fail) {
        Status::Fail
    } else if statuses.contains(&Status::Error) {
        Status::Error
    } else if statuses.iter().all(|s| *s == Status::NotApplicable) {
        Status::NotApplicable
    } else {
        Status::Pass
    };
    Outcome {
        status,
        observed: Some(Value::Object(observed)),
        expected: Some(Value::Object(expected)),
        evidence,
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    }
}

const ZERO: Want = Want::OneOf(&["0"]);
const ONE: Want = Want::OneOf(&["1"]);

/// A check over a fixed table of keys.
fn sysctl_check(
    id: &str,
    title: &str,
    severity: Severity,
    keys: Vec<KeySpec>,
    refs: &[Reference],
    rationale: &str,
) -> Check {
    let remediation = format!(
        "Set {} in a file under /etc/sysctl.d/ (e.g. /etc/sysctl.d/60-kosmos-hardening.conf) and apply it with `sysctl --system`.",
        keys.iter().map(|k| format!("{} = {}", k.key, first_value(k.want))).collect::<Vec<_>>().join(", ")
    );
    Check::new(format!("sysctl.{id}"), title, severity, move |facts, _p| {
        let wants: Vec<Want> = keys.iter().map(|k| k.want).collect();
        combine(&keys, &wants, facts)
    })
    .rationale(rationale)
    .remediation(remediation)
    .refs(refs.iter().cloned())
}

fn first_value(w: Want) -> String {
    let Want::OneOf(v) = w;
    v.first().copied().unwrap_or_default().to_string()
}

/// All sysctl checks.
pub fn checks() -> Vec<Check> {
    vec![
        sysctl_check(
            "randomize_va_space",
            "Address space layout randomization is fully enabled",
            Severity::High,
            vec![key("kernel.randomize_va_space", Want::OneOf(&["2"]), None)],
            &[cis_debian("1.5.1"), anssi("R9"), ssg("sysctl_kernel_randomize_va_space")],
            "ASLR makes memory-corruption exploits unreliable; 2 also randomizes the heap (brk).",
        ),
        sysctl_check(
            "kptr_restrict",
            "Kernel pointers are hidden from unprivileged users",
            Severity::Medium,
            vec![key("kernel.kptr_restrict", Want::OneOf(&["1", "2"]), Some("0"))],
            &[anssi("R9"), ssg("sysctl_kernel_kptr_restrict")],
            "Kernel addresses in /proc help an attacker defeat KASLR.",
        ),
        sysctl_check(
            "dmesg_restrict",
            "The kernel log is readable by privileged users only",
            Severity::Low,
            vec![key("kernel.dmesg_restrict", ONE, None)],
            &[anssi("R9"), ssg("sysctl_kernel_dmesg_restrict")],
            "The kernel ring buffer leaks addresses and hardware details useful to an attacker.",
        ),
        sysctl_check(
            "protected_hardlinks",
            "Hard links to files the user does not own are restricted",
            Severity::Medium,
            vec![key("fs.protected_hardlinks", ONE, Some("0"))],
            &[anssi("R14"), ssg("sysctl_fs_protected_hardlinks")],
            "Prevents hard-link based privilege escalation through world-writable directories.",
        ),
        sysctl_check(
            "protected_symlinks",
            "Following symlinks in sticky world-writable directories is restricted",
            Severity::Medium,
            vec![key("fs.protected_symlinks", ONE, Some("0"))],
            &[anssi("R14"), ssg("sysctl_fs_protected_symlinks")],
            "Prevents symlink races in /tmp and other sticky directories.",
        ),
        sysctl_check(
            "protected_fifos",
            "O_CREAT opens of FIFOs in sticky directories are restricted",
            Severity::Low,
            vec![key("fs.protected_fifos", Want::OneOf(&["1", "2"]), Some("0"))],
            &[ssg("sysctl_fs_protected_fifos")],
            "Prevents data spoofing through attacker-created FIFOs in world-writable sticky directories.",
        ),
        sysctl_check(
            "protected_regular",
            "O_CREAT opens of regular files in sticky directories are restricted",
            Severity::Low,
            vec![key("fs.protected_regular", Want::OneOf(&["1", "2"]), Some("0"))],
            &[ssg("sysctl_fs_protected_regular")],
            "Prevents writing into attacker-created files in world-writable sticky directories.",
        ),
        sysctl_check(
            "suid_dumpable",
            "Set-uid programs do not produce core dumps",
            Severity::Medium,
            vec![key("fs.suid_dumpable", ZERO, Some("0"))],
            &[cis_debian("1.5.1"), anssi("R14"), ssg("sysctl_fs_suid_dumpable")],
            "A core dump of a privileged process can contain secrets readable by the user.",
        ),
        sysctl_check(
            "ptrace_scope",
            "ptrace is restricted to descendants (Yama)",
            Severity::Medium,
            vec![key("kernel.yama.ptrace_scope", Want::OneOf(&["1", "2", "3"]), None)],
            &[cis_debian("1.5.2"), anssi("R11"), ssg("sysctl_kernel_yama_ptrace_scope")],
            "Unrestricted ptrace lets any process of a user read the memory (credentials) of the user's other processes.",
        ),
        sysctl_check(
            "unprivileged_bpf_disabled",
            "Unprivileged users cannot load BPF programs",
            Severity::Medium,
            vec![key("kernel.unprivileged_bpf_disabled", Want::OneOf(&["1", "2"]), None)],
            &[anssi("R9"), ssg("sysctl_kernel_unprivileged_bpf_disabled")],
            "Unprivileged eBPF has been the entry point of many kernel privilege escalations.",
        ),
        sysctl_check(
            "bpf_jit_harden",
            "The BPF JIT compiler is hardened",
            Severity::Low,
            vec![key("net.core.bpf_jit_harden", Want::OneOf(&["2"]), None)],
            &[anssi("R12"), ssg("sysctl_net_core_bpf_jit_harden")],
            "Constant blinding in the BPF JIT defeats JIT-spraying attacks.",
        ),
        sysctl_check(
            "ipv4_accept_redirects",
            "ICMP redirects are not accepted (IPv4)",
            Severity::Medium,
            vec![
                key("net.ipv4.conf.all.accept_redirects", ZERO, Some("1")),
                key("net.ipv4.conf.default.accept_redirects", ZERO, Some("1")),
            ],
            &[
                cis_debian("3.3.5"),
                anssi("R12"),
                ssg("sysctl_net_ipv4_conf_all_accept_redirects"),
                ssg("sysctl_net_ipv4_conf_default_accept_redirects"),
            ],
            "Forged ICMP redirects let an attacker on the path reroute the node's traffic.",
        ),
        sysctl_check(
            "ipv6_accept_redirects",
            "ICMP redirects are not accepted (IPv6)",
            Severity::Medium,
            vec![
                key("net.ipv6.conf.all.accept_redirects", ZERO, Some("1")),
                key("net.ipv6.conf.default.accept_redirects", ZERO, Some("1")),
            ],
            &[
                cis_debian("3.3.5"),
                anssi("R13"),
                ssg("sysctl_net_ipv6_conf_all_accept_redirects"),
                ssg("sysctl_net_ipv6_conf_default_accept_redirects"),
            ],
            "Forged ICMPv6 redirects let an attacker on the link reroute the node's traffic.",
        ),
        sysctl_check(
            "secure_redirects",
            "ICMP redirects from listed gateways are not accepted",
            Severity::Medium,
            vec![
                key("net.ipv4.conf.all.secure_redirects", ZERO, Some("1")),
                key("net.ipv4.conf.default.secure_redirects", ZERO, Some("1")),
            ],
            &[
                cis_debian("3.3.6"),
                anssi("R12"),
                ssg("sysctl_net_ipv4_conf_all_secure_redirects"),
                ssg("sysctl_net_ipv4_conf_default_secure_redirects"),
            ],
            "A compromised default gateway can still reroute traffic through 'secure' redirects.",
        ),
        sysctl_check(
            "send_redirects",
            "The node does not send ICMP redirects",
            Severity::Medium,
            vec![
                key("net.ipv4.conf.all.send_redirects", ZERO, Some("1")),
                key("net.ipv4.conf.default.send_redirects", ZERO, Some("1")),
            ],
            &[
                cis_debian("3.3.2"),
                anssi("R12"),
                ssg("sysctl_net_ipv4_conf_all_send_redirects"),
                ssg("sysctl_net_ipv4_conf_default_send_redirects"),
            ],
            "A Kubernetes node forwards pod traffic but is not a router for its LAN: redirects only leak topology.",
        ),
        sysctl_check(
            "ipv4_accept_source_route",
            "Source-routed packets are not accepted (IPv4)",
            Severity::Medium,
            vec![
                key("net.ipv4.conf.all.accept_source_route", ZERO, Some("0")),
                key("net.ipv4.conf.default.accept_source_route", ZERO, None),
            ],
            &[
                cis_debian("3.3.8"),
                anssi("R12"),
                ssg("sysctl_net_ipv4_conf_all_accept_source_route"),
                ssg("sysctl_net_ipv4_conf_default_accept_source_route"),
            ],
            "Source routing lets a sender choose the path, bypassing filtering.",
        ),
        sysctl_check(
            "ipv6_accept_source_route",
            "Source-routed packets are not accepted (IPv6)",
            Severity::Medium,
            vec![
                key("net.ipv6.conf.all.accept_source_route", ZERO, Some("0")),
                key("net.ipv6.conf.default.accept_source_route", ZERO, Some("0")),
            ],
            &[
                cis_debian("3.3.8"),
                anssi("R13"),
                ssg("sysctl_net_ipv6_conf_all_accept_source_route"),
                ssg("sysctl_net_ipv6_conf_default_accept_source_route"),
            ],
            "Source routing lets a sender choose the path, bypassing filtering.",
        ),
        sysctl_check(
            "rp_filter",
            "Reverse-path filtering is enabled (strict or loose)",
            Severity::Medium,
            vec![
                key("net.ipv4.conf.all.rp_filter", Want::OneOf(&["1", "2"]), Some("0")),
                key("net.ipv4.conf.default.rp_filter", Want::OneOf(&["1", "2"]), Some("0")),
            ],
            &[
                cis_debian("3.3.7"),
                anssi("R12"),
                ssg("sysctl_net_ipv4_conf_all_rp_filter"),
                ssg("sysctl_net_ipv4_conf_default_rp_filter"),
            ],
            "Drops spoofed packets. Loose mode (2) is accepted because WireGuard/Kilo and multi-homed Kubernetes nodes route asymmetrically; strict mode can break pod traffic.",
        ),
        sysctl_check(
            "log_martians",
            "Packets with impossible addresses are logged",
            Severity::Low,
            vec![
                key("net.ipv4.conf.all.log_martians", ONE, Some("0")),
                key("net.ipv4.conf.default.log_martians", ONE, Some("0")),
            ],
            &[
                cis_debian("3.3.9"),
                ssg("sysctl_net_ipv4_conf_all_log_martians"),
                ssg("sysctl_net_ipv4_conf_default_log_martians"),
            ],
            "Martian packets are a sign of spoofing or misrouting worth an audit trail.",
        ),
        sysctl_check(
            "icmp_echo_ignore_broadcasts",
            "Broadcast ICMP echo requests are ignored",
            Severity::Low,
            vec![key("net.ipv4.icmp_echo_ignore_broadcasts", ONE, Some("1"))],
            &[cis_debian("3.3.4"), ssg("sysctl_net_ipv4_icmp_echo_ignore_broadcasts")],
            "Prevents the node from taking part in smurf amplification attacks.",
        ),
        sysctl_check(
            "icmp_ignore_bogus_error_responses",
            "Bogus ICMP error responses are ignored",
            Severity::Low,
            vec![key("net.ipv4.icmp_ignore_bogus_error_responses", ONE, Some("1"))],
            &[cis_debian("3.3.3"), anssi("R12"), ssg("sysctl_net_ipv4_icmp_ignore_bogus_error_responses")],
            "Avoids filling logs with bogus RFC 1122 violations.",
        ),
        sysctl_check(
            "tcp_syncookies",
            "TCP SYN cookies are enabled",
            Severity::Medium,
            vec![key("net.ipv4.tcp_syncookies", ONE, Some("1"))],
            &[cis_debian("3.3.10"), anssi("R12"), ssg("sysctl_net_ipv4_tcp_syncookies")],
            "SYN cookies keep the node reachable during a SYN flood.",
        ),
        sysctl_check(
            "ipv6_accept_ra",
            "IPv6 router advertisements are not accepted",
            Severity::Medium,
            vec![
                key("net.ipv6.conf.all.accept_ra", ZERO, Some("1")),
                key("net.ipv6.conf.default.accept_ra", ZERO, Some("1")),
            ],
            &[
                cis_debian("3.3.11"),
                ssg("sysctl_net_ipv6_conf_all_accept_ra"),
                ssg("sysctl_net_ipv6_conf_default_accept_ra"),
            ],
            "A rogue router advertisement can give the node a default route through an attacker.",
        ),
        ip_forward_check(),
    ]
}

/// `net.ipv4.ip_forward` is the one place where Kubernetes overrides generic
/// advice: pod traffic is routed through the node, so forwarding is required
/// (CIS Debian 3.3.1 and Lynis say 0 for generic servers).
fn ip_forward_check() -> Check {
    const KEYS: [KeySpec; 1] = [key("net.ipv4.ip_forward", ONE, Some("0"))];
    Check::new(
        "sysctl.ip_forward",
        "IPv4 forwarding matches the node's role (required on a Kubernetes node)",
        Severity::Medium,
        |facts, params: &Params| {
            let want = if params.bool("kubernetes_node") { ONE } else { ZERO };
            let mut o = combine(&KEYS, &[want], facts);
            if params.bool("kubernetes_node") {
                o.evidence.push(Evidence::new(
                    "profile",
                    "kubernetes_node = true: pods are routed through the node, so forwarding must be on",
                ));
            }
            o
        },
    )
    .param(ParamSpec::bool(
        "kubernetes_node",
        true,
        "The host is a Kubernetes node: forwarding is required (set false for a plain server, where it must be off)",
    ))
    .rationale(
        "Kubernetes routes pod traffic through the node, so net.ipv4.ip_forward must be 1 there; on a host that is not a node it must be 0 so the host does not route between networks.",
    )
    .remediation("On a node: net.ipv4.ip_forward = 1 in /etc/sysctl.d/. On a plain server: net.ipv4.ip_forward = 0.")
    .refs([cis_debian("3.3.1"), anssi("R12"), ssg("sysctl_net_ipv4_ip_forward")])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{eval, eval_with, live_like, offline, root_with};

    #[test]
    fn offline_configured_values_decide() {
        let d = root_with(&[("/etc/sysctl.d/60.conf", "kernel.kptr_restrict = 2\nkernel.randomize_va_space = 1\n")]);
        let h = offline(d.path());
        assert_eq!(eval("sysctl.kptr_restrict", &h).status, Status::Pass);
        let o = eval("sysctl.randomize_va_space", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/etc/sysctl.d/60.conf:2");
    }

    #[test]
    fn offline_unconfigured_uses_fixed_kernel_default_only() {
        let d = root_with(&[]);
        let h = offline(d.path());
        // accept_redirects defaults to 1 upstream: a known failure.
        assert_eq!(eval("sysctl.ipv4_accept_redirects", &h).status, Status::Fail);
        // syncookies defaults to 1: a known pass.
        assert_eq!(eval("sysctl.tcp_syncookies", &h).status, Status::Pass);
        // dmesg_restrict depends on CONFIG_SECURITY_DMESG_RESTRICT: undecidable.
        let o = eval("sysctl.dmesg_restrict", &h);
        assert_eq!(o.status, Status::NotApplicable);
        assert!(o.reason.unwrap().contains("offline root"));
    }

    #[test]
    fn unreadable_config_is_an_error_offline() {
        let d = root_with(&[]);
        crate::testutil::write(d.path(), "/etc/sysctl.d/99-bin.conf", &[0u8, 0xff, 0xfe]);
        let o = eval("sysctl.kptr_restrict", &offline(d.path()));
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("99-bin.conf"));
    }

    #[test]
    fn an_unreadable_runtime_value_fails_only_on_a_bad_configured_value() {
        // A directory where the value should be: reading it fails with an
        // error other than "not found", as a refused read does.
        let setup = |conf: &str| {
            let d = root_with(&[("/etc/sysctl.d/60.conf", conf)]);
            std::fs::create_dir_all(d.path().join("proc/sys/net/core/bpf_jit_harden")).unwrap();
            d
        };
        let d = setup("net.core.bpf_jit_harden = 0\n");
        let o = eval("sysctl.bpf_jit_harden", &live_like(d.path()));
        assert_eq!(o.status, Status::Fail, "{:?}", o.reason);
        assert!(o.reason.unwrap().contains("cannot be read"));
        let d = setup("net.core.bpf_jit_harden = 2\n");
        let o = eval("sysctl.bpf_jit_harden", &live_like(d.path()));
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("sets 2"));
        let d = setup("");
        assert_eq!(eval("sysctl.bpf_jit_harden", &live_like(d.path())).status, Status::Error);
    }

    #[test]
    fn live_runtime_and_configured_disagreement() {
        let d = root_with(&[
            ("/proc/sys/kernel/kptr_restrict", "1\n"),
            ("/etc/sysctl.d/10.conf", "kernel.kptr_restrict = 0\n"),
            ("/proc/sys/kernel/dmesg_restrict", "0\n"),
            ("/etc/sysctl.d/20.conf", "kernel.dmesg_restrict = 1\n"),
            ("/proc/sys/fs/protected_fifos", "1\n"),
        ]);
        let h = live_like(d.path());
        let o = eval("sysctl.kptr_restrict", &h);
        assert_eq!(o.status, Status::Fail, "good runtime but config would revert it");
        assert!(o.reason.unwrap().contains("next boot"));
        assert_eq!(eval("sysctl.dmesg_restrict", &h).status, Status::Fail);
        let o = eval("sysctl.protected_fifos", &h);
        assert_eq!(o.status, Status::Pass);
        assert!(o.reason.unwrap().contains("not persisted"));
        // Key missing in /proc/sys: the kernel lacks the feature.
        assert_eq!(eval("sysctl.ptrace_scope", &h).status, Status::NotApplicable);
    }

    #[test]
    fn ip_forward_follows_node_role() {
        let d = root_with(&[("/etc/sysctl.d/k8s.conf", "net.ipv4.ip_forward = 1\n")]);
        let h = offline(d.path());
        assert_eq!(eval("sysctl.ip_forward", &h).status, Status::Pass);
        let o = eval_with("sysctl.ip_forward", &h, &[("kubernetes_node", Value::Bool(false))]);
        assert_eq!(o.status, Status::Fail);
    }
}
