//! `/etc/login.defs`, read exactly as shadow-utils' `def_load()` reads it
//! (lib/getdef.c, non-libeconf build, which is how Debian builds it).
//!
//! Semantics mirrored from shadow-utils:
//! - trailing whitespace is trimmed; a line whose first non-blank character
//!   is `#` is a comment; a line with a name but no value is ignored;
//! - the value starts after the blanks and double quotes that follow the
//!   name and stops at the next `"`: there are no inline comments, so
//!   `UMASK 027 # x` has the value `027 # x`, which is not a number;
//! - every line is stored with `putdef_str()`, which replaces the previous
//!   value: the LAST assignment of a key wins;
//! - numbers are read with `strtol(…, 0)` and must be consumed entirely
//!   (leading `0` = octal, `0x` = hex); a value that does not parse makes the
//!   tools fall back to their built-in default, exactly as if it were unset.
//!
//! Built-in defaults when a key is unset (shadow-utils as in Debian 12):
//! `UMASK` 022, `PASS_MAX_DAYS` -1 (no maximum), `ENCRYPT_METHOD` none, in
//! which case `chpasswd`/`newusers` use MD5 if `MD5_CRYPT_ENAB yes`, else DES
//! (upstream releases from 4.15 on fall back to SHA512 instead).

use std::collections::BTreeMap;

use super::{FactError, Facts, Gather};
use crate::audit::host::Host;

pub const LOGIN_DEFS: &str = "/etc/login.defs";

/// login.defs is a few kilobytes; anything near this is not one.
const LOGIN_DEFS_LIMIT: u64 = 1024 * 1024;

/// shadow-utils' default `UMASK` (`GETDEF_DEFAULT_UMASK`).
pub const DEFAULT_UMASK: u32 = 0o022;

/// shadow-utils' default `PASS_MAX_DAYS`: no maximum age.
pub const DEFAULT_PASS_MAX_DAYS: i64 = -1;

/// The effective assignment of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    /// `path:line` of the winning (last) assignment.
    pub source: String,
    /// Earlier assignments of the same key that this one overrides:
    /// (`path:line`, value).
    pub overridden: Vec<(String, String)>,
}

/// The parsed file: the effective value of every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginDefs {
    pub settings: BTreeMap<String, Setting>,
}

impl LoginDefs {
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.get(key)
    }
}

/// Parse login.defs text with shadow-utils' rules (see the module docs).
pub fn parse(path: &str, text: &str) -> LoginDefs {
    let mut defs = LoginDefs::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches(|c: char| c.is_ascii_whitespace());
        let name_start = line.trim_start_matches([' ', '\t']);
        if name_start.is_empty() || name_start.starts_with('#') {
            continue;
        }
        let Some((name, rest)) = name_start.split_once([' ', '\t']) else {
            continue; // a name without a value is ignored
        };
        let value_start = rest.trim_start_matches([' ', '\t', '"']);
        let value = value_start.split('"').next().unwrap_or_default();
        let source = format!("{path}:{}", i + 1);
        let overridden = match defs.settings.remove(name) {
            Some(prev) => {
                let mut o = prev.overridden;
                o.push((prev.source, prev.value));
                o
            }
            None => Vec::new(),
        };
        defs.settings.insert(name.to_string(), Setting { value: value.to_string(), source, overridden });
    }
    defs
}

/// `strtol(s, &end, 0)` with the whole string consumed, as shadow-utils'
/// `getlong()` requires.
pub fn parse_c_long(s: &str) -> Option<i64> {
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..)?),
        Some(b'+') => (false, t.get(1..)?),
        _ => (false, t),
    };
    let (radix, body) = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        (16, h)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, digits.get(1..)?)
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i64::from_str_radix(body, radix).ok()?;
    Some(if neg { -v } else { v })
}

/// What reading login.defs gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginDefsState {
    /// No file: every key has its built-in default.
    Absent,
    Unreadable(FactError),
    Parsed(LoginDefs),
}

/// The gathered login.defs.
#[derive(Debug, Clone)]
pub struct LoginDefsFacts {
    pub state: LoginDefsState,
}

impl LoginDefsFacts {
    pub fn load(host: &Host) -> Self {
        let state = match host.read_text_limited(LOGIN_DEFS, LOGIN_DEFS_LIMIT) {
            Ok(t) => LoginDefsState::Parsed(parse(LOGIN_DEFS, &t)),
            Err(e) if e.is_not_found() => LoginDefsState::Absent,
            Err(e) => LoginDefsState::Unreadable(e.into()),
        };
        LoginDefsFacts { state }
    }
}

impl Gather for LoginDefsFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        LoginDefsFacts::load(facts.host())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::root_with;

    #[test]
    fn last_assignment_wins_and_quotes_and_comments() {
        let d = parse(
            LOGIN_DEFS,
            "# comment\n  # indented\nUMASK\t022\nPASS_MAX_DAYS 99999\nUMASK  027  \nENV_PATH \"PATH=/bin:/usr/bin\"\nLONELY\nINLINE 5 # not a comment\n\tTABBED\tvalue\n",
        );
        let umask = d.get("UMASK").unwrap();
        assert_eq!(umask.value, "027");
        assert_eq!(umask.source, "/etc/login.defs:5");
        assert_eq!(umask.overridden, [("/etc/login.defs:3".to_string(), "022".to_string())]);
        assert_eq!(d.get("ENV_PATH").unwrap().value, "PATH=/bin:/usr/bin");
        assert!(d.get("LONELY").is_none());
        assert_eq!(d.get("INLINE").unwrap().value, "5 # not a comment");
        assert_eq!(d.get("TABBED").unwrap().value, "value");
        assert_eq!(d.get("PASS_MAX_DAYS").unwrap().value, "99999");
    }

    #[test]
    fn c_numbers() {
        assert_eq!(parse_c_long("027"), Some(0o27));
        assert_eq!(parse_c_long("0"), Some(0));
        assert_eq!(parse_c_long("0x1F"), Some(31));
        assert_eq!(parse_c_long("-1"), Some(-1));
        assert_eq!(parse_c_long(" 365"), Some(365));
        assert_eq!(parse_c_long("365 "), None);
        assert_eq!(parse_c_long("08"), None);
        assert_eq!(parse_c_long("5 # x"), None);
        assert_eq!(parse_c_long(""), None);
        assert_eq!(parse_c_long("-"), None);
        assert_eq!(parse_c_long("0x"), None);
        assert_eq!(parse_c_long("99999999999999999999999"), None);
    }

    #[test]
    fn load_states() {
        let d = root_with(&[("/etc/login.defs", "UMASK 077\n")]);
        let f = LoginDefsFacts::load(&Host::offline(d.path()));
        assert!(matches!(f.state, LoginDefsState::Parsed(ref p) if p.get("UMASK").unwrap().value == "077"));
        let d = root_with(&[]);
        assert_eq!(LoginDefsFacts::load(&Host::offline(d.path())).state, LoginDefsState::Absent);
        crate::testutil::write(d.path(), "/etc/login.defs", &[0xff, 0x00]);
        assert!(matches!(LoginDefsFacts::load(&Host::offline(d.path())).state, LoginDefsState::Unreadable(_)));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let d = parse(LOGIN_DEFS, &s);
            for v in d.settings.values() {
                let _ = parse_c_long(&v.value);
            }
            let _ = parse_c_long(&s);
        }
    }
}
