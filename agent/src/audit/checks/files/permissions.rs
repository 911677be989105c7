//! Permissions and ownership of the account databases (family `files`).
//!
//! Modes are "this or stricter": no permission bit outside the allowed mask
//! (and no setuid/setgid/sticky bit). Debian's `/etc/shadow` and
//! `/etc/gshadow` are 0640 root:shadow, so that `unix_chkpwd` and other
//! setgid-shadow helpers can read them; SSG's 0000 would break them and is
//! not required. Group names are resolved through the audited root's own
//! `/etc/group`: an offline image may number `shadow` differently from the
//! machine running the audit.

use serde_json::json;

use crate::audit::check::Check;
use crate::audit::facts::Facts;
use crate::audit::facts::accounts::{AccountsFacts, GroupLookup};
use crate::audit::host::{FileKind, FileMeta};
use crate::audit::model::{Evidence, Outcome, Severity, anssi, cis_debian, ssg};

/// The required permissions of one file.
#[derive(Debug, Clone, Copy)]
struct FileRule {
    path: &'static str,
    /// Bits that may be set; any other bit is a failure.
    max_mode: u32,
    /// Group names accepted besides gid 0.
    other_groups: &'static [&'static str],
}

const PASSWD_RULE: FileRule = FileRule { path: "/etc/passwd", max_mode: 0o644, other_groups: &[] };
const SHADOW_RULE: FileRule = FileRule { path: "/etc/shadow", max_mode: 0o640, other_groups: &["shadow"] };
const GROUP_RULE: FileRule = FileRule { path: "/etc/group", max_mode: 0o644, other_groups: &[] };
const GSHADOW_RULE: FileRule = FileRule { path: "/etc/gshadow", max_mode: 0o640, other_groups: &["shadow"] };

/// The backups shadow-utils writes (`passwd-`…) hold the same data.
const BACKUP_RULES: [FileRule; 4] = [
    FileRule { path: "/etc/passwd-", max_mode: 0o644, other_groups: &[] },
    FileRule { path: "/etc/shadow-", max_mode: 0o640, other_groups: &["shadow"] },
    FileRule { path: "/etc/group-", max_mode: 0o644, other_groups: &[] },
    FileRule { path: "/etc/gshadow-", max_mode: 0o640, other_groups: &["shadow"] },
];

impl FileRule {
    fn expected_group(&self) -> String {
        std::iter::once("root").chain(self.other_groups.iter().copied()).collect::<Vec<_>>().join(" or ")
    }

    fn expected(&self) -> serde_json::Value {
        json!({
            "mode": format!("{:04o} or stricter", self.max_mode),
            "owner": "root",
            "group": self.expected_group(),
        })
    }
}

/// The verdict on one existing file.
struct FileVerdict {
    ok: bool,
    observed: serde_json::Value,
    evidence: Evidence,
    /// What is wrong, when something is.
    problems: Vec<String>,
}

fn judge(accounts: &AccountsFacts, rule: &FileRule, meta: &FileMeta) -> Result<FileVerdict, Outcome> {
    if meta.kind != FileKind::File {
        return Err(Outcome::error(format!("{}: is a {}, not a regular file", rule.path, meta.kind.describe())));
    }
    let (group_name, group_ok) = if meta.gid == 0 {
        ("root".to_string(), true)
    } else {
        match accounts.group_name(meta.gid) {
            GroupLookup::Found(name) => {
                let ok = rule.other_groups.contains(&name.as_str());
                (name, ok)
            }
            GroupLookup::Unknown => (format!("unknown gid {}", meta.gid), false),
            // Only gid 0 is acceptable here, so the name does not matter.
            GroupLookup::Undecidable(_) if rule.other_groups.is_empty() => (format!("gid {}", meta.gid), false),
            GroupLookup::Undecidable(why) => {
                return Err(Outcome::error(format!(
                    "{}: cannot tell whether gid {} is the shadow group: {why}",
                    rule.path, meta.gid
                )));
            }
        }
    };
    let mode_ok = meta.mode & !rule.max_mode == 0;
    let owner_ok = meta.uid == 0;
    let detail = format!(
        "mode {:04o}, owner uid {}, group {group_name} (gid {}); expected {:04o} or stricter, root:{}",
        meta.mode,
        meta.uid,
        meta.gid,
        rule.max_mode,
        rule.expected_group()
    );
    let mut problems = Vec::new();
    if !mode_ok {
        problems.push(format!("mode {:04o} is not {:04o} or stricter", meta.mode, rule.max_mode));
    }
    if !owner_ok {
        problems.push(format!("owned by uid {}, not root", meta.uid));
    }
    if !group_ok {
        problems.push(format!("group {group_name} is not root:{}", rule.expected_group()));
    }
    Ok(FileVerdict {
        ok: mode_ok && owner_ok && group_ok,
        problems,
        observed: json!({
            "mode": format!("{:04o}", meta.mode),
            "uid": meta.uid,
            "gid": meta.gid,
            "group": group_name,
        }),
        evidence: Evidence::new(rule.path, detail),
    })
}

/// What to do when the file is absent.
#[derive(Debug, Clone, Copy)]
enum IfAbsent {
    Error(&'static str),
    NotApplicable(&'static str),
}

fn file_outcome(facts: &Facts<'_>, rule: &FileRule, absent: IfAbsent) -> Outcome {
    let meta = match facts.host().metadata(rule.path) {
        Ok(m) => m,
        Err(e) if e.is_not_found() => {
            return match absent {
                IfAbsent::Error(r) => Outcome::error(r),
                IfAbsent::NotApplicable(r) => Outcome::not_applicable(r),
            };
        }
        Err(e) => return Outcome::error(e.to_string()),
    };
    let accounts = facts.get::<AccountsFacts>();
    match judge(&accounts, rule, &meta) {
        Ok(v) => {
            let o = Outcome::verdict(v.ok).observed(v.observed).expected(rule.expected()).with_evidence([v.evidence]);
            if v.problems.is_empty() { o } else { o.note(format!("{}: {}", rule.path, v.problems.join("; "))) }
        }
        Err(o) => o,
    }
}

fn backups_outcome(facts: &Facts<'_>) -> Outcome {
    let accounts = facts.get::<AccountsFacts>();
    let mut observed = serde_json::Map::new();
    let mut expected = serde_json::Map::new();
    let mut evidence = Vec::new();
    let mut all_ok = true;
    let mut present = 0;
    let mut errors = Vec::new();
    for rule in &BACKUP_RULES {
        let meta = match facts.host().metadata(rule.path) {
            Ok(m) => m,
            Err(e) if e.is_not_found() => {
                evidence.push(Evidence::new(rule.path, "absent"));
                continue;
            }
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        present += 1;
        match judge(&accounts, rule, &meta) {
            Ok(v) => {
                all_ok &= v.ok;
                observed.insert(rule.path.into(), v.observed);
                expected.insert(rule.path.into(), rule.expected());
                evidence.push(v.evidence);
            }
            Err(o) => errors.push(o.reason.unwrap_or_default()),
        }
    }
    let base = if !all_ok {
        Outcome::fail()
    } else if !errors.is_empty() {
        Outcome::error(errors.join("; "))
    } else if present == 0 {
        Outcome::not_applicable("none of /etc/passwd-, /etc/shadow-, /etc/group-, /etc/gshadow- exists")
    } else {
        Outcome::pass()
    };
    let base = if !all_ok && !errors.is_empty() { base.note(errors.join("; ")) } else { base };
    base.observed(serde_json::Value::Object(observed))
        .expected(serde_json::Value::Object(expected))
        .with_evidence(evidence)
}

/// All file-permission checks of the account databases.
pub fn checks() -> Vec<Check> {
    vec![
        Check::new("files.passwd_permissions", "/etc/passwd is 0644 or stricter and owned by root:root", Severity::Medium, |f, _| {
            file_outcome(f, &PASSWD_RULE, IfAbsent::Error("no /etc/passwd: not a usable root"))
        })
        .rationale("/etc/passwd maps names to uids for every program: whoever can write it can become root.")
        .remediation("chown root:root /etc/passwd && chmod 0644 /etc/passwd")
        .refs([cis_debian("7.1.1"), anssi("R50"), ssg("file_permissions_etc_passwd"), ssg("file_owner_etc_passwd")]),
        Check::new(
            "files.shadow_permissions",
            "/etc/shadow is 0640 or stricter and owned by root:root or root:shadow",
            Severity::High,
            |f, _| {
                file_outcome(
                    f,
                    &SHADOW_RULE,
                    IfAbsent::Error("no /etc/shadow: password hashes are not shadowed or the root is incomplete"),
                )
            },
        )
        .rationale("/etc/shadow holds the password hashes: readable, they can be cracked offline; writable, any password can be replaced. Debian's 0640 root:shadow lets only setgid-shadow helpers read it.")
        .remediation("chown root:shadow /etc/shadow && chmod 0640 /etc/shadow")
        .refs([cis_debian("7.1.5"), anssi("R50"), ssg("file_owner_etc_shadow")]),
        Check::new("files.group_permissions", "/etc/group is 0644 or stricter and owned by root:root", Severity::Medium, |f, _| {
            file_outcome(f, &GROUP_RULE, IfAbsent::Error("no /etc/group: not a usable root"))
        })
        .rationale("/etc/group decides group membership (sudo, docker, shadow…): whoever can write it can grant themselves those groups.")
        .remediation("chown root:root /etc/group && chmod 0644 /etc/group")
        .refs([cis_debian("7.1.3"), anssi("R50"), ssg("file_permissions_etc_group")]),
        Check::new(
            "files.gshadow_permissions",
            "/etc/gshadow is 0640 or stricter and owned by root:root or root:shadow",
            Severity::Medium,
            |f, _| {
                file_outcome(
                    f,
                    &GSHADOW_RULE,
                    IfAbsent::NotApplicable("no /etc/gshadow: group passwords are not shadowed on this system"),
                )
            },
        )
        .rationale("/etc/gshadow holds group password hashes and group administrators.")
        .remediation("chown root:shadow /etc/gshadow && chmod 0640 /etc/gshadow")
        .refs([cis_debian("7.1.7"), anssi("R50")]),
        Check::new(
            "files.passwd_backup_permissions",
            "The account database backups (/etc/passwd-, shadow-, group-, gshadow-) are protected like the originals",
            Severity::Medium,
            |f, _| backups_outcome(f),
        )
        .rationale("shadow-utils keeps the previous version of each database as NAME-: a readable /etc/shadow- leaks the same hashes as /etc/shadow.")
        .remediation("chown root:root /etc/passwd- /etc/group- && chmod 0644 /etc/passwd- /etc/group-; chown root:shadow /etc/shadow- /etc/gshadow- && chmod 0640 /etc/shadow- /etc/gshadow-"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::Status;
    use crate::testutil::{chmod, eval, offline, root_with};
    use std::os::unix::fs::chown;

    const GROUP: &str = "root:x:0:\nshadow:x:42:\nstaff:x:50:\n";

    fn own(root: &std::path::Path, path: &str, uid: u32, gid: u32) {
        chown(root.join(path.trim_start_matches('/')), Some(uid), Some(gid)).unwrap();
    }

    fn debian_root() -> tempfile::TempDir {
        let d = root_with(&[
            ("/etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
            ("/etc/shadow", "root:*:1:0:9:7:::\n"),
            ("/etc/group", GROUP),
            ("/etc/gshadow", "root:*::\n"),
        ]);
        let r = d.path();
        for p in ["/etc/passwd", "/etc/group"] {
            chmod(r, p, 0o644);
            own(r, p, 0, 0);
        }
        for p in ["/etc/shadow", "/etc/gshadow"] {
            chmod(r, p, 0o640);
            own(r, p, 0, 42);
        }
        d
    }

    #[test]
    fn debian_defaults_pass() {
        let d = debian_root();
        let h = offline(d.path());
        for id in [
            "files.passwd_permissions",
            "files.shadow_permissions",
            "files.group_permissions",
            "files.gshadow_permissions",
        ] {
            let o = eval(id, &h);
            assert_eq!(o.status, Status::Pass, "{id}: {:?}", o.evidence);
        }
        let o = eval("files.shadow_permissions", &h);
        assert_eq!(o.observed.unwrap()["group"], json!("shadow"));
    }

    #[test]
    fn stricter_modes_pass_and_looser_fail() {
        let d = debian_root();
        let r = d.path();
        chmod(r, "/etc/shadow", 0o000);
        chmod(r, "/etc/passwd", 0o600);
        let h = offline(r);
        assert_eq!(eval("files.shadow_permissions", &h).status, Status::Pass);
        assert_eq!(eval("files.passwd_permissions", &h).status, Status::Pass);
        chmod(r, "/etc/shadow", 0o644);
        chmod(r, "/etc/passwd", 0o664);
        chmod(r, "/etc/group", 0o4644);
        assert_eq!(eval("files.shadow_permissions", &h).status, Status::Fail);
        assert_eq!(eval("files.passwd_permissions", &h).status, Status::Fail);
        assert_eq!(eval("files.group_permissions", &h).status, Status::Fail);
    }

    #[test]
    fn wrong_owner_or_group_fails() {
        let d = debian_root();
        let r = d.path();
        own(r, "/etc/passwd", 1000, 0);
        own(r, "/etc/group", 0, 42); // shadow is not acceptable for /etc/group
        own(r, "/etc/shadow", 0, 50); // staff
        own(r, "/etc/gshadow", 0, 4242); // not in the root's /etc/group
        let h = offline(r);
        assert_eq!(eval("files.passwd_permissions", &h).status, Status::Fail);
        assert_eq!(eval("files.group_permissions", &h).status, Status::Fail);
        let o = eval("files.shadow_permissions", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.evidence[0].detail.contains("group staff (gid 50)"));
        let o = eval("files.gshadow_permissions", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.evidence[0].detail.contains("unknown gid 4242"));
    }

    #[test]
    fn group_is_resolved_in_the_audited_root() {
        // In this image "shadow" is gid 77; gid 42 means something else.
        let d = debian_root();
        let r = d.path();
        std::fs::write(r.join("etc/group"), "root:x:0:\nshadow:x:77:\nother:x:42:\n").unwrap();
        let h = offline(r);
        assert_eq!(eval("files.shadow_permissions", &h).status, Status::Fail);
        own(r, "/etc/shadow", 0, 77);
        assert_eq!(eval("files.shadow_permissions", &h).status, Status::Pass);
        // A broken /etc/group cannot tell whether gid 77 is shadow.
        std::fs::write(r.join("etc/group"), "root:x:0:\nbroken line\n").unwrap();
        let o = eval("files.shadow_permissions", &offline(r));
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("/etc/group:2"));
    }

    #[test]
    fn absent_files() {
        let d = root_with(&[]);
        let h = offline(d.path());
        let o = eval("files.passwd_permissions", &h);
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("not a usable root"));
        assert_eq!(eval("files.shadow_permissions", &h).status, Status::Error);
        assert_eq!(eval("files.gshadow_permissions", &h).status, Status::NotApplicable);
        assert_eq!(eval("files.passwd_backup_permissions", &h).status, Status::NotApplicable);
        std::fs::create_dir_all(d.path().join("etc/passwd")).unwrap();
        let o = eval("files.passwd_permissions", &h);
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("not a regular file"));
    }

    #[test]
    fn backups() {
        let d = debian_root();
        let r = d.path();
        crate::testutil::write(r, "/etc/shadow-", b"root:*:1:0:9:7:::\n");
        chmod(r, "/etc/shadow-", 0o640);
        own(r, "/etc/shadow-", 0, 42);
        crate::testutil::write(r, "/etc/passwd-", b"root:x:0:0::/root:/bin/sh\n");
        chmod(r, "/etc/passwd-", 0o644);
        own(r, "/etc/passwd-", 0, 0);
        let h = offline(r);
        let o = eval("files.passwd_backup_permissions", &h);
        assert_eq!(o.status, Status::Pass);
        assert!(o.evidence.iter().any(|e| e.source == "/etc/group-" && e.detail == "absent"));
        chmod(r, "/etc/shadow-", 0o644);
        let o = eval("files.passwd_backup_permissions", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.observed.unwrap()["/etc/shadow-"]["mode"], json!("0644"));
    }
}
