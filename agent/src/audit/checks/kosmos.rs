//! Kosmos node files and the container runtime (families `kosmos`,
//! `containerd`).
//!
//! The Scaleway installer leaves `/etc/scw-k8s-userdata` (the node's
//! registration secret) and `/etc/scw-k8s-versions.json` (installed component
//! versions) on the node; containerd's socket and configuration decide who
//! can run containers. The `kosmos` checks need a kubelet; the `containerd`
//! checks need containerd.

use serde_json::{Value, json};

use crate::audit::check::Check;
use crate::audit::facts::Facts;
use crate::audit::facts::kubelet::{KubeletFacts, KubeletVersion, render};
use crate::audit::host::FileKind;
use crate::audit::model::{Outcome, Severity};

pub const USERDATA: &str = "/etc/scw-k8s-userdata";
pub const VERSIONS: &str = "/etc/scw-k8s-versions.json";
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

fn userdata(facts: &Facts<'_>) -> Outcome {
    let k = facts.get::<KubeletFacts>();
    if k.kubelet.is_none() {
        return Outcome::not_applicable(k.not_found_reason());
    }
    let host = facts.host();
    match host.symlink_metadata(USERDATA) {
        Err(e) if e.is_not_found() => Outcome::not_applicable(format!(
            "{USERDATA} does not exist: the node was not joined by the Kosmos installer"
        )),
        Err(e) => Outcome::error(e.to_string()),
        Ok(m) if m.kind != FileKind::File => {
            Outcome::error(format!("{USERDATA}: is a {}, not a regular file", m.kind.describe()))
        }
        Ok(m) => {
            let ok = m.mode & !0o600 == 0 && m.uid == 0 && m.gid == 0;
            Outcome::verdict(ok)
                .observed(json!({ "mode": format!("{:04o}", m.mode), "uid": m.uid, "gid": m.gid }))
                .expected(json!({ "mode": "≤ 0600", "owner": "root:root" }))
                .evidence(USERDATA, format!("mode {:04o}, owner {}:{}", m.mode, m.uid, m.gid))
        }
    }
}

/// The kubelet version recorded by the installer.
pub fn recorded_kubelet_version(text: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    match v.get("kubelet") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().trim_start_matches('v').to_string()),
        Some(other) => Err(format!("\"kubelet\" is {}, not a version string", render(other))),
        None => Err("no \"kubelet\" entry".into()),
    }
}

fn component_versions(facts: &Facts<'_>) -> Outcome {
    let k = facts.get::<KubeletFacts>();
    if k.kubelet.is_none() {
        return Outcome::not_applicable(k.not_found_reason());
    }
    let text = match facts.host().read_text_limited(VERSIONS, 64 * 1024) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => {
            return Outcome::not_applicable(format!(
                "{VERSIONS} does not exist: the node was not joined by the Kosmos installer"
            ));
        }
        Err(e) => return Outcome::error(e.to_string()),
    };
    let recorded = match recorded_kubelet_version(&text) {
        Ok(v) => v,
        Err(e) => return Outcome::error(format!("{VERSIONS}: {e}")),
    };
    let installed = facts.get::<KubeletVersion>();
    let running = match &installed.result {
        Ok(v) => v.clone(),
        Err(e) if installed.unavailable && !facts.host().is_live() => {
            return Outcome::not_applicable(format!("offline root: cannot run `{}` ({e})", installed.command));
        }
        Err(e) => return Outcome::error(e.to_string()),
    };
    Outcome::verdict(running == recorded)
        .observed(json!({ "installed": running, "recorded": recorded }))
        .expected("the installed kubelet is the version the installer recorded")
        .evidence(VERSIONS, format!("kubelet {recorded}"))
        .evidence(&installed.command, format!("Kubernetes v{running}"))
}

fn containerd_present(facts: &Facts<'_>) -> bool {
    let h = facts.host();
    [
        "/etc/containerd",
        CONTAINERD_SOCKET,
        "/usr/bin/containerd",
        "/usr/local/bin/containerd",
        "/lib/systemd/system/containerd.service",
        "/etc/systemd/system/containerd.service",
        "/usr/lib/systemd/system/containerd.service",
    ]
    .iter()
    .any(|p| h.symlink_metadata(p).is_ok())
}

fn socket_permissions(facts: &Facts<'_>) -> Outcome {
    if !containerd_present(facts) {
        return Outcome::not_applicable("containerd is not installed");
    }
    let host = facts.host();
    if !host.is_live() {
        return Outcome::not_applicable(format!("offline root: {CONTAINERD_SOCKET} exists only while containerd runs"));
    }
    match host.symlink_metadata(CONTAINERD_SOCKET) {
        Err(e) if e.is_not_found() => {
            Outcome::not_applicable(format!("{CONTAINERD_SOCKET} does not exist (containerd not running)"))
        }
        Err(e) => Outcome::error(e.to_string()),
        Ok(m) if m.kind != FileKind::Socket => {
            Outcome::error(format!("{CONTAINERD_SOCKET}: is a {}, not a socket", m.kind.describe()))
        }
        Ok(m) => Outcome::verdict(m.mode & !0o660 == 0 && m.uid == 0)
            .observed(json!({ "mode": format!("{:04o}", m.mode), "uid": m.uid, "gid": m.gid }))
            .expected(json!({ "mode": "≤ 0660", "owner": "root" }))
            .evidence(CONTAINERD_SOCKET, format!("mode {:04o}, owner {}:{}", m.mode, m.uid, m.gid)),
    }
}

fn config_permissions(facts: &Facts<'_>) -> Outcome {
    if !containerd_present(facts) {
        return Outcome::not_applicable("containerd is not installed");
    }
    match facts.host().metadata(CONTAINERD_CONFIG) {
        Err(e) if e.is_not_found() => Outcome::not_applicable(format!(
            "{CONTAINERD_CONFIG} does not exist: containerd runs with its built-in defaults"
        )),
        Err(e) => Outcome::error(e.to_string()),
        Ok(m) if m.kind != FileKind::File => {
            Outcome::error(format!("{CONTAINERD_CONFIG}: is a {}, not a regular file", m.kind.describe()))
        }
        Ok(m) => Outcome::verdict(m.mode & !0o644 == 0 && m.uid == 0 && m.gid == 0)
            .observed(json!({ "mode": format!("{:04o}", m.mode), "uid": m.uid, "gid": m.gid }))
            .expected(json!({ "mode": "≤ 0644", "owner": "root:root" }))
            .evidence(CONTAINERD_CONFIG, format!("mode {:04o}, owner {}:{}", m.mode, m.uid, m.gid)),
    }
}

pub fn checks() -> Vec<Check> {
    vec![
        Check::new("kosmos.userdata_permissions", "Kosmos node secret /etc/scw-k8s-userdata is mode 600 root:root", Severity::High, |f, _| userdata(f))
            .rationale("/etc/scw-k8s-userdata caches the node's registration secret; anyone who reads it can register nodes into the cluster.")
            .remediation("chown root:root /etc/scw-k8s-userdata && chmod 600 /etc/scw-k8s-userdata"),
        Check::new("kosmos.component_versions", "installed kubelet matches the version recorded by the Kosmos installer", Severity::Medium, |f, _| component_versions(f))
            .rationale("A kubelet that differs from /etc/scw-k8s-versions.json was changed by hand: a half-done upgrade or a replaced binary, and the version skew with the control plane is no longer what Scaleway supports.")
            .remediation("Upgrade the node with the Kosmos installer, or reinstall the recorded kubelet version"),
        Check::new("containerd.socket_permissions", "containerd socket is root-owned and not world-accessible", Severity::High, |f, _| socket_permissions(f))
            .rationale("Access to the containerd socket is root on the node: it can start privileged containers.")
            .remediation("Restore the defaults: [grpc] uid = 0, gid = 0 in /etc/containerd/config.toml; the socket is then 0660 root:root"),
        Check::new("containerd.config_permissions", "containerd configuration is root-owned and not writable by others", Severity::Medium, |f, _| config_permissions(f))
            .rationale("The containerd configuration decides runtimes, registries and their credentials.")
            .remediation("chown root:root /etc/containerd/config.toml && chmod 644 /etc/containerd/config.toml (600 if it holds registry credentials)"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{chmod, eval, live_like, offline, root_with};

    const UNIT: (&str, &str) = ("/etc/systemd/system/kubelet.service", "[Service]\nExecStart=/usr/bin/kubelet\n");

    #[test]
    fn userdata_paths() {
        let d = root_with(&[UNIT, (USERDATA, "secret")]);
        chmod(d.path(), USERDATA, 0o600);
        // Tests run as root: files are root-owned.
        assert_eq!(eval("kosmos.userdata_permissions", &offline(d.path())).status, crate::audit::model::Status::Pass);
        chmod(d.path(), USERDATA, 0o644);
        assert_eq!(eval("kosmos.userdata_permissions", &offline(d.path())).status, crate::audit::model::Status::Fail);
        let none = root_with(&[UNIT]);
        assert_eq!(
            eval("kosmos.userdata_permissions", &offline(none.path())).status,
            crate::audit::model::Status::NotApplicable
        );
        let nokubelet = root_with(&[(USERDATA, "x")]);
        let o = eval("kosmos.userdata_permissions", &offline(nokubelet.path()));
        assert!(o.reason.unwrap().starts_with("no kubelet found"));
        let dir = root_with(&[UNIT, ("/etc/scw-k8s-userdata/x", "")]);
        assert_eq!(eval("kosmos.userdata_permissions", &offline(dir.path())).status, crate::audit::model::Status::Error);
    }

    #[test]
    fn versions() {
        assert_eq!(recorded_kubelet_version(r#"{"kubelet":"v1.33.4","containerd":"1.7"}"#).unwrap(), "1.33.4");
        assert!(recorded_kubelet_version("{").is_err());
        assert!(recorded_kubelet_version(r#"{"kubelet":1}"#).is_err());
        let d = root_with(&[
            UNIT,
            (VERSIONS, r#"{"kubelet":"1.33.4"}"#),
            ("/.commands/kubelet_--version", "Kubernetes v1.33.4\n"),
        ]);
        assert_eq!(eval("kosmos.component_versions", &offline(d.path())).status, crate::audit::model::Status::Pass);
        let d = root_with(&[
            UNIT,
            (VERSIONS, r#"{"kubelet":"1.33.4"}"#),
            ("/.commands/kubelet_--version", "Kubernetes v1.32.1\n"),
        ]);
        assert_eq!(eval("kosmos.component_versions", &offline(d.path())).status, crate::audit::model::Status::Fail);
        let d = root_with(&[UNIT, (VERSIONS, r#"{"kubelet":"1.33.4"}"#)]);
        let o = eval("kosmos.component_versions", &offline(d.path()));
        assert_eq!(o.status, crate::audit::model::Status::NotApplicable);
        assert!(o.reason.unwrap().contains("offline root"));
        let d = root_with(&[UNIT, (VERSIONS, "not json")]);
        assert_eq!(eval("kosmos.component_versions", &offline(d.path())).status, crate::audit::model::Status::Error);
    }

    #[test]
    fn containerd_files() {
        let d = root_with(&[(CONTAINERD_CONFIG, "version = 2\n")]);
        chmod(d.path(), CONTAINERD_CONFIG, 0o644);
        assert_eq!(eval("containerd.config_permissions", &offline(d.path())).status, crate::audit::model::Status::Pass);
        chmod(d.path(), CONTAINERD_CONFIG, 0o666);
        assert_eq!(eval("containerd.config_permissions", &offline(d.path())).status, crate::audit::model::Status::Fail);
        let o = eval("containerd.socket_permissions", &offline(d.path()));
        assert!(o.reason.unwrap().starts_with("offline root"));
        let empty = root_with(&[("/etc/hostname", "x")]);
        assert_eq!(
            eval("containerd.config_permissions", &offline(empty.path())).status,
            crate::audit::model::Status::NotApplicable
        );
        // A live socket: bind a real Unix socket inside the root.
        let live = root_with(&[("/etc/containerd/.keep", "")]);
        std::fs::create_dir_all(live.path().join("run/containerd")).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(live.path().join("run/containerd/containerd.sock")).unwrap();
        chmod(live.path(), CONTAINERD_SOCKET, 0o660);
        assert_eq!(eval("containerd.socket_permissions", &live_like(live.path())).status, crate::audit::model::Status::Pass);
        chmod(live.path(), CONTAINERD_SOCKET, 0o666);
        assert_eq!(eval("containerd.socket_permissions", &live_like(live.path())).status, crate::audit::model::Status::Fail);
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = recorded_kubelet_version(&s);
        }
    }
}
