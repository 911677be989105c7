//! The local account databases: `/etc/passwd`, `/etc/shadow`, `/etc/group`
//! and `/etc/gshadow`, parsed the way glibc's `files` NSS module reads them.
//!
//! Every entry keeps its `path:line` so findings can point at it. Blank lines
//! and lines whose first non-blank character is `#` are skipped, as glibc
//! does. Lines starting with `+` or `-` are legacy NIS "compat" entries: they
//! are recognised and kept apart (they have no fixed field layout), never
//! reported as malformed. Any other line with the wrong number of fields or a
//! non-numeric uid/gid is a [`Problem`]: glibc silently skips such a line, so
//! an account hidden behind it (a second uid 0, say) would be invisible to a
//! naive reader; checks that depend on the file therefore return `error`
//! naming the line instead of a pass.

use super::{FactError, Facts, Gather};
use crate::audit::host::Host;

pub const PASSWD: &str = "/etc/passwd";
pub const SHADOW: &str = "/etc/shadow";
pub const GROUP: &str = "/etc/group";
pub const GSHADOW: &str = "/etc/gshadow";

/// Large enough for a directory-sized passwd (100k accounts), small enough
/// that a hostile file is refused rather than read.
const ACCOUNT_DB_LIMIT: u64 = 16 * 1024 * 1024;

/// A line that is neither a comment nor a valid entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `path:line`.
    pub source: String,
    pub what: String,
}

/// A legacy NIS compat line (`+`, `+user`, `+@netgroup`, `-user`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyEntry {
    /// `path:line`.
    pub source: String,
    pub text: String,
}

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    /// Usually `x` (the hash is in /etc/shadow); empty means no password.
    pub password: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    pub source: String,
}

/// One `/etc/shadow` entry (only the fields the checks use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowEntry {
    pub name: String,
    /// The hash; `!`/`*` prefixes lock, empty means no password at all.
    pub password: String,
    /// Maximum password age in days; `None` when the field is empty.
    pub max_days: Option<String>,
    pub source: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub password: String,
    pub gid: u32,
    pub members: Vec<String>,
    pub source: String,
}

/// One `/etc/gshadow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GshadowEntry {
    pub name: String,
    pub password: String,
    pub source: String,
}

/// One parsed database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database<T> {
    pub path: &'static str,
    pub entries: Vec<T>,
    pub legacy: Vec<LegacyEntry>,
    pub problems: Vec<Problem>,
}

impl<T> Database<T> {
    /// The malformed lines as one error reason, or `None` when the file is clean.
    pub fn problem_summary(&self) -> Option<String> {
        if self.problems.is_empty() {
            return None;
        }
        let shown: Vec<String> = self.problems.iter().take(5).map(|p| format!("{}: {}", p.source, p.what)).collect();
        let more = self.problems.len().saturating_sub(shown.len());
        let tail = if more > 0 { format!(" (and {more} more)") } else { String::new() };
        Some(format!("malformed entries, so the file cannot be trusted: {}{tail}", shown.join("; ")))
    }
}

/// What reading one database file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbState<T> {
    Absent,
    Unreadable(FactError),
    Parsed(Database<T>),
}

fn is_uint(s: &str) -> Option<u32> {
    // `u32::from_str` accepts a leading '+', glibc's parser does not.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n).collect::<String>() + "…" }
}

/// Split a database file into entries, legacy lines and problems.
/// `build` receives the colon-separated fields (exactly `nfields` of them)
/// and the `path:line` source.
fn parse_db<T>(
    path: &'static str,
    text: &str,
    nfields: usize,
    build: impl Fn(&[&str], String) -> Result<T, String>,
) -> Database<T> {
    let mut db = Database { path, entries: Vec::new(), legacy: Vec::new(), problems: Vec::new() };
    for (i, line) in text.lines().enumerate() {
        let source = format!("{path}:{}", i + 1);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with('+') || line.starts_with('-') {
            db.legacy.push(LegacyEntry { source, text: truncate(line, 120) });
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() != nfields {
            db.problems.push(Problem { source, what: format!("{} fields instead of {nfields}", fields.len()) });
            continue;
        }
        if fields.first().is_none_or(|n| n.is_empty()) {
            db.problems.push(Problem { source, what: "empty name".into() });
            continue;
        }
        match build(&fields, source.clone()) {
            Ok(e) => db.entries.push(e),
            Err(what) => db.problems.push(Problem { source, what }),
        }
    }
    db
}

fn field<'a>(f: &[&'a str], i: usize) -> &'a str {
    f.get(i).copied().unwrap_or_default()
}

/// Parse `/etc/passwd` text: `name:password:uid:gid:gecos:home:shell`.
pub fn parse_passwd(path: &'static str, text: &str) -> Database<PasswdEntry> {
    parse_db(path, text, 7, |f, source| {
        let uid = is_uint(field(f, 2)).ok_or_else(|| format!("uid {:?} is not a number", field(f, 2)))?;
        let gid = is_uint(field(f, 3)).ok_or_else(|| format!("gid {:?} is not a number", field(f, 3)))?;
        Ok(PasswdEntry {
            name: field(f, 0).to_string(),
            password: field(f, 1).to_string(),
            uid,
            gid,
            home: field(f, 5).to_string(),
            shell: field(f, 6).to_string(),
            source,
        })
    })
}

/// Parse `/etc/shadow` text: nine fields, the first two being name and hash.
pub fn parse_shadow(path: &'static str, text: &str) -> Database<ShadowEntry> {
    parse_db(path, text, 9, |f, source| {
        let max = field(f, 4);
        Ok(ShadowEntry {
            name: field(f, 0).to_string(),
            password: field(f, 1).to_string(),
            max_days: (!max.is_empty()).then(|| max.to_string()),
            source,
        })
    })
}

/// Parse `/etc/group` text: `name:password:gid:member,member`.
pub fn parse_group(path: &'static str, text: &str) -> Database<GroupEntry> {
    parse_db(path, text, 4, |f, source| {
        let gid = is_uint(field(f, 2)).ok_or_else(|| format!("gid {:?} is not a number", field(f, 2)))?;
        Ok(GroupEntry {
            name: field(f, 0).to_string(),
            password: field(f, 1).to_string(),
            gid,
            members: field(f, 3).split(',').filter(|m| !m.is_empty()).map(str::to_string).collect(),
            source,
        })
    })
}

/// Parse `/etc/gshadow` text: `name:password:admins:members`.
pub fn parse_gshadow(path: &'static str, text: &str) -> Database<GshadowEntry> {
    parse_db(path, text, 4, |f, source| {
        Ok(GshadowEntry { name: field(f, 0).to_string(), password: field(f, 1).to_string(), source })
    })
}

fn load<T>(host: &Host, path: &'static str, parse: fn(&'static str, &str) -> Database<T>) -> DbState<T> {
    match host.read_text_limited(path, ACCOUNT_DB_LIMIT) {
        Ok(text) => DbState::Parsed(parse(path, &text)),
        Err(e) if e.is_not_found() => DbState::Absent,
        Err(e) => DbState::Unreadable(e.into()),
    }
}

/// The four account databases of the audited root.
#[derive(Debug, Clone)]
pub struct AccountsFacts {
    pub passwd: DbState<PasswdEntry>,
    pub shadow: DbState<ShadowEntry>,
    pub group: DbState<GroupEntry>,
    pub gshadow: DbState<GshadowEntry>,
}

/// Why a group id could not be named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupLookup {
    Found(String),
    /// No entry has this gid, and the file is clean.
    Unknown,
    /// The gid is not among the parsed entries, but the file cannot be fully
    /// trusted (absent, unreadable or with malformed lines).
    Undecidable(String),
}

impl AccountsFacts {
    pub fn load(host: &Host) -> Self {
        AccountsFacts {
            passwd: load(host, PASSWD, parse_passwd),
            shadow: load(host, SHADOW, parse_shadow),
            group: load(host, GROUP, parse_group),
            gshadow: load(host, GSHADOW, parse_gshadow),
        }
    }

    /// The name of `gid` in the audited root's own `/etc/group` (never the
    /// auditor's: an offline image may number its groups differently).
    pub fn group_name(&self, gid: u32) -> GroupLookup {
        match &self.group {
            DbState::Parsed(db) => match db.entries.iter().find(|g| g.gid == gid) {
                Some(g) => GroupLookup::Found(g.name.clone()),
                None => match db.problem_summary() {
                    Some(p) => GroupLookup::Undecidable(format!("{GROUP}: {p}")),
                    None => GroupLookup::Unknown,
                },
            },
            DbState::Absent => GroupLookup::Undecidable(format!("{GROUP}: not found")),
            DbState::Unreadable(e) => GroupLookup::Undecidable(e.to_string()),
        }
    }
}

impl Gather for AccountsFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        AccountsFacts::load(facts.host())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::root_with;

    #[test]
    fn passwd_entries_comments_legacy_and_problems() {
        let db = parse_passwd(
            PASSWD,
            "root:x:0:0:root:/root:/bin/bash\n\n# comment\n  # indented comment\n+@netgroup\n-bob:::::\n+\nshort:x:1\nbad:x:abc:0::/:/bin/sh\nplus:x:+5:0::/:/bin/sh\nbig:x:99999999999:0::/:/bin/sh\n:x:5:5::/:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
        );
        assert_eq!(db.entries.len(), 2);
        assert_eq!(db.entries[0].name, "root");
        assert_eq!(db.entries[0].uid, 0);
        assert_eq!(db.entries[0].source, "/etc/passwd:1");
        assert_eq!(db.entries[1].name, "daemon");
        assert_eq!(db.entries[1].gid, 1);
        assert_eq!(db.entries[1].shell, "/usr/sbin/nologin");
        assert_eq!(db.entries[1].source, "/etc/passwd:13");
        let legacy: Vec<&str> = db.legacy.iter().map(|l| l.source.as_str()).collect();
        assert_eq!(legacy, ["/etc/passwd:5", "/etc/passwd:6", "/etc/passwd:7"]);
        let problems: Vec<&str> = db.problems.iter().map(|p| p.source.as_str()).collect();
        assert_eq!(problems, ["/etc/passwd:8", "/etc/passwd:9", "/etc/passwd:10", "/etc/passwd:11", "/etc/passwd:12"]);
        assert!(db.problems[0].what.contains("3 fields instead of 7"));
        assert!(db.problem_summary().unwrap().contains("/etc/passwd:8"));
    }

    #[test]
    fn shadow_group_and_gshadow() {
        let s = parse_shadow(SHADOW, "root:$y$j9T$x:19000:0:99999:7:::\nnopw::19000:0:99999:7:::\nbad:x\n");
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[1].password, "");
        assert_eq!(s.entries[0].max_days.as_deref(), Some("99999"));
        assert_eq!(s.problems.len(), 1);
        let g = parse_group(GROUP, "root:x:0:\nsudo:x:27:alice,bob\nbad:x:x:\n+:::\n");
        assert_eq!(g.entries.len(), 2);
        assert_eq!(g.entries[1].members, ["alice", "bob"]);
        assert!(g.entries[0].members.is_empty());
        assert_eq!(g.problems[0].source, "/etc/group:3");
        assert_eq!(g.legacy.len(), 1);
        let gs = parse_gshadow(GSHADOW, "root:*::\nshadow:*::\nx:y\n");
        assert_eq!(gs.entries.len(), 2);
        assert_eq!(gs.problems.len(), 1);
    }

    #[test]
    fn load_states_and_group_lookup_use_the_roots_group_file() {
        let d =
            root_with(&[("/etc/passwd", "root:x:0:0::/root:/bin/sh\n"), ("/etc/group", "root:x:0:\nshadow:x:42:\n")]);
        crate::testutil::write(d.path(), "/etc/shadow", &[0xff, 0xfe]);
        let f = AccountsFacts::load(&Host::offline(d.path()));
        assert!(matches!(f.passwd, DbState::Parsed(_)));
        assert!(matches!(f.shadow, DbState::Unreadable(_)));
        assert!(matches!(f.gshadow, DbState::Absent));
        assert_eq!(f.group_name(42), GroupLookup::Found("shadow".into()));
        assert_eq!(f.group_name(7), GroupLookup::Unknown);

        let d = root_with(&[("/etc/group", "root:x:0:\nbroken\n")]);
        let f = AccountsFacts::load(&Host::offline(d.path()));
        assert!(matches!(f.group_name(42), GroupLookup::Undecidable(r) if r.contains("/etc/group:2")));
        let d = root_with(&[]);
        let f = AccountsFacts::load(&Host::offline(d.path()));
        assert!(matches!(f.group_name(0), GroupLookup::Undecidable(_)));
        assert!(matches!(f.passwd, DbState::Absent));
    }

    #[test]
    fn oversized_database_is_unreadable() {
        let d = root_with(&[]);
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        let f = std::fs::File::create(d.path().join("etc/passwd")).unwrap();
        f.set_len(ACCOUNT_DB_LIMIT + 1).unwrap();
        let facts = AccountsFacts::load(&Host::offline(d.path()));
        assert!(matches!(facts.passwd, DbState::Unreadable(e) if e.to_string().contains("limit")));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_passwd(PASSWD, &s);
            let _ = parse_shadow(SHADOW, &s);
            let _ = parse_group(GROUP, &s);
            let _ = parse_gshadow(GSHADOW, &s);
        }

        #[test]
        fn colon_heavy_lines_never_panic(s in "[a-z0-9:+#\\- \n]{0,200}") {
            let db = parse_passwd(PASSWD, &s);
            // Every non-comment line lands in exactly one bucket.
            let counted = db.entries.len() + db.legacy.len() + db.problems.len();
            let lines = s.lines().filter(|l| { let t = l.trim_start(); !t.is_empty() && !t.starts_with('#') }).count();
            proptest::prop_assert_eq!(counted, lines);
        }
    }
}
