//! Installed packages, from the dpkg status database (Debian family) or from
//! `rpm -qa` (RPM family).
//!
//! [`PackageDb`] is deliberately generic: the service checks only ask "is
//! this package present", but the patch-level checks will read versions,
//! architectures and source packages from the same database.
//!
//! dpkg presence, precisely: the `Status:` field is `want flag state`
//! (`install ok installed`, `hold ok installed`, `deinstall ok
//! config-files`, …). Only the third word, the package *state*, says what is
//! on disk; the first word is what the administrator asked for (a held
//! package is just as installed). States `not-installed` and `config-files`
//! have no program files on disk and are not kept. `installed`,
//! `triggers-pending` and `triggers-awaited` are fully configured packages
//! (triggers are deferred work of *other* packages) and count as installed.
//! `unpacked`, `half-configured` and `half-installed` have their files on
//! disk but are not configured: they are kept with their state, are *not*
//! [`InstalledPackage::is_installed`], but are [`InstalledPackage::files_present`]
//! — an "X must be absent" check must not pass while X's binaries are there.

pub mod apt;
pub mod apt_lists;
pub mod apt_preferences;
pub mod debversion;
pub mod first_seen;
pub mod rpm;
pub mod updates;

use std::collections::BTreeMap;

use super::{FactError, Facts, Gather};
use crate::audit::host::Host;
use crate::audit::host::runner::display_command;

/// The dpkg status database.
pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// A large Debian host has a status file of a few MiB; 256 MiB is far beyond
/// any real one and still bounded.
const DPKG_STATUS_LIMIT: u64 = 256 * 1024 * 1024;

/// Where an RPM database lives (classic and `/usr/lib/sysimage` layouts).
const RPM_DB_DIRS: [&str; 2] = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"];

/// The rpm query: name, full EVR with the numeric epoch, architecture.
pub const RPM_QUERY_ARGS: [&str; 3] = ["-qa", "--queryformat", "%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n"];

/// Which package manager the database belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageFormat {
    Dpkg,
    Rpm,
}

/// The dpkg package state (third word of `Status:`); RPM packages are
/// always [`PackageState::Installed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageState {
    Installed,
    TriggersPending,
    TriggersAwaited,
    HalfConfigured,
    Unpacked,
    HalfInstalled,
}

impl PackageState {
    /// Parse a dpkg state word; `None` for states without files on disk
    /// (`not-installed`, `config-files`) and for unknown words.
    fn from_dpkg(word: &str) -> Option<Option<PackageState>> {
        Some(match word {
            "installed" => Some(PackageState::Installed),
            "triggers-pending" => Some(PackageState::TriggersPending),
            "triggers-awaited" => Some(PackageState::TriggersAwaited),
            "half-configured" => Some(PackageState::HalfConfigured),
            "unpacked" => Some(PackageState::Unpacked),
            "half-installed" => Some(PackageState::HalfInstalled),
            "not-installed" | "config-files" => None,
            _ => return None,
        })
    }
}

/// One package whose files are on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The raw status (`install ok installed`; `installed` for RPM).
    pub status: String,
    pub state: PackageState,
    /// The source package (dpkg `Source:` without the version in
    /// parentheses; `None` when it equals the binary package name).
    pub source: Option<String>,
    /// Where it was read: `path:line` of the stanza, or the rpm command.
    pub origin: String,
}

impl InstalledPackage {
    /// Fully installed and configured.
    pub fn is_installed(&self) -> bool {
        matches!(self.state, PackageState::Installed | PackageState::TriggersPending | PackageState::TriggersAwaited)
    }

    /// The package's files are on disk, configured or not. True for every
    /// kept entry (states without files are dropped while parsing); kept as
    /// a method so callers say which question they ask.
    pub fn files_present(&self) -> bool {
        true
    }

    /// `Package: x`, version and status, for evidence.
    pub fn describe(&self) -> String {
        format!("{} {} ({}) status \"{}\"", self.name, self.version, self.architecture, self.status)
    }
}

/// The installed-package database of the audited system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageDb {
    pub format: PackageFormat,
    /// The file or command it was read from.
    pub source: String,
    pub packages: Vec<InstalledPackage>,
    /// Malformed stanzas or lines (`path:line: what`). A package might hide
    /// in one, so "not found" is uncertain while this is not empty.
    pub problems: Vec<String>,
}

impl PackageDb {
    /// Every entry with this name (several architectures may be installed).
    pub fn find<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a InstalledPackage> + 'a {
        self.packages.iter().filter(move |p| p.name == name)
    }

    /// The first fully installed entry with this name.
    pub fn installed(&self, name: &str) -> Option<&InstalledPackage> {
        self.packages.iter().find(|p| p.name == name && p.is_installed())
    }

    /// The first entry with this name whose files are on disk.
    pub fn present(&self, name: &str) -> Option<&InstalledPackage> {
        self.packages.iter().find(|p| p.name == name && p.files_present())
    }

    /// The problems as one sentence, when there are any.
    pub fn problem_summary(&self) -> Option<String> {
        if self.problems.is_empty() {
            return None;
        }
        let shown: Vec<&str> = self.problems.iter().take(3).map(String::as_str).collect();
        let more = self.problems.len().saturating_sub(shown.len());
        let tail = if more > 0 { format!(" (and {more} more)") } else { String::new() };
        Some(format!("{} is partly malformed: {}{tail}", self.source, shown.join("; ")))
    }
}

/// Parse a dpkg status file (deb822 stanzas separated by blank lines,
/// continuation lines starting with a space or tab).
pub fn parse_dpkg_status(path: &str, text: &str) -> PackageDb {
    let mut db =
        PackageDb { format: PackageFormat::Dpkg, source: path.to_string(), packages: Vec::new(), problems: Vec::new() };
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut stanza_line = 0usize;
    let mut last_key: Option<String> = None;
    let mut bad_stanza = false;
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        if raw.trim().is_empty() {
            finish_stanza(&mut db, path, stanza_line, &fields, bad_stanza);
            fields.clear();
            last_key = None;
            bad_stanza = false;
            continue;
        }
        if fields.is_empty() && last_key.is_none() && !bad_stanza {
            stanza_line = lineno;
        }
        if raw.starts_with([' ', '\t']) {
            // Continuation of a multi-line field (Description, Conffiles…):
            // only the first line of the fields we keep matters.
            if last_key.is_none() {
                db.problems.push(format!("{path}:{lineno}: continuation line outside a field"));
                bad_stanza = true;
            }
            continue;
        }
        match raw.split_once(':') {
            Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                let key = k.to_string();
                fields.insert(key.clone(), v.trim().to_string());
                last_key = Some(key);
            }
            _ => {
                db.problems.push(format!("{path}:{lineno}: not a \"Field: value\" line"));
                bad_stanza = true;
            }
        }
    }
    finish_stanza(&mut db, path, stanza_line, &fields, bad_stanza);
    db
}

fn finish_stanza(db: &mut PackageDb, path: &str, line: usize, fields: &BTreeMap<String, String>, bad: bool) {
    if fields.is_empty() {
        return;
    }
    let origin = format!("{path}:{line}");
    let name = fields.get("Package").filter(|n| !n.is_empty());
    let status = fields.get("Status");
    let (Some(name), Some(status)) = (name, status) else {
        if !bad {
            db.problems.push(format!("{origin}: stanza without Package or Status"));
        }
        return;
    };
    let words: Vec<&str> = status.split_whitespace().collect();
    let [_want, _flag, state_word] = words.as_slice() else {
        db.problems.push(format!("{origin}: package {name}: Status \"{status}\" is not \"want flag state\""));
        return;
    };
    let Some(state) = PackageState::from_dpkg(state_word) else {
        db.problems.push(format!("{origin}: package {name}: unknown package state \"{state_word}\""));
        return;
    };
    let Some(state) = state else { return };
    let source = fields
        .get("Source")
        .and_then(|s| s.split_whitespace().next())
        .filter(|s| *s != name.as_str())
        .map(str::to_string);
    db.packages.push(InstalledPackage {
        name: name.clone(),
        version: fields.get("Version").cloned().unwrap_or_default(),
        architecture: fields.get("Architecture").cloned().unwrap_or_default(),
        status: status.clone(),
        state,
        source,
        origin,
    });
}

/// Parse the output of [`RPM_QUERY_ARGS`]: `name\tepoch:version-release\tarch`.
pub fn parse_rpm_query(command: &str, text: &str) -> PackageDb {
    let mut db = PackageDb {
        format: PackageFormat::Rpm,
        source: command.to_string(),
        packages: Vec::new(),
        problems: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split('\t').collect();
        match parts.as_slice() {
            [name, evr, arch] if !name.trim().is_empty() && !evr.trim().is_empty() => {
                db.packages.push(InstalledPackage {
                    name: name.trim().to_string(),
                    version: evr.trim().to_string(),
                    architecture: arch.trim().to_string(),
                    status: "installed".to_string(),
                    state: PackageState::Installed,
                    source: None,
                    origin: command.to_string(),
                });
            }
            _ => db.problems.push(format!("{command}: output line {}: not \"name<TAB>evr<TAB>arch\"", i + 1)),
        }
    }
    db
}

/// Read the package database: dpkg first, rpm when there is no dpkg status.
pub fn load(host: &Host) -> Result<PackageDb, FactError> {
    match host.read_bytes_limited(DPKG_STATUS, DPKG_STATUS_LIMIT) {
        Ok(bytes) => {
            let text = std::str::from_utf8(&bytes).map_err(|e| {
                FactError::new(format!("{DPKG_STATUS}: not valid UTF-8 text (at byte {})", e.valid_up_to()))
            })?;
            return Ok(parse_dpkg_status(DPKG_STATUS, text));
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let shown = display_command("rpm", &RPM_QUERY_ARGS);
    match host.run("rpm", &RPM_QUERY_ARGS) {
        Ok(out) if out.success() => Ok(parse_rpm_query(&shown, out.stdout_text(&shown)?)),
        Ok(out) => Err(FactError::new(format!(
            "{shown}: exited with status {}: {}",
            out.status.map_or_else(|| "signal".to_string(), |s| s.to_string()),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Err(e) if e.is_unavailable() => {
            if let Some(dir) = RPM_DB_DIRS.iter().find(|d| host.exists(d)) {
                Err(FactError::new(format!("an RPM database exists at {dir}, but it cannot be queried: {e}")))
            } else {
                Err(FactError::new("no package database found (dpkg status or rpm)"))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The gathered package database, or why it could not be read.
#[derive(Debug, Clone)]
pub struct PackageFacts(pub Result<PackageDb, FactError>);

impl Gather for PackageFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        PackageFacts(load(facts.host()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::host::{CommandError, CommandOutput, CommandRunner};
    use crate::testutil::{offline, root_with, write};

    const STATUS: &str = "\
Package: openssh-server
Status: install ok installed
Priority: optional
Architecture: amd64
Source: openssh (1:9.2p1-2)
Version: 1:9.2p1-2+deb12u3
Description: secure shell (SSH) server
 multi-line description
 .
 more

Package: telnetd
Status: deinstall ok config-files
Architecture: amd64
Version: 0.17-44

Package: chrony
Status: hold ok installed
Architecture: amd64
Version: 4.3-2

Package: libfoo
Status: install ok half-configured
Architecture: amd64
Version: 1

Package: bash
Status: install ok triggers-pending
Architecture: amd64
Source: bash
Version: 5.2.15-2+b7
";

    #[test]
    fn parses_dpkg_states_precisely() {
        let db = parse_dpkg_status(DPKG_STATUS, STATUS);
        assert!(db.problems.is_empty(), "{:?}", db.problems);
        let ssh = db.installed("openssh-server").unwrap();
        assert_eq!(ssh.version, "1:9.2p1-2+deb12u3");
        assert_eq!(ssh.source.as_deref(), Some("openssh"));
        assert_eq!(ssh.origin, "/var/lib/dpkg/status:1");
        // config-files: nothing on disk, not kept.
        assert!(db.present("telnetd").is_none());
        // hold is a want, not a state: installed.
        assert!(db.installed("chrony").is_some());
        // half-configured: files present, not installed.
        assert!(db.installed("libfoo").is_none());
        assert!(db.present("libfoo").is_some());
        let bash = db.installed("bash").unwrap();
        assert_eq!(bash.source, None, "Source equal to the package name is dropped");
        assert_eq!(bash.origin, "/var/lib/dpkg/status:27");
    }

    #[test]
    fn malformed_stanzas_are_problems() {
        let db = parse_dpkg_status(
            "/s",
            " orphan continuation\nPackage: a\nStatus: install ok installed\n\nPackage: b\nStatus: install ok\n\nno colon here\nPackage: c\nStatus: install ok installed\n\nVersion: 1\n\nPackage: d\nStatus: install ok weird\n",
        );
        // A stray line is recorded but does not hide an otherwise valid stanza.
        let names: Vec<&str> = db.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(db.problems.len(), 5, "{:?}", db.problems);
        assert!(db.problem_summary().unwrap().contains("/s:"));
    }

    #[test]
    fn parses_rpm_output() {
        let db = parse_rpm_query("rpm -qa", "audit\t0:3.1-1.el9\tx86_64\ngpg-pubkey\t0:1-2\t(none)\nbroken line\n");
        assert_eq!(db.packages.len(), 2);
        assert_eq!(db.installed("audit").unwrap().version, "0:3.1-1.el9");
        assert_eq!(db.problems.len(), 1);
    }

    #[test]
    fn load_prefers_dpkg_and_checks_utf8() {
        let d = root_with(&[(DPKG_STATUS, STATUS)]);
        assert_eq!(load(&offline(d.path())).unwrap().format, PackageFormat::Dpkg);
        write(d.path(), DPKG_STATUS, b"Package: x\nDescription: \xff\n");
        let e = load(&offline(d.path())).unwrap_err();
        assert!(e.0.contains("not valid UTF-8"), "{e}");
    }

    #[test]
    fn no_database_is_an_error() {
        let d = root_with(&[]);
        assert_eq!(load(&offline(d.path())).unwrap_err().0, "no package database found (dpkg status or rpm)");
        std::fs::create_dir_all(d.path().join("var/lib/rpm")).unwrap();
        assert!(load(&offline(d.path())).unwrap_err().0.contains("/var/lib/rpm"));
    }

    #[derive(Debug)]
    struct FakeRpm(Option<i32>, &'static str);
    impl CommandRunner for FakeRpm {
        fn run(&self, program: &str, args: &[&str], _t: std::time::Duration) -> Result<CommandOutput, CommandError> {
            assert_eq!(program, "rpm");
            assert_eq!(args, RPM_QUERY_ARGS);
            Ok(CommandOutput {
                status: self.0,
                stdout: self.1.as_bytes().to_vec(),
                stderr: b"boom".to_vec(),
                truncated: false,
            })
        }
    }

    #[test]
    fn rpm_is_used_without_dpkg() {
        let d = root_with(&[]);
        let h = Host::with_runner(d.path(), true, Box::new(FakeRpm(Some(0), "audit\t0:3.1-1\tx86_64\n")));
        let db = load(&h).unwrap();
        assert_eq!(db.format, PackageFormat::Rpm);
        assert!(db.installed("audit").is_some());
        let h = Host::with_runner(d.path(), true, Box::new(FakeRpm(Some(1), "")));
        assert!(load(&h).unwrap_err().0.contains("exited with status 1: boom"));
    }

    #[test]
    fn rpm_from_recorded_fixture_offline() {
        let d = root_with(&[]);
        let key = crate::audit::host::RecordedRunner::key("rpm", &RPM_QUERY_ARGS);
        write(d.path(), &format!("/.commands/{key}"), b"chrony\t0:4.5-1.el9\tx86_64\n");
        let db = load(&offline(d.path())).unwrap();
        assert_eq!(db.format, PackageFormat::Rpm);
        assert_eq!(db.installed("chrony").unwrap().architecture, "x86_64");
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_dpkg_status("/f", &s);
            let _ = parse_rpm_query("rpm", &s);
        }

        #[test]
        fn stanza_parser_never_panics(s in "(Package: [a-z]{1,3}\n|Status: [a-z ]{0,30}\n| cont\n|\n|[A-Za-z:]{0,5}\n){0,20}") {
            let _ = parse_dpkg_status("/f", &s);
        }
    }
}
