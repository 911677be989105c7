//! Kernel parameters: the configured values with systemd-sysctl's precedence,
//! and the runtime values from `/proc/sys` on a live host.
//!
//! Precedence follows sysctl.d(5) through [`super::confd`]: configuration
//! files are collected from `/etc/sysctl.d`, `/run/sysctl.d`,
//! `/usr/local/lib/sysctl.d`, `/usr/lib/sysctl.d` and `/lib/sysctl.d`; a
//! file name in an earlier directory masks the same name in later ones (a
//! link to `/dev/null` disables it); the surviving files are read in
//! lexicographic order of their names, then `/etc/sysctl.conf`. A later
//! assignment wins over an earlier one. Glob keys
//! (`net.ipv4.conf.*.rp_filter`) never override a key that is set
//! explicitly, as in systemd-sysctl.
//!
//! Known departure: hidden fragments (`.x.conf`) are read, although
//! systemd skips them; the agent always has, and skipping them would move
//! verdicts.

use super::confd::{ConfDirs, is_null_link};
use super::{FactError, Facts, Gather};
use crate::audit::host::Host;

/// Directories of sysctl.d fragments, most important first.
pub const SYSCTL_DIRS: [&str; 5] =
    ["/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d"];

/// Read last, after all fragments.
pub const SYSCTL_CONF: &str = "/etc/sysctl.conf";

/// Where UFW names the sysctl file it applies when it starts (after
/// systemd-sysctl), and where it says whether it is enabled.
pub const UFW_DEFAULTS: &str = "/etc/default/ufw";
pub const UFW_CONF: &str = "/etc/ufw/ufw.conf";

/// sysctl files are small; anything larger is not a configuration file.
const SYSCTL_FILE_LIMIT: u64 = 1024 * 1024;

/// One assignment in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub key: String,
    pub value: String,
    /// `path:line`.
    pub source: String,
    /// A glob key such as `net.ipv4.conf.*.rp_filter`.
    pub is_glob: bool,
    /// Written `dotted.key = value`: not a glob, no leading `-`, not the
    /// slash form. Only such lines count as "set in a configuration file"
    /// for CIS and the SSG rules, whose audits match `^\s*<key>\s*=`.
    pub plain: bool,
}

/// A line that is neither a comment nor a valid assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub source: String,
    pub text: String,
}

/// The parsed configuration, in application order.
#[derive(Debug, Clone, Default)]
pub struct SysctlConfig {
    /// Files read, in the order they were applied.
    pub files: Vec<String>,
    /// Keys excluded from glob assignments by a `-key` line without a value
    /// (sysctl.d(5)), with their `path:line`.
    pub glob_exclusions: Vec<(String, String)>,
    /// Files that do not apply: overridden by a same-name file in a more
    /// important directory, or links to `/dev/null` (see [`super::confd`]).
    pub masked: Vec<String>,
    pub assignments: Vec<Assignment>,
    pub bad_lines: Vec<BadLine>,
    /// Files that exist but could not be read (too large, binary, loop…):
    /// any key might be set there, so configured values are uncertain.
    pub unreadable: Vec<FactError>,
}

impl SysctlConfig {
    /// Every non-glob assignment of `key`, in application order (the
    /// effective one last), whatever its form.
    pub fn explicit(&self, key: &str) -> impl Iterator<Item = &Assignment> {
        let key = normalize_key(key);
        self.assignments.iter().filter(move |a| !a.is_glob && a.key == key)
    }

    /// The effective configured value of `key`, with its source.
    pub fn configured(&self, key: &str) -> Option<&Assignment> {
        let key = normalize_key(key);
        let explicit = self.assignments.iter().rev().find(|a| !a.is_glob && a.key == key);
        if explicit.is_some() {
            return explicit;
        }
        // `-net.ipv4.conf.all.rp_filter` keeps every glob off that key.
        if self.glob_exclusions.iter().any(|(k, _)| *k == key) {
            return None;
        }
        self.assignments.iter().rev().find(|a| a.is_glob && glob_match(&a.key, &key))
    }
}

/// Normalize a key to dotted form. sysctl.d accepts `/` as separator, in
/// which case `.` inside a component is literal (e.g. interface `eth0.100`);
/// we render such dots as `/` so the two forms cannot collide.
pub fn normalize_key(key: &str) -> String {
    let key = key.trim();
    let first_sep = key.find(['.', '/']);
    match first_sep {
        Some(i) if key.as_bytes().get(i) == Some(&b'/') => {
            key.split('/').map(|c| c.replace('.', "/")).collect::<Vec<_>>().join(".")
        }
        _ => key.to_string(),
    }
}

/// One parsed sysctl.d file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedFile {
    pub assignments: Vec<Assignment>,
    pub bad_lines: Vec<BadLine>,
    /// `-key` lines without a value: the key is kept out of globs.
    pub glob_exclusions: Vec<(String, String)>,
}

/// Parse one sysctl.d file.
pub fn parse_file(path: &str, text: &str) -> ParsedFile {
    let mut parsed = ParsedFile::default();
    let (out, bad) = (&mut parsed.assignments, &mut parsed.bad_lines);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let source = format!("{path}:{}", i + 1);
        let Some((k, v)) = line.split_once('=') else {
            if let Some(key) = line.strip_prefix('-').filter(|k| !k.is_empty() && !k.contains(char::is_whitespace)) {
                parsed.glob_exclusions.push((normalize_key(key), source));
                continue;
            }
            bad.push(BadLine { source, text: truncate(line, 120) });
            continue;
        };
        // A leading '-' means "ignore errors when applying"; the value still applies.
        let k = k.trim();
        let dashed = k.starts_with('-');
        let k = k.trim_start_matches('-');
        if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bad.push(BadLine { source, text: truncate(line, 120) });
            continue;
        }
        let key = normalize_key(k);
        let is_glob = key.contains(['*', '?', '[']);
        let slash_form = k.find(['.', '/']).is_some_and(|i| k.as_bytes().get(i) == Some(&b'/'));
        out.push(Assignment {
            is_glob,
            plain: !is_glob && !dashed && !slash_form,
            key,
            value: normalize_value(v),
            source,
        });
    }
    parsed
}

/// Values are compared after collapsing internal whitespace, as the kernel
/// prints multi-value entries separated by tabs.
pub fn normalize_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n).collect::<String>() + "…" }
}

/// Shell-style glob on dotted keys, as systemd uses fnmatch(3) without flags.
fn glob_match(pattern: &str, key: &str) -> bool {
    glob::Pattern::new(pattern).map(|p| p.matches(key)).unwrap_or(false)
}

/// Collect and apply configuration files with systemd precedence.
pub fn load_config(host: &Host) -> SysctlConfig {
    let mut cfg = SysctlConfig::default();
    // systemd-sysctl lists its fragments without any mask filter: a link to
    // /dev/null wins its name and reads as nothing, and so does an empty
    // file, which is therefore listed as read, not as a mask.
    let set = ConfDirs::new(SYSCTL_DIRS, ".conf").resolve(host);
    cfg.masked.extend(set.not_applied().map(str::to_string));
    let mut order: Vec<String> = set.paths().map(str::to_string).collect();
    cfg.unreadable.extend(set.problems.into_iter().map(FactError::from));
    // sysctl.conf is no fragment, but a link to /dev/null disables it too.
    if is_null_link(host, SYSCTL_CONF) {
        cfg.masked.push(SYSCTL_CONF.to_string());
    } else {
        order.push(SYSCTL_CONF.to_string());
    }
    for path in order {
        match host.read_text_limited(&path, SYSCTL_FILE_LIMIT) {
            Ok(text) => {
                let p = parse_file(&path, &text);
                cfg.assignments.extend(p.assignments);
                cfg.bad_lines.extend(p.bad_lines);
                cfg.glob_exclusions.extend(p.glob_exclusions);
                cfg.files.push(path);
            }
            Err(e) if e.is_not_found() && path == SYSCTL_CONF => {}
            Err(e) => cfg.unreadable.push(e.into()),
        }
    }
    load_ufw(host, &mut cfg);
    cfg
}

/// A `NAME=value` shell assignment's value in a small defaults file.
fn shell_value(text: &str, name: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

/// UFW applies the file named by `IPT_SYSCTL` in `/etc/default/ufw` each
/// time it starts, after systemd-sysctl, so when UFW is enabled its values
/// win at boot; CIS counts that file as configuration. Its lines are
/// counted as set in a configuration file in whichever form they are
/// written (Debian's file uses the slash form).
fn load_ufw(host: &Host, cfg: &mut SysctlConfig) {
    let enabled = match host.read_text_limited(UFW_CONF, SYSCTL_FILE_LIMIT) {
        Ok(t) => shell_value(&t, "ENABLED").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        Err(e) if e.is_not_found() => return,
        Err(e) => {
            cfg.unreadable.push(e.into());
            return;
        }
    };
    if !enabled {
        return;
    }
    let file = match host.read_text_limited(UFW_DEFAULTS, SYSCTL_FILE_LIMIT) {
        Ok(t) => shell_value(&t, "IPT_SYSCTL"),
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            cfg.unreadable.push(e.into());
            return;
        }
    };
    let Some(path) = file.filter(|p| p.starts_with('/')) else { return };
    match host.read_text_limited(&path, SYSCTL_FILE_LIMIT) {
        Ok(text) => {
            let p = parse_file(&path, &text);
            cfg.assignments.extend(p.assignments.into_iter().map(|a| Assignment { plain: !a.is_glob, ..a }));
            cfg.bad_lines.extend(p.bad_lines);
            cfg.glob_exclusions.extend(p.glob_exclusions);
            cfg.files.push(path);
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => cfg.unreadable.push(e.into()),
    }
}

/// Whether `source` (`path:line`) is in a place an administrator writes
/// (`/etc`, `/run`, `/usr/local`, UFW's file) rather than one a package
/// ships (`/usr/lib`, `/lib`): every such line must carry an acceptable
/// value for the SSG rules, overridden or not.
pub fn is_admin_source(source: &str) -> bool {
    !(source.starts_with("/usr/lib/sysctl.d/") || source.starts_with("/lib/sysctl.d/"))
}

/// Whether IPv6 is disabled in the kernel (`ipv6.disable=1`): live, from the
/// ipv6 module's parameter; offline, from the boot loader's command line.
/// Then `net.ipv6.*` keys do not exist and their checks do not apply (as
/// CIS's audit says).
pub fn ipv6_disabled(facts: &Facts<'_>) -> Option<String> {
    let host = facts.host();
    if host.is_live() {
        match host.read_text_limited("/sys/module/ipv6/parameters/disable", 64) {
            Ok(v) if v.trim() == "1" => Some("/sys/module/ipv6/parameters/disable = 1".into()),
            _ => None,
        }
    } else {
        let grub = facts.get::<super::kernel_cmdline::GrubCmdline>();
        grub.last_param("ipv6.disable")
            .filter(|(v, _)| v == "1")
            .map(|(_, source)| format!("ipv6.disable=1 on the kernel command line ({source})"))
    }
}

/// The runtime value of a key on a live host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// Offline root: there is no running kernel to ask.
    Offline,
    /// The kernel does not expose this key (feature not built, module not
    /// loaded, IPv6 disabled…).
    Absent,
    Value(String),
    Unreadable(FactError),
}

/// The `/proc/sys` path of a dotted key.
pub fn proc_path(key: &str) -> String {
    // Dots separate components; a '/' inside a component (from a slash-form
    // key) stands for a literal dot in the name.
    let parts: Vec<String> = key.split('.').map(|c| c.replace('/', ".")).collect();
    format!("/proc/sys/{}", parts.join("/"))
}

/// Read a runtime value.
pub fn runtime(host: &Host, key: &str) -> Runtime {
    if !host.is_live() {
        return Runtime::Offline;
    }
    let path = proc_path(key);
    match host.read_text_limited(&path, 64 * 1024) {
        Ok(v) => Runtime::Value(normalize_value(&v)),
        Err(e) if e.is_not_found() => Runtime::Absent,
        Err(e) => Runtime::Unreadable(e.into()),
    }
}

/// The gathered sysctl configuration (runtime values are read per key).
#[derive(Debug, Clone)]
pub struct SysctlFacts {
    pub config: SysctlConfig,
}

impl Gather for SysctlFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        SysctlFacts { config: load_config(facts.host()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(root: &std::path::Path, rel: &str, text: &str) {
        let p = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn parses_comments_dashes_and_bad_lines() {
        let p = parse_file(
            "/etc/sysctl.d/x.conf",
            "# c\n; c\n\nkernel.kptr_restrict = 2\n-net.ipv4.tcp_syncookies=1\ngarbage line\nnet/ipv4/conf/eth0.100/rp_filter = 1\n-net.ipv4.conf.all.rp_filter\n",
        );
        let (a, b) = (p.assignments, p.bad_lines);
        assert_eq!(
            p.glob_exclusions,
            [("net.ipv4.conf.all.rp_filter".to_string(), "/etc/sysctl.d/x.conf:8".to_string())]
        );
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].key, "kernel.kptr_restrict");
        assert_eq!(a[0].source, "/etc/sysctl.d/x.conf:4");
        assert_eq!(a[1].key, "net.ipv4.tcp_syncookies");
        assert_eq!(a[2].key, "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(proc_path(&a[2].key), "/proc/sys/net/ipv4/conf/eth0.100/rp_filter");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].source, "/etc/sysctl.d/x.conf:6");
    }

    #[test]
    fn precedence_masking_and_order() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        // Same name in /usr/lib is masked by /etc.
        write(r, "/usr/lib/sysctl.d/50-default.conf", "kernel.kptr_restrict = 0\nfs.protected_fifos = 1\n");
        write(r, "/etc/sysctl.d/50-default.conf", "kernel.kptr_restrict = 1\n");
        // Later file name wins over earlier, whatever the directory.
        write(r, "/usr/lib/sysctl.d/90-vendor.conf", "kernel.kptr_restrict = 2\n");
        write(r, "/run/sysctl.d/10-early.conf", "kernel.kptr_restrict = 0\n");
        // Later line wins within a file.
        write(r, "/etc/sysctl.d/60-lines.conf", "kernel.dmesg_restrict = 0\nkernel.dmesg_restrict = 1\n");
        // sysctl.conf is last.
        write(r, "/etc/sysctl.conf", "kernel.dmesg_restrict = 0\n");
        let host = Host::offline(r);
        let cfg = load_config(&host);
        assert_eq!(cfg.configured("kernel.kptr_restrict").unwrap().value, "2");
        assert_eq!(cfg.configured("kernel.kptr_restrict").unwrap().source, "/usr/lib/sysctl.d/90-vendor.conf:1");
        assert_eq!(cfg.configured("kernel.dmesg_restrict").unwrap().source, "/etc/sysctl.conf:1");
        // The masked /usr/lib file's other key is not applied.
        assert!(cfg.configured("fs.protected_fifos").is_none());
        assert_eq!(cfg.masked, vec!["/usr/lib/sysctl.d/50-default.conf".to_string()]);
    }

    #[test]
    fn dev_null_masks_and_globs_do_not_override_explicit() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "/usr/lib/sysctl.d/50-x.conf", "net.ipv4.conf.all.rp_filter = 2\n");
        std::fs::create_dir_all(r.join("etc/sysctl.d")).unwrap();
        symlink("/dev/null", r.join("etc/sysctl.d/50-x.conf")).unwrap();
        write(r, "/etc/sysctl.d/10-a.conf", "net.ipv4.conf.default.rp_filter = 1\n");
        write(r, "/etc/sysctl.d/90-glob.conf", "net.ipv4.conf.*.rp_filter = 0\n");
        let cfg = load_config(&Host::offline(r));
        assert_eq!(cfg.configured("net.ipv4.conf.default.rp_filter").unwrap().value, "1");
        assert_eq!(cfg.configured("net.ipv4.conf.all.rp_filter").unwrap().value, "0");
        assert!(cfg.masked.iter().any(|m| m.ends_with("50-x.conf")));
        // A `-key` line keeps globs off that key (systemd's 50-default.conf
        // does this for rp_filter on `all`).
        write(r, "/etc/sysctl.d/95-exclude.conf", "-net.ipv4.conf.all.rp_filter\n");
        let cfg = load_config(&Host::offline(r));
        assert!(cfg.configured("net.ipv4.conf.all.rp_filter").is_none());
        assert_eq!(cfg.configured("net.ipv4.conf.default.rp_filter").unwrap().value, "1");
    }

    #[test]
    fn unreadable_files_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "/etc/sysctl.d/bin.conf", "");
        std::fs::write(r.join("etc/sysctl.d/bin.conf"), [0xffu8, 0xfe, 0x00]).unwrap();
        let f = std::fs::File::create(r.join("etc/sysctl.d/huge.conf")).unwrap();
        f.set_len(10 << 20).unwrap();
        let cfg = load_config(&Host::offline(r));
        assert_eq!(cfg.unreadable.len(), 2);
    }

    #[test]
    fn runtime_is_offline_for_roots() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(runtime(&Host::offline(d.path()), "kernel.kptr_restrict"), Runtime::Offline);
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_file("/f", &s);
        }
    }
}
