//! Logging and crash-dump configuration: journald.conf and coredump.conf
//! (with their drop-ins, see [`super::systemd_units::load_conf`]) and the
//! pam_limits `core` limit from `/etc/security/limits.conf` and
//! `/etc/security/limits.d/*.conf`.

use super::systemd_units::{IniConf, load_conf};
use super::{FactError, Facts, Gather};
use crate::audit::host::Host;

/// Where a systemd daemon's main configuration file may live, most
/// important first (only the first existing one is read).
fn main_candidates(name: &str) -> [String; 4] {
    [
        format!("/etc/systemd/{name}"),
        format!("/run/systemd/{name}"),
        format!("/usr/local/lib/systemd/{name}"),
        format!("/usr/lib/systemd/{name}"),
    ]
}

/// The drop-in directories of a systemd daemon's configuration file.
fn dropin_dirs(name: &str) -> Vec<String> {
    main_candidates(name).iter().map(|m| format!("{m}.d")).collect()
}

/// Load `/etc/systemd/<name>` and its drop-ins.
pub fn load_daemon_conf(host: &Host, name: &str) -> IniConf {
    let main = main_candidates(name);
    let main: Vec<&str> = main.iter().map(String::as_str).collect();
    load_conf(host, &main, &dropin_dirs(name))
}

/// journald's configuration and whether `/var/log/journal` exists (which
/// makes the default `Storage=auto` persistent).
#[derive(Debug, Clone)]
pub struct JournaldFacts {
    pub conf: IniConf,
    pub var_log_journal: bool,
}

impl Gather for JournaldFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        let host = facts.host();
        JournaldFacts {
            conf: load_daemon_conf(host, "journald.conf"),
            var_log_journal: host
                .metadata("/var/log/journal")
                .is_ok_and(|m| m.kind == crate::audit::host::FileKind::Dir),
        }
    }
}

/// systemd-coredump's configuration and whether it is installed at all.
#[derive(Debug, Clone)]
pub struct CoredumpFacts {
    pub conf: IniConf,
    /// The systemd-coredump helper binary, when present.
    pub helper: Option<String>,
}

impl Gather for CoredumpFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        let host = facts.host();
        let helper = ["/usr/lib/systemd/systemd-coredump", "/lib/systemd/systemd-coredump"]
            .into_iter()
            .find(|p| host.exists(p))
            .map(str::to_string);
        CoredumpFacts { conf: load_daemon_conf(host, "coredump.conf"), helper }
    }
}

pub const LIMITS_CONF: &str = "/etc/security/limits.conf";
pub const LIMITS_DIR: &str = "/etc/security/limits.d";
const LIMITS_FILE_LIMIT: u64 = 1024 * 1024;

/// One limits.conf line: `<domain> <type> <item> <value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub domain: String,
    /// `soft`, `hard` or `-` (both).
    pub kind: String,
    pub item: String,
    pub value: String,
    pub source: String,
}

impl Limit {
    pub fn sets_hard(&self) -> bool {
        self.kind == "hard" || self.kind == "-"
    }
}

/// Parse a limits.conf(5) file. `#` starts a comment anywhere on the line,
/// as pam_limits does; lines without exactly four fields are bad.
pub fn parse_limits(path: &str, text: &str) -> (Vec<Limit>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let source = format!("{path}:{}", i + 1);
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            [domain, kind, item, value] => out.push(Limit {
                domain: domain.to_string(),
                kind: kind.to_string(),
                item: item.to_string(),
                value: value.to_string(),
                source,
            }),
            _ => bad.push(source),
        }
    }
    (out, bad)
}

/// Every limits line in pam_limits reading order: limits.conf, then
/// limits.d/*.conf in lexical order.
#[derive(Debug, Clone, Default)]
pub struct LimitsFacts {
    pub limits: Vec<Limit>,
    pub files: Vec<String>,
    pub bad_lines: Vec<String>,
    pub unreadable: Vec<FactError>,
}

impl LimitsFacts {
    /// The effective hard `core` limit of the `*` domain: the last line
    /// setting it wins.
    pub fn wildcard_hard_core(&self) -> Option<&Limit> {
        self.limits.iter().rev().find(|l| l.domain == "*" && l.item == "core" && l.sets_hard())
    }
}

pub fn load_limits(host: &Host) -> LimitsFacts {
    let mut f = LimitsFacts::default();
    let mut paths = vec![LIMITS_CONF.to_string()];
    match host.read_dir_optional(LIMITS_DIR) {
        Ok(list) => paths.extend(list.into_iter().filter(|e| e.name.ends_with(".conf")).map(|e| e.path)),
        Err(e) => f.unreadable.push(e.into()),
    }
    for path in paths {
        match host.read_text_limited(&path, LIMITS_FILE_LIMIT) {
            Ok(text) => {
                let (l, b) = parse_limits(&path, &text);
                f.limits.extend(l);
                f.bad_lines.extend(b);
                f.files.push(path);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => f.unreadable.push(e.into()),
        }
    }
    f
}

impl Gather for LimitsFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        load_limits(facts.host())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{offline, root_with};

    #[test]
    fn limits_order_comments_and_bad_lines() {
        let d = root_with(&[
            (LIMITS_CONF, "# c\n*  hard  core  0 # inline\n@adm soft nofile 10\nbroken line\n"),
            ("/etc/security/limits.d/90-x.conf", "*\t-\tcore\tunlimited\n"),
            ("/etc/security/limits.d/10-y.conf", "* soft core 0\n"),
            ("/etc/security/limits.d/README", "* hard core 5\n"),
        ]);
        let f = load_limits(&offline(d.path()));
        assert_eq!(f.files.len(), 3);
        assert_eq!(f.bad_lines, ["/etc/security/limits.conf:4"]);
        let l = f.wildcard_hard_core().unwrap();
        assert_eq!(l.value, "unlimited");
        assert_eq!(l.source, "/etc/security/limits.d/90-x.conf:1");
    }

    #[test]
    fn daemon_conf_uses_vendor_file_and_dropins() {
        let d = root_with(&[
            ("/usr/lib/systemd/coredump.conf", "[Coredump]\nStorage=external\n"),
            ("/run/systemd/coredump.conf.d/x.conf", "[Coredump]\nStorage=none\n"),
        ]);
        let c = load_daemon_conf(&offline(d.path()), "coredump.conf");
        assert_eq!(c.value("Coredump", "Storage").unwrap().value, "none");
        assert_eq!(c.files.len(), 2);
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_limits("/f", &s);
        }
    }
}
