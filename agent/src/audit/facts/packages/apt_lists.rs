//! apt's downloaded indexes under `/var/lib/apt/lists`: which `*_Packages`
//! lists exist (plain or compressed the way apt may store them), the
//! `*_Release`/`*_InRelease` file each belongs to, and a streaming scan of a
//! list that keeps only the stanzas of packages the caller asks for.
//!
//! A list is paired with its Release file by apt's file naming: both start
//! with the URI-derived prefix of their suite
//! (`deb.debian.org_debian-security_dists_bookworm-security_`), the longest
//! matching prefix wins. InRelease files are clearsigned; the armor is
//! stripped and the signature is **not** verified: apt verified it when it
//! downloaded the file, and an attacker who can write to
//! `/var/lib/apt/lists` owns the node anyway.
//!
//! A full Debian main list is about 50 MB and a hostile one can be any size,
//! so lists are never read into memory: they are decompressed and parsed as a
//! stream, with caps on the file size, the decompressed size and the line
//! length, and only the few fields the patch computation needs are kept.

use std::io::{BufRead, BufReader, Read};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use super::FactError;
use super::debversion::DebVersion;
use crate::audit::host::Host;

/// Where apt keeps its downloaded indexes.
pub const LISTS_DIR: &str = "/var/lib/apt/lists";

/// A Release file is a few hundred KiB (its checksum list grows with the
/// number of indexes); 32 MiB is far beyond any real one.
const RELEASE_LIMIT: u64 = 32 * 1024 * 1024;

/// On-disk size cap of one list.
pub const LIST_FILE_LIMIT: u64 = 2 * 1024 * 1024 * 1024;

/// Decompressed size cap of one list: ten times Debian's full main index.
pub const DECOMPRESSED_LIMIT: u64 = 1024 * 1024 * 1024;

/// No field line of a Packages stanza comes near this.
const LINE_LIMIT: usize = 1024 * 1024;

/// How a list is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Xz,
    Lz4,
    Zstd,
}

impl Compression {
    /// The compression of a list named `…_Packages[.ext]`; `Err` names an
    /// extension we cannot read.
    fn of(name: &str) -> Option<Result<Compression, String>> {
        if name.ends_with("_Packages") {
            return Some(Ok(Compression::Plain));
        }
        let (_, ext) = name.rsplit_once("_Packages.")?;
        Some(match ext {
            "gz" => Ok(Compression::Gzip),
            "xz" => Ok(Compression::Xz),
            "lz4" => Ok(Compression::Lz4),
            "zst" => Ok(Compression::Zstd),
            other => Err(other.to_string()),
        })
    }
}

/// The suite metadata of one Release/InRelease file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseInfo {
    pub path: String,
    pub origin: Option<String>,
    pub label: Option<String>,
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub version: Option<String>,
    pub date: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub not_automatic: bool,
    pub but_automatic_upgrades: bool,
    /// An InRelease file (PGP clearsigned; signature not verified here).
    pub clearsigned: bool,
}

impl ReleaseInfo {
    /// A security suite: Debian's `*-security` suites (label
    /// `Debian-Security`) and Ubuntu's `*-security` pocket.
    pub fn is_security(&self) -> bool {
        let sec = |v: &Option<String>| v.as_deref().is_some_and(|s| s.ends_with("-security"));
        sec(&self.suite) || sec(&self.codename) || self.label.as_deref() == Some("Debian-Security")
    }

    /// apt's default pin priority for this suite (apt_preferences(5)).
    pub fn default_priority(&self) -> i32 {
        match (self.not_automatic, self.but_automatic_upgrades) {
            (true, true) => 100,
            (true, false) => 1,
            _ => 500,
        }
    }

    /// `Label:Version/Suite`, as `apt-get -s` prints a version's origin.
    pub fn describe(&self) -> String {
        let label = self.label.as_deref().or(self.origin.as_deref()).unwrap_or("?");
        let suite = self.suite.as_deref().or(self.codename.as_deref()).unwrap_or("?");
        match &self.version {
            Some(v) => format!("{label}:{v}/{suite}"),
            None => format!("{label}/{suite}"),
        }
    }
}

/// Strip the PGP clearsign armor (RFC 4880 §7): the header block, the
/// dash-escaping, and the signature. `None` when the armor is broken.
fn strip_clearsign(text: &str) -> Option<String> {
    let mut lines = text.lines();
    loop {
        let l = lines.next()?;
        if l.trim_end() == "-----BEGIN PGP SIGNED MESSAGE-----" {
            break;
        }
        if !l.trim().is_empty() {
            return None;
        }
    }
    // Armor headers ("Hash: SHA256") up to the first blank line.
    loop {
        let l = lines.next()?;
        if l.trim().is_empty() {
            break;
        }
    }
    let mut body = String::with_capacity(text.len());
    for l in lines {
        if l.trim_end() == "-----BEGIN PGP SIGNATURE-----" {
            return Some(body);
        }
        body.push_str(l.strip_prefix("- ").unwrap_or(l));
        body.push('\n');
    }
    None
}

/// Release dates are RFC 2822 with a zone name (`Sat, 21 Nov 2026 00:53:02 UTC`).
fn parse_release_date(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    let normalized = match v.strip_suffix("UTC").or_else(|| v.strip_suffix("GMT")) {
        Some(rest) => format!("{}+0000", rest),
        None => v.to_string(),
    };
    DateTime::parse_from_rfc2822(&normalized).ok().map(|d| d.with_timezone(&Utc))
}

/// Parse a Release or InRelease file (only its single stanza's fields).
pub fn parse_release(path: &str, text: &str) -> Result<ReleaseInfo, FactError> {
    let clearsigned = text.trim_start().starts_with("-----BEGIN PGP SIGNED MESSAGE-----");
    let body = if clearsigned {
        strip_clearsign(text).ok_or_else(|| FactError::new(format!("{path}: broken PGP clearsign armor")))?
    } else {
        text.to_string()
    };
    let mut info = ReleaseInfo { path: path.to_string(), clearsigned, ..ReleaseInfo::default() };
    let mut fields = 0usize;
    for (i, line) in body.lines().enumerate() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if line.trim().is_empty() {
            if fields > 0 {
                break;
            }
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(FactError::new(format!("{path}:{}: not a \"Field: value\" line", i + 1)));
        };
        fields += 1;
        let v = v.trim();
        let val = || Some(v.to_string()).filter(|s| !s.is_empty());
        match k {
            "Origin" => info.origin = val(),
            "Label" => info.label = val(),
            "Suite" => info.suite = val(),
            "Codename" => info.codename = val(),
            "Version" => info.version = val(),
            "Date" => info.date = parse_release_date(v),
            "Valid-Until" => info.valid_until = parse_release_date(v),
            "NotAutomatic" => info.not_automatic = v.eq_ignore_ascii_case("yes"),
            "ButAutomaticUpgrades" => info.but_automatic_upgrades = v.eq_ignore_ascii_case("yes"),
            _ => {}
        }
    }
    if info.suite.is_none() && info.codename.is_none() {
        return Err(FactError::new(format!("{path}: neither Suite nor Codename: not a Release file")));
    }
    Ok(info)
}

/// One `*_Packages` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagesList {
    pub path: String,
    pub compression: Compression,
    /// Index into [`AptLists::releases`].
    pub release: Option<usize>,
    /// The archive host, for `Pin: origin` (the file name up to the first `_`).
    pub site: String,
    /// The component (`main`), for `Pin: release c=`.
    pub component: Option<String>,
    pub modified: Option<SystemTime>,
}

/// Everything found under [`LISTS_DIR`].
#[derive(Debug, Clone, Default)]
pub struct AptLists {
    pub releases: Vec<ReleaseInfo>,
    pub lists: Vec<PackagesList>,
    /// Newest modification time of a Release file or of `partial/` (touched
    /// by every `apt-get update`), with the path it came from.
    pub newest_mtime: Option<(SystemTime, String)>,
    /// Things that make the lists uncertain (`path: why`).
    pub problems: Vec<String>,
}

fn newer(cur: &mut Option<(SystemTime, String)>, t: Option<SystemTime>, path: &str) {
    if let Some(t) = t
        && cur.as_ref().is_none_or(|(c, _)| t > *c)
    {
        *cur = Some((t, path.to_string()));
    }
}

/// Find the lists and their Release files. A directory without any list is
/// not an error here: the caller decides what "no lists" means.
pub fn discover(host: &Host) -> Result<AptLists, FactError> {
    let entries = host.read_dir(LISTS_DIR)?;
    let mut out = AptLists::default();
    // (prefix, index, is InRelease)
    let mut prefixes: Vec<(String, usize, bool)> = Vec::new();
    for e in &entries {
        let (prefix, inrelease) = if let Some(p) = e.name.strip_suffix("_InRelease") {
            (p, true)
        } else if let Some(p) = e.name.strip_suffix("_Release") {
            (p, false)
        } else {
            continue;
        };
        let meta = host.metadata(&e.path).ok();
        newer(&mut out.newest_mtime, meta.and_then(|m| m.modified), &e.path);
        let parsed = host
            .read_text_limited(&e.path, RELEASE_LIMIT)
            .map_err(FactError::from)
            .and_then(|t| parse_release(&e.path, &t));
        match parsed {
            Ok(info) => {
                // InRelease wins over Release for the same suite, as in apt.
                let prefix = format!("{prefix}_");
                if let Some(slot) = prefixes.iter_mut().find(|(p, _, _)| *p == prefix) {
                    if inrelease && !slot.2 {
                        out.releases[slot.1] = info;
                        slot.2 = true;
                    }
                } else {
                    out.releases.push(info);
                    prefixes.push((prefix, out.releases.len() - 1, inrelease));
                }
            }
            Err(err) => out.problems.push(err.to_string()),
        }
    }
    let partial = format!("{LISTS_DIR}/partial");
    newer(&mut out.newest_mtime, host.metadata(&partial).ok().and_then(|m| m.modified), &partial);
    for e in &entries {
        let Some(compression) = Compression::of(&e.name) else { continue };
        let compression = match compression {
            Ok(c) => c,
            Err(ext) => {
                out.problems.push(format!("{}: unknown compression \".{ext}\": cannot read this list", e.path));
                continue;
            }
        };
        let release = prefixes
            .iter()
            .filter(|(p, _, _)| e.name.starts_with(p.as_str()))
            .max_by_key(|(p, _, _)| p.len())
            .map(|(p, i, _)| (p.len(), *i));
        if release.is_none() {
            out.problems.push(format!(
                "{}: no matching Release or InRelease file: its suite, origin and label are unknown",
                e.path
            ));
        }
        let component = release.and_then(|(plen, _)| {
            let rest = e.name.get(plen..)?;
            let (comp, _) = rest.split_once("_binary-")?;
            Some(comp.to_string())
        });
        out.lists.push(PackagesList {
            path: e.path.clone(),
            compression,
            release: release.map(|(_, i)| i),
            site: e.name.split('_').next().unwrap_or_default().to_string(),
            component,
            modified: host.metadata(&e.path).ok().and_then(|m| m.modified),
        });
    }
    Ok(out)
}

/// A reader that fails once more than `remaining` bytes come out of it,
/// so that a decompression bomb is an error instead of a long hang.
struct Capped<R> {
    inner: R,
    remaining: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(format!("decompressed size exceeds {} bytes", self.limit))),
            };
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        self.remaining = self.remaining.saturating_sub(n as u64);
        Ok(n)
    }
}

/// Open a list as a decompressed, size-capped byte stream.
pub fn open_list(host: &Host, list: &PackagesList, decompressed_limit: u64) -> Result<Box<dyn BufRead>, FactError> {
    let file = host.open_limited(&list.path, LIST_FILE_LIMIT)?;
    let raw = BufReader::with_capacity(128 * 1024, file);
    let decoded: Box<dyn Read> = match list.compression {
        Compression::Plain => Box::new(raw),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new(raw, true)),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(raw)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(raw)
                .map_err(|e| FactError::new(format!("{}: not a zstd stream: {e}", list.path)))?,
        ),
    };
    Ok(Box::new(BufReader::with_capacity(
        256 * 1024,
        Capped { inner: decoded, remaining: decompressed_limit, limit: decompressed_limit },
    )))
}

/// One version of one package offered by a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub name: String,
    pub arch: String,
    pub version: DebVersion,
    /// Index into [`AptLists::lists`].
    pub list: usize,
}

/// The fields of the stanza being read.
#[derive(Default)]
struct Stanza {
    line: usize,
    package: Option<String>,
    arch: Option<String>,
    version: Option<String>,
}

/// Read one line (without its newline) into `buf`, refusing lines longer
/// than [`LINE_LIMIT`]. Returns false at end of input.
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, path: &str, lineno: usize) -> Result<bool, FactError> {
    buf.clear();
    let n = r
        .by_ref()
        .take(LINE_LIMIT as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|e| FactError::new(format!("{path}: read error near line {lineno}: {e}")))?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > LINE_LIMIT {
        return Err(FactError::new(format!("{path}:{lineno}: line longer than {LINE_LIMIT} bytes")));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(true)
}

fn field_value(line: &[u8], key: &[u8], path: &str, lineno: usize) -> Result<Option<String>, FactError> {
    let Some(rest) = line.strip_prefix(key) else { return Ok(None) };
    let Some(rest) = rest.strip_prefix(b":") else { return Ok(None) };
    let v = std::str::from_utf8(rest).map_err(|_| FactError::new(format!("{path}:{lineno}: not UTF-8")))?;
    Ok(Some(v.trim().to_string()))
}

/// Stream-parse a Packages list, appending the versions of the packages for
/// which `wanted(name, arch)` is true. Returns the number of stanzas read.
/// A line that is not a field, a stanza without Package or Version, or an
/// unparsable version of a wanted package is an error: apt refuses such a
/// list too, and a skipped stanza could hide a candidate.
pub fn scan_packages<R: BufRead>(
    mut reader: R,
    path: &str,
    list: usize,
    wanted: &dyn Fn(&str, &str) -> bool,
    out: &mut Vec<ListEntry>,
) -> Result<usize, FactError> {
    let mut buf = Vec::with_capacity(4096);
    let mut st = Stanza::default();
    let mut in_stanza = false;
    let mut lineno = 0usize;
    let mut stanzas = 0usize;
    let mut finish = |st: &mut Stanza, stanzas: &mut usize| -> Result<(), FactError> {
        let s = std::mem::take(st);
        let (Some(name), Some(version)) = (s.package, s.version) else {
            return Err(FactError::new(format!("{path}:{}: stanza without Package or Version", s.line)));
        };
        *stanzas += 1;
        let arch = s.arch.unwrap_or_default();
        if wanted(&name, &arch) {
            let version = DebVersion::parse(&version)
                .map_err(|e| FactError::new(format!("{path}:{}: package {name}: {e}", s.line)))?;
            out.push(ListEntry { name, arch, version, list });
        }
        Ok(())
    };
    loop {
        lineno += 1;
        if !read_line(&mut reader, &mut buf, path, lineno)? {
            break;
        }
        if buf.iter().all(|b| b.is_ascii_whitespace()) {
            if in_stanza {
                finish(&mut st, &mut stanzas)?;
                in_stanza = false;
            }
            continue;
        }
        if !in_stanza {
            in_stanza = true;
            st.line = lineno;
        }
        match buf.first() {
            Some(b' ' | b'\t') => continue,
            Some(b'P') => {
                if let Some(v) = field_value(&buf, b"Package", path, lineno)? {
                    st.package = Some(v);
                    continue;
                }
            }
            Some(b'V') => {
                if let Some(v) = field_value(&buf, b"Version", path, lineno)? {
                    st.version = Some(v);
                    continue;
                }
            }
            Some(b'A') => {
                if let Some(v) = field_value(&buf, b"Architecture", path, lineno)? {
                    st.arch = Some(v);
                    continue;
                }
            }
            _ => {}
        }
        let key_ok = buf
            .iter()
            .position(|b| *b == b':')
            .is_some_and(|i| i > 0 && buf.get(..i).is_some_and(|k| k.iter().all(|b| b.is_ascii_graphic())));
        if !key_ok {
            return Err(FactError::new(format!("{path}:{lineno}: not a \"Field: value\" line (corrupt list?)")));
        }
    }
    if in_stanza {
        finish(&mut st, &mut stanzas)?;
    }
    Ok(stanzas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{offline, root_with, write};
    use std::io::Write;

    const INRELEASE: &str = "-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

Origin: Debian
Label: Debian-Security
Suite: oldstable-security
Version: 12
Codename: bookworm-security
Date: Sat, 21 Nov 2026 00:53:02 UTC
Valid-Until: Sat, 28 Nov 2026 00:53:02 UTC
SHA256:
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 contrib/Contents-amd64
- -dash-escaped: line
-----BEGIN PGP SIGNATURE-----

iQIzBAEBCAAdFiEE
-----END PGP SIGNATURE-----
";

    #[test]
    fn parses_inrelease_and_strips_armor() {
        let r = parse_release("/x_InRelease", INRELEASE).unwrap();
        assert!(r.clearsigned);
        assert_eq!(r.label.as_deref(), Some("Debian-Security"));
        assert_eq!(r.codename.as_deref(), Some("bookworm-security"));
        assert!(r.is_security());
        assert_eq!(r.default_priority(), 500);
        assert_eq!(r.describe(), "Debian-Security:12/oldstable-security");
        assert_eq!(r.date.unwrap().to_rfc3339(), "2026-11-21T00:53:02+00:00");
        assert!(r.valid_until.is_some());
    }

    #[test]
    fn release_priorities_and_errors() {
        let r = parse_release("/r", "Suite: experimental\nNotAutomatic: yes\n").unwrap();
        assert_eq!(r.default_priority(), 1);
        assert!(!r.is_security());
        let r =
            parse_release("/r", "Suite: bookworm-backports\nNotAutomatic: yes\nButAutomaticUpgrades: yes\n").unwrap();
        assert_eq!(r.default_priority(), 100);
        let r = parse_release("/r", "Origin: Ubuntu\nSuite: jammy-security\n").unwrap();
        assert!(r.is_security());
        assert!(parse_release("/r", "Origin: x\n").is_err());
        assert!(parse_release("/r", "garbage line\n").is_err());
        assert!(parse_release("/r", "-----BEGIN PGP SIGNED MESSAGE-----\nHash: x\n\nSuite: a\n").is_err());
    }

    const PACKAGES: &str = "Package: apt
Version: 2.6.2
Architecture: amd64
Description: package manager
 with continuation

Package: tzdata
Architecture: all
Version: 2026f-0+deb12u1

Package: other
Version: 1.0
Architecture: amd64
";

    fn scan(text: &[u8]) -> Result<Vec<ListEntry>, FactError> {
        let mut out = Vec::new();
        scan_packages(text, "/l", 0, &|n, _| n != "other", &mut out)?;
        Ok(out)
    }

    #[test]
    fn scan_keeps_only_wanted_packages() {
        let v = scan(PACKAGES.as_bytes()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].name.as_str(), v[0].arch.as_str(), v[0].version.to_string()),
            ("apt", "amd64", "2.6.2".into())
        );
        assert_eq!(v[1].arch, "all");
    }

    #[test]
    fn scan_refuses_garbage() {
        assert!(scan(b"Package: a\nVersion: 1\ngarbage\n").unwrap_err().to_string().contains("/l:3"));
        assert!(scan(b"Package: a\nArchitecture: all\n").is_err());
        assert!(scan(b"Package: apt\nVersion: a:b:c\n").is_err());
        assert!(scan(&[0x1f, 0x8b, 0x08, 0x00, 0xff, 0x00, b'\n']).is_err());
        let long = format!("Package: a\nDescription: {}\n", "x".repeat(LINE_LIMIT + 10));
        assert!(scan(long.as_bytes()).unwrap_err().to_string().contains("longer than"));
        // An unwanted stanza with a bad version does not matter.
        assert_eq!(scan(b"Package: other\nVersion: :\n").unwrap().len(), 0);
    }

    fn compressed(kind: Compression) -> Vec<u8> {
        match kind {
            Compression::Plain => PACKAGES.as_bytes().to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(PACKAGES.as_bytes()).unwrap();
                e.finish().unwrap()
            }
            Compression::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(PACKAGES.as_bytes()).unwrap();
                e.finish().unwrap()
            }
            // Produced with `xz -c` and `zstd -c` of PACKAGES.
            Compression::Xz | Compression::Zstd => {
                let tool = if kind == Compression::Xz { "xz" } else { "zstd" };
                let mut child = std::process::Command::new(tool)
                    .args(["-c", "-q"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(PACKAGES.as_bytes()).unwrap();
                child.wait_with_output().unwrap().stdout
            }
        }
    }

    #[test]
    fn discovers_pairs_and_decompresses_every_format() {
        let d = root_with(&[
            (
                "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
                "Suite: oldstable\nCodename: bookworm\n",
            ),
            ("/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm-updates_Release", "Suite: bookworm-updates\n"),
            ("/var/lib/apt/lists/lock", ""),
        ]);
        let mut kinds = vec![(Compression::Plain, ""), (Compression::Gzip, ".gz"), (Compression::Lz4, ".lz4")];
        for (k, tool) in [(Compression::Xz, "xz"), (Compression::Zstd, "zstd")] {
            if std::process::Command::new(tool).arg("--version").output().is_ok() {
                kinds.push((k, if tool == "xz" { ".xz" } else { ".zst" }));
            }
        }
        for (i, (kind, ext)) in kinds.iter().enumerate() {
            let name =
                format!("/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_c{i}_binary-amd64_Packages{ext}");
            write(d.path(), &name, &compressed(*kind));
        }
        write(
            d.path(),
            "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm-updates_main_binary-amd64_Packages",
            b"",
        );
        let h = offline(d.path());
        let lists = discover(&h).unwrap();
        assert!(lists.problems.is_empty(), "{:?}", lists.problems);
        assert_eq!(lists.lists.len(), kinds.len() + 1);
        for l in &lists.lists {
            let rel = &lists.releases[l.release.unwrap()];
            if l.path.contains("bookworm-updates") {
                assert_eq!(rel.suite.as_deref(), Some("bookworm-updates"));
                continue;
            }
            assert_eq!(rel.codename.as_deref(), Some("bookworm"), "{}", l.path);
            assert!(l.component.as_deref().unwrap().starts_with('c'));
            assert_eq!(l.site, "deb.debian.org");
            let mut out = Vec::new();
            let r = open_list(&h, l, DECOMPRESSED_LIMIT).unwrap();
            scan_packages(r, &l.path, 0, &|_, _| true, &mut out).unwrap();
            assert_eq!(out.len(), 3, "{}", l.path);
        }
    }

    #[test]
    fn unknown_compression_missing_release_and_bombs() {
        let d = root_with(&[
            ("/var/lib/apt/lists/x_dists_a_main_binary-amd64_Packages.bz2", "BZh"),
            ("/var/lib/apt/lists/y_dists_b_main_binary-amd64_Packages", PACKAGES),
        ]);
        let h = offline(d.path());
        let lists = discover(&h).unwrap();
        assert!(lists.problems.iter().any(|p| p.contains("Packages.bz2: unknown compression")));
        assert!(lists.problems.iter().any(|p| p.contains("y_dists_b_main_binary-amd64_Packages: no matching Release")));
        let l = lists.lists.iter().find(|l| l.path.contains("y_dists")).unwrap();
        let r = open_list(&h, l, 20).unwrap();
        let err = scan_packages(r, &l.path, 0, &|_, _| true, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("decompressed size exceeds 20"), "{err}");
        // Corrupt gzip is an error, not an empty list.
        write(d.path(), "/var/lib/apt/lists/y_dists_b_main_binary-amd64_Packages.gz", b"\x1f\x8b garbage");
        let lists = discover(&h).unwrap();
        let l = lists.lists.iter().find(|l| l.path.ends_with(".gz")).unwrap();
        let r = open_list(&h, l, DECOMPRESSED_LIMIT).unwrap();
        assert!(scan_packages(r, &l.path, 0, &|_, _| true, &mut Vec::new()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_release("/r", &s);
            let _ = scan_packages(s.as_bytes(), "/l", 0, &|_, _| true, &mut Vec::new());
        }

        #[test]
        fn scanner_never_panics_on_bytes(b in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = scan_packages(&b[..], "/l", 0, &|_, _| true, &mut Vec::new());
        }
    }
}
