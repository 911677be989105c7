//! Kernel parameter checks (family `sysctl`).
//!
//! Each check names one or more keys and the values that are acceptable. The
//! verdict combines the runtime value (live hosts) with the configured value
//! that will apply at the next boot, and says which one failed: a good
//! runtime value that a configuration file would undo at boot is a failure
//! too.
//!
//! By default every check judges as the benchmarks it cites audit: CIS Debian
//! 12 (section 1.5 and 3.3 audit procedures) and the SSG rules' OVAL require
//! the value both in the running kernel **and** in a sysctl configuration
//! file. A key set by nobody is a failure ("not set in any sysctl
//! configuration file"), even when the running value (live) or the upstream
//! kernel default (offline) happens to be right: nothing guarantees that a
//! later kernel, a package or an administrator keeps it. A profile may opt
//! into the looser reading with `accept_kernel_default = true`: then an
//! unconfigured key is judged by its running value (live) or by the
//! upstream kernel default where that is fixed upstream (offline); the
//! evidence always says which reading applied.

use serde_json::{Value, json};

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::sysctl::{Runtime, SysctlFacts, runtime};
use crate::audit::model::{Evidence, Outcome, Reference, Severity, Status, anssi, cis_debian, ssg};

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

/// How an unconfigured key is judged (the `accept_kernel_default` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    /// As the cited benchmarks audit: correct at runtime and persisted.
    Benchmark,
    /// An unconfigured key is judged by the runtime value or kernel default.
    AcceptKernelDefault,
}

impl Judgement {
    fn from_params(p: &Params) -> Self {
        if p.bool("accept_kernel_default") { Judgement::AcceptKernelDefault } else { Judgement::Benchmark }
    }

    fn evidence(self) -> Evidence {
        match self {
            Judgement::Benchmark => Evidence::new(
                "profile",
                "judgement: as the cited benchmarks audit (accept_kernel_default = false): the value must be correct in the running kernel and set in a sysctl configuration file",
            ),
            Judgement::AcceptKernelDefault => Evidence::new(
                "profile",
                "judgement: accept_kernel_default = true: a key no configuration file sets is judged by its running value (live) or the upstream kernel default (offline); the cited benchmarks would fail it",
            ),
        }
    }
}

const NOT_PERSISTED: &str = "not set in any sysctl configuration file";

/// What the configuration files say about one key, under a judgement.
enum Configured<'a> {
    /// An unreadable file may set it: unknown.
    Unknown(String),
    /// The value that applies at the next boot is wrong.
    Bad(&'a crate::audit::facts::sysctl::Assignment),
    /// The effective value is right, but a line an administrator wrote sets a
    /// wrong one (overridden); the SSG rules require every line to be right.
    Conflicting(Vec<&'a crate::audit::facts::sysctl::Assignment>),
    /// Nothing sets it (or only lines the benchmarks do not count).
    Unset { uncounted: Option<&'a crate::audit::facts::sysctl::Assignment> },
    /// Set, and right.
    Good(&'a crate::audit::facts::sysctl::Assignment),
}

fn configured_state<'a>(
    cfg: &'a crate::audit::facts::sysctl::SysctlConfig,
    key: &str,
    want: Want,
    judgement: Judgement,
) -> Configured<'a> {
    if !cfg.unreadable.is_empty() {
        return Configured::Unknown(cfg.unreadable.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "));
    }
    let Some(effective) = cfg.configured(key) else { return Configured::Unset { uncounted: None } };
    if !want.accepts(&effective.value) {
        return Configured::Bad(effective);
    }
    if judgement == Judgement::AcceptKernelDefault {
        return Configured::Good(effective);
    }
    if !cfg.explicit(key).any(|a| a.plain) {
        return Configured::Unset { uncounted: Some(effective) };
    }
    let conflicts: Vec<_> = cfg
        .explicit(key)
        .filter(|a| !want.accepts(&a.value) && crate::audit::facts::sysctl::is_admin_source(&a.source))
        .collect();
    if conflicts.is_empty() { Configured::Good(effective) } else { Configured::Conflicting(conflicts) }
}

fn eval_key(facts: &Facts<'_>, spec: &KeySpec, want: Want, judgement: Judgement) -> KeyVerdict {
    let cfg = &facts.get::<SysctlFacts>().config;
    let mut evidence = Vec::new();
    let mut observed = serde_json::Map::new();
    let verdict = |status, reason: Option<String>, observed: serde_json::Map<String, Value>, evidence| KeyVerdict {
        status,
        observed: Value::Object(observed),
        evidence,
        reason,
    };
    if spec.key.starts_with("net.ipv6.")
        && let Some(why) = crate::audit::facts::sysctl::ipv6_disabled(facts)
    {
        return verdict(
            Status::NotApplicable,
            Some(format!("IPv6 is disabled in the kernel ({why}), so {} does not exist", spec.key)),
            observed,
            vec![Evidence::new("kernel", why)],
        );
    }
    let strict = judgement == Judgement::Benchmark;
    let state = configured_state(cfg, spec.key, want, judgement);
    for a in cfg.explicit(spec.key) {
        evidence.push(Evidence::new(&a.source, format!("{} = {}", spec.key, a.value)));
    }
    if let Some(a) = cfg.configured(spec.key) {
        if a.is_glob {
            evidence.push(Evidence::new(&a.source, format!("{} = {} (glob)", a.key, a.value)));
        }
        observed.insert("configured".into(), json!(a.value));
    }
    // What the configuration alone decides: a failure whatever runs now, an
    // error, or nothing (then the running value decides).
    let config_fail: Option<String> = match &state {
        Configured::Bad(a) => {
            Some(format!("the configuration sets {} ({}), which applies at the next boot", a.value, a.source))
        }
        Configured::Conflicting(lines) => Some(format!(
            "{} also sets a value that is not acceptable ({}); the benchmarks require every line that sets the key to be correct",
            lines.iter().map(|a| a.source.as_str()).collect::<Vec<_>>().join(", "),
            lines.iter().map(|a| a.value.as_str()).collect::<Vec<_>>().join(", ")
        )),
        Configured::Unset { uncounted } if strict => {
            evidence.push(Evidence::new(
                "sysctl.d",
                format!("{} is {NOT_PERSISTED} (systemd-sysctl precedence)", spec.key),
            ));
            Some(match uncounted {
                Some(a) => format!(
                    "{NOT_PERSISTED} as a plain `{} = value` line ({} sets it with a glob, a leading '-' or the slash form, which the benchmarks' audits do not count)",
                    spec.key, a.source
                ),
                None => NOT_PERSISTED.to_string(),
            })
        }
        _ => None,
    };
    let runtime = runtime(facts.host(), spec.key);
    match runtime {
        // Some keys need privileges to read (net.core.bpf_jit_harden needs
        // CAP_SYS_ADMIN, which the hardened unit does not grant). What the
        // configuration alone decides is still certain; a good configured
        // value proves nothing about now.
        Runtime::Unreadable(e) => match (config_fail, &state) {
            (Some(why), _) => verdict(
                Status::Fail,
                Some(format!("{why} (the running value cannot be read: {e})")),
                observed,
                evidence,
            ),
            (None, Configured::Good(a)) => verdict(
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
        Runtime::Absent if spec.key.starts_with("net.ipv6.") => verdict(
            Status::NotApplicable,
            Some(format!("the running kernel does not provide {} (IPv6 not available)", spec.key)),
            observed,
            evidence,
        ),
        // CIS and the SSG rules require the key to exist in the running
        // kernel with the right value: a kernel without the feature (no
        // Yama, say) cannot enforce what the check asks for.
        Runtime::Absent => verdict(
            Status::Fail,
            Some(format!(
                "the running kernel does not provide {} (feature not built in or disabled), so it cannot be {}",
                spec.key,
                want.describe()
            )),
            observed,
            evidence,
        ),
        Runtime::Value(v) => {
            let runtime_ok = want.accepts(&v);
            evidence.insert(
                0,
                Evidence::new(crate::audit::facts::sysctl::proc_path(spec.key), format!("runtime {} = {v}", spec.key)),
            );
            observed.insert("runtime".into(), json!(v));
            if !runtime_ok {
                return verdict(Status::Fail, config_fail, observed, evidence);
            }
            match (config_fail, &state) {
                (Some(why), _) => {
                    verdict(Status::Fail, Some(format!("correct at runtime, but {why}")), observed, evidence)
                }
                (None, Configured::Unknown(why)) => verdict(
                    Status::Error,
                    Some(format!("runtime value is correct, but whether it persists is unknown: {why}")),
                    observed,
                    evidence,
                ),
                (None, Configured::Unset { .. }) => {
                    evidence.push(Evidence::new(
                        "sysctl.d",
                        format!("{} is {NOT_PERSISTED} (systemd-sysctl precedence)", spec.key),
                    ));
                    verdict(
                        Status::Pass,
                        Some(
                            "correct at runtime; not persisted in sysctl.d, so it relies on the kernel's default (accepted: accept_kernel_default = true)"
                                .into(),
                        ),
                        observed,
                        evidence,
                    )
                }
                (None, _) => verdict(Status::Pass, None, observed, evidence),
            }
        }
        Runtime::Offline => {
            if let Some(why) = config_fail {
                if let Some(default) = spec.kernel_default
                    && cfg.configured(spec.key).is_none()
                {
                    observed.insert("kernel_default".into(), json!(default));
                }
                let default = match (spec.kernel_default, &state) {
                    (Some(d), Configured::Unset { uncounted: None }) => {
                        format!(" (the upstream kernel default {d} would apply at boot)")
                    }
                    (None, Configured::Unset { uncounted: None }) => {
                        " (its default depends on the kernel build)".into()
                    }
                    _ => String::new(),
                };
                return verdict(Status::Fail, Some(format!("{why}{default}")), observed, evidence);
            }
            match (&state, spec.kernel_default) {
                (Configured::Unknown(why), _) => {
                    verdict(Status::Error, Some(format!("configured value unknown: {why}")), observed, evidence)
                }
                (Configured::Unset { .. }, Some(default)) => {
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
                (Configured::Unset { .. }, None) => verdict(
                    Status::NotApplicable,
                    Some(format!(
                        "offline root: {} is not configured and its kernel default depends on the kernel build",
                        spec.key
                    )),
                    observed,
                    evidence,
                ),
                _ => verdict(Status::Pass, None, observed, evidence),
            }
        }
    }
}

/// Combine per-key verdicts: any fail fails; else any error errors; else
/// not applicable only when every key is; else pass.
fn combine(keys: &[KeySpec], wants: &[Want], facts: &Facts<'_>, judgement: Judgement) -> Outcome {
    let mut observed = serde_json::Map::new();
    let mut expected = serde_json::Map::new();
    let mut evidence = Vec::new();
    let mut reasons = Vec::new();
    let mut statuses = Vec::new();
    for (spec, want) in keys.iter().zip(wants) {
        let v = eval_key(facts, spec, *want, judgement);
        observed.insert(spec.key.to_string(), v.observed);
        expected.insert(spec.key.to_string(), json!(want.describe()));
        evidence.extend(v.evidence);
        if let Some(r) = v.reason {
            reasons.push(format!("{}: {r}", spec.key));
        }
        statuses.push(v.status);
    }
    evidence.push(judgement.evidence());
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
    Check::new(format!("sysctl.{id}"), title, severity, move |facts, p| {
        let wants: Vec<Want> = keys.iter().map(|k| k.want).collect();
        combine(&keys, &wants, facts, Judgement::from_params(p))
    })
    .param(accept_kernel_default_param())
    .rationale(format!("{rationale} {PERSISTENCE_RATIONALE}"))
    .remediation(remediation)
    .refs(refs.iter().cloned())
}

/// Said in every sysctl check's rationale, so an auditor can predict the verdict.
const PERSISTENCE_RATIONALE: &str = "As CIS Debian 12 and the SSG rules audit it, the value must be correct in the running kernel and set in a sysctl configuration file (/etc/sysctl.conf, or a sysctl.d directory with systemd-sysctl's precedence); an unset key fails even when the kernel default is right, unless the profile sets accept_kernel_default = true.";

fn accept_kernel_default_param() -> ParamSpec {
    ParamSpec::bool(
        "accept_kernel_default",
        false,
        "Judge a key that no sysctl configuration file sets by its running value (live) or the upstream kernel default (offline), instead of failing it as the cited benchmarks do",
    )
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
            vec![key("kernel.kptr_restrict", Want::OneOf(&["2"]), Some("0"))],
            &[anssi("R9"), ssg("sysctl_kernel_kptr_restrict")],
            "Kernel addresses in /proc help an attacker defeat KASLR. ANSSI R9 (and the SSG rule in its ANSSI profiles) require 2: hidden even from processes with CAP_SYSLOG.",
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
            vec![key("fs.protected_fifos", Want::OneOf(&["2"]), Some("0"))],
            &[anssi("R14"), ssg("sysctl_fs_protected_fifos")],
            "Prevents data spoofing through attacker-created FIFOs in world-writable sticky directories. ANSSI R14 and the SSG rule require 2 (also group-writable sticky directories); Debian's procps ships 1 in /usr/lib/sysctl.d/99-protect-links.conf, which an administrator overrides with a same-name file in /etc/sysctl.d.",
        ),
        sysctl_check(
            "protected_regular",
            "O_CREAT opens of regular files in sticky directories are restricted",
            Severity::Low,
            vec![key("fs.protected_regular", Want::OneOf(&["2"]), Some("0"))],
            &[anssi("R14"), ssg("sysctl_fs_protected_regular")],
            "Prevents writing into attacker-created files in world-writable sticky directories. ANSSI R14 and the SSG rule require 2 (also group-writable sticky directories).",
        ),
        sysctl_check(
            "suid_dumpable",
            "Set-uid programs do not produce core dumps",
            Severity::Medium,
            vec![key("fs.suid_dumpable", ZERO, Some("0"))],
            &[cis_debian("1.5.3"), anssi("R14"), ssg("sysctl_fs_suid_dumpable")],
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
            vec![key("kernel.unprivileged_bpf_disabled", Want::OneOf(&["1"]), None)],
            &[anssi("R9"), ssg("sysctl_kernel_unprivileged_bpf_disabled")],
            "Unprivileged eBPF has been the entry point of many kernel privilege escalations. ANSSI R9 and the SSG rule require 1 (disabled until reboot); 2, the default of Debian's kernels, lets an administrator turn it back on at runtime.",
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
        rp_filter_check(),
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

/// Reverse-path filtering: strict (1) as CIS Debian 3.3.7, ANSSI R12 and the
/// SSG rules require; loose (2) only when the profile accepts it.
fn rp_filter_check() -> Check {
    const KEYS: [KeySpec; 2] =
        [key("net.ipv4.conf.all.rp_filter", ONE, Some("0")), key("net.ipv4.conf.default.rp_filter", ONE, Some("0"))];
    const LOOSE: Want = Want::OneOf(&["1", "2"]);
    Check::new(
        "sysctl.rp_filter",
        "Reverse-path filtering is enabled (strict, or loose where the profile accepts it)",
        Severity::Medium,
        |facts, params: &Params| {
            let want = if params.bool("accept_loose") { LOOSE } else { ONE };
            let mut o = combine(&KEYS, &[want, want], facts, Judgement::from_params(params));
            if params.bool("accept_loose") {
                o.evidence.push(Evidence::new(
                    "profile",
                    "accept_loose = true: loose mode (2) is accepted, which CIS Debian 12 3.3.7, ANSSI R12 and the SSG rules do not",
                ));
            }
            o
        },
    )
    .param(accept_kernel_default_param())
    .param(ParamSpec::bool(
        "accept_loose",
        false,
        "Accept loose reverse-path filtering (2), for nodes whose CNI or WireGuard/Kilo routes asymmetrically (a deviation from the benchmarks)",
    ))
    .rationale(format!(
        "Drops packets whose source address is not routed back through the interface they arrived on (spoofing). CIS Debian 12 3.3.7, ANSSI R12 and the SSG rules require strict mode (1). Some Kubernetes networking (WireGuard/Kilo, multi-homed nodes, some CNIs) routes asymmetrically and needs loose mode: set accept_loose = true in the profile, and the finding says that it deviates. {PERSISTENCE_RATIONALE}"
    ))
    .remediation(
        "Set net.ipv4.conf.all.rp_filter = 1 and net.ipv4.conf.default.rp_filter = 1 in /etc/sysctl.d/ and apply them with `sysctl --system` (or accept_loose = true where asymmetric routing needs 2).",
    )
    .refs([
        cis_debian("3.3.7"),
        anssi("R12"),
        ssg("sysctl_net_ipv4_conf_all_rp_filter"),
        ssg("sysctl_net_ipv4_conf_default_rp_filter"),
    ])
}

/// `net.ipv4.ip_forward` is the one place where Kubernetes overrides generic
/// advice: pod traffic is routed through the node, so forwarding is required
/// (CIS Debian 3.3.1 and Lynis say 0 for generic servers).
fn ip_forward_check() -> Check {
    const NODE_KEYS: [KeySpec; 1] = [key("net.ipv4.ip_forward", ONE, Some("0"))];
    // CIS 3.3.1 covers IPv6 forwarding too on a host that is not a router.
    const HOST_KEYS: [KeySpec; 2] =
        [key("net.ipv4.ip_forward", ZERO, Some("0")), key("net.ipv6.conf.all.forwarding", ZERO, Some("0"))];
    Check::new(
        "sysctl.ip_forward",
        "IPv4 forwarding matches the node's role (required on a Kubernetes node)",
        Severity::Medium,
        |facts, params: &Params| {
            let judgement = Judgement::from_params(params);
            if !params.bool("kubernetes_node") {
                return combine(&HOST_KEYS, &[ZERO, ZERO], facts, judgement);
            }
            let mut o = combine(&NODE_KEYS, &[ONE], facts, judgement);
            o.evidence.push(Evidence::new(
                "profile",
                "kubernetes_node = true: pods are routed through the node, so forwarding must be on (a declared deviation from CIS Debian 12 3.3.1 and SSG sysctl_net_ipv4_ip_forward)",
            ));
            o
        },
    )
    .param(accept_kernel_default_param())
    .param(ParamSpec::bool(
        "kubernetes_node",
        true,
        "The host is a Kubernetes node: forwarding is required (set false for a plain server, where it must be off)",
    ))
    .rationale(
        format!("Kubernetes routes pod traffic through the node, so net.ipv4.ip_forward must be 1 there; on a host that is not a node it must be 0 so the host does not route between networks. On a node (kubernetes_node = true, the default) this deliberately inverts CIS Debian 12 3.3.1, ANSSI R12 and SSG sysctl_net_ipv4_ip_forward, which are written for hosts that are not routers, so the check cites no benchmark; with kubernetes_node = false it decides their question (IPv4 and IPv6 forwarding off, SSG sysctl_net_ipv6_conf_all_forwarding too). {PERSISTENCE_RATIONALE}"),
    )
    .remediation("On a node: net.ipv4.ip_forward = 1 in /etc/sysctl.d/. On a plain server: net.ipv4.ip_forward = 0 and net.ipv6.conf.all.forwarding = 0.")
    // No reference: on a node (the default) the check requires the opposite
    // of CIS Debian 12 3.3.1, ANSSI R12 and SSG sysctl_net_ipv4_ip_forward,
    // so citing them would tell an auditor's cross-map that we decide their
    // question. The rationale names them for kubernetes_node = false.
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

    const ACCEPT_DEFAULT: (&str, Value) = ("accept_kernel_default", Value::Bool(true));

    #[test]
    fn offline_unconfigured_fails_by_default_and_uses_fixed_kernel_default_only_on_opt_in() {
        let d = root_with(&[]);
        let h = offline(d.path());
        // The benchmark reading: nothing configured is a failure, and the
        // kernel default is shown, not trusted.
        let o = eval("sysctl.tcp_syncookies", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.as_deref().unwrap().contains("not set in any sysctl configuration file"), "{o:?}");
        assert_eq!(o.observed.as_ref().unwrap()["net.ipv4.tcp_syncookies"]["kernel_default"], "1");
        assert!(o.evidence.iter().any(|e| e.detail.contains("accept_kernel_default = false")));
        // The looser reading, opted into.
        let with = |id| eval_with(id, &h, &[ACCEPT_DEFAULT]);
        // accept_redirects defaults to 1 upstream: a known failure.
        assert_eq!(with("sysctl.ipv4_accept_redirects").status, Status::Fail);
        // syncookies defaults to 1: a known pass.
        let o = with("sysctl.tcp_syncookies");
        assert_eq!(o.status, Status::Pass);
        assert!(o.evidence.iter().any(|e| e.detail.contains("accept_kernel_default = true")));
        // dmesg_restrict depends on CONFIG_SECURITY_DMESG_RESTRICT: undecidable.
        let o = with("sysctl.dmesg_restrict");
        assert_eq!(o.status, Status::NotApplicable);
        assert!(o.reason.unwrap().contains("offline root"));
        assert_eq!(eval("sysctl.dmesg_restrict", &h).status, Status::Fail);
    }

    /// Issue 14: the six checks OpenSCAP fails on a root with no sysctl
    /// configuration fail here too, offline and live with correct runtime
    /// values; the opt-in parameter passes them.
    #[test]
    fn unpersisted_values_fail_as_the_benchmark_says() {
        const SIX: [(&str, &[(&str, &str)]); 6] = [
            ("sysctl.suid_dumpable", &[("fs/suid_dumpable", "0")]),
            (
                "sysctl.ipv4_accept_source_route",
                &[("net/ipv4/conf/all/accept_source_route", "0"), ("net/ipv4/conf/default/accept_source_route", "0")],
            ),
            (
                "sysctl.ipv6_accept_source_route",
                &[("net/ipv6/conf/all/accept_source_route", "0"), ("net/ipv6/conf/default/accept_source_route", "0")],
            ),
            ("sysctl.icmp_echo_ignore_broadcasts", &[("net/ipv4/icmp_echo_ignore_broadcasts", "1")]),
            ("sysctl.icmp_ignore_bogus_error_responses", &[("net/ipv4/icmp_ignore_bogus_error_responses", "1")]),
            ("sysctl.tcp_syncookies", &[("net/ipv4/tcp_syncookies", "1")]),
        ];
        let empty = root_with(&[]);
        let live = root_with(&[]);
        for (_, keys) in SIX {
            for (k, v) in keys {
                crate::testutil::write(live.path(), &format!("/proc/sys/{k}"), format!("{v}\n").as_bytes());
            }
        }
        for host in [offline(empty.path()), live_like(live.path())] {
            for (id, _) in SIX {
                let o = eval(id, &host);
                assert_eq!(o.status, Status::Fail, "{id}: {o:?}");
                assert!(
                    o.reason.as_deref().unwrap().contains("not set in any sysctl configuration file"),
                    "{id}: {o:?}"
                );
                let o = eval_with(id, &host, &[ACCEPT_DEFAULT]);
                assert_eq!(o.status, Status::Pass, "{id} with accept_kernel_default: {o:?}");
            }
        }
        // Live: the runtime value is what `observed` shows.
        let o = eval("sysctl.tcp_syncookies", &live_like(live.path()));
        assert_eq!(o.observed.unwrap()["net.ipv4.tcp_syncookies"]["runtime"], "1");
        // Persisted and correct at runtime: a pass under the benchmark reading.
        crate::testutil::write(live.path(), "/etc/sysctl.d/60-net.conf", b"net.ipv4.tcp_syncookies = 1\n");
        assert_eq!(eval("sysctl.tcp_syncookies", &live_like(live.path())).status, Status::Pass);
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
        let o = eval("sysctl.bpf_jit_harden", &live_like(d.path()));
        assert_eq!(o.status, Status::Fail, "not persisted, whatever runs now");
        assert!(o.reason.unwrap().contains("not set in any sysctl configuration file"));
        let o = eval_with("sysctl.bpf_jit_harden", &live_like(d.path()), &[ACCEPT_DEFAULT]);
        assert_eq!(o.status, Status::Error);
    }

    #[test]
    fn live_runtime_and_configured_disagreement() {
        let d = root_with(&[
            ("/proc/sys/kernel/kptr_restrict", "2\n"),
            ("/etc/sysctl.d/10.conf", "kernel.kptr_restrict = 0\n"),
            ("/proc/sys/kernel/dmesg_restrict", "0\n"),
            ("/etc/sysctl.d/20.conf", "kernel.dmesg_restrict = 1\n"),
            ("/proc/sys/fs/protected_fifos", "2\n"),
        ]);
        let h = live_like(d.path());
        let o = eval("sysctl.kptr_restrict", &h);
        assert_eq!(o.status, Status::Fail, "good runtime but config would revert it");
        assert!(o.reason.unwrap().contains("next boot"));
        assert_eq!(eval("sysctl.dmesg_restrict", &h).status, Status::Fail);
        let o = eval("sysctl.protected_fifos", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("correct at runtime, but not set in any sysctl configuration file"));
        let o = eval_with("sysctl.protected_fifos", &h, &[ACCEPT_DEFAULT]);
        assert_eq!(o.status, Status::Pass);
        assert!(o.reason.unwrap().contains("not persisted"));
        // Key missing in /proc/sys: the kernel lacks the feature, so it
        // cannot be restricted (CIS and SSG require the key to exist).
        let o = eval("sysctl.ptrace_scope", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("does not provide kernel.yama.ptrace_scope"));
    }

    #[test]
    fn every_line_an_administrator_wrote_must_be_right_and_globs_do_not_count() {
        // The effective value is right (later file), but an earlier file an
        // administrator wrote says otherwise: the SSG rules fail that.
        let d = root_with(&[
            ("/etc/sysctl.d/10-old.conf", "net.ipv4.tcp_syncookies = 0\n"),
            ("/etc/sysctl.d/90-new.conf", "net.ipv4.tcp_syncookies = 1\n"),
            // A package's line overridden by the administrator is fine.
            ("/usr/lib/sysctl.d/50-pkg.conf", "kernel.dmesg_restrict = 0\n"),
            ("/etc/sysctl.d/60-admin.conf", "kernel.dmesg_restrict = 1\n"),
            // Set only with a glob, a '-' line or the slash form.
            (
                "/etc/sysctl.d/70-glob.conf",
                "net.ipv4.conf.*.log_martians = 1\n-kernel.randomize_va_space = 2\nfs/suid_dumpable = 0\n",
            ),
        ]);
        let h = offline(d.path());
        let o = eval("sysctl.tcp_syncookies", &h);
        assert_eq!(o.status, Status::Fail, "{o:?}");
        assert!(o.reason.unwrap().contains("/etc/sysctl.d/10-old.conf:1 also sets a value"));
        assert_eq!(eval_with("sysctl.tcp_syncookies", &h, &[ACCEPT_DEFAULT]).status, Status::Pass);
        assert_eq!(eval("sysctl.dmesg_restrict", &h).status, Status::Pass);
        for id in ["sysctl.log_martians", "sysctl.randomize_va_space", "sysctl.suid_dumpable"] {
            let o = eval(id, &h);
            assert_eq!(o.status, Status::Fail, "{id}: {o:?}");
            assert!(o.reason.as_deref().unwrap().contains("which the benchmarks' audits do not count"), "{id}: {o:?}");
            assert_eq!(eval_with(id, &h, &[ACCEPT_DEFAULT]).status, Status::Pass, "{id}");
        }
    }

    #[test]
    fn ipv6_keys_do_not_apply_when_ipv6_is_disabled() {
        let d = root_with(&[("/etc/default/grub", "GRUB_CMDLINE_LINUX=\"quiet ipv6.disable=1\"\n")]);
        let o = eval("sysctl.ipv6_accept_ra", &offline(d.path()));
        assert_eq!(o.status, Status::NotApplicable, "{o:?}");
        assert!(o.reason.unwrap().contains("ipv6.disable=1"));
        let d = root_with(&[("/sys/module/ipv6/parameters/disable", "1\n")]);
        let o = eval("sysctl.ipv6_accept_redirects", &live_like(d.path()));
        assert_eq!(o.status, Status::NotApplicable, "{o:?}");
        // IPv4 keys are still judged.
        assert_eq!(eval("sysctl.ipv4_accept_redirects", &live_like(d.path())).status, Status::Fail);
    }

    #[test]
    fn ufw_sysctl_file_applies_last_when_ufw_is_enabled() {
        let files = [
            (
                "/etc/sysctl.d/60-net.conf",
                "net.ipv4.conf.all.log_martians = 1\nnet.ipv4.conf.default.log_martians = 1\n",
            ),
            ("/etc/default/ufw", "IPT_SYSCTL=/etc/ufw/sysctl.conf\n"),
            ("/etc/ufw/sysctl.conf", "net/ipv4/conf/all/log_martians=0\n"),
        ];
        let mut enabled = files.to_vec();
        enabled.push(("/etc/ufw/ufw.conf", "ENABLED=yes\n"));
        let d = root_with(&enabled);
        let o = eval("sysctl.log_martians", &offline(d.path()));
        assert_eq!(o.status, Status::Fail, "{o:?}");
        assert!(o.reason.unwrap().contains("/etc/ufw/sysctl.conf:1"));
        let mut disabled = files.to_vec();
        disabled.push(("/etc/ufw/ufw.conf", "ENABLED=no\n"));
        let d = root_with(&disabled);
        assert_eq!(eval("sysctl.log_martians", &offline(d.path())).status, Status::Pass);
    }

    #[test]
    fn rp_filter_is_strict_unless_the_profile_accepts_loose() {
        let d = root_with(&[(
            "/etc/sysctl.d/60-rp.conf",
            "net.ipv4.conf.all.rp_filter = 2\nnet.ipv4.conf.default.rp_filter = 2\n",
        )]);
        let h = offline(d.path());
        assert_eq!(eval("sysctl.rp_filter", &h).status, Status::Fail);
        let o = eval_with("sysctl.rp_filter", &h, &[("accept_loose", Value::Bool(true))]);
        assert_eq!(o.status, Status::Pass);
        assert!(o.evidence.iter().any(|e| e.detail.contains("accept_loose = true")));
    }

    #[test]
    fn ip_forward_follows_node_role() {
        let d = root_with(&[("/etc/sysctl.d/k8s.conf", "net.ipv4.ip_forward = 1\n")]);
        let h = offline(d.path());
        assert_eq!(eval("sysctl.ip_forward", &h).status, Status::Pass);
        let o = eval_with("sysctl.ip_forward", &h, &[("kubernetes_node", Value::Bool(false))]);
        assert_eq!(o.status, Status::Fail);
        // Not a node: IPv6 forwarding must be off too (CIS 3.3.1).
        let d = root_with(&[("/etc/sysctl.d/host.conf", "net.ipv4.ip_forward = 0\n")]);
        let h = offline(d.path());
        let o = eval_with("sysctl.ip_forward", &h, &[("kubernetes_node", Value::Bool(false))]);
        assert_eq!(o.status, Status::Fail, "{o:?}");
        assert!(o.reason.unwrap().contains("net.ipv6.conf.all.forwarding"));
    }
}
