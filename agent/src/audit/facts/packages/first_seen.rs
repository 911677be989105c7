//! How old a pending security update is: the first-seen records the
//! agent keeps for each candidate version, and the rule that says which
//! ages are known (issue 14).
//!
//! The grace period applies only to an update the agent has evidence is
//! new, i.e. one that was absent from an earlier observation of the same
//! node. An update already pending at the first observation (fresh install,
//! reinstalled node, lost state directory, offline audit without state) has
//! an unknown age: it may be months old, so it counts as overdue. Counting
//! "first seen" as "appeared" would let every long-missing fix pass on every
//! new agent.
//!
//! Records are kept per package and architecture, one per candidate version
//! seen: a node missing the fix of candidate 2 is still missing it when
//! candidate 3 (which includes it) appears, so the age of a pending update is
//! that of the oldest recorded candidate newer than the installed version.
//!
//! The records are the agent's memory, not the audited system's: the state
//! layer ([`crate::state::first_seen`]) loads them before the run and hands
//! them in as the [`FirstSeen`] fact, and records this run's pending updates
//! after it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::debversion::DebVersion;
use super::rpm::Evr;
use super::updates::{Manager, PendingUpdate};
use crate::audit::facts::{Facts, Gather};

/// When one candidate version of a package was first seen pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub first_seen: DateTime<Utc>,
    /// True only when an earlier observation of the node did not have this
    /// update pending: then `first_seen` bounds when it appeared.
    pub age_known: bool,
}

/// `name:arch` → candidate version → when first seen.
pub type UpdateRecords = BTreeMap<String, BTreeMap<String, Seen>>;

/// How old a pending update is, as far as the state can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateAge {
    /// Absent from an earlier observation: pending since at most `since`.
    Known { since: DateTime<Utc> },
    /// Already pending at the first observation (or no observation is on
    /// record): it may have been available for any time.
    Unknown { first_seen: DateTime<Utc> },
}

/// First-seen times of pending security updates, and the observation history
/// that says which of them are known to be new.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstSeen {
    /// `name:arch` → candidate → first seen.
    pub entries: UpdateRecords,
    /// The first and latest earlier observations, when there were any.
    pub observations: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The state file, when there is a usable state directory.
    pub path: Option<PathBuf>,
    /// Why there is no usable state (said in evidence).
    pub unavailable: Option<String>,
}

impl Gather for FirstSeen {
    /// Without records handed in by the state layer, nothing is known.
    fn gather(_facts: &Facts<'_>) -> Self {
        FirstSeen { unavailable: Some("no state directory in use".into()), ..FirstSeen::default() }
    }
}

pub(crate) fn package_key(u: &PendingUpdate) -> String {
    format!("{}:{}", u.name, u.arch)
}

/// `a` compared with `b` in the package manager's version order; `None` when
/// either does not parse.
fn compare(manager: Manager, a: &str, b: &str) -> Option<Ordering> {
    match manager {
        Manager::Apt => Some(DebVersion::parse(a).ok()?.cmp(&DebVersion::parse(b).ok()?)),
        Manager::Dnf => Some(Evr::parse(a).cmp_evr(&Evr::parse(b))),
    }
}

impl FirstSeen {
    /// The records of `u`'s package whose fix is still missing: candidates
    /// newer than the installed version (a version that does not parse counts
    /// as missing: the older record then wins, which is the strict reading).
    pub(crate) fn missing<'a>(
        &'a self,
        u: &PendingUpdate,
        manager: Manager,
    ) -> impl Iterator<Item = (&'a String, &'a Seen)> {
        let installed = u.installed.clone();
        self.entries
            .get(&package_key(u))
            .into_iter()
            .flatten()
            .filter(move |(cand, _)| compare(manager, cand, &installed).is_none_or(Ordering::is_gt))
    }

    /// How old `u` is at `now`.
    pub fn age(&self, u: &PendingUpdate, manager: Manager, now: DateTime<Utc>) -> UpdateAge {
        let mut oldest: Option<Seen> = None;
        let mut unknown = false;
        for (_, seen) in self.missing(u, manager) {
            unknown |= !seen.age_known;
            if oldest.is_none_or(|o| seen.first_seen < o.first_seen) {
                oldest = Some(*seen);
            }
        }
        match oldest {
            Some(o) if unknown => UpdateAge::Unknown { first_seen: o.first_seen },
            Some(o) => UpdateAge::Known { since: o.first_seen },
            // Not on record: new in this run. It is known to be new only if an
            // earlier observation did not have it.
            None if self.observations.is_some() && self.unavailable.is_none() => UpdateAge::Known { since: now },
            None => UpdateAge::Unknown { first_seen: now },
        }
    }
}
