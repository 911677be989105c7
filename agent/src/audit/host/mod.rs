//! The one door to the machine being audited.
//!
//! A [`Host`] is a root directory plus a [`CommandRunner`]. Every file read and
//! every external command of the agent goes through it, so the same checks run
//! on the live host (`/`), on an offline image (`--root DIR`) and on test
//! fixtures.
//!
//! Paths are always given as absolute paths *of the audited system*
//! (`/etc/ssh/sshd_config`) and are resolved inside the root the way a chroot
//! would: `..` stops at the root and absolute symlink targets restart from the
//! root, so a symlink in an offline image can never make us read the auditor's
//! own `/etc`. Reads are bounded: a file larger than the caller's limit, a FIFO
//! or device, a symlink loop or non-UTF-8 text is an error, never a hang or a
//! silently truncated value.

pub mod net;
pub mod runner;

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use runner::{CommandError, CommandOutput, CommandRunner, OfflineRunner, RecordedRunner, SystemRunner};

/// Default cap for configuration files: no sane sshd_config or sysctl.d file
/// comes near it, and a hostile 1 GiB file is refused without being read.
pub const DEFAULT_READ_LIMIT: u64 = 4 * 1024 * 1024;

/// How many symlinks one path resolution may follow (Linux uses 40 too).
const MAX_SYMLINKS: usize = 40;

/// How many entries one directory listing may return before we stop trusting it.
const MAX_DIR_ENTRIES: usize = 100_000;

/// Errors from reading the audited system. Each names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: too many levels of symbolic links (loop?)")]
    SymlinkLoop { path: String },
    #[error("{path}: is a {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path}: larger than the {limit}-byte limit for this file ({size} bytes)")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path}: not valid UTF-8 text")]
    NotUtf8 { path: String },
    #[error("{path}: not an absolute path")]
    NotAbsolute { path: String },
    #[error("{path}: more than {limit} directory entries")]
    TooManyEntries { path: String, limit: usize },
}

impl HostError {
    /// True when the file simply does not exist (as opposed to being unreadable).
    pub fn is_not_found(&self) -> bool {
        matches!(self, HostError::NotFound { .. })
    }
}

/// The kind of a filesystem object, as seen with `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl FileKind {
    /// The kind of an `lstat` result.
    pub fn of(meta: &Metadata) -> Self {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_file() {
            FileKind::File
        } else if t.is_dir() {
            FileKind::Dir
        } else if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Unknown
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            FileKind::File => "regular file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symbolic link",
            FileKind::Fifo => "FIFO",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
            FileKind::Unknown => "special file",
        }
    }
}

/// Ownership, mode and size of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub dev: u64,
    pub modified: Option<SystemTime>,
}

impl FileMeta {
    fn from_std(meta: &Metadata) -> Self {
        FileMeta {
            kind: FileKind::of(meta),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            dev: meta.dev(),
            modified: meta.modified().ok(),
        }
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (not valid UTF-8 names are skipped and counted).
    pub name: String,
    /// The entry's path in the audited system.
    pub path: String,
}

/// A root directory plus a command runner: see the module docs.
pub struct Host {
    root: PathBuf,
    live: bool,
    runner: Box<dyn CommandRunner>,
    command_timeout: Duration,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("root", &self.root).field("live", &self.live).finish_non_exhaustive()
    }
}

impl Host {
    /// The live machine: root `/`, real commands.
    pub fn live() -> Self {
        Host {
            root: PathBuf::from("/"),
            live: true,
            runner: Box::new(SystemRunner::default()),
            command_timeout: Duration::from_secs(10),
        }
    }

    /// An offline root (image, chroot, fixture). Runtime facts are unavailable;
    /// commands are replayed from `<root>/.commands/` when that directory exists
    /// and are otherwise unavailable, because running them would audit the
    /// machine we are sitting on instead of the root.
    pub fn offline(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let recorded = root.join(".commands");
        let runner: Box<dyn CommandRunner> =
            if recorded.is_dir() { Box::new(RecordedRunner::new(recorded)) } else { Box::new(OfflineRunner) };
        Host { root, live: false, runner, command_timeout: Duration::from_secs(10) }
    }

    /// The host whose root directory is `root`: the live machine when `root`
    /// is `/` itself (after resolving `.`, `..` and links), else an offline
    /// root. The one "is this the live host" rule, used by `check`,
    /// `baseline pin` and the daemon's `root` setting alike.
    pub fn at(root: &Path) -> Self {
        if std::fs::canonicalize(root).is_ok_and(|p| p == Path::new("/")) { Host::live() } else { Host::offline(root) }
    }

    /// A host with an explicit runner (tests, or a live root other than `/`).
    pub fn with_runner(root: impl Into<PathBuf>, live: bool, runner: Box<dyn CommandRunner>) -> Self {
        Host { root: root.into(), live, runner, command_timeout: Duration::from_secs(10) }
    }

    /// The root directory as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True on the running machine, where /proc, /sys and live commands
    /// describe the audited system.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Run an external command (argv only, never a shell) with the host's
    /// default timeout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<CommandOutput, CommandError> {
        self.runner.run(program, args, self.command_timeout)
    }

    /// Run a command with an explicit timeout.
    pub fn run_with_timeout(
        &self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<CommandOutput, CommandError> {
        self.runner.run(program, args, timeout)
    }

    /// Resolve a path of the audited system to a real path, following
    /// symlinks inside the root (chroot semantics). The final component is
    /// followed too. Missing components yield `NotFound`.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, HostError> {
        self.resolve_inner(path, true)
    }

    fn resolve_inner(&self, path: &str, follow_last: bool) -> Result<PathBuf, HostError> {
        if !path.starts_with('/') {
            return Err(HostError::NotAbsolute { path: path.to_string() });
        }
        // `pending` holds the components still to walk, in reverse order.
        let mut pending: Vec<String> = components_rev(Path::new(path));
        let mut resolved: Vec<String> = Vec::new();
        let mut links = 0usize;
        while let Some(comp) = pending.pop() {
            match comp.as_str() {
                "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(comp);
            let real = self.real_path(&resolved);
            let is_last = pending.is_empty();
            let meta = match std::fs::symlink_metadata(&real) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(HostError::NotFound { path: path.to_string() });
                }
                Err(e) => return Err(HostError::Io { path: path.to_string(), source: e }),
            };
            if meta.file_type().is_symlink() && (follow_last || !is_last) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(HostError::SymlinkLoop { path: path.to_string() });
                }
                let target =
                    std::fs::read_link(&real).map_err(|e| HostError::Io { path: path.to_string(), source: e })?;
                resolved.pop();
                if target.is_absolute() {
                    resolved.clear();
                }
                pending.extend(components_rev(&target));
            } else if !is_last && !meta.is_dir() {
                return Err(HostError::NotFound { path: path.to_string() });
            }
        }
        Ok(self.real_path(&resolved))
    }

    fn real_path(&self, comps: &[String]) -> PathBuf {
        let mut p = self.root.clone();
        for c in comps {
            p.push(c);
        }
        p
    }

    /// Metadata of the object at `path`, following symlinks (like `stat`).
    pub fn metadata(&self, path: &str) -> Result<FileMeta, HostError> {
        let real = self.resolve(path)?;
        std::fs::metadata(&real).map(|m| FileMeta::from_std(&m)).map_err(|e| io_err(path, e))
    }

    /// Metadata of `path` itself, not following a final symlink (like `lstat`).
    pub fn symlink_metadata(&self, path: &str) -> Result<FileMeta, HostError> {
        let real = self.resolve_inner(path, false)?;
        std::fs::symlink_metadata(&real).map(|m| FileMeta::from_std(&m)).map_err(|e| io_err(path, e))
    }

    /// True when something exists at `path` (following symlinks).
    pub fn exists(&self, path: &str) -> bool {
        self.metadata(path).is_ok()
    }

    /// Read a regular file of at most `limit` bytes.
    ///
    /// The file is opened with `O_NONBLOCK` so that a FIFO cannot block us,
    /// then checked with `fstat` on the open descriptor (no race between the
    /// check and the read). Files under `/proc` and `/sys` report size 0, so
    /// the limit is also enforced while reading.
    pub fn read_bytes_limited(&self, path: &str, limit: u64) -> Result<Vec<u8>, HostError> {
        let file = self.open_limited(path, limit)?;
        read_capped(file, path, limit)
    }

    /// Open a regular file of at most `limit` bytes for streaming, with the
    /// same checks as [`Host::read_bytes_limited`]. For indexes too large to
    /// hold in memory (apt lists); the caller must still bound what it reads,
    /// since a file may grow after the check.
    pub fn open_limited(&self, path: &str, limit: u64) -> Result<File, HostError> {
        let real = self.resolve(path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(&real)
            .map_err(|e| io_err(path, e))?;
        let meta = file.metadata().map_err(|e| io_err(path, e))?;
        let kind = FileKind::of(&meta);
        if kind != FileKind::File {
            return Err(HostError::NotRegular { path: path.to_string(), kind: kind.describe() });
        }
        if meta.len() > limit {
            return Err(HostError::TooLarge { path: path.to_string(), size: meta.len(), limit });
        }
        Ok(file)
    }

    /// Read a regular file with the default limit.
    pub fn read_bytes(&self, path: &str) -> Result<Vec<u8>, HostError> {
        self.read_bytes_limited(path, DEFAULT_READ_LIMIT)
    }

    /// Read a UTF-8 text file with the default limit.
    pub fn read_text(&self, path: &str) -> Result<String, HostError> {
        self.read_text_limited(path, DEFAULT_READ_LIMIT)
    }

    /// Read a UTF-8 text file of at most `limit` bytes.
    pub fn read_text_limited(&self, path: &str, limit: u64) -> Result<String, HostError> {
        let bytes = self.read_bytes_limited(path, limit)?;
        String::from_utf8(bytes).map_err(|_| HostError::NotUtf8 { path: path.to_string() })
    }

    /// Read a text file that may legitimately be absent: `Ok(None)` when it
    /// does not exist, an error when it exists but cannot be trusted.
    pub fn read_optional(&self, path: &str) -> Result<Option<String>, HostError> {
        match self.read_text(path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// List a directory, sorted by name. Entries whose names are not UTF-8
    /// are skipped: no configuration file we parse can have such a name.
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, HostError> {
        let real = self.resolve(path)?;
        let iter = std::fs::read_dir(&real).map_err(|e| io_err(path, e))?;
        let mut out = Vec::new();
        for entry in iter {
            let entry = entry.map_err(|e| io_err(path, e))?;
            if out.len() >= MAX_DIR_ENTRIES {
                return Err(HostError::TooManyEntries { path: path.to_string(), limit: MAX_DIR_ENTRIES });
            }
            if let Some(name) = entry.file_name().to_str() {
                let child = if path.ends_with('/') { format!("{path}{name}") } else { format!("{path}/{name}") };
                out.push(DirEntry { name: name.to_string(), path: child });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// List a directory that may be absent (absent = empty).
    pub fn read_dir_optional(&self, path: &str) -> Result<Vec<DirEntry>, HostError> {
        match self.read_dir(path) {
            Ok(v) => Ok(v),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The target of a symlink at `path` (the final component is not followed).
    pub fn read_link(&self, path: &str) -> Result<String, HostError> {
        let real = self.resolve_inner(path, false)?;
        let target = std::fs::read_link(&real).map_err(|e| io_err(path, e))?;
        Ok(target.to_string_lossy().into_owned())
    }

    /// The real on-disk path (for walkers that need raw directory access).
    pub fn real_path_of(&self, path: &str) -> Result<PathBuf, HostError> {
        self.resolve(path)
    }
}

fn io_err(path: &str, e: std::io::Error) -> HostError {
    if e.kind() == std::io::ErrorKind::NotFound {
        HostError::NotFound { path: path.to_string() }
    } else if e.raw_os_error() == Some(nix::libc::ELOOP) {
        HostError::SymlinkLoop { path: path.to_string() }
    } else {
        HostError::Io { path: path.to_string(), source: e }
    }
}

fn read_capped(file: File, path: &str, limit: u64) -> Result<Vec<u8>, HostError> {
    let mut buf = Vec::new();
    // Read one byte past the limit to tell "exactly at the limit" from "over".
    let mut take = file.take(limit.saturating_add(1));
    take.read_to_end(&mut buf).map_err(|e| io_err(path, e))?;
    if buf.len() as u64 > limit {
        return Err(HostError::TooLarge { path: path.to_string(), size: buf.len() as u64, limit });
    }
    Ok(buf)
}

fn components_rev(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            Component::CurDir => Some(".".to_string()),
            Component::RootDir | Component::Prefix(_) => None,
        })
        .collect();
    v.reverse();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// One rule for `check --root`, `baseline pin --root` and the daemon's
    /// `root` (the daemon used to compare the path with "/" literally).
    #[test]
    fn the_root_that_resolves_to_slash_is_the_live_host() {
        assert!(Host::at(Path::new("/")).is_live());
        assert!(Host::at(Path::new("/.")).is_live());
        assert!(Host::at(Path::new("/usr/..")).is_live());
        let t = tempfile::tempdir().unwrap();
        symlink("/", t.path().join("slash")).unwrap();
        assert!(Host::at(&t.path().join("slash")).is_live());
        assert!(!Host::at(t.path()).is_live());
        // A root that does not exist is an offline root (whose reads fail).
        assert!(!Host::at(&t.path().join("missing")).is_live());
    }

    fn host(dir: &Path) -> Host {
        Host::offline(dir)
    }

    #[test]
    fn absolute_symlink_stays_inside_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/real"), "inside").unwrap();
        symlink("/etc/real", d.path().join("etc/link")).unwrap();
        // A link to the auditor's own /etc/passwd must resolve inside the root.
        symlink("/etc/passwd", d.path().join("etc/escape")).unwrap();
        let h = host(d.path());
        assert_eq!(h.read_text("/etc/link").unwrap(), "inside");
        assert!(h.read_text("/etc/escape").unwrap_err().is_not_found());
    }

    #[test]
    fn dotdot_is_clamped_at_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/x"), "x").unwrap();
        symlink("../../../../etc/x", d.path().join("etc/up")).unwrap();
        let h = host(d.path());
        assert_eq!(h.read_text("/etc/up").unwrap(), "x");
        assert_eq!(h.read_text("/../../etc/x").unwrap(), "x");
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        symlink("/b", d.path().join("a")).unwrap();
        symlink("/a", d.path().join("b")).unwrap();
        let h = host(d.path());
        assert!(matches!(h.read_text("/a"), Err(HostError::SymlinkLoop { .. })));
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let h = host(d.path());
        assert!(matches!(h.read_text("/fifo"), Err(HostError::NotRegular { .. })));
    }

    #[test]
    fn oversized_and_sparse_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = File::create(d.path().join("big")).unwrap();
        f.set_len(1 << 30).unwrap(); // 1 GiB sparse: costs nothing on disk
        let h = host(d.path());
        assert!(matches!(h.read_text("/big"), Err(HostError::TooLarge { .. })));
        std::fs::write(d.path().join("small"), "12345").unwrap();
        assert!(matches!(h.read_text_limited("/small", 4), Err(HostError::TooLarge { .. })));
        assert_eq!(h.read_text_limited("/small", 5).unwrap(), "12345");
    }

    #[test]
    fn non_utf8_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bin"), [0xff, 0xfe, 0x00, 0x80]).unwrap();
        let h = host(d.path());
        assert!(matches!(h.read_text("/bin"), Err(HostError::NotUtf8 { .. })));
    }

    #[test]
    fn device_symlink_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        // Inside the root, /dev/zero does not exist, so this is simply missing.
        symlink("/dev/zero", d.path().join("zero")).unwrap();
        assert!(host(d.path()).read_text("/zero").unwrap_err().is_not_found());
        // On the live host it would be a character device: refused, not read.
        let live = Host::with_runner("/", true, Box::new(OfflineRunner));
        assert!(matches!(live.read_text("/dev/zero"), Err(HostError::NotRegular { .. })));
    }

    #[test]
    fn read_dir_is_sorted_and_missing_dir_is_empty_when_optional() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/sysctl.d")).unwrap();
        std::fs::write(d.path().join("etc/sysctl.d/b.conf"), "").unwrap();
        std::fs::write(d.path().join("etc/sysctl.d/a.conf"), "").unwrap();
        let h = host(d.path());
        let names: Vec<_> = h.read_dir("/etc/sysctl.d").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a.conf", "b.conf"]);
        assert!(h.read_dir_optional("/nope").unwrap().is_empty());
        assert!(matches!(h.read_text("relative"), Err(HostError::NotAbsolute { .. })));
    }
}
