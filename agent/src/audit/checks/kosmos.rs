//! Kosmos node files (family `kosmos`).
//!
//! The Scaleway installer leaves `/etc/scw-k8s-userdata` (the node's
//! registration secret) and `/etc/scw-k8s-versions.json` (installed component
//! versions) on the node. The `kosmos` checks need a kubelet.

use serde_json::{Value, json};

use crate::audit::check::Check;
use crate::audit::facts::Facts;
use crate::audit::facts::kubelet::{KubeletFacts, KubeletVersion, render};
use crate::audit::host::FileKind;
use crate::audit::model::{Outcome, Severity};

pub const USERDATA: &str = "/etc/scw-k8s-userdata";
pub const VERSIONS: &str = "/etc/scw-k8s-versions.json";

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

pub fn checks() -> Vec<Check> {
    vec![
        Check::new("kosmos.userdata_permissions", "Kosmos node secret /etc/scw-k8s-userdata is mode 600 root:root", Severity::High, |f, _| userdata(f))
            .rationale("/etc/scw-k8s-userdata caches the node's registration secret; anyone who reads it can register nodes into the cluster.")
            .remediation("chown root:root /etc/scw-k8s-userdata && chmod 600 /etc/scw-k8s-userdata"),
        Check::new("kosmos.component_versions", "installed kubelet matches the version recorded by the Kosmos installer", Severity::Medium, |f, _| component_versions(f))
            .rationale("A kubelet that differs from /etc/scw-k8s-versions.json was changed by hand: a half-done upgrade or a replaced binary, and the version skew with the control plane is no longer what Scaleway supports.")
            .remediation("Upgrade the node with the Kosmos installer, or reinstall the recorded kubelet version"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{chmod, eval, offline, root_with};

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
        assert_eq!(
            eval("kosmos.userdata_permissions", &offline(dir.path())).status,
            crate::audit::model::Status::Error
        );
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

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = recorded_kubelet_version(&s);
        }
    }
}
