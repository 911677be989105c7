//! systemd unit files and their enablement, read from the file system, plus
//! the systemd configuration-file syntax (INI with drop-ins) shared by
//! journald.conf, coredump.conf and unit files.
//!
//! Enablement is decided from files, not by asking systemd: PID 1 is often
//! not systemd where the agent runs (containers), and an offline root has no
//! running systemd at all. A unit is *enabled* when an entry named after it
//! (or one of its aliases) exists in a `*.wants/` or `*.requires/` directory
//! of a unit directory: `/etc` and `/run` hold what `systemctl enable`
//! created, `/usr/lib` and `/lib` what the vendor made static. It is *masked*
//! when its highest-priority unit file is a link to `/dev/null` or empty.
//! Aliases come from alias symlinks (`chronyd.service -> chrony.service`)
//! and from `Alias=` in the unit's `[Install]` section. We do not follow
//! whether the wanting target itself is reached at boot: every target that
//! collects `.wants` links on a node is.

use std::collections::BTreeSet;

use super::confd::ConfDirs;
use super::{FactError, Facts, Gather};
use crate::audit::host::{FileKind, Host};
use crate::audit::model::Evidence;

/// Unit directories, most important first.
pub const UNIT_DIRS: [&str; 5] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Unit and systemd configuration files are small.
pub const CONF_FILE_LIMIT: u64 = 1024 * 1024;

/// One entry at the top level of a unit directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitEntry {
    pub name: String,
    pub path: String,
    /// The symlink target, when the entry is a symlink.
    pub link: Option<String>,
    /// A zero-length regular file, which systemd treats as masked.
    pub empty: bool,
}

/// One entry of a `*.wants/` or `*.requires/` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantsLink {
    pub name: String,
    pub path: String,
    pub link: Option<String>,
}

/// The unit directories as found on disk.
#[derive(Debug, Clone, Default)]
pub struct UnitIndex {
    /// Top-level entries, in directory priority order.
    pub entries: Vec<UnitEntry>,
    pub wants: Vec<WantsLink>,
    /// Unit directories that exist but could not be listed.
    pub problems: Vec<FactError>,
}

/// What the file system says about one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    pub unit: String,
    /// The unit's real name when `unit` is an alias of it.
    pub canonical: String,
    /// The unit file (the path in a unit directory, with the link target).
    pub file: Option<String>,
    pub masked_by: Option<String>,
    /// Every name the unit is known by (itself included).
    pub names: Vec<String>,
    /// The `.wants`/`.requires` entries that pull the unit in.
    pub enabled_by: Vec<String>,
}

impl UnitStatus {
    /// Installed, not masked and wanted by some target.
    pub fn is_enabled(&self) -> bool {
        self.file.is_some() && self.masked_by.is_none() && !self.enabled_by.is_empty()
    }

    /// A one-line description for evidence.
    pub fn describe(&self) -> String {
        let alias = if self.canonical != self.unit { format!(" (alias of {})", self.canonical) } else { String::new() };
        match (&self.file, &self.masked_by) {
            (_, Some(m)) => format!("{}{alias}: masked by {m}", self.unit),
            (None, None) => format!("{}{alias}: no unit file in any unit directory", self.unit),
            (Some(f), None) if self.enabled_by.is_empty() => {
                format!("{}{alias}: unit file {f}, not enabled (no .wants/.requires link)", self.unit)
            }
            (Some(f), None) => {
                format!("{}{alias}: unit file {f}, enabled by {}", self.unit, self.enabled_by.join(", "))
            }
        }
    }

    /// Evidence naming the unit directory paths that decided.
    pub fn evidence(&self) -> Evidence {
        let source = self
            .masked_by
            .clone()
            .or_else(|| self.enabled_by.first().cloned())
            .or_else(|| self.file.clone())
            .unwrap_or_else(|| UNIT_DIRS.join(", "));
        Evidence::new(source, self.describe())
    }
}

fn basename(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

fn unit_suffix(name: &str) -> &str {
    name.rsplit_once('.').map(|(_, s)| s).unwrap_or("")
}

impl UnitIndex {
    /// List the unit directories.
    pub fn load(host: &Host) -> Self {
        let mut idx = UnitIndex::default();
        for dir in UNIT_DIRS {
            let list = match host.read_dir_optional(dir) {
                Ok(l) => l,
                Err(e) => {
                    idx.problems.push(e.into());
                    continue;
                }
            };
            for e in list {
                let Ok(meta) = host.symlink_metadata(&e.path) else { continue };
                let is_wants = e.name.ends_with(".wants") || e.name.ends_with(".requires");
                if is_wants && host.metadata(&e.path).is_ok_and(|m| m.kind == FileKind::Dir) {
                    match host.read_dir(&e.path) {
                        Ok(links) => idx.wants.extend(links.into_iter().map(|l| WantsLink {
                            link: host.read_link(&l.path).ok(),
                            name: l.name,
                            path: l.path,
                        })),
                        Err(err) => idx.problems.push(err.into()),
                    }
                    continue;
                }
                if meta.kind == FileKind::Dir {
                    continue; // drop-in directories (`x.service.d`) and the like
                }
                let link = (meta.kind == FileKind::Symlink).then(|| host.read_link(&e.path).ok()).flatten();
                idx.entries.push(UnitEntry {
                    empty: meta.kind == FileKind::File && meta.size == 0,
                    name: e.name,
                    path: e.path,
                    link,
                });
            }
        }
        idx
    }

    /// The highest-priority entry named `name`.
    pub fn top(&self, name: &str) -> Option<&UnitEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Everything the file system says about `unit`.
    pub fn status(&self, host: &Host, unit: &str) -> UnitStatus {
        let top = self.top(unit);
        let masked_by = top.filter(|e| e.empty || e.link.as_deref() == Some("/dev/null")).map(|e| e.path.clone());
        // Follow alias links to the real unit name (bounded: links may loop).
        let mut canonical = unit.to_string();
        let mut current = top;
        for _ in 0..8 {
            let Some(target) = current.and_then(|e| e.link.as_deref()) else { break };
            let name = basename(target);
            if target == "/dev/null" || name == canonical || unit_suffix(name) != unit_suffix(unit) {
                break;
            }
            canonical = name.to_string();
            current = self.top(&canonical).or(current);
            if current.is_some_and(|e| e.name != canonical) {
                break; // target lives outside the unit directories
            }
        }
        let file = top.filter(|e| masked_by.is_none() && host.exists(&e.path)).map(|e| match &e.link {
            Some(l) => format!("{} -> {l}", e.path),
            None => e.path.clone(),
        });
        let mut names: BTreeSet<String> = [unit.to_string(), canonical.clone()].into();
        for e in &self.entries {
            if e.link.as_deref().is_some_and(|l| basename(l) == canonical) {
                names.insert(e.name.clone());
            }
        }
        if let Some(e) = top.filter(|_| file.is_some())
            && let Ok(text) = host.read_text_limited(&e.path, CONF_FILE_LIMIT)
        {
            let ini = parse_ini(&e.path, &text);
            for a in ini.entries.iter().filter(|a| a.section == "Install" && a.key == "Alias") {
                names.extend(a.value.split_whitespace().map(str::to_string));
            }
        }
        let enabled_by = self
            .wants
            .iter()
            .filter(|w| names.contains(&w.name) && w.link.as_deref() != Some("/dev/null"))
            .map(|w| match &w.link {
                Some(l) => format!("{} -> {l}", w.path),
                None => w.path.clone(),
            })
            .collect();
        UnitStatus {
            unit: unit.to_string(),
            canonical,
            file,
            masked_by,
            names: names.into_iter().collect(),
            enabled_by,
        }
    }
}

/// The unit index of the audited system.
#[derive(Debug, Clone)]
pub struct SystemdUnits(pub UnitIndex);

impl Gather for SystemdUnits {
    fn gather(facts: &Facts<'_>) -> Self {
        SystemdUnits(UnitIndex::load(facts.host()))
    }
}

/// One `Key=Value` of a systemd configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    pub section: String,
    pub key: String,
    pub value: String,
    /// `path:line`.
    pub source: String,
}

/// A parsed file (or a file plus its drop-ins), in application order.
#[derive(Debug, Clone, Default)]
pub struct IniConf {
    /// Files read, in order.
    pub files: Vec<String>,
    /// Drop-ins that do not apply: overridden by a same-name drop-in in a
    /// more important directory, or links to `/dev/null`.
    pub masked: Vec<String>,
    pub entries: Vec<IniEntry>,
    /// Lines that are neither comments, sections nor assignments.
    pub bad_lines: Vec<String>,
    /// Files that exist but could not be read.
    pub unreadable: Vec<FactError>,
}

impl IniConf {
    /// The last assignment of `key` in `section`; an empty value means "reset
    /// to the default" in systemd and is returned as such.
    pub fn get(&self, section: &str, key: &str) -> Option<&IniEntry> {
        self.entries.iter().rev().find(|e| e.section == section && e.key == key)
    }

    /// The effective value, `None` when unset or reset to the default.
    pub fn value(&self, section: &str, key: &str) -> Option<&IniEntry> {
        self.get(section, key).filter(|e| !e.value.is_empty())
    }

    /// Why the configuration is uncertain, when a file could not be read.
    pub fn unreadable_summary(&self) -> Option<String> {
        (!self.unreadable.is_empty())
            .then(|| self.unreadable.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
    }
}

/// Parse systemd's INI dialect: `[Section]`, `Key=Value`, `#`/`;` comments,
/// a trailing backslash continues the line.
pub fn parse_ini(path: &str, text: &str) -> IniConf {
    let mut conf = IniConf { files: vec![path.to_string()], ..IniConf::default() };
    let mut section = String::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut line) = match pending.take() {
            Some((start, mut acc)) => {
                // Comment lines inside a continuation are skipped, as systemd does.
                if raw.trim_start().starts_with(['#', ';']) {
                    pending = Some((start, acc));
                    continue;
                }
                acc.push(' ');
                acc.push_str(raw.trim());
                (start, acc)
            }
            None => {
                let t = raw.trim();
                if t.is_empty() || t.starts_with(['#', ';']) {
                    continue;
                }
                (i + 1, t.to_string())
            }
        };
        if line.ends_with('\\') {
            line.pop();
            pending = Some((start, line));
            continue;
        }
        let source = format!("{path}:{start}");
        if line.starts_with('[') {
            match line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                Some(name) if !name.is_empty() => section = name.trim().to_string(),
                _ => conf.bad_lines.push(source),
            }
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => conf.entries.push(IniEntry {
                section: section.clone(),
                key: k.trim().to_string(),
                value: v.trim().to_string(),
                source,
            }),
            _ => conf.bad_lines.push(source),
        }
    }
    if let Some((start, line)) = pending {
        // A continuation at end of file still ends the assignment.
        if let Some((k, v)) = line.split_once('=').filter(|(k, _)| !k.trim().is_empty()) {
            conf.entries.push(IniEntry {
                section,
                key: k.trim().to_string(),
                value: v.trim().to_string(),
                source: format!("{path}:{start}"),
            });
        } else {
            conf.bad_lines.push(format!("{path}:{start}"));
        }
    }
    conf
}

/// Load a systemd configuration file with its drop-ins: the first existing
/// file of `main_candidates` (an `/etc` file replaces the vendor one), then
/// the drop-ins of `dropin_dirs` (most important first) under systemd's
/// precedence ([`super::confd`]: `*.conf` in lexical order of file name, a
/// name in an earlier directory overriding the same name in later ones, a
/// link to `/dev/null` masking it). Later assignments win.
pub fn load_conf(host: &Host, main_candidates: &[&str], dropin_dirs: &[String]) -> IniConf {
    let mut conf = IniConf::default();
    for path in main_candidates {
        match host.read_text_limited(path, CONF_FILE_LIMIT) {
            Ok(text) => {
                merge(&mut conf, parse_ini(path, &text));
                break;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                conf.unreadable.push(e.into());
                break;
            }
        }
    }
    let dropins = ConfDirs::new(dropin_dirs, ".conf").resolve(host);
    conf.masked.extend(dropins.not_applied().map(str::to_string));
    conf.unreadable.extend(dropins.problems.into_iter().map(FactError::from));
    for path in dropins.files.into_iter().map(|f| f.path) {
        match host.read_text_limited(&path, CONF_FILE_LIMIT) {
            Ok(text) => merge(&mut conf, parse_ini(&path, &text)),
            Err(e) => conf.unreadable.push(e.into()),
        }
    }
    conf
}

fn merge(into: &mut IniConf, from: IniConf) {
    into.files.extend(from.files);
    into.masked.extend(from.masked);
    into.entries.extend(from.entries);
    into.bad_lines.extend(from.bad_lines);
    into.unreadable.extend(from.unreadable);
}

/// The drop-in directories of a unit (`<unitdir>/<unit>.d`), by priority.
pub fn unit_dropin_dirs(unit: &str) -> Vec<String> {
    UNIT_DIRS.iter().map(|d| format!("{d}/{unit}.d")).collect()
}

/// The mount unit name for a path, as `systemd-escape --path --suffix=mount`.
pub fn mount_unit_name(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return "-.mount".to_string();
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, b) in part.bytes().enumerate() {
            let plain = b.is_ascii_alphanumeric() || b == b':' || b == b'_' || (b == b'.' && !(i == 0 && j == 0));
            if plain {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out.push_str(".mount");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{offline, root_with};
    use std::os::unix::fs::symlink;

    fn link(root: &std::path::Path, target: &str, at: &str) {
        let p = root.join(at.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    #[test]
    fn enabled_via_wants_and_alias() {
        let d = root_with(&[(
            "/lib/systemd/system/chrony.service",
            "[Unit]\nDescription=chrony\n[Install]\nAlias=chronyd.service\nWantedBy=multi-user.target\n",
        )]);
        link(d.path(), "/lib/systemd/system/chrony.service", "/etc/systemd/system/chronyd.service");
        link(
            d.path(),
            "/lib/systemd/system/chrony.service",
            "/etc/systemd/system/multi-user.target.wants/chrony.service",
        );
        let h = offline(d.path());
        let idx = UnitIndex::load(&h);
        let s = idx.status(&h, "chrony.service");
        assert!(s.is_enabled(), "{s:?}");
        assert_eq!(
            s.enabled_by,
            ["/etc/systemd/system/multi-user.target.wants/chrony.service -> /lib/systemd/system/chrony.service"]
        );
        assert!(s.names.contains(&"chronyd.service".to_string()));
        // Asking by the alias finds the real unit.
        let s = idx.status(&h, "chronyd.service");
        assert_eq!(s.canonical, "chrony.service");
        assert!(s.is_enabled(), "{s:?}");
    }

    #[test]
    fn alias_only_in_install_section() {
        let d = root_with(&[("/usr/lib/systemd/system/ntpsec.service", "[Install]\nAlias=ntp.service ntpd.service\n")]);
        link(
            d.path(),
            "/usr/lib/systemd/system/ntpsec.service",
            "/etc/systemd/system/multi-user.target.wants/ntpd.service",
        );
        let h = offline(d.path());
        assert!(UnitIndex::load(&h).status(&h, "ntpsec.service").is_enabled());
    }

    #[test]
    fn masked_static_and_disabled() {
        let d = root_with(&[
            ("/lib/systemd/system/auditd.service", "[Unit]\n"),
            ("/lib/systemd/system/systemd-journald.service", "[Unit]\n"),
            ("/lib/systemd/system/rsyslog.service", "[Unit]\n"),
            ("/etc/systemd/system/empty.service", ""),
        ]);
        link(d.path(), "/dev/null", "/etc/systemd/system/auditd.service");
        link(d.path(), "../auditd.service", "/etc/systemd/system/multi-user.target.wants/auditd.service");
        link(
            d.path(),
            "../systemd-journald.service",
            "/lib/systemd/system/sysinit.target.wants/systemd-journald.service",
        );
        let h = offline(d.path());
        let idx = UnitIndex::load(&h);
        let s = idx.status(&h, "auditd.service");
        assert_eq!(s.masked_by.as_deref(), Some("/etc/systemd/system/auditd.service"));
        assert!(!s.is_enabled());
        assert!(s.describe().contains("masked"));
        assert!(idx.status(&h, "systemd-journald.service").is_enabled(), "static vendor wants count");
        let s = idx.status(&h, "rsyslog.service");
        assert!(!s.is_enabled());
        assert!(s.describe().contains("not enabled"));
        assert!(idx.status(&h, "empty.service").masked_by.is_some());
        let s = idx.status(&h, "nope.service");
        assert!(s.file.is_none() && !s.is_enabled());
    }

    #[test]
    fn dangling_wants_link_is_not_enabled() {
        let d = root_with(&[]);
        link(d.path(), "/lib/systemd/system/gone.service", "/etc/systemd/system/multi-user.target.wants/gone.service");
        let h = offline(d.path());
        let s = UnitIndex::load(&h).status(&h, "gone.service");
        assert!(!s.enabled_by.is_empty() && !s.is_enabled());
    }

    #[test]
    fn ini_sections_continuations_and_bad_lines() {
        let c = parse_ini(
            "/u",
            "# c\n[Mount]\nWhat=tmpfs\nOptions=mode=1777,\\\n  nosuid\nbroken\n[Bad\n; x\nType = tmpfs\n",
        );
        assert_eq!(c.value("Mount", "Options").unwrap().value, "mode=1777, nosuid");
        assert_eq!(c.value("Mount", "Options").unwrap().source, "/u:4");
        assert_eq!(c.value("Mount", "Type").unwrap().value, "tmpfs");
        assert_eq!(c.bad_lines, ["/u:6", "/u:7"]);
        let c = parse_ini("/u", "[J]\nStorage=\n");
        assert!(c.get("J", "Storage").is_some() && c.value("J", "Storage").is_none());
    }

    #[test]
    fn conf_with_dropins_precedence() {
        let d = root_with(&[
            ("/usr/lib/systemd/journald.conf", "[Journal]\nStorage=volatile\n"),
            ("/etc/systemd/journald.conf", "[Journal]\nStorage=auto\n"),
            ("/usr/lib/systemd/journald.conf.d/10-a.conf", "[Journal]\nStorage=none\n"),
            ("/etc/systemd/journald.conf.d/10-a.conf", "[Journal]\nStorage=persistent\n"),
            ("/usr/lib/systemd/journald.conf.d/05-b.conf", "[Journal]\nStorage=volatile\nCompress=no\n"),
        ]);
        let h = offline(d.path());
        let dirs: Vec<String> =
            ["/etc/systemd/journald.conf.d", "/usr/lib/systemd/journald.conf.d"].map(String::from).into();
        let c = load_conf(&h, &["/etc/systemd/journald.conf", "/usr/lib/systemd/journald.conf"], &dirs);
        assert_eq!(c.value("Journal", "Storage").unwrap().source, "/etc/systemd/journald.conf.d/10-a.conf:2");
        assert_eq!(c.value("Journal", "Compress").unwrap().value, "no");
        assert_eq!(c.files.len(), 3, "{:?}", c.files);
    }

    #[test]
    fn mount_unit_names() {
        assert_eq!(mount_unit_name("/tmp"), "tmp.mount");
        assert_eq!(mount_unit_name("/var/tmp/"), "var-tmp.mount");
        assert_eq!(mount_unit_name("/dev/shm"), "dev-shm.mount");
        assert_eq!(mount_unit_name("/"), "-.mount");
        assert_eq!(mount_unit_name("/a-b/.c"), "a\\x2db-.c.mount");
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_ini("/f", &s);
            let _ = mount_unit_name(&s);
        }
    }
}
