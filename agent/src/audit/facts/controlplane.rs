//! The control plane as the node sees it: the API server URL and cluster CA
//! from the kubelet's kubeconfig, the kubelet's own version, and (live only)
//! a layered probe of the API server: DNS, TCP 6443, TCP 8132
//! (konnectivity), TLS verified against the cluster CA, `GET /version`.
//!
//! Kubeconfig location: the kubelet discovery (another module) is the
//! eventual source; until then a check parameter names the file, with the
//! well-known defaults [`KUBECONFIG_DEFAULTS`]. [`kubeconfig_path`] is the
//! one hook to swap.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use super::{FactError, Facts, Gather};
use crate::audit::host::Host;
use crate::audit::host::net::Step;

/// Where kubeadm-style and Scaleway installs put the kubelet's kubeconfig.
pub const KUBECONFIG_DEFAULTS: [&str; 2] = ["/etc/kubernetes/kubelet.conf", "/var/lib/kubelet/kubeconfig"];
/// The component versions file the Scaleway installer writes.
pub const VERSIONS_FILE: &str = "/etc/scw-k8s-versions.json";
const KUBECONFIG_LIMIT: u64 = 1024 * 1024;

/// The kubeconfig file to use: the explicit parameter, else the first
/// well-known path that exists.
pub fn kubeconfig_path(host: &Host, param: &str) -> Option<String> {
    if !param.is_empty() {
        return Some(param.to_string());
    }
    KUBECONFIG_DEFAULTS.iter().find(|p| host.exists(p)).map(|p| p.to_string())
}

#[derive(Debug, Deserialize)]
struct RawKubeconfig {
    #[serde(default)]
    clusters: Vec<RawNamedCluster>,
    #[serde(default)]
    contexts: Vec<RawNamedContext>,
    #[serde(default, rename = "current-context")]
    current_context: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawNamedCluster {
    name: String,
    cluster: RawCluster,
}

#[derive(Debug, Deserialize)]
struct RawCluster {
    server: String,
    #[serde(default, rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(default, rename = "certificate-authority")]
    ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawNamedContext {
    name: String,
    context: RawContext,
}

#[derive(Debug, Deserialize)]
struct RawContext {
    cluster: String,
}

/// The API server of the kubelet's kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServer {
    pub kubeconfig: String,
    pub url: String,
    pub host: String,
    pub port: u16,
    /// PEM of the cluster CA.
    pub ca_pem: Vec<u8>,
    /// Where the CA came from (embedded or a file path).
    pub ca_source: String,
}

/// Parse a kubeconfig and load its CA. Relative CA paths are relative to
/// the kubeconfig's directory, as in kubectl.
pub fn load_api_server(host: &Host, path: &str) -> Result<ApiServer, FactError> {
    let text = host.read_text_limited(path, KUBECONFIG_LIMIT)?;
    let raw: RawKubeconfig =
        serde_saphyr::from_str(&text).map_err(|e| FactError::new(format!("{path}: not a kubeconfig: {e}")))?;
    let cluster_name = raw
        .current_context
        .as_ref()
        .and_then(|c| raw.contexts.iter().find(|x| &x.name == c))
        .map(|c| c.context.cluster.clone());
    let cluster = match &cluster_name {
        Some(n) => raw.clusters.iter().find(|c| &c.name == n),
        None => raw.clusters.first(),
    }
    .ok_or_else(|| FactError::new(format!("{path}: no cluster for the current context")))?;
    let (host_part, port) = parse_https_url(&cluster.cluster.server)
        .ok_or_else(|| FactError::new(format!("{path}: server {:?} is not an https:// URL", cluster.cluster.server)))?;
    let (ca_pem, ca_source) = match (&cluster.cluster.ca_data, &cluster.cluster.ca_file) {
        (Some(d), _) => {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map_err(|e| FactError::new(format!("{path}: certificate-authority-data is not base64: {e}")))?;
            (pem, format!("{path} (certificate-authority-data)"))
        }
        (None, Some(f)) => {
            let full = if f.starts_with('/') {
                f.clone()
            } else {
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                format!("{dir}/{f}")
            };
            (host.read_bytes_limited(&full, KUBECONFIG_LIMIT)?, full)
        }
        (None, None) => return Err(FactError::new(format!("{path}: the cluster has no certificate authority"))),
    };
    Ok(ApiServer {
        kubeconfig: path.to_string(),
        url: cluster.cluster.server.clone(),
        host: host_part,
        port,
        ca_pem,
        ca_source,
    })
}

/// `https://host[:port][/path]` to (host, port); IPv6 literals in brackets.
pub fn parse_https_url(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h.to_string(), after.strip_prefix(':').map(str::parse).transpose().ok()?.unwrap_or(443))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (authority.to_string(), 443),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

/// The Scaleway region of a Kosmos API server host
/// (`<uuid>.api.k8s.<region>.scw.cloud`).
pub fn region_of(host: &str) -> Option<String> {
    let rest = host.strip_suffix(".scw.cloud")?;
    let (_, region) = rest.rsplit_once(".api.k8s.")?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_string())
}

/// A Kubernetes version `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parse `v1.33.4`, `1.33.4-scw1`, `Kubernetes v1.33.4`.
pub fn parse_version(s: &str) -> Option<KubeVersion> {
    let v = s.split_whitespace().last()?.trim_start_matches('v');
    let mut it = v.split(['.', '-', '+']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.trim_end_matches('+').parse().ok()?;
    let patch = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some(KubeVersion { major, minor, patch })
}

/// The kubelet's version and where it came from.
pub fn kubelet_version(host: &Host) -> Result<(KubeVersion, String), FactError> {
    match host.read_optional(VERSIONS_FILE) {
        Ok(Some(t)) => {
            let v: serde_json::Value =
                serde_json::from_str(&t).map_err(|e| FactError::new(format!("{VERSIONS_FILE}: {e}")))?;
            if let Some(k) = v.get("kubelet").and_then(|k| k.as_str()) {
                return parse_version(k)
                    .map(|x| (x, VERSIONS_FILE.to_string()))
                    .ok_or_else(|| FactError::new(format!("{VERSIONS_FILE}: kubelet version {k:?} not understood")));
            }
        }
        Ok(None) => {}
        Err(e) => return Err(e.into()),
    }
    let out = host.run("kubelet", &["--version"])?;
    let text = out.stdout_text("kubelet --version")?;
    parse_version(text.trim())
        .map(|v| (v, "kubelet --version".to_string()))
        .ok_or_else(|| FactError::new(format!("kubelet --version: {:?} not understood", text.trim())))
}

/// Per-step timeouts of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timeouts {
    pub dns: Duration,
    pub connect: Duration,
    pub tls: Duration,
}

/// The layered probe of the API server.
#[derive(Debug, Clone)]
pub struct Probe {
    pub api: ApiServer,
    pub dns: Step<Vec<std::net::SocketAddr>>,
    pub tcp: Option<Step<()>>,
    pub konnectivity: Option<Step<()>>,
    pub tls: Option<Step<()>>,
    pub version: Option<Step<String>>,
}

/// A probe, shared by the checks that read it.
pub type ProbeResult = Rc<Result<Probe, FactError>>;

/// Probe results cached per (kubeconfig, timeouts) for the run, so the
/// several control-plane checks probe once.
#[derive(Debug, Default)]
pub struct ControlPlaneFacts {
    probes: RefCell<BTreeMap<(String, Timeouts), ProbeResult>>,
}

impl Gather for ControlPlaneFacts {
    fn gather(_facts: &Facts<'_>) -> Self {
        ControlPlaneFacts::default()
    }
}

impl ControlPlaneFacts {
    pub fn probe(&self, host: &Host, kubeconfig: &str, t: Timeouts) -> ProbeResult {
        let key = (kubeconfig.to_string(), t);
        if let Some(p) = self.probes.borrow().get(&key) {
            return p.clone();
        }
        let p = Rc::new(run_probe(host, kubeconfig, t));
        self.probes.borrow_mut().insert(key, p.clone());
        p
    }
}

/// The konnectivity agent's port on the API server host.
pub const KONNECTIVITY_PORT: u16 = 8132;

fn run_probe(host: &Host, kubeconfig: &str, t: Timeouts) -> Result<Probe, FactError> {
    let api = load_api_server(host, kubeconfig)?;
    let dns = host.resolve_host(&api.host, api.port, t.dns);
    let mut probe = Probe { api, dns, tcp: None, konnectivity: None, tls: None, version: None };
    let Ok(addrs) = probe.dns.result.clone() else { return Ok(probe) };
    let konn: Vec<std::net::SocketAddr> =
        addrs.iter().map(|a| std::net::SocketAddr::new(a.ip(), KONNECTIVITY_PORT)).collect();
    let k = host.tcp_connect(&konn, t.connect);
    probe.konnectivity = Some(Step { result: k.result.map(|_| ()), elapsed: k.elapsed });
    let tcp = host.tcp_connect(&addrs, t.connect);
    let stream = match tcp.result {
        Ok(s) => {
            probe.tcp = Some(Step { result: Ok(()), elapsed: tcp.elapsed });
            s
        }
        Err(e) => {
            probe.tcp = Some(Step { result: Err(e), elapsed: tcp.elapsed });
            return Ok(probe);
        }
    };
    let (tls, http) = host.tls_get(stream, &probe.api.ca_pem.clone(), &probe.api.host.clone(), "/version", t.tls);
    probe.tls = Some(tls);
    probe.version = http.map(|h| Step {
        result: h.result.and_then(|r| {
            if r.status != 200 {
                return Err(format!("GET /version: HTTP {}", r.status));
            }
            let v: serde_json::Value =
                serde_json::from_str(&r.body).map_err(|e| format!("GET /version: not JSON: {e}"))?;
            v.get("gitVersion")
                .and_then(|g| g.as_str())
                .map(str::to_string)
                .ok_or_else(|| "GET /version: no gitVersion".to_string())
        }),
        elapsed: h.elapsed,
    });
    Ok(probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{offline, root_with};

    pub const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority: ca.crt\n- name: kosmos\n  cluster:\n    server: https://0b6b0b6b-aaaa.api.k8s.fr-par.scw.cloud:6443\n    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\ncontexts:\n- name: k\n  context:\n    cluster: kosmos\n    user: kubelet\ncurrent-context: k\nusers:\n- name: kubelet\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n";

    #[test]
    fn kubeconfig_and_urls() {
        let d = root_with(&[("/etc/kubernetes/kubelet.conf", KUBECONFIG), ("/etc/kubernetes/ca.crt", "PEM")]);
        let h = offline(d.path());
        assert_eq!(kubeconfig_path(&h, "").as_deref(), Some("/etc/kubernetes/kubelet.conf"));
        let a = load_api_server(&h, "/etc/kubernetes/kubelet.conf").unwrap();
        assert_eq!(a.host, "0b6b0b6b-aaaa.api.k8s.fr-par.scw.cloud");
        assert_eq!(a.port, 6443);
        assert!(a.ca_pem.starts_with(b"-----BEGIN"));
        assert_eq!(region_of(&a.host).as_deref(), Some("fr-par"));
        let other =
            KUBECONFIG.replace("current-context: k", "current-context: x").replace("cluster: kosmos", "cluster: other");
        crate::testutil::write(d.path(), "/k2", other.as_bytes());
        // Unknown context: the first cluster, with a relative CA path.
        assert!(load_api_server(&h, "/k2").is_err());
        crate::testutil::write(
            d.path(),
            "/etc/kubernetes/k3",
            KUBECONFIG.replace("current-context: k\n", "").as_bytes(),
        );
        let a = load_api_server(&h, "/etc/kubernetes/k3").unwrap();
        assert_eq!(a.ca_source, "/etc/kubernetes/ca.crt");
        crate::testutil::write(d.path(), "/bad", b"clusters: [[[");
        assert!(load_api_server(&h, "/bad").is_err());
        assert_eq!(parse_https_url("https://[2001:db8::1]:6443/x"), Some(("2001:db8::1".into(), 6443)));
        assert_eq!(parse_https_url("https://h"), Some(("h".into(), 443)));
        assert!(parse_https_url("http://h").is_none());
        assert!(region_of("example.com").is_none());
        assert_eq!(parse_version("Kubernetes v1.33.4").unwrap().minor, 33);
        assert_eq!(parse_version("v1.31.2-scw1").unwrap().patch, 2);
        assert!(parse_version("garbage").is_none());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_https_url(&s);
            let _ = region_of(&s);
            let _ = parse_version(&s);
            let _ = serde_saphyr::from_str::<RawKubeconfig>(&s);
        }
    }
}
