//! Drift of the running firewall ruleset between runs: this run's snapshot
//! ([`RulesetSnapshot`], computed from [`FirewallFacts`]) and the previous
//! one ([`PreviousRuleset`]), shaped like the kubelet's drift.
//!
//! Checks are pure and never write, and the previous snapshot is not part
//! of the audited system: it is the agent's own memory. So the state layer
//! ([`crate::state::firewall_drift`]) reads it before the run and provides
//! it as [`PreviousRuleset`]; after the run it persists the
//! [`RulesetSnapshot`] the check gathered, so "previous run" always means
//! the previous evaluation of `firewall.ruleset_drift`.

use serde::{Deserialize, Serialize};

use super::{FirewallFacts, snapshot_hash, snapshot_lines};
use crate::audit::facts::{FactError, Facts, Gather};

/// Snapshots larger than this many lines are not kept (report and state
/// size); such a run is compared by hash only.
pub const MAX_SNAPSHOT_LINES: usize = 5000;

/// A ruleset snapshot as kept between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub hash: String,
    pub lines: Vec<String>,
}

/// This run's ruleset, reduced to what drift compares.
#[derive(Debug, Clone)]
pub struct RulesetSnapshot {
    /// SHA-256 of `lines`.
    pub hash: String,
    pub lines: Vec<String>,
}

impl RulesetSnapshot {
    /// Whether the snapshot is small enough to be kept for the next run.
    pub fn keepable(&self) -> bool {
        self.lines.len() <= MAX_SNAPSHOT_LINES
    }

    /// The snapshot as the next run will read it, when it is kept.
    pub fn to_stored(&self) -> Option<StoredSnapshot> {
        self.keepable().then(|| StoredSnapshot { hash: self.hash.clone(), lines: self.lines.clone() })
    }
}

/// This run's snapshot, or why there is none.
#[derive(Debug, Clone)]
pub struct CurrentRuleset(pub Result<RulesetSnapshot, FactError>);

impl Gather for CurrentRuleset {
    fn gather(facts: &Facts<'_>) -> Self {
        let fw = facts.get::<FirewallFacts>();
        CurrentRuleset(fw.ruleset.as_ref().map_err(Clone::clone).map(|rs| {
            let lines = snapshot_lines(rs);
            RulesetSnapshot { hash: snapshot_hash(&lines), lines }
        }))
    }
}

/// The previous run's snapshot, handed in by the state layer.
#[derive(Debug, Clone)]
pub struct PreviousRuleset {
    /// Where it is kept (said in reasons and evidence).
    pub path: String,
    /// `Ok(None)`: there is none yet (first run); `Err`: it is unusable.
    pub snapshot: Result<Option<StoredSnapshot>, String>,
}

impl Gather for PreviousRuleset {
    /// Without the state layer (library use, unit tests of other checks)
    /// there is no memory of an earlier run: drift cannot be judged.
    fn gather(_facts: &Facts<'_>) -> Self {
        PreviousRuleset { path: "(none)".into(), snapshot: Err("no state directory was given to this run".into()) }
    }
}
