//! Configuration directories and their precedence: which `*.conf` fragments
//! of a set of `conf.d`-style directories apply, in which order, and which
//! do not apply and why.
//!
//! Every fact that merges fragments from several directories asks this
//! module: sysctl.d ([`super::sysctl`]), modprobe.d
//! ([`super::kernel_modules`]), systemd drop-ins (unit `NAME.d/` directories
//! and `journald.conf.d`-style directories, [`super::systemd_units`] and
//! [`super::kubelet::unit`]) and the kubelet's `--config-dir`
//! ([`super::kubelet::config`]). It only decides the list; reading and
//! parsing the files stays with each consumer, which knows its size limit
//! and syntax, and turns an unreadable file into uncertainty.
//!
//! The rule, as sysctl.d(5) ("CONFIGURATION DIRECTORIES AND PRECEDENCE"),
//! systemd.unit(5) (drop-ins) and modprobe.d(5) state it:
//! - the files of all directories are merged into one list, ordered
//!   lexically by file name whatever their directory;
//! - a file in a more important directory replaces (overrides) the files of
//!   the same name in less important ones;
//! - a symlink to `/dev/null` masks the name altogether;
//! - only names with the consumer's suffix (`.conf`) count.
//!
//! Real consumers differ on a few points, and [`ConfDirs`] makes each of
//! them an explicit option instead of a silent variant:
//! - an empty file: systemd-sysctl, systemd's unit drop-ins, libkmod and
//!   the kubelet list it and read nothing from it (the kubelet then refuses
//!   it), while other systemd listers (modules-load.d, udev rules,
//!   networkd: `CONF_FILES_FILTER_MASKED_BY_EMPTY`) count it as a mask
//!   ([`EmptyFile`]). The difference is only in what is recorded: an empty
//!   fragment sets nothing either way;
//! - a link to `/dev/null`: the kubelet has no masking at all; it reads the
//!   link, gets an empty file and refuses to start, so the link must reach
//!   the consumer's reader, which fails the same way ([`NullLink`]);
//! - a missing directory is an empty one for systemd and libkmod, but a
//!   `--config-dir` that does not exist stops the kubelet ([`MissingDir`]).
//!
//! Where the agent knowingly departs from a consumer (hidden files, the
//! `.alias` suffix of older libkmod, the kubelet's recursive walk), the
//! consumer's module says so.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use crate::audit::host::{FileKind, Host, HostError};

/// How many fragments one directory may hold before it is refused. Real
/// directories hold a few dozen; one with thousands is broken or hostile,
/// and reading each (up to a consumer's per-file limit) would stall the run.
/// [`Host::read_dir`] has its own, larger bound on all entries.
pub const DEFAULT_MAX_FILES: usize = 1024;

/// What an empty regular file means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyFile {
    /// It applies and contributes nothing (systemd-sysctl, unit drop-ins,
    /// libkmod; the kubelet, which then refuses it).
    Contributes,
    /// It masks its name like a link to `/dev/null` (systemd's
    /// modules-load.d, udev rules and networkd listers).
    Masks,
}

/// What a symlink to `/dev/null` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullLink {
    /// It masks its name (systemd, libkmod). Recognised by the link's
    /// target, because an offline root has no `/dev/null` to stat.
    Masks,
    /// It is a file like any other and is handed to the consumer, whose
    /// read fails (the kubelet, which has no masking).
    IsAFile,
}

/// What a configuration directory that does not exist means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingDir {
    /// Nothing to read (every systemd and libkmod directory is optional).
    NoFiles,
    /// A problem (the kubelet's `--config-dir` must exist).
    Error,
}

/// A set of configuration directories and the precedence rule over them.
#[derive(Debug, Clone)]
pub struct ConfDirs {
    /// Most important first.
    dirs: Vec<String>,
    suffix: &'static str,
    empty_file: EmptyFile,
    null_link: NullLink,
    missing_dir: MissingDir,
    max_files: usize,
}

impl ConfDirs {
    /// The directories `dirs`, most important first, holding fragments whose
    /// names end with `suffix`, under systemd's rule for drop-ins: a link to
    /// `/dev/null` masks, an empty file contributes nothing, a missing
    /// directory has no files, at most [`DEFAULT_MAX_FILES`] per directory.
    pub fn new<I>(dirs: I, suffix: &'static str) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        ConfDirs {
            dirs: dirs.into_iter().map(Into::into).collect(),
            suffix,
            empty_file: EmptyFile::Contributes,
            null_link: NullLink::Masks,
            missing_dir: MissingDir::NoFiles,
            max_files: DEFAULT_MAX_FILES,
        }
    }

    pub fn empty_file(mut self, rule: EmptyFile) -> Self {
        self.empty_file = rule;
        self
    }

    pub fn null_link(mut self, rule: NullLink) -> Self {
        self.null_link = rule;
        self
    }

    pub fn missing_dir(mut self, rule: MissingDir) -> Self {
        self.missing_dir = rule;
        self
    }

    /// At most `limit` fragments per directory; a directory with more is a
    /// problem and contributes nothing.
    pub fn max_files(mut self, limit: usize) -> Self {
        self.max_files = limit;
        self
    }

    /// Apply the rule to the audited system.
    pub fn resolve(&self, host: &Host) -> ConfSet {
        let mut set = ConfSet::default();
        // Name -> path of the most important entry of that name. A BTreeMap
        // gives the lexical (byte) order of names that systemd and libkmod
        // sort by, whatever the directory.
        let mut winners: BTreeMap<String, String> = BTreeMap::new();
        for dir in &self.dirs {
            let entries = match host.read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.is_not_found() && self.missing_dir == MissingDir::NoFiles => continue,
                Err(e) => {
                    set.problems.push(e);
                    continue;
                }
            };
            let fragments: Vec<_> = entries.into_iter().filter(|e| e.name.ends_with(self.suffix)).collect();
            if fragments.len() > self.max_files {
                // Skipping the whole directory rather than a truncated part
                // of it: a partial list would mask and order arbitrarily,
                // and the problem already makes the consumer's answer
                // uncertain.
                set.problems.push(HostError::TooManyEntries { path: dir.clone(), limit: self.max_files });
                continue;
            }
            for e in fragments {
                match winners.entry(e.name) {
                    Entry::Occupied(winner) => {
                        set.overridden.push(Overridden { path: e.path, by: winner.get().clone() })
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(e.path);
                    }
                }
            }
        }
        for (name, path) in winners {
            match self.mask_kind(host, &path) {
                Some(kind) => set.masks.push(Mask { path, kind }),
                None => set.files.push(ConfFile { name, path }),
            }
        }
        set
    }

    /// Whether the winning entry at `path` masks its name. An entry whose
    /// kind cannot be established (dangling link, loop) is not a mask: it
    /// stays in the list so that the consumer's read reports it, instead of
    /// it silently disappearing.
    fn mask_kind(&self, host: &Host, path: &str) -> Option<MaskKind> {
        if self.null_link == NullLink::Masks && is_null_link(host, path) {
            return Some(MaskKind::NullLink);
        }
        let empty = || host.metadata(path).is_ok_and(|m| m.kind == FileKind::File && m.size == 0);
        (self.empty_file == EmptyFile::Masks && empty()).then_some(MaskKind::EmptyFile)
    }
}

/// Whether `path` is a symlink to `/dev/null`, the way systemd and libkmod
/// users disable a vendor file. Judged by the link's target: in an offline
/// root `/dev/null` does not exist (or is not the device), so following the
/// link would say "missing" instead of "masked". Only the exact target
/// `/dev/null` counts, as it always has here: a relative link to it reaches
/// the consumer's reader, whose failure makes the answer uncertain rather
/// than wrong.
pub fn is_null_link(host: &Host, path: &str) -> bool {
    host.read_link(path).is_ok_and(|target| target == "/dev/null")
}

/// One fragment that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfFile {
    /// The file name, which orders the fragments.
    pub name: String,
    /// Its path in the audited system.
    pub path: String,
}

/// Why a mask entry masks its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    NullLink,
    EmptyFile,
}

/// The most important entry of a name, which masks it: no file of that name
/// applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub path: String,
    pub kind: MaskKind,
}

/// An entry replaced by the entry of the same name in a more important
/// directory (which may itself be a [`Mask`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overridden {
    pub path: String,
    pub by: String,
}

/// The outcome of [`ConfDirs::resolve`].
#[derive(Debug, Default)]
pub struct ConfSet {
    /// The fragments that apply, in application order (by name).
    pub files: Vec<ConfFile>,
    /// Names masked by their most important entry, by name.
    pub masks: Vec<Mask>,
    /// Entries replaced by a same-name entry in a more important directory,
    /// in directory order, then by name.
    pub overridden: Vec<Overridden>,
    /// Directories that exist but could not be listed, or hold more than the
    /// limit (and missing ones under [`MissingDir::Error`]): the list may
    /// then be incomplete and what the consumer concludes uncertain.
    pub problems: Vec<HostError>,
}

impl ConfSet {
    /// The paths of the fragments that apply, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|f| f.path.as_str())
    }

    /// Every entry that does not apply: the overridden ones, then the masks.
    /// This is the order the agent's facts have always listed them in.
    pub fn not_applied(&self) -> impl Iterator<Item = &str> {
        self.overridden.iter().map(|o| o.path.as_str()).chain(self.masks.iter().map(|m| m.path.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{offline, root_with, write};
    use std::os::unix::fs::symlink;
    use std::path::Path;

    const DIRS: [&str; 3] = ["/etc/x.d", "/run/x.d", "/usr/lib/x.d"];

    fn link(root: &Path, target: &str, at: &str) {
        let p = root.join(at.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    fn names(set: &ConfSet) -> Vec<&str> {
        set.files.iter().map(|f| f.name.as_str()).collect()
    }

    fn paths(set: &ConfSet) -> Vec<&str> {
        set.paths().collect()
    }

    #[test]
    fn files_are_ordered_by_name_whatever_their_directory() {
        let d = root_with(&[
            ("/usr/lib/x.d/10-vendor.conf", "a"),
            ("/etc/x.d/50-admin.conf", "b"),
            ("/run/x.d/20-runtime.conf", "c"),
            ("/usr/lib/x.d/90-late.conf", "d"),
            ("/etc/x.d/05-early.conf", "e"),
        ]);
        let set = ConfDirs::new(DIRS, ".conf").resolve(&offline(d.path()));
        assert_eq!(
            paths(&set),
            [
                "/etc/x.d/05-early.conf",
                "/usr/lib/x.d/10-vendor.conf",
                "/run/x.d/20-runtime.conf",
                "/etc/x.d/50-admin.conf",
                "/usr/lib/x.d/90-late.conf",
            ]
        );
        assert_eq!(set.files[0], ConfFile { name: "05-early.conf".into(), path: "/etc/x.d/05-early.conf".into() });
        assert!(set.masks.is_empty() && set.overridden.is_empty() && set.problems.is_empty());
    }

    #[test]
    fn order_is_by_bytes_not_by_number_or_locale() {
        let d = root_with(&[
            ("/etc/x.d/9-a.conf", "x"),
            ("/etc/x.d/10-a.conf", "x"),
            ("/usr/lib/x.d/B.conf", "x"),
            ("/usr/lib/x.d/a.conf", "x"),
        ]);
        let set = ConfDirs::new(DIRS, ".conf").resolve(&offline(d.path()));
        assert_eq!(names(&set), ["10-a.conf", "9-a.conf", "B.conf", "a.conf"]);
    }

    #[test]
    fn the_same_name_in_a_more_important_directory_overrides() {
        let d = root_with(&[
            ("/usr/lib/x.d/50-default.conf", "vendor"),
            ("/run/x.d/50-default.conf", "runtime"),
            ("/etc/x.d/50-default.conf", "admin"),
            ("/usr/lib/x.d/60-other.conf", "vendor"),
            ("/run/x.d/60-other.conf", "runtime"),
        ]);
        let set = ConfDirs::new(DIRS, ".conf").resolve(&offline(d.path()));
        assert_eq!(paths(&set), ["/etc/x.d/50-default.conf", "/run/x.d/60-other.conf"]);
        // Directory order, then name order; each names its winner.
        assert_eq!(
            set.overridden,
            [
                Overridden { path: "/run/x.d/50-default.conf".into(), by: "/etc/x.d/50-default.conf".into() },
                Overridden { path: "/usr/lib/x.d/50-default.conf".into(), by: "/etc/x.d/50-default.conf".into() },
                Overridden { path: "/usr/lib/x.d/60-other.conf".into(), by: "/run/x.d/60-other.conf".into() },
            ]
        );
        assert!(set.masks.is_empty());
    }

    #[test]
    fn a_link_to_dev_null_masks_the_name() {
        let d = root_with(&[("/usr/lib/x.d/50-default.conf", "vendor"), ("/usr/lib/x.d/60-kept.conf", "vendor")]);
        link(d.path(), "/dev/null", "/etc/x.d/50-default.conf");
        // Masking a name nobody else ships is a mask too.
        link(d.path(), "/dev/null", "/usr/lib/x.d/70-alone.conf");
        // A link elsewhere is an ordinary fragment.
        link(d.path(), "/usr/lib/x.d/60-kept.conf", "/run/x.d/80-linked.conf");
        let set = ConfDirs::new(DIRS, ".conf").resolve(&offline(d.path()));
        assert_eq!(paths(&set), ["/usr/lib/x.d/60-kept.conf", "/run/x.d/80-linked.conf"]);
        assert_eq!(
            set.masks,
            [
                Mask { path: "/etc/x.d/50-default.conf".into(), kind: MaskKind::NullLink },
                Mask { path: "/usr/lib/x.d/70-alone.conf".into(), kind: MaskKind::NullLink },
            ]
        );
        assert_eq!(
            set.overridden,
            [Overridden { path: "/usr/lib/x.d/50-default.conf".into(), by: "/etc/x.d/50-default.conf".into() }]
        );
        assert_eq!(
            set.not_applied().collect::<Vec<_>>(),
            ["/usr/lib/x.d/50-default.conf", "/etc/x.d/50-default.conf", "/usr/lib/x.d/70-alone.conf"]
        );
    }

    #[test]
    fn a_dev_null_link_is_a_file_for_a_consumer_without_masking() {
        let d = root_with(&[("/etc/x.d/10-a.conf", "a")]);
        link(d.path(), "/dev/null", "/etc/x.d/20-null.conf");
        let host = offline(d.path());
        let set = ConfDirs::new(["/etc/x.d"], ".conf").null_link(NullLink::IsAFile).resolve(&host);
        assert_eq!(paths(&set), ["/etc/x.d/10-a.conf", "/etc/x.d/20-null.conf"]);
        assert!(set.masks.is_empty());
        // ...and the consumer's read of it fails, as the kubelet's does.
        assert!(host.read_text("/etc/x.d/20-null.conf").is_err());
    }

    #[test]
    fn an_empty_file_contributes_or_masks_as_the_consumer_says() {
        let d = root_with(&[
            ("/usr/lib/x.d/50-default.conf", "vendor"),
            ("/etc/x.d/50-default.conf", ""),
            ("/etc/x.d/60-full.conf", "x"),
        ]);
        // Reached through a link, an empty file is still empty (systemd stats
        // through links).
        write(d.path(), "/usr/lib/x.d/target", b"");
        link(d.path(), "/usr/lib/x.d/target", "/run/x.d/70-linked-empty.conf");
        let host = offline(d.path());

        let contributes = ConfDirs::new(DIRS, ".conf").resolve(&host);
        assert_eq!(
            paths(&contributes),
            ["/etc/x.d/50-default.conf", "/etc/x.d/60-full.conf", "/run/x.d/70-linked-empty.conf"]
        );
        assert!(contributes.masks.is_empty());

        let masks = ConfDirs::new(DIRS, ".conf").empty_file(EmptyFile::Masks).resolve(&host);
        assert_eq!(paths(&masks), ["/etc/x.d/60-full.conf"]);
        assert_eq!(
            masks.masks,
            [
                Mask { path: "/etc/x.d/50-default.conf".into(), kind: MaskKind::EmptyFile },
                Mask { path: "/run/x.d/70-linked-empty.conf".into(), kind: MaskKind::EmptyFile },
            ]
        );
        // Either way the vendor file does not apply: the name is taken.
        for set in [&contributes, &masks] {
            assert_eq!(set.overridden[0].path, "/usr/lib/x.d/50-default.conf");
        }
    }

    #[test]
    fn only_names_with_the_suffix_count() {
        let d = root_with(&[
            ("/etc/x.d/10-a.conf", "x"),
            ("/etc/x.d/README", "x"),
            ("/etc/x.d/20-b.conf.dpkg-old", "x"),
            ("/etc/x.d/30-c.conf~", "x"),
            ("/etc/x.d/40-d.CONF", "x"),
            ("/etc/x.d/50-e.rules", "x"),
            // A non-fragment never masks a fragment of a similar name.
            ("/usr/lib/x.d/20-b.conf", "vendor"),
        ]);
        let host = offline(d.path());
        let set = ConfDirs::new(DIRS, ".conf").resolve(&host);
        assert_eq!(paths(&set), ["/etc/x.d/10-a.conf", "/usr/lib/x.d/20-b.conf"]);
        assert!(set.overridden.is_empty() && set.masks.is_empty());
        let rules = ConfDirs::new(DIRS, ".rules").resolve(&host);
        assert_eq!(paths(&rules), ["/etc/x.d/50-e.rules"]);
    }

    #[test]
    fn missing_directories_have_no_files_unless_the_consumer_requires_them() {
        let d = root_with(&[("/usr/lib/x.d/10-a.conf", "x")]);
        let host = offline(d.path());
        let set = ConfDirs::new(DIRS, ".conf").resolve(&host);
        assert_eq!(paths(&set), ["/usr/lib/x.d/10-a.conf"]);
        assert!(set.problems.is_empty());

        let set = ConfDirs::new(["/etc/missing.d"], ".conf").missing_dir(MissingDir::Error).resolve(&host);
        assert!(set.files.is_empty());
        assert_eq!(set.problems.len(), 1);
        assert!(set.problems[0].is_not_found());
        assert!(set.problems[0].to_string().contains("/etc/missing.d"), "{}", set.problems[0]);
    }

    #[test]
    fn unreadable_directories_are_problems_and_the_others_still_count() {
        // Tests run as root, which reads a mode-000 directory: use a regular
        // file and a symlink loop where directories are expected.
        let d = root_with(&[("/etc/x.d", "not a directory"), ("/usr/lib/x.d/10-a.conf", "x")]);
        link(d.path(), "/run/x.d", "/run/x.d");
        let set = ConfDirs::new(DIRS, ".conf").resolve(&offline(d.path()));
        assert_eq!(paths(&set), ["/usr/lib/x.d/10-a.conf"]);
        assert_eq!(set.problems.len(), 2, "{:?}", set.problems);
        assert!(set.problems.iter().any(|e| e.to_string().starts_with("/etc/x.d:")));
        assert!(set.problems.iter().any(|e| matches!(e, HostError::SymlinkLoop { path } if path == "/run/x.d")));
    }

    #[test]
    fn unreadable_entries_are_handed_to_the_consumer_not_dropped() {
        let d = root_with(&[("/usr/lib/x.d/10-dangling.conf", "vendor")]);
        // A dangling link, a loop and a directory named like a fragment: the
        // rule cannot tell whether they mask, so they apply and the
        // consumer's read names them.
        link(d.path(), "/nowhere", "/etc/x.d/10-dangling.conf");
        link(d.path(), "/etc/x.d/20-loop.conf", "/etc/x.d/20-loop.conf");
        std::fs::create_dir_all(d.path().join("etc/x.d/30-dir.conf")).unwrap();
        let host = offline(d.path());
        for set in [
            ConfDirs::new(DIRS, ".conf").resolve(&host),
            ConfDirs::new(DIRS, ".conf").empty_file(EmptyFile::Masks).resolve(&host),
        ] {
            assert_eq!(paths(&set), ["/etc/x.d/10-dangling.conf", "/etc/x.d/20-loop.conf", "/etc/x.d/30-dir.conf"]);
            // The dangling link still takes its name from the vendor file.
            assert_eq!(set.overridden[0].path, "/usr/lib/x.d/10-dangling.conf");
            for path in set.paths() {
                assert!(host.read_text(path).is_err(), "{path}");
            }
        }
    }

    #[test]
    fn a_directory_with_too_many_fragments_is_refused_whole() {
        let d = root_with(&[
            ("/etc/x.d/10-a.conf", "x"),
            ("/etc/x.d/20-b.conf", "x"),
            ("/etc/x.d/30-c.conf", "x"),
            // Other names do not count towards the limit.
            ("/usr/lib/x.d/README", "x"),
            ("/usr/lib/x.d/notes.txt", "x"),
            ("/usr/lib/x.d/10-a.conf", "vendor"),
            ("/usr/lib/x.d/40-d.conf", "vendor"),
        ]);
        let set = ConfDirs::new(DIRS, ".conf").max_files(2).resolve(&offline(d.path()));
        assert_eq!(paths(&set), ["/usr/lib/x.d/10-a.conf", "/usr/lib/x.d/40-d.conf"]);
        assert_eq!(set.problems.len(), 1);
        assert!(
            matches!(&set.problems[0], HostError::TooManyEntries { path, limit: 2 } if path == "/etc/x.d"),
            "{:?}",
            set.problems
        );
        let set = ConfDirs::new(DIRS, ".conf").max_files(3).resolve(&offline(d.path()));
        assert!(set.problems.is_empty());
        assert_eq!(set.files.len(), 4);
    }

    /// What a generated layout puts at one name in one directory.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Slot {
        Absent,
        Text,
        Empty,
        NullLink,
    }

    fn slot() -> impl proptest::strategy::Strategy<Value = Slot> {
        proptest::prop_oneof![
            proptest::strategy::Just(Slot::Absent),
            proptest::strategy::Just(Slot::Text),
            proptest::strategy::Just(Slot::Empty),
            proptest::strategy::Just(Slot::NullLink),
        ]
    }

    const NAMES: [&str; 4] = ["10-a.conf", "20-b.conf", "30-c.conf", "40-d.conf"];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the layout: every fragment is accounted for exactly once,
        /// the most important entry of each name decides, and what applies
        /// is sorted by name.
        #[test]
        fn every_layout_follows_the_rule(
            layout in proptest::collection::vec(proptest::collection::vec(slot(), NAMES.len()), DIRS.len()),
            empty_masks in proptest::bool::ANY,
        ) {
            let d = root_with(&[]);
            for (dir, row) in DIRS.iter().zip(&layout) {
                std::fs::create_dir_all(d.path().join(dir.trim_start_matches('/'))).unwrap();
                for (name, e) in NAMES.iter().zip(row) {
                    let at = format!("{dir}/{name}");
                    match e {
                        Slot::Absent => {}
                        Slot::Text => write(d.path(), &at, b"x = 1\n"),
                        Slot::Empty => write(d.path(), &at, b""),
                        Slot::NullLink => link(d.path(), "/dev/null", &at),
                    }
                }
            }
            let rule = if empty_masks { EmptyFile::Masks } else { EmptyFile::Contributes };
            let set = ConfDirs::new(DIRS, ".conf").empty_file(rule).resolve(&offline(d.path()));
            proptest::prop_assert!(set.problems.is_empty());
            let present = layout.iter().flatten().filter(|e| **e != Slot::Absent).count();
            proptest::prop_assert_eq!(set.files.len() + set.masks.len() + set.overridden.len(), present);
            proptest::prop_assert!(set.files.windows(2).all(|w| w[0].name < w[1].name));
            for (i, name) in NAMES.iter().enumerate() {
                let winner = DIRS.iter().zip(&layout).find(|(_, row)| row[i] != Slot::Absent);
                let Some((dir, row)) = winner else {
                    proptest::prop_assert!(set.paths().all(|p| !p.ends_with(name)));
                    continue;
                };
                let path = format!("{dir}/{name}");
                let masks = row[i] == Slot::NullLink || (empty_masks && row[i] == Slot::Empty);
                proptest::prop_assert_eq!(set.paths().any(|p| p == path), !masks);
                proptest::prop_assert_eq!(set.masks.iter().any(|m| m.path == path), masks);
                for o in set.overridden.iter().filter(|o| o.path.ends_with(name)) {
                    proptest::prop_assert_eq!(&o.by, &path);
                }
            }
        }
    }
}
