//! Pending updates on Debian and Ubuntu, computed the way apt's policy
//! (`apt-pkg/policy.cc`) chooses candidates, from the node's own files:
//! the dpkg status (installed packages and `hold` selections), the apt lists
//! and their Release files ([`super::apt_lists`]) and the pins
//! ([`super::apt_preferences`]).
//!
//! Candidate selection, per installed package and architecture: every
//! version offered by a list gets a priority: the first specific pin that
//! matches it, else the highest priority of the lists offering it (the first
//! generic pin matching the list, else 500, 1 for NotAutomatic, 100 for
//! NotAutomatic + ButAutomaticUpgrades). The installed version also counts
//! with priority 100 (the dpkg status file). Walking the versions from the
//! highest down, a version becomes the candidate when its priority is
//! strictly higher than the best so far (so ties go to the higher version,
//! and priority ≤ 0 never wins); at the installed version the walk stops
//! unless a pin ≥ 1000 could force a downgrade. A package whose dpkg
//! selection is `hold` is never upgraded. Architectures: `all` belongs to
//! the native architecture (that of the installed `dpkg` package), foreign
//! (multiarch) packages only match lists of their own architecture.
//!
//! Not modelled: dependencies (dist-upgrade may keep back or add packages),
//! Ubuntu phased updates and `APT::Default-Release`; these are stated in
//! the result's notes where they can matter.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use super::FactError;
use super::PackageDb;
use super::apt_lists::{self, AptLists, DECOMPRESSED_LIMIT, LISTS_DIR, ListEntry};
use super::apt_preferences::{self, ListAttrs, Pin, Preferences};
use super::debversion::DebVersion;
use super::updates::{Freshness, HeldUpdate, Manager, PendingUpdate, UpdateStatus};
use crate::audit::host::Host;

/// Touched by apt's daily job after a successful `apt-get update`.
const UPDATE_STAMP: &str = "/var/lib/apt/periodic/update-success-stamp";

/// Priority of the dpkg status file (the installed version).
const STATUS_PRIORITY: i32 = 100;

#[derive(Debug, Clone)]
struct Installed {
    name: String,
    arch: String,
    version: DebVersion,
    held: bool,
}

/// The native architecture: that of the installed dpkg package.
fn native_arch(db: &PackageDb) -> Result<String, FactError> {
    if let Some(p) = db.installed("dpkg").filter(|p| !p.architecture.is_empty() && p.architecture != "all") {
        return Ok(p.architecture.clone());
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &db.packages {
        if p.architecture != "all" && !p.architecture.is_empty() {
            *counts.entry(p.architecture.as_str()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(a, _)| a.to_string())
        .ok_or_else(|| FactError::new(format!("{}: cannot tell the native architecture", db.source)))
}

fn attrs<'a>(lists: &'a AptLists, idx: usize) -> ListAttrs<'a> {
    let Some(l) = lists.lists.get(idx) else { return ListAttrs::default() };
    let rel = l.release.and_then(|r| lists.releases.get(r));
    ListAttrs {
        archive: rel.and_then(|r| r.suite.as_deref()),
        codename: rel.and_then(|r| r.codename.as_deref()),
        origin: rel.and_then(|r| r.origin.as_deref()),
        label: rel.and_then(|r| r.label.as_deref()),
        component: l.component.as_deref(),
        version: rel.and_then(|r| r.version.as_deref()),
        arch: l.path.rsplit_once("_binary-").and_then(|(_, rest)| rest.split('_').next()),
        site: &l.site,
    }
}

/// A list's priority: the first matching generic pin, else the suite default.
fn list_priority<'p>(lists: &AptLists, idx: usize, pins: &'p [Pin]) -> (i32, Option<&'p Pin>) {
    let a = attrs(lists, idx);
    if let Some(pin) = pins.iter().find(|p| p.is_generic() && p.target.is_list_pin() && p.target.matches(&a, "")) {
        return (pin.priority, Some(pin));
    }
    let default = lists
        .lists
        .get(idx)
        .and_then(|l| l.release)
        .and_then(|r| lists.releases.get(r))
        .map_or(500, |r| r.default_priority());
    (default, None)
}

/// One version of one installed package, with where it is offered.
#[derive(Debug)]
struct Offer<'a> {
    version: &'a DebVersion,
    lists: Vec<usize>,
    installed: bool,
}

/// The priority of one version and the pin that set it, if any.
fn version_priority<'p>(
    name: &str,
    offer: &Offer<'_>,
    lists: &AptLists,
    prefs: &'p Preferences,
    list_prio: &[(i32, Option<&'p Pin>)],
) -> (i32, Option<&'p Pin>) {
    let v = offer.version.to_string();
    let specific = prefs.pins.iter().find(|p| {
        !p.is_generic()
            && p.matches_package(name)
            && if p.target.is_list_pin() {
                offer.lists.iter().any(|i| p.target.matches(&attrs(lists, *i), &v))
            } else {
                p.target.matches(&ListAttrs::default(), &v)
            }
    });
    if let Some(p) = specific {
        return (p.priority, Some(p));
    }
    let mut best: Option<(i32, Option<&Pin>)> = None;
    for i in &offer.lists {
        let lp = list_prio.get(*i).copied().unwrap_or((500, None));
        if best.is_none_or(|(b, _)| lp.0 > b) {
            best = Some(lp);
        }
    }
    if offer.installed {
        best = Some(match best {
            Some((b, pin)) if b > STATUS_PRIORITY => (b, pin),
            _ => (STATUS_PRIORITY, None),
        });
    }
    best.unwrap_or((500, None))
}

/// Compute the pending updates from the files under the host's root.
pub fn pending_updates(host: &Host, db: &PackageDb) -> Result<UpdateStatus, FactError> {
    let native = native_arch(db)?;
    let effective = |arch: &str| if arch == "all" { native.clone() } else { arch.to_string() };
    let mut installed: HashMap<(String, String), Installed> = HashMap::new();
    for p in db.packages.iter().filter(|p| p.is_installed()) {
        let version = DebVersion::parse(&p.version).map_err(|e| FactError::new(format!("{}: {e}", p.origin)))?;
        let arch = effective(&p.architecture);
        let held = p.status.split_whitespace().next() == Some("hold");
        installed.insert((p.name.clone(), arch.clone()), Installed { name: p.name.clone(), arch, version, held });
    }
    let mut archs_by_name: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (n, a) in installed.keys() {
        archs_by_name.entry(n.as_str()).or_default().insert(a.as_str());
    }
    let lists = apt_lists::discover(host).map_err(|e| {
        FactError::new(format!("{e}: no apt lists, so pending updates are unknown (run `apt-get update`)"))
    })?;
    if !lists.problems.is_empty() {
        return Err(FactError::new(lists.problems.join("; ")));
    }
    if lists.lists.is_empty() {
        return Err(FactError::new(format!(
            "{LISTS_DIR} holds no Packages lists (apt-get update never ran, or the lists were removed): pending updates are unknown"
        )));
    }
    let prefs = apt_preferences::load(host)?;
    if !prefs.problems.is_empty() {
        return Err(FactError::new(format!("apt preferences not understood: {}", prefs.problems.join("; "))));
    }
    let wanted = |name: &str, arch: &str| {
        archs_by_name
            .get(name)
            .is_some_and(|archs| if arch == "all" { archs.contains(native.as_str()) } else { archs.contains(arch) })
    };
    let mut entries: Vec<ListEntry> = Vec::new();
    for (i, l) in lists.lists.iter().enumerate() {
        let reader = apt_lists::open_list(host, l, DECOMPRESSED_LIMIT)?;
        apt_lists::scan_packages(reader, &l.path, i, &wanted, &mut entries)?;
    }
    let list_prio: Vec<(i32, Option<&Pin>)> =
        (0..lists.lists.len()).map(|i| list_priority(&lists, i, &prefs.pins)).collect();

    let mut offered: HashMap<(&str, String), BTreeMap<&DebVersion, Vec<usize>>> = HashMap::new();
    for e in &entries {
        offered.entry((e.name.as_str(), effective(&e.arch))).or_default().entry(&e.version).or_default().push(e.list);
    }

    let mut status = UpdateStatus {
        manager: Manager::Apt,
        pending: Vec::new(),
        held: Vec::new(),
        sources: vec![db.source.clone()],
        freshness: freshness(host, &lists),
        notes: Vec::new(),
    };
    status.sources.extend(lists.lists.iter().map(|l| l.path.clone()));
    status.sources.extend(prefs.files.iter().cloned());
    let force_downgrades = prefs.pins.iter().any(|p| p.priority >= 1000);
    let describe = |idxs: &[usize]| -> (Vec<String>, bool) {
        let mut suites = Vec::new();
        let mut security = false;
        for i in idxs {
            let rel = lists.lists.get(*i).and_then(|l| l.release).and_then(|r| lists.releases.get(r));
            if let Some(r) = rel {
                security |= r.is_security();
                let d = r.describe();
                if !suites.contains(&d) {
                    suites.push(d);
                }
            }
        }
        (suites, security)
    };

    let mut keys: Vec<&(String, String)> = installed.keys().collect();
    keys.sort();
    for key in keys {
        let Some(inst) = installed.get(key) else { continue };
        let empty = BTreeMap::new();
        let versions = offered.get(&(inst.name.as_str(), inst.arch.clone())).unwrap_or(&empty);
        let mut offers: Vec<Offer<'_>> = versions
            .iter()
            .map(|(v, l)| Offer { version: v, lists: l.clone(), installed: **v == inst.version })
            .collect();
        if !offers.iter().any(|o| o.installed) {
            offers.push(Offer { version: &inst.version, lists: Vec::new(), installed: true });
        }
        offers.sort_by(|a, b| b.version.cmp(a.version));
        // apt's GetCandidateVer.
        let mut max = 0i32;
        let mut pref: Option<usize> = None;
        let mut blocked: Option<(usize, i32, &Pin)> = None;
        for (i, o) in offers.iter().enumerate() {
            let (prio, pin) = version_priority(&inst.name, o, &lists, &prefs, &list_prio);
            if prio > max {
                pref = Some(i);
                max = prio;
            } else if !o.installed
                && *o.version > inst.version
                && blocked.is_none()
                && let Some(pin) = pin
            {
                blocked = Some((i, prio, pin));
            }
            if o.installed && max < 1000 {
                if pref.is_none() {
                    pref = Some(i);
                }
                max = 999;
                if !force_downgrades {
                    break;
                }
            }
        }
        let Some(cand) = pref.and_then(|i| offers.get(i)) else { continue };
        if *cand.version > inst.version {
            let (suites, security) = describe(&cand.lists);
            if inst.held {
                status.held.push(HeldUpdate {
                    name: inst.name.clone(),
                    arch: inst.arch.clone(),
                    installed: inst.version.to_string(),
                    available: cand.version.to_string(),
                    security,
                    why: "held (dpkg selection \"hold\", e.g. apt-mark hold)".into(),
                });
                continue;
            }
            status.pending.push(PendingUpdate {
                name: inst.name.clone(),
                arch: inst.arch.clone(),
                installed: inst.version.to_string(),
                candidate: cand.version.to_string(),
                suites,
                security,
            });
        } else if let Some((i, prio, pin)) = blocked
            && let Some(o) = offers.get(i)
        {
            let (_, security) = describe(&o.lists);
            status.held.push(HeldUpdate {
                name: inst.name.clone(),
                arch: inst.arch.clone(),
                installed: inst.version.to_string(),
                available: o.version.to_string(),
                security,
                why: format!("pinned to priority {prio} by {}", pin.source),
            });
        }
    }
    let now = SystemTime::now();
    for r in &lists.releases {
        if let Some(v) = r.valid_until
            && SystemTime::from(v) < now
        {
            status.notes.push(format!("{}: expired on {} (Valid-Until); apt would refuse it", r.path, v.date_naive()));
        }
    }
    if lists.releases.iter().any(|r| r.clearsigned) {
        status.notes.push("InRelease signatures are not re-verified (apt verified them when downloading)".into());
    }
    Ok(status)
}

/// The newest sign of an `apt-get update`: Release files, `partial/` and
/// the periodic update stamp (mtimes), and the Release files' `Date:`.
fn freshness(host: &Host, lists: &AptLists) -> Option<Freshness> {
    let mut best: Option<Freshness> = lists
        .newest_mtime
        .as_ref()
        .map(|(t, p)| Freshness { refreshed: *t, source: format!("{p} (modification time)") });
    let mut consider = |t: SystemTime, source: String| {
        if best.as_ref().is_none_or(|b| t > b.refreshed) {
            best = Some(Freshness { refreshed: t, source });
        }
    };
    if let Some(t) = host.metadata(UPDATE_STAMP).ok().and_then(|m| m.modified) {
        consider(t, format!("{UPDATE_STAMP} (modification time)"));
    }
    for r in &lists.releases {
        if let Some(d) = r.date {
            consider(SystemTime::from(d), format!("{} (Date: field)", r.path));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::facts::packages::parse_dpkg_status;
    use crate::testutil::{offline, root_with};

    const STATUS: &str = "Package: dpkg
Status: install ok installed
Architecture: amd64
Version: 1.21.22

Package: apt
Status: install ok installed
Architecture: amd64
Version: 2.6.1

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2026b-0+deb12u1

Package: libc6
Status: install ok installed
Architecture: i386
Multi-Arch: same
Version: 2.36-9+deb12u7

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u7

Package: perl-base
Status: hold ok installed
Architecture: amd64
Version: 5.36.0-7+deb12u3

Package: openssl
Status: install ok installed
Architecture: amd64
Version: 3.0.15-1~deb12u1

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
";

    const MAIN: &str = "Package: apt\nVersion: 2.6.1\nArchitecture: amd64\n\n\
Package: tzdata\nVersion: 2026b-0+deb12u1\nArchitecture: all\n\n\
Package: libc6\nVersion: 2.36-9+deb12u14\nArchitecture: amd64\n\n\
Package: removed\nVersion: 9.0\nArchitecture: amd64\n\n\
Package: notinstalled\nVersion: 9.0\nArchitecture: amd64\n";

    const SECURITY: &str = "Package: apt\nVersion: 2.6.2\nArchitecture: amd64\n\n\
Package: tzdata\nVersion: 2026f-0+deb12u1\nArchitecture: all\n\n\
Package: libc6\nVersion: 2.36-9+deb12u1\nArchitecture: amd64\n\n\
Package: perl-base\nVersion: 5.36.0-7+deb12u4\nArchitecture: amd64\n\n\
Package: openssl\nVersion: 3.0.17-1~deb12u1\nArchitecture: amd64\n";

    const L: &str = "/var/lib/apt/lists/deb.debian.org_debian";

    fn root(extra: &[(&str, &str)]) -> tempfile::TempDir {
        let mut files: Vec<(String, String)> = vec![
            ("/var/lib/dpkg/status".into(), STATUS.into()),
            (format!("{L}_dists_bookworm_InRelease"), "Origin: Debian\nLabel: Debian\nSuite: oldstable\nCodename: bookworm\nVersion: 12.15\n".into()),
            (format!("{L}_dists_bookworm_main_binary-amd64_Packages"), MAIN.into()),
            (format!("{L}-security_dists_bookworm-security_InRelease"), "Origin: Debian\nLabel: Debian-Security\nSuite: oldstable-security\nCodename: bookworm-security\nVersion: 12\n".into()),
            (format!("{L}-security_dists_bookworm-security_main_binary-amd64_Packages"), SECURITY.into()),
        ];
        files.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
        let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        root_with(&refs)
    }

    fn compute(d: &tempfile::TempDir) -> Result<UpdateStatus, FactError> {
        let h = offline(d.path());
        let db = parse_dpkg_status(
            "/var/lib/dpkg/status",
            &std::fs::read_to_string(d.path().join("var/lib/dpkg/status")).unwrap(),
        );
        pending_updates(&h, &db)
    }

    fn summary(s: &UpdateStatus) -> Vec<String> {
        s.pending.iter().map(|u| format!("{}:{} {} {}", u.name, u.arch, u.candidate, u.security)).collect()
    }

    #[test]
    fn candidates_security_multiarch_and_hold() {
        let d = root(&[]);
        let s = compute(&d).unwrap();
        assert_eq!(
            summary(&s),
            [
                "apt:amd64 2.6.2 true",
                "libc6:amd64 2.36-9+deb12u14 false",
                "openssl:amd64 3.0.17-1~deb12u1 true",
                "tzdata:amd64 2026f-0+deb12u1 true",
            ]
        );
        // libc6:i386 has no i386 list: not upgradable. perl-base is held.
        assert_eq!(s.held.len(), 1);
        assert_eq!(s.held[0].name, "perl-base");
        assert!(s.held[0].why.contains("held"));
        assert!(s.held[0].security);
        let apt = &s.pending[0];
        assert_eq!(apt.suites, ["Debian-Security:12/oldstable-security"]);
        assert!(s.freshness.is_some());
    }

    #[test]
    fn pins_below_zero_and_not_automatic() {
        let d = root(&[
            (
                "/etc/apt/preferences.d/no-openssl",
                "Package: openssl\nPin: release l=Debian-Security\nPin-Priority: -1\n",
            ),
            (
                "/etc/apt/preferences",
                "Package: *\nPin: release n=bookworm-security\nPin-Priority: 1\n\nPackage: tzdata\nPin: version 2026f*\nPin-Priority: 600\n",
            ),
        ]);
        let s = compute(&d).unwrap();
        // Security suite at priority 1: only tzdata (specific pin 600) and libc6 (main) remain.
        assert_eq!(summary(&s), ["libc6:amd64 2.36-9+deb12u14 false", "tzdata:amd64 2026f-0+deb12u1 true"]);
        let openssl = s.held.iter().find(|h| h.name == "openssl").unwrap();
        assert_eq!(openssl.why, "pinned to priority -1 by /etc/apt/preferences.d/no-openssl:1");
    }

    #[test]
    fn ties_go_to_the_higher_version_and_downgrades_need_1000() {
        let d = root(&[("/etc/apt/preferences", "Package: libc6\nPin: version 2.36-9+deb12u1\nPin-Priority: 1001\n")]);
        let s = compute(&d).unwrap();
        // A 1001 pin on an older version is a downgrade, never an upgrade.
        assert!(!summary(&s).iter().any(|l| l.starts_with("libc6")));
        let d = root(&[
            (
                format!("{L}_dists_bookworm-backports_Release").as_str(),
                "Suite: bookworm-backports\nNotAutomatic: yes\nButAutomaticUpgrades: yes\n",
            ),
            (
                format!("{L}_dists_bookworm-backports_main_binary-amd64_Packages").as_str(),
                "Package: apt\nVersion: 2.9.0\nArchitecture: amd64\n",
            ),
        ]);
        let s = compute(&d).unwrap();
        // Backports (100) lose against the security suite's 500.
        assert!(summary(&s).contains(&"apt:amd64 2.6.2 true".to_string()), "{:?}", summary(&s));
        let d = root(&[
            (format!("{L}_dists_bookworm-updates_Release").as_str(), "Suite: bookworm-updates\n"),
            (
                format!("{L}_dists_bookworm-updates_main_binary-amd64_Packages").as_str(),
                "Package: apt\nVersion: 2.6.3\nArchitecture: amd64\n",
            ),
        ]);
        let s = compute(&d).unwrap();
        // Equal priorities (500): the higher version wins.
        assert!(summary(&s).contains(&"apt:amd64 2.6.3 false".to_string()), "{:?}", summary(&s));
        let d = root(&[
            (format!("{L}_dists_experimental_Release").as_str(), "Suite: experimental\nNotAutomatic: yes\n"),
            (
                format!("{L}_dists_experimental_main_binary-amd64_Packages").as_str(),
                "Package: apt\nVersion: 3.0\nArchitecture: amd64\n",
            ),
        ]);
        let s = compute(&d).unwrap();
        assert!(summary(&s).contains(&"apt:amd64 2.6.2 true".to_string()));
    }

    #[test]
    fn broken_inputs_are_errors() {
        let d = root(&[(format!("{L}_dists_bookworm_main_binary-amd64_Packages").as_str(), "Package: apt\ngarbage\n")]);
        assert!(compute(&d).unwrap_err().to_string().contains("binary-amd64_Packages:2"));
        let d = root(&[(format!("{L}_dists_bookworm_main_binary-i386_Packages.bz2").as_str(), "x")]);
        assert!(compute(&d).unwrap_err().to_string().contains("unknown compression"));
        let d = root(&[("/var/lib/apt/lists/x_Packages", MAIN)]);
        assert!(compute(&d).unwrap_err().to_string().contains("no matching Release"));
        let d = root(&[("/etc/apt/preferences", "Package: /re/\nPin: release a=x\nPin-Priority: 1\n")]);
        assert!(compute(&d).unwrap_err().to_string().contains("not supported"));
        let d = root_with(&[("/var/lib/dpkg/status", STATUS)]);
        assert!(compute(&d).unwrap_err().to_string().contains("run `apt-get update`"));
        let d = root_with(&[("/var/lib/dpkg/status", STATUS), ("/var/lib/apt/lists/lock", "")]);
        assert!(compute(&d).unwrap_err().to_string().contains("no Packages lists"));
    }
}
