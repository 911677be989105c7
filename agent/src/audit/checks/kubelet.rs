//! Kubelet and kube-proxy checks (families `kubelet`, `kube_proxy`): the 25
//! worker-node controls of the CIS Kubernetes Benchmark v1.12 (4.1.1 to
//! 4.3.1), judged on the effective configuration the kubelet really runs
//! with (see [`crate::audit::facts::kubelet`]), plus `protectKernelDefaults`,
//! certificate expiry and configuration drift.
//!
//! Every finding names the value it judged and its provenance (flag, file or
//! default). When no kubelet is found, every check here is `not_applicable`
//! with the list of places searched.
//!
//! Certificate expiry has two severities (fail under 7 days, medium under 30
//! days). A check has one severity, so each certificate has two checks: a
//! high `*_cert_expiry` (threshold 7 days) and a medium `*_cert_expiring`
//! (threshold 30 days); both thresholds are parameters.

use serde_json::{Value, json};

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::kubelet::certs::{CertState, KubeletCerts};
use crate::audit::facts::kubelet::drift::{Change, KubeletDrift};
use crate::audit::facts::kubelet::{Component, ConfigState, Discovery, KubeProxyFacts, KubeletFacts, Setting, render};
use crate::audit::facts::sysctl::{Runtime, SysctlFacts, runtime};
use crate::audit::host::{FileKind, Host};
use crate::audit::model::{Outcome, Severity, cis_k8s};

/// TLS cipher suites the benchmark accepts (4.2.12).
pub const STRONG_CIPHERS: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
];

/// The sysctls `protectKernelDefaults: true` requires (the kubelet refuses
/// to start when they differ).
pub const KERNEL_DEFAULTS: &[(&str, &str)] =
    &[("vm.overcommit_memory", "1"), ("kernel.panic", "10"), ("kernel.panic_on_oops", "1")];

/// Run `f` on the kubelet, or not_applicable when there is none. The
/// discovery evidence is appended to whatever `f` returns.
fn with_kubelet(facts: &Facts<'_>, f: impl FnOnce(&Component) -> Outcome) -> Outcome {
    let k = facts.get::<KubeletFacts>();
    match &k.kubelet {
        None => Outcome::not_applicable(k.not_found_reason()),
        Some(c) => {
            let mut o = f(c);
            o.evidence.push(discovery_evidence(c, "kubelet"));
            o
        }
    }
}

fn discovery_evidence(c: &Component, what: &str) -> crate::audit::model::Evidence {
    let source = match &c.discovery {
        Discovery::Process { pid } => format!("/proc/{pid}/cmdline"),
        Discovery::Unit { path } | Discovery::WellKnown { path } => path.clone(),
    };
    let config = match &c.config {
        ConfigState::NotUsed => "no config file (command-line defaults apply)".to_string(),
        ConfigState::Loaded { path, drop_ins } if drop_ins.is_empty() => format!("config file {path}"),
        ConfigState::Loaded { path, drop_ins } => format!("config file {path} with drop-ins {}", drop_ins.join(", ")),
        ConfigState::Failed { path, .. } => format!("config file {path} (unusable)"),
    };
    let drop_ins = match c.service.as_ref().map(|s| &s.drop_ins) {
        Some(d) if !d.is_empty() => format!(" with drop-ins {}", d.join(", ")),
        _ => String::new(),
    };
    crate::audit::model::Evidence::new(
        source,
        format!("{what} found via {}{drop_ins}; {config}", c.discovery.describe()),
    )
}

/// The effective setting of a key, or the outcome to return instead.
fn setting(c: &Component, key: &str) -> Result<Option<Setting>, Outcome> {
    c.lookup(key).map(|s| s.cloned()).map_err(|e| Outcome::error(e.to_string()))
}

/// Not set by a flag or the file (the benchmark's "unset").
fn unset(provenance_kind: &str) -> bool {
    matches!(provenance_kind, "default" | "unset")
}

/// Judge one key: `judge(value, provenance kind)` returns pass/fail and an
/// optional note.
fn judge_key(
    facts: &Facts<'_>,
    key: &'static str,
    expected: &'static str,
    judge: impl Fn(&Value, &str) -> (bool, Option<String>),
) -> Outcome {
    with_kubelet(facts, |c| {
        let s = match setting(c, key) {
            Ok(s) => s,
            Err(o) => return o,
        };
        match s {
            Some(s) => {
                let (ok, note) = judge(&s.value, s.provenance.kind());
                let mut o = Outcome::verdict(ok)
                    .observed(json!({ key: s.value, "provenance": s.provenance.kind() }))
                    .expected(expected)
                    .with_evidence([s.evidence(key)]);
                if let Some(n) = note {
                    o = o.note(n);
                }
                o
            }
            None => {
                let (ok, note) = judge(&Value::Null, "unset");
                let mut o = Outcome::verdict(ok)
                    .observed(json!({ key: null, "provenance": "unset" }))
                    .expected(expected)
                    .evidence("effective configuration", format!("{key} is not set by any flag or file"));
                if let Some(n) = note {
                    o = o.note(n);
                }
                o
            }
        }
    })
}

fn mode_str(m: u32) -> String {
    format!("{m:04o}")
}

/// Mode check of one file: `Ok(None)` absent, `Ok(Some(ok, evidence))`, or
/// an error for something that is not a regular file or cannot be examined.
fn mode_of(host: &Host, path: &str, max: u32) -> Result<Option<(bool, String)>, String> {
    match host.metadata(path) {
        Ok(m) if m.kind != FileKind::File => Err(format!("{path}: is a {}, not a regular file", m.kind.describe())),
        Ok(m) => {
            Ok(Some((m.mode & !max == 0, format!("mode {} (allowed at most {})", mode_str(m.mode), mode_str(max)))))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn owner_of(host: &Host, path: &str) -> Result<Option<(bool, String)>, String> {
    match host.metadata(path) {
        Ok(m) if m.kind != FileKind::File => Err(format!("{path}: is a {}, not a regular file", m.kind.describe())),
        Ok(m) => Ok(Some((m.uid == 0 && m.gid == 0, format!("owner {}:{} (expected 0:0, root:root)", m.uid, m.gid)))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

type FileProbe = fn(&Host, &str, u32) -> Result<Option<(bool, String)>, String>;

fn owner_probe(host: &Host, path: &str, _max: u32) -> Result<Option<(bool, String)>, String> {
    owner_of(host, path)
}

/// Judge a set of files; `absent` is the outcome when none exists.
fn judge_files(host: &Host, paths: &[String], max: u32, probe: FileProbe, expected: &str, absent: Outcome) -> Outcome {
    let mut evidence = Vec::new();
    let mut failed = Vec::new();
    let mut errors = Vec::new();
    let mut seen = 0usize;
    for p in paths {
        match probe(host, p, max) {
            Ok(Some((ok, detail))) => {
                seen += 1;
                if !ok {
                    failed.push(p.clone());
                }
                evidence.push(crate::audit::model::Evidence::new(p, detail));
            }
            Ok(None) => evidence.push(crate::audit::model::Evidence::new(p, "does not exist")),
            Err(e) => errors.push(e),
        }
    }
    let observed = json!({ "files": paths, "failing": failed });
    if !failed.is_empty() {
        let mut o = Outcome::fail().observed(observed).expected(expected).with_evidence(evidence);
        if !errors.is_empty() {
            o = o.note(errors.join("; "));
        }
        return o;
    }
    if !errors.is_empty() {
        return Outcome::error(errors.join("; ")).observed(observed).with_evidence(evidence);
    }
    if seen == 0 {
        return absent.with_evidence(evidence);
    }
    Outcome::pass().observed(observed).expected(expected).with_evidence(evidence)
}

/// A path-valued setting or flag of the kubelet: `(path, evidence)`.
fn path_of(c: &Component, key: &str) -> PathResult {
    let s = setting(c, key)?;
    Ok(s.and_then(|s| {
        let p = s.value.as_str().filter(|v| !v.is_empty())?.to_string();
        Some((p, s.evidence(key)))
    }))
}

fn kubeconfig_path(host: &Host, c: &Component) -> PathResult {
    match c.flag("kubeconfig") {
        Err(e) => Err(Outcome::error(e.to_string())),
        Ok(Some(f)) if !f.value.is_empty() => Ok(Some((
            f.value.clone(),
            crate::audit::model::Evidence::new(&f.origin, format!("--kubeconfig={}", f.value)),
        ))),
        Ok(_) => {
            // No --kubeconfig: standalone mode, unless a well-known file exists.
            for p in ["/etc/kubernetes/kubelet.conf", "/var/lib/kubelet/kubeconfig"] {
                if host.symlink_metadata(p).is_ok() {
                    return Ok(Some((
                        p.to_string(),
                        crate::audit::model::Evidence::new(p, "no --kubeconfig flag: well-known path"),
                    )));
                }
            }
            Ok(None)
        }
    }
}

/// A path the kubelet uses, with the evidence of where it was configured.
type PathResult = Result<Option<(String, crate::audit::model::Evidence)>, Outcome>;

fn kubelet_file_check(
    facts: &Facts<'_>,
    which: fn(&Host, &Component) -> PathResult,
    what: &'static str,
    max: u32,
    probe: FileProbe,
    expected: &'static str,
    missing_is_error: bool,
) -> Outcome {
    let host = facts.host();
    with_kubelet(facts, |c| {
        let (path, ev) = match which(host, c) {
            Err(o) => return o,
            Ok(None) => return Outcome::not_applicable(format!("the kubelet uses no {what}")),
            Ok(Some(x)) => x,
        };
        let absent = if missing_is_error {
            Outcome::error(format!("{path}: the {what} the kubelet is configured with does not exist"))
        } else {
            Outcome::not_applicable(format!("{path}: the {what} does not exist"))
        };
        judge_files(host, std::slice::from_ref(&path), max, probe, expected, absent).with_evidence([ev])
    })
}

fn config_file_of(_host: &Host, c: &Component) -> PathResult {
    Ok(c.config_path().map(|p| {
        let origin = c.flags.get("config").map(|f| f.origin.clone()).unwrap_or_else(|| p.to_string());
        (p.to_string(), crate::audit::model::Evidence::new(origin, format!("kubelet config file {p}")))
    }))
}

fn client_ca_of(_host: &Host, c: &Component) -> PathResult {
    path_of(c, "authentication.x509.clientCAFile")
}

fn unit_files_check(facts: &Facts<'_>, max: u32, probe: FileProbe, expected: &'static str) -> Outcome {
    let host = facts.host();
    with_kubelet(facts, |c| {
        let files = c.service.as_ref().map(|s| s.files()).unwrap_or_default();
        let absent = Outcome::pass()
            .note("no kubelet.service file or drop-in exists, so there is nothing to protect")
            .expected(expected);
        judge_files(host, &files, max, probe, expected, absent)
    })
}

/// Go duration that is zero (`0`, `0s`, `0h0m0s`).
fn duration_is_zero(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_digit() || c.is_ascii_alphabetic() || c == '.')
        && s.chars().filter(|c| c.is_ascii_digit()).all(|c| c == '0')
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => crate::audit::facts::kubelet::flags::parse_bool(s),
        _ => None,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn cert_check(facts: &Facts<'_>, params: &Params, serving: bool) -> Outcome {
    let k = facts.get::<KubeletFacts>();
    if k.kubelet.is_none() {
        return Outcome::not_applicable(k.not_found_reason());
    }
    let certs = facts.get::<KubeletCerts>();
    let state = if serving { &certs.serving } else { &certs.client };
    let min_days = params.int("min_days");
    match state {
        CertState::None(why) => Outcome::not_applicable(why.clone()),
        CertState::Error(e) => Outcome::error(e.to_string()),
        CertState::Found(c) => {
            let now = chrono::Utc::now().timestamp();
            let secs_left = c.not_after.saturating_sub(now);
            let days_left = secs_left.div_euclid(86_400);
            let not_after = chrono::DateTime::from_timestamp(c.not_after, 0)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| c.not_after.to_string());
            Outcome::verdict(secs_left >= min_days.saturating_mul(86_400))
                .observed(json!({ "not_after": not_after, "days_left": days_left, "subject": c.subject }))
                .expected(format!("valid for at least {min_days} more days"))
                .evidence(&c.source, format!("{}; {}; notAfter {not_after} ({days_left} days left)", c.why, c.subject))
        }
    }
}

fn sysctl_state(facts: &Facts<'_>, key: &str, want: &str) -> (Result<bool, String>, String, String) {
    let host = facts.host();
    let cfg = &facts.get::<SysctlFacts>().config;
    let configured = cfg.configured(key);
    match runtime(host, key) {
        Runtime::Value(v) => {
            let ok = v == want;
            (Ok(ok), crate::audit::facts::sysctl::proc_path(key), format!("runtime {key} = {v}"))
        }
        Runtime::Unreadable(e) => {
            (Err(e.to_string()), crate::audit::facts::sysctl::proc_path(key), "unreadable".into())
        }
        Runtime::Absent => (
            Err(format!("the running kernel has no {key}")),
            crate::audit::facts::sysctl::proc_path(key),
            "absent".into(),
        ),
        Runtime::Offline => match configured {
            Some(a) => (Ok(a.value == want), a.source.clone(), format!("configured {key} = {}", a.value)),
            None if !cfg.unreadable.is_empty() => (
                Err(format!(
                    "{key}: a sysctl file is unreadable: {}",
                    cfg.unreadable.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
                )),
                "sysctl.d".into(),
                "unknown".into(),
            ),
            None => (
                Ok(false),
                "sysctl.d".into(),
                format!("{key} is not configured: the kernel default (not {want}) applies at boot"),
            ),
        },
    }
}

fn protect_kernel_defaults(facts: &Facts<'_>) -> Outcome {
    with_kubelet(facts, |c| {
        let s = match setting(c, "protectKernelDefaults") {
            Ok(s) => s,
            Err(o) => return o,
        };
        let enabled = s.as_ref().and_then(|s| as_bool(&s.value)).unwrap_or(false);
        let mut evidence: Vec<_> = s.iter().map(|s| s.evidence("protectKernelDefaults")).collect();
        let mut observed = serde_json::Map::new();
        observed.insert("protectKernelDefaults".into(), json!(enabled));
        let mut bad = Vec::new();
        let mut errors = Vec::new();
        for (key, want) in KERNEL_DEFAULTS {
            let (ok, source, detail) = sysctl_state(facts, key, want);
            evidence.push(crate::audit::model::Evidence::new(source, detail.clone()));
            observed.insert((*key).into(), json!(detail));
            match ok {
                Ok(true) => {}
                Ok(false) => bad.push(format!("{key} should be {want}")),
                Err(e) => errors.push(e),
            }
        }
        let expected = json!({ "protectKernelDefaults": true, "vm.overcommit_memory": "1", "kernel.panic": "10", "kernel.panic_on_oops": "1" });
        if !enabled {
            return Outcome::fail().observed(Value::Object(observed)).expected(expected).with_evidence(evidence);
        }
        if !bad.is_empty() {
            return Outcome::fail()
                .observed(Value::Object(observed))
                .expected(expected)
                .with_evidence(evidence)
                .note(format!("protectKernelDefaults is on but the kubelet will refuse to start: {}", bad.join(", ")));
        }
        if !errors.is_empty() {
            return Outcome::error(errors.join("; ")).observed(Value::Object(observed)).with_evidence(evidence);
        }
        Outcome::pass().observed(Value::Object(observed)).expected(expected).with_evidence(evidence)
    })
}

fn drift_check(facts: &Facts<'_>) -> Outcome {
    let d = facts.get::<KubeletDrift>();
    match &*d {
        KubeletDrift::NotApplicable(r) => Outcome::not_applicable(r.clone()),
        KubeletDrift::Error(e) => Outcome::error(e.clone()),
        KubeletDrift::Computed { state_dir, vs_previous, vs_pinned, .. } => {
            if vs_previous.is_none() && vs_pinned.is_none() {
                return Outcome::not_applicable(format!(
                    "first run: no previous snapshot and no pinned reference in {state_dir}; this run's configuration is recorded"
                ));
            }
            let list = |v: &Option<Vec<Change>>| v.as_ref().map(|c| c.iter().map(Change::describe).collect::<Vec<_>>());
            let mut evidence = Vec::new();
            for (label, changes, file) in [
                ("since the previous run", vs_previous, crate::audit::facts::kubelet::drift::LAST_SNAPSHOT),
                ("against the pinned reference", vs_pinned, crate::audit::facts::kubelet::drift::PINNED_SNAPSHOT),
            ] {
                for c in changes.iter().flatten() {
                    evidence.push(crate::audit::model::Evidence::new(
                        format!("{state_dir}/{file}"),
                        format!("{label}: {}", c.describe()),
                    ));
                }
            }
            let changed = vs_previous.as_ref().is_some_and(|v| !v.is_empty())
                || vs_pinned.as_ref().is_some_and(|v| !v.is_empty());
            let observed = json!({
                "since_previous_run": vs_previous,
                "since_pinned": vs_pinned,
                "summary": { "since_previous_run": list(vs_previous), "since_pinned": list(vs_pinned) },
            });
            let mut o = Outcome::verdict(!changed)
                .observed(observed)
                .expected("no change of the effective kubelet configuration")
                .with_evidence(evidence);
            if vs_pinned.is_none() {
                o = o.note("no pinned reference (kosmos-node-agent baseline pin): compared with the previous run only");
            }
            o
        }
    }
}

fn with_proxy(facts: &Facts<'_>, f: impl FnOnce(&Component) -> Outcome) -> Outcome {
    let k = facts.get::<KubeletFacts>();
    if k.kubelet.is_none() {
        return Outcome::not_applicable(k.not_found_reason());
    }
    let p = facts.get::<KubeProxyFacts>();
    match &p.proxy {
        None => Outcome::not_applicable(p.not_found_reason()),
        Some(c) => {
            let mut o = f(c);
            o.evidence.push(discovery_evidence(c, "kube-proxy"));
            o
        }
    }
}

fn proxy_kubeconfig_check(facts: &Facts<'_>, max: u32, probe: FileProbe, expected: &'static str) -> Outcome {
    let host = facts.host();
    with_proxy(facts, |c| {
        let (path, ev) = match path_of(c, "clientConnection.kubeconfig") {
            Err(o) => return o,
            Ok(None) => return Outcome::not_applicable("kube-proxy has no kubeconfig (in-cluster credentials)"),
            Ok(Some(x)) => x,
        };
        let absent = Outcome::not_applicable(format!("{path}: the kube-proxy kubeconfig does not exist on this host"));
        judge_files(host, std::slice::from_ref(&path), max, probe, expected, absent).with_evidence([ev])
    })
}

fn is_loopback_bind(v: &str) -> bool {
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else if v.matches(':').count() > 1 {
        v
    } else {
        v.split(':').next().unwrap_or_default()
    };
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Every check of the `kubelet` and `kube_proxy` families.
pub fn checks() -> Vec<Check> {
    const AUTHN: &str =
        "Every request to the kubelet API (port 10250) can run commands in pods and read secrets mounted in them.";
    vec![
        Check::new("kubelet.service_file_permissions", "kubelet service file and drop-ins are mode 600 or stricter", Severity::Medium, |f, _| {
            unit_files_check(f, 0o600, mode_of, "mode ≤ 0600")
        })
        .rationale("The unit file and its drop-ins decide the kubelet's command line; whoever can write them controls the node.")
        .remediation("chmod 600 /etc/systemd/system/kubelet.service /etc/systemd/system/kubelet.service.d/*.conf (and the unit's other locations)")
        .refs([cis_k8s("4.1.1")]),
        Check::new("kubelet.service_file_ownership", "kubelet service file and drop-ins are owned by root:root", Severity::Medium, |f, _| {
            unit_files_check(f, 0, owner_probe, "root:root")
        })
        .rationale("The unit file and its drop-ins decide the kubelet's command line; only root may own them.")
        .remediation("chown root:root on kubelet.service and each of its drop-ins")
        .refs([cis_k8s("4.1.2")]),
        Check::new("kube_proxy.kubeconfig_permissions", "kube-proxy kubeconfig is mode 600 or stricter (if it exists)", Severity::Medium, |f, _| {
            proxy_kubeconfig_check(f, 0o600, mode_of, "mode ≤ 0600")
        })
        .rationale("The kube-proxy kubeconfig holds credentials to the API server.")
        .remediation("chmod 600 on the file named by kube-proxy's --kubeconfig or clientConnection.kubeconfig")
        .refs([cis_k8s("4.1.3")]),
        Check::new("kube_proxy.kubeconfig_ownership", "kube-proxy kubeconfig is owned by root:root (if it exists)", Severity::Medium, |f, _| {
            proxy_kubeconfig_check(f, 0, owner_probe, "root:root")
        })
        .rationale("The kube-proxy kubeconfig holds credentials to the API server.")
        .remediation("chown root:root on the kube-proxy kubeconfig")
        .refs([cis_k8s("4.1.4")]),
        Check::new("kubelet.kubeconfig_permissions", "kubelet kubeconfig is mode 600 or stricter", Severity::High, |f, _| {
            kubelet_file_check(f, kubeconfig_path, "kubeconfig", 0o600, mode_of, "mode ≤ 0600", true)
        })
        .rationale("The kubelet kubeconfig points at the node's API credentials; a readable copy lets a local user act as the node.")
        .remediation("chmod 600 on the file named by the kubelet's --kubeconfig (e.g. /etc/kubernetes/kubelet.conf)")
        .refs([cis_k8s("4.1.5")]),
        Check::new("kubelet.kubeconfig_ownership", "kubelet kubeconfig is owned by root:root", Severity::High, |f, _| {
            kubelet_file_check(f, kubeconfig_path, "kubeconfig", 0, owner_probe, "root:root", true)
        })
        .rationale("The kubelet kubeconfig points at the node's API credentials; only root may own it.")
        .remediation("chown root:root on the kubelet kubeconfig")
        .refs([cis_k8s("4.1.6")]),
        Check::new("kubelet.client_ca_permissions", "kubelet client CA file is mode 644 or stricter", Severity::Medium, |f, _| {
            kubelet_file_check(f, client_ca_of, "client CA file", 0o644, mode_of, "mode ≤ 0644", true)
        })
        .rationale("Whoever can replace the client CA can mint certificates the kubelet accepts.")
        .remediation("chmod 644 on the file named by authentication.x509.clientCAFile / --client-ca-file")
        .refs([cis_k8s("4.1.7")]),
        Check::new("kubelet.client_ca_ownership", "kubelet client CA file is owned by root:root", Severity::Medium, |f, _| {
            kubelet_file_check(f, client_ca_of, "client CA file", 0, owner_probe, "root:root", true)
        })
        .rationale("Whoever can replace the client CA can mint certificates the kubelet accepts.")
        .remediation("chown root:root on the client CA file")
        .refs([cis_k8s("4.1.8")]),
        Check::new("kubelet.config_file_permissions", "kubelet config file is mode 600 or stricter", Severity::High, |f, _| {
            kubelet_file_check(f, config_file_of, "config file (--config)", 0o600, mode_of, "mode ≤ 0600", true)
        })
        .rationale("The config file decides authentication, authorization and TLS of the kubelet API.")
        .remediation("chmod 600 on the file named by the kubelet's --config (e.g. /var/lib/kubelet/config.yaml)")
        .refs([cis_k8s("4.1.9")]),
        Check::new("kubelet.config_file_ownership", "kubelet config file is owned by root:root", Severity::High, |f, _| {
            kubelet_file_check(f, config_file_of, "config file (--config)", 0, owner_probe, "root:root", true)
        })
        .rationale("The config file decides authentication, authorization and TLS of the kubelet API.")
        .remediation("chown root:root on the kubelet config file")
        .refs([cis_k8s("4.1.10")]),
        Check::new("kubelet.anonymous_auth", "kubelet anonymous authentication is disabled", Severity::Critical, |f, _| {
            judge_key(f, "authentication.anonymous.enabled", "false", |v, _| (as_bool(v) == Some(false), None))
        })
        .rationale(format!("{AUTHN} With anonymous auth on, unauthenticated requests get the system:anonymous identity."))
        .remediation("Set authentication.anonymous.enabled: false in the kubelet config (and remove --anonymous-auth=true), then restart the kubelet")
        .refs([cis_k8s("4.2.1")]),
        Check::new("kubelet.authorization_mode", "kubelet authorization mode is not AlwaysAllow", Severity::Critical, |f, _| {
            judge_key(f, "authorization.mode", "does not contain AlwaysAllow (e.g. Webhook)", |v, _| {
                let s = render(v);
                (!s.is_empty() && !s.split(',').any(|m| m.trim() == "AlwaysAllow"), None)
            })
        })
        .rationale(format!("{AUTHN} AlwaysAllow authorizes every authenticated (or anonymous) request."))
        .remediation("Set authorization.mode: Webhook in the kubelet config (and remove --authorization-mode=AlwaysAllow)")
        .refs([cis_k8s("4.2.2")]),
        Check::new("kubelet.client_ca_file", "kubelet client CA file is set", Severity::High, |f, _| {
            judge_key(f, "authentication.x509.clientCAFile", "set", |v, _| (v.as_str().is_some_and(|s| !s.is_empty()), None))
        })
        .rationale("Without a client CA the kubelet cannot authenticate the API server's client certificate.")
        .remediation("Set authentication.x509.clientCAFile to the cluster CA (e.g. /etc/kubernetes/pki/ca.crt)")
        .refs([cis_k8s("4.2.3")]),
        Check::new("kubelet.read_only_port", "kubelet read-only port is disabled", Severity::High, |f, _| {
            judge_key(f, "readOnlyPort", "0", |v, _| (as_i64(v) == Some(0), None))
        })
        .rationale("The read-only port (10255) serves pod and node data without authentication.")
        .remediation("Set readOnlyPort: 0 in the kubelet config (or --read-only-port=0)")
        .refs([cis_k8s("4.2.4")]),
        Check::new("kubelet.streaming_connection_idle_timeout", "kubelet streaming connection idle timeout is not 0", Severity::Medium, |f, _| {
            judge_key(f, "streamingConnectionIdleTimeout", "not 0", |v, k| {
                if v.is_null() || !duration_is_zero(&render(v)) {
                    (true, None)
                } else if k == "file" {
                    // v1beta1 defaulting replaces a zero duration from the
                    // file (kubeadm writes `0s`) with 4h0m0s; only the flag
                    // can really set 0.
                    (true, Some("0 in the config file means \"use the default\" (4h0m0s) for the kubelet".into()))
                } else {
                    (false, None)
                }
            })
        })
        .rationale("A zero timeout keeps idle exec/attach/port-forward streams open forever.")
        .remediation("Set streamingConnectionIdleTimeout to a non-zero duration such as 4h0m0s")
        .refs([cis_k8s("4.2.5")]),
        Check::new("kubelet.make_iptables_util_chains", "kubelet manages iptables utility chains", Severity::Low, |f, _| {
            judge_key(f, "makeIPTablesUtilChains", "true or unset", |v, k| (unset(k) || as_bool(v) == Some(true), None))
        })
        .rationale("Letting the kubelet manage its iptables chains keeps pod networking rules consistent with its configuration.")
        .remediation("Set makeIPTablesUtilChains: true (or remove the setting)")
        .refs([cis_k8s("4.2.6")]),
        Check::new("kubelet.hostname_override", "kubelet --hostname-override is not set", Severity::Low, |f, _| {
            judge_key(f, "--hostname-override", "absent", |v, _| (v.is_null(), None))
        })
        .rationale("Overriding the hostname can break the TLS identity between the kubelet and the API server.")
        .remediation("Remove --hostname-override from the kubelet's command line (unit, drop-ins, environment files)")
        .refs([cis_k8s("4.2.7")]),
        Check::new("kubelet.event_qps", "kubelet event record QPS is not negative", Severity::Low, |f, _| {
            judge_key(f, "eventRecordQPS", "≥ 0 or unset", |v, k| (unset(k) || as_i64(v).is_some_and(|q| q >= 0), None))
        })
        .rationale("Events are the audit trail of what happens on the node; they must be captured.")
        .remediation("Set eventRecordQPS to 0 or a positive value")
        .refs([cis_k8s("4.2.8")]),
        Check::new("kubelet.tls_cert_and_key", "kubelet serving TLS certificate and key are set", Severity::High, |f, _| {
            with_kubelet(f, |c| {
                let cert = match path_of(c, "tlsCertFile") {
                    Ok(x) => x,
                    Err(o) => return o,
                };
                let key = match path_of(c, "tlsPrivateKeyFile") {
                    Ok(x) => x,
                    Err(o) => return o,
                };
                let expected = "tlsCertFile and tlsPrivateKeyFile set, or serverTLSBootstrap with server certificate rotation";
                let mut ev: Vec<_> = cert.iter().chain(key.iter()).map(|(_, e)| e.clone()).collect();
                let mut observed = json!({
                    "tlsCertFile": cert.as_ref().map(|c| c.0.clone()),
                    "tlsPrivateKeyFile": key.as_ref().map(|k| k.0.clone()),
                });
                if cert.is_some() && key.is_some() {
                    return Outcome::pass()
                        .observed(observed)
                        .expected(expected)
                        .with_evidence(ev)
                        .note("tlsCertFile and tlsPrivateKeyFile are set");
                }
                // Only when the files are not both set does bootstrap matter.
                let bootstrap = match setting(c, "serverTLSBootstrap") {
                    Ok(s) => s,
                    Err(o) => return o,
                };
                let gate = match setting(c, "featureGates.RotateKubeletServerCertificate") {
                    Ok(s) => s,
                    Err(o) => return o,
                };
                let boot_on = bootstrap.as_ref().and_then(|s| as_bool(&s.value)) == Some(true)
                    && gate.as_ref().and_then(|s| as_bool(&s.value)) != Some(false);
                ev.extend(bootstrap.iter().map(|s| s.evidence("serverTLSBootstrap")));
                observed["serverTLSBootstrap"] = json!(boot_on);
                if boot_on {
                    Outcome::pass()
                        .observed(observed)
                        .expected(expected)
                        .with_evidence(ev)
                        .note("serving certificate obtained by TLS bootstrap (serverTLSBootstrap) and rotated")
                } else {
                    Outcome::fail()
                        .observed(observed)
                        .expected(expected)
                        .with_evidence(ev)
                        .note("the kubelet serves a self-signed certificate the API server cannot verify")
                }
            })
        })
        .rationale("A serving certificate signed by the cluster lets the API server verify it talks to the right kubelet.")
        .remediation("Set tlsCertFile and tlsPrivateKeyFile, or serverTLSBootstrap: true and approve the kubelet-serving CSRs")
        .refs([cis_k8s("4.2.9")]),
        Check::new("kubelet.rotate_certificates", "kubelet client certificate rotation is not disabled", Severity::Medium, |f, _| {
            judge_key(f, "rotateCertificates", "true or unset", |v, k| {
                if unset(k) { (true, Some("not set: the benchmark accepts unset (the kubelet's own default is false)".into())) } else { (as_bool(v) == Some(true), None) }
            })
        })
        .rationale("Without rotation the client certificate expires and the node drops out of the cluster, or long-lived credentials linger.")
        .remediation("Set rotateCertificates: true (or --rotate-certificates)")
        .refs([cis_k8s("4.2.10")]),
        Check::new("kubelet.rotate_server_certificates", "kubelet server certificate rotation is not disabled", Severity::Medium, |f, _| {
            judge_key(f, "featureGates.RotateKubeletServerCertificate", "not false", |v, _| (as_bool(v) != Some(false), None))
        })
        .rationale("The RotateKubeletServerCertificate feature gate lets the kubelet renew its serving certificate.")
        .remediation("Remove RotateKubeletServerCertificate=false from the feature gates")
        .refs([cis_k8s("4.2.11")]),
        Check::new("kubelet.tls_cipher_suites", "kubelet uses only strong TLS cipher suites", Severity::Medium, |f, _| {
            judge_key(f, "tlsCipherSuites", "a non-empty subset of the strong ECDHE AEAD suites", |v, _| {
                let list: Vec<String> = match v {
                    Value::Array(a) => a.iter().map(render).collect(),
                    Value::String(s) => s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
                    _ => Vec::new(),
                };
                if list.is_empty() {
                    return (false, Some("not set: Go's default suites apply, which include CBC suites".into()));
                }
                let weak: Vec<&String> = list.iter().filter(|c| !STRONG_CIPHERS.contains(&c.as_str())).collect();
                if weak.is_empty() { (true, None) } else { (false, Some(format!("weak suites: {}", weak.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")))) }
            })
        })
        .rationale("Weak cipher suites allow downgrade and decryption of kubelet API traffic.")
        .remediation(format!("Set tlsCipherSuites to a subset of: {}", STRONG_CIPHERS.join(", ")))
        .refs([cis_k8s("4.2.12")]),
        Check::new("kubelet.pod_pids_limit", "kubelet limits the number of PIDs per pod", Severity::Medium, |f, _| {
            judge_key(f, "podPidsLimit", "a positive limit", |v, _| (as_i64(v).is_some_and(|n| n > 0), None))
        })
        .rationale("Without a PID limit one pod can fork-bomb the node.")
        .remediation("Set podPidsLimit to a positive value (e.g. 4096)")
        .refs([cis_k8s("4.2.13")]),
        Check::new("kubelet.seccomp_default", "kubelet applies the RuntimeDefault seccomp profile by default", Severity::Medium, |f, _| {
            judge_key(f, "seccompDefault", "true", |v, _| (as_bool(v) == Some(true), None))
        })
        .rationale("Without a default seccomp profile, containers may use every system call, widening the kernel attack surface.")
        .remediation("Set seccompDefault: true in the kubelet config")
        .refs([cis_k8s("4.2.14")]),
        Check::new("kube_proxy.metrics_bind_address", "kube-proxy metrics are bound to localhost", Severity::Medium, |f, _| {
            with_proxy(f, |c| {
                let s = match setting(c, "metricsBindAddress") { Ok(s) => s, Err(o) => return o };
                match s {
                    None => Outcome::pass().note("metricsBindAddress unset"),
                    Some(s) => {
                        let v = render(&s.value);
                        Outcome::verdict(s.provenance.is_default() || v.is_empty() || is_loopback_bind(&v))
                            .observed(json!({ "metricsBindAddress": v, "provenance": s.provenance.kind() }))
                            .expected("127.0.0.1 or unset")
                            .with_evidence([s.evidence("metricsBindAddress")])
                    }
                }
            })
        })
        .rationale("kube-proxy metrics reveal the cluster's services and endpoints to anyone who can reach the port.")
        .remediation("Set metricsBindAddress: 127.0.0.1:10249 (or --metrics-bind-address=127.0.0.1:10249)")
        .refs([cis_k8s("4.3.1")]),
        Check::new("kubelet.protect_kernel_defaults", "kubelet protects kernel defaults and the required sysctls are set", Severity::Medium, |f, _| protect_kernel_defaults(f))
        .rationale("With protectKernelDefaults the kubelet refuses to run on a kernel whose tunables differ from what it expects, instead of silently changing them.")
        .remediation("Set protectKernelDefaults: true and persist vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1 in /etc/sysctl.d/90-kubelet.conf"),
        Check::new("kubelet.client_cert_expiry", "kubelet client certificate is not about to expire", Severity::High, |f, p| cert_check(f, p, false))
        .param(ParamSpec::int("min_days", 7, "fail when the certificate expires in fewer days"))
        .rationale("When the client certificate expires the node can no longer talk to the API server and drops out of the cluster.")
        .remediation("Enable rotateCertificates, or renew the client certificate (re-join the node)"),
        Check::new("kubelet.client_cert_expiring", "kubelet client certificate is valid for at least 30 more days", Severity::Medium, |f, p| cert_check(f, p, false))
        .param(ParamSpec::int("min_days", 30, "fail when the certificate expires in fewer days"))
        .rationale("An early warning before the client certificate expiry becomes an outage.")
        .remediation("Check that client certificate rotation works, or plan the renewal"),
        Check::new("kubelet.serving_cert_expiry", "kubelet serving certificate is not about to expire", Severity::High, |f, p| cert_check(f, p, true))
        .param(ParamSpec::int("min_days", 7, "fail when the certificate expires in fewer days"))
        .rationale("An expired serving certificate breaks logs, exec and metrics from the control plane.")
        .remediation("Renew the serving certificate (tlsCertFile) or enable serverTLSBootstrap and approve its CSRs"),
        Check::new("kubelet.serving_cert_expiring", "kubelet serving certificate is valid for at least 30 more days", Severity::Medium, |f, p| cert_check(f, p, true))
        .param(ParamSpec::int("min_days", 30, "fail when the certificate expires in fewer days"))
        .rationale("An early warning before the serving certificate expiry becomes an outage.")
        .remediation("Plan the renewal of the serving certificate"),
        Check::new("kubelet.config_drift", "kubelet effective configuration has not drifted", Severity::Medium, |f, _| drift_check(f))
        .rationale("Once the customer alters the kubelet's configuration, the responsibility for it is theirs; every change must be visible, key by key.")
        .remediation("Review the listed changes; revert them, or accept them with `kosmos-node-agent baseline pin`"),
    ]
}

#[cfg(test)]
mod tests;
