//! The kubelet (and kube-proxy) as they really run: which process or unit,
//! which command line, which configuration file, and the resulting effective
//! configuration, key by key, with the provenance of every value.
//!
//! Discovery order, first match wins:
//! 1. live host: a process whose `/proc/<pid>/comm` is `kubelet`; its argv
//!    comes from `/proc/<pid>/cmdline`;
//! 2. `kubelet.service` with its drop-ins and environment files
//!    (see [`unit`]), which is also read when a process was found, because the
//!    unit files themselves are audited (CIS 4.1.1/4.1.2);
//! 3. well-known paths (`/var/lib/kubelet/config.yaml`).
//!
//! The effective configuration follows the kubelet's own rules: the
//! `--config` file (plus `--config-dir` drop-ins) is overridden by
//! command-line flags, and keys set nowhere take the defaults of the mode in
//! use. Those defaults differ: without a config file the flag defaults apply
//! (anonymous auth on, `AlwaysAllow`, read-only port 10255); with one, the
//! v1beta1 defaults apply (anonymous off, `Webhook`, read-only port 0).

pub mod certs;
pub mod config;
pub mod drift;
pub mod flags;
pub mod unit;

use std::collections::BTreeMap;

use serde_json::Value;

use self::flags::{Arg, Flags, parse_bool, parse_flags, split_cmdline};
use self::unit::{Service, load_service};
use super::{FactError, Facts, Gather};
use crate::audit::host::Host;
use crate::audit::model::Evidence;

/// `/proc/<pid>/cmdline` is bounded by the kernel's ARG_MAX in practice.
const CMDLINE_LIMIT: u64 = 256 * 1024;

/// The kubelet's default certificate directory.
pub const DEFAULT_CERT_DIR: &str = "/var/lib/kubelet/pki";

/// Where a value of the effective configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// A command-line flag, with the origin of the word (process, unit line,
    /// environment file line).
    Flag { flag: String, origin: String },
    /// The configuration file (or a `--config-dir` drop-in).
    File { path: String },
    /// Not set anywhere: the default of the mode in use.
    Default { basis: &'static str },
}

impl Provenance {
    pub fn kind(&self) -> &'static str {
        match self {
            Provenance::Flag { .. } => "flag",
            Provenance::File { .. } => "file",
            Provenance::Default { .. } => "default",
        }
    }

    /// Where to point the reader (an evidence `source`).
    pub fn source(&self) -> String {
        match self {
            Provenance::Flag { origin, .. } => origin.clone(),
            Provenance::File { path } => path.clone(),
            Provenance::Default { basis } => (*basis).to_string(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Provenance::Flag { flag, origin } => format!("flag --{flag} ({origin})"),
            Provenance::File { path } => format!("file {path}"),
            Provenance::Default { basis } => format!("default ({basis})"),
        }
    }

    pub fn is_default(&self) -> bool {
        matches!(self, Provenance::Default { .. })
    }
}

/// One key of the effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub value: Value,
    pub provenance: Provenance,
}

impl Setting {
    /// `key = value (provenance)` evidence.
    pub fn evidence(&self, key: &str) -> Evidence {
        Evidence::new(
            self.provenance.source(),
            format!("{key} = {} ({})", render(&self.value), self.provenance.describe()),
        )
    }
}

/// A value as a human reads it (strings without quotes).
pub fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(render).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// How the component was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    Process { pid: u32 },
    Unit { path: String },
    WellKnown { path: String },
}

impl Discovery {
    pub fn describe(&self) -> String {
        match self {
            Discovery::Process { pid } => format!("running process {pid} (/proc/{pid}/cmdline)"),
            Discovery::Unit { path } => format!("systemd unit {path}"),
            Discovery::WellKnown { path } => format!("well-known path {path} (no process, no unit)"),
        }
    }
}

/// The configuration file state.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigState {
    /// Started without a configuration file: flag defaults apply.
    NotUsed,
    /// Loaded from this path (and drop-ins).
    Loaded { path: String, drop_ins: Vec<String> },
    /// The file named by `--config` could not be used: values not set by a
    /// flag are unknown.
    Failed { path: String, error: FactError },
}

/// The type of a flag's value in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Str,
    List,
}

/// What distinguishes the kubelet from kube-proxy in discovery.
#[derive(Debug)]
struct Spec {
    comm: &'static str,
    unit: &'static str,
    config_kind: &'static str,
    well_known_config: &'static [&'static str],
    /// flag name -> configuration key.
    flag_keys: &'static [(&'static str, &'static str, Kind)],
    defaults: fn(bool) -> Vec<(&'static str, Value)>,
}

const KUBELET_FLAG_KEYS: &[(&str, &str, Kind)] = &[
    ("anonymous-auth", "authentication.anonymous.enabled", Kind::Bool),
    ("authentication-token-webhook", "authentication.webhook.enabled", Kind::Bool),
    ("authorization-mode", "authorization.mode", Kind::Str),
    ("client-ca-file", "authentication.x509.clientCAFile", Kind::Str),
    ("read-only-port", "readOnlyPort", Kind::Int),
    ("port", "port", Kind::Int),
    ("address", "address", Kind::Str),
    ("streaming-connection-idle-timeout", "streamingConnectionIdleTimeout", Kind::Str),
    ("make-iptables-util-chains", "makeIPTablesUtilChains", Kind::Bool),
    ("event-qps", "eventRecordQPS", Kind::Int),
    ("tls-cert-file", "tlsCertFile", Kind::Str),
    ("tls-private-key-file", "tlsPrivateKeyFile", Kind::Str),
    ("tls-cipher-suites", "tlsCipherSuites", Kind::List),
    ("tls-min-version", "tlsMinVersion", Kind::Str),
    ("rotate-certificates", "rotateCertificates", Kind::Bool),
    ("rotate-server-certificates", "serverTLSBootstrap", Kind::Bool),
    ("pod-max-pids", "podPidsLimit", Kind::Int),
    ("seccomp-default", "seccompDefault", Kind::Bool),
    ("protect-kernel-defaults", "protectKernelDefaults", Kind::Bool),
    ("cgroup-driver", "cgroupDriver", Kind::Str),
    ("cluster-dns", "clusterDNS", Kind::List),
    ("cluster-domain", "clusterDomain", Kind::Str),
    ("container-runtime-endpoint", "containerRuntimeEndpoint", Kind::Str),
    ("fail-swap-on", "failSwapOn", Kind::Bool),
    ("max-pods", "maxPods", Kind::Int),
];

fn kubelet_defaults(with_config_file: bool) -> Vec<(&'static str, Value)> {
    let mut d = if with_config_file {
        vec![
            ("authentication.anonymous.enabled", Value::Bool(false)),
            ("authentication.webhook.enabled", Value::Bool(true)),
            ("authorization.mode", Value::from("Webhook")),
            ("readOnlyPort", Value::from(0)),
        ]
    } else {
        vec![
            ("authentication.anonymous.enabled", Value::Bool(true)),
            ("authentication.webhook.enabled", Value::Bool(false)),
            ("authorization.mode", Value::from("AlwaysAllow")),
            ("readOnlyPort", Value::from(10255)),
        ]
    };
    d.extend([
        ("port", Value::from(10250)),
        ("streamingConnectionIdleTimeout", Value::from("4h0m0s")),
        ("makeIPTablesUtilChains", Value::Bool(true)),
        ("eventRecordQPS", Value::from(50)),
        ("rotateCertificates", Value::Bool(false)),
        ("serverTLSBootstrap", Value::Bool(false)),
        ("podPidsLimit", Value::from(-1)),
        ("seccompDefault", Value::Bool(false)),
        ("protectKernelDefaults", Value::Bool(false)),
        ("featureGates.RotateKubeletServerCertificate", Value::Bool(true)),
    ]);
    d
}

const KUBELET: Spec = Spec {
    comm: "kubelet",
    unit: "kubelet.service",
    config_kind: "KubeletConfiguration",
    well_known_config: &["/var/lib/kubelet/config.yaml"],
    flag_keys: KUBELET_FLAG_KEYS,
    defaults: kubelet_defaults,
};

const PROXY_FLAG_KEYS: &[(&str, &str, Kind)] = &[
    ("metrics-bind-address", "metricsBindAddress", Kind::Str),
    ("kubeconfig", "clientConnection.kubeconfig", Kind::Str),
    ("healthz-bind-address", "healthzBindAddress", Kind::Str),
    ("proxy-mode", "mode", Kind::Str),
];

fn proxy_defaults(_with_config_file: bool) -> Vec<(&'static str, Value)> {
    vec![("metricsBindAddress", Value::from("127.0.0.1:10249")), ("healthzBindAddress", Value::from("0.0.0.0:10256"))]
}

const KUBE_PROXY: Spec = Spec {
    comm: "kube-proxy",
    unit: "kube-proxy.service",
    config_kind: "KubeProxyConfiguration",
    well_known_config: &[],
    flag_keys: PROXY_FLAG_KEYS,
    defaults: proxy_defaults,
};

/// A discovered kubelet or kube-proxy.
#[derive(Debug, Clone)]
pub struct Component {
    pub discovery: Discovery,
    /// The binary (argv[0], or the process's executable).
    pub binary: Option<String>,
    /// The systemd service, when a unit file or drop-in exists.
    pub service: Option<Service>,
    pub flags: Flags,
    /// Set when part of the command line could not be read (a drop-in or
    /// environment file that exists but is unreadable): any flag may be wrong.
    pub flags_uncertain: Option<FactError>,
    pub config: ConfigState,
    /// The effective configuration. Flags not known to map to a file key
    /// appear as `--name`.
    pub settings: BTreeMap<String, Setting>,
    /// How the component was found, piece by piece.
    pub evidence: Vec<Evidence>,
}

impl Component {
    /// The effective value of a key, or why it cannot be known.
    pub fn lookup(&self, key: &str) -> Result<Option<&Setting>, FactError> {
        if let Some(e) = &self.flags_uncertain {
            return Err(FactError::new(format!("the command line is uncertain: {e}")));
        }
        let s = self.settings.get(key);
        // Flags win; and `--name` keys exist only as flags, so an unusable
        // config file cannot hide them.
        if key.starts_with("--") || s.is_some_and(|s| matches!(s.provenance, Provenance::Flag { .. })) {
            return Ok(s);
        }
        if let ConfigState::Failed { error, .. } = &self.config {
            return Err(FactError::new(format!("{key} is not set by a flag and the config file is unusable: {error}")));
        }
        Ok(s)
    }

    /// A flag that has no configuration-file equivalent (`--kubeconfig`).
    pub fn flag(&self, name: &str) -> Result<Option<&flags::Flag>, FactError> {
        if let Some(e) = &self.flags_uncertain {
            return Err(FactError::new(format!("the command line is uncertain: {e}")));
        }
        Ok(self.flags.get(name))
    }

    /// The configuration file path, if one is used (even if unusable).
    pub fn config_path(&self) -> Option<&str> {
        match &self.config {
            ConfigState::NotUsed => None,
            ConfigState::Loaded { path, .. } | ConfigState::Failed { path, .. } => Some(path),
        }
    }

    /// Where the kubelet keeps its certificates (`--cert-dir`).
    pub fn cert_dir(&self) -> String {
        self.flags.value("cert-dir").filter(|v| !v.is_empty()).unwrap_or(DEFAULT_CERT_DIR).to_string()
    }

    /// Evidence of how this component was found.
    pub fn discovery_evidence(&self) -> Vec<Evidence> {
        self.evidence.clone()
    }
}

/// What discovery looked at, for "not found" reasons.
fn searched(host: &Host, spec: &Spec) -> Vec<String> {
    let mut s = Vec::new();
    if host.is_live() {
        s.push(format!("processes named {} in /proc", spec.comm));
    }
    s.push(format!("{} and drop-ins in {}", spec.unit, unit::UNIT_DIRS.join(", ")));
    s.extend(spec.well_known_config.iter().map(|p| (*p).to_string()));
    s
}

/// Live processes whose `comm` is `name`, lowest pid first.
fn find_processes(host: &Host, name: &str) -> Vec<u32> {
    let Ok(entries) = host.read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = entries
        .iter()
        .filter_map(|e| e.name.parse::<u32>().ok())
        .filter(|pid| {
            host.read_text_limited(&format!("/proc/{pid}/comm"), 4096).is_ok_and(|c| c.trim_end_matches('\n') == name)
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn typed(kind: Kind, raw: &str) -> Value {
    match kind {
        Kind::Bool => parse_bool(raw).map(Value::Bool).unwrap_or_else(|| Value::from(raw)),
        Kind::Int => raw.trim().parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(raw)),
        Kind::Str => Value::from(raw),
        Kind::List => {
            Value::from(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Value::from).collect::<Vec<_>>())
        }
    }
}

/// Discover one component and compute its effective configuration.
fn discover(host: &Host, spec: &Spec) -> Option<Component> {
    let mut evidence = Vec::new();
    let service = load_service(host, spec.unit);
    let mut argv: Option<Vec<Arg>> = None;
    let mut discovery = None;
    let mut binary = None;
    let mut flags_uncertain = None;
    if host.is_live() {
        let pids = find_processes(host, spec.comm);
        if let Some(pid) = pids.first().copied() {
            let path = format!("/proc/{pid}/cmdline");
            match host.read_bytes_limited(&path, CMDLINE_LIMIT) {
                Ok(raw) => {
                    let words = split_cmdline(&raw, &path);
                    let shown: Vec<&str> = words.iter().map(|a| a.text.as_str()).collect();
                    evidence.push(Evidence::new(&path, format!("{} process {pid}: {}", spec.comm, shown.join(" "))));
                    argv = Some(words);
                }
                Err(e) => flags_uncertain = Some(FactError::from(e)),
            }
            binary = host.read_link(&format!("/proc/{pid}/exe")).ok();
            if pids.len() > 1 {
                evidence.push(Evidence::new(
                    "/proc",
                    format!("{} {} processes (pids {:?}); the lowest pid is audited", pids.len(), spec.comm, pids),
                ));
            }
            discovery = Some(Discovery::Process { pid });
        }
    }
    if let Some(svc) = &service {
        if let Some(u) = &svc.unit_file {
            let what = if svc.masked { "unit file (masked)" } else { "unit file in effect" };
            evidence.push(Evidence::new(u, what));
        }
        for d in &svc.drop_ins {
            evidence.push(Evidence::new(d, "drop-in applied"));
        }
        for d in &svc.masked_drop_ins {
            evidence.push(Evidence::new(d, "drop-in masked by a same-name drop-in in a more important directory"));
        }
        for f in &svc.env_files {
            evidence.push(Evidence::new(f, "environment file read"));
        }
        for f in &svc.absent_optional_env_files {
            evidence.push(Evidence::new(f, "optional environment file (EnvironmentFile=-) absent"));
        }
        if let Some((value, src)) = svc.exec_start.as_ref().filter(|_| discovery.is_none() && !svc.masked) {
            evidence.push(Evidence::new(src, format!("ExecStart={value}")));
            if svc.exec_start_count > 1 {
                evidence.push(Evidence::new(
                        src,
                        format!("{} ExecStart= lines remain after resets; systemd refuses such a simple service; the last one is audited", svc.exec_start_count),
                    ));
            }
            argv = Some(svc.argv());
            if let Some(p) = svc.problems.first() {
                flags_uncertain = Some(p.clone());
            }
            discovery =
                svc.unit_file.clone().or_else(|| svc.drop_ins.first().cloned()).map(|path| Discovery::Unit { path });
        }
    }
    if discovery.is_none() {
        let found = spec.well_known_config.iter().find(|p| host.symlink_metadata(p).is_ok());
        if let Some(p) = found {
            evidence
                .push(Evidence::new(*p, format!("no {} process or unit: using the well-known config path", spec.comm)));
            discovery = Some(Discovery::WellKnown { path: (*p).to_string() });
        }
    }
    let discovery = discovery?;
    let mut words = argv.unwrap_or_default();
    if !words.is_empty() {
        let first = words.remove(0);
        binary = binary.or(Some(first.text));
    }
    let flags = parse_flags(&words);
    // Which configuration file, if any.
    let config_path: Option<String> = match &discovery {
        Discovery::WellKnown { path } => Some(path.clone()),
        _ => flags.value("config").filter(|v| !v.is_empty()).map(str::to_string),
    };
    let basis =
        if config_path.is_some() { "config-file (v1beta1) default" } else { "command-line default (no --config)" };
    let mut settings: BTreeMap<String, Setting> = (spec.defaults)(config_path.is_some())
        .into_iter()
        .map(|(k, v)| (k.to_string(), Setting { value: v, provenance: Provenance::Default { basis } }))
        .collect();
    let config = match config_path {
        None => ConfigState::NotUsed,
        Some(path) => match config::load_config(host, &path, spec.config_kind) {
            Ok(keys) => {
                for (k, v) in keys {
                    settings.insert(k, Setting { value: v, provenance: Provenance::File { path: path.clone() } });
                }
                let mut drop_ins = Vec::new();
                let mut state = None;
                if let Some(dir) = flags.value("config-dir").filter(|v| !v.is_empty()) {
                    match config::load_config_dir(host, dir) {
                        Ok(files) => {
                            for (p, keys) in files {
                                for (k, v) in keys {
                                    settings.insert(
                                        k,
                                        Setting { value: v, provenance: Provenance::File { path: p.clone() } },
                                    );
                                }
                                drop_ins.push(p);
                            }
                        }
                        Err(error) => state = Some(ConfigState::Failed { path: dir.to_string(), error }),
                    }
                }
                state.unwrap_or(ConfigState::Loaded { path, drop_ins })
            }
            Err(error) => ConfigState::Failed { path, error },
        },
    };
    for f in &flags.flags {
        let prov = Provenance::Flag { flag: f.name.clone(), origin: f.origin.clone() };
        if f.name == "feature-gates" {
            for gate in f.value.split(',').filter(|g| !g.trim().is_empty()) {
                let (name, v) = gate.split_once('=').unwrap_or((gate, "true"));
                let value = parse_bool(v.trim()).map(Value::Bool).unwrap_or_else(|| Value::from(v.trim()));
                settings.insert(format!("featureGates.{}", name.trim()), Setting { value, provenance: prov.clone() });
            }
            continue;
        }
        let setting = match spec.flag_keys.iter().find(|(n, _, _)| *n == f.name) {
            Some((_, key, kind)) => ((*key).to_string(), typed(*kind, &f.value)),
            None => (format!("--{}", f.name), Value::from(f.value.clone())),
        };
        settings.insert(setting.0, Setting { value: setting.1, provenance: prov });
    }
    Some(Component { discovery, binary, service, flags, flags_uncertain, config, settings, evidence })
}

/// The kubelet of the audited system.
#[derive(Debug, Clone)]
pub struct KubeletFacts {
    pub searched: Vec<String>,
    pub kubelet: Option<Component>,
}

impl KubeletFacts {
    pub fn not_found_reason(&self) -> String {
        format!("no kubelet found (searched: {})", self.searched.join("; "))
    }
}

impl Gather for KubeletFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        let host = facts.host();
        KubeletFacts { searched: searched(host, &KUBELET), kubelet: discover(host, &KUBELET) }
    }
}

/// kube-proxy, when it runs as a host process or unit (on most nodes it is a
/// DaemonSet pod, whose files live in the container).
#[derive(Debug, Clone)]
pub struct KubeProxyFacts {
    pub searched: Vec<String>,
    pub proxy: Option<Component>,
}

impl KubeProxyFacts {
    pub fn not_found_reason(&self) -> String {
        format!(
            "no kube-proxy process or unit on this host (searched: {}); it usually runs as a DaemonSet pod, audited in the cluster",
            self.searched.join("; ")
        )
    }
}

impl Gather for KubeProxyFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        let host = facts.host();
        KubeProxyFacts { searched: searched(host, &KUBE_PROXY), proxy: discover(host, &KUBE_PROXY) }
    }
}

/// The kubelet's version as `kubelet --version` reports it.
#[derive(Debug, Clone)]
pub struct KubeletVersion {
    /// The command that was run.
    pub command: String,
    pub result: Result<String, FactError>,
    /// The command could not run at all (offline root without a recording).
    pub unavailable: bool,
}

/// Parse `Kubernetes v1.33.4` into `1.33.4`.
pub fn parse_version_output(out: &str) -> Option<String> {
    let word = out
        .split_whitespace()
        .find(|w| w.starts_with('v') && w.get(1..2).is_some_and(|c| c.chars().all(|c| c.is_ascii_digit())))?;
    let v = word.trim_start_matches('v');
    let ok = v.split(['.', '-', '+']).take(3).all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
    ok.then(|| v.to_string())
}

impl Gather for KubeletVersion {
    fn gather(facts: &Facts<'_>) -> Self {
        let k = facts.get::<KubeletFacts>();
        let host = facts.host();
        // Live, run the binary the kubelet really runs; offline, the
        // recorded runner looks commands up by their base name.
        let program = k
            .kubelet
            .as_ref()
            .and_then(|c| c.binary.clone())
            .filter(|b| b.starts_with('/') && host.is_live())
            .unwrap_or_else(|| "kubelet".to_string());
        let command = format!("{program} --version");
        match host.run(&program, &["--version"]) {
            Ok(out) if out.success() => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let result = parse_version_output(&text)
                    .ok_or_else(|| FactError::new(format!("{command}: unexpected output {:?}", text.trim())));
                KubeletVersion { command, result, unavailable: false }
            }
            Ok(out) => KubeletVersion {
                command: command.clone(),
                result: Err(FactError::new(format!("{command} exited with {:?}", out.status))),
                unavailable: false,
            },
            Err(e) => {
                let unavailable = e.is_unavailable();
                KubeletVersion { command, result: Err(e.into()), unavailable }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{live_like, offline, root_with};

    #[test]
    fn version_output() {
        assert_eq!(parse_version_output("Kubernetes v1.33.4\n").as_deref(), Some("1.33.4"));
        assert_eq!(parse_version_output("sleep (GNU coreutils) 9.1"), None);
        assert_eq!(parse_version_output("v"), None);
    }

    #[test]
    fn unit_flags_override_config_file() {
        let d = root_with(&[
            (
                "/lib/systemd/system/kubelet.service",
                "[Service]\nExecStart=/usr/bin/kubelet --config=/var/lib/kubelet/config.yaml --anonymous-auth=true --feature-gates=RotateKubeletServerCertificate=false,Foo=true\n",
            ),
            (
                "/var/lib/kubelet/config.yaml",
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication:\n  anonymous:\n    enabled: false\nreadOnlyPort: 0\n",
            ),
        ]);
        let h = offline(d.path());
        let c = discover(&h, &KUBELET).unwrap();
        assert_eq!(c.discovery, Discovery::Unit { path: "/lib/systemd/system/kubelet.service".into() });
        assert_eq!(c.binary.as_deref(), Some("/usr/bin/kubelet"));
        let a = c.lookup("authentication.anonymous.enabled").unwrap().unwrap();
        assert_eq!(a.value, Value::Bool(true));
        assert_eq!(a.provenance.kind(), "flag");
        assert!(a.provenance.source().starts_with("/lib/systemd/system/kubelet.service:2"));
        let r = c.lookup("readOnlyPort").unwrap().unwrap();
        assert_eq!(r.provenance, Provenance::File { path: "/var/lib/kubelet/config.yaml".into() });
        // Config-file default, not the flag default.
        let m = c.lookup("authorization.mode").unwrap().unwrap();
        assert_eq!(m.value, Value::from("Webhook"));
        assert!(m.provenance.is_default());
        assert_eq!(c.lookup("featureGates.RotateKubeletServerCertificate").unwrap().unwrap().value, Value::Bool(false));
    }

    #[test]
    fn flag_defaults_without_config_file() {
        let d = root_with(&[(
            "/etc/systemd/system/kubelet.service",
            "[Service]\nExecStart=/usr/bin/kubelet --kubeconfig /k\n",
        )]);
        let c = discover(&offline(d.path()), &KUBELET).unwrap();
        assert_eq!(c.config, ConfigState::NotUsed);
        assert_eq!(c.lookup("authentication.anonymous.enabled").unwrap().unwrap().value, Value::Bool(true));
        assert_eq!(c.lookup("authorization.mode").unwrap().unwrap().value, Value::from("AlwaysAllow"));
        assert_eq!(c.lookup("readOnlyPort").unwrap().unwrap().value, Value::from(10255));
        assert_eq!(c.flag("kubeconfig").unwrap().unwrap().value, "/k");
    }

    #[test]
    fn broken_config_only_blocks_keys_not_set_by_flags() {
        let d = root_with(&[
            (
                "/etc/systemd/system/kubelet.service",
                "[Service]\nExecStart=/usr/bin/kubelet --config=/var/lib/kubelet/config.yaml --read-only-port=0\n",
            ),
            ("/var/lib/kubelet/config.yaml", "kind: KubeletConfiguration\nfoo: [\n"),
        ]);
        let c = discover(&offline(d.path()), &KUBELET).unwrap();
        assert!(matches!(c.config, ConfigState::Failed { .. }));
        assert_eq!(c.lookup("readOnlyPort").unwrap().unwrap().value, Value::from(0));
        let e = c.lookup("authorization.mode").unwrap_err();
        assert!(e.to_string().contains("/var/lib/kubelet/config.yaml"), "{e}");
    }

    #[test]
    fn well_known_fallback_and_not_found() {
        let d = root_with(&[("/var/lib/kubelet/config.yaml", "kind: KubeletConfiguration\nreadOnlyPort: 10255\n")]);
        let c = discover(&offline(d.path()), &KUBELET).unwrap();
        assert!(matches!(c.discovery, Discovery::WellKnown { .. }));
        assert_eq!(c.lookup("readOnlyPort").unwrap().unwrap().value, Value::from(10255));
        let empty = root_with(&[("/etc/hostname", "x\n")]);
        assert!(discover(&offline(empty.path()), &KUBELET).is_none());
        let f = KubeletFacts { searched: searched(&offline(empty.path()), &KUBELET), kubelet: None };
        assert!(f.not_found_reason().starts_with("no kubelet found (searched: kubelet.service"));
    }

    #[test]
    fn live_process_wins_over_unit() {
        let d = root_with(&[
            ("/proc/4242/comm", "kubelet\n"),
            ("/proc/77/comm", "bash\n"),
            ("/etc/systemd/system/kubelet.service", "[Service]\nExecStart=/usr/bin/kubelet --config=/wrong.yaml\n"),
            ("/etc/kubelet/config.yaml", "kind: KubeletConfiguration\nseccompDefault: true\n"),
        ]);
        crate::testutil::write(
            d.path(),
            "/proc/4242/cmdline",
            b"/usr/local/bin/kubelet\0--config=/etc/kubelet/config.yaml\0--hostname-override\0node1\0",
        );
        let c = discover(&live_like(d.path()), &KUBELET).unwrap();
        assert_eq!(c.discovery, Discovery::Process { pid: 4242 });
        assert_eq!(c.config_path(), Some("/etc/kubelet/config.yaml"));
        assert_eq!(c.lookup("seccompDefault").unwrap().unwrap().value, Value::Bool(true));
        let h = c.lookup("--hostname-override").unwrap().unwrap();
        assert_eq!(h.value, Value::from("node1"));
        assert_eq!(h.provenance.source(), "/proc/4242/cmdline");
        // The unit is still known, for its file permissions.
        assert!(c.service.is_some());
    }
}
