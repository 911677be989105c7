//! World-writable files and non-sticky world-writable directories under the
//! system paths (family `files`). Both checks share one bounded walk (see
//! [`crate::audit::facts::world_writable`]) as long as their walk parameters agree.
//!
//! A walk that hit its entry cap is incomplete: what it found still fails,
//! but finding nothing proves nothing, so that is an `error`. The same goes
//! for directories that could not be read.

use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::world_writable::{MAX_LISTED, WalkParams, WalkResult, WorldWritableWalks, WritablePath};
use crate::audit::model::{Evidence, Outcome, Severity, anssi, cis_debian, ssg};

/// The whole file system, as CIS Debian 12 7.1.11 walks it: `/`, and on a
/// live host every other local mount (see `local_mount_roots`).
const DEFAULT_ROOTS: [&str; 1] = ["/"];

/// The paths CIS Debian 12 7.1.11's audit leaves out: per-user runtime
/// directories, snaps, and the container runtimes' and kubelet's state
/// (whose content is the workloads', not the node's).
const DEFAULT_EXCLUDES: [&str; 5] = ["/run/user", "/snap", "*/containerd", "*/kubelet/pods", "*/kubelet/plugins"];

const DEFAULT_MAX_ENTRIES: i64 = 1_000_000;

fn walk_params(facts: &Facts<'_>, params: &Params) -> Result<WalkParams, String> {
    let mut roots = params.list("roots");
    if params.bool("local_mounts") {
        roots.extend(crate::audit::facts::world_writable::local_mount_roots(facts)?);
    }
    Ok(WalkParams {
        roots,
        excludes: params.list("excludes"),
        max_entries: u64::try_from(params.int("max_entries")).unwrap_or(0),
    })
}

fn with_walk_params(check: Check) -> Check {
    check
        .param(ParamSpec::list(
            "roots",
            &DEFAULT_ROOTS,
            "Directories to walk (symlinked ones are skipped, not followed)",
        ))
        .param(ParamSpec::bool(
            "local_mounts",
            true,
            "On a live host, also walk every local mount (not network, removable or pseudo file systems, not /tmp*, /var/tmp*, /run/user), as CIS 7.1.11 does",
        ))
        .param(ParamSpec::list(
            "excludes",
            &DEFAULT_EXCLUDES,
            "Paths not walked: a prefix (/run/user) or `*/name` for a directory name anywhere (CIS 7.1.11's exclusions by default)",
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
    let wp = match walk_params(facts, params) {
        Ok(w) => w,
        Err(e) => return Outcome::error(format!("the local mounts cannot be listed: {e}")),
    };
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
            "No world-writable regular files on the local file systems",
            Severity::Medium,
            |f, p| evaluate(f, p, Finding::Files),
        ))
        .rationale("Any local user (or a compromised service account) can modify a world-writable file: in /etc, /usr or /var that is usually a path to root or to tampering with logs and data. The walk covers what CIS Debian 12 7.1.11 audits: every local file system, except /proc, /sys, /run/user, snaps, mounts on /tmp* and /var/tmp*, and container runtime and kubelet pod state.")
        .remediation("Remove the write bit for others (chmod o-w FILE) or fix the package or process that creates it.")
        .refs([cis_debian("7.1.11"), anssi("R54"), ssg("file_permissions_unauthorized_world_writable")]),
        with_walk_params(Check::new(
            "files.world_writable_dirs_sticky",
            "World-writable directories on the local file systems have the sticky bit",
            Severity::Medium,
            |f, p| evaluate(f, p, Finding::NonStickyDirs),
        ))
        .rationale("In a world-writable directory without the sticky bit any user can delete or replace other users' files, including files a privileged process is about to use. The walk covers what CIS Debian 12 7.1.11 audits (see files.world_writable_files).")
        .remediation("Set the sticky bit (chmod +t DIR) or remove the write bit for others (chmod o-w DIR).")
        .refs([cis_debian("7.1.11"), anssi("R54"), ssg("dir_perms_world_writable_sticky_bits")]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::Status;
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
        // etc, hosts; usr, lib, x; var, tmp, scratch, cache, a, b
        assert_eq!(o.observed.unwrap()["entries_examined"], json!(11));
        assert_eq!(eval("files.world_writable_dirs_sticky", &h).status, Status::Pass);
    }

    #[test]
    fn findings_fail_with_paths() {
        let d = etc_root();
        let r = d.path();
        chmod(r, "/etc/hosts", 0o666);
        chmod(r, "/var/cache/a", 0o777);
        chmod(r, "/var/tmp/scratch", 0o666); // found: CIS 7.1.11 only skips a separate /var/tmp mount
        let h = offline(r);
        let o = eval("files.world_writable_files", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/etc/hosts");
        assert_eq!(o.observed.unwrap()["world_writable_files"], json!(2));
        let o = eval("files.world_writable_dirs_sticky", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/var/cache/a");
        chmod(r, "/var/cache/a", 0o1777);
        assert_eq!(eval("files.world_writable_dirs_sticky", &offline(r)).status, Status::Pass);
        // Excludes are a parameter.
        let o = eval_with("files.world_writable_files", &offline(r), &[("excludes", json!(["/var/tmp"]))]);
        assert_eq!(o.observed.unwrap()["world_writable_files"], json!(1));
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
        // etc, usr, var, then /etc/hosts (the 4th), then the cap.
        let o = eval_with("files.world_writable_files", &h, &[("max_entries", json!(4))]);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("walk incomplete"));
        let o = eval_with("files.world_writable_files", &h, &[("max_entries", json!(0))]);
        assert_eq!(o.status, Status::Error);
    }

    #[test]
    fn no_roots_present_is_not_applicable() {
        let d = root_with(&[]);
        let o = eval_with("files.world_writable_files", &offline(d.path()), &[("roots", json!(["/etc", "/opt"]))]);
        assert_eq!(o.status, Status::NotApplicable);
        assert!(o.evidence.iter().any(|e| e.source == "/etc" && e.detail.contains("absent")));
    }
}
