//! The Include/Match walker: reads `/etc/ssh/sshd_config` and everything it
//! includes the way sshd does, in its two passes (global: only `Match All`
//! blocks are active; per connection: only matching blocks are, and what
//! they set overrides the global value), with sshd's nesting limit and loop
//! detection, and glob(3) expansion of `Include`.

use super::connection::Connection;
use super::keywords::{ACCUMULATING, GLOBAL_ONLY, validate};
use super::matching::Matcher;
use super::parse::{Line, parse_line};
use super::{SSHD_CONFIG, Setting, Settings};
use crate::audit::facts::FactError;
use crate::audit::host::Host;
use crate::audit::model::Evidence;

/// Relative `Include` paths are resolved against this directory (SSHDIR).
pub const SSH_DIR: &str = "/etc/ssh";

/// OpenSSH's SERVCONF_MAX_DEPTH.
const MAX_INCLUDE_DEPTH: usize = 16;

/// No real configuration comes near this; it stops an include "diamond"
/// (a file including the same directory many times) from exploding.
const MAX_CONFIG_FILES: usize = 256;

/// Per-file size cap: the largest real sshd_config is a few KiB.
const CONFIG_FILE_LIMIT: u64 = 1024 * 1024;

/// What the parser established.
#[derive(Debug, Clone, Default)]
pub struct ParsedConfig {
    pub settings: Settings,
    pub files: Vec<String>,
    pub notes: Vec<Evidence>,
}

/// Which pass a line applies to: sshd's global pass (only `Match All`
/// blocks active) and its per-connection pass (only matching blocks active;
/// lines outside blocks are not re-applied).
#[derive(Debug, Clone, Copy)]
struct Activity {
    global: bool,
    connection: bool,
    /// An `Include` from a block that is inactive in the global pass:
    /// `Match All` in the included file cannot activate it (SSHCFG_NEVERMATCH).
    never_global: bool,
}

struct Walker<'a> {
    host: &'a Host,
    matcher: Matcher<'a>,
    files: Vec<String>,
    stack: Vec<String>,
    global: Settings,
    matched: Settings,
    notes: Vec<Evidence>,
}

/// Parse `/etc/ssh/sshd_config` and its includes and compute the effective
/// settings for `conn`.
pub fn parse_config(host: &Host, conn: &Connection) -> Result<ParsedConfig, FactError> {
    let mut w = Walker {
        host,
        matcher: Matcher::new(host, conn),
        files: Vec::new(),
        stack: Vec::new(),
        global: Settings::new(),
        matched: Settings::new(),
        notes: Vec::new(),
    };
    w.file(SSHD_CONFIG, 0, Activity { global: true, connection: false, never_global: false })?;
    // Values from matching blocks override the global ones
    // (copy_set_server_options).
    let mut settings = w.global;
    for (k, v) in w.matched {
        settings.insert(k, v);
    }
    Ok(ParsedConfig { settings, files: w.files, notes: w.notes })
}

fn apply(settings: &mut Settings, keyword: &str, value: String, source: String) {
    let entry = settings.entry(keyword.to_string()).or_default();
    if entry.is_empty() || ACCUMULATING.contains(&keyword) {
        entry.push(Setting { value, source });
    }
}

impl Walker<'_> {
    fn file(&mut self, path: &str, depth: usize, inherited: Activity) -> Result<(), FactError> {
        if self.stack.iter().any(|p| p == path) {
            let chain = [self.stack.as_slice(), &[path.to_string()]].concat().join(" -> ");
            return Err(FactError::new(format!("Include loop: {chain}")));
        }
        if depth > MAX_INCLUDE_DEPTH {
            return Err(FactError::new(format!(
                "{path}: Include nested deeper than {MAX_INCLUDE_DEPTH} levels (sshd refuses this)"
            )));
        }
        if self.files.len() >= MAX_CONFIG_FILES {
            return Err(FactError::new(format!("{path}: more than {MAX_CONFIG_FILES} configuration files included")));
        }
        let text = self.host.read_text_limited(path, CONFIG_FILE_LIMIT)?;
        if text.contains('\0') {
            return Err(FactError::new(format!("{path}: binary content (NUL bytes) in a configuration file")));
        }
        self.files.push(path.to_string());
        self.stack.push(path.to_string());
        let result = self.lines(path, &text, depth, inherited);
        self.stack.pop();
        result
    }

    fn lines(&mut self, path: &str, text: &str, depth: usize, inherited: Activity) -> Result<(), FactError> {
        let mut act = inherited;
        for (i, raw) in text.lines().enumerate() {
            let source = format!("{path}:{}", i + 1);
            let (keyword, args) = match parse_line(raw) {
                Line::Empty => continue,
                Line::Bad(why) => {
                    return Err(FactError::new(format!("{source}: {why} (sshd refuses this configuration)")));
                }
                Line::Directive { keyword, args } => (keyword, args),
            };
            match keyword.as_str() {
                "match" => {
                    let (all, connection) = self.matcher.match_line(&args, &source, &mut self.notes)?;
                    act.global = all && !act.never_global;
                    act.connection = connection;
                }
                "include" => {
                    let child = Activity { never_global: act.never_global || !act.global, ..act };
                    for arg in &args {
                        for file in self.expand_include(arg, &source)? {
                            self.file(&file, depth + 1, child)?;
                        }
                    }
                }
                _ => {
                    validate(&keyword, &args)
                        .map_err(|e| FactError::new(format!("{source}: {e} (sshd refuses this configuration)")))?;
                    let global_only = GLOBAL_ONLY.contains(&keyword.as_str());
                    if global_only && !act.global {
                        return Err(FactError::new(format!(
                            "{source}: {keyword} is not allowed within a Match block (sshd refuses this configuration)"
                        )));
                    }
                    let value = args.join(" ");
                    if act.global {
                        apply(&mut self.global, &keyword, value.clone(), source.clone());
                    }
                    if act.connection && !global_only {
                        apply(&mut self.matched, &keyword, value, source);
                    }
                }
            }
        }
        Ok(())
    }

    /// Expand one `Include` argument to existing files, sorted like glob(3).
    fn expand_include(&mut self, arg: &str, source: &str) -> Result<Vec<String>, FactError> {
        if arg.starts_with('~') {
            self.notes.push(Evidence::new(source, format!("Include {arg}: '~' paths are not expanded; ignored")));
            return Ok(Vec::new());
        }
        let pattern = if arg.starts_with('/') { arg.to_string() } else { format!("{SSH_DIR}/{arg}") };
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let mut candidates: Vec<String> = vec![String::new()];
        for comp in pattern.split('/').filter(|c| !c.is_empty()) {
            let magic = comp.contains(['*', '?', '[']);
            let compiled = if magic { glob::Pattern::new(comp).ok() } else { None };
            let mut next = Vec::new();
            for cand in candidates {
                match &compiled {
                    None => next.push(format!("{cand}/{comp}")),
                    Some(pat) => {
                        let dir = if cand.is_empty() { "/".to_string() } else { cand.clone() };
                        // glob(3) skips what is not a directory.
                        if !self.host.metadata(&dir).is_ok_and(|m| m.kind == crate::audit::host::FileKind::Dir) {
                            continue;
                        }
                        for e in self.host.read_dir(&dir)? {
                            if pat.matches_with(&e.name, opts) {
                                next.push(format!("{cand}/{}", e.name));
                            }
                        }
                    }
                }
            }
            if next.len() > MAX_CONFIG_FILES {
                return Err(FactError::new(format!(
                    "{source}: Include {arg} matches more than {MAX_CONFIG_FILES} paths"
                )));
            }
            candidates = next;
        }
        // A literal path that does not exist is skipped, as by glob(3).
        let mut found: Vec<String> =
            candidates.into_iter().filter(|c| !c.is_empty() && self.host.symlink_metadata(c).is_ok()).collect();
        found.sort();
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::facts::sshd::test_support::{parse, src, val};
    use crate::audit::facts::sshd::{AUDITED_CONNECTION, SSHD_CONFIG};
    use crate::testutil::{root_with, write};

    #[test]
    fn first_value_wins_and_accumulating_keywords() {
        let p = parse(&[(
            SSHD_CONFIG,
            "PermitRootLogin no\npermitrootlogin yes\nHostKey /etc/ssh/a\nHostKey /etc/ssh/b\nChallengeResponseAuthentication yes\nKbdInteractiveAuthentication no\n",
        )])
        .unwrap();
        assert_eq!(val(&p, "permitrootlogin").as_deref(), Some("no"));
        assert_eq!(src(&p, "permitrootlogin").as_deref(), Some("/etc/ssh/sshd_config:1"));
        let keys: Vec<_> = p.settings["hostkey"].iter().map(|s| s.value.as_str()).collect();
        assert_eq!(keys, ["/etc/ssh/a", "/etc/ssh/b"]);
        // The deprecated alias shares the option: its earlier value wins.
        assert_eq!(val(&p, "kbdinteractiveauthentication").as_deref(), Some("yes"));
    }

    #[test]
    fn include_glob_relative_and_order() {
        let p = parse(&[
            (SSHD_CONFIG, "Include sshd_config.d/*.conf\nPasswordAuthentication yes\n"),
            ("/etc/ssh/sshd_config.d/20-b.conf", "PasswordAuthentication no\nX11Forwarding no\n"),
            ("/etc/ssh/sshd_config.d/10-a.conf", "X11Forwarding yes\n"),
            ("/etc/ssh/sshd_config.d/.hidden.conf", "MaxAuthTries 1\n"),
            ("/etc/ssh/sshd_config.d/30-c.txt", "MaxAuthTries 2\n"),
        ])
        .unwrap();
        assert_eq!(val(&p, "passwordauthentication").as_deref(), Some("no"));
        assert_eq!(src(&p, "passwordauthentication").as_deref(), Some("/etc/ssh/sshd_config.d/20-b.conf:1"));
        assert_eq!(val(&p, "x11forwarding").as_deref(), Some("yes"));
        assert_eq!(val(&p, "maxauthtries"), None);
        assert_eq!(p.files, [SSHD_CONFIG, "/etc/ssh/sshd_config.d/10-a.conf", "/etc/ssh/sshd_config.d/20-b.conf"]);
    }

    #[test]
    fn include_missing_is_skipped_absolute_and_dir_globs_work() {
        let p = parse(&[
            (SSHD_CONFIG, "Include /etc/ssh/nope.conf /etc/ssh/*/x.conf\n"),
            ("/etc/ssh/b/x.conf", "MaxAuthTries 3\n"),
            ("/etc/ssh/a/x.conf", "MaxAuthTries 2\n"),
        ])
        .unwrap();
        assert_eq!(val(&p, "maxauthtries").as_deref(), Some("2"));
        assert_eq!(p.files.len(), 3);
    }

    #[test]
    fn include_loop_and_depth_are_errors() {
        let e = parse(&[(SSHD_CONFIG, "Include a.conf\n"), ("/etc/ssh/a.conf", "Include sshd_config\n")]).unwrap_err();
        assert!(e.0.contains("Include loop"), "{e}");
        assert!(e.0.contains("/etc/ssh/a.conf"), "{e}");
        // A chain of 17 distinct files is one too deep.
        let mut files: Vec<(String, String)> = vec![(SSHD_CONFIG.into(), "Include d1.conf\n".into())];
        for i in 1..=17 {
            files.push((format!("/etc/ssh/d{i}.conf"), format!("Include d{}.conf\n", i + 1)));
        }
        let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let e = parse(&refs).unwrap_err();
        assert!(e.0.contains("deeper than 16"), "{e}");
        // 16 levels are fine.
        let refs: Vec<(&str, &str)> = refs.into_iter().take(16).collect();
        assert!(parse(&refs).is_ok());
    }

    #[test]
    fn unreadable_binary_and_bad_lines_are_errors() {
        let d = root_with(&[(SSHD_CONFIG, "Include x.conf\n")]);
        write(d.path(), "/etc/ssh/x.conf", &[0xff, 0xfe, 0x00]);
        let e = parse_config(&Host::offline(d.path()), &AUDITED_CONNECTION).unwrap_err();
        assert!(e.0.contains("/etc/ssh/x.conf"), "{e}");
        let e = parse(&[(SSHD_CONFIG, "PermitRootLogin\x00 no\n")]).unwrap_err();
        assert!(e.0.contains("binary"), "{e}");
        let e = parse(&[(SSHD_CONFIG, "\nPermitRootLogin maybe\n")]).unwrap_err();
        assert!(e.0.contains("sshd_config:2"), "{e}");
        assert!(parse(&[(SSHD_CONFIG, "MaxAuthTries 3 4\n")]).is_err());
        assert!(parse(&[(SSHD_CONFIG, "LoginGraceTime 1x\n")]).is_err());
        assert!(parse(&[(SSHD_CONFIG, "Match User x\nCiphers aes128-ctr\n")]).is_err());
        assert!(parse(&[(SSHD_CONFIG, "Match Foo bar\n")]).is_err());
        assert!(parse(&[(SSHD_CONFIG, "Match All User root\n")]).is_err());
        assert!(parse(&[(SSHD_CONFIG, "Match Address 10.0.0.1/8\n")]).is_err());
        let d = root_with(&[]);
        let f = std::fs::File::create({
            std::fs::create_dir_all(d.path().join("etc/ssh")).unwrap();
            d.path().join("etc/ssh/sshd_config")
        })
        .unwrap();
        f.set_len(64 << 20).unwrap();
        let e = parse_config(&Host::offline(d.path()), &AUDITED_CONNECTION).unwrap_err();
        assert!(e.0.contains("limit"), "{e}");
    }

    #[test]
    fn debian_12_packaged_config() {
        let p = parse(&[
            (
                SSHD_CONFIG,
                "Include /etc/ssh/sshd_config.d/*.conf\n#PermitRootLogin prohibit-password\n\
                 KbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\n\
                 AcceptEnv LANG LC_*\nSubsystem\tsftp\t/usr/lib/openssh/sftp-server\n\
                 #Match User anoncvs\n#\tX11Forwarding no\n",
            ),
            ("/etc/ssh/sshd_config.d/README", "PermitRootLogin yes\n"),
        ])
        .unwrap();
        assert_eq!(val(&p, "permitrootlogin"), None);
        assert_eq!(val(&p, "x11forwarding").as_deref(), Some("yes"));
        assert_eq!(val(&p, "kbdinteractiveauthentication").as_deref(), Some("no"));
        assert_eq!(val(&p, "acceptenv").as_deref(), Some("LANG LC_*"));
        assert_eq!(p.files, [SSHD_CONFIG]);
    }

    #[test]
    fn match_all_applies_globally_and_overrides() {
        let p = parse(&[(
            SSHD_CONFIG,
            "PasswordAuthentication no\nMatch all\nPasswordAuthentication yes\nCiphers +aes128-cbc\n",
        )])
        .unwrap();
        assert_eq!(val(&p, "passwordauthentication").as_deref(), Some("yes"));
        // Global-only keywords are accepted in Match All (active at load).
        assert_eq!(val(&p, "ciphers").as_deref(), Some("+aes128-cbc"));
    }

    #[test]
    fn include_inside_match_applies_within_the_block() {
        let p = parse(&[
            (SSHD_CONFIG, "Match User alice\nInclude alice.conf\nMatch User root\nInclude root.conf\nMatch all\n"),
            ("/etc/ssh/alice.conf", "PermitRootLogin yes\n"),
            ("/etc/ssh/root.conf", "X11Forwarding yes\nMatch Address 203.0.113.10\nMaxAuthTries 9\n"),
        ])
        .unwrap();
        assert_eq!(val(&p, "permitrootlogin"), None);
        assert_eq!(val(&p, "x11forwarding").as_deref(), Some("yes"));
        assert_eq!(val(&p, "maxauthtries").as_deref(), Some("9"));
        assert_eq!(p.files.len(), 3);
        // Top-level lines of an include from the main file are global.
        let p = parse(&[
            (SSHD_CONFIG, "Include g.conf\nMatch User nobody\nInclude g2.conf\n"),
            ("/etc/ssh/g.conf", "X11Forwarding yes\n"),
            ("/etc/ssh/g2.conf", "PermitRootLogin yes\n"),
        ])
        .unwrap();
        assert_eq!(val(&p, "x11forwarding").as_deref(), Some("yes"));
        assert_eq!(val(&p, "permitrootlogin"), None);
    }

    proptest::proptest! {
        #[test]
        fn config_walker_never_panics(s in "(?s)[ -~\\t\\n]{0,400}") {
            let d = root_with(&[(SSHD_CONFIG, &s)]);
            let _ = parse_config(&Host::offline(d.path()), &AUDITED_CONNECTION);
        }
    }
}
