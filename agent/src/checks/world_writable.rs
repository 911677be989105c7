//! World-writable files and non-sticky world-writable directories under the
//! system paths (family `files`). Both checks share one bounded walk (see
//! [`crate::facts::world_writable`]) as long as their walk parameters agree.
//!
//! A walk that hit its entry cap is incomplete: what it found still fails,
//! but finding nothing proves nothing, so that is an `error`. The same goes
//! for directories that could not be read.

use serde_json::json;

use crate::check::{Check, ParamSpec, Params};
use crate::facts::Facts;
use crate::facts::world_writable::{MAX_LISTED, WalkParams, WalkResult, WorldWritableWalks, WritablePath};
use crate::model::{Evidence, Outcome, Severity, anssi, cis_debian, ssg};

const DEFAULT_ROOTS: [&str; 10] = ["/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/opt", "/srv", "/var"];

/// Paths owned by container runtimes and kubelet (whose content is the
/// workloads', not the node's), and scratch directories that are sticky and
/// world-writable by design.
const DEFAULT_EXCLUDES: [&str; 7] = [
    "/var/lib/containerd",
    "/var/lib/docker",
    "/var/lib/kubelet/pods",
    "/var/lib/containers",
    "/var/tmp",
    "/var/crash",
    "/var/lib/php/sessions",
];

const DEFAULT_MAX_ENTRIES: i64 = 300_000;

fn walk_params(params: &Params) -> WalkParams {
    WalkParams {
        roots: params.list("roots"),
        excludes: params.list("excludes"),
        max_entries: u64::try_from(params.int("max_entries")).unwrap_or(0),
    }
}

fn with_walk_params(check: Check) -> Check {
    check
        .param(ParamSpec::list(
            "roots",
            &DEFAULT_ROOTS,
            "Directories to walk (symlinked ones are skipped, not followed)",
        ))
        .param(ParamSpec::list(
            "excludes",
            &DEFAULT_EXCLUDES,
            "Paths not walked (container and kubelet state, scratch space)",
        ))
        .param(ParamSpec::int(
            "max_entries",
            DEFAULT_MAX_ENTRIES,
            "Stop after examining this many entries; an incomplete walk cannot pass",
        ))
}

/// Which kind of finding a check reports.
#[derive(Debug, Clone, Copy)]
enum Finding {
    Files,
    NonStickyDirs,
}

impl Finding {
    fn pick(self, r: &WalkResult) -> (usize, &[WritablePath]) {
        match self {
            Finding::Files => (r.files_count, &r.files),
            Finding::NonStickyDirs => (r.dirs_count, &r.dirs),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Finding::Files => "world-writable regular file",
            Finding::NonStickyDirs => "world-writable directory without the sticky bit",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Finding::Files => "world_writable_files",
            Finding::NonStickyDirs => "world_writable_dirs_without_sticky",
        }
    }
}

fn evaluate(facts: &Facts<'_>, params: &Params, finding: Finding) -> Outcome {
    let wp = walk_params(params);
    if wp.max_entries == 0 {
        return Outcome::error("parameter max_entries must be a positive number");
    }
    let walk = facts.get::<WorldWritableWalks>().get(facts.host(), &wp);
    let (count, listed) = finding.pick(&walk);
    let mut evidence: Vec<Evidence> = listed
        .iter()
        .map(|p| Evidence::new(&p.path, format!("{} (mode {:04o})", finding.describe(), p.mode)))
        .collect();
    if count > listed.len() {
        evidence.push(Evidence::new(
            "walk",
            format!("{} more not listed (first {MAX_LISTED} shown)", count - listed.len()),
        ));
    }
    evidence.push(Evidence::new(
        "walk",
        format!(
            "{} entries examined under {}",
            walk.entries,
            if walk.walked_roots.is_empty() { "no root".to_string() } else { walk.walked_roots.join(", ") }
        ),
    ));
    evidence.extend(walk.skipped_roots.iter().map(|(p, why)| Evidence::new(p, format!("not walked: {why}"))));
    let observed = json!({
        finding.key(): count,
        "entries_examined": walk.entries,
        "walk_complete": !walk.capped && walk.unreadable.is_empty(),
    });
    let expected = json!({ finding.key(): 0 });
    let incomplete = if walk.capped {
        Some(format!("walk incomplete: stopped after {} entries (max_entries)", walk.entries))
    } else if !walk.unreadable.is_empty() {
        Some(format!("walk incomplete: could not read {}", walk.unreadable.join("; ")))
    } else {
        None
    };
    let base = match (count, incomplete) {
        (0, None) if walk.walked_roots.is_empty() => {
            Outcome::not_applicable("none of the directories to walk exists in this root")
        }
        (0, None) => Outcome::pass(),
        (0, Some(_)) if walk.capped => {
            Outcome::error(format!("walk stopped after {} entries; cannot conclude", walk.entries))
        }
        (0, Some(why)) => Outcome::error(format!("{why}; cannot conclude")),
        (_, None) => Outcome::fail(),
        (_, Some(why)) => Outcome::fail().note(why),
    };
    base.observed(observed).expected(expected).with_evidence(evidence)
}

/// The world-writable checks.
pub fn checks() -> Vec<Check> {
    vec![
        with_walk_params(Check::new(
            "files.world_writable_files",
            "No world-writable regular files under the system directories",
            Severity::Medium,
            |f, p| evaluate(f, p, Finding::Files),
        ))
        .rationale("Any local user (or a compromised service account) can modify a world-writable file: in /etc, /usr or /var that is usually a path to root or to tampering with logs and data.")
        .remediation("Remove the write bit for others (chmod o-w FILE) or fix the package or process that creates it.")
        .refs([cis_debian("7.1.11"), anssi("R54"), ssg("file_permissions_unauthorized_world_writable")]),
        with_walk_params(Check::new(
            "files.world_writable_dirs_sticky",
            "World-writable directories under the system directories have the sticky bit",
            Severity::Medium,
            |f, p| evaluate(f, p, Finding::NonStickyDirs),
        ))
        .rationale("In a world-writable directory without the sticky bit any user can delete or replace other users' files, including files a privileged process is about to use.")
        .remediation("Set the sticky bit (chmod +t DIR) or remove the write bit for others (chmod o-w DIR).")
        .refs([anssi("R54"), ssg("dir_perms_world_writable_sticky_bits")]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::testutil::{chmod, eval, eval_with, offline, root_with};

    fn etc_root() -> tempfile::TempDir {
        root_with(&[("/etc/hosts", ""), ("/usr/lib/x", ""), ("/var/tmp/scratch", ""), ("/var/cache/a/b", "")])
    }

    #[test]
    fn clean_root_passes_both() {
        let d = etc_root();
        chmod(d.path(), "/var/tmp", 0o1777);
        let h = offline(d.path());
        let o = eval("files.world_writable_files", &h);
        assert_eq!(o.status, Status::Pass, "{:?}", o.reason);
        // hosts; lib, x; tmp (excluded, not descended), cache, a, b
        assert_eq!(o.observed.unwrap()["entries_examined"], json!(7));
        assert_eq!(eval("files.world_writable_dirs_sticky", &h).status, Status::Pass);
    }

    #[test]
    fn findings_fail_with_paths() {
        let d = etc_root();
        let r = d.path();
        chmod(r, "/etc/hosts", 0o666);
        chmod(r, "/var/cache/a", 0o777);
        chmod(r, "/var/tmp/scratch", 0o666); // excluded by default
        let h = offline(r);
        let o = eval("files.world_writable_files", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/etc/hosts");
        assert_eq!(o.observed.unwrap()["world_writable_files"], json!(1));
        let o = eval("files.world_writable_dirs_sticky", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/var/cache/a");
        chmod(r, "/var/cache/a", 0o1777);
        assert_eq!(eval("files.world_writable_dirs_sticky", &offline(r)).status, Status::Pass);
        // Excludes are a parameter: with none, /var/tmp's file is found.
        let o = eval_with("files.world_writable_files", &offline(r), &[("excludes", json!([]))]);
        assert_eq!(o.observed.unwrap()["world_writable_files"], json!(2));
    }

    #[test]
    fn capped_walk_fails_with_findings_and_errors_without() {
        let d = etc_root();
        let r = d.path();
        let h = offline(r);
        let o = eval_with("files.world_writable_files", &h, &[("max_entries", json!(2))]);
        assert_eq!(o.status, Status::Error);
        assert_eq!(o.reason.unwrap(), "walk stopped after 2 entries; cannot conclude");
        chmod(r, "/etc/hosts", 0o666);
        let o = eval_with("files.world_writable_files", &h, &[("max_entries", json!(2))]);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("walk incomplete"));
        let o = eval_with("files.world_writable_files", &h, &[("max_entries", json!(0))]);
        assert_eq!(o.status, Status::Error);
    }

    #[test]
    fn no_roots_present_is_not_applicable() {
        let d = root_with(&[]);
        let o = eval("files.world_writable_files", &offline(d.path()));
        assert_eq!(o.status, Status::NotApplicable);
        assert!(o.evidence.iter().any(|e| e.source == "/etc" && e.detail.contains("absent")));
    }
}
