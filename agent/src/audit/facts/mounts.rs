//! Mounts: what is mounted where, with which options.
//!
//! On a live host the kernel's mount table of PID 1, `/proc/1/mountinfo`, is
//! the truth: it is the node's mount namespace even when the agent runs in a
//! private one (the packaged unit's `ProtectSystem=`, `PrivateTmp=` and
//! `PrivateDevices=` give the service its own `/tmp`, `/var/tmp` and
//! `/dev/shm`, so `/proc/self/mountinfo` would describe the sandbox). Reading
//! PID 1's table needs ptrace-read access to it (root with CAP_SYS_PTRACE);
//! without that (an unprivileged user) the agent's own table is used, and the
//! evidence names it. On
//! an offline root nothing is mounted, so the boot-time configuration
//! decides: `/etc/fstab` first (systemd gives fstab precedence over a mount
//! unit for the same path), then an *enabled* mount unit such as `tmp.mount`
//! (`Options=` of its `[Mount]` section, drop-ins included). Every answer
//! names its source.

use std::collections::BTreeSet;

use super::systemd_units::{SystemdUnits, UNIT_DIRS, load_conf, mount_unit_name, unit_dropin_dirs};
use super::{FactError, Facts, Gather};
use crate::audit::host::Host;
use crate::audit::model::Evidence;

/// The node's mount table (PID 1's mount namespace).
pub const MOUNTINFO: &str = "/proc/1/mountinfo";
/// This process's mount table: the fallback when PID 1's cannot be read.
pub const SELF_MOUNTINFO: &str = "/proc/self/mountinfo";
pub const FSTAB: &str = "/etc/fstab";

/// Both files are small; a node with thousands of container mounts still
/// stays far below this.
const MOUNT_FILE_LIMIT: u64 = 16 * 1024 * 1024;

/// One mount, live or configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: String,
    pub fs_type: String,
    /// The mounted device or pseudo-source (`tmpfs`, `/dev/sda1`, `UUID=…`).
    pub device: String,
    /// Per-mount options (mountinfo), or fstab `mntops`, or unit `Options=`.
    pub options: Vec<String>,
    /// File-system specific options (mountinfo's super options).
    pub super_options: Vec<String>,
    /// `path:line` or unit file.
    pub origin: String,
}

/// The mount flags the checks ask about.
pub const FLAG_NAMES: [&str; 3] = ["nodev", "nosuid", "noexec"];

impl MountEntry {
    /// The effective `nodev`/`nosuid`/`noexec` flags, applying options in
    /// order as mount(8) does: `defaults` clears them, `dev`/`suid`/`exec`
    /// clear one, `user`/`users` set all three, `owner`/`group` set
    /// nodev and nosuid.
    pub fn flags(&self) -> BTreeSet<&'static str> {
        let mut set = BTreeSet::new();
        for opt in self.options.iter().chain(&self.super_options) {
            match opt.as_str() {
                "defaults" => set.clear(),
                "nodev" | "nosuid" | "noexec" => {
                    if let Some(f) = FLAG_NAMES.iter().find(|f| **f == opt.as_str()) {
                        set.insert(*f);
                    }
                }
                "dev" => {
                    set.remove("nodev");
                }
                "suid" => {
                    set.remove("nosuid");
                }
                "exec" => {
                    set.remove("noexec");
                }
                "user" | "users" => set.extend(FLAG_NAMES),
                "owner" | "group" => set.extend(["nodev", "nosuid"]),
                _ => {}
            }
        }
        set
    }

    pub fn has(&self, opt: &str) -> bool {
        self.options.iter().any(|o| o == opt)
    }

    pub fn describe(&self) -> String {
        let mut opts = self.options.join(",");
        if !self.super_options.is_empty() {
            opts.push_str(&format!(" (super: {})", self.super_options.join(",")));
        }
        format!("{} on {} type {} ({opts})", self.device, self.mount_point, self.fs_type)
    }
}

/// A parsed mount table with the lines that could not be parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    pub source: String,
    pub entries: Vec<MountEntry>,
    pub problems: Vec<String>,
}

/// Undo the octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash) that the kernel and fstab use inside fields.
pub fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split_opts(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_string).collect()
}

/// Parse `/proc/self/mountinfo` (proc(5)): `id parent maj:min root
/// mount-point options [optional fields…] - fstype source super-options`.
pub fn parse_mountinfo(path: &str, text: &str) -> MountTable {
    let mut t = MountTable { source: path.to_string(), ..MountTable::default() };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("{path}:{}", i + 1);
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().skip(6).position(|f| *f == "-").map(|p| p + 6);
        let parsed = sep.and_then(|sep| {
            let mount_point = fields.get(4)?;
            let options = fields.get(5)?;
            let fs_type = fields.get(sep + 1)?;
            let device = fields.get(sep + 2)?;
            let super_opts = fields.get(sep + 3).copied().unwrap_or("");
            (mount_point.starts_with('/') && !fs_type.is_empty()).then(|| MountEntry {
                mount_point: unescape_octal(mount_point),
                fs_type: unescape_octal(fs_type),
                device: unescape_octal(device),
                options: split_opts(options),
                super_options: split_opts(super_opts),
                origin: origin.clone(),
            })
        });
        match parsed {
            Some(e) => t.entries.push(e),
            None => t.problems.push(format!("{origin}: not a mountinfo line")),
        }
    }
    t
}

/// Parse fstab(5): `spec file vfstype [mntops [freq [passno]]]`, `#`
/// comments; a missing `mntops` means `defaults`.
pub fn parse_fstab(path: &str, text: &str) -> MountTable {
    let mut t = MountTable { source: path.to_string(), ..MountTable::default() };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let origin = format!("{path}:{}", i + 1);
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [spec, file, vfstype, rest @ ..] if rest.len() <= 3 => t.entries.push(MountEntry {
                mount_point: normalize_mount_point(&unescape_octal(file)),
                fs_type: unescape_octal(vfstype),
                device: unescape_octal(spec),
                options: split_opts(rest.first().copied().unwrap_or("defaults")),
                super_options: Vec::new(),
                origin,
            }),
            _ => t.problems.push(format!("{origin}: not \"spec file vfstype [mntops [freq [passno]]]\"")),
        }
    }
    t
}

/// `/tmp/` and `/tmp` are the same mount point.
fn normalize_mount_point(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() && p.starts_with('/') { "/".to_string() } else { t.to_string() }
}

/// The gathered mount table: live mountinfo, or fstab offline.
#[derive(Debug, Clone)]
pub struct MountFacts {
    pub live: bool,
    /// mountinfo when live, fstab when offline (an absent fstab is empty).
    pub table: Result<MountTable, FactError>,
    /// Offline only: whether `/etc/fstab` exists.
    pub fstab_present: bool,
}

pub fn load(host: &Host) -> MountFacts {
    if host.is_live() {
        let table = match host.read_text_limited(MOUNTINFO, MOUNT_FILE_LIMIT) {
            Ok(t) => Ok(parse_mountinfo(MOUNTINFO, &t)),
            Err(first) => match host.read_text_limited(SELF_MOUNTINFO, MOUNT_FILE_LIMIT) {
                Ok(t) => Ok(parse_mountinfo(SELF_MOUNTINFO, &t)),
                // Both unreadable: PID 1's error is the one that matters.
                Err(_) => Err(first),
            },
        };
        return MountFacts { live: true, table: table.map_err(Into::into), fstab_present: false };
    }
    match host.read_text_limited(FSTAB, MOUNT_FILE_LIMIT) {
        Ok(t) => MountFacts { live: false, table: Ok(parse_fstab(FSTAB, &t)), fstab_present: true },
        Err(e) if e.is_not_found() => MountFacts {
            live: false,
            table: Ok(MountTable { source: FSTAB.to_string(), ..MountTable::default() }),
            fstab_present: false,
        },
        Err(e) => MountFacts { live: false, table: Err(e.into()), fstab_present: false },
    }
}

impl Gather for MountFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        load(facts.host())
    }
}

/// Where a path's mount came from, and what else was looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountAnswer {
    /// The mount at exactly this path, if any.
    pub entry: Option<MountEntry>,
    /// What was consulted, for evidence (always at least one item).
    pub consulted: Vec<Evidence>,
}

/// The mount at `path`: live, the top-most mount there; offline, the first
/// auto-mounted fstab entry, else the enabled systemd mount unit.
pub fn mount_at(facts: &Facts<'_>, path: &str) -> Result<MountAnswer, String> {
    let mf = facts.get::<MountFacts>();
    let table = mf.table.as_ref().map_err(|e| e.to_string())?;
    let uncertain = |what: &str| -> Result<MountAnswer, String> {
        Err(format!("no mount found at {path} in {what}, but it has unparsable lines: {}", table.problems.join("; ")))
    };
    if mf.live {
        return match table.entries.iter().rev().find(|e| e.mount_point == path) {
            Some(e) => {
                Ok(MountAnswer { consulted: vec![Evidence::new(&e.origin, e.describe())], entry: Some(e.clone()) })
            }
            None if !table.problems.is_empty() => uncertain(MOUNTINFO),
            None => Ok(MountAnswer {
                entry: None,
                consulted: vec![Evidence::new(MOUNTINFO, format!("nothing is mounted at {path}"))],
            }),
        };
    }
    boot_mount_in(facts, table, mf.fstab_present, path)
}

/// The mount that boot configuration makes at `path` (an auto-mounted
/// `/etc/fstab` entry, else an enabled systemd mount unit), whatever is
/// mounted now. On a live host it reads `/etc/fstab` itself.
pub fn boot_mount_at(facts: &Facts<'_>, path: &str) -> Result<MountAnswer, String> {
    let mf = facts.get::<MountFacts>();
    if !mf.live {
        let table = mf.table.as_ref().map_err(|e| e.to_string())?;
        return boot_mount_in(facts, table, mf.fstab_present, path);
    }
    let (table, present) = match facts.host().read_text_limited(FSTAB, MOUNT_FILE_LIMIT) {
        Ok(t) => (parse_fstab(FSTAB, &t), true),
        Err(e) if e.is_not_found() => (MountTable { source: FSTAB.to_string(), ..MountTable::default() }, false),
        Err(e) => return Err(e.to_string()),
    };
    boot_mount_in(facts, &table, present, path)
}

fn boot_mount_in(
    facts: &Facts<'_>,
    table: &MountTable,
    fstab_present: bool,
    path: &str,
) -> Result<MountAnswer, String> {
    let uncertain = |what: &str| -> Result<MountAnswer, String> {
        Err(format!("no mount found at {path} in {what}, but it has unparsable lines: {}", table.problems.join("; ")))
    };
    let mut consulted = Vec::new();
    let in_fstab: Vec<&MountEntry> = table.entries.iter().filter(|e| e.mount_point == path).collect();
    if let Some(e) = in_fstab.iter().find(|e| !e.has("noauto")) {
        return Ok(MountAnswer { consulted: vec![Evidence::new(&e.origin, e.describe())], entry: Some((*e).clone()) });
    }
    for e in &in_fstab {
        consulted.push(Evidence::new(&e.origin, format!("{} has noauto: not mounted at boot", e.describe())));
    }
    if !table.problems.is_empty() {
        return uncertain(FSTAB);
    }
    if in_fstab.is_empty() {
        let detail = if fstab_present { format!("no entry for {path}") } else { "absent".to_string() };
        consulted.push(Evidence::new(FSTAB, detail));
    }
    let unit = mount_unit_name(path);
    let units = facts.get::<SystemdUnits>();
    let status = units.0.status(facts.host(), &unit);
    consulted.push(status.evidence());
    if status.is_enabled() {
        let host = facts.host();
        let main: Vec<String> = units.0.top(&unit).map(|e| e.path.clone()).into_iter().collect();
        let main: Vec<&str> = main.iter().map(String::as_str).collect();
        let conf = load_conf(host, &main, &unit_dropin_dirs(&unit));
        if let Some(why) = conf.unreadable_summary() {
            return Err(format!("{unit}: {why}"));
        }
        let get = |k: &str| conf.value("Mount", k).map(|e| e.value.clone()).unwrap_or_default();
        let where_ = conf.value("Mount", "Where").map(|e| normalize_mount_point(&e.value));
        if where_.as_deref().is_some_and(|w| w != path) {
            return Err(format!("{unit}: Where= does not match {path}"));
        }
        let origin =
            conf.value("Mount", "Options").map(|e| e.source.clone()).or_else(|| main.first().map(|m| m.to_string()));
        let entry = MountEntry {
            mount_point: path.to_string(),
            fs_type: get("Type"),
            device: get("What"),
            options: split_opts(&get("Options")),
            super_options: Vec::new(),
            origin: origin.unwrap_or_else(|| unit.clone()),
        };
        consulted.push(Evidence::new(&entry.origin, entry.describe()));
        return Ok(MountAnswer { entry: Some(entry), consulted });
    }
    // Debian ships tmp.mount outside the unit path; say so, it explains why
    // the file exists but /tmp is not a separate mount.
    let shipped = format!("/usr/share/systemd/{unit}");
    if status.file.is_none() && facts.host().exists(&shipped) {
        consulted.push(Evidence::new(
            &shipped,
            format!("shipped but not installed in {}: copy or link it there and enable it", UNIT_DIRS[0]),
        ));
    }
    Ok(MountAnswer { entry: None, consulted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{live_like, offline, root_with};
    use std::os::unix::fs::symlink;

    const MOUNTINFO_TEXT: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
24 22 0:21 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw,inode64
30 22 0:25 / /tmp rw,nosuid,nodev,noexec,relatime shared:9 master:2 - tmpfs tmpfs rw,size=1g
31 22 0:26 / /mnt/with\\040space rw - ext4 /dev/sdb1 rw
32 30 0:27 / /tmp rw,nosuid - tmpfs tmpfs rw
";

    fn entry(opts: &str) -> MountEntry {
        MountEntry {
            mount_point: "/x".into(),
            fs_type: "tmpfs".into(),
            device: "tmpfs".into(),
            options: split_opts(opts),
            super_options: vec![],
            origin: "o".into(),
        }
    }

    #[test]
    fn parses_mountinfo() {
        let t = parse_mountinfo(MOUNTINFO, MOUNTINFO_TEXT);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert_eq!(t.entries.len(), 5);
        assert_eq!(t.entries[2].mount_point, "/tmp");
        assert_eq!(t.entries[2].super_options, ["rw", "size=1g"]);
        assert_eq!(t.entries[2].flags().len(), 3);
        assert_eq!(t.entries[3].mount_point, "/mnt/with space");
        let t = parse_mountinfo("/m", "garbage\n1 2 3 4 5\n");
        assert_eq!(t.problems.len(), 2);
    }

    #[test]
    fn parses_fstab_and_option_order() {
        let t = parse_fstab(
            FSTAB,
            "# c\nUUID=1 / ext4 errors=remount-ro 0 1\ntmpfs /tmp/ tmpfs defaults,nodev,nosuid 0 0\n/dev/x /my\\040dir ext4\nbad\na b c d e f g\n",
        );
        assert_eq!(t.entries.len(), 3);
        assert_eq!(t.entries[1].mount_point, "/tmp");
        assert_eq!(t.entries[1].origin, "/etc/fstab:3");
        assert_eq!(t.entries[2].mount_point, "/my dir");
        assert_eq!(t.entries[2].options, ["defaults"]);
        assert_eq!(t.problems.len(), 2);
        assert_eq!(entry("nodev,nosuid,noexec,exec").flags(), ["nodev", "nosuid"].into());
        assert_eq!(entry("noexec,defaults").flags(), BTreeSet::new());
        assert_eq!(entry("users,exec").flags(), ["nodev", "nosuid"].into());
        assert_eq!(unescape_octal("a\\134b\\9\\0"), "a\\b\\9\\0");
    }

    #[test]
    fn live_lookup_takes_the_top_mount() {
        let d = root_with(&[("/proc/1/mountinfo", MOUNTINFO_TEXT)]);
        let h = live_like(d.path());
        let f = Facts::new(&h);
        let a = mount_at(&f, "/tmp").unwrap();
        assert_eq!(a.entry.unwrap().origin, "/proc/1/mountinfo:5");
        assert!(mount_at(&f, "/var/tmp").unwrap().entry.is_none());
    }

    #[test]
    fn live_prefers_pid_1_and_falls_back_to_its_own_table() {
        // A sandboxed agent: its own namespace has a private /tmp without
        // noexec, the node's (PID 1's) has the real one.
        let own = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 8:1 /tmp/systemd-private-x/tmp /tmp rw,nosuid,nodev - ext4 /dev/sda1 rw\n";
        let d = root_with(&[("/proc/1/mountinfo", MOUNTINFO_TEXT), ("/proc/self/mountinfo", own)]);
        let h = live_like(d.path());
        let e = mount_at(&Facts::new(&h), "/tmp").unwrap().entry.unwrap();
        assert_eq!(e.origin, "/proc/1/mountinfo:5");
        // PID 1's table unreadable (an unprivileged user): the agent's own, named as such.
        std::fs::remove_file(d.path().join("proc/1/mountinfo")).unwrap();
        let e = mount_at(&Facts::new(&h), "/tmp").unwrap().entry.unwrap();
        assert_eq!(e.origin, "/proc/self/mountinfo:2");
    }

    #[test]
    fn offline_fstab_then_enabled_unit() {
        let d = root_with(&[
            ("/etc/fstab", "tmpfs /var/tmp tmpfs nodev 0 0\ntmpfs /srv tmpfs noauto 0 0\n"),
            (
                "/usr/lib/systemd/system/tmp.mount",
                "[Mount]\nWhat=tmpfs\nWhere=/tmp\nType=tmpfs\nOptions=mode=1777,nosuid,nodev\n",
            ),
            ("/etc/systemd/system/tmp.mount.d/override.conf", "[Mount]\nOptions=mode=1777,nosuid,nodev,noexec\n"),
            ("/usr/lib/systemd/system/srv.mount", "[Mount]\nWhere=/srv\n"),
        ]);
        let h = offline(d.path());
        let f = Facts::new(&h);
        assert_eq!(mount_at(&f, "/var/tmp").unwrap().entry.unwrap().origin, "/etc/fstab:1");
        // tmp.mount exists but is not enabled.
        let a = mount_at(&f, "/tmp").unwrap();
        assert!(a.entry.is_none());
        assert!(a.consulted.iter().any(|e| e.detail.contains("not enabled")), "{:?}", a.consulted);
        // noauto is not mounted at boot.
        let a = mount_at(&f, "/srv").unwrap();
        assert!(a.entry.is_none() && a.consulted[0].detail.contains("noauto"));

        let p = d.path().join("usr/lib/systemd/system/local-fs.target.wants");
        std::fs::create_dir_all(&p).unwrap();
        symlink("../tmp.mount", p.join("tmp.mount")).unwrap();
        let f = Facts::new(&h);
        let e = mount_at(&f, "/tmp").unwrap().entry.unwrap();
        assert_eq!(e.origin, "/etc/systemd/system/tmp.mount.d/override.conf:2");
        assert!(e.flags().contains("noexec"));
    }

    #[test]
    fn debian_shipped_tmp_mount_is_explained_and_errors_propagate() {
        let d = root_with(&[("/usr/share/systemd/tmp.mount", "[Mount]\n"), ("/etc/fstab", "broken\n")]);
        let h = offline(d.path());
        assert!(mount_at(&Facts::new(&h), "/tmp").unwrap_err().contains("unparsable"));
        std::fs::write(d.path().join("etc/fstab"), "").unwrap();
        let a = mount_at(&Facts::new(&h), "/tmp").unwrap();
        assert!(a.consulted.iter().any(|e| e.source == "/usr/share/systemd/tmp.mount"));
        let live = live_like(d.path());
        assert!(mount_at(&Facts::new(&live), "/tmp").unwrap_err().contains("mountinfo"));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_mountinfo("/m", &s);
            let _ = parse_fstab("/f", &s);
            let _ = unescape_octal(&s);
        }

        #[test]
        fn mountinfo_shaped_never_panics(s in "([0-9]{1,2} [0-9] [0-9:]{3} / /[a-z\\\\0-7]{0,6} [a-z,]{0,12}( shared:1)?( -)? [a-z]{0,5} [a-z]{0,4} [a-z,=0-9]{0,8}\n){0,6}") {
            let _ = parse_mountinfo("/m", &s);
        }
    }
}
