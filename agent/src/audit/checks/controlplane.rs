//! Control-plane checks (family `controlplane`): the API server is reachable
//! layer by layer (DNS, TCP, TLS against the cluster CA, `GET /version`),
//! the konnectivity port answers, the kubelet/API server version skew is
//! within policy, the Kubernetes minor is supported, and the cluster region
//! is an allowed one (the `hds` profile requires fr-par).

use std::time::Duration;

use chrono::NaiveDate;
use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::controlplane::{
    ControlPlaneFacts, KONNECTIVITY_PORT, KUBECONFIG_DEFAULTS, Probe, ProbeResult, Timeouts, kubeconfig_path,
    kubelet_version, load_api_server, parse_version, region_of,
};
use crate::audit::host::net::Step;
use crate::audit::model::{Evidence, Outcome, Severity};

/// Upstream end-of-life dates of Kubernetes minors (facts file); override
/// with the `eol_dates` parameter as new minors appear.
pub const EOL_DATES: &[&str] = &[
    "1.30=2025-07-15",
    "1.31=2025-11-11",
    "1.32=2026-02-28",
    "1.33=2026-06-28",
    "1.34=2026-10-27",
    "1.35=2027-02-28",
    "1.36=2027-06-28",
];

fn probe_params(c: Check) -> Check {
    c.param(ParamSpec::str(
        "kubeconfig",
        "",
        "kubelet kubeconfig (empty: /etc/kubernetes/kubelet.conf, then /var/lib/kubelet/kubeconfig)",
    ))
    .param(ParamSpec::int("dns_timeout_ms", 3000, "DNS resolution timeout"))
    .param(ParamSpec::int("connect_timeout_ms", 3000, "TCP connect timeout"))
    .param(ParamSpec::int("tls_timeout_ms", 5000, "TLS handshake and HTTP timeout"))
}

fn ms(p: &Params, name: &str) -> Duration {
    Duration::from_millis(u64::try_from(p.int(name)).unwrap_or(3000).max(1))
}

/// The kubeconfig the kubelet really uses: the `kubeconfig` parameter, else
/// the discovered kubelet's `--kubeconfig` (process, unit or drop-ins), else
/// the well-known paths.
fn kubeconfig(facts: &Facts<'_>, params: &Params) -> Result<String, Outcome> {
    if params.str("kubeconfig").is_empty() {
        let kubelet = facts.get::<crate::audit::facts::kubelet::KubeletFacts>();
        if let Some(Ok(Some(flag))) = kubelet.kubelet.as_ref().map(|c| c.flag("kubeconfig")) {
            return Ok(flag.value.clone());
        }
    }
    kubeconfig_path(facts.host(), params.str("kubeconfig")).ok_or_else(|| {
        Outcome::not_applicable(format!(
            "no kubelet kubeconfig found ({}): not a joined node",
            KUBECONFIG_DEFAULTS.join(", ")
        ))
    })
}

fn probe(facts: &Facts<'_>, params: &Params) -> Result<ProbeResult, Outcome> {
    if !facts.host().is_live() {
        return Err(Outcome::not_applicable("offline root: connectivity is only probed on the running node"));
    }
    let path = kubeconfig(facts, params)?;
    let t = Timeouts {
        dns: ms(params, "dns_timeout_ms"),
        connect: ms(params, "connect_timeout_ms"),
        tls: ms(params, "tls_timeout_ms"),
    };
    Ok(facts.get::<ControlPlaneFacts>().probe(facts.host(), &path, t))
}

fn step_json<T>(s: &Step<T>) -> serde_json::Value {
    json!({"ok": s.result.is_ok(), "elapsed_ms": s.elapsed.as_millis() as u64, "error": s.result.as_ref().err()})
}

/// One layer of the probe: name, result, JSON detail, time taken.
type Layer<'a> = (&'a str, Option<Result<(), String>>, Option<serde_json::Value>, Option<Duration>);

fn reachable(facts: &Facts<'_>, params: &Params) -> Outcome {
    let p = match probe(facts, params) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let p = match &*p {
        Ok(p) => p,
        Err(e) => return Outcome::error(e.to_string()),
    };
    let mut observed = serde_json::Map::new();
    let mut evidence =
        vec![Evidence::new(&p.api.kubeconfig, format!("server {}, CA from {}", p.api.url, p.api.ca_source))];
    observed.insert("dns".into(), step_json(&p.dns));
    let tcp_name = format!("TCP {}", p.api.port);
    let layers: [Layer<'_>; 4] = [
        ("DNS", Some(p.dns.result.clone().map(|_| ())), None, Some(p.dns.elapsed)),
        (
            &tcp_name,
            p.tcp.as_ref().map(|s| s.result.clone()),
            p.tcp.as_ref().map(step_json),
            p.tcp.as_ref().map(|s| s.elapsed),
        ),
        (
            "TLS",
            p.tls.as_ref().map(|s| s.result.clone()),
            p.tls.as_ref().map(step_json),
            p.tls.as_ref().map(|s| s.elapsed),
        ),
        (
            "GET /version",
            p.version.as_ref().map(|s| s.result.clone().map(|_| ())),
            p.version.as_ref().map(step_json),
            p.version.as_ref().map(|s| s.elapsed),
        ),
    ];
    let mut broken = None;
    for (name, result, json_step, elapsed) in &layers {
        if let Some(j) = json_step {
            observed.insert(name.to_lowercase().replace([' ', '/'], "_"), j.clone());
        }
        match result {
            Some(Ok(())) => {
                evidence.push(Evidence::new(*name, format!("ok in {} ms", elapsed.unwrap_or_default().as_millis())))
            }
            Some(Err(e)) => {
                evidence.push(Evidence::new(*name, e.clone()));
                broken.get_or_insert((name.to_string(), e.clone()));
            }
            None => {}
        }
    }
    if let Some(Step { result: Ok(v), .. }) = &p.version {
        observed.insert("server_version".into(), json!(v));
    }
    let latency: u128 = p.tcp.as_ref().map_or(0, |s| s.elapsed.as_millis());
    observed.insert("tcp_connect_latency_ms".into(), json!(latency as u64));
    match broken {
        None => Outcome::pass().observed(serde_json::Value::Object(observed)).with_evidence(evidence),
        Some((layer, e)) => Outcome::fail()
            .observed(serde_json::Value::Object(observed))
            .expected("DNS, TCP, TLS (cluster CA) and GET /version all succeed")
            .with_evidence(evidence)
            .note(format!("the API server is unreachable at the {layer} layer: {e}")),
    }
}

fn konnectivity(facts: &Facts<'_>, params: &Params) -> Outcome {
    let p = match probe(facts, params) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let p = match &*p {
        Ok(p) => p,
        Err(e) => return Outcome::error(e.to_string()),
    };
    match (&p.dns.result, &p.konnectivity) {
        (Err(e), _) => Outcome::fail().evidence("DNS", e.clone()).note(format!("cannot resolve {}: {e}", p.api.host)),
        (Ok(_), Some(s)) => {
            let o = Outcome::verdict(s.result.is_ok()).observed(step_json(s)).evidence(
                format!("TCP {}:{KONNECTIVITY_PORT}", p.api.host),
                s.result
                    .as_ref()
                    .err()
                    .cloned()
                    .unwrap_or_else(|| format!("connected in {} ms", s.elapsed.as_millis())),
            );
            match &s.result {
                Ok(()) => o,
                Err(e) => o.note(format!("konnectivity port {KONNECTIVITY_PORT} unreachable: {e} (kubectl logs/exec/port-forward to this node will fail)")),
            }
        }
        (Ok(_), None) => Outcome::error("konnectivity port not probed"),
    }
}

fn skew(facts: &Facts<'_>, params: &Params) -> Outcome {
    let p = match probe(facts, params) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let server = match &*p {
        Ok(Probe { version: Some(Step { result: Ok(v), .. }), .. }) => v.clone(),
        Ok(_) => return Outcome::error("the API server version is unknown (see controlplane.api_server_reachable)"),
        Err(e) => return Outcome::error(e.to_string()),
    };
    let Some(sv) = parse_version(&server) else {
        return Outcome::error(format!("API server version {server:?} not understood"));
    };
    let (kv, source) = match kubelet_version(facts.host()) {
        Ok(x) => x,
        Err(e) => return Outcome::error(e.to_string()),
    };
    // Kubelet must not be newer, and at most 3 minors older (2 before 1.25).
    let max_behind = if kv.minor < 25 { 2 } else { 3 };
    let ok = kv.major == sv.major && kv.minor <= sv.minor && sv.minor - kv.minor <= max_behind;
    let o = Outcome::verdict(ok)
        .observed(json!({"kubelet": kv.to_string(), "api_server": sv.to_string()}))
        .expected(format!("kubelet not newer than the API server and at most {max_behind} minors older"))
        .evidence(source, format!("kubelet {kv}"))
        .evidence("GET /version", format!("API server {server}"));
    if ok {
        o
    } else {
        o.note(format!("kubelet {kv} and API server {sv} are outside the Kubernetes version skew policy"))
    }
}

fn supported(facts: &Facts<'_>, params: &Params) -> Outcome {
    let (kv, source) = match kubelet_version(facts.host()) {
        Ok(x) => x,
        Err(e) if e.0.contains("not available") || e.0.contains("offline root") => {
            return Outcome::not_applicable(format!("kubelet version unknown: {e}"));
        }
        Err(e) => return Outcome::error(e.to_string()),
    };
    let minor = format!("{}.{}", kv.major, kv.minor);
    let mut eol = None;
    for entry in params.list("eol_dates") {
        let Some((m, d)) = entry.split_once('=') else {
            return Outcome::error(format!("eol_dates entry {entry:?} is not MINOR=YYYY-MM-DD"));
        };
        let Ok(date) = NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d") else {
            return Outcome::error(format!("eol_dates entry {entry:?}: bad date"));
        };
        if m.trim() == minor {
            eol = Some(date);
        }
    }
    let Some(eol) = eol else {
        return Outcome::error(format!("no end-of-life date known for Kubernetes {minor}; add it to eol_dates"));
    };
    let today = chrono::Utc::now().date_naive();
    Outcome::verdict(today <= eol)
        .observed(json!({"version": kv.to_string(), "end_of_life": eol.to_string()}))
        .expected(format!("a Kubernetes minor still supported on {today}"))
        .evidence(source, format!("kubelet {kv}; upstream end of life of {minor}: {eol}"))
}

fn region(facts: &Facts<'_>, params: &Params) -> Outcome {
    let path = match kubeconfig(facts, params) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let api = match load_api_server(facts.host(), &path) {
        Ok(a) => a,
        Err(e) => return Outcome::error(e.to_string()),
    };
    let Some(r) = region_of(&api.host) else {
        return Outcome::error(format!(
            "{}: API server host {} is not of the form <id>.api.k8s.<region>.scw.cloud",
            path, api.host
        ));
    };
    let allowed = params.list("allowed_regions");
    Outcome::verdict(allowed.contains(&r))
        .observed(json!(r))
        .expected(json!(allowed))
        .evidence(path, format!("server {}", api.url))
}

pub fn checks() -> Vec<Check> {
    vec![
        probe_params(Check::new("controlplane.api_server_reachable", "API server reachable: DNS, TCP, TLS with the cluster CA, GET /version", Severity::High, reachable))
            .rationale("Control-plane connectivity is the customer's responsibility for external nodes; when it breaks the node goes NotReady and its pods are evicted. Testing each layer separately says whether DNS, the network path, TLS trust or the API server itself is at fault.")
            .remediation("Allow outbound TCP 6443 to the API server, check DNS resolution of its name, the clock, and that the kubelet kubeconfig's CA is the cluster's current CA."),
        probe_params(Check::new("controlplane.konnectivity_reachable", "Konnectivity port (TCP 8132) of the API server reachable", Severity::High, konnectivity))
            .rationale("The control plane reaches kubelets (logs, exec, port-forward, metrics) through the konnectivity agent, which connects out to TCP 8132 on the API server host.")
            .remediation("Allow outbound TCP 8132 to the API server's address."),
        probe_params(Check::new("controlplane.version_skew", "Kubelet version within the skew policy of the API server", Severity::High, skew))
            .rationale("The kubelet must not be newer than kube-apiserver and may be at most 3 minors older; Scaleway upgrades the control plane after end of support while external nodes are upgraded by hand, so skew appears silently.")
            .remediation("Upgrade the kubelet on this node (re-run the Kosmos node installer for the cluster's version)."),
        Check::new("controlplane.kubernetes_version_supported", "Kubernetes minor of the kubelet still supported upstream", Severity::Medium, supported)
            .param(ParamSpec::list("eol_dates", EOL_DATES, "upstream end-of-life dates, MINOR=YYYY-MM-DD"))
            .rationale("An end-of-life Kubernetes minor gets no security fixes, and Scaleway forces control-plane upgrades after end of support, after which an old kubelet breaks the skew policy.")
            .remediation("Plan the upgrade of the cluster and of this node to a supported minor."),
        Check::new("controlplane.region", "Cluster region is an allowed Scaleway region", Severity::Medium, region)
            .param(ParamSpec::str("kubeconfig", "", "kubelet kubeconfig (empty: well-known paths)"))
            .param(ParamSpec::list("allowed_regions", &["fr-par", "nl-ams", "pl-waw", "it-mil"], "regions the cluster may be in"))
            .rationale("Data residency rules (HDS health data: fr-par only) bind the control plane's region; the region is read from the API server name of the node's kubeconfig.")
            .remediation("Join the node to a cluster in an allowed region."),
    ]
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use serde_json::json;

    use crate::audit::model::Status;
    use crate::testutil::{eval, eval_with, offline, root_with, write};

    struct Pki {
        ca_pem: String,
        cert_pem: String,
        key_pem: String,
    }

    fn pki(expired: bool) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ca.distinguished_name.push(rcgen::DnType::CommonName, format!("test cluster CA {n}"));
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &issuer).unwrap();
        Pki { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// A tiny API server: TLS with the given certificate, `/version` JSON,
    /// optionally delaying every answer.
    fn api_server(p: &Pki, delay_ms: u64) -> u16 {
        use rustls::pki_types::pem::PemObject;
        let certs =
            rustls::pki_types::CertificateDer::pem_slice_iter(p.cert_pem.as_bytes()).map(Result::unwrap).collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let cfg = cfg.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
                    let mut conn = rustls::ServerConnection::new(cfg).unwrap();
                    let mut s = s;
                    let mut tls = rustls::Stream::new(&mut conn, &mut s);
                    let mut buf = [0u8; 1024];
                    if tls.read(&mut buf).is_ok() {
                        let body = r#"{"major":"1","minor":"33","gitVersion":"v1.33.4"}"#;
                        let _ = write!(
                            tls,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = tls.flush();
                    }
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        port
    }

    fn node(ca_pem: &str, port: u16, kubelet: &str) -> tempfile::TempDir {
        let kc = format!(
            "apiVersion: v1\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: /etc/kubernetes/pki/ca.crt\ncontexts:\n- name: c\n  context:\n    cluster: c\ncurrent-context: c\n"
        );
        let d = root_with(&[("/etc/kubernetes/kubelet.conf", &kc), ("/etc/kubernetes/pki/ca.crt", ca_pem)]);
        write(d.path(), "/etc/scw-k8s-versions.json", format!("{{\"kubelet\": \"{kubelet}\"}}").as_bytes());
        d
    }

    use crate::testutil::live_recorded as live;

    fn fast() -> Vec<(&'static str, serde_json::Value)> {
        vec![("connect_timeout_ms", json!(300)), ("tls_timeout_ms", json!(300))]
    }

    #[test]
    fn reachable_server_and_skew() {
        let p = pki(false);
        let port = api_server(&p, 0);
        let d = node(&p.ca_pem, port, "1.32.1");
        let h = live(d.path());
        let o = eval_with("controlplane.api_server_reachable", &h, &fast());
        assert_eq!(o.status, Status::Pass, "{o:?}");
        assert_eq!(o.observed.unwrap()["server_version"], "v1.33.4");
        assert_eq!(eval_with("controlplane.version_skew", &h, &fast()).status, Status::Pass);
        // Port 8132 is closed on loopback.
        assert_eq!(eval_with("controlplane.konnectivity_reachable", &h, &fast()).status, Status::Fail);
        let d = node(&p.ca_pem, port, "1.34.0");
        assert_eq!(eval_with("controlplane.version_skew", &live(d.path()), &fast()).status, Status::Fail);
        let d = node(&p.ca_pem, port, "1.29.0");
        assert_eq!(eval_with("controlplane.version_skew", &live(d.path()), &fast()).status, Status::Fail);
    }

    fn layer_failure(o: &crate::audit::model::Outcome, layer: &str, detail: &str) {
        assert_eq!(o.status, Status::Fail, "{o:?}");
        let r = o.reason.as_deref().unwrap();
        assert!(r.contains(&format!("at the {layer}")) && r.contains(detail), "{r}");
    }

    #[test]
    fn wrong_ca_expired_closed_and_slow() {
        let good = pki(false);
        let other = pki(false);
        let port = api_server(&good, 0);
        let d = node(&other.ca_pem, port, "1.33.0");
        layer_failure(
            &eval_with("controlplane.api_server_reachable", &live(d.path()), &fast()),
            "TLS",
            "UnknownIssuer",
        );
        let expired = pki(true);
        let port = api_server(&expired, 0);
        let d = node(&expired.ca_pem, port, "1.33.0");
        layer_failure(
            &eval_with("controlplane.api_server_reachable", &live(d.path()), &fast()),
            "TLS",
            "certificate expired",
        );
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = node(&good.ca_pem, closed, "1.33.0");
        let o = eval_with("controlplane.api_server_reachable", &live(d.path()), &fast());
        layer_failure(&o, "TCP", "Connection refused");
        assert_eq!(eval_with("controlplane.version_skew", &live(d.path()), &fast()).status, Status::Error);
        let port = api_server(&good, 1500);
        let d = node(&good.ca_pem, port, "1.33.0");
        let start = std::time::Instant::now();
        layer_failure(
            &eval_with("controlplane.api_server_reachable", &live(d.path()), &fast()),
            "TLS",
            "no TLS answer",
        );
        assert!(start.elapsed() < std::time::Duration::from_millis(1400));
    }

    #[test]
    fn offline_region_and_eol() {
        let d = root_with(&[
            (
                "/etc/kubernetes/kubelet.conf",
                "clusters:\n- name: c\n  cluster:\n    server: https://x.api.k8s.nl-ams.scw.cloud:6443\n    certificate-authority-data: eA==\n",
            ),
            ("/etc/scw-k8s-versions.json", "{\"kubelet\": \"1.30.2\"}"),
        ]);
        let h = offline(d.path());
        assert_eq!(eval("controlplane.api_server_reachable", &h).status, Status::NotApplicable);
        assert_eq!(eval("controlplane.region", &h).status, Status::Pass);
        assert_eq!(
            eval_with("controlplane.region", &h, &[("allowed_regions", json!(["fr-par"]))]).status,
            Status::Fail
        );
        assert_eq!(eval("controlplane.kubernetes_version_supported", &h).status, Status::Fail);
        assert_eq!(
            eval_with("controlplane.kubernetes_version_supported", &h, &[("eol_dates", json!(["1.30=2999-01-01"]))])
                .status,
            Status::Pass
        );
        assert_eq!(
            eval_with("controlplane.kubernetes_version_supported", &h, &[("eol_dates", json!(["1.31=2999-01-01"]))])
                .status,
            Status::Error
        );
        let empty = root_with(&[("/etc/hostname", "x")]);
        assert_eq!(eval("controlplane.region", &offline(empty.path())).status, Status::NotApplicable);
        assert_eq!(
            eval("controlplane.kubernetes_version_supported", &offline(empty.path())).status,
            Status::NotApplicable
        );
    }
}
