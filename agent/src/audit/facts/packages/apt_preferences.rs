//! apt pinning: `/etc/apt/preferences` and `/etc/apt/preferences.d/*`
//! (apt_preferences(5)).
//!
//! Supported: `Package:` with names, `*` and glob patterns (several per
//! record), `Pin: release` with `a=`/`n=`/`o=`/`l=`/`c=`/`v=`/`b=` (values may
//! be globs), `Pin: origin "host"`, `Pin: version` (glob), and
//! `Pin-Priority`. A record whose Package is `*` is a *generic* pin and sets
//! the priority of whole lists; any other record is a *specific* pin and sets
//! the priority of matching versions of matching packages. As in apt, the
//! first matching record of each kind wins. Regular-expression patterns
//! (`/…/`) and `src:` packages are not supported: they are reported as
//! problems, because a pin we do not understand may change the answer.

use super::FactError;
use crate::audit::host::Host;

pub const PREFERENCES: &str = "/etc/apt/preferences";
pub const PREFERENCES_D: &str = "/etc/apt/preferences.d";
const PREFERENCES_LIMIT: u64 = 4 * 1024 * 1024;

/// What a pin selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinTarget {
    /// `Pin: release a=…, n=…`: (key, glob) pairs, all of which must match.
    Release(Vec<(char, String)>),
    /// `Pin: origin "host"`.
    Origin(String),
    /// `Pin: version 1.2*`.
    Version(String),
}

/// One preferences record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// `path:line` of the record.
    pub source: String,
    /// Package name patterns; `["*"]` for a generic pin.
    pub packages: Vec<String>,
    pub target: PinTarget,
    pub priority: i32,
}

impl Pin {
    pub fn is_generic(&self) -> bool {
        self.packages.iter().all(|p| p == "*")
    }

    pub fn matches_package(&self, name: &str) -> bool {
        self.packages.iter().any(|p| glob_match(p, name))
    }
}

/// The facts about one list that release/origin pins look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListAttrs<'a> {
    pub archive: Option<&'a str>,
    pub codename: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub label: Option<&'a str>,
    pub component: Option<&'a str>,
    pub version: Option<&'a str>,
    pub arch: Option<&'a str>,
    pub site: &'a str,
}

impl PinTarget {
    /// Does this pin select a version `version` offered by a list with `attrs`?
    pub fn matches(&self, attrs: &ListAttrs<'_>, version: &str) -> bool {
        match self {
            PinTarget::Version(g) => glob_match(g, version),
            PinTarget::Origin(o) => o.is_empty() && attrs.site.is_empty() || glob_match(o, attrs.site),
            PinTarget::Release(conds) => conds.iter().all(|(k, g)| {
                let v = match k {
                    'a' => attrs.archive,
                    'n' => attrs.codename,
                    'o' => attrs.origin,
                    'l' => attrs.label,
                    'c' => attrs.component,
                    'v' => attrs.version,
                    'b' => attrs.arch,
                    _ => None,
                };
                v.is_some_and(|v| glob_match(g, v))
            }),
        }
    }

    /// Whether this pin looks at a list at all (version pins do not).
    pub fn is_list_pin(&self) -> bool {
        !matches!(self, PinTarget::Version(_))
    }
}

fn glob_match(pattern: &str, s: &str) -> bool {
    if !pattern.contains(['*', '?', '[']) {
        return pattern == s;
    }
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches(s))
}

/// apt reads preferences.d files with no extension or `.pref`, whose names
/// are only alphanumerics, `-`, `_` and `.`.
fn is_preferences_file(name: &str) -> bool {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ext_ok = match name.rsplit_once('.') {
        None => true,
        Some((_, ext)) => ext == "pref",
    };
    ok_chars && ext_ok && !name.starts_with('.')
}

fn parse_target(v: &str) -> Option<PinTarget> {
    let (kind, rest) = v.trim().split_once(char::is_whitespace).unwrap_or((v.trim(), ""));
    let rest = rest.trim();
    match kind {
        "version" if !rest.is_empty() => Some(PinTarget::Version(rest.to_string())),
        "origin" => Some(PinTarget::Origin(rest.trim_matches('"').to_string())),
        "release" => {
            let mut conds = Vec::new();
            for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match part.split_once('=') {
                    Some((k, val)) => {
                        let mut k = k.trim().chars();
                        let (Some(key), None) = (k.next(), k.next()) else { return None };
                        if !"anolcvb".contains(key) {
                            return None;
                        }
                        conds.push((key, val.trim().trim_matches('"').to_string()));
                    }
                    // A bare value is the release version (`Pin: release 12`).
                    None => conds.push(('v', part.to_string())),
                }
            }
            Some(PinTarget::Release(conds))
        }
        _ => None,
    }
}

/// Parse one preferences file. Records with problems are skipped and the
/// problems returned.
pub fn parse_preferences(path: &str, text: &str) -> (Vec<Pin>, Vec<String>) {
    let mut pins = Vec::new();
    let mut problems = Vec::new();
    let mut record: Vec<(String, String)> = Vec::new();
    let mut start = 0usize;
    let flush = |record: &mut Vec<(String, String)>, start: usize, pins: &mut Vec<Pin>, problems: &mut Vec<String>| {
        if record.is_empty() {
            return;
        }
        let get = |k: &str| record.iter().find(|(rk, _)| rk.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
        let src = format!("{path}:{start}");
        match (get("Package"), get("Pin"), get("Pin-Priority")) {
            (Some(pkgs), Some(pin), Some(prio)) => {
                let packages: Vec<String> = pkgs.split_whitespace().map(str::to_string).collect();
                if let Some(bad) = packages.iter().find(|p| p.starts_with('/') || p.starts_with("src:")) {
                    problems.push(format!("{src}: package pattern {bad:?} is not supported (regex or source package)"));
                } else if let (Some(target), Ok(priority)) = (parse_target(pin), prio.trim().parse::<i32>()) {
                    if !packages.is_empty() {
                        pins.push(Pin { source: src, packages, target, priority });
                    }
                } else {
                    problems.push(format!("{src}: cannot understand \"Pin: {pin}\" / \"Pin-Priority: {prio}\""));
                }
            }
            _ => problems.push(format!("{src}: record without Package, Pin or Pin-Priority")),
        }
        record.clear();
    };
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        if t.is_empty() {
            flush(&mut record, start, &mut pins, &mut problems);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if record.is_empty() {
            start = i + 1;
        }
        match line.split_once(':') {
            Some((k, v)) if !k.trim().is_empty() => {
                if !k.eq_ignore_ascii_case("Explanation") {
                    record.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            _ => problems.push(format!("{path}:{}: not a \"Field: value\" line", i + 1)),
        }
    }
    flush(&mut record, start, &mut pins, &mut problems);
    (pins, problems)
}

/// Every pin in apt's reading order, with the files read and any problems.
#[derive(Debug, Clone, Default)]
pub struct Preferences {
    pub pins: Vec<Pin>,
    pub files: Vec<String>,
    pub problems: Vec<String>,
}

pub fn load(host: &Host) -> Result<Preferences, FactError> {
    let mut prefs = Preferences::default();
    let mut paths: Vec<String> = Vec::new();
    if host.exists(PREFERENCES) {
        paths.push(PREFERENCES.to_string());
    }
    for e in host.read_dir_optional(PREFERENCES_D)? {
        if is_preferences_file(&e.name) {
            paths.push(e.path);
        }
    }
    for p in paths {
        let text = host.read_text_limited(&p, PREFERENCES_LIMIT)?;
        let (pins, problems) = parse_preferences(&p, &text);
        prefs.pins.extend(pins);
        prefs.problems.extend(problems);
        prefs.files.push(p);
    }
    Ok(prefs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_matches() {
        let (pins, problems) = parse_preferences(
            "/p",
            "# comment\nExplanation: keep it\nPackage: openssl libssl*\nPin: release a=bookworm-security, l=Debian-Security\nPin-Priority: -1\n\n\
             Package: *\nPin: origin \"deb.example.com\"\nPin-Priority: 50\n\nPackage: tzdata\nPin: version 2026a*\nPin-Priority: 1001\n\n\
             Package: /^lib/\nPin: release a=x\nPin-Priority: 1\n\nPackage: a\nPin: bogus\nPin-Priority: 1\n",
        );
        assert_eq!(pins.len(), 3, "{pins:?}");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(pins[0].source, "/p:3");
        assert!(pins[0].matches_package("libssl3") && pins[0].matches_package("openssl"));
        assert!(!pins[0].matches_package("apt"));
        let sec =
            ListAttrs { archive: Some("bookworm-security"), label: Some("Debian-Security"), ..Default::default() };
        assert!(pins[0].target.matches(&sec, "1"));
        assert!(!pins[0].target.matches(&ListAttrs { archive: Some("bookworm"), ..Default::default() }, "1"));
        assert!(pins[1].is_generic());
        assert!(pins[1].target.matches(&ListAttrs { site: "deb.example.com", ..Default::default() }, "1"));
        assert!(pins[2].target.matches(&ListAttrs::default(), "2026a-1"));
        assert!(!pins[2].target.is_list_pin());
    }

    #[test]
    fn preferences_d_file_names() {
        assert!(is_preferences_file("backports") && is_preferences_file("x.pref"));
        assert!(!is_preferences_file("x.dpkg-old") && !is_preferences_file("x~") && !is_preferences_file(".hidden"));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_preferences("/p", &s);
        }
    }
}
