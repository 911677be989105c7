//! The agent's own persistent state (on the auditing machine, not the
//! audited root): when each pending update was first seen, so that
//! `patch.security_updates_pending` can grant a grace period counted from
//! the moment the fix became available to this node rather than from now.
//!
//! Design: checks are pure, so they never write. The CLI loads the state
//! before the run and hands it to the checks as a fact ([`FirstSeen`],
//! provided into the fact cache); after the run it records the pending
//! updates the checks saw ([`FirstSeen::save`]), keeping the first-seen
//! time of entries still pending and dropping the others. The file is
//! written atomically (temporary file, fsync, rename) with mode 0600 in a
//! 0700 directory. Entries are keyed by package, architecture and
//! candidate version: a newer candidate restarts its own clock.
//!
//! When the state directory is absent and cannot be created, or is not
//! writable, the grace period is judged from "now" and the findings say so.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::facts::updates::PendingUpdate;
use crate::facts::{Facts, Gather};

/// Where the daemon and `check` keep their state by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kosmos-node-agent";

const FILE_NAME: &str = "first-seen.json";
const STATE_LIMIT: u64 = 16 * 1024 * 1024;

/// First-seen times of pending updates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstSeen {
    /// `name:arch candidate` → first time seen.
    pub entries: BTreeMap<String, DateTime<Utc>>,
    /// The state file, when there is a usable state directory.
    pub path: Option<PathBuf>,
    /// Why there is no usable state (said in evidence).
    pub unavailable: Option<String>,
}

impl Gather for FirstSeen {
    /// Without a state directory handed in by the CLI, nothing is known.
    fn gather(_facts: &Facts<'_>) -> Self {
        FirstSeen { unavailable: Some("no state directory in use".into()), ..FirstSeen::default() }
    }
}

pub fn key(u: &PendingUpdate) -> String {
    format!("{}:{} {}", u.name, u.arch, u.candidate)
}

impl FirstSeen {
    /// Load the state from `dir`, creating the directory (0700) if needed.
    /// Never fails: problems are kept in [`FirstSeen::unavailable`].
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
                let read = f.take(STATE_LIMIT).read_to_string(&mut text);
                match read.map_err(|e| e.to_string()).and_then(|_| {
                    serde_json::from_str::<BTreeMap<String, DateTime<Utc>>>(&text).map_err(|e| e.to_string())
                }) {
                    Ok(entries) => state.entries = entries,
                    // A corrupt file is replaced at the next save; until then
                    // every update counts as first seen now, and we say so.
                    Err(e) => {
                        state.unavailable = Some(format!("{}: unreadable ({e}); it will be rewritten", path.display()))
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => state.unavailable = Some(format!("{}: {e}", path.display())),
        }
        state
    }

    /// When this update was first seen (`now` when it is new).
    pub fn first_seen(&self, u: &PendingUpdate, now: DateTime<Utc>) -> DateTime<Utc> {
        self.entries.get(&key(u)).copied().unwrap_or(now)
    }

    /// Record the currently pending updates: keep known first-seen times,
    /// add new ones at `now`, forget updates no longer pending.
    pub fn save(&self, pending: &[PendingUpdate], now: DateTime<Utc>) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        // Nothing to remember and nothing remembered: leave no file behind.
        if pending.is_empty() && self.entries.is_empty() && !path.exists() {
            return Ok(());
        }
        let entries: BTreeMap<String, DateTime<Utc>> =
            pending.iter().map(|u| (key(u), self.first_seen(u, now))).collect();
        let text = serde_json::to_string_pretty(&entries).map_err(std::io::Error::other)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn upd(name: &str, cand: &str) -> PendingUpdate {
        PendingUpdate {
            name: name.into(),
            arch: "amd64".into(),
            installed: "1".into(),
            candidate: cand.into(),
            suites: vec![],
            security: true,
        }
    }

    #[test]
    fn first_seen_round_trip_keeps_old_times_and_drops_gone() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let t1 = DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let s = FirstSeen::load(&dir);
        assert!(s.unavailable.as_deref().unwrap().contains("absent"));
        assert!(!dir.exists());
        s.save(&[upd("a", "2"), upd("b", "2")], t0).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let file = dir.join(FILE_NAME);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let s = FirstSeen::load(&dir);
        assert_eq!(s.first_seen(&upd("a", "2"), t1), t0);
        assert_eq!(s.first_seen(&upd("a", "3"), t1), t1, "a new candidate restarts the clock");
        s.save(&[upd("a", "2"), upd("c", "1")], t1).unwrap();
        let s = FirstSeen::load(&dir);
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.first_seen(&upd("c", "1"), t0), t1);
        assert!(!s.entries.contains_key("b:amd64 2"));
    }

    #[test]
    fn corrupt_or_unusable_state_is_said() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE_NAME), "{not json").unwrap();
        let s = FirstSeen::load(d.path());
        assert!(s.unavailable.as_deref().unwrap().contains("unreadable"));
        let file = d.path().join("plainfile");
        std::fs::write(&file, "").unwrap();
        let s = FirstSeen::load(&file.join("sub"));
        assert!(s.unavailable.as_deref().unwrap().contains("absent"));
        assert!(s.save(&[upd("a", "1")], Utc::now()).is_err());
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

impl crate::engine::RunHook for FirstSeenHook {
    fn before_run(&self, facts: &Facts<'_>) {
        let state = match &self.dir {
            Ok(dir) => FirstSeen::load(dir),
            Err(why) => FirstSeen { unavailable: Some(why.clone()), ..FirstSeen::default() },
        };
        facts.provide(state);
    }

    fn after_run(&self, facts: &Facts<'_>, _report: &crate::report::Report) {
        let (Some(state), Some(updates)) =
            (facts.gathered::<FirstSeen>(), facts.gathered::<crate::facts::updates::UpdateFacts>())
        else {
            return;
        };
        if let Ok(status) = &updates.0
            && let Err(e) = state.save(&status.pending, Utc::now())
        {
            tracing::warn!("cannot record first-seen times of pending updates: {e}");
        }
    }
}
