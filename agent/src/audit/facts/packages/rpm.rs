//! Pending updates on RPM systems (RHEL, Rocky, Alma, Fedora), from dnf (or
//! yum) run through the Host's command runner, and RPM version ordering
//! (`rpmvercmp`, as in rpm's `rpmio/rpmvercmp.c`).
//!
//! dnf is always run with `--cacheonly`: refreshing metadata from the
//! network is slow, has side effects and may hang, and the freshness of the
//! cache is a finding of its own (`patch.package_lists_fresh`). So the
//! metadata cache must exist: without it dnf knows nothing and "0 updates"
//! would be a lie, so that is an error. Commands: `dnf -q --cacheonly
//! check-update` (exit 100: updates listed, 0: none, else an error) for all
//! updates and `dnf -q --cacheonly updateinfo list --security` for the
//! security advisories (dnf4 `ID Severity/Sec. NEVRA` and dnf5 table output).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use super::FactError;
use super::PackageDb;
use super::updates::{Freshness, Manager, PendingUpdate, UpdateStatus};
use crate::audit::host::Host;
use crate::audit::host::runner::display_command;

/// dnf reading a large cache can take a while; never let it hang the run.
const DNF_TIMEOUT: Duration = Duration::from_secs(120);

pub const CHECK_UPDATE_ARGS: [&str; 3] = ["-q", "--cacheonly", "check-update"];
pub const UPDATEINFO_ARGS: [&str; 5] = ["-q", "--cacheonly", "updateinfo", "list", "--security"];

/// Metadata caches of dnf4, dnf5 and yum: `<dir>/<repo>/repodata/repomd.xml`.
const CACHE_DIRS: [&str; 2] = ["/var/cache/dnf", "/var/cache/libdnf5"];

/// rpm's `rpmvercmp` for one version or release string.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    let at = |s: &[u8], k: usize| s.get(k).copied();
    let sep = |c: Option<u8>| c.is_some_and(|c| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^');
    loop {
        while sep(at(a, i)) {
            i += 1;
        }
        while sep(at(b, j)) {
            j += 1;
        }
        let (ca, cb) = (at(a, i), at(b, j));
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca == Some(b'^') || cb == Some(b'^') {
            if ca.is_none() {
                return Ordering::Less;
            }
            if cb.is_none() {
                return Ordering::Greater;
            }
            if ca != Some(b'^') {
                return Ordering::Greater;
            }
            if cb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca.is_none() || cb.is_none() {
            break;
        }
        let numeric = ca.is_some_and(|c| c.is_ascii_digit());
        let class =
            |c: Option<u8>| c.is_some_and(|c| if numeric { c.is_ascii_digit() } else { c.is_ascii_alphabetic() });
        let (si, sj) = (i, j);
        while class(at(a, i)) {
            i += 1;
        }
        while class(at(b, j)) {
            j += 1;
        }
        if sj == j {
            // Different segment types: numeric is newer than alphabetic.
            return if numeric { Ordering::Greater } else { Ordering::Less };
        }
        let (mut sa, mut sb) = (a.get(si..i).unwrap_or_default(), b.get(sj..j).unwrap_or_default());
        if numeric {
            while sa.first() == Some(&b'0') {
                sa = sa.get(1..).unwrap_or_default();
            }
            while sb.first() == Some(&b'0') {
                sb = sb.get(1..).unwrap_or_default();
            }
            match sa.len().cmp(&sb.len()) {
                Ordering::Equal => {}
                other => return other,
            }
        }
        match sa.cmp(sb) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    match (at(a, i).is_none(), at(b, j).is_none()) {
        (true, true) => Ordering::Equal,
        (false, _) => Ordering::Greater,
        (true, false) => Ordering::Less,
    }
}

/// An `[epoch:]version[-release]` triple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evr {
    pub epoch: u64,
    pub version: String,
    pub release: String,
}

impl Evr {
    pub fn parse(s: &str) -> Evr {
        let s = s.trim();
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => (e.parse().unwrap_or(0), rest),
            _ => (0, s),
        };
        let (version, release) = rest.rsplit_once('-').unwrap_or((rest, ""));
        Evr { epoch, version: version.to_string(), release: release.to_string() }
    }

    /// rpm's `rpmVersionCompare`: epoch, version, then release (a missing
    /// release matches any).
    pub fn cmp_evr(&self, other: &Evr) -> Ordering {
        self.epoch.cmp(&other.epoch).then_with(|| rpmvercmp(&self.version, &other.version)).then_with(|| {
            if self.release.is_empty() || other.release.is_empty() {
                Ordering::Equal
            } else {
                rpmvercmp(&self.release, &other.release)
            }
        })
    }
}

/// Split `name-[epoch:]version-release.arch` into (name, evr, arch).
pub fn split_nevra(s: &str) -> Option<(String, String, String)> {
    let (nevr, arch) = s.rsplit_once('.')?;
    let (nev, release) = nevr.rsplit_once('-')?;
    let (name, version) = nev.rsplit_once('-')?;
    if name.is_empty() || version.is_empty() || release.is_empty() || arch.is_empty() {
        return None;
    }
    Some((name.to_string(), format!("{version}-{release}"), arch.to_string()))
}

/// Parse `dnf check-update` output: `name.arch  evr  repo` lines (a long
/// name may wrap onto its own line), stopping at "Obsoleting Packages".
pub fn parse_check_update(cmd: &str, text: &str) -> Result<Vec<(String, String, String, String)>, FactError> {
    let mut out = Vec::new();
    let mut carry: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with("Last metadata expiration check") || t.starts_with("Security:") {
            continue;
        }
        if t.starts_with("Obsoleting Packages") {
            break;
        }
        let mut tokens: Vec<&str> = t.split_whitespace().collect();
        let joined;
        if let Some(c) = carry.take() {
            joined = format!("{c} {t}");
            tokens = joined.split_whitespace().collect();
        }
        if tokens.len() == 1 {
            carry = Some(t.to_string());
            continue;
        }
        let [na, evr, repo] = tokens.as_slice() else {
            return Err(FactError::new(format!("{cmd}: output line {}: not \"name.arch version repo\"", i + 1)));
        };
        let Some((name, arch)) = na.rsplit_once('.') else {
            return Err(FactError::new(format!("{cmd}: output line {}: {na:?} is not name.arch", i + 1)));
        };
        out.push((name.to_string(), arch.to_string(), evr.to_string(), repo.to_string()));
    }
    if carry.is_some() {
        return Err(FactError::new(format!("{cmd}: output ends in the middle of an entry")));
    }
    Ok(out)
}

/// Parse `dnf updateinfo list --security`: (advisory, name, evr, arch) for
/// every token that is a NEVRA.
pub fn parse_updateinfo(text: &str) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Some(id) = tokens.first() else { continue };
        if tokens.len() < 3 || id.eq_ignore_ascii_case("Name") {
            continue;
        }
        if let Some((name, evr, arch)) = tokens
            .iter()
            .skip(1)
            .find_map(|t| split_nevra(t).filter(|(_, e, _)| e.contains(|c: char| c.is_ascii_digit())))
        {
            out.push((id.to_string(), name, evr, arch));
        }
    }
    out
}

fn run_dnf(host: &Host, args: &[&str], ok: &[i32]) -> Result<(String, String), FactError> {
    let mut last = None;
    for prog in ["dnf", "yum"] {
        let shown = display_command(prog, args);
        match host.run_with_timeout(prog, args, DNF_TIMEOUT) {
            Ok(out) if out.status.is_some_and(|s| ok.contains(&s)) => {
                let code = out.status.unwrap_or_default();
                return Ok((shown.clone(), format!("{code}\n{}", out.stdout_text(&shown)?)));
            }
            Ok(out) => {
                return Err(FactError::new(format!(
                    "{shown}: exited with status {}: {}",
                    out.status.map_or_else(|| "signal".into(), |s| s.to_string()),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Err(e) if e.is_unavailable() => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or_else(|| FactError::new("dnf/yum not available"), FactError::from))
}

/// Newest `repomd.xml` in the dnf caches, or an error saying the cache is missing.
fn cache_freshness(host: &Host) -> Result<Freshness, FactError> {
    let mut best: Option<Freshness> = None;
    for dir in CACHE_DIRS {
        for repo in host.read_dir_optional(dir)? {
            let p = format!("{}/repodata/repomd.xml", repo.path);
            if let Some(t) = host.metadata(&p).ok().and_then(|m| m.modified)
                && best.as_ref().is_none_or(|b| t > b.refreshed)
            {
                best = Some(Freshness { refreshed: t, source: format!("{p} (modification time)") });
            }
        }
    }
    best.ok_or_else(|| {
        FactError::new(format!(
            "no dnf metadata cache (no repodata/repomd.xml under {}): pending updates are unknown; run `dnf makecache`",
            CACHE_DIRS.join(" or ")
        ))
    })
}

pub fn pending_updates(host: &Host, db: &PackageDb) -> Result<UpdateStatus, FactError> {
    let freshness = cache_freshness(host)?;
    let installed: BTreeMap<(&str, &str), &str> =
        db.packages.iter().map(|p| ((p.name.as_str(), p.architecture.as_str()), p.version.as_str())).collect();
    let (cu_cmd, cu) = run_dnf(host, &CHECK_UPDATE_ARGS, &[0, 100])?;
    let (code, body) = cu.split_once('\n').unwrap_or(("0", ""));
    let updates = parse_check_update(&cu_cmd, body)?;
    if code == "100" && updates.is_empty() {
        return Err(FactError::new(format!("{cu_cmd}: exit status 100 (updates available) but no update listed")));
    }
    let (ui_cmd, ui) = run_dnf(host, &UPDATEINFO_ARGS, &[0])?;
    let advisories = parse_updateinfo(ui.split_once('\n').map_or("", |(_, b)| b));
    let mut status = UpdateStatus {
        manager: Manager::Dnf,
        pending: Vec::new(),
        held: Vec::new(),
        sources: vec![db.source.clone(), cu_cmd.clone(), ui_cmd.clone()],
        freshness: Some(freshness),
        notes: Vec::new(),
    };
    for (name, arch, evr, repo) in updates {
        let Some(inst) = installed.get(&(name.as_str(), arch.as_str())).map(|v| v.to_string()) else {
            // A new package pulled in by an update, not an installed one.
            continue;
        };
        let cand = Evr::parse(&evr);
        let inst = inst.as_str();
        let mut suites = vec![repo];
        let mut security = false;
        for (id, an, aevr, aarch) in &advisories {
            if *an == name && *aarch == arch && Evr::parse(aevr).cmp_evr(&Evr::parse(inst)) == Ordering::Greater {
                security = true;
                if !suites.contains(id) {
                    suites.push(id.clone());
                }
            }
        }
        if cand.cmp_evr(&Evr::parse(inst)) != Ordering::Greater && !security {
            continue;
        }
        status.pending.push(PendingUpdate {
            name,
            arch,
            installed: inst.to_string(),
            candidate: evr,
            suites,
            security,
        });
    }
    for (id, an, _, aarch) in &advisories {
        if installed.contains_key(&(an.as_str(), aarch.as_str()))
            && !status.pending.iter().any(|p| &p.name == an && &p.arch == aarch)
        {
            status.notes.push(format!("{ui_cmd}: advisory {id} for {an}.{aarch} has no matching check-update entry"));
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal as E, Greater as G, Less as L};

    #[test]
    fn rpmvercmp_matches_rpm_test_suite() {
        // From rpm's tests/rpmvercmp.at.
        let cases: &[(&str, &str, Ordering)] = &[
            ("1.0", "1.0", E),
            ("1.0", "2.0", L),
            ("2.0.1", "2.0.1", E),
            ("2.0", "2.0.1", L),
            ("2.0.1a", "2.0.1", G),
            ("5.5p1", "5.5p2", L),
            ("5.5p10", "5.5p1", G),
            ("10xyz", "10.1xyz", L),
            ("xyz10", "xyz10.1", L),
            ("xyz.4", "8", L),
            ("1.0aa", "1.0a", G),
            ("a", "b", L),
            ("a+", "a_", E),
            ("+a", "_a", E),
            ("+", "_", E),
            ("1.0~rc1", "1.0", L),
            ("1.0~rc1", "1.0~rc2", L),
            ("1.0~rc1~git123", "1.0~rc1", L),
            ("1.0^", "1.0", G),
            ("1.0^git1", "1.0^git2", L),
            ("1.0^git1", "1.01", L),
            ("1.0^20160101", "1.0.1", L),
            ("1.0~rc1^git1", "1.0~rc1", G),
            ("1.0^git1~pre", "1.0^git1", L),
            ("6.0.rc1", "6.0", G),
            ("1b.fc17", "1.fc17", L),
            ("2.34-100.el9_4.2", "2.34-83.el9", G),
        ];
        for (a, b, want) in cases {
            assert_eq!(rpmvercmp(a, b), *want, "{a} vs {b}");
            assert_eq!(rpmvercmp(b, a), want.reverse(), "{b} vs {a}");
        }
        assert_eq!(Evr::parse("1:1.0-1").cmp_evr(&Evr::parse("0:2.0-1")), G);
        assert_eq!(Evr::parse("0:2.34-100.el9_4.2").cmp_evr(&Evr::parse("2.34-83.el9")), G);
    }

    #[test]
    fn parses_dnf_outputs() {
        let cu = "\nglibc.x86_64                 2.34-100.el9_4.2        baseos\nvery-long-package-name-here.noarch\n                             1.2-3.el9               appstream\n\nObsoleting Packages\nfoo.x86_64 1-1 baseos\n";
        let v = parse_check_update("c", cu).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].0, "very-long-package-name-here");
        assert!(parse_check_update("c", "a b c d\n").is_err());
        let ui = "RLSA-2024:3339 Important/Sec.  glibc-2.34-100.el9_4.2.x86_64\nALSA-2024:1 security Important openssl-libs-1:3.0.7-27.el9.x86_64 2024-03-01 12:00:00\n";
        let a = parse_updateinfo(ui);
        assert_eq!(a[0], ("RLSA-2024:3339".into(), "glibc".into(), "2.34-100.el9_4.2".into(), "x86_64".into()));
        assert_eq!(a[1].1, "openssl-libs");
        assert_eq!(a[1].2, "1:3.0.7-27.el9");
    }

    fn fixture() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rocky9-patch")
    }

    fn updates(h: &Host) -> Result<UpdateStatus, FactError> {
        let facts = crate::audit::facts::Facts::new(h);
        facts.get::<crate::audit::facts::packages::updates::UpdateFacts>().0.clone()
    }

    #[test]
    fn recorded_rocky9_outputs() {
        let h = Host::offline(fixture());
        let s = updates(&h).unwrap();
        let got: Vec<String> =
            s.pending.iter().map(|u| format!("{}.{} {} {}", u.name, u.arch, u.candidate, u.security)).collect();
        assert_eq!(
            got,
            [
                "glibc.x86_64 2.34-100.el9_4.2 true",
                "glibc-common.x86_64 2.34-100.el9_4.2 true",
                "kernel-core.x86_64 5.14.0-427.20.1.el9_4 true",
                "openssl.x86_64 1:3.0.7-27.el9_4.1 true",
                "openssl-libs.x86_64 1:3.0.7-27.el9_4.1 true",
                "tzdata.noarch 2024a-2.el9 false",
            ]
        );
        assert_eq!(s.pending[0].suites, ["baseos", "RLSA-2024:3339"]);
        assert!(s.freshness.unwrap().source.contains("repomd.xml"));
    }

    fn copy(src: &std::path::Path, dst: &std::path::Path) {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            let to = dst.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to)
            } else {
                std::fs::copy(e.path(), &to).unwrap();
            }
        }
    }

    #[test]
    fn missing_cache_or_failing_dnf_is_an_error_never_zero_updates() {
        let d = tempfile::tempdir().unwrap();
        copy(&fixture(), d.path());
        std::fs::remove_dir_all(d.path().join("var/cache/dnf")).unwrap();
        let e = updates(&Host::offline(d.path())).unwrap_err();
        assert!(e.to_string().contains("no dnf metadata cache"), "{e}");
        let d = tempfile::tempdir().unwrap();
        copy(&fixture(), d.path());
        let cmds = d.path().join(".commands");
        std::fs::write(cmds.join("dnf_-q_--cacheonly_check-update.exit"), "1\n").unwrap();
        std::fs::write(
            cmds.join("dnf_-q_--cacheonly_check-update.stderr"),
            "Error: Cache-only enabled but no cache for 'baseos'",
        )
        .unwrap();
        let e = updates(&Host::offline(d.path())).unwrap_err();
        assert!(e.to_string().contains("Cache-only enabled"), "{e}");
        std::fs::remove_file(cmds.join("dnf_-q_--cacheonly_check-update.exit")).unwrap();
        std::fs::write(cmds.join("dnf_-q_--cacheonly_check-update.timeout"), "").unwrap();
        assert!(updates(&Host::offline(d.path())).unwrap_err().to_string().contains("timed out"));
        // Exit 100 with nothing listed is contradictory, not "0 updates".
        std::fs::remove_file(cmds.join("dnf_-q_--cacheonly_check-update.timeout")).unwrap();
        std::fs::write(cmds.join("dnf_-q_--cacheonly_check-update.exit"), "100\n").unwrap();
        std::fs::write(cmds.join("dnf_-q_--cacheonly_check-update"), "").unwrap();
        assert!(updates(&Host::offline(d.path())).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = rpmvercmp(&s, "1.0");
            let _ = Evr::parse(&s);
            let _ = split_nevra(&s);
            let _ = parse_check_update("c", &s);
            let _ = parse_updateinfo(&s);
        }

        #[test]
        fn rpmvercmp_antisymmetric(a in "[0-9a-c.~^_]{0,6}", b in "[0-9a-c.~^_]{0,6}") {
            proptest::prop_assert_eq!(rpmvercmp(&a, &b), rpmvercmp(&b, &a).reverse());
        }
    }
}
