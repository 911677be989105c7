//! Pending package updates of the audited system, whatever its package
//! manager: the one fact the `patch` checks read.
//!
//! Debian and Ubuntu are computed from the node's own files (dpkg status,
//! apt lists, pins; see [`super::apt`]), so this works on an offline root
//! too. RPM systems ask dnf (or yum) through the Host's command runner
//! ([`super::rpm`]). Either way the result carries how fresh the package
//! metadata is, because "no pending updates" computed from month-old lists
//! means nothing.

use std::time::SystemTime;

use serde::Serialize;

use super::{FactError, Facts, Gather};
use super::{PackageFacts, PackageFormat};

/// Which tool the updates were computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    Apt,
    Dnf,
}

/// One installed package with a newer candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingUpdate {
    pub name: String,
    pub arch: String,
    pub installed: String,
    pub candidate: String,
    /// Where the candidate comes from (`Debian-Security:12/oldstable-security`,
    /// a dnf repository, an advisory id).
    pub suites: Vec<String>,
    pub security: bool,
}

impl PendingUpdate {
    pub fn describe(&self) -> String {
        format!(
            "{}:{} {} -> {} ({}){}",
            self.name,
            self.arch,
            self.installed,
            self.candidate,
            self.suites.join(", "),
            if self.security { " [security]" } else { "" }
        )
    }
}

/// A newer version exists but will not be installed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldUpdate {
    pub name: String,
    pub arch: String,
    pub installed: String,
    pub available: String,
    pub security: bool,
    /// "held (dpkg selection hold)", "pinned to priority -1 by /etc/apt/preferences.d/x:3".
    pub why: String,
}

/// When the package metadata was last refreshed, and how we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    pub refreshed: SystemTime,
    pub source: String,
}

/// The pending updates of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateStatus {
    pub manager: Manager,
    pub pending: Vec<PendingUpdate>,
    pub held: Vec<HeldUpdate>,
    /// Files read or commands run, for evidence.
    pub sources: Vec<String>,
    pub freshness: Option<Freshness>,
    /// Notes that qualify the result without invalidating it.
    pub notes: Vec<String>,
}

impl UpdateStatus {
    pub fn security(&self) -> impl Iterator<Item = &PendingUpdate> {
        self.pending.iter().filter(|u| u.security)
    }

    /// Age of the metadata in whole days at `now`, if known.
    pub fn metadata_age_days(&self, now: SystemTime) -> Option<u64> {
        let f = self.freshness.as_ref()?;
        Some(now.duration_since(f.refreshed).map(|d| d.as_secs() / 86_400).unwrap_or(0))
    }
}

/// The gathered update status, or why it is unknown.
#[derive(Debug, Clone)]
pub struct UpdateFacts(pub Result<UpdateStatus, FactError>);

impl Gather for UpdateFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        let db = facts.get::<PackageFacts>();
        let db = match &db.0 {
            Ok(db) => db,
            Err(e) => return UpdateFacts(Err(e.clone())),
        };
        if let Some(p) = db.problem_summary() {
            return UpdateFacts(Err(FactError::new(format!(
                "the installed-package database cannot be trusted, so neither can pending updates: {p}"
            ))));
        }
        UpdateFacts(match db.format {
            PackageFormat::Dpkg => super::apt::pending_updates(facts.host(), db),
            PackageFormat::Rpm => super::rpm::pending_updates(facts.host(), db),
        })
    }
}
