//! Unit tests of the kubelet checks, on temporary roots.

use super::*;
use crate::audit::facts::kubelet::drift::{DriftInputs, build_snapshot};
use crate::audit::model::Status;
use crate::testutil::{chmod, eval, eval_with, live_like, offline, root_with};

const UNIT_PATH: &str = "/etc/systemd/system/kubelet.service";
const CONFIG_PATH: &str = "/var/lib/kubelet/config.yaml";

const GOOD_CONFIG: &str = "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
readOnlyPort: 0
streamingConnectionIdleTimeout: 4h0m0s
makeIPTablesUtilChains: true
eventRecordQPS: 5
tlsCertFile: /var/lib/kubelet/pki/kubelet.crt
tlsPrivateKeyFile: /var/lib/kubelet/pki/kubelet.key
rotateCertificates: true
featureGates:
  RotateKubeletServerCertificate: true
tlsCipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]
podPidsLimit: 4096
seccompDefault: true
protectKernelDefaults: true
";

fn unit(extra: &str) -> String {
    format!(
        "[Service]\nExecStart=/usr/bin/kubelet --config={CONFIG_PATH} --kubeconfig=/etc/kubernetes/kubelet.conf {extra}\n"
    )
}

/// A well-configured node, with `extra` flags appended to ExecStart.
fn node(extra: &str, config: &str) -> tempfile::TempDir {
    let d = root_with(&[
        (UNIT_PATH, &unit(extra)),
        (CONFIG_PATH, config),
        ("/etc/kubernetes/kubelet.conf", "apiVersion: v1\nkind: Config\nusers: []\n"),
        ("/etc/kubernetes/pki/ca.crt", "ca"),
        ("/etc/sysctl.d/90-kubelet.conf", "vm.overcommit_memory = 1\nkernel.panic = 10\nkernel.panic_on_oops = 1\n"),
    ]);
    chmod(d.path(), UNIT_PATH, 0o600);
    chmod(d.path(), CONFIG_PATH, 0o600);
    chmod(d.path(), "/etc/kubernetes/kubelet.conf", 0o600);
    chmod(d.path(), "/etc/kubernetes/pki/ca.crt", 0o644);
    d
}

const CIS: [&str; 25] = [
    "kubelet.service_file_permissions",
    "kubelet.service_file_ownership",
    "kube_proxy.kubeconfig_permissions",
    "kube_proxy.kubeconfig_ownership",
    "kubelet.kubeconfig_permissions",
    "kubelet.kubeconfig_ownership",
    "kubelet.client_ca_permissions",
    "kubelet.client_ca_ownership",
    "kubelet.config_file_permissions",
    "kubelet.config_file_ownership",
    "kubelet.anonymous_auth",
    "kubelet.authorization_mode",
    "kubelet.client_ca_file",
    "kubelet.read_only_port",
    "kubelet.streaming_connection_idle_timeout",
    "kubelet.make_iptables_util_chains",
    "kubelet.hostname_override",
    "kubelet.event_qps",
    "kubelet.tls_cert_and_key",
    "kubelet.rotate_certificates",
    "kubelet.rotate_server_certificates",
    "kubelet.tls_cipher_suites",
    "kubelet.pod_pids_limit",
    "kubelet.seccomp_default",
    "kube_proxy.metrics_bind_address",
];

#[test]
fn every_cis_control_exactly_once() {
    let all = checks();
    let mut ids: Vec<&str> = Vec::new();
    for c in &all {
        for r in &c.references {
            assert_eq!(r.standard, "CIS Kubernetes Benchmark");
            assert_eq!(r.version, Some("1.12"));
            ids.push(r.id);
        }
    }
    let mut want: Vec<String> = (1..=10).map(|i| format!("4.1.{i}")).collect();
    want.extend((1..=14).map(|i| format!("4.2.{i}")));
    want.push("4.3.1".into());
    let mut got: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for (i, id) in CIS.iter().enumerate() {
        let c = all.iter().find(|c| c.id == *id).unwrap();
        assert_eq!(c.references.len(), 1, "{id}");
        let _ = i;
    }
}

#[test]
fn good_node_passes_every_kubelet_control() {
    let d = node("", GOOD_CONFIG);
    let h = offline(d.path());
    for id in CIS.iter().filter(|i| i.starts_with("kubelet.")) {
        let o = eval(id, &h);
        assert_eq!(o.status, Status::Pass, "{id}: {o:?}");
    }
    for id in CIS.iter().filter(|i| i.starts_with("kube_proxy.")) {
        assert_eq!(eval(id, &h).status, Status::NotApplicable, "{id}");
    }
    assert_eq!(eval("kubelet.protect_kernel_defaults", &h).status, Status::Pass);
}

#[test]
fn no_kubelet_means_not_applicable_everywhere() {
    let d = root_with(&[("/etc/hostname", "x\n")]);
    let h = offline(d.path());
    for c in checks() {
        let o = eval(&c.id, &h);
        assert_eq!(o.status, Status::NotApplicable, "{}", c.id);
        assert!(o.reason.unwrap().starts_with("no kubelet found (searched: "), "{}", c.id);
    }
}

#[test]
fn flags_override_a_good_file() {
    let d = node(
        "--anonymous-auth=true --authorization-mode=AlwaysAllow --read-only-port=10255 --hostname-override=n1 \
         --streaming-connection-idle-timeout=0 --make-iptables-util-chains=false --event-qps=-1 \
         --rotate-certificates=false --feature-gates=RotateKubeletServerCertificate=false \
         --tls-cipher-suites=TLS_RSA_WITH_AES_128_CBC_SHA --pod-max-pids=-1 --seccomp-default=false \
         --protect-kernel-defaults=false",
        GOOD_CONFIG,
    );
    let h = offline(d.path());
    for id in
        CIS.iter().filter(|i| i.starts_with("kubelet.") && !i.contains("_permissions") && !i.contains("_ownership"))
    {
        if ["kubelet.client_ca_file", "kubelet.tls_cert_and_key"].contains(id) {
            continue;
        }
        let o = eval(id, &h);
        assert_eq!(o.status, Status::Fail, "{id}: {o:?}");
        assert!(
            o.evidence.iter().any(|e| e.source.starts_with(UNIT_PATH) && e.detail.contains("flag --")),
            "{id}: {:?}",
            o.evidence
        );
    }
    assert_eq!(eval("kubelet.protect_kernel_defaults", &h).status, Status::Fail);
}

#[test]
fn flag_defaults_fail_without_config_file() {
    let d = root_with(&[(UNIT_PATH, "[Service]\nExecStart=/usr/bin/kubelet\n")]);
    let h = offline(d.path());
    assert_eq!(eval("kubelet.anonymous_auth", &h).status, Status::Fail);
    assert_eq!(eval("kubelet.authorization_mode", &h).status, Status::Fail);
    assert_eq!(eval("kubelet.read_only_port", &h).status, Status::Fail);
    assert_eq!(eval("kubelet.client_ca_file", &h).status, Status::Fail);
    assert_eq!(eval("kubelet.config_file_permissions", &h).status, Status::NotApplicable);
    assert_eq!(eval("kubelet.client_ca_permissions", &h).status, Status::NotApplicable);
    assert_eq!(eval("kubelet.kubeconfig_permissions", &h).status, Status::NotApplicable);
    // Unset values the benchmark accepts.
    assert_eq!(eval("kubelet.rotate_certificates", &h).status, Status::Pass);
    assert_eq!(eval("kubelet.event_qps", &h).status, Status::Pass);
    assert_eq!(eval("kubelet.tls_cipher_suites", &h).status, Status::Fail);
}

#[test]
fn config_file_defaults_pass_auth_controls() {
    let d = node("", "kind: KubeletConfiguration\n");
    let h = offline(d.path());
    let o = eval("kubelet.anonymous_auth", &h);
    assert_eq!(o.status, Status::Pass);
    assert_eq!(o.observed.unwrap()["provenance"], "default");
    assert_eq!(eval("kubelet.authorization_mode", &h).status, Status::Pass);
    assert_eq!(eval("kubelet.read_only_port", &h).status, Status::Pass);
    assert_eq!(eval("kubelet.seccomp_default", &h).status, Status::Fail);
    assert_eq!(eval("kubelet.pod_pids_limit", &h).status, Status::Fail);
    assert_eq!(eval("kubelet.tls_cert_and_key", &h).status, Status::Fail);
}

#[test]
fn server_tls_bootstrap_satisfies_4_2_9() {
    let d = node("", "kind: KubeletConfiguration\nserverTLSBootstrap: true\n");
    let o = eval("kubelet.tls_cert_and_key", &offline(d.path()));
    assert_eq!(o.status, Status::Pass);
    assert!(o.reason.unwrap().contains("serverTLSBootstrap"));
}

#[test]
fn file_permissions_and_ownership() {
    let d = node("", GOOD_CONFIG);
    chmod(d.path(), CONFIG_PATH, 0o644);
    chmod(d.path(), UNIT_PATH, 0o644);
    chmod(d.path(), "/etc/kubernetes/pki/ca.crt", 0o666);
    chmod(d.path(), "/etc/kubernetes/kubelet.conf", 0o640);
    let h = offline(d.path());
    for id in [
        "kubelet.config_file_permissions",
        "kubelet.service_file_permissions",
        "kubelet.client_ca_permissions",
        "kubelet.kubeconfig_permissions",
    ] {
        assert_eq!(eval(id, &h).status, Status::Fail, "{id}");
    }
    std::os::unix::fs::chown(d.path().join(CONFIG_PATH.trim_start_matches('/')), Some(1000), Some(1000)).unwrap();
    assert_eq!(eval("kubelet.config_file_ownership", &h).status, Status::Fail);
    assert_eq!(eval("kubelet.service_file_ownership", &h).status, Status::Pass);
}

#[test]
fn hostile_config_paths_are_errors() {
    // A directory.
    let d = node("", GOOD_CONFIG);
    std::fs::remove_file(d.path().join("var/lib/kubelet/config.yaml")).unwrap();
    std::fs::create_dir(d.path().join("var/lib/kubelet/config.yaml")).unwrap();
    let h = offline(d.path());
    for id in
        ["kubelet.config_file_permissions", "kubelet.anonymous_auth", "kubelet.read_only_port", "kubelet.config_drift"]
    {
        let o = eval(id, &h);
        if id == "kubelet.config_drift" {
            // No state directory in a unit test: not applicable before anything else.
            assert_eq!(o.status, Status::NotApplicable);
            continue;
        }
        assert_eq!(o.status, Status::Error, "{id}: {o:?}");
        assert!(o.reason.unwrap().contains("/var/lib/kubelet/config.yaml"), "{id}");
    }
    // Malformed YAML, but the flag decides.
    let d = node("--read-only-port=0", "kind: KubeletConfiguration\nx: [\n");
    let h = offline(d.path());
    assert_eq!(eval("kubelet.read_only_port", &h).status, Status::Pass);
    let o = eval("kubelet.anonymous_auth", &h);
    assert_eq!(o.status, Status::Error);
    assert!(o.reason.unwrap().contains("invalid YAML"));
    // A huge file.
    let d = node("", GOOD_CONFIG);
    std::fs::File::create(d.path().join("var/lib/kubelet/config.yaml")).unwrap().set_len(100 << 20).unwrap();
    let o = eval("kubelet.seccomp_default", &offline(d.path()));
    assert_eq!(o.status, Status::Error);
    assert!(o.reason.unwrap().contains("limit"));
    // A missing config file named by --config.
    let d = node("", GOOD_CONFIG);
    std::fs::remove_file(d.path().join("var/lib/kubelet/config.yaml")).unwrap();
    assert_eq!(eval("kubelet.config_file_permissions", &offline(d.path())).status, Status::Error);
}

#[test]
fn streaming_timeout_zero_forms() {
    assert!(duration_is_zero("0"));
    assert!(duration_is_zero("0s"));
    assert!(duration_is_zero("0h0m0s"));
    assert!(!duration_is_zero("5m"));
    assert!(!duration_is_zero(""));
    assert!(is_loopback_bind("127.0.0.1:10249"));
    assert!(is_loopback_bind("[::1]:10249"));
    assert!(!is_loopback_bind("0.0.0.0:10249"));
    assert!(!is_loopback_bind(""));
}

#[test]
fn kube_proxy_unit() {
    let d = node("", GOOD_CONFIG);
    crate::testutil::write(
        d.path(),
        "/etc/systemd/system/kube-proxy.service",
        b"[Service]\nExecStart=/usr/bin/kube-proxy --kubeconfig=/var/lib/kube-proxy/kubeconfig --metrics-bind-address=0.0.0.0:10249\n",
    );
    crate::testutil::write(d.path(), "/var/lib/kube-proxy/kubeconfig", b"x");
    chmod(d.path(), "/var/lib/kube-proxy/kubeconfig", 0o644);
    let h = offline(d.path());
    assert_eq!(eval("kube_proxy.metrics_bind_address", &h).status, Status::Fail);
    assert_eq!(eval("kube_proxy.kubeconfig_permissions", &h).status, Status::Fail);
    assert_eq!(eval("kube_proxy.kubeconfig_ownership", &h).status, Status::Pass);
    std::fs::remove_file(d.path().join("var/lib/kube-proxy/kubeconfig")).unwrap();
    assert_eq!(eval("kube_proxy.kubeconfig_permissions", &h).status, Status::NotApplicable);
}

fn cert_pem(days: i64) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["node".into()]).unwrap();
    let end = chrono::Utc::now() + chrono::Duration::days(days);
    use chrono::Datelike;
    p.not_after = rcgen::date_time_ymd(end.year(), end.month() as u8, end.day() as u8);
    let start = chrono::Utc::now() - chrono::Duration::days(400);
    p.not_before = rcgen::date_time_ymd(start.year(), start.month() as u8, start.day() as u8);
    format!("{}{}", p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

#[test]
fn certificate_expiry() {
    let d = node("", GOOD_CONFIG);
    crate::testutil::write(
        d.path(),
        "/etc/kubernetes/kubelet.conf",
        b"apiVersion: v1\nkind: Config\nusers:\n- name: n\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n",
    );
    crate::testutil::write(d.path(), "/var/lib/kubelet/pki/kubelet-client-current.pem", cert_pem(3).as_bytes());
    crate::testutil::write(d.path(), "/var/lib/kubelet/pki/kubelet.crt", cert_pem(20).as_bytes());
    let h = offline(d.path());
    assert_eq!(eval("kubelet.client_cert_expiry", &h).status, Status::Fail);
    assert_eq!(eval("kubelet.client_cert_expiring", &h).status, Status::Fail);
    assert_eq!(eval("kubelet.serving_cert_expiry", &h).status, Status::Pass);
    assert_eq!(eval("kubelet.serving_cert_expiring", &h).status, Status::Fail);
    assert_eq!(eval_with("kubelet.serving_cert_expiring", &h, &[("min_days", json!(10))]).status, Status::Pass);
    // Inline client certificate data.
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(cert_pem(90));
    crate::testutil::write(
        d.path(),
        "/etc/kubernetes/kubelet.conf",
        format!("users:\n- name: n\n  user:\n    client-certificate-data: {data}\n").as_bytes(),
    );
    assert_eq!(eval("kubelet.client_cert_expiring", &h).status, Status::Pass);
    // Token auth: no client certificate.
    crate::testutil::write(d.path(), "/etc/kubernetes/kubelet.conf", b"users:\n- name: n\n  user:\n    token: t\n");
    assert_eq!(eval("kubelet.client_cert_expiry", &h).status, Status::NotApplicable);
    // Garbage certificate.
    crate::testutil::write(d.path(), "/var/lib/kubelet/pki/kubelet.crt", b"garbage");
    assert_eq!(eval("kubelet.serving_cert_expiry", &h).status, Status::Error);
}

#[test]
fn protect_kernel_defaults_needs_the_sysctls() {
    let d = node("", GOOD_CONFIG);
    crate::testutil::write(d.path(), "/etc/sysctl.d/90-kubelet.conf", b"vm.overcommit_memory = 0\n");
    let o = eval("kubelet.protect_kernel_defaults", &offline(d.path()));
    assert_eq!(o.status, Status::Fail);
    assert!(o.reason.unwrap().contains("refuse to start"));
    // Live: runtime values from /proc/sys decide.
    for (k, v) in [("vm/overcommit_memory", "1"), ("kernel/panic", "10"), ("kernel/panic_on_oops", "1")] {
        crate::testutil::write(d.path(), &format!("/proc/sys/{k}"), format!("{v}\n").as_bytes());
    }
    assert_eq!(eval("kubelet.protect_kernel_defaults", &live_like(d.path())).status, Status::Pass);
}

#[test]
fn drift_through_provided_inputs() {
    let d = node("", GOOD_CONFIG);
    let h = offline(d.path());
    let k = crate::audit::facts::Facts::new(&h).get::<KubeletFacts>();
    let before = build_snapshot(k.kubelet.as_ref().unwrap(), None, None, "T1");
    crate::testutil::write(
        d.path(),
        CONFIG_PATH,
        GOOD_CONFIG.replace("podPidsLimit: 4096", "podPidsLimit: 100").as_bytes(),
    );
    let run = |prev: Option<crate::audit::facts::kubelet::drift::Snapshot>| {
        let facts = crate::audit::facts::Facts::new(&h);
        facts.provide(DriftInputs {
            state_dir: Ok("/state".into()),
            previous: Ok(prev),
            pinned: Ok(None),
            now: "T2".into(),
        });
        let all = checks();
        let c = all.iter().find(|c| c.id == "kubelet.config_drift").unwrap();
        (c.evaluate)(&facts, &crate::audit::check::Params::default())
    };
    let o = run(Some(before));
    assert_eq!(o.status, Status::Fail);
    assert_eq!(o.evidence.iter().filter(|e| e.source == "/state/kubelet-last.json").count(), 1, "{:?}", o.evidence);
    assert!(o.evidence[0].detail.contains("podPidsLimit: 4096 [file /var/lib/kubelet/config.yaml] -> 100"));
    let first = run(None);
    assert_eq!(first.status, Status::NotApplicable);
    assert!(first.reason.unwrap().starts_with("first run"));
}
