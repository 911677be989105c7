//! The kernel command line: `/proc/cmdline` on a live host, and the one the
//! boot loader configuration will produce (`GRUB_CMDLINE_LINUX` and
//! `GRUB_CMDLINE_LINUX_DEFAULT` from `/etc/default/grub`, then
//! `/etc/default/grub.d/*.cfg` in lexical order, as grub-mkconfig sources
//! them). Only plain shell assignments are understood, with `$VAR`/`${VAR}`
//! references to these two variables; anything else in those files is
//! ignored. Other boot loaders (systemd-boot's `/etc/kernel/cmdline`) are
//! not read.

use std::collections::BTreeMap;

use super::{FactError, Facts, Gather};
use crate::audit::host::Host;

pub const GRUB_DEFAULT: &str = "/etc/default/grub";
pub const GRUB_DEFAULT_DIR: &str = "/etc/default/grub.d";
const GRUB_VARS: [&str; 2] = ["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"];
const GRUB_FILE_LIMIT: u64 = 1024 * 1024;

/// One assignment of a command-line variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineAssignment {
    pub var: String,
    pub value: String,
    pub source: String,
}

/// Parse the assignments of the command-line variables in one grub
/// defaults file, expanding references with `vars` (updated in place).
pub fn parse_grub_defaults(path: &str, text: &str, vars: &mut BTreeMap<String, String>) -> Vec<CmdlineAssignment> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((name, rhs)) = line.split_once('=') else { continue };
        if !GRUB_VARS.contains(&name) {
            continue;
        }
        let value = expand(&shell_word(rhs), vars);
        vars.insert(name.to_string(), value.clone());
        out.push(CmdlineAssignment { var: name.to_string(), value, source: format!("{path}:{}", i + 1) });
    }
    out
}

/// The value of a simple shell word: quotes removed, a trailing unquoted
/// comment dropped. Escapes inside double quotes are kept literally.
fn shell_word(rhs: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    for c in rhs.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => break,
            (_, c) => out.push(c),
        }
    }
    out
}

/// Expand `$NAME` and `${NAME}` for known variables; others become empty,
/// as in the shell.
fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(rest.get(..pos).unwrap_or_default());
        let after = rest.get(pos + 1..).unwrap_or_default();
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.split_once('}') {
                Some((n, t)) => (n, t),
                None => (braced, ""),
            }
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (after.get(..end).unwrap_or_default(), after.get(end..).unwrap_or_default())
        };
        if name.is_empty() {
            out.push('$');
        } else if let Some(v) = vars.get(name) {
            out.push_str(v);
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The boot loader's configured command line.
#[derive(Debug, Clone, Default)]
pub struct GrubCmdline {
    /// Files read, in order.
    pub files: Vec<String>,
    pub assignments: Vec<CmdlineAssignment>,
    /// Final values of the variables.
    pub vars: BTreeMap<String, String>,
    pub unreadable: Vec<FactError>,
}

impl GrubCmdline {
    /// The parameters of a normal (non-recovery) boot entry, in order.
    pub fn params(&self) -> Vec<String> {
        GRUB_VARS
            .iter()
            .filter_map(|v| self.vars.get(*v))
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    /// The last value given to kernel parameter `key` (`apparmor` for
    /// `apparmor=0`), with the file that assigned the variable holding it.
    pub fn last_param(&self, key: &str) -> Option<(String, String)> {
        let value = self
            .params()
            .into_iter()
            .rev()
            .find_map(|p| p.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.to_string()))?;
        let needle = format!("{key}={value}");
        let source = self
            .assignments
            .iter()
            .rev()
            .find(|a| a.value.split_whitespace().any(|w| w == needle))
            .map_or_else(|| GRUB_DEFAULT.to_string(), |a| a.source.clone());
        Some((value, source))
    }
}

pub fn load_grub(host: &Host) -> GrubCmdline {
    let mut g = GrubCmdline::default();
    let mut paths = vec![GRUB_DEFAULT.to_string()];
    match host.read_dir_optional(GRUB_DEFAULT_DIR) {
        Ok(list) => paths.extend(list.into_iter().filter(|e| e.name.ends_with(".cfg")).map(|e| e.path)),
        Err(e) => g.unreadable.push(e.into()),
    }
    for path in paths {
        match host.read_text_limited(&path, GRUB_FILE_LIMIT) {
            Ok(text) => {
                let a = parse_grub_defaults(&path, &text, &mut g.vars);
                g.assignments.extend(a);
                g.files.push(path);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => g.unreadable.push(e.into()),
        }
    }
    g
}

impl Gather for GrubCmdline {
    fn gather(facts: &Facts<'_>) -> Self {
        load_grub(facts.host())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{offline, root_with};

    #[test]
    fn grub_defaults_with_dropins_and_expansion() {
        let d = root_with(&[
            (GRUB_DEFAULT, "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n"),
            (
                "/etc/default/grub.d/50-cloud.cfg",
                "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX console=ttyS0 apparmor=1\"\n",
            ),
            (
                "/etc/default/grub.d/90-x.cfg",
                "export GRUB_CMDLINE_LINUX_DEFAULT=\"${GRUB_CMDLINE_LINUX_DEFAULT} apparmor=0\" # off\n",
            ),
            ("/etc/default/grub.d/README", "GRUB_CMDLINE_LINUX=security=selinux\n"),
        ]);
        let g = load_grub(&offline(d.path()));
        assert_eq!(g.files.len(), 3);
        assert_eq!(g.params(), ["console=ttyS0", "apparmor=1", "quiet", "apparmor=0"]);
        assert_eq!(g.last_param("apparmor").unwrap(), ("0".to_string(), "/etc/default/grub.d/90-x.cfg:1".to_string()));
        assert!(g.last_param("security").is_none());
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("'a b'c # x"), "a bc");
        assert_eq!(shell_word("plain more"), "plain");
        let vars = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("$A-${A}-$B-$-${", &vars), "1-1--$-$");
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let mut vars = BTreeMap::new();
            let _ = parse_grub_defaults("/f", &s, &mut vars);
            let _ = expand(&s, &vars);
        }
    }
}
