//! OpenSSH server checks (family `ssh`).
//!
//! Every check judges the EFFECTIVE setting for the connection an internet
//! attacker would make (see [`crate::audit::facts::sshd::AUDITED_CONNECTION`]):
//! what `sshd -T` reports on a live host, otherwise what our parser derives
//! from `/etc/ssh/sshd_config`, its includes and its `Match` blocks, with
//! the OpenSSH default for unset keywords (the evidence says so). When sshd
//! is not installed every check is `not_applicable`; when the configuration
//! cannot be established (unreadable, binary, include loop, a line sshd
//! refuses) every check is `error` with the reason.

use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::sshd::{
    DEFAULT_CIPHERS, DEFAULT_HOST_KEYS, DEFAULT_KEX, DEFAULT_MACS, EffectiveConfig, Origin, Resolved, SshdFacts,
    SshdState, assemble_algorithms, parse_time, wildcard_match,
};
use crate::audit::host::{FileKind, Host};
use crate::audit::model::{Outcome, Reference, Severity, Status, anssi, cis_debian, ssg};

/// Cap on `/etc/group` when naming a host key's group.
const GROUP_FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// Run `judge` on the effective configuration, or say why it cannot run.
/// The configuration's notes (why the parser was used, …) are appended to
/// the evidence of every outcome.
fn with_config(facts: &Facts<'_>, judge: impl FnOnce(&EffectiveConfig) -> Outcome) -> Outcome {
    let sshd = facts.get::<SshdFacts>();
    match &sshd.state {
        SshdState::NotInstalled => Outcome::not_applicable("sshd is not installed"),
        SshdState::Undecidable { error, notes } => {
            Outcome::error(format!("effective sshd configuration unknown: {error}")).with_evidence(notes.clone())
        }
        SshdState::Ready(cfg) => judge(cfg).with_evidence(cfg.notes.clone()),
    }
}

/// The effective value of a keyword, or an error outcome.
fn resolve(cfg: &EffectiveConfig, keyword: &str) -> Result<Resolved, Outcome> {
    cfg.resolve(keyword).ok_or_else(|| Outcome::error(format!("{keyword}: not set and no known OpenSSH default")))
}

/// Pass when the effective value is one of `accepted` (case-insensitive).
fn judge_value(cfg: &EffectiveConfig, display: &str, keyword: &str, accepted: &[&str]) -> Outcome {
    let r = match resolve(cfg, keyword) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let ok = accepted.iter().any(|a| a.eq_ignore_ascii_case(&r.value));
    Outcome::verdict(ok).observed(r.value.clone()).expected(one_of(accepted)).evidence(&r.source, r.describe(display))
}

fn one_of<S: AsRef<str>>(vals: &[S]) -> String {
    match vals {
        [one] => one.as_ref().to_string(),
        _ => format!("one of {}", vals.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")),
    }
}

/// A check that wants one of a fixed set of values.
#[allow(clippy::too_many_arguments)]
fn value_check(
    id: &str,
    title: &str,
    severity: Severity,
    display: &'static str,
    keyword: &'static str,
    accepted: &'static [&'static str],
    refs: &[Reference],
    rationale: &str,
) -> Check {
    Check::new(format!("ssh.{id}"), title, severity, move |facts, _p| {
        with_config(facts, |cfg| judge_value(cfg, display, keyword, accepted))
    })
    .rationale(rationale)
    .remediation(format!(
        "Set `{display} {}` near the top of /etc/ssh/sshd_config (before any Match block and before Include lines that may set it first: the first value wins), make sure no Match block applying to remote logins overrides it, check with `sshd -T`, then reload sshd.",
        accepted.first().copied().unwrap_or_default()
    ))
    .refs(refs.iter().cloned())
}

/// `DisableForwarding yes` overrides every forwarding option.
fn forwarding_disabled(cfg: &EffectiveConfig) -> Option<Resolved> {
    cfg.resolve("disableforwarding").filter(|r| r.value.eq_ignore_ascii_case("yes"))
}

fn permit_root_login() -> Check {
    Check::new("ssh.permit_root_login", "Direct root login over SSH is disabled", Severity::High, |facts, p: &Params| {
        with_config(facts, |cfg| {
            let accepted: &[&str] = if p.bool("allow_prohibit_password") {
                &["no", "prohibit-password", "without-password", "forced-commands-only"]
            } else {
                &["no"]
            };
            judge_value(cfg, "PermitRootLogin", "permitrootlogin", accepted)
        })
    })
    .param(ParamSpec::bool(
        "allow_prohibit_password",
        false,
        "Also accept prohibit-password / without-password / forced-commands-only (root login with keys only)",
    ))
    .rationale(
        "Logging in directly as root leaves no trace of which administrator acted and gives an attacker a known account name. \
         Only `no` passes by default, as CIS and ANSSI require; the OpenSSH default `prohibit-password` still admits root with a \
         stolen key, so accepting it is an explicit profile decision (allow_prohibit_password).",
    )
    .remediation(
        "Set `PermitRootLogin no` in /etc/ssh/sshd_config (first occurrence wins; check Match blocks too), log in as a named user and use sudo, then reload sshd.",
    )
    .refs([cis_debian("5.1.20"), anssi("R33"), ssg("sshd_disable_root_login")])
}

fn x11_forwarding() -> Check {
    Check::new("ssh.x11_forwarding", "X11 forwarding is disabled", Severity::Low, |facts, _p| {
        with_config(facts, |cfg| {
            if let Some(d) = forwarding_disabled(cfg) {
                return Outcome::pass()
                    .observed("DisableForwarding yes")
                    .expected("no")
                    .evidence(&d.source, d.describe("DisableForwarding"));
            }
            judge_value(cfg, "X11Forwarding", "x11forwarding", &["no"])
        })
    })
    .rationale(
        "A forwarded X11 display lets the server side (or anyone who took it over) read keystrokes and screens of the client; \
         a Kubernetes node has no use for it. Note that Debian's packaged sshd_config sets `X11Forwarding yes` although the OpenSSH default is no.",
    )
    .remediation(
        "Set `X11Forwarding no` in /etc/ssh/sshd_config (Debian ships `yes`: change that line, the first value wins) or `DisableForwarding yes`, then reload sshd.",
    )
    // SSG's sshd_disable_x11_forwarding asks a different question (an
    // explicit line in /etc/ssh/sshd_config), and no CIS Debian 12 control
    // covers X11 forwarding: no reference is cited.
}

fn tcp_forwarding() -> Check {
    Check::new("ssh.tcp_forwarding", "TCP forwarding over SSH is disabled", Severity::Low, |facts, p: &Params| {
        with_config(facts, |cfg| {
            let allowed = p.list("allowed");
            if let Some(d) = forwarding_disabled(cfg) {
                return Outcome::pass()
                    .observed("DisableForwarding yes")
                    .expected(one_of(&allowed))
                    .evidence(&d.source, d.describe("DisableForwarding"));
            }
            let refs: Vec<&str> = allowed.iter().map(String::as_str).collect();
            judge_value(cfg, "AllowTcpForwarding", "allowtcpforwarding", &refs)
        })
    })
    .param(ParamSpec::list(
        "allowed",
        &["no"],
        "Accepted AllowTcpForwarding values (add \"local\" if administrators tunnel to node-local services)",
    ))
    .rationale(
        "TCP forwarding turns every SSH account into a tunnel into the node's networks (kubelet, pod and WireGuard networks) that bypasses firewalls.",
    )
    .remediation("Set `AllowTcpForwarding no` (or `DisableForwarding yes`) in /etc/ssh/sshd_config, then reload sshd.")
    // SSG's sshd_disable_tcp_forwarding requires an explicit line in
    // /etc/ssh/sshd_config, a different question: no reference is cited.
}

fn max_auth_tries() -> Check {
    Check::new(
        "ssh.max_auth_tries",
        "Authentication attempts per connection are limited",
        Severity::Low,
        |facts, p: &Params| {
            with_config(facts, |cfg| {
                let max = p.int("max");
                let r = match resolve(cfg, "maxauthtries") {
                    Ok(r) => r,
                    Err(o) => return o,
                };
                let Ok(n) = r.value.parse::<i64>() else {
                    return Outcome::error(format!("{}: MaxAuthTries {} is not a number", r.source, r.value));
                };
                Outcome::verdict(n <= max)
                    .observed(n)
                    .expected(format!("<= {max}"))
                    .evidence(&r.source, r.describe("MaxAuthTries"))
            })
        },
    )
    .param(ParamSpec::int("max", 4, "Largest acceptable MaxAuthTries"))
    .rationale(
        "A low limit slows down online guessing and logs failures early (sshd logs once half the limit is reached).",
    )
    .remediation("Set `MaxAuthTries 4` in /etc/ssh/sshd_config, then reload sshd.")
    .refs([cis_debian("5.1.16"), ssg("sshd_set_max_auth_tries")])
}

fn login_grace_time() -> Check {
    Check::new(
        "ssh.login_grace_time",
        "Unauthenticated connections are dropped quickly",
        Severity::Low,
        |facts, p: &Params| {
            with_config(facts, |cfg| {
                let max = u64::try_from(p.int("max_seconds")).unwrap_or(0);
                let r = match resolve(cfg, "logingracetime") {
                    Ok(r) => r,
                    Err(o) => return o,
                };
                let Some(secs) = parse_time(&r.value) else {
                    return Outcome::error(format!("{}: LoginGraceTime {} is not a time value", r.source, r.value));
                };
                let o = Outcome::verdict(secs > 0 && secs <= max)
                    .observed(secs)
                    .expected(format!("1..={max} seconds"))
                    .evidence(&r.source, r.describe("LoginGraceTime"));
                if secs == 0 { o.note("LoginGraceTime 0 means no limit at all") } else { o }
            })
        },
    )
    .param(ParamSpec::int("max_seconds", 60, "Largest acceptable LoginGraceTime, in seconds"))
    .rationale(
        "Every unauthenticated connection holds a pre-authentication slot (MaxStartups); a long grace time makes it cheap to exhaust them and lock out administrators.",
    )
    .remediation("Set `LoginGraceTime 60` in /etc/ssh/sshd_config, then reload sshd.")
    .refs([cis_debian("5.1.13")])
}

fn client_alive() -> Check {
    Check::new(
        "ssh.client_alive",
        "Unresponsive SSH sessions are disconnected",
        Severity::Low,
        |facts, p: &Params| {
            with_config(facts, |cfg| {
                let max_interval = u64::try_from(p.int("max_interval")).unwrap_or(0);
                let max_count = p.int("max_count");
                let (ri, rc) = match (resolve(cfg, "clientaliveinterval"), resolve(cfg, "clientalivecountmax")) {
                    (Ok(i), Ok(c)) => (i, c),
                    (Err(o), _) | (_, Err(o)) => return o,
                };
                let Some(interval) = parse_time(&ri.value) else {
                    return Outcome::error(format!("{}: ClientAliveInterval {} is not a time value", ri.source, ri.value));
                };
                let Ok(count) = rc.value.parse::<i64>() else {
                    return Outcome::error(format!("{}: ClientAliveCountMax {} is not a number", rc.source, rc.value));
                };
                let mut problems = Vec::new();
                if interval == 0 {
                    problems.push("ClientAliveInterval 0 disables keep-alive probes, so dead sessions are never dropped".to_string());
                } else if max_interval > 0 && interval > max_interval {
                    problems.push(format!("ClientAliveInterval {interval}s is above {max_interval}s (profile limit)"));
                }
                if count <= 0 {
                    problems.push(
                        "ClientAliveCountMax 0 never disconnects on OpenSSH >= 8.2 (it used to mean \"disconnect at once\")".to_string(),
                    );
                } else if max_count > 0 && count > max_count {
                    problems.push(format!("ClientAliveCountMax {count} is above {max_count} (profile limit)"));
                }
                let bound = |max: i64, unit: &str| if max > 0 { format!("1..={max}{unit}") } else { "greater than 0".to_string() };
                let o = Outcome::verdict(problems.is_empty())
                    .observed(json!({"ClientAliveInterval": interval, "ClientAliveCountMax": count}))
                    .expected(json!({
                        "ClientAliveInterval": bound(i64::try_from(max_interval).unwrap_or(i64::MAX), " seconds"),
                        "ClientAliveCountMax": bound(max_count, ""),
                    }))
                    .evidence(&ri.source, ri.describe("ClientAliveInterval"))
                    .evidence(&rc.source, rc.describe("ClientAliveCountMax"));
                if problems.is_empty() { o } else { o.note(problems.join("; ")) }
            })
        },
    )
    .param(ParamSpec::int("max_interval", 0, "Largest acceptable ClientAliveInterval, in seconds (0: no limit beyond CIS's \"greater than 0\")"))
    .param(ParamSpec::int("max_count", 0, "Largest acceptable ClientAliveCountMax (0: no limit beyond CIS's \"greater than 0\")"))
    .rationale(
        "Sessions whose client vanished stay logged in (and keep forwardings open) until the server probes them. \
         As CIS Debian 12 5.1.7 audits it, both values must be greater than 0; a profile may set upper limits (max_interval, max_count). \
         ClientAliveCountMax must be at least 1: since OpenSSH 8.2, 0 disables the disconnection instead of forcing it, \
         a trap that SSG/ANSSI-derived content still falls into.",
    )
    .remediation("Set `ClientAliveInterval 300` and `ClientAliveCountMax 3` (any value 1..3) in /etc/ssh/sshd_config, then reload sshd.")
    .refs([cis_debian("5.1.7")])
}

fn log_level() -> Check {
    Check::new("ssh.log_level", "sshd logs at INFO or VERBOSE level", Severity::Low, |facts, p: &Params| {
        with_config(facts, |cfg| {
            let allowed = p.list("allowed");
            let refs: Vec<&str> = allowed.iter().map(String::as_str).collect();
            judge_value(cfg, "LogLevel", "loglevel", &refs)
        })
    })
    .param(ParamSpec::list("allowed", &["INFO", "VERBOSE"], "Accepted LogLevel values"))
    .rationale(
        "Logins and failures must reach the logs for incident response; VERBOSE also records the key fingerprint used. \
         DEBUG levels can log sensitive data and QUIET/FATAL/ERROR lose the login trail.",
    )
    .remediation("Set `LogLevel VERBOSE` (or INFO) in /etc/ssh/sshd_config, then reload sshd.")
    .refs([cis_debian("5.1.14")])
}

/// A check that no algorithm of a list matches a weak pattern.
struct AlgorithmSpec {
    id: &'static str,
    title: &'static str,
    display: &'static str,
    keyword: &'static str,
    default: &'static [&'static str],
    weak: &'static [&'static str],
}

fn algorithm_check(spec: AlgorithmSpec, refs: &[Reference], rationale: &str) -> Check {
    let AlgorithmSpec { id, title, display, keyword, default, weak } = spec;
    Check::new(format!("ssh.{id}"), title, Severity::Medium, move |facts, p: &Params| {
        with_config(facts, |cfg| {
            let patterns = p.list("weak");
            let r = match resolve(cfg, keyword) {
                Ok(r) => r,
                Err(o) => return o,
            };
            let enabled = assemble_algorithms(&r.value, default);
            let found: Vec<String> = enabled
                .iter()
                .filter(|a| {
                    let a = a.to_ascii_lowercase();
                    patterns.iter().any(|p| wildcard_match(&a, &p.to_ascii_lowercase()))
                })
                .cloned()
                .collect();
            let mut o = Outcome::verdict(found.is_empty())
                .observed(json!({"enabled": enabled, "weak": found}))
                .expected(format!("none matching {}", patterns.join(", ")))
                .evidence(&r.source, r.describe(display));
            if r.origin == Origin::Configured && r.value.starts_with(['+', '-', '^']) {
                o = o.evidence(
                    &r.source,
                    format!("{display} modifies the OpenSSH default list; resulting list: {}", enabled.join(",")),
                );
            }
            if found.is_empty() {
                o
            } else {
                o.evidence(&r.source, format!("weak {display} enabled: {}", found.join(", ")))
            }
        })
    })
    .param(ParamSpec::list("weak", weak, "Patterns (OpenSSH wildcards * and ?) of algorithms considered weak"))
    .rationale(rationale)
    .remediation(format!(
        "Remove the weak algorithms, e.g. `{display} -{}` in /etc/ssh/sshd_config (before any Include that sets {display} first), then reload sshd and check with `sshd -T | grep -i {keyword}`.",
        weak.join(",")
    ))
    .refs(refs.iter().cloned())
}

/// Config files: owned by root and not writable by group or others.
fn config_permissions() -> Check {
    Check::new(
        "ssh.config_permissions",
        "sshd configuration files are root:root with mode 0600 or stricter",
        Severity::Medium,
        |facts, _p| {
            let host = facts.host();
            with_config(facts, |cfg| {
                let files = match &cfg.files {
                    Ok(f) => f,
                    Err(e) => return Outcome::error(format!("the sshd configuration files are unknown: {e}")),
                };
                let mut bad = Vec::new();
                let mut o = Outcome::pass();
                for f in files {
                    let m = match host.metadata(f) {
                        Ok(m) => m,
                        Err(e) => return Outcome::error(e.to_string()),
                    };
                    o = o.evidence(f, format!("owner uid {} gid {}, mode {:04o}", m.uid, m.gid, m.mode));
                    if m.uid != 0 || m.gid != 0 {
                        bad.push(format!("{f} is owned by uid {} gid {}, not root:root", m.uid, m.gid));
                    }
                    if m.mode & 0o077 != 0 {
                        bad.push(format!("{f} has mode {:04o}, not 0600 or stricter", m.mode & 0o7777));
                    }
                }
                o.status = if bad.is_empty() { Status::Pass } else { Status::Fail };
                let o = o.observed(files.len()).expected("owner root:root, mode 0600 or stricter");
                if bad.is_empty() { o } else { o.note(bad.join("; ")) }
            })
        },
    )
    .rationale(
        "Whoever can write the sshd configuration decides who logs in as root, and reading it maps the attack surface. \
         As CIS Debian 12 5.1.1 audits it, /etc/ssh/sshd_config and every included file must be owned by root:root with \
         mode 0600 or stricter (Debian installs sshd_config 0644, which fails).",
    )
    .remediation(
        "chown root:root /etc/ssh/sshd_config /etc/ssh/sshd_config.d/*.conf && chmod 0600 /etc/ssh/sshd_config /etc/ssh/sshd_config.d/*.conf",
    )
    .refs([cis_debian("5.1.1"), anssi("R50")])
}

/// The name of a group id from /etc/group.
fn group_name(host: &Host, gid: u32) -> Result<Option<String>, String> {
    let text = host.read_text_limited("/etc/group", GROUP_FILE_LIMIT).map_err(|e| e.to_string())?;
    Ok(text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == gid.to_string()).then(|| name.to_string())
    }))
}

/// The host private keys sshd uses: the configured `HostKey`s, else every
/// `/etc/ssh/ssh_host_*_key` (sshd's defaults are among them).
fn host_keys(host: &Host, cfg: &EffectiveConfig) -> Result<(Vec<String>, Option<String>), String> {
    let configured: Vec<String> = cfg
        .all("hostkey")
        .iter()
        .map(|s| if s.value.starts_with('/') { s.value.clone() } else { format!("/{}", s.value) })
        .collect();
    if !configured.is_empty() {
        return Ok((configured, None));
    }
    let mut keys: Vec<String> = host
        .read_dir_optional("/etc/ssh")
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|e| e.name.starts_with("ssh_host_") && e.name.ends_with("_key"))
        .map(|e| e.path)
        .collect();
    for d in DEFAULT_HOST_KEYS {
        if !keys.iter().any(|k| k == d) {
            keys.push(d.to_string());
        }
    }
    Ok((keys, Some("no HostKey configured: checking sshd's default keys and every /etc/ssh/ssh_host_*_key".into())))
}

/// Groups CIS 5.1.2 accepts on host private keys (read by ssh-keysign).
const KEY_GROUPS: [&str; 3] = ["ssh_keys", "_ssh", "ssh"];

fn host_key_permissions() -> Check {
    Check::new(
        "ssh.host_key_permissions",
        "SSH host private keys are owned by root and readable by root (or a key group) only",
        Severity::High,
        |facts, _p| {
            let host = facts.host();
            with_config(facts, |cfg| {
                let (keys, note) = match host_keys(host, cfg) {
                    Ok(k) => k,
                    Err(e) => return Outcome::error(e),
                };
                let mut o = Outcome::pass();
                if let Some(n) = note {
                    o = o.evidence("/etc/ssh", n);
                }
                let mut bad = Vec::new();
                let mut checked = Vec::new();
                for k in &keys {
                    let m = match host.metadata(k) {
                        Ok(m) => m,
                        Err(e) if e.is_not_found() => {
                            o = o.evidence(k, "does not exist (sshd skips a missing host key)");
                            continue;
                        }
                        Err(e) => return Outcome::error(e.to_string()),
                    };
                    o = o.evidence(
                        k,
                        format!("{}, owner uid {} gid {}, mode {:04o}", m.kind.describe(), m.uid, m.gid, m.mode),
                    );
                    checked.push(k.clone());
                    if m.kind != FileKind::File {
                        bad.push(format!("{k} is a {}, not a regular file", m.kind.describe()));
                        continue;
                    }
                    if m.uid != 0 {
                        bad.push(format!("{k} is owned by uid {}, not root", m.uid));
                    }
                    // RHEL-family systems ship keys 0640 root:ssh_keys, read by
                    // the unprivileged ssh-keysign helper; CIS 5.1.2 accepts
                    // the key groups ssh_keys, _ssh and ssh.
                    let key_group = if m.gid == 0 {
                        false
                    } else {
                        match group_name(host, m.gid) {
                            Ok(Some(g)) => KEY_GROUPS.contains(&g.as_str()),
                            Ok(None) => false,
                            Err(e) => return Outcome::error(format!("{k}: cannot name group {}: {e}", m.gid)),
                        }
                    };
                    if m.gid != 0 && !key_group {
                        bad.push(format!(
                            "{k} has group {} (expected root, or a key group: {})",
                            m.gid,
                            KEY_GROUPS.join(", ")
                        ));
                    }
                    let allowed = if key_group { 0o137 } else { 0o177 };
                    if m.mode & allowed != 0 {
                        bad.push(format!(
                            "{k} has mode {:04o} (expected 0600 or stricter, or 0640 with a key group)",
                            m.mode & 0o7777
                        ));
                    }
                }
                if checked.is_empty() {
                    return Outcome::not_applicable("no SSH host private key exists (sshd cannot start without one)")
                        .with_evidence(o.evidence);
                }
                o.status = if bad.is_empty() { Status::Pass } else { Status::Fail };
                let o = o.observed(json!({"keys": checked})).expected(
                    "owner root, group root with mode 0600, or a key group (ssh_keys, _ssh, ssh) with mode 0640",
                );
                if bad.is_empty() { o } else { o.note(bad.join("; ")) }
            })
        },
    )
    .rationale(
        "A readable host private key lets its reader impersonate the node to every administrator (man-in-the-middle).",
    )
    .remediation("chown root:root /etc/ssh/ssh_host_*_key && chmod 0600 /etc/ssh/ssh_host_*_key")
    .refs([cis_debian("5.1.2"), anssi("R50")])
}

/// All ssh checks.
pub fn checks() -> Vec<Check> {
    [
        permit_root_login(),
        value_check(
            "password_authentication",
            "Password authentication is disabled",
            Severity::High,
            "PasswordAuthentication",
            "passwordauthentication",
            &["no"],
            &[],
            "An internet-reachable node is brute-forced continuously; with keys only, guessing is hopeless. The OpenSSH default is yes.",
        ),
        value_check(
            "permit_empty_passwords",
            "Accounts with empty passwords cannot log in over SSH",
            Severity::High,
            "PermitEmptyPasswords",
            "permitemptypasswords",
            &["no"],
            &[cis_debian("5.1.19"), ssg("sshd_disable_empty_passwords")],
            "An account with an empty password would be open to anyone who can reach port 22.",
        ),
        value_check(
            "kbd_interactive_authentication",
            "Keyboard-interactive authentication is disabled",
            Severity::Medium,
            "KbdInteractiveAuthentication",
            "kbdinteractiveauthentication",
            &["no"],
            &[],
            "With UsePAM (Debian's default) keyboard-interactive is password authentication through PAM: leaving it on defeats \
             `PasswordAuthentication no`. ChallengeResponseAuthentication is its deprecated alias. The OpenSSH default is yes.",
        ),
        x11_forwarding(),
        tcp_forwarding(),
        max_auth_tries(),
        login_grace_time(),
        client_alive(),
        value_check(
            "hostbased_authentication",
            "Host-based authentication is disabled",
            Severity::Medium,
            "HostbasedAuthentication",
            "hostbasedauthentication",
            &["no"],
            &[cis_debian("5.1.10")],
            "Host-based authentication trusts whatever the client host claims about its users: one compromised host opens the node.",
        ),
        value_check(
            "ignore_rhosts",
            ".rhosts and .shosts files are ignored",
            Severity::Medium,
            "IgnoreRhosts",
            "ignorerhosts",
            &["yes"],
            &[cis_debian("5.1.11"), ssg("sshd_disable_rhosts")],
            "User-controlled .rhosts/.shosts files would let users grant host-based access on their own.",
        ),
        value_check(
            "permit_user_environment",
            "Users cannot pass environment variables to sshd",
            Severity::Medium,
            "PermitUserEnvironment",
            "permituserenvironment",
            &["no"],
            &[cis_debian("5.1.21"), ssg("sshd_do_not_permit_user_env")],
            "~/.ssh/environment and environment= options can set LD_PRELOAD and similar variables to bypass forced commands and restrictions.",
        ),
        log_level(),
        algorithm_check(
            AlgorithmSpec {
                id: "ciphers",
                title: "sshd offers no weak ciphers",
                display: "Ciphers",
                keyword: "ciphers",
                default: &DEFAULT_CIPHERS,
                weak: &["*-cbc", "*-cbc@*", "3des*", "arcfour*", "blowfish*", "cast128*"],
            },
            &[cis_debian("5.1.6")],
            "CBC modes are open to plaintext-recovery attacks on SSH (and Terrapin-style prefix truncation with encrypt-then-MAC), \
             3DES/Blowfish/CAST128 have 64-bit blocks (Sweet32) and RC4 (arcfour) is broken.",
        ),
        algorithm_check(
            AlgorithmSpec {
                id: "macs",
                title: "sshd offers no weak MACs",
                display: "MACs",
                keyword: "macs",
                default: &DEFAULT_MACS,
                weak: &["hmac-md5*", "hmac-ripemd160*", "hmac-sha1-96*", "umac-64*", "umac-128-etm@openssh.com"],
            },
            &[cis_debian("5.1.15")],
            "MD5 and RIPEMD-160 MACs and 64- or 96-bit tags (umac-64, *-96) are too weak. The list is CIS Debian 12 5.1.15's \
             (which also names umac-128-etm); plain HMAC-SHA1 is not on it. The OpenSSH default list contains umac-64, so an \
             unconfigured server fails; add patterns to `weak` (e.g. hmac-sha1*) to be stricter.",
        ),
        algorithm_check(
            AlgorithmSpec {
                id: "kex_algorithms",
                title: "sshd offers no weak key exchange algorithms",
                display: "KexAlgorithms",
                keyword: "kexalgorithms",
                default: &DEFAULT_KEX,
                weak: &[
                    "diffie-hellman-group1-sha1",
                    "diffie-hellman-group14-sha1",
                    "diffie-hellman-group-exchange-sha1",
                ],
            },
            &[cis_debian("5.1.12")],
            "The SHA-1 Diffie-Hellman exchanges (and the 1024-bit group1) are within reach of well-funded attackers (Logjam); \
             curve25519, sntrup761x25519 and the SHA-2 DH groups are not.",
        ),
    ]
    .into_iter()
    .map(|mut c| {
        c.rationale = format!("{} {EFFECTIVE_RATIONALE}", c.rationale);
        c
    })
    .chain([config_permissions(), host_key_permissions()])
    .collect()
}

/// Said in the rationale of every check that judges an sshd keyword.
const EFFECTIVE_RATIONALE: &str = "Judged on the effective configuration, as CIS Debian 12 audits it with `sshd -T`: the output of `sshd -T -C` for a remote root login when sshd can be run, otherwise the parsed configuration (Include, Match, first value wins) with OpenSSH's defaults, so an unset keyword whose default is acceptable passes. (SSG's sshd rules require an explicit line in /etc/ssh/sshd_config instead; where both are cited, the CIS reading applies.)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::facts::sshd::{SSHD_CONFIG, sshd_t_args};
    use crate::audit::host::RecordedRunner;
    use crate::testutil::{chmod, eval, eval_with, offline, root_with, write};
    use serde_json::Value;

    const HARDENED: &str = "\
Include /etc/ssh/sshd_config.d/*.conf
PermitRootLogin no
PasswordAuthentication no
PermitEmptyPasswords no
KbdInteractiveAuthentication no
X11Forwarding no
AllowTcpForwarding no
MaxAuthTries 3
LoginGraceTime 1m
ClientAliveInterval 5m
ClientAliveCountMax 2
HostbasedAuthentication no
IgnoreRhosts yes
PermitUserEnvironment no
LogLevel VERBOSE
Ciphers -*-cbc
MACs hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com
KexAlgorithms -diffie-hellman-group14-sha256
HostKey /etc/ssh/ssh_host_ed25519_key
";

    const ALL: [&str; 18] = [
        "ssh.permit_root_login",
        "ssh.password_authentication",
        "ssh.permit_empty_passwords",
        "ssh.kbd_interactive_authentication",
        "ssh.x11_forwarding",
        "ssh.tcp_forwarding",
        "ssh.max_auth_tries",
        "ssh.login_grace_time",
        "ssh.client_alive",
        "ssh.hostbased_authentication",
        "ssh.ignore_rhosts",
        "ssh.permit_user_environment",
        "ssh.log_level",
        "ssh.ciphers",
        "ssh.macs",
        "ssh.kex_algorithms",
        "ssh.config_permissions",
        "ssh.host_key_permissions",
    ];

    fn hardened_root(extra: &[(&str, &str)]) -> tempfile::TempDir {
        let mut files = vec![(SSHD_CONFIG, HARDENED), ("/etc/ssh/ssh_host_ed25519_key", "PRIVATE")];
        files.extend_from_slice(extra);
        let d = root_with(&files);
        chmod(d.path(), SSHD_CONFIG, 0o600);
        chmod(d.path(), "/etc/ssh/ssh_host_ed25519_key", 0o600);
        d
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn every_ssh_check_is_registered_and_hardened_config_passes() {
        let ids: Vec<String> = checks().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ALL);
        let d = hardened_root(&[]);
        let h = offline(d.path());
        for id in ALL {
            if !is_root() && matches!(id, "ssh.config_permissions" | "ssh.host_key_permissions") {
                continue; // fixture files cannot be root-owned
            }
            let o = eval(id, &h);
            assert_eq!(o.status, Status::Pass, "{id}: {o:?}");
            // Every outcome says the parser was used offline.
            assert!(o.evidence.iter().any(|e| e.detail.contains("offline root")), "{id}");
        }
    }

    #[test]
    fn defaults_decide_an_empty_config() {
        let d = root_with(&[(SSHD_CONFIG, "# nothing\n")]);
        let h = offline(d.path());
        let o = eval("ssh.password_authentication", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "OpenSSH default");
        assert!(o.evidence[0].detail.contains("OpenSSH default yes"));
        assert_eq!(eval("ssh.permit_root_login", &h).status, Status::Fail, "prohibit-password is not enough");
        assert_eq!(
            eval_with("ssh.permit_root_login", &h, &[("allow_prohibit_password", Value::Bool(true))]).status,
            Status::Pass
        );
        assert_eq!(eval("ssh.permit_empty_passwords", &h).status, Status::Pass);
        assert_eq!(eval("ssh.kbd_interactive_authentication", &h).status, Status::Fail);
        assert_eq!(eval("ssh.x11_forwarding", &h).status, Status::Pass);
        assert_eq!(eval("ssh.tcp_forwarding", &h).status, Status::Fail);
        assert_eq!(eval("ssh.max_auth_tries", &h).status, Status::Fail);
        assert_eq!(eval("ssh.login_grace_time", &h).status, Status::Fail);
        assert_eq!(eval("ssh.client_alive", &h).status, Status::Fail);
        assert_eq!(eval("ssh.hostbased_authentication", &h).status, Status::Pass);
        assert_eq!(eval("ssh.ignore_rhosts", &h).status, Status::Pass);
        assert_eq!(eval("ssh.permit_user_environment", &h).status, Status::Pass);
        assert_eq!(eval("ssh.log_level", &h).status, Status::Pass);
        assert_eq!(eval("ssh.ciphers", &h).status, Status::Pass);
        let o = eval("ssh.macs", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(
            o.observed.unwrap()["weak"],
            serde_json::json!(["umac-64-etm@openssh.com", "umac-128-etm@openssh.com", "umac-64@openssh.com"])
        );
        assert_eq!(eval("ssh.kex_algorithms", &h).status, Status::Pass);
        // No key files at all: nothing to judge.
        assert_eq!(eval("ssh.host_key_permissions", &h).status, Status::NotApplicable);
    }

    #[test]
    fn not_installed_and_undecidable() {
        let d = root_with(&[]);
        let h = offline(d.path());
        for id in ALL {
            let o = eval(id, &h);
            assert_eq!(o.status, Status::NotApplicable, "{id}");
            assert_eq!(o.reason.as_deref(), Some("sshd is not installed"));
        }
        let d = root_with(&[(SSHD_CONFIG, "Include loop.conf\n"), ("/etc/ssh/loop.conf", "Include loop.conf\n")]);
        let h = offline(d.path());
        for id in ALL {
            let o = eval(id, &h);
            assert_eq!(o.status, Status::Error, "{id}");
            assert!(o.reason.unwrap().contains("Include loop"), "{id}");
        }
        let d = root_with(&[]);
        write(d.path(), SSHD_CONFIG, &[0xff, 0xfe, 0x00]);
        let o = eval("ssh.permit_root_login", &offline(d.path()));
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains(SSHD_CONFIG));
    }

    #[test]
    fn match_blocks_for_internet_root_logins_decide() {
        let d = hardened_root(&[(
            "/etc/ssh/sshd_config.d/10-admin.conf",
            "Match Address 10.0.0.0/8\n  PasswordAuthentication yes\nMatch User root\n  PermitRootLogin yes\n",
        )]);
        let h = offline(d.path());
        assert_eq!(eval("ssh.password_authentication", &h).status, Status::Pass, "internal-only relaxation");
        let o = eval("ssh.permit_root_login", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/etc/ssh/sshd_config.d/10-admin.conf:4");
    }

    #[test]
    fn sshd_t_output_is_used_when_recorded() {
        let d = hardened_root(&[("/usr/sbin/sshd", "")]);
        let args = sshd_t_args();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        write(
            d.path(),
            &format!("/.commands/{}", RecordedRunner::key("sshd", &refs)),
            b"permitrootlogin without-password\nciphers aes128-cbc,aes256-gcm@openssh.com\nlogingracetime 120\nhostkey /etc/ssh/ssh_host_ed25519_key\n",
        );
        let h = offline(d.path());
        let o = eval("ssh.permit_root_login", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.evidence[0].source.starts_with("sshd -T -C user=root"));
        let o = eval("ssh.ciphers", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.observed.unwrap()["weak"], serde_json::json!(["aes128-cbc"]));
        assert_eq!(eval("ssh.login_grace_time", &h).status, Status::Fail);
    }

    #[test]
    fn forwarding_checks_and_disable_forwarding() {
        let d = root_with(&[(SSHD_CONFIG, "X11Forwarding yes\nAllowTcpForwarding local\n")]);
        let h = offline(d.path());
        assert_eq!(eval("ssh.x11_forwarding", &h).status, Status::Fail);
        assert_eq!(eval("ssh.tcp_forwarding", &h).status, Status::Fail);
        let allow = serde_json::json!(["no", "local"]);
        assert_eq!(eval_with("ssh.tcp_forwarding", &h, &[("allowed", allow)]).status, Status::Pass);
        let d = root_with(&[(SSHD_CONFIG, "DisableForwarding yes\nX11Forwarding yes\n")]);
        let h = offline(d.path());
        assert_eq!(eval("ssh.x11_forwarding", &h).status, Status::Pass);
        assert_eq!(eval("ssh.tcp_forwarding", &h).status, Status::Pass);
    }

    #[test]
    fn numeric_and_time_checks() {
        let cfg = |s: &str| root_with(&[(SSHD_CONFIG, s)]);
        let d = cfg("MaxAuthTries 5\nLoginGraceTime 1m30s\nClientAliveInterval 300\nClientAliveCountMax 0\n");
        let h = offline(d.path());
        assert_eq!(eval("ssh.max_auth_tries", &h).status, Status::Fail);
        assert_eq!(eval_with("ssh.max_auth_tries", &h, &[("max", Value::from(5))]).status, Status::Pass);
        let o = eval("ssh.login_grace_time", &h);
        assert_eq!((o.status, o.observed), (Status::Fail, Some(Value::from(90))));
        assert_eq!(eval_with("ssh.login_grace_time", &h, &[("max_seconds", Value::from(90))]).status, Status::Pass);
        let o = eval("ssh.client_alive", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("never disconnects"));
        let d = cfg("LoginGraceTime 0\nClientAliveInterval 10m\nClientAliveCountMax 3\n");
        let h = offline(d.path());
        let o = eval("ssh.login_grace_time", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("no limit"));
        // CIS 5.1.7 only wants both values above 0; limits are the profile's.
        assert_eq!(eval("ssh.client_alive", &h).status, Status::Pass);
        assert_eq!(eval_with("ssh.client_alive", &h, &[("max_interval", Value::from(300))]).status, Status::Fail);
        assert_eq!(eval_with("ssh.client_alive", &h, &[("max_interval", Value::from(600))]).status, Status::Pass);
    }

    #[test]
    fn value_checks_fail_on_bad_values() {
        let d = root_with(&[(
            SSHD_CONFIG,
            "PermitEmptyPasswords yes\nHostbasedAuthentication yes\nIgnoreRhosts no\nPermitUserEnvironment LANG,LC_*\nLogLevel DEBUG3\nKbdInteractiveAuthentication no\nPasswordAuthentication no\n",
        )]);
        let h = offline(d.path());
        for id in [
            "ssh.permit_empty_passwords",
            "ssh.hostbased_authentication",
            "ssh.ignore_rhosts",
            "ssh.permit_user_environment",
            "ssh.log_level",
        ] {
            assert_eq!(eval(id, &h).status, Status::Fail, "{id}");
        }
        assert_eq!(eval("ssh.kbd_interactive_authentication", &h).status, Status::Pass);
        assert_eq!(eval("ssh.password_authentication", &h).status, Status::Pass);
    }

    #[test]
    fn algorithm_modifiers_relative_to_defaults() {
        let d = root_with(&[(
            SSHD_CONFIG,
            "Ciphers +aes256-cbc\nMACs -hmac-sha1*,umac-64*,umac-128-etm*\nKexAlgorithms ^diffie-hellman-group14-sha1\n",
        )]);
        let h = offline(d.path());
        let o = eval("ssh.ciphers", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.evidence.iter().any(|e| e.detail.contains("weak Ciphers enabled: aes256-cbc")));
        assert_eq!(eval("ssh.macs", &h).status, Status::Pass);
        assert_eq!(eval("ssh.kex_algorithms", &h).status, Status::Fail);
        let relaxed = serde_json::json!(["diffie-hellman-group1-sha1"]);
        assert_eq!(eval_with("ssh.kex_algorithms", &h, &[("weak", relaxed)]).status, Status::Pass);
    }

    #[test]
    fn config_permissions() {
        let d = hardened_root(&[("/etc/ssh/sshd_config.d/50-x.conf", "MaxAuthTries 2\n")]);
        chmod(d.path(), "/etc/ssh/sshd_config.d/50-x.conf", 0o600);
        let h = offline(d.path());
        if is_root() {
            let o = eval("ssh.config_permissions", &h);
            assert_eq!(o.status, Status::Pass, "{o:?}");
        }
        // Debian's 0644 fails CIS 5.1.1.
        chmod(d.path(), "/etc/ssh/sshd_config.d/50-x.conf", 0o644);
        let o = eval("ssh.config_permissions", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("50-x.conf has mode 0644, not 0600 or stricter"));
        if is_root() {
            chmod(d.path(), "/etc/ssh/sshd_config.d/50-x.conf", 0o600);
            std::os::unix::fs::chown(d.path().join("etc/ssh/sshd_config"), Some(1000), Some(0)).unwrap();
            let o = eval("ssh.config_permissions", &h);
            assert_eq!(o.status, Status::Fail);
            assert!(o.reason.unwrap().contains("owned by uid 1000 gid 0"));
            std::os::unix::fs::chown(d.path().join("etc/ssh/sshd_config"), Some(0), Some(1000)).unwrap();
            let o = eval("ssh.config_permissions", &h);
            assert_eq!(o.status, Status::Fail, "group must be root");
        }
    }

    #[test]
    fn config_permissions_error_when_files_unknown() {
        // sshd -T worked but the parser cannot follow the files.
        let d = root_with(&[(SSHD_CONFIG, "Include a\n"), ("/etc/ssh/a", "Include a\n")]);
        let args = sshd_t_args();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        write(d.path(), &format!("/.commands/{}", RecordedRunner::key("sshd", &refs)), b"permitrootlogin no\n");
        let h = offline(d.path());
        assert_eq!(eval("ssh.permit_root_login", &h).status, Status::Pass);
        let o = eval("ssh.config_permissions", &h);
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("Include loop"));
    }

    #[test]
    fn host_key_permissions() {
        let d = hardened_root(&[]);
        let h = offline(d.path());
        chmod(d.path(), "/etc/ssh/ssh_host_ed25519_key", 0o644);
        let o = eval("ssh.host_key_permissions", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("mode 0644"));
        // 0640 is accepted only with group ssh_keys.
        chmod(d.path(), "/etc/ssh/ssh_host_ed25519_key", 0o640);
        write(d.path(), "/etc/group", b"root:x:0:\nssh_keys:x:998:\n");
        assert_eq!(eval("ssh.host_key_permissions", &h).status, Status::Fail);
        if is_root() {
            std::os::unix::fs::chown(d.path().join("etc/ssh/ssh_host_ed25519_key"), Some(0), Some(998)).unwrap();
            assert_eq!(eval("ssh.host_key_permissions", &h).status, Status::Pass);
            std::os::unix::fs::chown(d.path().join("etc/ssh/ssh_host_ed25519_key"), Some(1), Some(998)).unwrap();
            assert_eq!(eval("ssh.host_key_permissions", &h).status, Status::Fail);
            // Debian's `_ssh` group is a key group too (CIS 5.1.2).
            write(
                d.path(),
                "/etc/group",
                b"root:x:0:
_ssh:x:101:
users:x:100:
",
            );
            std::os::unix::fs::chown(d.path().join("etc/ssh/ssh_host_ed25519_key"), Some(0), Some(101)).unwrap();
            assert_eq!(eval("ssh.host_key_permissions", &h).status, Status::Pass);
            // 0600 but owned by an ordinary group: fails.
            chmod(d.path(), "/etc/ssh/ssh_host_ed25519_key", 0o600);
            std::os::unix::fs::chown(d.path().join("etc/ssh/ssh_host_ed25519_key"), Some(0), Some(100)).unwrap();
            let o = eval("ssh.host_key_permissions", &h);
            assert_eq!(o.status, Status::Fail);
            assert!(o.reason.unwrap().contains("has group 100"));
        }
    }

    #[test]
    fn host_keys_default_to_existing_files() {
        let d = root_with(&[
            (SSHD_CONFIG, "PermitRootLogin no\n"),
            ("/etc/ssh/ssh_host_rsa_key", "k"),
            ("/etc/ssh/ssh_host_rsa_key.pub", "k"),
            ("/etc/ssh/ssh_host_dsa_key", "k"),
        ]);
        chmod(d.path(), "/etc/ssh/ssh_host_rsa_key", 0o600);
        chmod(d.path(), "/etc/ssh/ssh_host_dsa_key", 0o604);
        let o = eval("ssh.host_key_permissions", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        let reason = o.reason.unwrap();
        assert!(reason.contains("ssh_host_dsa_key has mode 0604"), "{reason}");
        assert!(!reason.contains(".pub"));
        assert!(o.evidence.iter().any(|e| e.detail.contains("no HostKey configured")));
    }
}
