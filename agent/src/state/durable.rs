//! The one durable-write primitive of the agent: every file it keeps (state
//! snapshots, first-seen records, the spool's envelopes and chain head, the
//! node identity) is replaced through [`replace`].
//!
//! Write to a temporary name created with its final mode, fsync, rename over
//! the target, fsync the directory. After a crash the target holds either the
//! old or the new content, never a torn mix, and a secret is never readable
//! by others, not even for the instant between create and chmod. The
//! temporary name is unique per process and call, so that a `check` run by
//! hand and the daemon writing the same state file cannot interleave their
//! bytes in one temporary file.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Every temporary file of [`replace`] starts with this prefix (the spool
/// removes leftovers of a crash by it).
pub const TMP_PREFIX: &str = ".tmp-";

/// Replace `path` with `bytes`, the file having `mode` from its creation.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new("/")))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`replace`] with mode 0600, creating the parent directories (0700) first:
/// what the agent remembers describes the node's security configuration.
pub fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    replace(path, bytes, 0o600)
}

/// A temporary name beside `path`, unique to this process and call.
fn temp_name(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!("{TMP_PREFIX}{name}.{}.{n}", std::process::id()))
}

/// Make a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_with_the_requested_mode() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("key.pem");
        replace(&p, b"one", 0o600).unwrap();
        replace(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_files_get_private_directories() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/state.json");
        replace_private(&p, b"{}").unwrap();
        assert_eq!(std::fs::metadata(t.path().join("a/b")).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let t = tempfile::tempdir().unwrap();
        // The target is a directory: the rename fails.
        let p = t.path().join("d");
        std::fs::create_dir(p.join("")).unwrap();
        std::fs::write(p.join("x"), "").unwrap();
        assert!(replace(&p, b"x", 0o600).is_err());
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("d")]);
    }
}
