//! A systemd service as systemd itself would assemble it: the unit file from
//! the most important directory, its drop-ins, and the command line of
//! `ExecStart=` with `Environment=`/`EnvironmentFile=` variables expanded.
//!
//! Only what decides the kubelet's command line is modelled:
//! - the unit file is the first `NAME` found in [`UNIT_DIRS`] (a link to
//!   `/dev/null` masks the unit);
//! - drop-ins are `NAME.d/*.conf` from every directory, under systemd's
//!   precedence ([`crate::audit::facts::confd`]): a drop-in file name in a
//!   more important directory masks the same name in later ones, a link to
//!   `/dev/null` masks it, and the survivors apply in lexical order of their
//!   names, after the unit file;
//! - `ExecStart=` with an empty value resets the list (kubeadm's
//!   `10-kubeadm.conf` relies on it); `Environment=` and `EnvironmentFile=`
//!   accumulate, and an empty assignment resets them too;
//! - variables from `EnvironmentFile=` override `Environment=`; files are read
//!   in order, later ones winning; a `-` prefix makes a missing file harmless;
//! - in `ExecStart=`, a word that is exactly `$VAR` expands to the value split
//!   at whitespace, while `${VAR}` (and `$VAR` inside a longer word) expands
//!   in place to one word, as in systemd.service(5).

use std::collections::BTreeMap;

use super::flags::Arg;
use crate::audit::facts::FactError;
use crate::audit::facts::confd::ConfDirs;
use crate::audit::host::Host;

/// Unit directories, most important first (systemd's search order for the
/// system manager, as far as packages and administrators use it).
///
/// `/lib` comes before `/usr/lib` here (Debian's split-`/usr` builds), the
/// other way round in [`crate::audit::facts::systemd_units::UNIT_DIRS`]
/// (upstream). On a merged-`/usr` system they are one directory and the
/// order does not matter; on a split one it decides which of two different
/// same-name files applies, so it is kept as it was.
pub const UNIT_DIRS: [&str; 5] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// Unit files and environment files are small.
pub const UNIT_FILE_LIMIT: u64 = 256 * 1024;

/// One `KEY=value` setting of a unit file, with its `path:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSetting {
    pub section: String,
    pub key: String,
    pub value: String,
    pub source: String,
}

/// Parse unit-file syntax: sections, `Key=Value`, comments, and trailing
/// backslash continuation lines.
pub fn parse_unit(path: &str, text: &str) -> Vec<UnitSetting> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending: Option<(String, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (mut line, start) = match pending.take() {
            Some((acc, start)) => {
                // Comment lines inside a continuation are skipped, as systemd does.
                let t = raw.trim_start();
                if t.starts_with('#') || t.starts_with(';') {
                    pending = Some((acc, start));
                    continue;
                }
                (format!("{acc} {}", raw.trim()), start)
            }
            None => (raw.trim().to_string(), i + 1),
        };
        if let Some(stripped) = line.strip_suffix('\\') {
            line = stripped.trim_end().to_string();
            pending = Some((line, start));
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = line.trim_start_matches('[').trim_end_matches(']').trim().to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push(UnitSetting {
                section: section.clone(),
                key: k.trim().to_string(),
                value: v.trim().to_string(),
                source: format!("{path}:{start}"),
            });
        }
    }
    if let Some((k, v, start)) =
        pending.as_ref().and_then(|(line, start)| line.split_once('=').map(|(k, v)| (k, v, start)))
    {
        out.push(UnitSetting {
            section,
            key: k.trim().to_string(),
            value: v.trim().to_string(),
            source: format!("{path}:{start}"),
        });
    }
    out
}

/// Split a value into words, honouring double and single quotes and
/// backslash escapes (systemd's `extract_first_word` with quote handling).
pub fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// A variable's value and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValue {
    pub value: String,
    pub source: String,
}

/// Parse an environment file (`KEY=value` lines, `#`/`;` comments, optional
/// quotes around the value, backslash continuation).
pub fn parse_env_file(path: &str, text: &str) -> BTreeMap<String, EnvValue> {
    let mut out = BTreeMap::new();
    let mut pending: Option<(String, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (line, start) = match pending.take() {
            Some((acc, start)) => (format!("{acc}{raw}"), start),
            None => (raw.to_string(), i + 1),
        };
        if let Some(stripped) = line.strip_suffix('\\') {
            pending = Some((stripped.to_string(), start));
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        let t = t.strip_prefix("export ").unwrap_or(t);
        let Some((k, v)) = t.split_once('=') else { continue };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        out.insert(k.to_string(), EnvValue { value: unquote(v.trim()), source: format!("{path}:{start}") });
    }
    out
}

fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v.get(1..v.len() - 1).unwrap_or_default().to_string();
        }
    }
    v.to_string()
}

/// Parse the assignments of one `Environment=` value.
pub fn parse_environment(value: &str, source: &str) -> Vec<(String, EnvValue)> {
    split_words(value)
        .into_iter()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), EnvValue { value: v.to_string(), source: source.to_string() }))
        })
        .collect()
}

/// Expand `ExecStart=` into argv, each word with its origin.
pub fn expand_exec(value: &str, source: &str, env: &BTreeMap<String, EnvValue>) -> Vec<Arg> {
    let mut out = Vec::new();
    for word in split_words(value) {
        if let Some(name) = word.strip_prefix('$').filter(|n| is_var_name(n)) {
            // A lone `$VAR` becomes zero or more words.
            if let Some(v) = env.get(name) {
                for w in split_words(&v.value) {
                    out.push(Arg::new(w, format!("{source} (${name} from {})", v.source)));
                }
            }
            continue;
        }
        let (text, used) = substitute(&word, env);
        let origin = if used.is_empty() {
            source.to_string()
        } else {
            let from: Vec<String> =
                used.iter().filter_map(|n| env.get(n).map(|v| format!("${{{n}}} from {}", v.source))).collect();
            format!("{source} ({})", from.join(", "))
        };
        out.push(Arg::new(text, origin));
    }
    out
}

fn is_var_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// In-word substitution of `${VAR}` and `$VAR`; `$$` is a literal `$`.
fn substitute(word: &str, env: &BTreeMap<String, EnvValue>) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut used = Vec::new();
    let mut rest = word;
    while let Some(pos) = rest.find('$') {
        out.push_str(rest.get(..pos).unwrap_or_default());
        let after = rest.get(pos + 1..).unwrap_or_default();
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(a) = after.strip_prefix('{') {
            match a.find('}') {
                Some(end) => {
                    let name = a.get(..end).unwrap_or_default();
                    if let Some(v) = env.get(name) {
                        out.push_str(&v.value);
                    }
                    used.push(name.to_string());
                    rest = a.get(end + 1..).unwrap_or_default();
                }
                None => {
                    out.push_str("${");
                    rest = a;
                }
            }
        } else {
            let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            if len == 0 {
                out.push('$');
                rest = after;
            } else {
                let name = after.get(..len).unwrap_or_default();
                if let Some(v) = env.get(name) {
                    out.push_str(&v.value);
                }
                used.push(name.to_string());
                rest = after.get(len..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    (out, used)
}

/// A service assembled from its unit file and drop-ins.
#[derive(Debug, Clone, Default)]
pub struct Service {
    /// The unit file in effect, if any.
    pub unit_file: Option<String>,
    /// The unit is masked (linked to /dev/null).
    pub masked: bool,
    /// Drop-ins in the order they apply.
    pub drop_ins: Vec<String>,
    /// Drop-ins hidden by a same-name drop-in in a more important directory.
    pub masked_drop_ins: Vec<String>,
    /// Same-name unit files in less important directories (not in effect).
    pub shadowed_units: Vec<String>,
    /// (path, content) of every file that was read: unit, drop-ins and
    /// environment files. Drift hashes these.
    pub contents: Vec<(String, String)>,
    /// The effective `ExecStart=`: value and `path:line`.
    pub exec_start: Option<(String, String)>,
    /// How many `ExecStart=` remain after resets (more than one is invalid
    /// for a simple service).
    pub exec_start_count: usize,
    /// Environment variables after `Environment=` and `EnvironmentFile=`.
    pub env: BTreeMap<String, EnvValue>,
    /// Environment files that were read, and optional ones that were absent.
    pub env_files: Vec<String>,
    pub absent_optional_env_files: Vec<String>,
    /// Files that exist (or are required) but could not be read: the command
    /// line is then uncertain.
    pub problems: Vec<FactError>,
}

impl Service {
    /// argv of the effective `ExecStart=` with variables expanded.
    pub fn argv(&self) -> Vec<Arg> {
        match &self.exec_start {
            Some((v, src)) => expand_exec(strip_exec_prefixes(v), src, &self.env),
            None => Vec::new(),
        }
    }

    /// Every file of the unit (unit file and drop-ins), for permission checks.
    pub fn files(&self) -> Vec<String> {
        self.unit_file.iter().chain(self.drop_ins.iter()).cloned().collect()
    }
}

/// `ExecStart=` special prefixes (`-`, `@`, `:`, `+`, `!`, `!!`).
fn strip_exec_prefixes(v: &str) -> &str {
    v.trim_start_matches(['-', '@', ':', '+', '!'])
}

/// Load a service (e.g. `kubelet.service`) with systemd's precedence.
/// Returns `None` when no unit file and no drop-in exists.
pub fn load_service(host: &Host, name: &str) -> Option<Service> {
    let mut svc = Service::default();
    for dir in UNIT_DIRS {
        let path = format!("{dir}/{name}");
        if host.symlink_metadata(&path).is_err() {
            continue;
        }
        if svc.unit_file.is_some() || svc.masked {
            svc.shadowed_units.push(path);
            continue;
        }
        if host.read_link(&path).is_ok_and(|t| t == "/dev/null") || host.metadata(&path).is_ok_and(|m| m.size == 0) {
            svc.masked = true;
            svc.unit_file = Some(path);
            continue;
        }
        svc.unit_file = Some(path);
    }
    let dropins = ConfDirs::new(UNIT_DIRS.iter().map(|dir| format!("{dir}/{name}.d")), ".conf").resolve(host);
    svc.masked_drop_ins.extend(dropins.not_applied().map(str::to_string));
    svc.problems.extend(dropins.problems.into_iter().map(FactError::from));
    svc.drop_ins.extend(dropins.files.into_iter().map(|f| f.path));
    if svc.unit_file.is_none() && svc.drop_ins.is_empty() {
        return None;
    }
    let mut settings = Vec::new();
    let files: Vec<String> = if svc.masked { Vec::new() } else { svc.files() };
    for path in files {
        match host.read_text_limited(&path, UNIT_FILE_LIMIT) {
            Ok(text) => {
                settings.extend(parse_unit(&path, &text));
                svc.contents.push((path, text));
            }
            Err(e) => svc.problems.push(e.into()),
        }
    }
    let mut exec: Vec<(String, String)> = Vec::new();
    let mut env_assign: Vec<(String, EnvValue)> = Vec::new();
    let mut env_files: Vec<(String, String)> = Vec::new();
    for s in settings.iter().filter(|s| s.section == "Service") {
        match s.key.as_str() {
            "ExecStart" if s.value.is_empty() => exec.clear(),
            "ExecStart" => exec.push((s.value.clone(), s.source.clone())),
            "Environment" if s.value.is_empty() => env_assign.clear(),
            "Environment" => env_assign.extend(parse_environment(&s.value, &s.source)),
            "EnvironmentFile" if s.value.is_empty() => env_files.clear(),
            "EnvironmentFile" => env_files.push((s.value.clone(), s.source.clone())),
            _ => {}
        }
    }
    svc.exec_start_count = exec.len();
    svc.exec_start = exec.pop();
    for (k, v) in env_assign {
        svc.env.insert(k, v);
    }
    for (spec, _src) in env_files {
        let (optional, path) = match spec.strip_prefix('-') {
            Some(p) => (true, p.trim().to_string()),
            None => (false, spec.trim().to_string()),
        };
        match host.read_text_limited(&path, UNIT_FILE_LIMIT) {
            Ok(text) => {
                svc.env.extend(parse_env_file(&path, &text));
                svc.contents.push((path.clone(), text));
                svc.env_files.push(path);
            }
            Err(e) if e.is_not_found() && optional => svc.absent_optional_env_files.push(path),
            Err(e) => svc.problems.push(e.into()),
        }
    }
    Some(svc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{offline, root_with};

    #[test]
    fn unit_syntax() {
        let s = parse_unit(
            "/u",
            "[Unit]\nDescription=x\n# c\n[Service]\nExecStart=/usr/bin/kubelet \\\n  --a=1 \\\n  --b=2\nEnvironment=\"X=1 2\" Y=3\n",
        );
        assert_eq!(s[1].key, "ExecStart");
        assert_eq!(s[1].value, "/usr/bin/kubelet --a=1 --b=2");
        assert_eq!(s[1].source, "/u:5");
        let env = parse_environment(&s[2].value, &s[2].source);
        assert_eq!(env[0].0, "X");
        assert_eq!(env[0].1.value, "1 2");
        assert_eq!(env[1].1.value, "3");
    }

    #[test]
    fn expansion_rules() {
        let mut env = BTreeMap::new();
        env.insert("ARGS".to_string(), EnvValue { value: "--a=1 --b=2".into(), source: "/e:1".into() });
        env.insert("ONE".to_string(), EnvValue { value: "x y".into(), source: "/e:2".into() });
        let argv = expand_exec("/bin/k $ARGS ${ONE} --c=$ONE $MISSING $$HOME", "/u:3", &env);
        let words: Vec<&str> = argv.iter().map(|a| a.text.as_str()).collect();
        assert_eq!(words, vec!["/bin/k", "--a=1", "--b=2", "x y", "--c=x y", "$HOME"]);
        assert_eq!(argv[1].origin, "/u:3 ($ARGS from /e:1)");
        assert!(argv[3].origin.contains("${ONE} from /e:2"));
    }

    #[test]
    fn env_file_parsing() {
        let e = parse_env_file("/f", "# c\nKUBELET_KUBEADM_ARGS=\"--x=1 --y=2\"\nexport B='q'\nbad line\nC=a\\\nb\n");
        assert_eq!(e["KUBELET_KUBEADM_ARGS"].value, "--x=1 --y=2");
        assert_eq!(e["KUBELET_KUBEADM_ARGS"].source, "/f:2");
        assert_eq!(e["B"].value, "q");
        assert_eq!(e["C"].value, "ab");
    }

    #[test]
    fn drop_in_precedence_and_reset() {
        let d = root_with(&[
            ("/lib/systemd/system/kubelet.service", "[Service]\nExecStart=/usr/bin/kubelet --old\n"),
            ("/etc/systemd/system/kubelet.service", "[Service]\nExecStart=/usr/bin/kubelet --base\n"),
            (
                "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
                "[Service]\nExecStart=/usr/bin/kubelet --masked\n",
            ),
            (
                "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
                "[Service]\nEnvironment=\"A=--from-env\"\nEnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env\nEnvironmentFile=-/etc/default/kubelet\nExecStart=\nExecStart=/usr/bin/kubelet $A $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS\n",
            ),
            ("/run/systemd/system/kubelet.service.d/20-extra.conf", "[Service]\nEnvironment=A=--later\n"),
            ("/var/lib/kubelet/kubeadm-flags.env", "KUBELET_KUBEADM_ARGS=\"--k=1\"\n"),
        ]);
        let svc = load_service(&offline(d.path()), "kubelet.service").unwrap();
        assert_eq!(svc.unit_file.as_deref(), Some("/etc/systemd/system/kubelet.service"));
        assert_eq!(svc.shadowed_units, vec!["/lib/systemd/system/kubelet.service".to_string()]);
        assert_eq!(svc.masked_drop_ins, vec!["/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf".to_string()]);
        assert_eq!(svc.drop_ins.len(), 2);
        let words: Vec<String> = svc.argv().into_iter().map(|a| a.text).collect();
        assert_eq!(words, vec!["/usr/bin/kubelet", "--later", "--k=1"]);
        assert_eq!(svc.absent_optional_env_files, vec!["/etc/default/kubelet".to_string()]);
        assert!(svc.problems.is_empty());
    }

    #[test]
    fn required_env_file_missing_is_a_problem() {
        let d = root_with(&[(
            "/etc/systemd/system/kubelet.service",
            "[Service]\nEnvironmentFile=/etc/default/kubelet\nExecStart=/usr/bin/kubelet\n",
        )]);
        let svc = load_service(&offline(d.path()), "kubelet.service").unwrap();
        assert_eq!(svc.problems.len(), 1);
        assert!(load_service(&offline(d.path()), "nothing.service").is_none());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_unit("/p", &s);
            let _ = parse_env_file("/p", &s);
            let _ = split_words(&s);
            let mut env = BTreeMap::new();
            env.insert("A".to_string(), EnvValue { value: s.clone(), source: "/e".into() });
            let _ = expand_exec(&s, "/p", &env);
        }
    }
}
