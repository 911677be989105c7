//! Bounded, streaming reading of a bundle's tar.gz.
//!
//! Nothing is ever written to disk and nothing is trusted from the archive:
//! every entry's path must be a plain relative path (no `/` prefix, no `.`
//! or `..`, no empty component, only `[A-Za-z0-9._-]`), only regular files
//! (and directory entries, which are ignored) are read, and each is read up
//! to the limit of its kind. The tar is read raw, because the tar crate
//! would read extension headers unbounded: GNU long names are refused, and
//! pax headers (which `tar --format=pax` adds for timestamps) are read up to
//! 64 KiB and ignored, unless they change the next entry's path or size, in
//! which case that entry is refused. The whole decompressed stream is
//! capped, so a gzip bomb ends with an error, not an exhausted memory.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use super::{EvidenceError, MAX_ENTRIES, MAX_TOTAL_BYTES, Role};

/// A pax header, at most.
const MAX_PAX_BYTES: u64 = 64 << 10;

/// Whether pax records (`<len> <key>=<value>\n`) change how the next entry
/// is read: its path, its link or its size, or GNU sparse layout. Unparsable
/// records count as changing it.
fn pax_changes_entry(data: &[u8]) -> bool {
    let mut rest = data;
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|&b| b == b' ') else { return true };
        let Some(len) =
            rest.get(..space).and_then(|l| std::str::from_utf8(l).ok()).and_then(|l| l.parse::<usize>().ok())
        else {
            return true;
        };
        let Some(record) = rest.get(space + 1..len) else { return true };
        let key = record.split(|&b| b == b'=').next().unwrap_or_default();
        if matches!(key, b"path" | b"linkpath" | b"size") || key.starts_with(b"GNU.sparse") {
            return true;
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    false
}

/// One entry of the archive, as the verifier sees it.
#[derive(Debug)]
pub(super) enum Item {
    /// A regular file with a valid path, read whole.
    File { path: String, data: Vec<u8>, sha256: [u8; 32] },
    /// An entry that was not read, and why. `path` is shown escaped.
    Refused { path: String, why: String },
}

/// A reader that fails once more than `left` bytes went through it.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other(format!("more than {MAX_TOTAL_BYTES} bytes uncompressed: refusing to read further"))
        })?;
        Ok(n)
    }
}

/// Check a path from the archive; returns it as a string, or why not.
fn plain_path(raw: &[u8], is_dir: bool) -> Result<String, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "not UTF-8".to_string())?;
    let s = if is_dir { s.strip_suffix('/').unwrap_or(s) } else { s };
    if s.is_empty() {
        return Err("empty path".into());
    }
    if s.starts_with('/') {
        return Err("absolute path".into());
    }
    for c in s.split('/') {
        match c {
            "" => return Err("empty path component".into()),
            "." | ".." => return Err(format!("path component {c:?}")),
            _ if !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') => {
                return Err(format!("unexpected characters in {c:?}"));
            }
            _ => {}
        }
    }
    Ok(s.to_string())
}

fn shown(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut cut: String = s.chars().take(200).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Read every entry of the bundle at `path`, handing each to `visit`.
pub(super) fn read(path: &Path, mut visit: impl FnMut(Item) -> Result<(), EvidenceError>) -> Result<(), EvidenceError> {
    let shown_path = path.display().to_string();
    let bad = |problem: String| EvidenceError::Unreadable { path: shown_path.clone(), problem };
    let file = File::open(path).map_err(|e| EvidenceError::Io { path: shown_path.clone(), source: e })?;
    let gz = GzDecoder::new(BufReader::with_capacity(1 << 16, file));
    let mut archive = tar::Archive::new(Capped { inner: gz, left: MAX_TOTAL_BYTES });
    {
        let entries = archive.entries().map_err(|e| bad(format!("not a tar.gz archive: {e}")))?.raw(true);
        // Set by a pax header that redefines the next entry.
        let mut redefined = false;
        for (count, entry) in entries.enumerate() {
            if count as u64 >= MAX_ENTRIES {
                return Err(bad(format!("more than {MAX_ENTRIES} entries")));
            }
            let mut entry = entry.map_err(|e| bad(format!("not a readable tar.gz archive: {e}")))?;
            let raw_path = entry.path_bytes().into_owned();
            let kind = entry.header().entry_type();
            if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
                let size = entry.header().entry_size().map_err(|e| bad(format!("pax header: {e}")))?;
                if size > MAX_PAX_BYTES {
                    return Err(bad(format!("a pax header of {size} bytes (more than {MAX_PAX_BYTES})")));
                }
                let mut data = Vec::new();
                (&mut entry).take(MAX_PAX_BYTES).read_to_end(&mut data).map_err(|e| bad(format!("pax header: {e}")))?;
                redefined |= pax_changes_entry(&data);
                continue;
            }
            if std::mem::take(&mut redefined) {
                visit(Item::Refused {
                    path: shown(&raw_path),
                    why: "a pax header redefines its path or size (repack with `tar --format=ustar`)".into(),
                })?;
                continue;
            }
            let path = match plain_path(&raw_path, kind.is_dir()) {
                Ok(p) => p,
                Err(why) => {
                    visit(Item::Refused { path: shown(&raw_path), why: format!("not a plain relative path: {why}") })?;
                    continue;
                }
            };
            if kind.is_dir() {
                continue;
            }
            if !kind.is_file() {
                let what = if kind.is_symlink() {
                    "a symbolic link".to_string()
                } else if kind.is_hard_link() {
                    "a hard link".to_string()
                } else if kind.is_gnu_longname() || kind.is_gnu_longlink() {
                    "a GNU long-name header (repack with `tar --format=ustar`)".to_string()
                } else {
                    format!("an entry of type {:?}", char::from(kind.as_byte()))
                };
                visit(Item::Refused { path: format!("{path:?}"), why: format!("{what}, not a regular file") })?;
                continue;
            }
            let size = entry.header().entry_size().map_err(|e| bad(format!("entry {path:?}: {e}")))?;
            let limit = Role::of(&path).limit();
            if size > limit {
                visit(Item::Refused {
                    path: format!("{path:?}"),
                    why: format!("{size} bytes, over the {limit}-byte limit for this kind of file"),
                })?;
                continue;
            }
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            (&mut entry).take(limit + 1).read_to_end(&mut data).map_err(|e| bad(format!("entry {path:?}: {e}")))?;
            if data.len() as u64 != size {
                return Err(bad(format!("entry {path:?} is truncated")));
            }
            let sha256: [u8; 32] = Sha256::digest(&data).into();
            visit(Item::File { path, data, sha256 })?;
        }
    }
    // After the end-of-archive blocks only zero padding may follow; reading
    // to the end also makes the decoder check the gzip CRC and length.
    let mut rest = archive.into_inner();
    let mut buf = vec![0u8; 1 << 16];
    let mut trailing = false;
    loop {
        let n = rest.read(&mut buf).map_err(|e| bad(format!("after the end of the archive: {e}")))?;
        if n == 0 {
            break;
        }
        trailing |= buf.get(..n).is_some_and(|b| b.iter().any(|&x| x != 0));
    }
    if trailing {
        visit(Item::Refused {
            path: "(after the end of the archive)".into(),
            why: "data follows the end-of-archive marker".into(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_headers_that_redefine_an_entry_are_detected() {
        assert!(!pax_changes_entry(b"30 mtime=1795357630.123456789\n20 atime=1795357630\n"));
        assert!(pax_changes_entry(b"23 path=../../etc/evil\n"));
        assert!(pax_changes_entry(b"16 size=1000000\n"));
        assert!(pax_changes_entry(b"garbage"));
        assert!(pax_changes_entry(b"99 mtime=1\n"));
        assert!(!pax_changes_entry(b""));
    }

    #[test]
    fn only_plain_relative_paths_pass() {
        assert_eq!(plain_path(b"nodes/n-1/cert.pem", false).unwrap(), "nodes/n-1/cert.pem");
        assert_eq!(plain_path(b"nodes/", true).unwrap(), "nodes");
        for bad in [
            &b"../etc/passwd"[..],
            b"/etc/passwd",
            b"nodes/../../x",
            b"./manifest.json",
            b"nodes//x",
            b"",
            b"a\\..\\b",
            b"nodes/x y",
            b"\xff",
        ] {
            assert!(plain_path(bad, false).is_err(), "{bad:?} passed");
        }
    }
}
