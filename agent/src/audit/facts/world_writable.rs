//! A bounded walk of the local file systems for world-writable regular
//! files and for world-writable directories without the sticky bit.
//!
//! This is the one fact module that touches the filesystem with `std::fs`
//! directly. Resolving each of the hundreds of thousands of entries under
//! `/usr` and `/var` through [`Host`] (a chroot-style resolution per
//! component) would make the walk quadratic in path depth and far too slow.
//! The confinement guarantees are kept anyway:
//! - only the walk ROOTS are resolved, with [`Host::real_path_of`], so they
//!   stay inside the audited root;
//! - below a root, entries are examined with `symlink_metadata` and only real
//!   directories are descended into: symlinks are never followed, so the walk
//!   cannot leave the root's tree;
//! - a root that is itself a symlink (`/bin -> usr/bin` on merged-/usr
//!   systems) is skipped: its target is walked under its own root;
//! - on a live host the walk stays on the device of each root (no descent
//!   into other mounts, as `find -xdev`); the checks add every local mount
//!   as a root of its own (see [`local_mount_roots`]), and `/proc` and
//!   `/sys` are always skipped;
//! - the number of entries examined is capped; a capped walk is reported as
//!   such, never as clean.
//!
//! Walks are cached per parameter set so the two checks sharing the same
//! roots, excludes and cap (the default) walk the disk once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::rc::Rc;

use super::{Facts, Gather};
use crate::audit::host::{FileKind, Host};

/// Kernel interfaces, never walked whatever the roots say.
pub const ALWAYS_SKIPPED: [&str; 2] = ["/proc", "/sys"];

/// File system types CIS Debian 12 7.1.11 does not walk (network, removable
/// and firmware file systems), plus kernel pseudo file systems that hold no
/// regular files or directories anyone creates.
const NOT_WALKED_FS: [&str; 22] = [
    "nfs",
    "nfs4",
    "proc",
    "smb",
    "smb3",
    "cifs",
    "vfat",
    "iso9660",
    "efivarfs",
    "selinuxfs",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "binfmt_misc",
    "nsfs",
];

/// Mount points CIS Debian 12 7.1.11 does not walk: scratch space and
/// per-user runtime directories (`/tmp*`, `/var/tmp*`, `/run/user/*`).
fn mount_not_walked(mount_point: &str) -> bool {
    mount_point.starts_with("/tmp") || mount_point.starts_with("/var/tmp") || mount_point.starts_with("/run/user/")
}

/// The local mounts of a live host that a CIS 7.1.11 walk covers, as extra
/// roots (the walk of each stays on its own device). Offline there are no
/// mounts: the root itself is walked.
pub fn local_mount_roots(facts: &Facts<'_>) -> Result<Vec<String>, String> {
    if !facts.host().is_live() {
        return Ok(Vec::new());
    }
    let m = facts.get::<super::mounts::MountFacts>();
    let table = m.table.as_ref().map_err(|e| e.to_string())?;
    let mut roots: Vec<String> = table
        .entries
        .iter()
        .filter(|e| !NOT_WALKED_FS.contains(&e.fs_type.as_str()) && !e.fs_type.starts_with("fuse."))
        .filter(|e| !mount_not_walked(&e.mount_point))
        .map(|e| e.mount_point.clone())
        .collect();
    roots.sort();
    roots.dedup();
    Ok(roots)
}

/// At most this many paths of each kind are kept for the evidence.
pub const MAX_LISTED: usize = 50;

/// What to walk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalkParams {
    pub roots: Vec<String>,
    pub excludes: Vec<String>,
    pub max_entries: u64,
}

/// One finding: a path of the audited system and its permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritablePath {
    pub path: String,
    pub mode: u32,
}

/// The result of one walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkResult {
    /// Entries examined (directory entries, not counting the roots).
    pub entries: u64,
    /// True when the walk stopped at `max_entries`.
    pub capped: bool,
    /// Roots actually walked.
    pub walked_roots: Vec<String>,
    /// Roots not walked, with the reason (absent, symlink, excluded…).
    pub skipped_roots: Vec<(String, String)>,
    /// World-writable regular files: total and the first [`MAX_LISTED`].
    pub files_count: usize,
    pub files: Vec<WritablePath>,
    /// World-writable directories without the sticky bit.
    pub dirs_count: usize,
    pub dirs: Vec<WritablePath>,
    /// Directories or entries that could not be examined.
    pub unreadable: Vec<String>,
}

impl WalkResult {
    fn record_file(&mut self, path: String, mode: u32) {
        self.files_count += 1;
        if self.files.len() < MAX_LISTED {
            self.files.push(WritablePath { path, mode });
        }
    }

    fn record_dir(&mut self, path: String, mode: u32) {
        self.dirs_count += 1;
        if self.dirs.len() < MAX_LISTED {
            self.dirs.push(WritablePath { path, mode });
        }
    }

    fn note_unreadable(&mut self, what: String) {
        if self.unreadable.len() < MAX_LISTED {
            self.unreadable.push(what);
        }
    }

    fn classify(&mut self, path: &str, kind: FileKind, mode: u32) {
        let world_writable = mode & 0o002 != 0;
        match kind {
            FileKind::File if world_writable => self.record_file(path.to_string(), mode),
            FileKind::Dir if world_writable && mode & 0o1000 == 0 => self.record_dir(path.to_string(), mode),
            _ => {}
        }
    }
}

/// True when `path` matches an exclude: a path prefix (`/run/user`), or,
/// written `*/name`, any directory called `name` wherever it is (CIS
/// 7.1.11's `*/containerd/*`).
fn excluded(path: &str, pattern: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(tail) if tail.starts_with('/') => {
            let tail = tail.trim_end_matches('/');
            path.ends_with(tail) || path.contains(&format!("{tail}/"))
        }
        _ => is_under(path, pattern),
    }
}

/// True when `path` is `prefix` or below it.
fn is_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") }
}

/// Walk the roots. Never panics and never follows a symlink.
pub fn walk(host: &Host, params: &WalkParams) -> WalkResult {
    let mut res = WalkResult::default();
    let skipped = |path: &str| {
        ALWAYS_SKIPPED.iter().any(|s| is_under(path, s)) || params.excludes.iter().any(|e| excluded(path, e))
    };
    for root in &params.roots {
        if res.capped {
            break;
        }
        let root = if root.len() > 1 { root.trim_end_matches('/') } else { root.as_str() };
        if !root.starts_with('/') {
            res.skipped_roots.push((root.to_string(), "not an absolute path".into()));
            continue;
        }
        if skipped(root) {
            res.skipped_roots.push((root.to_string(), "excluded".into()));
            continue;
        }
        let meta = match host.symlink_metadata(root) {
            Ok(m) => m,
            Err(e) if e.is_not_found() => {
                res.skipped_roots.push((root.to_string(), "absent".into()));
                continue;
            }
            Err(e) => {
                res.note_unreadable(e.to_string());
                continue;
            }
        };
        match meta.kind {
            FileKind::Dir => {}
            FileKind::Symlink => {
                res.skipped_roots.push((root.to_string(), "symbolic link, not followed".into()));
                continue;
            }
            other => {
                res.classify(root, other, meta.mode);
                res.skipped_roots.push((root.to_string(), format!("a {}, not a directory", other.describe())));
                continue;
            }
        }
        let real = match host.real_path_of(root) {
            Ok(p) => p,
            Err(e) => {
                res.note_unreadable(e.to_string());
                continue;
            }
        };
        if res.walked_roots.iter().any(|w| w == root) {
            continue;
        }
        res.classify(root, FileKind::Dir, meta.mode);
        res.walked_roots.push(root.to_string());
        walk_tree(host.is_live(), meta.dev, real, root.to_string(), params.max_entries, &skipped, &mut res);
    }
    res
}

fn walk_tree(
    live: bool,
    root_dev: u64,
    real_root: PathBuf,
    root: String,
    max_entries: u64,
    skipped: &dyn Fn(&str) -> bool,
    res: &mut WalkResult,
) {
    let mut stack: Vec<(PathBuf, String)> = vec![(real_root, root)];
    while let Some((real_dir, dir)) = stack.pop() {
        let iter = match std::fs::read_dir(&real_dir) {
            Ok(it) => it,
            Err(e) => {
                res.note_unreadable(format!("{dir}: {e}"));
                continue;
            }
        };
        // Sorted so that findings are listed in a stable order. At most the
        // remaining budget (plus one, to detect the cap) is collected, so a
        // huge directory cannot exhaust memory; which entries of a capped
        // directory get examined then depends on readdir order, but a capped
        // walk is reported as incomplete anyway.
        let budget = usize::try_from(max_entries.saturating_sub(res.entries)).unwrap_or(usize::MAX);
        let mut names = Vec::new();
        for entry in iter {
            match entry {
                Ok(e) => names.push(e.file_name()),
                Err(e) => res.note_unreadable(format!("{dir}: {e}")),
            }
            if names.len() > budget {
                break;
            }
        }
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            if res.entries >= max_entries {
                res.capped = true;
                return;
            }
            res.entries += 1;
            let path = join(&dir, &name.to_string_lossy());
            if skipped(&path) {
                continue;
            }
            let real = real_dir.join(&name);
            let meta = match std::fs::symlink_metadata(&real) {
                Ok(m) => m,
                Err(e) => {
                    res.note_unreadable(format!("{path}: {e}"));
                    continue;
                }
            };
            let kind = FileKind::of(&meta);
            res.classify(&path, kind, meta.mode() & 0o7777);
            if kind == FileKind::Dir && !(live && meta.dev() != root_dev) {
                subdirs.push((real, path));
            }
        }
        // Reversed so that the stack pops them in name order.
        stack.extend(subdirs.into_iter().rev());
    }
}

/// The per-run cache of walks, keyed by parameters.
#[derive(Debug, Default)]
pub struct WorldWritableWalks {
    cache: RefCell<HashMap<WalkParams, Rc<WalkResult>>>,
}

impl WorldWritableWalks {
    /// The walk for `params`, done on first request.
    pub fn get(&self, host: &Host, params: &WalkParams) -> Rc<WalkResult> {
        if let Some(hit) = self.cache.borrow().get(params) {
            return hit.clone();
        }
        let result = Rc::new(walk(host, params));
        self.cache.borrow_mut().insert(params.clone(), result.clone());
        result
    }
}

impl Gather for WorldWritableWalks {
    fn gather(_facts: &Facts<'_>) -> Self {
        WorldWritableWalks::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{chmod, live_like, offline, root_with};
    use std::os::unix::fs::symlink;

    fn params(roots: &[&str], max: u64) -> WalkParams {
        WalkParams {
            roots: roots.iter().map(|s| s.to_string()).collect(),
            excludes: vec!["/var/tmp".into(), "/var/lib/docker".into()],
            max_entries: max,
        }
    }

    #[test]
    fn finds_world_writable_files_and_non_sticky_dirs() {
        let d = root_with(&[
            ("/etc/ok", ""),
            ("/etc/bad", ""),
            ("/var/open/x", ""),
            ("/var/sticky/y", ""),
            ("/var/tmp/ignored", ""),
            ("/var/lib/docker/ignored", ""),
            ("/usr/share/f", ""),
        ]);
        let r = d.path();
        chmod(r, "/etc/bad", 0o666);
        chmod(r, "/var/open", 0o777);
        chmod(r, "/var/sticky", 0o1777);
        chmod(r, "/var/tmp/ignored", 0o666);
        chmod(r, "/var/lib/docker/ignored", 0o666);
        // A symlink is 0777 by nature and points outside: neither reported nor followed.
        symlink("/etc/bad", r.join("usr/share/link")).unwrap();
        symlink("/", r.join("usr/share/rootlink")).unwrap();
        let res = walk(&offline(r), &params(&["/etc", "/usr", "/var", "/opt"], 1000));
        let files: Vec<&str> = res.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(files, ["/etc/bad"]);
        assert_eq!(res.files[0].mode, 0o666);
        let dirs: Vec<&str> = res.dirs.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(dirs, ["/var/open"]);
        assert!(!res.capped);
        assert_eq!(res.walked_roots, ["/etc", "/usr", "/var"]);
        assert!(res.skipped_roots.contains(&("/opt".to_string(), "absent".to_string())));
    }

    #[test]
    fn symlinked_roots_and_pseudo_filesystems_are_skipped() {
        let d = root_with(&[("/usr/bin/tool", ""), ("/proc/x", ""), ("/run/y", "")]);
        let r = d.path();
        chmod(r, "/usr/bin/tool", 0o777);
        chmod(r, "/proc/x", 0o777);
        symlink("usr/bin", r.join("bin")).unwrap();
        let res = walk(&offline(r), &params(&["/bin", "/usr", "/proc", "/run/"], 1000));
        assert_eq!(res.files_count, 1, "/usr/bin/tool once, not twice through /bin");
        assert!(res.skipped_roots.iter().any(|(p, why)| p == "/bin" && why.contains("symbolic link")));
        assert!(res.skipped_roots.iter().any(|(p, why)| p == "/proc" && why == "excluded"));
        assert!(res.walked_roots.iter().any(|p| p == "/run"), "/run is walked, as CIS 7.1.11 does");
    }

    #[test]
    fn name_patterns_exclude_a_directory_anywhere() {
        assert!(excluded("/var/lib/containerd", "*/containerd"));
        assert!(excluded("/var/lib/containerd/io.containerd/x", "*/containerd"));
        assert!(excluded("/run/containerd/s", "*/containerd"));
        assert!(!excluded("/var/lib/containerd-old", "*/containerd"));
        assert!(excluded("/var/lib/kubelet/pods/abc", "*/kubelet/pods"));
        assert!(!excluded("/var/lib/kubelet/podsx", "*/kubelet/pods"));
        assert!(excluded("/run/user/1000", "/run/user"));
    }

    #[test]
    fn cap_stops_the_walk() {
        let files: Vec<(String, &str)> = (0..20).map(|i| (format!("/etc/f{i:02}"), "")).collect();
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        let d = root_with(&refs);
        for (p, _) in &files {
            chmod(d.path(), p, 0o666);
        }
        let res = walk(&live_like(d.path()), &params(&["/etc"], 5));
        assert!(res.capped);
        assert_eq!(res.entries, 5);
        assert_eq!(res.files_count, 5);
        let res = walk(&live_like(d.path()), &params(&["/etc"], 20));
        assert!(!res.capped);
        assert_eq!(res.entries, 20);
    }

    #[test]
    fn listing_is_bounded_but_counts_are_not() {
        let files: Vec<(String, &str)> = (0..60).map(|i| (format!("/srv/f{i:02}"), "")).collect();
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        let d = root_with(&refs);
        for (p, _) in &files {
            chmod(d.path(), p, 0o646);
        }
        let res = walk(&offline(d.path()), &params(&["/srv"], 1000));
        assert_eq!(res.files_count, 60);
        assert_eq!(res.files.len(), MAX_LISTED);
    }

    #[test]
    fn walks_are_cached_per_parameters() {
        let d = root_with(&[("/etc/a", "")]);
        let h = offline(d.path());
        let walks = WorldWritableWalks::default();
        let a = walks.get(&h, &params(&["/etc"], 10));
        let b = walks.get(&h, &params(&["/etc"], 10));
        assert!(Rc::ptr_eq(&a, &b));
        let c = walks.get(&h, &params(&["/etc"], 11));
        assert!(!Rc::ptr_eq(&a, &c));
    }

    #[test]
    fn prefix_matching_respects_components() {
        assert!(is_under("/var/tmp", "/var/tmp"));
        assert!(is_under("/var/tmp/x", "/var/tmp/"));
        assert!(!is_under("/var/tmpfoo", "/var/tmp"));
        assert!(is_under("/x", "/"));
    }

    proptest::proptest! {
        #[test]
        fn prefix_matching_never_panics(a in "\\PC*", b in "\\PC*") {
            let _ = is_under(&a, &b);
            let _ = join(&a, &b);
        }
    }
}
