//! Firewall drift's memory: the previous run's ruleset snapshot, read before
//! the run into [`PreviousRuleset`], and this run's [`CurrentRuleset`]
//! written after it, when `firewall.ruleset_drift` evaluated it on the live
//! host. Shaped like [`super::kubelet_drift`].
//!
//! Where the snapshot lives: the check's `snapshot_file` parameter when a
//! profile sets it, else `firewall-snapshot.json` in the run's state
//! directory (else in the default one).

use std::path::{Path, PathBuf};

use super::{DEFAULT_STATE_DIR, durable};
use crate::audit::engine::RunHook;
use crate::audit::facts::Facts;
use crate::audit::facts::firewall::drift::{CurrentRuleset, PreviousRuleset, StoredSnapshot};
use crate::audit::profile::Profile;

/// The snapshot's name in the state directory.
pub const SNAPSHOT_FILE: &str = "firewall-snapshot.json";
/// The check whose parameter may move the snapshot.
const CHECK_ID: &str = "firewall.ruleset_drift";
/// Snapshots are small (at most 5,000 lines); a larger file was not written
/// by us.
const SNAPSHOT_LIMIT: u64 = 8 * 1024 * 1024;

/// Where the snapshot is kept: the profile's `snapshot_file` when set, else
/// in the state directory. The literal path of the former default counts as
/// unset, so that it keeps following a non-default state directory.
pub fn snapshot_path(param: Option<&str>, state_dir: Option<&Path>) -> PathBuf {
    let dir = state_dir.unwrap_or(Path::new(DEFAULT_STATE_DIR));
    match param {
        Some(p) if !p.is_empty() && Path::new(p) != Path::new(DEFAULT_STATE_DIR).join(SNAPSHOT_FILE) => {
            PathBuf::from(p)
        }
        _ => dir.join(SNAPSHOT_FILE),
    }
}

/// Reads the previous snapshot before the run and keeps this run's after it.
#[derive(Debug)]
pub struct FirewallDriftHook {
    path: PathBuf,
}

impl FirewallDriftHook {
    /// `state_dir`: the run's state directory, when it has one.
    pub fn new(state_dir: Option<&Path>, profile: &Profile) -> Self {
        let param = profile.params.get(CHECK_ID).and_then(|p| p.get("snapshot_file")).and_then(|v| v.as_str());
        FirewallDriftHook { path: snapshot_path(param, state_dir) }
    }

    fn read(&self) -> Result<Option<StoredSnapshot>, String> {
        let shown = self.path.display();
        let meta = match std::fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        if !meta.is_file() || meta.len() > SNAPSHOT_LIMIT {
            return Err(format!(
                "{shown}: not a ruleset snapshot (not a regular file of at most {SNAPSHOT_LIMIT} bytes)"
            ));
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| format!("{shown}: {e}"))?;
        serde_json::from_str(&text).map(Some).map_err(|e| format!("{shown}: not a ruleset snapshot ({e})"))
    }
}

impl RunHook for FirewallDriftHook {
    fn before_run(&self, facts: &Facts<'_>) {
        // Drift compares the running ruleset: an offline root has none, and
        // the check says so without reading anything.
        if facts.host().is_live() {
            facts.provide(PreviousRuleset { path: self.path.display().to_string(), snapshot: self.read() });
        }
    }

    /// Best effort: a read-only or missing state directory only means the
    /// next run has no reference, and that run says so.
    fn after_run(&self, facts: &Facts<'_>) {
        if !facts.host().is_live() {
            return;
        }
        let Some(current) = facts.gathered::<CurrentRuleset>() else { return };
        let Some(stored) = current.0.as_ref().ok().and_then(|s| s.to_stored()) else { return };
        let written = serde_json::to_vec(&stored)
            .map_err(std::io::Error::other)
            .and_then(|bytes| durable::replace_private(&self.path, &bytes));
        if let Err(e) = written {
            tracing::warn!("cannot record the firewall ruleset snapshot in {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::Status;
    use crate::testutil::{live_recorded as live, offline, root_with};

    const DROP_V4: &str = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";

    /// Run `firewall.ruleset_drift` as an audit does: the hook feeds the
    /// previous snapshot in and keeps this run's.
    fn run_drift(host: &crate::audit::host::Host, hook: &FirewallDriftHook) -> crate::audit::model::Outcome {
        let all = crate::audit::checks::registry();
        let c = all.iter().find(|c| c.id == CHECK_ID).unwrap();
        let facts = Facts::new(host);
        hook.before_run(&facts);
        let o = crate::audit::engine::evaluate(c, &facts, &crate::audit::check::Params::new(&c.params, None));
        hook.after_run(&facts);
        o
    }

    #[test]
    fn the_default_snapshot_follows_the_state_dir() {
        let state = Path::new("/state");
        assert_eq!(snapshot_path(None, Some(state)), state.join(SNAPSHOT_FILE));
        assert_eq!(snapshot_path(Some(""), Some(state)), state.join(SNAPSHOT_FILE));
        // The former default literal follows the state directory too.
        let legacy = format!("{DEFAULT_STATE_DIR}/{SNAPSHOT_FILE}");
        assert_eq!(snapshot_path(Some(&legacy), Some(state)), state.join(SNAPSHOT_FILE));
        // Without a state directory the default path itself; a path set in
        // the profile wins over the state directory.
        assert_eq!(snapshot_path(None, None), Path::new(DEFAULT_STATE_DIR).join(SNAPSHOT_FILE));
        assert_eq!(snapshot_path(Some("/elsewhere/s.json"), Some(state)), Path::new("/elsewhere/s.json"));
    }

    #[test]
    fn drift_compares_with_snapshot() {
        let d = root_with(&[("/.commands/iptables-nft-save", DROP_V4)]);
        let h = live(d.path());
        let state = tempfile::tempdir().unwrap();
        let path = state.path().join("s/snap.json");
        let hook = FirewallDriftHook { path: path.clone() };
        let o = run_drift(&h, &hook);
        assert_eq!(o.status, Status::NotApplicable);
        assert!(o.reason.as_deref().unwrap().contains(path.to_str().unwrap()), "{:?}", o.reason);
        // The hook kept this run's snapshot, private.
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(run_drift(&h, &hook).status, Status::Pass);
        crate::testutil::write(d.path(), "/.commands/iptables-nft-save", DROP_V4.replace("22", "23").as_bytes());
        let o = run_drift(&h, &hook);
        assert_eq!(o.status, Status::Fail);
        assert!(o.evidence.iter().any(|e| e.detail.starts_with("+ ") && e.detail.contains("23")));
        assert!(o.evidence.iter().any(|e| e.detail.starts_with("- ") && e.detail.contains("22")));
        // The changed ruleset is the reference of the next run.
        assert_eq!(run_drift(&h, &hook).status, Status::Pass);
        std::fs::write(&path, b"garbage").unwrap();
        let o = run_drift(&h, &hook);
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("not a ruleset snapshot"));
        // Offline: not applicable, and nothing is read or written.
        std::fs::write(&path, b"garbage").unwrap();
        assert_eq!(run_drift(&offline(d.path()), &hook).status, Status::NotApplicable);
        assert_eq!(std::fs::read(&path).unwrap(), b"garbage");
    }
}
