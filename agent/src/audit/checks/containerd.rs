//! The container runtime (family `containerd`): containerd's socket and
//! configuration decide who can run containers. The checks need containerd.

use serde_json::json;

use crate::audit::check::Check;
use crate::audit::facts::Facts;
use crate::audit::host::FileKind;
use crate::audit::model::{Outcome, Severity};

pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

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
        assert_eq!(
            eval("containerd.socket_permissions", &live_like(live.path())).status,
            crate::audit::model::Status::Pass
        );
        chmod(live.path(), CONTAINERD_SOCKET, 0o666);
        assert_eq!(
            eval("containerd.socket_permissions", &live_like(live.path())).status,
            crate::audit::model::Status::Fail
        );
    }
}
