//! First-seen records of pending security updates, on disk: loaded before
//! a run into the [`FirstSeen`] fact (see
//! [`crate::audit::facts::packages::first_seen`] for the rule that judges
//! ages from them), and updated after it with the pending security updates
//! the checks saw. The file (`first-seen.json`, format 2; format 1 is still
//! read) is written atomically with mode 0600 in a 0700 directory.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::durable;
use crate::audit::engine::RunHook;
use crate::audit::facts::Facts;
use crate::audit::facts::packages::first_seen::{FirstSeen, Seen, UpdateRecords, package_key};
use crate::audit::facts::packages::updates::{Manager, PendingUpdate, UpdateFacts};

const FILE_NAME: &str = "first-seen.json";
const STATE_LIMIT: u64 = 16 * 1024 * 1024;
const FORMAT: u32 = 2;

/// The state file (format 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    /// The first and the latest run that established the node's pending
    /// updates.
    first_observation: DateTime<Utc>,
    last_observation: DateTime<Utc>,
    /// `name:arch` → candidate version → when first seen.
    updates: UpdateRecords,
}

/// Read the format-1 file (`"name:arch candidate"` → time). Which of its
/// entries were new when recorded is unknown, so none is trusted as new; the
/// file itself proves earlier observations up to its latest time.
fn from_format_1(map: BTreeMap<String, DateTime<Utc>>) -> (UpdateRecords, Option<DateTime<Utc>>) {
    let mut entries: UpdateRecords = BTreeMap::new();
    let mut latest = None::<DateTime<Utc>>;
    for (k, t) in map {
        let Some((pkg, cand)) = k.split_once(' ') else { continue };
        entries.entry(pkg.to_string()).or_default().insert(cand.to_string(), Seen { first_seen: t, age_known: false });
        latest = Some(latest.map_or(t, |l| l.max(t)));
    }
    (entries, latest)
}

impl FirstSeen {
    /// Load the state from `dir`. Never fails: problems are kept in
    /// [`FirstSeen::unavailable`], and every update then has an unknown age.
    pub fn load(dir: &Path) -> FirstSeen {
        let shown = dir.display();
        if !dir.is_dir() {
            // Created (0700) by the first save, not here: a run that gathers
            // no updates must not leave directories behind.
            return FirstSeen {
                path: Some(dir.join(FILE_NAME)),
                unavailable: Some(format!("state directory {shown} is absent (first run?)")),
                ..FirstSeen::default()
            };
        }
        if nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
            return FirstSeen {
                unavailable: Some(format!("state directory {shown} is not writable")),
                ..FirstSeen::default()
            };
        }
        let path = dir.join(FILE_NAME);
        let mut state = FirstSeen { path: Some(path.clone()), ..FirstSeen::default() };
        match std::fs::File::open(&path) {
            Ok(f) => {
                let mut text = String::new();
                let parsed = f.take(STATE_LIMIT).read_to_string(&mut text).map_err(|e| e.to_string()).and_then(|_| {
                    match serde_json::from_str::<StateFile>(&text) {
                        Ok(file) if file.format == FORMAT => {
                            Ok((file.updates, Some((file.first_observation, file.last_observation))))
                        }
                        Ok(file) => Err(format!("unknown state format {}", file.format)),
                        Err(e) => match serde_json::from_str::<BTreeMap<String, DateTime<Utc>>>(&text) {
                            Ok(old) => {
                                let (entries, latest) = from_format_1(old);
                                Ok((entries, latest.map(|t| (t, t))))
                            }
                            Err(_) => Err(e.to_string()),
                        },
                    }
                });
                match parsed {
                    Ok((entries, observations)) => {
                        state.entries = entries;
                        state.observations = observations;
                    }
                    // A corrupt file is replaced at the next save; until then
                    // no earlier observation is on record, and we say so.
                    Err(e) => {
                        state.unavailable = Some(format!("{}: unreadable ({e}); it will be rewritten", path.display()))
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                state.unavailable = Some(format!("{} does not exist yet (first observation)", path.display()));
            }
            Err(e) => state.unavailable = Some(format!("{}: {e}", path.display())),
        }
        state
    }

    /// Record the currently pending security updates at `now`: keep the
    /// records of fixes still missing, add new candidates (known to be new
    /// only when an earlier observation exists), forget packages no longer
    /// pending, and log this observation.
    pub fn save(&self, manager: Manager, pending: &[PendingUpdate], now: DateTime<Utc>) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let earlier = self.observations.is_some() && self.unavailable.is_none();
        let mut updates: UpdateRecords = BTreeMap::new();
        for u in pending.iter().filter(|u| u.security) {
            let records = updates.entry(package_key(u)).or_default();
            for (cand, seen) in self.missing(u, manager) {
                records.insert(cand.clone(), *seen);
            }
            records.entry(u.candidate.clone()).or_insert(Seen { first_seen: now, age_known: earlier });
        }
        let file = StateFile {
            format: FORMAT,
            first_observation: self.observations.map_or(now, |(first, _)| first),
            last_observation: now,
            updates,
        };
        let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
        durable::replace_private(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::facts::packages::first_seen::UpdateAge;
    use std::os::unix::fs::PermissionsExt;

    fn upd(name: &str, installed: &str, cand: &str) -> PendingUpdate {
        PendingUpdate {
            name: name.into(),
            arch: "amd64".into(),
            installed: installed.into(),
            candidate: cand.into(),
            suites: vec![],
            security: true,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn updates_at_the_first_observation_have_an_unknown_age() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let (t0, t1, t2) = (t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z"), t("2026-02-01T00:00:00Z"));
        let s = FirstSeen::load(&dir);
        assert!(s.unavailable.as_deref().unwrap().contains("absent"));
        assert!(!dir.exists());
        assert_eq!(s.age(&upd("a", "1", "2"), Manager::Apt, t0), UpdateAge::Unknown { first_seen: t0 });
        s.save(Manager::Apt, &[upd("a", "1", "2")], t0).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let file = dir.join(FILE_NAME);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

        // Second observation: `a` stays of unknown age; `b` is new and known.
        let s = FirstSeen::load(&dir);
        assert!(s.unavailable.is_none(), "{s:?}");
        assert_eq!(s.age(&upd("a", "1", "2"), Manager::Apt, t1), UpdateAge::Unknown { first_seen: t0 });
        assert_eq!(s.age(&upd("b", "1", "2"), Manager::Apt, t1), UpdateAge::Known { since: t1 });
        s.save(Manager::Apt, &[upd("a", "1", "2"), upd("b", "1", "2")], t1).unwrap();

        // A newer candidate of `b` does not restart its clock: the fix of
        // candidate 2 is still missing. A newer candidate of `a` inherits the
        // unknown age.
        let s = FirstSeen::load(&dir);
        assert_eq!(s.age(&upd("b", "1", "3"), Manager::Apt, t2), UpdateAge::Known { since: t1 });
        assert_eq!(s.age(&upd("a", "1", "3"), Manager::Apt, t2), UpdateAge::Unknown { first_seen: t0 });
        // Once `b` 2 is installed, a pending 3 is judged from its own record.
        s.save(Manager::Apt, &[upd("b", "1", "3")], t2).unwrap();
        let s = FirstSeen::load(&dir);
        assert_eq!(s.age(&upd("b", "2", "3"), Manager::Apt, t2), UpdateAge::Known { since: t2 });
        assert!(!s.entries.contains_key("a:amd64"), "a is no longer pending: forgotten");
        assert_eq!(s.observations.map(|o| o.0), Some(t0));
        // `a` reappearing after an observation without it is new.
        assert_eq!(s.age(&upd("a", "2", "3"), Manager::Apt, t2), UpdateAge::Known { since: t2 });
    }

    #[test]
    fn the_first_format_is_read_as_unknown_ages_after_an_observation() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE_NAME), r#"{"a:amd64 2": "2026-01-01T00:00:00Z"}"#).unwrap();
        let s = FirstSeen::load(d.path());
        assert!(s.unavailable.is_none());
        let now = t("2026-03-01T00:00:00Z");
        assert_eq!(
            s.age(&upd("a", "1", "2"), Manager::Apt, now),
            UpdateAge::Unknown { first_seen: t("2026-01-01T00:00:00Z") }
        );
        assert_eq!(s.age(&upd("z", "1", "2"), Manager::Apt, now), UpdateAge::Known { since: now });
    }

    #[test]
    fn corrupt_or_unusable_state_is_said_and_nothing_is_known_new() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE_NAME), "{not json").unwrap();
        let s = FirstSeen::load(d.path());
        assert!(s.unavailable.as_deref().unwrap().contains("unreadable"));
        let now = Utc::now();
        assert_eq!(s.age(&upd("a", "1", "2"), Manager::Apt, now), UpdateAge::Unknown { first_seen: now });
        let file = d.path().join("plainfile");
        std::fs::write(&file, "").unwrap();
        let s = FirstSeen::load(&file.join("sub"));
        assert!(s.unavailable.as_deref().unwrap().contains("absent"));
        assert!(s.save(Manager::Apt, &[upd("a", "1", "2")], Utc::now()).is_err());
    }

    #[test]
    fn rpm_versions_are_ordered_by_rpm_rules() {
        let d = tempfile::tempdir().unwrap();
        let (t0, t1) = (t("2026-01-01T00:00:00Z"), t("2026-01-05T00:00:00Z"));
        let s = FirstSeen::load(d.path());
        s.save(Manager::Dnf, &[], t0).unwrap();
        let s = FirstSeen::load(d.path());
        s.save(Manager::Dnf, &[upd("openssl", "1:3.0.7-24.el9", "1:3.0.7-25.el9")], t0).unwrap();
        let s = FirstSeen::load(d.path());
        assert_eq!(
            s.age(&upd("openssl", "1:3.0.7-24.el9", "1:3.0.7-27.el9"), Manager::Dnf, t1),
            UpdateAge::Known { since: t0 }
        );
        assert_eq!(
            s.age(&upd("openssl", "1:3.0.7-25.el9", "1:3.0.7-27.el9"), Manager::Dnf, t1),
            UpdateAge::Known { since: t1 }
        );
    }
}

/// Hands [`FirstSeen`] to the checks before a run and records, after it, the
/// pending updates they saw. `dir` is the state directory, or why the run has
/// none (an offline root audited without `--state-dir`).
#[derive(Debug)]
pub struct FirstSeenHook {
    dir: Result<PathBuf, String>,
}

impl FirstSeenHook {
    pub fn new(dir: Result<&Path, String>) -> Self {
        FirstSeenHook { dir: dir.map(Path::to_path_buf) }
    }
}

impl RunHook for FirstSeenHook {
    fn before_run(&self, facts: &Facts<'_>) {
        let state = match &self.dir {
            Ok(dir) => FirstSeen::load(dir),
            Err(why) => FirstSeen { unavailable: Some(why.clone()), ..FirstSeen::default() },
        };
        facts.provide(state);
    }

    fn after_run(&self, facts: &Facts<'_>) {
        let (Some(state), Some(updates)) = (facts.gathered::<FirstSeen>(), facts.gathered::<UpdateFacts>()) else {
            return;
        };
        if let Ok(status) = &updates.0
            && let Err(e) = state.save(status.manager, &status.pending, Utc::now())
        {
            tracing::warn!("cannot record first-seen times of pending updates: {e}");
        }
    }
}
