//! The agent's state: what it remembers between runs on the auditing
//! machine (never the audited root), in one directory, default
//! [`DEFAULT_STATE_DIR`].
//!
//! - [`StateDir`]: the directory (0700) and its JSON files (0600);
//! - [`durable`]: the one atomic-replace primitive every file the agent
//!   keeps goes through (state, spool, node identity);
//! - the run hooks that feed the audit's drift and age facts from that
//!   memory and persist what the run computed: [`kubelet_drift`],
//!   [`firewall_drift`], [`first_seen`]. [`StateHooks`] bundles them, so
//!   every audit entry gets the same ones;
//! - [`dir_for`]: the one rule for which state directory a run uses.
//!
//! Checks stay pure: they see state only as facts handed in before the run
//! (`Facts::provide`), and only these hooks write, after it.

pub mod durable;
pub mod firewall_drift;
pub mod first_seen;
pub mod kubelet_drift;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::audit::engine::RunHook;
use crate::audit::host::Host;
use crate::audit::profile::Profile;

/// Where the agent keeps its state unless told otherwise (the daemon's
/// `state_dir`, `check` and `baseline pin` on the live host).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kosmos-node-agent";

/// State files are small; a larger one was not written by us.
const STATE_FILE_LIMIT: u64 = 8 * 1024 * 1024;

/// An opened (created if needed) state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Create the directory (0700) if needed and tighten its mode if it is
    /// looser: the snapshots describe the node's security configuration.
    pub fn open(path: &Path) -> std::io::Result<StateDir> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.is_dir() {
            return Err(std::io::Error::other(format!("{} is not a directory", path.display())));
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(StateDir { path: path.to_path_buf() })
    }

    /// A state directory that may not exist yet (reading only; created by
    /// [`StateDir::open`] when something is written).
    pub fn at(path: &Path) -> StateDir {
        StateDir { path: path.to_path_buf() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read a JSON state file; `Ok(None)` when it (or the directory) does
    /// not exist.
    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, String> {
        let p = self.path.join(name);
        let shown = p.display().to_string();
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        if !meta.is_file() {
            return Err(format!("{shown}: not a regular file"));
        }
        if meta.len() > STATE_FILE_LIMIT {
            return Err(format!("{shown}: larger than {STATE_FILE_LIMIT} bytes"));
        }
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{shown}: {e}"))?;
        serde_json::from_str(&text).map(Some).map_err(|e| format!("{shown}: not a valid state file: {e}"))
    }

    /// Write a JSON state file atomically with mode 0600.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
        text.push(b'\n');
        durable::replace(&self.path.join(name), &text, 0o600)
    }
}

/// The state directory of a run, or why it has none: the one given, else
/// the default on the live host. An offline root is another machine, whose
/// state must not mix with this one's, so it has state only when asked.
pub fn dir_for(host: &Host, given: Option<&Path>) -> Result<PathBuf, String> {
    match given {
        Some(d) => Ok(d.to_path_buf()),
        None if host.is_live() => Ok(PathBuf::from(DEFAULT_STATE_DIR)),
        None => Err("offline root audited without --state-dir: drift is not tracked".into()),
    }
}

/// Every hook the state layer contributes to an audit, built once per run.
#[derive(Debug)]
pub struct StateHooks {
    kubelet: kubelet_drift::DriftHook,
    first_seen: first_seen::FirstSeenHook,
    firewall: firewall_drift::FirewallDriftHook,
}

impl StateHooks {
    /// `dir`: the run's state directory, or why it has none ([`dir_for`]).
    pub fn new(dir: Result<&Path, String>, profile: &Profile) -> Self {
        StateHooks {
            kubelet: kubelet_drift::DriftHook::new(dir.clone()),
            first_seen: first_seen::FirstSeenHook::new(dir.clone()),
            firewall: firewall_drift::FirewallDriftHook::new(dir.ok(), profile),
        }
    }

    /// The hooks, in the order they run.
    pub fn hooks(&self) -> [&dyn RunHook; 3] {
        [&self.kubelet, &self.first_seen, &self.firewall]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_modes_and_atomic_writes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/state");
        let d = StateDir::open(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
        assert_eq!(d.read_json::<serde_json::Value>("x.json").unwrap(), None);
        d.write_json("x.json", &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(std::fs::metadata(p.join("x.json")).unwrap().mode() & 0o777, 0o600);
        assert_eq!(d.read_json::<serde_json::Value>("x.json").unwrap(), Some(serde_json::json!({"a": 1})));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&p).unwrap().count(), 1);
        std::fs::write(p.join("bad.json"), "{").unwrap();
        assert!(d.read_json::<serde_json::Value>("bad.json").unwrap_err().contains("bad.json"));
        // A looser existing directory is tightened.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::open(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), "").unwrap();
        assert!(StateDir::open(&t.path().join("f")).is_err());
    }
}
