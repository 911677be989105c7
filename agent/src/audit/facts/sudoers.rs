//! The sudo policy: `/etc/sudoers` and everything it includes, reduced to
//! what the checks need: rules that skip authentication (`NOPASSWD:` tags
//! on user specifications, `!authenticate` in `Defaults`) and the
//! `User_Alias` definitions needed to tell who those rules apply to.
//!
//! Lexical rules follow sudoers(5):
//! - a line ending in a backslash continues on the next line;
//! - `#` starts a comment, except in `#include`/`#includedir` directives and
//!   in `#<digits>` (a numeric user id in a user list); `\#` and `#` inside
//!   double quotes are not comments either;
//! - `@include`/`#include` read one file, `@includedir`/`#includedir` read
//!   every regular file of a directory in lexical order, skipping names that
//!   end in `~` or contain a `.` (editor backups, package manager leftovers);
//!   a relative path is relative to the directory of the including file
//!   (sudo >= 1.9.1); a missing `includedir` is ignored, a missing `include`
//!   is an error for sudo and so a problem here.
//!
//! Includes are bounded in depth and in the total number of files so that a
//! directory including itself cannot make us loop.

use std::collections::BTreeMap;

use super::{Facts, Gather};
use crate::audit::host::{FileKind, Host};

pub const SUDOERS: &str = "/etc/sudoers";

/// sudoers files are small; refuse anything larger than this.
const SUDOERS_FILE_LIMIT: u64 = 1024 * 1024;
/// sudo allows 128 nested includes; real configurations use one or two.
const MAX_INCLUDE_DEPTH: usize = 16;
/// A bound on the whole include tree, against include fan-out loops.
const MAX_FILES: usize = 512;

/// A user specification carrying a `NOPASSWD:` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopasswdRule {
    /// `path:line` where the (possibly continued) line starts.
    pub source: String,
    /// The user list as written (`alice`, `%sudo`, `ALL`, `ADMINS`, `#1000`).
    pub users: Vec<String>,
    pub text: String,
}

/// A `Defaults` line negating `authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAuthenticate {
    pub source: String,
    /// The `Defaults` word with its binding (`Defaults`, `Defaults:alice`…).
    pub scope: String,
    pub text: String,
}

/// A part of the policy that could not be read or understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SudoersProblem {
    pub source: String,
    pub what: String,
}

/// The parsed policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SudoPolicy {
    /// Files read, in order.
    pub files: Vec<String>,
    pub nopasswd: Vec<NopasswdRule>,
    pub no_authenticate: Vec<NoAuthenticate>,
    /// `User_Alias` name → members.
    pub user_aliases: BTreeMap<String, Vec<String>>,
    pub problems: Vec<SudoersProblem>,
}

impl SudoPolicy {
    /// The concrete members of a user list, with `User_Alias` names expanded
    /// (recursively, bounded). Negated members (`!bob`) only narrow a rule,
    /// so they are dropped.
    pub fn expand_users(&self, users: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        self.expand_into(users, 0, &mut out);
        out
    }

    fn expand_into(&self, users: &[String], depth: usize, out: &mut Vec<String>) {
        for u in users {
            if u.starts_with('!') {
                continue;
            }
            match self.user_aliases.get(u) {
                Some(members) if depth < MAX_INCLUDE_DEPTH => self.expand_into(members, depth + 1, out),
                _ => {
                    if !out.contains(u) {
                        out.push(u.clone());
                    }
                }
            }
        }
    }
}

/// What the sudo configuration is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SudoersState {
    /// No `/etc/sudoers`: sudo is not installed.
    NotInstalled,
    Parsed(SudoPolicy),
}

/// The gathered sudo configuration.
#[derive(Debug, Clone)]
pub struct SudoersFacts {
    pub state: SudoersState,
}

impl SudoersFacts {
    pub fn load(host: &Host) -> Self {
        if host.metadata(SUDOERS).is_err_and(|e| e.is_not_found()) {
            return SudoersFacts { state: SudoersState::NotInstalled };
        }
        let mut policy = SudoPolicy::default();
        read_file(host, SUDOERS, 0, &mut policy);
        SudoersFacts { state: SudoersState::Parsed(policy) }
    }
}

impl Gather for SudoersFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        SudoersFacts::load(facts.host())
    }
}

fn problem(policy: &mut SudoPolicy, source: impl Into<String>, what: impl Into<String>) {
    policy.problems.push(SudoersProblem { source: source.into(), what: what.into() });
}

fn read_file(host: &Host, path: &str, depth: usize, policy: &mut SudoPolicy) {
    if policy.files.len() >= MAX_FILES {
        problem(policy, path, format!("more than {MAX_FILES} sudoers files included; stopped reading"));
        return;
    }
    match host.read_text_limited(path, SUDOERS_FILE_LIMIT) {
        Ok(text) => {
            policy.files.push(path.to_string());
            for dir in parse_text(path, &text, policy) {
                include(host, path, dir, depth, policy);
            }
        }
        Err(e) => problem(policy, path, e.to_string()),
    }
}

/// An include directive found while parsing one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub source: String,
    pub is_dir: bool,
    pub target: String,
}

fn include(host: &Host, from: &str, d: Directive, depth: usize, policy: &mut SudoPolicy) {
    if depth + 1 > MAX_INCLUDE_DEPTH {
        problem(policy, d.source, format!("includes nested deeper than {MAX_INCLUDE_DEPTH} levels"));
        return;
    }
    if d.target.contains("%h") {
        // %h expands to the short host name at run time; we cannot know
        // which file sudo would read.
        problem(policy, d.source, format!("{}: %h host-name expansion is not supported", d.target));
        return;
    }
    let target = if d.target.starts_with('/') {
        d.target.clone()
    } else {
        let base = from.rsplit_once('/').map(|(dir, _)| dir).unwrap_or_default();
        format!("{base}/{}", d.target)
    };
    if !d.is_dir {
        read_file(host, &target, depth + 1, policy);
        return;
    }
    let entries = match host.read_dir_optional(&target) {
        Ok(e) => e,
        Err(e) => return problem(policy, d.source, e.to_string()),
    };
    for e in entries {
        if e.name.ends_with('~') || e.name.contains('.') {
            continue;
        }
        match host.metadata(&e.path) {
            Ok(m) if m.kind == FileKind::File => read_file(host, &e.path, depth + 1, policy),
            Ok(_) => {}
            Err(err) => problem(policy, e.path, err.to_string()),
        }
    }
}

/// Join continuation lines: (first line number, logical line).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let (start, mut acc) = cur.take().unwrap_or((i + 1, String::new()));
        if let Some(body) = line.strip_suffix('\\') {
            acc.push_str(body);
            cur = Some((start, acc));
        } else {
            acc.push_str(line);
            out.push((start, acc));
        }
    }
    if let Some(rest) = cur {
        out.push(rest);
    }
    out
}

/// The line without its comment (see the module docs for what is not one).
pub fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_quotes = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 1, // skip the escaped byte
            b'"' => in_quotes = !in_quotes,
            b'#' if !in_quotes && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                return line.get(..i).unwrap_or(line);
            }
            _ => {}
        }
        i += 1;
    }
    line
}

/// Recognise an include directive (`@include`, `#include`, `@includedir`,
/// `#includedir`) on a trimmed line.
fn directive(trimmed: &str) -> Option<(bool, &str)> {
    let rest = trimmed.strip_prefix('@').or_else(|| trimmed.strip_prefix('#'))?;
    let (is_dir, arg) =
        if let Some(a) = rest.strip_prefix("includedir") { (true, a) } else { (false, rest.strip_prefix("include")?) };
    // "#includes foo" and "#include_me" are comments, not directives.
    if !arg.starts_with([' ', '\t']) {
        return None;
    }
    let arg = strip_comment(arg).trim();
    let arg = arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')).unwrap_or(arg);
    Some((is_dir, arg))
}

/// True when `word` occurs in `text` as a tag, i.e. as a whole word followed
/// (after optional blanks) by `:`.
fn has_tag(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = text.get(from..).and_then(|t| t.find(word)) {
        let start = from + pos;
        let end = start + word.len();
        let before_ok = text.get(..start).and_then(|b| b.chars().next_back()).is_none_or(|c| !is_ident(c));
        let after = text.get(end..).unwrap_or_default();
        if before_ok && after.trim_start().starts_with(':') {
            return true;
        }
        from = end;
    }
    false
}

/// Parse one sudoers file: record rules into `policy`, return its include
/// directives in order.
pub fn parse_text(path: &str, text: &str, policy: &mut SudoPolicy) -> Vec<Directive> {
    let mut directives = Vec::new();
    for (lineno, line) in logical_lines(text) {
        let source = format!("{path}:{lineno}");
        let trimmed = line.trim();
        if let Some((is_dir, target)) = directive(trimmed) {
            if target.is_empty() {
                problem(policy, source, "include directive without a path");
            } else {
                directives.push(Directive { source, is_dir, target: target.to_string() });
            }
            continue;
        }
        let stmt = strip_comment(trimmed).trim();
        if stmt.is_empty() {
            continue;
        }
        let first = stmt.split_whitespace().next().unwrap_or_default();
        if first.starts_with("Defaults") {
            parse_defaults(stmt, first, source, policy);
        } else if first == "User_Alias" {
            parse_user_alias(stmt, &source, policy);
        } else if matches!(first, "Runas_Alias" | "Host_Alias" | "Cmnd_Alias" | "Cmd_Alias") {
            // Tags cannot appear in these aliases, and they do not say who
            // a rule applies to.
        } else if let Some((lhs, _)) = stmt.split_once('=') {
            if has_tag(stmt, "NOPASSWD") {
                policy.nopasswd.push(NopasswdRule {
                    source,
                    users: user_list(lhs),
                    text: stmt.chars().take(200).collect(),
                });
            }
        } else {
            problem(policy, source, format!("not a sudoers statement: {}", stmt.chars().take(80).collect::<String>()));
        }
    }
    directives
}

/// The user list of a user specification: the first field of `lhs`
/// (`alice, %ops  ALL` → [`alice`, `%ops`]).
fn user_list(lhs: &str) -> Vec<String> {
    let mut compact = String::with_capacity(lhs.len());
    let mut after_comma = false;
    for c in lhs.trim().chars() {
        if c == ',' {
            while compact.ends_with([' ', '\t']) {
                compact.pop();
            }
            compact.push(',');
            after_comma = true;
        } else if after_comma && (c == ' ' || c == '\t') {
            // Blanks after a comma continue the list.
        } else {
            after_comma = false;
            compact.push(c);
        }
    }
    let users = compact.split_whitespace().next().unwrap_or_default();
    users.split(',').filter(|u| !u.is_empty()).map(str::to_string).collect()
}

fn parse_defaults(stmt: &str, first: &str, source: String, policy: &mut SudoPolicy) {
    let opts = stmt.get(first.len()..).unwrap_or_default();
    // `! authenticate` is the same as `!authenticate`.
    let mut norm = opts.replace(',', " ");
    while norm.contains("! ") {
        norm = norm.replace("! ", "!");
    }
    for tok in norm.split_whitespace() {
        let bangs = tok.chars().take_while(|c| *c == '!').count();
        let name = tok.get(bangs..).unwrap_or_default();
        let name = name.split(['=', '+', '-']).next().unwrap_or_default();
        if name == "authenticate" && bangs % 2 == 1 {
            policy.no_authenticate.push(NoAuthenticate {
                source: source.clone(),
                scope: first.to_string(),
                text: stmt.chars().take(200).collect(),
            });
        }
    }
}

fn parse_user_alias(stmt: &str, source: &str, policy: &mut SudoPolicy) {
    let body = stmt.get("User_Alias".len()..).unwrap_or_default();
    for def in body.split(':') {
        let Some((name, members)) = def.split_once('=') else {
            problem(policy, source, "User_Alias without '='");
            continue;
        };
        let members = members.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
        policy.user_aliases.insert(name.trim().to_string(), members);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{root_with, write};

    fn parse(text: &str) -> (SudoPolicy, Vec<Directive>) {
        let mut p = SudoPolicy::default();
        let d = parse_text("/etc/sudoers", text, &mut p);
        (p, d)
    }

    #[test]
    fn comments_uids_and_directives() {
        assert_eq!(strip_comment("root ALL=(ALL) ALL # admin"), "root ALL=(ALL) ALL ");
        assert_eq!(strip_comment("#1000 ALL=(ALL) ALL"), "#1000 ALL=(ALL) ALL");
        assert_eq!(strip_comment("Defaults secure_path=\"/a#b\" # c"), "Defaults secure_path=\"/a#b\" ");
        assert_eq!(strip_comment("a\\#b # c"), "a\\#b ");
        assert_eq!(directive("#includedir /etc/sudoers.d"), Some((true, "/etc/sudoers.d")));
        assert_eq!(directive("@include \"/etc/sudo extra\""), Some((false, "/etc/sudo extra")));
        assert_eq!(directive("@include sudoers.local # note"), Some((false, "sudoers.local")));
        assert_eq!(directive("#includes are fun"), None);
        assert_eq!(directive("# include"), None);
        let (p, d) = parse("# plain comment\n#includedir /etc/sudoers.d\n@include /etc/sudoers.local\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].source, "/etc/sudoers:2");
        assert!(p.problems.is_empty());
    }

    #[test]
    fn nopasswd_tags_users_and_continuations() {
        let (p, _) = parse(
            "Defaults env_reset\n\
             root ALL=(ALL:ALL) ALL\n\
             %sudo ALL=(ALL:ALL) ALL\n\
             deploy, ci  ALL = (root) NOPASSWD: /usr/bin/systemctl\n\
             alice ALL = (ALL) PASSWD: /bin/ls, \\\n  NOPASSWD : /bin/cat\n\
             bob ALL=(ALL) NOPASSWDX: ALL\n\
             carol ALL=(ALL) SETENV:NOPASSWD:ALL\n\
             #1000 ALL=(ALL) NOPASSWD: ALL\n\
             # dave ALL=(ALL) NOPASSWD: ALL\n",
        );
        let got: Vec<(&str, Vec<String>)> = p.nopasswd.iter().map(|r| (r.source.as_str(), r.users.clone())).collect();
        assert_eq!(
            got,
            vec![
                ("/etc/sudoers:4", vec!["deploy".to_string(), "ci".to_string()]),
                ("/etc/sudoers:5", vec!["alice".to_string()]),
                ("/etc/sudoers:8", vec!["carol".to_string()]),
                ("/etc/sudoers:9", vec!["#1000".to_string()]),
            ]
        );
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn defaults_authenticate_variants() {
        let (p, _) = parse(
            "Defaults !authenticate\nDefaults:ci   ! authenticate\nDefaults env_reset,!!authenticate\nDefaults authenticate\nDefaults>root !lecture,!authenticate\nDefaults !authenticated_x\n",
        );
        let got: Vec<(&str, &str)> = p.no_authenticate.iter().map(|n| (n.source.as_str(), n.scope.as_str())).collect();
        assert_eq!(
            got,
            [("/etc/sudoers:1", "Defaults"), ("/etc/sudoers:2", "Defaults:ci"), ("/etc/sudoers:5", "Defaults>root")]
        );
    }

    #[test]
    fn aliases_expand_and_garbage_is_a_problem() {
        let (p, _) = parse(
            "User_Alias AUTOMATION = ci, deploy : OPS = %ops, AUTOMATION\nCmnd_Alias X = /bin/true\nthis is not sudoers\n",
        );
        assert_eq!(p.user_aliases["OPS"], ["%ops", "AUTOMATION"]);
        assert_eq!(
            p.expand_users(&["OPS".to_string(), "!bob".to_string(), "ci".to_string()]),
            ["%ops", "ci", "deploy"]
        );
        assert_eq!(p.problems.len(), 1);
        assert_eq!(p.problems[0].source, "/etc/sudoers:3");
        // Self-referencing aliases terminate.
        let (p, _) = parse("User_Alias A = B\nUser_Alias B = A\n");
        assert_eq!(p.expand_users(&["A".to_string()]), ["A"]);
    }

    #[test]
    fn includes_are_followed_with_sudo_rules() {
        let d = root_with(&[
            ("/etc/sudoers", "root ALL=(ALL) ALL\n@includedir /etc/sudoers.d\n@include sudoers.local\n"),
            ("/etc/sudoers.d/ci", "ci ALL=(ALL) NOPASSWD: ALL\n"),
            ("/etc/sudoers.d/old~", "old ALL=(ALL) NOPASSWD: ALL\n"),
            ("/etc/sudoers.d/pkg.dpkg-dist", "pkg ALL=(ALL) NOPASSWD: ALL\n"),
            ("/etc/sudoers.d/README", "# nothing\n"),
            ("/etc/sudoers.d/sub/x", "sub ALL=(ALL) NOPASSWD: ALL\n"),
            ("/etc/sudoers.local", "Defaults !authenticate\n"),
        ]);
        let f = SudoersFacts::load(&Host::offline(d.path()));
        let SudoersState::Parsed(p) = f.state else { panic!("not parsed") };
        assert_eq!(p.files, ["/etc/sudoers", "/etc/sudoers.d/README", "/etc/sudoers.d/ci", "/etc/sudoers.local"]);
        assert_eq!(p.nopasswd.len(), 1);
        assert_eq!(p.nopasswd[0].source, "/etc/sudoers.d/ci:1");
        assert_eq!(p.no_authenticate[0].source, "/etc/sudoers.local:1");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn missing_include_and_loops_are_problems_and_absence_is_not_installed() {
        let d = root_with(&[("/etc/sudoers", "@include /etc/nope\n@includedir /etc/missing.d\n")]);
        let SudoersState::Parsed(p) = SudoersFacts::load(&Host::offline(d.path())).state else { panic!() };
        assert_eq!(p.problems.len(), 1, "{:?}", p.problems);
        assert!(p.problems[0].what.contains("not found"));

        let d = root_with(&[("/etc/sudoers", "@includedir /etc/sudoers.d\n")]);
        write(d.path(), "/etc/sudoers.d/a", b"@includedir /etc/sudoers.d\n");
        write(d.path(), "/etc/sudoers.d/b", b"@includedir /etc/sudoers.d\n");
        let SudoersState::Parsed(p) = SudoersFacts::load(&Host::offline(d.path())).state else { panic!() };
        assert!(!p.problems.is_empty());
        assert!(p.files.len() <= MAX_FILES);

        let d = root_with(&[]);
        assert_eq!(SudoersFacts::load(&Host::offline(d.path())).state, SudoersState::NotInstalled);
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let mut p = SudoPolicy::default();
            let _ = parse_text("/etc/sudoers", &s, &mut p);
            let _ = p.expand_users(&["A".to_string()]);
        }

        #[test]
        fn sudo_syntax_soup_never_panics(s in "[A-Za-z_#@!:=,\\\\\" %()\n]{0,300}") {
            let mut p = SudoPolicy::default();
            let _ = parse_text("/etc/sudoers", &s, &mut p);
        }
    }
}
