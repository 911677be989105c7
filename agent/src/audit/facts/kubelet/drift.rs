//! Drift of the kubelet's effective configuration, key by key, against the
//! previous run and against a pinned reference.
//!
//! Design: checks are pure and never write. The previous and pinned
//! snapshots are read by the state layer from the agent's state directory
//! ([`crate::state::kubelet_drift`]) and handed to the run as the
//! [`DriftInputs`] fact (`Facts::provide`) before any check runs.
//! [`KubeletDrift`] compares them with the snapshot of this run and keeps
//! that new snapshot; after the run, the state layer persists it (only if drift was
//! evaluated, so "previous run" always means the previous drift evaluation).
//!
//! A snapshot maps keys to values: every key of the effective configuration
//! (value and provenance), plus `unit:<path>` holding the SHA-256 of each
//! unit file, drop-in and environment file, so that a changed drop-in counts
//! even when it does not change a value. Each entry remembers `since`, the
//! time its current value was first seen, carried over from run to run while
//! the value stays the same; a key that disappeared is kept as a tombstone
//! (no value) while the pinned reference or the previous run still has it.
//! A change is therefore reported with the time it was first seen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Component, KubeletFacts, render};
use crate::audit::facts::{Facts, Gather};

pub const SNAPSHOT_SCHEMA: &str = "kosmos.kubelet-snapshot/v1";
/// The last effective kubelet configuration, in the state directory.
pub const LAST_SNAPSHOT: &str = "kubelet-last.json";
/// The pinned reference (`baseline pin`), in the state directory.
pub const PINNED_SNAPSHOT: &str = "kubelet-pinned.json";

/// One key of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapEntry {
    /// `None` for a key that is gone (a tombstone).
    pub value: Option<String>,
    pub provenance: Option<String>,
    /// RFC 3339 time the current value was first seen.
    pub since: String,
}

/// The effective kubelet configuration at one point in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema: String,
    pub taken_at: String,
    /// How the kubelet was found (for the reader of the state file).
    pub source: String,
    pub entries: BTreeMap<String, SnapEntry>,
}

/// One changed key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub key: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub old_provenance: Option<String>,
    pub new_provenance: Option<String>,
    pub first_seen: String,
}

impl Change {
    pub fn describe(&self) -> String {
        let side = |v: &Option<String>, p: &Option<String>| match (v, p) {
            (Some(v), Some(p)) => format!("{v} [{p}]"),
            (Some(v), None) => v.clone(),
            (None, _) => "<absent>".to_string(),
        };
        format!(
            "{}: {} -> {}, first seen {}",
            self.key,
            side(&self.old, &self.old_provenance),
            side(&self.new, &self.new_provenance),
            self.first_seen
        )
    }
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// The current key/value/provenance triples of a component.
pub fn current_entries(k: &Component) -> BTreeMap<String, (String, String)> {
    let mut out: BTreeMap<String, (String, String)> =
        k.settings.iter().map(|(key, s)| (key.clone(), (render(&s.value), s.provenance.describe()))).collect();
    if let Some(svc) = &k.service {
        for (path, text) in &svc.contents {
            out.insert(
                format!("unit:{path}"),
                (format!("sha256:{}", sha256_hex(text.as_bytes())), "file content".into()),
            );
        }
    }
    out
}

/// Build this run's snapshot, carrying `since` over from the previous one.
pub fn build_snapshot(k: &Component, previous: Option<&Snapshot>, pinned: Option<&Snapshot>, now: &str) -> Snapshot {
    let current = current_entries(k);
    let prev_entry = |key: &str| previous.and_then(|p| p.entries.get(key));
    let mut entries = BTreeMap::new();
    for (key, (value, provenance)) in &current {
        let since = match prev_entry(key) {
            Some(e) if e.value.as_deref() == Some(value.as_str()) => e.since.clone(),
            _ => now.to_string(),
        };
        entries
            .insert(key.clone(), SnapEntry { value: Some(value.clone()), provenance: Some(provenance.clone()), since });
    }
    let gone = previous
        .iter()
        .chain(pinned.iter())
        .flat_map(|s| s.entries.iter())
        .filter(|(key, e)| {
            !current.contains_key(*key) && (e.value.is_some() || pinned.is_some_and(|p| p.entries.contains_key(*key)))
        })
        .map(|(key, _)| key.clone())
        .collect::<Vec<_>>();
    for key in gone {
        let since = match prev_entry(&key) {
            Some(e) if e.value.is_none() => e.since.clone(),
            _ => now.to_string(),
        };
        entries.insert(key, SnapEntry { value: None, provenance: None, since });
    }
    Snapshot { schema: SNAPSHOT_SCHEMA.into(), taken_at: now.into(), source: k.discovery.describe(), entries }
}

/// Keys whose value differs between `base` and `next`.
pub fn diff(base: &Snapshot, next: &Snapshot) -> Vec<Change> {
    let mut keys: Vec<&String> = base.entries.keys().chain(next.entries.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let b = base.entries.get(key);
        let n = next.entries.get(key);
        let bv = b.and_then(|e| e.value.clone());
        let nv = n.and_then(|e| e.value.clone());
        if bv == nv {
            continue;
        }
        out.push(Change {
            key: key.clone(),
            old: bv,
            new: nv,
            old_provenance: b.and_then(|e| e.provenance.clone()),
            new_provenance: n.and_then(|e| e.provenance.clone()),
            first_seen: n.map(|e| e.since.clone()).unwrap_or_else(|| next.taken_at.clone()),
        });
    }
    out
}

/// What the state layer hands the run about its state directory.
#[derive(Debug, Clone)]
pub struct DriftInputs {
    /// The state directory, or why there is none for this run.
    pub state_dir: Result<String, String>,
    /// The previous run's snapshot (`None`: first run).
    pub previous: Result<Option<Snapshot>, String>,
    /// The pinned reference (`None`: nothing pinned).
    pub pinned: Result<Option<Snapshot>, String>,
    /// This run's time (RFC 3339).
    pub now: String,
}

impl Gather for DriftInputs {
    /// Without the state layer (library use, unit tests of other checks) there
    /// is no state: drift cannot be judged.
    fn gather(_facts: &Facts<'_>) -> Self {
        DriftInputs {
            state_dir: Err("no state directory was given to this run".into()),
            previous: Ok(None),
            pinned: Ok(None),
            now: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// The drift verdict material.
#[derive(Debug, Clone)]
pub enum KubeletDrift {
    NotApplicable(String),
    Error(String),
    Computed {
        state_dir: String,
        /// The snapshot to persist after the run.
        next: Snapshot,
        /// `None` when there was no previous run.
        vs_previous: Option<Vec<Change>>,
        /// `None` when nothing is pinned.
        vs_pinned: Option<Vec<Change>>,
    },
}

impl Gather for KubeletDrift {
    fn gather(facts: &Facts<'_>) -> Self {
        let k = facts.get::<KubeletFacts>();
        let Some(c) = &k.kubelet else { return KubeletDrift::NotApplicable(k.not_found_reason()) };
        let inputs = facts.get::<DriftInputs>();
        let state_dir = match &inputs.state_dir {
            Ok(d) => d.clone(),
            Err(why) => return KubeletDrift::NotApplicable(why.clone()),
        };
        if let Some(e) = &c.flags_uncertain {
            return KubeletDrift::Error(format!("the kubelet command line is uncertain: {e}"));
        }
        if let super::ConfigState::Failed { error, .. } = &c.config {
            return KubeletDrift::Error(format!("the kubelet config file is unusable: {error}"));
        }
        let previous = match &inputs.previous {
            Ok(p) => p.as_ref(),
            Err(e) => return KubeletDrift::Error(e.clone()),
        };
        let pinned = match &inputs.pinned {
            Ok(p) => p.as_ref(),
            Err(e) => return KubeletDrift::Error(e.clone()),
        };
        let next = build_snapshot(c, previous, pinned, &inputs.now);
        KubeletDrift::Computed {
            state_dir,
            vs_previous: previous.map(|p| diff(p, &next)),
            vs_pinned: pinned.map(|p| diff(p, &next)),
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::facts::kubelet::{Discovery, Provenance, Setting};
    use serde_json::Value;

    fn component(pairs: &[(&str, Value)]) -> Component {
        Component {
            discovery: Discovery::Unit { path: "/u".into() },
            binary: None,
            service: None,
            flags: Default::default(),
            flags_uncertain: None,
            config: crate::audit::facts::kubelet::ConfigState::NotUsed,
            settings: pairs
                .iter()
                .map(|(k, v)| {
                    (k.to_string(), Setting { value: v.clone(), provenance: Provenance::File { path: "/c".into() } })
                })
                .collect(),
            evidence: Vec::new(),
        }
    }

    #[test]
    fn changes_are_reported_once_against_previous_and_kept_against_pin() {
        let c1 = component(&[("readOnlyPort", Value::from(0)), ("seccompDefault", Value::Bool(true))]);
        let s1 = build_snapshot(&c1, None, None, "T1");
        let pin = s1.clone();
        let c2 = component(&[("readOnlyPort", Value::from(10255))]);
        let s2 = build_snapshot(&c2, Some(&s1), Some(&pin), "T2");
        let d = diff(&s1, &s2);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].key, "readOnlyPort");
        assert_eq!(d[0].old.as_deref(), Some("0"));
        assert_eq!(d[0].new.as_deref(), Some("10255"));
        assert_eq!(d[0].first_seen, "T2");
        assert_eq!(d[1].new, None, "removed key");
        // Third run, unchanged: nothing new against the previous run...
        let s3 = build_snapshot(&c2, Some(&s2), Some(&pin), "T3");
        assert!(diff(&s2, &s3).is_empty());
        // ...but the pin still shows both, first seen at T2.
        let p = diff(&pin, &s3);
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|c| c.first_seen == "T2"), "{p:?}");
        assert!(p[0].describe().contains("0 [file /c] -> 10255 [file /c], first seen T2"));
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let s = build_snapshot(&component(&[("a", Value::from("x"))]), None, None, "T");
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&j).unwrap(), s);
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
