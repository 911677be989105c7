//! Kubelet drift's memory: before a run, the previous and pinned snapshots
//! of the kubelet's effective configuration are read from the state
//! directory and provided as [`DriftInputs`]; after it, the snapshot the
//! drift fact computed becomes the next run's "previous" (see
//! [`crate::audit::facts::kubelet::drift`] for what a snapshot holds).

use std::path::Path;

use super::StateDir;
use crate::audit::engine::RunHook;
use crate::audit::facts::Facts;
use crate::audit::facts::kubelet::drift::{DriftInputs, KubeletDrift, LAST_SNAPSHOT, PINNED_SNAPSHOT, Snapshot};

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

    fn after_run(&self, facts: &Facts<'_>) {
        let (Ok(dir), Some(drift)) = (&self.dir, facts.gathered::<KubeletDrift>()) else { return };
        let KubeletDrift::Computed { next, .. } = &*drift else { return };
        if let Err(e) = StateDir::open(dir.path()).and_then(|d| d.write_json(LAST_SNAPSHOT, next)) {
            tracing::warn!("cannot save the kubelet snapshot in {}: {e}", dir.path().display());
        }
    }
}
