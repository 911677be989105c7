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

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{FactError, Facts, Gather};
use crate::audit::host::Host;
use crate::audit::host::runner::display_command;
use crate::audit::model::Evidence;

/// The main configuration file.
pub const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";

/// Relative `Include` paths are resolved against this directory (SSHDIR).
pub const SSH_DIR: &str = "/etc/ssh";

/// Where distributions install the daemon.
pub const SSHD_BINARIES: [&str; 3] = ["/usr/sbin/sshd", "/sbin/sshd", "/usr/local/sbin/sshd"];

/// OpenSSH's SERVCONF_MAX_DEPTH.
const MAX_INCLUDE_DEPTH: usize = 16;

/// No real configuration comes near this; it stops an include "diamond"
/// (a file including the same directory many times) from exploding.
const MAX_CONFIG_FILES: usize = 256;

/// Per-file size cap: the largest real sshd_config is a few KiB.
const CONFIG_FILE_LIMIT: u64 = 1024 * 1024;

/// Cap on `sshd -T` output we accept (it prints about 4 KiB).
const SSHD_T_LIMIT: usize = 1024 * 1024;

/// Cap on `/etc/passwd` and `/etc/group` (read only for `Match Group`).
const ACCOUNT_FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// Evidence source for values sshd compiles in.
pub const DEFAULT_SOURCE: &str = "OpenSSH default";

/// The connection whose effective settings we audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub user: &'static str,
    pub host: &'static str,
    pub addr: &'static str,
    pub laddr: &'static str,
    pub lport: u16,
}

/// The connection an attacker on the internet would make: as `root` (the
/// account worth most), from a public address that no "trusted admin
/// network" `Match Address` block covers (203.0.113.10 is TEST-NET-3, never
/// routed, so it cannot accidentally be a real allowed peer), to port 22 on
/// any local address. `Match` blocks that relax settings for internal
/// networks or other users rightly do not apply to it. The same constant
/// drives `sshd -T -C` and our own `Match` evaluation, so both paths answer
/// the same question.
pub const AUDITED_CONNECTION: Connection =
    Connection { user: "root", host: "kosmos-audit.invalid", addr: "203.0.113.10", laddr: "0.0.0.0", lport: 22 };

impl Connection {
    /// The `-C` connection specification of `sshd -T`.
    pub fn spec(&self) -> String {
        format!("user={},host={},addr={},laddr={},lport={}", self.user, self.host, self.addr, self.laddr, self.lport)
    }
}

/// The arguments of the `sshd -T` run for [`AUDITED_CONNECTION`].
pub fn sshd_t_args() -> Vec<String> {
    vec!["-T".to_string(), "-C".to_string(), AUDITED_CONNECTION.spec()]
}

/// The printable `sshd -T` command line, used as evidence source.
pub fn sshd_t_command() -> String {
    let args = sshd_t_args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    display_command("sshd", &refs)
}

/// Keywords whose values accumulate over lines instead of first-wins.
const ACCUMULATING: [&str; 10] = [
    "hostkey",
    "hostcertificate",
    "listenaddress",
    "port",
    "acceptenv",
    "allowusers",
    "denyusers",
    "allowgroups",
    "denygroups",
    "subsystem",
];

/// Keywords sshd refuses inside a `Match` block (only the ones relevant to
/// an audit; the full list is in sshd_config(5)).
const GLOBAL_ONLY: [&str; 17] = [
    "addressfamily",
    "ciphers",
    "hostkey",
    "hostkeyalgorithms",
    "kexalgorithms",
    "listenaddress",
    "logingracetime",
    "macs",
    "maxstartups",
    "permituserenvironment",
    "pidfile",
    "port",
    "strictmodes",
    "subsystem",
    "syslogfacility",
    "usedns",
    "usepam",
];

/// OpenSSH 9.x default `Ciphers` (sshd).
pub const DEFAULT_CIPHERS: [&str; 6] = [
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
];

/// OpenSSH 9.x default `MACs` (sshd).
pub const DEFAULT_MACS: [&str; 10] = [
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha1-etm@openssh.com",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
];

/// OpenSSH 9.2 default `KexAlgorithms` (sshd).
pub const DEFAULT_KEX: [&str; 10] = [
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
];

/// Host keys sshd loads when no `HostKey` is configured.
pub const DEFAULT_HOST_KEYS: [&str; 3] =
    ["/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ecdsa_key", "/etc/ssh/ssh_host_ed25519_key"];

/// The compiled-in default of a keyword (OpenSSH 9.2 as shipped by Debian
/// 12; Debian's packaged sshd_config changes some, e.g. `X11Forwarding yes`
/// and `KbdInteractiveAuthentication no`, but those are file settings).
pub fn openssh_default(keyword: &str) -> Option<String> {
    let v = match keyword {
        "permitrootlogin" => "prohibit-password",
        "passwordauthentication" => "yes",
        "permitemptypasswords" => "no",
        "kbdinteractiveauthentication" => "yes",
        "x11forwarding" => "no",
        "allowtcpforwarding" => "yes",
        "disableforwarding" => "no",
        "maxauthtries" => "6",
        "logingracetime" => "120",
        "clientaliveinterval" => "0",
        "clientalivecountmax" => "3",
        "hostbasedauthentication" => "no",
        "ignorerhosts" => "yes",
        "permituserenvironment" => "no",
        "pubkeyauthentication" => "yes",
        "usepam" => "no",
        "loglevel" => "INFO",
        "ciphers" => return Some(DEFAULT_CIPHERS.join(",")),
        "macs" => return Some(DEFAULT_MACS.join(",")),
        "kexalgorithms" => return Some(DEFAULT_KEX.join(",")),
        _ => return None,
    };
    Some(v.to_string())
}

/// Deprecated spellings that share an option with a current keyword, so
/// "first value wins" applies across both.
fn canonical_keyword(keyword: &str) -> String {
    let k = keyword.to_ascii_lowercase();
    match k.as_str() {
        "challengeresponseauthentication" => "kbdinteractiveauthentication".to_string(),
        "dsaauthentication" => "pubkeyauthentication".to_string(),
        "pubkeyacceptedkeytypes" => "pubkeyacceptedalgorithms".to_string(),
        "hostbasedacceptedkeytypes" => "hostbasedacceptedalgorithms".to_string(),
        _ => k,
    }
}

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

// ---------------------------------------------------------------------------
// sshd -T output

/// Parse `sshd -T` output: one `keyword value` line per setting, keywords in
/// lowercase; repeated keywords (hostkey, port…) are kept in order.
pub fn parse_sshd_t(text: &str, source: &str) -> Result<Settings, String> {
    let mut settings = Settings::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let (kw, value) = match line.split_once([' ', '\t']) {
            Some((k, v)) => (k, v.trim()),
            None => (line, ""),
        };
        if !kw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(format!("line {}: not a `keyword value` line: {}", i + 1, truncate(line, 80)));
        }
        settings
            .entry(canonical_keyword(kw))
            .or_default()
            .push(Setting { value: value.to_string(), source: source.to_string() });
    }
    if settings.is_empty() {
        return Err("no settings printed".to_string());
    }
    Ok(settings)
}

// ---------------------------------------------------------------------------
// Configuration file syntax

/// One line of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Blank or comment.
    Empty,
    /// A keyword (lowercase, canonical) with its arguments.
    Directive { keyword: String, args: Vec<String> },
    /// A line sshd rejects, with the reason.
    Bad(String),
}

/// Split one line like servconf.c: keyword up to whitespace or `=`, then
/// arguments split like argv_split(3) (quotes, backslash escapes, `#`
/// comments at the start of an argument).
pub fn parse_line(raw: &str) -> Line {
    let line = raw.trim_end_matches([' ', '\t', '\r', '\n', '\x0c']).trim_start_matches([' ', '\t']);
    if line.is_empty() || line.starts_with('#') {
        return Line::Empty;
    }
    let end = line.find([' ', '\t', '=', '"', '\'']).unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    if keyword.is_empty() {
        // sshd ignores a line whose keyword is empty (e.g. "=x").
        return Line::Empty;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start_matches([' ', '\t']);
    if rest.is_empty() {
        return Line::Bad(format!("no argument after keyword \"{keyword}\""));
    }
    match split_args(rest) {
        Ok(args) if args.is_empty() => Line::Bad(format!("{keyword}: missing argument")),
        Ok(args) => Line::Directive { keyword: canonical_keyword(keyword), args },
        Err(e) => Line::Bad(e),
    }
}

/// argv_split with comment termination (OpenSSH misc.c).
fn split_args(s: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut args = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars.get(i).copied().unwrap_or(' ');
        if c == ' ' || c == '\t' {
            i += 1;
            continue;
        }
        if c == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.get(i) {
            if c == '\\' {
                match chars.get(i + 1) {
                    Some(&n) if n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ') => {
                        arg.push(n);
                        i += 2;
                    }
                    _ => {
                        arg.push(c);
                        i += 1;
                    }
                }
                continue;
            }
            match quote {
                None if c == ' ' || c == '\t' => break,
                None if c == '"' || c == '\'' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ => arg.push(c),
            }
            i += 1;
        }
        if quote.is_some() {
            return Err("invalid quotes (unterminated quoted argument)".to_string());
        }
        args.push(arg);
    }
    Ok(args)
}

/// Parse an sshd time value (`120`, `2m`, `1m30s`, `1h`) into seconds, as
/// OpenSSH's convtime: a sequence of numbers with optional s/m/h/d/w
/// qualifiers (case-insensitive), at most INT_MAX seconds.
pub fn parse_time(s: &str) -> Option<u64> {
    const INT_MAX: u64 = i32::MAX as u64;
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let (num, after) = rest.split_at(digits);
        let n: u64 = num.parse().ok().filter(|n| *n <= INT_MAX)?;
        let mut it = after.chars();
        let (mult, next) = match it.next() {
            None => (1, after),
            Some('s' | 'S') => (1, it.as_str()),
            Some('m' | 'M') => (60, it.as_str()),
            Some('h' | 'H') => (3600, it.as_str()),
            Some('d' | 'D') => (86400, it.as_str()),
            Some('w' | 'W') => (604800, it.as_str()),
            Some(_) => return None,
        };
        let secs = n.checked_mul(mult).filter(|v| *v <= INT_MAX)?;
        total = total.checked_add(secs).filter(|v| *v <= INT_MAX)?;
        rest = next;
    }
    Some(total)
}

/// Keywords that take exactly one argument and whose values we judge: sshd
/// refuses extra arguments and invalid values for them, so do we.
fn validate(keyword: &str, args: &[String]) -> Result<(), String> {
    const YES_NO: [&str; 2] = ["yes", "no"];
    let allowed: &[&str] = match keyword {
        "passwordauthentication"
        | "permitemptypasswords"
        | "kbdinteractiveauthentication"
        | "x11forwarding"
        | "hostbasedauthentication"
        | "disableforwarding"
        | "pubkeyauthentication"
        | "usepam" => &YES_NO,
        "permitrootlogin" => &["yes", "prohibit-password", "without-password", "forced-commands-only", "no"],
        "allowtcpforwarding" => &["yes", "all", "no", "local", "remote"],
        "ignorerhosts" => &["yes", "no", "shosts-only"],
        "loglevel" => &["quiet", "fatal", "error", "info", "verbose", "debug", "debug1", "debug2", "debug3"],
        "maxauthtries"
        | "clientalivecountmax"
        | "logingracetime"
        | "clientaliveinterval"
        | "permituserenvironment"
        | "ciphers"
        | "macs"
        | "kexalgorithms"
        | "hostkey" => &[],
        _ => return Ok(()),
    };
    let [value] = args else {
        return Err(format!("{keyword} takes exactly one argument, found {}", args.len()));
    };
    let ok = match keyword {
        "maxauthtries" | "clientalivecountmax" => value.parse::<i32>().is_ok(),
        "logingracetime" | "clientaliveinterval" => parse_time(value).is_some(),
        "ciphers" | "macs" | "kexalgorithms" => {
            let list = value.strip_prefix(['+', '-', '^']).unwrap_or(value);
            !list.is_empty() && list.split(',').all(|n| !n.is_empty())
        }
        "permituserenvironment" | "hostkey" => true,
        _ => allowed.iter().any(|a| a.eq_ignore_ascii_case(value)),
    };
    if ok { Ok(()) } else { Err(format!("unsupported value \"{value}\" for {keyword}")) }
}

/// Apply a `Ciphers`/`MACs`/`KexAlgorithms` value to its default list like
/// OpenSSH's kex_assemble_names: `+` appends, `-` removes (patterns allowed),
/// `^` prepends, anything else replaces.
pub fn assemble_algorithms(value: &str, default: &[&str]) -> Vec<String> {
    let split = |s: &str| -> Vec<String> {
        s.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect()
    };
    let defaults: Vec<String> = default.iter().map(|s| s.to_string()).collect();
    let list = if let Some(rest) = value.strip_prefix('+') {
        [defaults, split(rest)].concat()
    } else if let Some(rest) = value.strip_prefix('-') {
        let remove = split(rest);
        defaults.into_iter().filter(|d| !remove.iter().any(|p| wildcard_match(d, p))).collect()
    } else if let Some(rest) = value.strip_prefix('^') {
        [split(rest), defaults].concat()
    } else {
        split(value)
    };
    let mut out: Vec<String> = Vec::new();
    for n in list {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Patterns (OpenSSH match.c / addrmatch.c)

/// OpenSSH match_pattern: `*` any sequence, `?` any one character.
pub fn wildcard_match(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut si, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&pc) if pc == '?' || Some(&pc) == s.get(si) => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// OpenSSH match_pattern_list: 1 when a positive pattern matches, -1 when a
/// negated (`!`) one does (negation wins), 0 otherwise.
pub fn match_pattern_list(s: &str, list: &str, lowercase: bool) -> i32 {
    let mut positive = 0;
    for sub in list.split(',') {
        let (negated, pat) = match sub.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, sub),
        };
        let pat = if lowercase { pat.to_ascii_lowercase() } else { pat.to_string() };
        if wildcard_match(s, &pat) {
            if negated {
                return -1;
            }
            positive = 1;
        }
    }
    positive
}

/// OpenSSH addr_match_list: entries are CIDR blocks or wildcard patterns,
/// `!` negates. `Err` for a CIDR block with host bits set, which sshd
/// rejects ("inconsistent mask length").
pub fn addr_match_list(addr: &str, list: &str) -> Result<i32, String> {
    let ip: Option<IpAddr> = addr.parse().ok();
    let mut result = 0;
    for entry in list.split(',') {
        let (negated, pat) = match entry.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, entry),
        };
        let net: Option<IpNet> =
            if pat.contains('/') { pat.parse::<IpNet>().ok() } else { pat.parse::<IpAddr>().ok().map(IpNet::from) };
        let hit = match net {
            Some(n) => {
                if n.trunc() != n {
                    return Err(format!("inconsistent mask length for network \"{pat}\""));
                }
                ip.is_some_and(|ip| n.contains(&ip))
            }
            None => wildcard_match(addr, pat),
        };
        if hit {
            if negated {
                return Ok(-1);
            }
            result = 1;
        }
    }
    Ok(result)
}

// ---------------------------------------------------------------------------
// The configuration walker

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
    conn: &'a Connection,
    files: Vec<String>,
    stack: Vec<String>,
    global: Settings,
    matched: Settings,
    notes: Vec<Evidence>,
    root_groups: Option<Result<Vec<String>, String>>,
}

/// Parse `/etc/ssh/sshd_config` and its includes and compute the effective
/// settings for `conn`.
pub fn parse_config(host: &Host, conn: &Connection) -> Result<ParsedConfig, FactError> {
    let mut w = Walker {
        host,
        conn,
        files: Vec::new(),
        stack: Vec::new(),
        global: Settings::new(),
        matched: Settings::new(),
        notes: Vec::new(),
        root_groups: None,
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
                    let (all, connection) = self.match_line(&args, &source)?;
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

    /// Evaluate a `Match` line: (active in the global pass, matches the
    /// audited connection). `Err` for lines sshd rejects.
    fn match_line(&mut self, args: &[String], source: &str) -> Result<(bool, bool), FactError> {
        let bad = |why: String| FactError::new(format!("{source}: Match: {why} (sshd refuses this configuration)"));
        if args.is_empty() {
            return Err(bad("one or more criteria required".into()));
        }
        let mut result = true;
        let mut it = args.iter();
        let mut count = 0;
        while let Some(attr) = it.next() {
            count += 1;
            // Newer OpenSSH also accepts `criterion=pattern`.
            let (attr, inline) = match attr.split_once('=') {
                Some((a, v)) => (a, Some(v)),
                None => (attr.as_str(), None),
            };
            let attr_lc = attr.to_ascii_lowercase();
            if attr_lc == "all" {
                if count > 1 || inline.is_some() || it.next().is_some() {
                    return Err(bad("'all' cannot be combined with other criteria".into()));
                }
                return Ok((true, true));
            }
            let Some(arg) = inline.or_else(|| it.next().map(String::as_str)) else {
                return Err(bad(format!("missing argument for criterion {attr}")));
            };
            let c = self.conn;
            let hit = match attr_lc.as_str() {
                "user" => match_pattern_list(c.user, arg, false) == 1,
                "group" => self.match_group(arg, source),
                "host" => match_pattern_list(&c.host.to_ascii_lowercase(), arg, true) == 1,
                "address" => addr_match_list(c.addr, arg).map_err(bad)? == 1,
                "localaddress" => addr_match_list(c.laddr, arg).map_err(bad)? == 1,
                "localport" => {
                    let port: u16 =
                        arg.parse().ok().filter(|p| *p > 0).ok_or_else(|| bad(format!("invalid LocalPort {arg}")))?;
                    port == c.lport
                }
                // The audited user exists.
                "invalid-user" => false,
                // The audited connection has no routing domain, as with
                // `sshd -T -C` without rdomain=: the criterion does not match.
                "rdomain" => false,
                _ => return Err(bad(format!("unsupported criterion {attr}"))),
            };
            result &= hit;
        }
        Ok((false, result))
    }

    /// `Match Group`: the groups of the audited user from /etc/passwd and
    /// /etc/group, as sshd's ga_match_pattern_list (a negated hit wins).
    fn match_group(&mut self, list: &str, source: &str) -> bool {
        if self.root_groups.is_none() {
            self.root_groups = Some(user_groups(self.host, self.conn.user));
        }
        match &self.root_groups {
            Some(Ok(groups)) => {
                let mut found = false;
                for g in groups {
                    match match_pattern_list(g, list, false) {
                        -1 => return false,
                        1 => found = true,
                        _ => {}
                    }
                }
                found
            }
            Some(Err(why)) => {
                let why = why.clone();
                self.notes.push(Evidence::new(
                    source,
                    format!(
                        "Match Group {list} treated as not matching: the groups of {} are unknown ({why})",
                        self.conn.user
                    ),
                ));
                false
            }
            None => false,
        }
    }
}

/// The group names of `user`: its primary group and every group listing it.
fn user_groups(host: &Host, user: &str) -> Result<Vec<String>, String> {
    let passwd = host.read_text_limited("/etc/passwd", ACCOUNT_FILE_LIMIT).map_err(|e| e.to_string())?;
    let gid = passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(user)).then(|| f.nth(2)).flatten()
        })
        .next()
        .ok_or_else(|| format!("/etc/passwd: no entry for {user}"))?
        .to_string();
    let group = host.read_text_limited("/etc/group", ACCOUNT_FILE_LIMIT).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        let (Some(name), Some(g), Some(members)) = (f.first(), f.get(2), f.get(3)) else { continue };
        if *g == gid || members.split(',').any(|m| m.trim() == user) {
            out.push((*name).to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::host::RecordedRunner;
    use crate::testutil::{root_with, write};

    fn parse(files: &[(&str, &str)]) -> Result<ParsedConfig, FactError> {
        let d = root_with(files);
        parse_config(&Host::offline(d.path()), &AUDITED_CONNECTION)
    }

    fn val(p: &ParsedConfig, k: &str) -> Option<String> {
        p.settings.get(k).and_then(|v| v.first()).map(|s| s.value.clone())
    }

    fn src(p: &ParsedConfig, k: &str) -> Option<String> {
        p.settings.get(k).and_then(|v| v.first()).map(|s| s.source.clone())
    }

    #[test]
    fn line_syntax() {
        let d = |k: &str, a: &[&str]| Line::Directive {
            keyword: k.to_string(),
            args: a.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(parse_line("  PermitRootLogin no  # c"), d("permitrootlogin", &["no"]));
        assert_eq!(parse_line("PermitRootLogin=no"), d("permitrootlogin", &["no"]));
        assert_eq!(parse_line("PermitRootLogin = no\r"), d("permitrootlogin", &["no"]));
        assert_eq!(parse_line("\tMaxAuthTries\t3"), d("maxauthtries", &["3"]));
        assert_eq!(parse_line("Banner \"/etc/my banner\""), d("banner", &["/etc/my banner"]));
        assert_eq!(parse_line("AcceptEnv 'LANG LC_*' X\\ Y"), d("acceptenv", &["LANG LC_*", "X Y"]));
        assert_eq!(parse_line("ChallengeResponseAuthentication no"), d("kbdinteractiveauthentication", &["no"]));
        assert_eq!(parse_line("# PermitRootLogin yes"), Line::Empty);
        assert_eq!(parse_line("   "), Line::Empty);
        assert!(matches!(parse_line("PermitRootLogin"), Line::Bad(_)));
        assert!(matches!(parse_line("PermitRootLogin #no"), Line::Bad(_)));
        assert!(matches!(parse_line("Banner \"/etc/x"), Line::Bad(_)));
    }

    #[test]
    fn time_values() {
        assert_eq!(parse_time("120"), Some(120));
        assert_eq!(parse_time("1m30s"), Some(90));
        assert_eq!(parse_time("2M"), Some(120));
        assert_eq!(parse_time("1h"), Some(3600));
        assert_eq!(parse_time("1w1d"), Some(691200));
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time(""), None);
        assert_eq!(parse_time("1x"), None);
        assert_eq!(parse_time("m"), None);
        assert_eq!(parse_time("-5"), None);
        assert_eq!(parse_time("99999999999"), None);
        assert_eq!(parse_time("5000w"), None);
    }

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
    fn match_blocks_for_the_audited_connection() {
        let p = parse(&[(
            SSHD_CONFIG,
            "PasswordAuthentication no\nX11Forwarding no\nMaxAuthTries 3\nPermitRootLogin no\n\
             Match Address 10.0.0.0/8,192.168.0.0/16\n  PasswordAuthentication yes\n\
             Match User alice\n  X11Forwarding yes\n\
             Match User root Address 203.0.113.0/24\n  MaxAuthTries 10\n  MaxAuthTries 11\n\
             Match User !root,*\n  PermitRootLogin yes\n\
             Match Host *.invalid LocalPort 22\n  AllowTcpForwarding no\n",
        )])
        .unwrap();
        assert_eq!(val(&p, "passwordauthentication").as_deref(), Some("no"));
        assert_eq!(val(&p, "x11forwarding").as_deref(), Some("no"));
        // A matching block overrides the global value, first value wins in it.
        assert_eq!(val(&p, "maxauthtries").as_deref(), Some("10"));
        assert_eq!(src(&p, "maxauthtries").as_deref(), Some("/etc/ssh/sshd_config:10"));
        // Negation wins over the wildcard.
        assert_eq!(val(&p, "permitrootlogin").as_deref(), Some("no"));
        assert_eq!(val(&p, "allowtcpforwarding").as_deref(), Some("no"));
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
    fn match_criterion_equals_form_and_invalid_user() {
        let p =
            parse(&[(SSHD_CONFIG, "Match User=root\nMaxAuthTries 2\nMatch Invalid-User *\nMaxAuthTries 9\n")]).unwrap();
        assert_eq!(val(&p, "maxauthtries").as_deref(), Some("2"));
        assert!(parse(&[(SSHD_CONFIG, "Match All=x\n")]).is_err());
        assert!(parse(&[(SSHD_CONFIG, "Match User\n")]).is_err());
        assert!(parse(&[(SSHD_CONFIG, "Match LocalPort 0\n")]).is_err());
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

    #[test]
    fn match_group_uses_account_files_or_notes() {
        let files = [
            (SSHD_CONFIG, "Match Group wheel\nX11Forwarding yes\nMatch Group sudo,!adm\nMaxAuthTries 9\n"),
            ("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
            ("/etc/group", "root:x:0:\nwheel:x:10:alice,root\nadm:x:4:root\nsudo:x:27:root\n"),
        ];
        let p = parse(&files).unwrap();
        assert_eq!(val(&p, "x11forwarding").as_deref(), Some("yes"));
        assert_eq!(val(&p, "maxauthtries"), None, "negated adm membership wins");
        let p = parse(&files[..1]).unwrap();
        assert_eq!(val(&p, "x11forwarding"), None);
        assert!(p.notes.iter().any(|n| n.detail.contains("treated as not matching")));
    }

    #[test]
    fn patterns_and_addresses() {
        assert!(wildcard_match("root", "r*t"));
        assert!(wildcard_match("root", "*"));
        assert!(wildcard_match("root", "r??t"));
        assert!(!wildcard_match("root", "r?t"));
        assert!(wildcard_match("aes128-cbc", "*-cbc"));
        assert!(!wildcard_match("aes128-cbcx", "*-cbc"));
        assert_eq!(match_pattern_list("root", "alice,ro*", false), 1);
        assert_eq!(match_pattern_list("root", "*,!root", false), -1);
        assert_eq!(match_pattern_list("root", "!alice", false), 0);
        assert_eq!(match_pattern_list("kosmos.invalid", "*.INVALID", true), 1);
        assert_eq!(addr_match_list("203.0.113.10", "0.0.0.0/0"), Ok(1));
        assert_eq!(addr_match_list("203.0.113.10", "10.0.0.0/8,203.0.113.*"), Ok(1));
        assert_eq!(addr_match_list("203.0.113.10", "*,!203.0.113.0/24"), Ok(-1));
        assert_eq!(addr_match_list("203.0.113.10", "::/0"), Ok(0));
        assert_eq!(addr_match_list("203.0.113.10", "203.0.113.10"), Ok(1));
        assert!(addr_match_list("203.0.113.10", "203.0.113.10/8").is_err());
    }

    #[test]
    fn algorithm_lists() {
        let d = ["a", "b-cbc", "c"];
        assert_eq!(assemble_algorithms("+x,y", &d), ["a", "b-cbc", "c", "x", "y"]);
        assert_eq!(assemble_algorithms("-*-cbc", &d), ["a", "c"]);
        assert_eq!(assemble_algorithms("^x,a", &d), ["x", "a", "b-cbc", "c"]);
        assert_eq!(assemble_algorithms("x,y", &d), ["x", "y"]);
    }

    #[test]
    fn sshd_t_output() {
        let s = parse_sshd_t(
            "port 22\nport 2222\npermitrootlogin without-password\nchallengeresponseauthentication no\nciphers a,b\n\nsubsystem sftp /usr/lib/openssh/sftp-server\n",
            "sshd -T",
        )
        .unwrap();
        assert_eq!(s["port"].len(), 2);
        assert_eq!(s["permitrootlogin"][0].value, "without-password");
        assert_eq!(s["kbdinteractiveauthentication"][0].value, "no");
        assert_eq!(s["subsystem"][0].value, "sftp /usr/lib/openssh/sftp-server");
        assert!(parse_sshd_t("", "x").is_err());
        assert!(parse_sshd_t("Bad Line\n", "x").is_err());
    }

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

        #[test]
        fn config_walker_never_panics(s in "(?s)[ -~\\t\\n]{0,400}") {
            let d = root_with(&[(SSHD_CONFIG, &s)]);
            let _ = parse_config(&Host::offline(d.path()), &AUDITED_CONNECTION);
        }

        #[test]
        fn wildcard_star_matches_everything(s in "\\PC{0,40}") {
            proptest::prop_assert!(wildcard_match(&s, "*"));
            proptest::prop_assert!(wildcard_match(&s, &s));
        }
    }
}
