//! The EFFECTIVE OpenSSH server configuration: what sshd would apply to a
//! connection from the internet, not what the first line of a file says.
//!
//! On a live host we ask sshd itself (`sshd -T -C …`), which is exact for the
//! installed version and its compiled-in defaults. When sshd is not
//! installed, cannot run (missing host keys, not root) or the root is offline,
//! we parse `/etc/ssh/sshd_config` the way OpenSSH 9.x does (servconf.c):
//!
//! - keywords are case-insensitive, `Keyword value` or `Keyword=value`,
//!   arguments may be quoted, `#` starts a comment;
//! - the FIRST value of a keyword wins, except for the keywords that
//!   accumulate (`HostKey`, `Port`, `ListenAddress`, `AcceptEnv`,
//!   `AllowUsers`…);
//! - `Include` takes glob patterns (sorted like glob(3)); relative paths are
//!   relative to `/etc/ssh`; a missing file is silently skipped (as sshd
//!   does); nesting is limited to 16 levels and a loop is an error;
//!   an `Include` inside a `Match` block applies within the block;
//! - sshd reads the configuration twice: once globally (only `Match All`
//!   blocks are active) and once per connection (only matching `Match`
//!   blocks are active, and what they set overrides the global value). We
//!   replay both passes for [`AUDITED_CONNECTION`];
//! - unset keywords take the OpenSSH 9.2 default (Debian 12), and the
//!   evidence says "OpenSSH default".
//!
//! Anything sshd itself would refuse to start with (unterminated quote,
//! invalid value of a keyword we judge, bad `Match`) makes the configuration
//! undecidable: every ssh check then reports `error` with the reason.
//!
//! The files of this module, one concept each: `connection.rs` (the
//! audited connection), `defaults.rs` (compiled-in values), `keywords.rs`
//! (what each keyword accepts and how its values combine), `parse.rs` (the
//! syntax of a line), `matching.rs` (`Match` criteria), `walk.rs` (the
//! Include/Match walker) and `sshd_t.rs` (the live `sshd -T` path). This
//! file holds the fact the checks use and the choice between `sshd -T` and
//! the parser.

mod connection;
mod defaults;
mod keywords;
mod matching;
mod parse;
mod sshd_t;
mod walk;

use std::collections::BTreeMap;

pub use self::connection::{AUDITED_CONNECTION, Connection};
pub use self::defaults::{
    DEFAULT_CIPHERS, DEFAULT_HOST_KEYS, DEFAULT_KEX, DEFAULT_MACS, DEFAULT_SOURCE, openssh_default,
};
pub use self::keywords::{assemble_algorithms, parse_time};
pub use self::matching::{addr_match_list, match_pattern_list, wildcard_match};
pub use self::parse::{Line, parse_line};
use self::sshd_t::SSHD_T_LIMIT;
pub use self::sshd_t::{parse_sshd_t, sshd_t_args, sshd_t_command};
pub use self::walk::{ParsedConfig, SSH_DIR, parse_config};
use super::{FactError, Facts, Gather};
use crate::audit::host::Host;
use crate::audit::model::Evidence;

/// The main configuration file.
pub const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";

/// Where distributions install the daemon.
pub const SSHD_BINARIES: [&str; 3] = ["/usr/sbin/sshd", "/sbin/sshd", "/usr/local/sbin/sshd"];

/// One value of a keyword and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The arguments, joined by one space.
    pub value: String,
    /// `path:line`, or the `sshd -T` command line.
    pub source: String,
}

/// Keyword (lowercase, canonical) to its values: one for first-wins
/// keywords, every occurrence for accumulating ones.
pub type Settings = BTreeMap<String, Vec<Setting>>;

/// How the effective configuration was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Reported by `sshd -T` for [`AUDITED_CONNECTION`].
    SshdT,
    /// Computed by our parser from the configuration files.
    Parsed,
}

/// Where an effective value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Configured,
    Default,
}

/// The effective value of one keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub value: String,
    pub source: String,
    pub origin: Origin,
}

impl Resolved {
    /// Evidence detail `Keyword value`, saying when a default applies.
    pub fn describe(&self, display: &str) -> String {
        match self.origin {
            Origin::Configured => format!("{display} {}", self.value),
            Origin::Default => format!("{display} is not set; the OpenSSH default {} applies", self.value),
        }
    }
}

/// The effective configuration for [`AUDITED_CONNECTION`].
#[derive(Debug, Clone)]
pub struct EffectiveConfig {
    pub method: Method,
    pub settings: Settings,
    /// `sshd_config` and every included file, in read order. An error when
    /// sshd -T gave the values but our parser could not follow the files.
    pub files: Result<Vec<String>, FactError>,
    /// Notes every ssh check carries as evidence (why the parser was used,
    /// `Match` criteria we could not evaluate…).
    pub notes: Vec<Evidence>,
}

impl EffectiveConfig {
    /// The effective value of `keyword` (lowercase), falling back to the
    /// OpenSSH default. `None` only for keywords without a known default.
    pub fn resolve(&self, keyword: &str) -> Option<Resolved> {
        if let Some(s) = self.settings.get(keyword).and_then(|v| v.first()) {
            return Some(Resolved { value: s.value.clone(), source: s.source.clone(), origin: Origin::Configured });
        }
        openssh_default(keyword).map(|value| Resolved {
            value,
            source: DEFAULT_SOURCE.to_string(),
            origin: Origin::Default,
        })
    }

    /// Every configured value of an accumulating keyword.
    pub fn all(&self, keyword: &str) -> &[Setting] {
        self.settings.get(keyword).map(Vec::as_slice).unwrap_or_default()
    }
}

/// The state of sshd on the audited system.
#[derive(Debug, Clone)]
pub enum SshdState {
    /// Neither the daemon nor its configuration exists.
    NotInstalled,
    /// The effective configuration cannot be established.
    Undecidable {
        error: FactError,
        notes: Vec<Evidence>,
    },
    Ready(EffectiveConfig),
}

/// The gathered sshd fact.
#[derive(Debug, Clone)]
pub struct SshdFacts {
    pub state: SshdState,
}

impl Gather for SshdFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        SshdFacts { state: gather_sshd(facts.host()) }
    }
}

/// Establish the effective configuration: `sshd -T` when it works, else the
/// parser (see the module docs).
pub fn gather_sshd(host: &Host) -> SshdState {
    let binary = SSHD_BINARIES.iter().any(|p| host.exists(p));
    let config_present = host.symlink_metadata(SSHD_CONFIG).is_ok();
    if !binary && !config_present {
        return SshdState::NotInstalled;
    }
    let parsed = if config_present {
        parse_config(host, &AUDITED_CONNECTION)
    } else {
        Err(FactError::new(format!(
            "{SSHD_CONFIG}: not found, although sshd is installed (sshd refuses to start without it)"
        )))
    };
    let command = sshd_t_command();
    let args = sshd_t_args();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let fallback_why = match host.run("sshd", &arg_refs) {
        Ok(out) if out.success() => match out.stdout_text(&command).map_err(|e| e.to_string()).and_then(|t| {
            if t.len() > SSHD_T_LIMIT {
                Err(format!("output larger than {SSHD_T_LIMIT} bytes"))
            } else {
                parse_sshd_t(t, &command)
            }
        }) {
            Ok(settings) => {
                return SshdState::Ready(EffectiveConfig {
                    method: Method::SshdT,
                    settings,
                    files: parsed.map(|p| p.files),
                    notes: Vec::new(),
                });
            }
            Err(e) => format!("unusable output ({e})"),
        },
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
            let code = out.status.map_or_else(|| "killed by a signal".to_string(), |c| format!("exit status {c}"));
            format!("failed with {code}: {}", truncate(first.trim(), 200))
        }
        Err(e) if e.is_unavailable() && !host.is_live() => "offline root: sshd is not run".to_string(),
        Err(e) if e.is_unavailable() => "sshd is not installed or not runnable".to_string(),
        Err(e) => e.to_string(),
    };
    let note = Evidence::new(
        &command,
        format!("{fallback_why}; effective settings computed by parsing {SSHD_CONFIG} and its includes"),
    );
    match parsed {
        Ok(p) => {
            let mut notes = vec![note];
            notes.extend(p.notes);
            SshdState::Ready(EffectiveConfig {
                method: Method::Parsed,
                settings: p.settings,
                files: Ok(p.files),
                notes,
            })
        }
        Err(error) => SshdState::Undecidable { error, notes: vec![note] },
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n).collect::<String>() + "…" }
}

/// Helpers shared by the tests of this module's files.
#[cfg(test)]
mod test_support {
    use super::*;
    use crate::testutil::root_with;

    pub(super) fn parse(files: &[(&str, &str)]) -> Result<ParsedConfig, FactError> {
        let d = root_with(files);
        parse_config(&Host::offline(d.path()), &AUDITED_CONNECTION)
    }

    pub(super) fn val(p: &ParsedConfig, k: &str) -> Option<String> {
        p.settings.get(k).and_then(|v| v.first()).map(|s| s.value.clone())
    }

    pub(super) fn src(p: &ParsedConfig, k: &str) -> Option<String> {
        p.settings.get(k).and_then(|v| v.first()).map(|s| s.source.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::host::RecordedRunner;
    use crate::testutil::{root_with, write};

    fn record(root: &std::path::Path, stdout: &str, exit: Option<&str>) {
        let args = sshd_t_args();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let key = RecordedRunner::key("sshd", &refs);
        write(root, &format!("/.commands/{key}"), stdout.as_bytes());
        if let Some(code) = exit {
            write(root, &format!("/.commands/{key}.exit"), code.as_bytes());
            write(root, &format!("/.commands/{key}.stderr"), b"sshd: no hostkeys available -- exiting.\n");
        }
    }

    #[test]
    fn gather_prefers_sshd_t_and_falls_back() {
        // Recorded sshd -T output wins over the files.
        let d = root_with(&[(SSHD_CONFIG, "PermitRootLogin yes\n"), ("/usr/sbin/sshd", "")]);
        record(d.path(), "permitrootlogin no\nmaxauthtries 3\n", None);
        let SshdState::Ready(c) = gather_sshd(&Host::offline(d.path())) else { panic!() };
        assert_eq!(c.method, Method::SshdT);
        let r = c.resolve("permitrootlogin").unwrap();
        assert_eq!(r.value, "no");
        assert_eq!(r.source, sshd_t_command());
        assert_eq!(c.files.as_ref().unwrap(), &[SSHD_CONFIG.to_string()]);
        // sshd -T failing: parser, with a note naming the failure.
        let d = root_with(&[(SSHD_CONFIG, "PermitRootLogin yes\n"), ("/usr/sbin/sshd", "")]);
        record(d.path(), "", Some("255"));
        let SshdState::Ready(c) = gather_sshd(&Host::offline(d.path())) else { panic!() };
        assert_eq!(c.method, Method::Parsed);
        assert_eq!(c.resolve("permitrootlogin").unwrap().source, "/etc/ssh/sshd_config:1");
        assert!(c.notes[0].detail.contains("exit status 255: sshd: no hostkeys"), "{:?}", c.notes);
        // Offline without recordings: parser, defaults say so.
        let d = root_with(&[(SSHD_CONFIG, "# empty\n")]);
        let SshdState::Ready(c) = gather_sshd(&Host::offline(d.path())) else { panic!() };
        assert!(c.notes[0].detail.contains("offline root"));
        let r = c.resolve("passwordauthentication").unwrap();
        assert_eq!((r.value.as_str(), r.origin, r.source.as_str()), ("yes", Origin::Default, DEFAULT_SOURCE));
        assert_eq!(c.resolve("ciphers").unwrap().value, DEFAULT_CIPHERS.join(","));
        assert!(c.resolve("nosuchkeyword").is_none());
    }

    #[test]
    fn gather_not_installed_and_missing_config() {
        let d = root_with(&[]);
        assert!(matches!(gather_sshd(&Host::offline(d.path())), SshdState::NotInstalled));
        let d = root_with(&[("/usr/sbin/sshd", "")]);
        let SshdState::Undecidable { error, .. } = gather_sshd(&Host::offline(d.path())) else { panic!() };
        assert!(error.0.contains("not found"));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_line(&s);
            let _ = parse_time(&s);
            let _ = parse_sshd_t(&s, "x");
            let _ = assemble_algorithms(&s, &DEFAULT_CIPHERS);
            let _ = addr_match_list("203.0.113.10", &s);
            let _ = match_pattern_list("root", &s, true);
        }
    }
}
