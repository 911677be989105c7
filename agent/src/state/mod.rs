//! The agent's state directory (default `/var/lib/kosmos-node-agent`) and
//! the run hook that feeds drift detection from it.
//!
//! This is the only place that writes to disk besides report output. The
//! directory is created with mode 0700; files are written with mode 0600,
//! atomically (temporary file in the same directory, fsync, rename, fsync of
//! the directory), so a crash or a concurrent reader never sees half a
//! snapshot. Checks stay pure: [`DriftHook::before_run`] reads the previous
//! and pinned snapshots and provides them as a fact, and
//! [`DriftHook::after_run`] persists the snapshot the drift fact computed.

pub mod durable;
pub mod first_seen;

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::audit::engine::RunHook;
use crate::audit::facts::Facts;
use crate::audit::facts::kubelet::drift::{DriftInputs, KubeletDrift, Snapshot};
use crate::audit::report::Report;

/// Where a live run keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kosmos-node-agent";
/// The last effective kubelet configuration.
pub const LAST_SNAPSHOT: &str = "kubelet-last.json";
/// The pinned reference (`baseline pin`).
pub const PINNED_SNAPSHOT: &str = "kubelet-pinned.json";

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
        let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        let tmp = self.path.join(format!(".{name}.tmp.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let result = (|| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.path.join(name))?;
            std::fs::File::open(&self.path)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Feeds drift detection from the state directory and persists the new
/// snapshot after the run. The directory is created only when there is a
/// snapshot to write, so a run on a host without a kubelet leaves no trace.
#[derive(Debug)]
pub struct DriftHook {
    /// The state directory, or why this run has none.
    dir: Result<StateDir, String>,
    now: String,
}

impl DriftHook {
    /// `dir`: the state directory to use, or why there is none (e.g. an
    /// offline root audited without `--state-dir`).
    pub fn new(dir: Result<&Path, String>) -> Self {
        let dir = dir.map(StateDir::at);
        DriftHook { dir, now: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true) }
    }
}

impl RunHook for DriftHook {
    fn before_run(&self, facts: &Facts<'_>) {
        let inputs = match &self.dir {
            Ok(d) => DriftInputs {
                state_dir: Ok(d.path().display().to_string()),
                previous: d.read_json::<Snapshot>(LAST_SNAPSHOT),
                pinned: d.read_json::<Snapshot>(PINNED_SNAPSHOT),
                now: self.now.clone(),
            },
            Err(why) => {
                DriftInputs { state_dir: Err(why.clone()), previous: Ok(None), pinned: Ok(None), now: self.now.clone() }
            }
        };
        facts.provide(inputs);
    }

    fn after_run(&self, facts: &Facts<'_>, _report: &Report) {
        let (Ok(dir), Some(drift)) = (&self.dir, facts.gathered::<KubeletDrift>()) else { return };
        let KubeletDrift::Computed { next, .. } = &*drift else { return };
        if let Err(e) = StateDir::open(dir.path()).and_then(|d| d.write_json(LAST_SNAPSHOT, next)) {
            tracing::warn!("cannot save the kubelet snapshot in {}: {e}", dir.path().display());
        }
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
