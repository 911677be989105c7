//! The kubelet families through the real binary: fixture roots with the
//! expected status of all 25 CIS Kubernetes worker controls, hostile config
//! paths, a live kubelet-like process read from /proc, and drift across runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{check_json, finding, fixture_root, run, statuses, validate_report};

/// The 25 controls in benchmark order: (CIS id, check id).
const CIS: [(&str, &str); 25] = [
    ("4.1.1", "kubelet.service_file_permissions"),
    ("4.1.2", "kubelet.service_file_ownership"),
    ("4.1.3", "kube_proxy.kubeconfig_permissions"),
    ("4.1.4", "kube_proxy.kubeconfig_ownership"),
    ("4.1.5", "kubelet.kubeconfig_permissions"),
    ("4.1.6", "kubelet.kubeconfig_ownership"),
    ("4.1.7", "kubelet.client_ca_permissions"),
    ("4.1.8", "kubelet.client_ca_ownership"),
    ("4.1.9", "kubelet.config_file_permissions"),
    ("4.1.10", "kubelet.config_file_ownership"),
    ("4.2.1", "kubelet.anonymous_auth"),
    ("4.2.2", "kubelet.authorization_mode"),
    ("4.2.3", "kubelet.client_ca_file"),
    ("4.2.4", "kubelet.read_only_port"),
    ("4.2.5", "kubelet.streaming_connection_idle_timeout"),
    ("4.2.6", "kubelet.make_iptables_util_chains"),
    ("4.2.7", "kubelet.hostname_override"),
    ("4.2.8", "kubelet.event_qps"),
    ("4.2.9", "kubelet.tls_cert_and_key"),
    ("4.2.10", "kubelet.rotate_certificates"),
    ("4.2.11", "kubelet.rotate_server_certificates"),
    ("4.2.12", "kubelet.tls_cipher_suites"),
    ("4.2.13", "kubelet.pod_pids_limit"),
    ("4.2.14", "kubelet.seccomp_default"),
    ("4.3.1", "kube_proxy.metrics_bind_address"),
];

/// Run the cis-k8s-worker profile on a root; check every CIS id carries its
/// reference, and compare the 25 statuses (given in benchmark order).
fn assert_cis(root: &str, expected: [&str; 25]) -> serde_json::Value {
    let (report, code) = check_json(root, &["--profile", "cis-k8s-worker", "--fail-on", "none"]);
    assert_eq!(code, 0);
    let got = statuses(&report);
    let mut diffs = Vec::new();
    for ((cis, id), want) in CIS.iter().zip(expected) {
        let f = finding(&report, id);
        let refs = f["references"].as_array().unwrap();
        assert!(
            refs.iter()
                .any(|r| r["standard"] == "CIS Kubernetes Benchmark" && r["version"] == "1.12" && r["id"] == *cis),
            "{id} must reference CIS {cis}: {refs:?}"
        );
        match got.get(*id) {
            Some(have) if have == want => {}
            have => diffs.push(format!("{cis} {id}: expected {want}, got {have:?} ({})", f["reason"])),
        }
        if want == "error" || want == "not_applicable" {
            assert!(!f["reason"].as_str().unwrap_or_default().is_empty(), "{id} needs a reason");
        }
    }
    assert!(diffs.is_empty(), "{root}:\n{}", diffs.join("\n"));
    report
}

/// A PEM certificate (plus key) valid for `days` more days, made now.
fn cert_pem(days: i64) -> String {
    use chrono::Datelike;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["node".into()]).unwrap();
    let end = chrono::Utc::now() + chrono::Duration::days(days);
    p.not_after = rcgen::date_time_ymd(end.year(), end.month() as u8, end.day() as u8);
    let start = chrono::Utc::now() - chrono::Duration::days(30);
    p.not_before = rcgen::date_time_ymd(start.year(), start.month() as u8, start.day() as u8);
    format!("{}{}", p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn put(root: &Path, path: &str, content: &[u8], mode: u32) {
    let full = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(&full, content).unwrap();
    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn kubeadm_node() {
    let root = fixture_root("kubelet-kubeadm");
    put(root.path(), "/var/lib/kubelet/pki/kubelet-client-current.pem", cert_pem(300).as_bytes(), 0o600);
    let report = assert_cis(
        &root.root_arg(),
        [
            "fail",
            "pass",
            "not_applicable",
            "not_applicable",
            "pass",
            "pass",
            "pass",
            "pass",
            "fail",
            "pass", // 4.1.x
            "pass",
            "pass",
            "pass",
            "pass",
            "pass",
            "pass",
            "pass",
            "pass",
            "fail",
            "pass",
            "pass",
            "fail",
            "fail",
            "fail",           // 4.2.x
            "not_applicable", // 4.3.1
        ],
    );
    // Flags came through the kubeadm drop-in and its environment files.
    let cfg = finding(&report, "kubelet.config_file_permissions");
    let ev = cfg["evidence"].to_string();
    assert!(ev.contains("10-kubeadm.conf"), "{ev}");
    assert!(ev.contains("$KUBELET_CONFIG_ARGS"), "provenance of --config must name the variable: {ev}");
    let disc = finding(&report, "kubelet.anonymous_auth")["evidence"].to_string();
    assert!(disc.contains("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"), "{disc}");
    // kubeadm writes `streamingConnectionIdleTimeout: 0s`, which the kubelet defaults to 4h.
    let s = finding(&report, "kubelet.streaming_connection_idle_timeout");
    assert!(s["reason"].as_str().unwrap().contains("4h0m0s"));
    // The client certificate the kubeconfig names, generated above.
    assert_eq!(finding(&report, "kubelet.client_cert_expiry")["status"], "pass");
    assert_eq!(finding(&report, "kubelet.client_cert_expiring")["status"], "pass");
    // The kubelet's command line as kubeadm assembles it.
    let (r, _) = check_json(&root.root_arg(), &["--only", "kubelet.hostname_override", "--fail-on", "none"]);
    assert_eq!(finding(&r, "kubelet.hostname_override")["status"], "pass");
}

#[test]
fn kosmos_node() {
    let root = fixture_root("kubelet-kosmos");
    put(root.path(), "/var/lib/kubelet/pki/kubelet-client-current.pem", cert_pem(200).as_bytes(), 0o600);
    put(root.path(), "/var/lib/kubelet/pki/kubelet-server-current.pem", cert_pem(20).as_bytes(), 0o600);
    let mut all = ["pass"; 25];
    for i in [2, 3, 24] {
        all[i] = "not_applicable"; // no kube-proxy on the host
    }
    let report = assert_cis(&root.root_arg(), all);
    // The decoy /var/lib/kubelet/config.yaml (anonymous, AlwaysAllow) is ignored:
    // the unit's --config is what the kubelet uses.
    let a = finding(&report, "kubelet.anonymous_auth");
    assert!(a["evidence"].to_string().contains("/etc/kubernetes/kubelet/config.yaml"));
    assert!(!a["evidence"].to_string().contains("/var/lib/kubelet/config.yaml"));
    assert_eq!(finding(&report, "kubelet.protect_kernel_defaults")["status"], "pass");
    // Serving certificate from TLS bootstrap: 20 days left is fine for the
    // 7-day check, not for the 30-day one.
    assert_eq!(finding(&report, "kubelet.serving_cert_expiry")["status"], "pass");
    assert_eq!(finding(&report, "kubelet.serving_cert_expiring")["status"], "fail");
    assert_eq!(finding(&report, "kubelet.serving_cert_expiring")["severity"], "medium");
    assert_eq!(finding(&report, "kubelet.client_cert_expiring")["status"], "pass");
    // Offline root without --state-dir: drift is not tracked.
    assert_eq!(finding(&report, "kubelet.config_drift")["status"], "not_applicable");

    // The Kosmos families, in the default profile.
    let (r, _) = check_json(&root.root_arg(), &["--fail-on", "none"]);
    let st = statuses(&r);
    assert_eq!(st["kosmos.userdata_permissions"], "pass");
    assert_eq!(st["kosmos.component_versions"], "pass");
    assert_eq!(st["containerd.config_permissions"], "pass");
    assert_eq!(st["containerd.socket_permissions"], "not_applicable");
    assert!(st.contains_key("kubelet.anonymous_auth") && st.contains_key("kube_proxy.metrics_bind_address"));
    // A loose node secret and a hand-upgraded kubelet.
    std::fs::set_permissions(root.path().join("etc/scw-k8s-userdata"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(root.path().join(".commands/kubelet_--version"), "Kubernetes v1.34.0\n").unwrap();
    let (r, _) = check_json(
        &root.root_arg(),
        &["--only", "kosmos.userdata_permissions,kosmos.component_versions", "--fail-on", "none"],
    );
    let st = statuses(&r);
    assert_eq!(st["kosmos.userdata_permissions"], "fail");
    assert_eq!(st["kosmos.component_versions"], "fail");
}

#[test]
fn drop_in_flags_override_a_good_config() {
    let root = fixture_root("kubelet-dropin-override");
    let report = assert_cis(
        &root.root_arg(),
        [
            "pass", "pass", "fail", "pass", "pass", "pass", "pass", "pass", "pass", "pass", // 4.1.x
            "fail", "fail", "pass", "fail", "pass", "pass", "fail", "pass", "pass", "pass", "pass", "pass", "pass",
            "pass", // 4.2.x: the masked vendor drop-in's --seccomp-default=false does not apply
            "fail", // 4.3.1: kube-proxy metrics on 0.0.0.0
        ],
    );
    let a = finding(&report, "kubelet.anonymous_auth");
    assert_eq!(a["observed"]["provenance"], "flag");
    let ev = a["evidence"].to_string();
    assert!(ev.contains("/etc/systemd/system/kubelet.service.d/20-debug.conf"), "{ev}");
    assert!(ev.contains("$DEBUG_ARGS"), "{ev}");
    let disc = finding(&report, "kubelet.seccomp_default")["evidence"].to_string();
    assert!(disc.contains("/var/lib/kubelet/config.yaml"));
}

#[test]
fn hostile_kubelet_inputs_are_errors_never_passes() {
    let root = fixture_root("kubelet-hostile");
    let report = assert_cis(
        &root.root_arg(),
        [
            "pass",
            "pass",
            "not_applicable",
            "not_applicable",
            "error",
            "error",
            "error",
            "error",
            "pass",
            "pass",
            // 4.2.x: malformed YAML makes every key not set by a flag unknown.
            "error",
            "error",
            "pass",
            "pass",
            "error",
            "error",
            "pass",
            "error",
            "pass",
            "error",
            "error",
            "error",
            "error",
            "error", //
            "not_applicable",
        ],
    );
    assert!(finding(&report, "kubelet.anonymous_auth")["reason"].as_str().unwrap().contains("invalid YAML"));
    assert!(finding(&report, "kubelet.kubeconfig_permissions")["reason"].as_str().unwrap().contains("directory"));
    assert!(finding(&report, "kubelet.client_ca_permissions")["reason"].as_str().unwrap().contains("FIFO"));
    let serving = finding(&report, "kubelet.serving_cert_expiry");
    assert_eq!(serving["status"], "error");
    assert!(serving["reason"].as_str().unwrap().contains("limit"), "{serving}");

    // The config path itself hostile: a directory, a symlink to /dev/zero,
    // a 100 MB file. Only what flags decide (4.2.3, 4.2.4, 4.2.7, 4.2.9) is judged.
    let config = root.path().join("var/lib/kubelet/config.yaml");
    let cases: [(&str, &dyn Fn()); 3] = [
        ("directory", &|| {
            std::fs::remove_file(&config).unwrap();
            std::fs::create_dir(&config).unwrap();
        }),
        ("symlink to /dev/zero", &|| {
            std::fs::remove_dir(&config).unwrap();
            std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
        }),
        ("100 MB file", &|| {
            std::fs::remove_file(&config).unwrap();
            let f = std::fs::File::create(&config).unwrap();
            f.set_len(100 * 1024 * 1024).unwrap();
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        }),
    ];
    for (what, make) in cases {
        make();
        let perm = if what == "100 MB file" { "pass" } else { "error" };
        let r = assert_cis(
            &root.root_arg(),
            [
                "pass",
                "pass",
                "not_applicable",
                "not_applicable",
                "error",
                "error",
                "error",
                "error",
                perm,
                perm,
                "error",
                "error",
                "pass",
                "pass",
                "error",
                "error",
                "pass",
                "error",
                "pass",
                "error",
                "error",
                "error",
                "error",
                "error",
                "not_applicable",
            ],
        );
        let reason = finding(&r, "kubelet.seccomp_default")["reason"].as_str().unwrap().to_string();
        assert!(reason.contains("/var/lib/kubelet/config.yaml"), "{what}: {reason}");
    }
}

#[test]
fn no_kubelet_means_not_applicable_with_the_search_list() {
    let root = fixture_root("minimal");
    let (report, _) = check_json(&root.root_arg(), &["--profile", "cis-k8s-worker", "--fail-on", "none"]);
    let results = report["results"].as_array().unwrap();
    assert!(results.len() >= 25);
    for f in results {
        assert_eq!(f["status"], "not_applicable", "{}", f["id"]);
        assert!(f["reason"].as_str().unwrap().starts_with("no kubelet found (searched: "), "{}", f["reason"]);
    }
}

fn drift_changes(report: &serde_json::Value, which: &str) -> Vec<String> {
    finding(report, "kubelet.config_drift")["observed"][which]
        .as_array()
        .map(|a| a.iter().map(|c| c["key"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn drift_is_reported_once_per_change_and_against_the_pin() {
    let root = fixture_root("kubelet-kosmos");
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    let sd = state_dir.to_str().unwrap();
    let args = ["--only", "kubelet.config_drift", "--state-dir", sd, "--fail-on", "none"];
    // First run: nothing to compare with; the snapshot is recorded.
    let (r1, _) = check_json(&root.root_arg(), &args);
    assert_eq!(finding(&r1, "kubelet.config_drift")["status"], "not_applicable");
    assert_eq!(std::fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777, 0o700);
    let last = state_dir.join("kubelet-last.json");
    assert_eq!(std::fs::metadata(&last).unwrap().permissions().mode() & 0o777, 0o600);
    // Pin the reference.
    let out = run(&["baseline", "pin", "--root", &root.root_arg(), "--state-dir", sd]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::metadata(state_dir.join("kubelet-pinned.json")).unwrap().permissions().mode() & 0o777, 0o600);
    // Change one key.
    let cfg = root.path().join("etc/kubernetes/kubelet/config.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("podPidsLimit: 4096", "podPidsLimit: 100")).unwrap();
    let (r2, _) = check_json(&root.root_arg(), &args);
    let f = finding(&r2, "kubelet.config_drift");
    assert_eq!(f["status"], "fail");
    assert_eq!(drift_changes(&r2, "since_previous_run"), vec!["podPidsLimit".to_string()]);
    assert_eq!(drift_changes(&r2, "since_pinned"), vec!["podPidsLimit".to_string()]);
    let change = &f["observed"]["since_previous_run"][0];
    assert_eq!(change["old"], "4096");
    assert_eq!(change["new"], "100");
    assert!(change["new_provenance"].as_str().unwrap().contains("/etc/kubernetes/kubelet/config.yaml"));
    let first_seen = change["first_seen"].as_str().unwrap().to_string();
    assert!(!first_seen.is_empty());
    // Third run, unchanged: no new drift since the previous run; the pin
    // still shows the change, with the time it was first seen.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (r3, _) = check_json(&root.root_arg(), &args);
    assert!(drift_changes(&r3, "since_previous_run").is_empty());
    assert_eq!(drift_changes(&r3, "since_pinned"), vec!["podPidsLimit".to_string()]);
    assert_eq!(finding(&r3, "kubelet.config_drift")["observed"]["since_pinned"][0]["first_seen"], first_seen.as_str());
    // A drop-in change counts even when no value changes.
    let dropin = root.path().join("etc/systemd/system/kubelet.service.d/50-local.conf");
    std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
    std::fs::write(&dropin, "# local notes\n[Service]\n").unwrap();
    let (r4, _) = check_json(&root.root_arg(), &args);
    assert_eq!(
        drift_changes(&r4, "since_previous_run"),
        vec!["unit:/etc/systemd/system/kubelet.service.d/50-local.conf".to_string()]
    );
    // Re-pinning accepts the current state: only unchanged runs pass.
    assert!(run(&["baseline", "pin", "--root", &root.root_arg(), "--state-dir", sd]).status.success());
    let (r5, _) = check_json(&root.root_arg(), &args);
    assert_eq!(finding(&r5, "kubelet.config_drift")["status"], "pass");
}

/// A process named `kubelet` with kubelet-like arguments, killed on drop.
struct FakeKubelet(std::process::Child);

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn live_kubelet_is_read_from_proc() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("config.yaml");
    let kubeconfig = d.join("kubeconfig");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nseccompDefault: true\npodPidsLimit: 1234\n",
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nusers: []\n").unwrap();
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o640)).unwrap();
    // GNU sleep refuses unknown options, so the process named `kubelet` is a
    // copy of the shell that ignores its arguments and waits on stdin; its
    // /proc/<pid>/comm is "kubelet" all the same.
    let bin = d.join("kubelet");
    std::fs::copy("/bin/sh", &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let child = std::process::Command::new(&bin)
        .args([
            "-c",
            "read line",
            "kubelet",
            &format!("--config={}", config.display()),
            &format!("--kubeconfig={}", kubeconfig.display()),
            "--read-only-port=0",
            "--anonymous-auth=false",
            "600",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let kubelet = FakeKubelet(child);
    let pid = kubelet.0.id();
    // Wait until the kernel shows the process under its new name.
    for _ in 0..50 {
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "kubelet") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let state = tempfile::tempdir().unwrap();
    let out = run(&[
        "check",
        "--output",
        "json",
        "--profile",
        "cis-k8s-worker",
        "--fail-on",
        "none",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    validate_report(&report);
    drop(kubelet);
    let cmdline = format!("/proc/{pid}/cmdline");
    let cfg = finding(&report, "kubelet.config_file_permissions");
    assert_eq!(cfg["status"], "pass", "{cfg}");
    let ev = cfg["evidence"].to_string();
    assert!(ev.contains(&config.display().to_string()), "{ev}");
    assert!(ev.contains(&cmdline), "the --config must come from {cmdline}: {ev}");
    // Values from the file it named, and from its flags.
    let sd = finding(&report, "kubelet.seccomp_default");
    assert_eq!(sd["status"], "pass");
    assert!(sd["evidence"].to_string().contains(&config.display().to_string()));
    let ro = finding(&report, "kubelet.read_only_port");
    assert_eq!(ro["status"], "pass");
    assert_eq!(ro["observed"]["provenance"], "flag");
    assert!(ro["evidence"].to_string().contains(&cmdline));
    let kc = finding(&report, "kubelet.kubeconfig_permissions");
    assert_eq!(kc["status"], "fail", "0640 is looser than 0600: {kc}");
    assert!(kc["evidence"].to_string().contains(&kubeconfig.display().to_string()));
    let statuses: BTreeMap<String, String> = statuses(&report);
    assert_eq!(statuses["kubelet.pod_pids_limit"], "pass");
}
