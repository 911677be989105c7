//! Kernel modules: the modprobe.d configuration that decides whether a module
//! can be loaded, and (on a live host) the modules that are loaded or built
//! into the running kernel.
//!
//! Configuration follows modprobe.d(5) as libkmod implements it, through
//! [`super::confd`]: `*.conf` files from `/etc/modprobe.d`,
//! `/run/modprobe.d`, `/usr/local/lib/modprobe.d`, `/usr/lib/modprobe.d`
//! and `/lib/modprobe.d`; a file name in an earlier directory masks the same
//! name in later ones (a link to `/dev/null` disables it; libkmod simply
//! reads it as empty); surviving files are read in lexical order of their
//! names. For `install`, the *first* matching command wins (libkmod stops at
//! the first one, like module-init-tools did). Module names are compared
//! with `-` and `_` treated as equal, as the kernel does.
//!
//! Known departures, kept because changing them would move verdicts:
//! hidden files (`.x.conf`) are read, although libkmod skips them, and
//! `*.alias` files, which libkmod read until 2024 (Debian 12's kmod 30
//! does), are not.

use super::confd::ConfDirs;
use super::{FactError, Facts, Gather};
use crate::audit::host::Host;

/// modprobe.d directories, most important first.
pub const MODPROBE_DIRS: [&str; 5] =
    ["/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d", "/lib/modprobe.d"];

const MODPROBE_FILE_LIMIT: u64 = 1024 * 1024;

/// `/proc/modules` has one short line per loaded module.
const PROC_MODULES_LIMIT: u64 = 4 * 1024 * 1024;

/// The canonical form of a module name: `usb-storage` and `usb_storage` are
/// the same module.
pub fn normalize_module(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// One `install` or `blacklist` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Normalized module name (may be a glob for `install`).
    pub module: String,
    /// The install command; empty for `blacklist`.
    pub command: String,
    /// `path:line`.
    pub source: String,
}

/// The parsed modprobe.d configuration.
#[derive(Debug, Clone, Default)]
pub struct ModprobeConfig {
    pub files: Vec<String>,
    /// Files that do not apply: overridden by a same-name file in a more
    /// important directory, or links to `/dev/null`.
    pub masked: Vec<String>,
    /// In file order.
    pub installs: Vec<Directive>,
    pub blacklists: Vec<Directive>,
    /// Unknown directives or directives with missing arguments (`path:line`).
    pub bad_lines: Vec<String>,
    pub unreadable: Vec<FactError>,
}

impl ModprobeConfig {
    /// The install command modprobe would run instead of loading `module`.
    pub fn install_for(&self, module: &str) -> Option<&Directive> {
        let m = normalize_module(module);
        self.installs.iter().find(|d| d.module == m || glob::Pattern::new(&d.module).is_ok_and(|p| p.matches(&m)))
    }

    /// The first `blacklist` line for `module`.
    pub fn blacklist_for(&self, module: &str) -> Option<&Directive> {
        let m = normalize_module(module);
        self.blacklists.iter().find(|d| d.module == m)
    }
}

/// Parse one modprobe.d file: `#` comments, a trailing backslash continues
/// the line. Directives we do not evaluate (`options`, `alias`, `softdep`,
/// `remove`, `weakdep`) are accepted and ignored.
pub fn parse_modprobe_file(path: &str, text: &str) -> (Vec<Directive>, Vec<Directive>, Vec<String>) {
    let mut installs = Vec::new();
    let mut blacklists = Vec::new();
    let mut bad = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut line) = match pending.take() {
            Some((s, mut acc)) => {
                acc.push(' ');
                acc.push_str(raw.trim());
                (s, acc)
            }
            None => (i + 1, raw.trim().to_string()),
        };
        if line.ends_with('\\') {
            line.pop();
            pending = Some((start, line));
            continue;
        }
        directive(path, start, &line, &mut installs, &mut blacklists, &mut bad);
    }
    if let Some((start, line)) = pending {
        directive(path, start, &line, &mut installs, &mut blacklists, &mut bad);
    }
    (installs, blacklists, bad)
}

fn directive(
    path: &str,
    lineno: usize,
    line: &str,
    installs: &mut Vec<Directive>,
    blacklists: &mut Vec<Directive>,
    bad: &mut Vec<String>,
) {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return;
    }
    let source = format!("{path}:{lineno}");
    let mut words = line.split_whitespace();
    let keyword = words.next().unwrap_or_default();
    let module = words.next().map(normalize_module);
    match (keyword, module) {
        ("install", Some(module)) => {
            let command = words.collect::<Vec<_>>().join(" ");
            if command.is_empty() {
                bad.push(source);
            } else {
                installs.push(Directive { module, command, source });
            }
        }
        ("blacklist", Some(module)) => blacklists.push(Directive { module, command: String::new(), source }),
        ("options" | "alias" | "softdep" | "remove" | "weakdep", Some(_)) => {}
        _ => bad.push(source),
    }
}

/// Collect and parse the configuration with modprobe.d precedence.
pub fn load_config(host: &Host) -> ModprobeConfig {
    let mut cfg = ModprobeConfig::default();
    let set = ConfDirs::new(MODPROBE_DIRS, ".conf").resolve(host);
    cfg.masked.extend(set.not_applied().map(str::to_string));
    cfg.unreadable.extend(set.problems.into_iter().map(FactError::from));
    for path in set.files.into_iter().map(|f| f.path) {
        match host.read_text_limited(&path, MODPROBE_FILE_LIMIT) {
            Ok(text) => {
                let (i, b, bad) = parse_modprobe_file(&path, &text);
                cfg.installs.extend(i);
                cfg.blacklists.extend(b);
                cfg.bad_lines.extend(bad);
                cfg.files.push(path);
            }
            Err(e) => cfg.unreadable.push(e.into()),
        }
    }
    cfg
}

/// Parse `/proc/modules`: the first field of each line, normalized.
pub fn parse_proc_modules(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.split_whitespace().next()).map(normalize_module).collect()
}

/// Parse `modules.builtin` (`kernel/fs/cramfs/cramfs.ko` per line) into
/// normalized module names.
pub fn parse_modules_builtin(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().rsplit('/').next())
        .filter(|n| !n.is_empty())
        .map(|n| normalize_module(n.split(".ko").next().unwrap_or(n)))
        .collect()
}

/// What the running kernel says (live hosts only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// Offline root: no running kernel.
    Offline,
    Known {
        /// From `/proc/modules` (empty when the kernel has no module support).
        loaded: Vec<String>,
        /// From `/lib/modules/<release>/modules.builtin`, when readable.
        builtin: Option<Vec<String>>,
        builtin_source: String,
    },
    Unreadable(FactError),
}

/// Read the loaded and built-in modules of the running kernel.
pub fn load_runtime(host: &Host) -> Runtime {
    if !host.is_live() {
        return Runtime::Offline;
    }
    let loaded = match host.read_text_limited("/proc/modules", PROC_MODULES_LIMIT) {
        Ok(t) => parse_proc_modules(&t),
        // A kernel built without module support has no /proc/modules.
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Runtime::Unreadable(e.into()),
    };
    let release = host.read_text_limited("/proc/sys/kernel/osrelease", 4096).ok().map(|r| r.trim().to_string());
    let builtin_source = match &release {
        Some(r) if !r.is_empty() && !r.contains('/') => format!("/lib/modules/{r}/modules.builtin"),
        _ => "/lib/modules/<release>/modules.builtin".to_string(),
    };
    let builtin = release
        .is_some()
        .then(|| host.read_text_limited(&builtin_source, PROC_MODULES_LIMIT).ok())
        .flatten()
        .map(|t| parse_modules_builtin(&t));
    Runtime::Known { loaded, builtin, builtin_source }
}

/// The gathered module facts.
#[derive(Debug, Clone)]
pub struct KernelModuleFacts {
    pub config: ModprobeConfig,
    pub runtime: Runtime,
}

impl Gather for KernelModuleFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        KernelModuleFacts { config: load_config(facts.host()), runtime: load_runtime(facts.host()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{live_like, offline, root_with};
    use std::os::unix::fs::symlink;

    #[test]
    fn parses_directives_and_normalizes_names() {
        let (i, b, bad) = parse_modprobe_file(
            "/etc/modprobe.d/x.conf",
            "# c\ninstall usb-storage /bin/false\nblacklist usb-storage\noptions foo bar=1\ninstall cramfs \\\n  /bin/true\nfrobnicate x\ninstall lonely\n",
        );
        assert_eq!(i.len(), 2);
        assert_eq!(i[0].module, "usb_storage");
        assert_eq!(i[0].command, "/bin/false");
        assert_eq!(i[1].command, "/bin/true");
        assert_eq!(i[1].source, "/etc/modprobe.d/x.conf:5");
        assert_eq!(b[0].module, "usb_storage");
        assert_eq!(bad, ["/etc/modprobe.d/x.conf:7", "/etc/modprobe.d/x.conf:8"]);
    }

    #[test]
    fn precedence_masking_and_first_install_wins() {
        let d = root_with(&[
            ("/lib/modprobe.d/50-x.conf", "install cramfs /bin/false\n"),
            ("/etc/modprobe.d/50-x.conf", "blacklist hfs\n"),
            ("/usr/lib/modprobe.d/10-a.conf", "install hfs /sbin/modprobe --ignore-install hfs\n"),
            ("/etc/modprobe.d/90-cis.conf", "install hfs /bin/false\nblacklist hfs\n"),
        ]);
        std::fs::create_dir_all(d.path().join("run/modprobe.d")).unwrap();
        symlink("/dev/null", d.path().join("run/modprobe.d/10-a.conf")).unwrap();
        let cfg = load_config(&offline(d.path()));
        assert!(cfg.install_for("cramfs").is_none(), "masked by /etc/modprobe.d/50-x.conf");
        assert_eq!(cfg.install_for("hfs").unwrap().source, "/etc/modprobe.d/90-cis.conf:1");
        assert_eq!(cfg.blacklist_for("hfs").unwrap().source, "/etc/modprobe.d/50-x.conf:1");
        assert_eq!(cfg.masked.len(), 3, "{:?}", cfg.masked);
    }

    #[test]
    fn glob_install_matches() {
        let (i, _, _) = parse_modprobe_file("/f", "install hfs* /bin/false\n");
        let cfg = ModprobeConfig { installs: i, ..Default::default() };
        assert!(cfg.install_for("hfsplus").is_some());
    }

    #[test]
    fn runtime_live_and_offline() {
        let d = root_with(&[
            ("/proc/modules", "usb_storage 77824 0 - Live 0x0000000000000000\nsctp 409600 2 - Live 0x0\n"),
            ("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n"),
            ("/lib/modules/6.1.0-18-amd64/modules.builtin", "kernel/fs/cramfs/cramfs.ko\nkernel/net/x-y.ko\n"),
        ]);
        let Runtime::Known { loaded, builtin, .. } = load_runtime(&live_like(d.path())) else { panic!() };
        assert_eq!(loaded, ["usb_storage", "sctp"]);
        assert_eq!(builtin.unwrap(), ["cramfs", "x_y"]);
        assert_eq!(load_runtime(&offline(d.path())), Runtime::Offline);
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_modprobe_file("/f", &s);
            let _ = parse_proc_modules(&s);
            let _ = parse_modules_builtin(&s);
        }

        #[test]
        fn directive_parser_never_panics(s in "((install|blacklist|options) [a-z_*\\-]{0,6} ?[/a-z ]{0,10}\\\\?\n|#.*\n){0,10}") {
            let _ = parse_modprobe_file("/f", &s);
        }
    }
}
