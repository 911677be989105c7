//! Agreement with OpenSCAP, measured: every Debian-like fixture root is
//! prepared (its `.setup` applied) and audited twice, by OpenSCAP 1.3.7 with
//! the ComplianceAsCode (SSG) content Debian ships (`ssg-debderived`,
//! `ssg-debian`) and by our agent, and every check that cites SSG rules is
//! compared with OpenSCAP's verdict on those rules.
//!
//! OpenSCAP runs offline in chroot mode
//! (`OSCAP_PROBE_ROOT=ROOT OSCAP_EVALUATION_TARGET=chroot://ROOT oscap xccdf
//! eval`) with an `APT_CONFIG` of its own, so that its dpkginfo probe reads
//! the root's dpkg database and not the host's apt configuration. Profiles,
//! in precedence order (a rule's verdict comes from the first that decides
//! it, pass or fail, else from the first that selects it):
//!
//! - `cis_level2_server` of the Ubuntu 22.04 datastream, on a copy with the
//!   benchmark-level `<platform>` line removed (as shipped it only applies
//!   where `/etc/lsb-release` says Ubuntu jammy; per-rule platforms stay);
//! - `anssi_np_nt28_high` of the Debian 11 datastream (copy without its
//!   benchmark-level platform, which wants Debian 11 exactly);
//! - a tailored profile, per datastream, selecting the SSG rules our checks
//!   cite that no shipped profile above selects, with [`REFINE`]d values.
//!
//! The shipped profiles run through a tailoring that extends them when a
//! rule must be left out ([`DESELECT`]: rules whose probes write into the
//! audited root, and rules whose Ubuntu OVAL names a package Debian does not
//! have while the Debian content, run next, has it right). The root must
//! hold exactly the same paths after OpenSCAP as before, and OpenSCAP's
//! dpkginfo probe must work on every root whose dpkg database dpkg-query
//! can read.
//!
//! A check citing several rules is their conjunction: OpenSCAP fails it if
//! any cited rule it evaluated fails, passes it if all it evaluated pass, and
//! the pair is not comparable when it evaluated none (notselected,
//! notapplicable, notchecked, error, unknown). Categories: agree, FALSE PASS
//! (we pass, OpenSCAP fails: the worst), stricter (we fail, OpenSCAP
//! passes), undecided (we say error or not_applicable where OpenSCAP
//! decided). `waived` counts as our fail. A pair whose evaluated rules
//! include one listed in `tests/openscap/exclusions.tsv` for that fixture is
//! excluded (reported, not counted): the list says, rule by rule, why
//! OpenSCAP is wrong there.
//!
//! Where our check deliberately decides more than the rules it cites (a CIS
//! control they do not check), or refuses to decide on input it cannot read
//! (the engineering standards make malformed input an `error`), the pair is
//! listed in `tests/openscap/deviations.tsv` with a substring our finding's
//! reason must contain; only `stricter` and `undecided` pairs can be.
//!
//! The test prints every comparable pair and the agreement figure first,
//! then fails on any false pass, then on any other disagreement (the target
//! is 100 % outside the exclusions). Exclusion entries that excluded nothing
//! in a run are printed, not failed: each is a statement about OpenSCAP that
//! stays true when our checks stop citing the rule.
//!
//! To read a rule's OVAL: `oscap info --profile ... DATASTREAM` lists rules;
//! the check is `<oval-def:definition id="oval:ssg-RULE:def:1">` in the
//! datastream, with its tests, objects and states next to it.
//! `KOSMOS_OPENSCAP_KEEP=1` keeps the prepared roots and OpenSCAP's results.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../agent/tests/common/fixture.rs"]
mod fixture;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kosmos_e2e::{agent_check, cannot_run, repo};

const TEST: &str = "openscap";

/// The Debian-like fixture roots. The `kubelet-*` roots are Debian 12 too,
/// but hold only kubelet files, os-release and a hostname: for the operating
/// system rules OpenSCAP evaluates they are `minimal` again, at ~8 s each.
/// `rocky9-patch` is not Debian-like.
const FIXTURES: &[&str] = &["hostile", "hardened", "weak", "minimal"];

/// Dates are judged as of the day the fixture expectations use.
const AS_OF: &str = "2026-11-22";

const CONTENT_DIRS: &[&str] = &["/usr/share/xml/scap/ssg/content", "/usr/share/scap-security-guide/content"];
const RULE_PREFIX: &str = "xccdf_org.ssgproject.content_rule_";
const PROFILE_PREFIX: &str = "xccdf_org.ssgproject.content_profile_";
const VALUE_PREFIX: &str = "xccdf_org.ssgproject.content_value_";

struct Datastream {
    key: &'static str,
    file: &'static str,
    /// The benchmark-level platform, removed in our copy.
    platform: &'static str,
}

const DATASTREAMS: &[Datastream] = &[
    Datastream {
        key: "ubuntu2204",
        file: "ssg-ubuntu2204-ds.xml",
        platform: r#"<xccdf-1.2:platform idref="cpe:/o:canonical:ubuntu_linux:22.04::~~lts~~~"/>"#,
    },
    Datastream {
        key: "debian11",
        file: "ssg-debian11-ds.xml",
        platform: r#"<xccdf-1.2:platform idref="cpe:/o:debian:debian_linux:11"/>"#,
    },
];

/// Shipped profiles, in precedence order: (label, datastream key, profile).
const PROFILES: &[(&str, &str, &str)] =
    &[("cis_l2", "ubuntu2204", "cis_level2_server"), ("anssi_high", "debian11", "anssi_np_nt28_high")];

/// Values set in the tailored profiles: (rule, XCCDF value, selector, why).
const REFINE: &[(&str, &str, &str, &str)] = &[(
    "sysctl_kernel_kptr_restrict",
    "sysctl_kernel_kptr_restrict_value",
    "2",
    // The OVAL tests `equals`; the content's default is 1.
    "ANSSI BP-028 v2.0 R9, which sysctl.kptr_restrict cites, asks for kernel.kptr_restrict=2",
)];

/// Rules left out of a shipped profile run (by a tailoring that extends the
/// profile): (run label, rule, why). The audit rules then come from the
/// Debian content in `anssi_high`; the others are cited by no check. The
/// guard that the audited root is left unchanged finds any new writer.
const DESELECT: &[(&str, &str, &str)] = &[
    (
        "cis_l2",
        "sshd_use_approved_ciphers",
        "its OVAL asks rpminfo whether this is a FIPS-certified RHEL, and in chroot mode the rpm probe creates \
         rpmdb.sqlite in the audited root",
    ),
    ("cis_l2", "sshd_use_approved_macs", "same rpminfo query as sshd_use_approved_ciphers"),
    (
        "cis_l2",
        "package_audit_installed",
        "the ubuntu2204 OVAL looks for a dpkg package named \"audit\", which exists on neither Debian nor Ubuntu; \
         the debian11 content (anssi_high) looks for \"auditd\"",
    ),
    (
        "cis_l2",
        "service_auditd_enabled",
        "the ubuntu2204 OVAL requires the nonexistent dpkg package \"audit\"; the debian11 content (anssi_high) \
         requires \"auditd\"",
    ),
];

/// One `oscap xccdf eval` per fixture.
struct Run {
    label: String,
    datastream: PathBuf,
    profile: String,
    tailoring: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Category {
    FalsePass,
    Stricter,
    Undecided,
    Agree,
}

impl Category {
    fn label(self) -> &'static str {
        match self {
            Category::FalsePass => "FALSE PASS",
            Category::Stricter => "stricter",
            Category::Undecided => "undecided",
            Category::Agree => "agree",
        }
    }
}

/// One `oscap xccdf eval` done.
struct Evaluation {
    fixture: &'static str,
    run: usize,
    verdicts: Verdicts,
    took: Duration,
    stderr: String,
}

/// One rule's verdict on one fixture: (result, run label).
type Verdicts = BTreeMap<String, (String, String)>;

#[test]
fn agent_agrees_with_openscap_on_fixture_roots() {
    let Some(oscap) = which("oscap") else {
        cannot_run(TEST, "oscap is not installed (.ci/run installs openscap-scanner ssg-debian ssg-debderived)");
        return;
    };
    let Some(content) =
        CONTENT_DIRS.iter().map(Path::new).find(|d| DATASTREAMS.iter().all(|ds| d.join(ds.file).is_file()))
    else {
        cannot_run(TEST, "the SSG datastreams are not installed (packages ssg-debian and ssg-debderived)");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        cannot_run(TEST, "not root: the fixtures' .setup files chown files");
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("kosmos-openscap-").tempdir().unwrap();
    let work = tmp.path();
    let (exclusions, entries) = read_exclusions();
    let deviations = read_deviations();

    // Prepared roots and our agent's findings on each.
    let mut reports = BTreeMap::new();
    let mut trees = BTreeMap::new();
    for name in FIXTURES {
        let root = work.join("roots").join(name);
        prepare_root(name, &root);
        trees.insert(*name, tree(&root));
        reports.insert(*name, agent_report(&root, &work.join("state").join(name)));
    }
    let cited: BTreeSet<String> =
        reports.values().flat_map(|r| r.iter().flat_map(|(_, _, rules, _)| rules.iter().cloned())).collect();

    // Datastream copies, profiles and tailorings.
    let apt_config = write_apt_config(work);
    let mut runs = Vec::new();
    let mut covered = BTreeSet::new();
    let mut catalog = BTreeMap::new();
    for ds in DATASTREAMS {
        let text = std::fs::read_to_string(content.join(ds.file)).unwrap();
        assert_eq!(
            text.matches(ds.platform).count(),
            1,
            "{}: expected its benchmark-level platform {} exactly once (has the SSG content changed?)",
            ds.file,
            ds.platform
        );
        let copy = work.join(ds.file);
        std::fs::write(&copy, text.replacen(ds.platform, "", 1)).unwrap();
        catalog.insert(ds.key, (copy, Catalog::parse(&text)));
    }
    for (label, key, profile) in PROFILES {
        let (copy, cat) = &catalog[key];
        let selected = cat.profiles.get(*profile).unwrap_or_else(|| panic!("{key}: no profile {profile}"));
        let left_out: BTreeSet<String> = DESELECT
            .iter()
            .filter(|(l, _, _)| l == label)
            .map(|(_, r, _)| (*r).to_string())
            .filter(|r| selected.contains(r))
            .collect();
        covered.extend(selected.iter().filter(|r| cited.contains(*r) && !left_out.contains(*r)).cloned());
        let shipped = format!("{PROFILE_PREFIX}{profile}");
        let (profile, tailoring_file) = if left_out.is_empty() {
            (shipped, None)
        } else {
            let path = work.join(format!("tailoring-{label}.xml"));
            let id = format!("xccdf_io.kosmos_profile_{label}");
            let t = Tailoring { profile: &id, extends: Some(&shipped), select: &BTreeSet::new(), deselect: &left_out };
            std::fs::write(&path, t.xml(cat)).unwrap();
            (id, Some(path))
        };
        runs.push(Run { label: (*label).to_string(), datastream: copy.clone(), profile, tailoring: tailoring_file });
    }
    for ds in DATASTREAMS {
        let (copy, cat) = &catalog[ds.key];
        let extra: BTreeSet<String> =
            cited.iter().filter(|r| !covered.contains(*r) && cat.rules.contains(*r)).cloned().collect();
        if extra.is_empty() {
            continue;
        }
        let label = format!("cited_{}", ds.key);
        let path = work.join(format!("tailoring-{}.xml", ds.key));
        let profile = format!("xccdf_io.kosmos_profile_{label}");
        let t = Tailoring { profile: &profile, extends: None, select: &extra, deselect: &BTreeSet::new() };
        std::fs::write(&path, t.xml(cat)).unwrap();
        covered.extend(extra);
        runs.push(Run { label, datastream: copy.clone(), profile, tailoring: Some(path) });
    }

    // OpenSCAP: every (fixture, run), a few at a time.
    let jobs: Mutex<Vec<(&'static str, usize)>> =
        Mutex::new(FIXTURES.iter().flat_map(|f| (0..runs.len()).map(move |i| (*f, i))).rev().collect());
    let done: Mutex<Vec<Evaluation>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let Some((fixture, i)) = jobs.lock().unwrap().pop() else { break };
                    let root = work.join("roots").join(fixture);
                    let out = work.join(format!("results-{fixture}-{}.xml", runs[i].label));
                    let t = Instant::now();
                    let stderr = oscap_eval(&oscap, &runs[i], &root, &apt_config, &out);
                    let verdicts = parse_results(&out, &runs[i].label);
                    let took = t.elapsed();
                    done.lock().unwrap().push(Evaluation { fixture, run: i, verdicts, took, stderr });
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|e| (e.fixture, e.run));

    let mut out = String::new();
    writeln!(out, "\n=== OpenSCAP {} vs kosmos-node-agent on offline fixture roots", oscap_version(&oscap)).unwrap();
    for run in &runs {
        let tailored = run.tailoring.as_ref().map(|t| format!(" (tailoring {})", t.display())).unwrap_or_default();
        writeln!(out, "run {:<18} {} {}{tailored}", run.label, run.datastream.display(), run.profile).unwrap();
    }
    for (rule, _, selector, why) in REFINE {
        writeln!(out, "  tailored value for {rule}: {selector} ({why})").unwrap();
    }
    for (label, rule, why) in DESELECT {
        writeln!(out, "  left out of {label}: {rule} ({why})").unwrap();
    }

    // Per fixture: every rule's verdict from the first run that decided it
    // (pass or fail), else from the first run that selected it.
    let mut verdicts: BTreeMap<&str, Verdicts> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for Evaluation { fixture, run: i, verdicts: v, took, stderr } in &done {
        writeln!(out, "oscap {fixture:<9} {:<18} {:>5.1} s", runs[*i].label, took.as_secs_f64()).unwrap();
        for line in distinct_errors(stderr) {
            writeln!(out, "    oscap said: {line}").unwrap();
        }
        let into = verdicts.entry(fixture).or_default();
        for (rule, (result, label)) in v {
            match into.get(rule) {
                None => {
                    into.insert(rule.clone(), (result.clone(), label.clone()));
                }
                Some((first, _)) if !decided(first) && decided(result) => {
                    into.insert(rule.clone(), (result.clone(), label.clone()));
                }
                Some((first, first_label))
                    if cited.contains(rule) && decided(first) && decided(result) && first != result =>
                {
                    conflicts.push(format!(
                        "{fixture} {rule}: {first} in {first_label}, {result} in {label} (first one used)"
                    ));
                }
                Some(_) => {}
            }
        }
        // dpkginfo must work wherever dpkg itself can read the database.
        if stderr.contains("dpkginfo_init has failed") {
            let root = work.join("roots").join(fixture);
            assert!(
                !dpkg_database_readable(&root),
                "{fixture}: oscap's dpkginfo probe failed on a dpkg database dpkg-query reads (APT_CONFIG?):\n{stderr}"
            );
        }
    }
    for name in FIXTURES {
        let after = tree(&work.join("roots").join(name));
        let added: Vec<&String> = after.difference(&trees[name]).collect();
        assert!(added.is_empty(), "{name}: oscap wrote into the root under audit: {added:?}");
    }

    // Compare.
    let mut rows = Vec::new();
    let mut excluded_rows = Vec::new();
    let mut not_comparable: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut used_exclusions = BTreeSet::new();
    let mut used_deviations = BTreeSet::new();
    let mut deviated_rows = Vec::new();
    for name in FIXTURES {
        let v = &verdicts[name];
        for (check, status, rules, reason) in &reports[name] {
            let evaluated: Vec<(&String, &(String, String))> =
                rules.iter().filter_map(|r| v.get(r).filter(|(res, _)| decided(res)).map(|x| (r, x))).collect();
            let shown = rules
                .iter()
                .map(|r| match v.get(r) {
                    Some((res, label)) => format!("{r}={res}[{label}]"),
                    None => format!("{r}=not-run"),
                })
                .collect::<Vec<_>>()
                .join(" ");
            if evaluated.is_empty() {
                not_comparable.entry(name).or_default().push(format!("{check} ({status}): {shown}"));
                continue;
            }
            let theirs = if evaluated.iter().any(|(_, (res, _))| res == "fail") { "fail" } else { "pass" };
            let hits: Vec<String> = evaluated
                .iter()
                .map(|(r, _)| ((*r).clone(), (*name).to_string()))
                .filter(|key| exclusions.contains_key(key))
                .map(|key| {
                    let rule = key.0.clone();
                    used_exclusions.insert(key);
                    rule
                })
                .collect();
            let ours = if status == "waived" { "fail" } else { status.as_str() };
            let category = match (ours, theirs) {
                ("pass", "pass") | ("fail", "fail") => Category::Agree,
                ("pass", _) => Category::FalsePass,
                ("fail", _) => Category::Stricter,
                _ => Category::Undecided,
            };
            // A documented deviation of ours: the category and a substring
            // of our reason must both match, so it cannot hide another cause.
            if category != Category::Agree
                && category != Category::FalsePass
                && hits.is_empty()
                && let Some(d) = deviations.iter().find(|d| {
                    (d.check == *check || d.check.strip_suffix('*').is_some_and(|p| check.starts_with(p)))
                        && (d.fixture == "*" || d.fixture == *name)
                        && d.category == category.label()
                        && reason.contains(&d.reason_contains)
                })
            {
                used_deviations.insert((d.check.clone(), d.fixture.clone()));
                deviated_rows.push((category, name.to_string(), check.clone(), status.clone(), theirs, d.why.clone()));
                continue;
            }
            let row = (category, name.to_string(), check.clone(), status.clone(), theirs, shown);
            if hits.is_empty() {
                rows.push(row);
            } else {
                excluded_rows.push((row, hits));
            }
        }
    }
    rows.sort();

    writeln!(out, "\n--- comparable pairs ({}), disagreements first", rows.len()).unwrap();
    writeln!(out, "{:<10} {:<9} {:<40} {:<14} {:<8} rules", "category", "fixture", "check", "ours", "openscap")
        .unwrap();
    for (cat, fixture, check, ours, theirs, shown) in &rows {
        writeln!(out, "{:<10} {fixture:<9} {check:<40} {ours:<14} {theirs:<8} {shown}", cat.label()).unwrap();
    }
    writeln!(
        out,
        "\n--- excluded pairs ({}): OpenSCAP is wrong there (tests/openscap/exclusions.tsv)",
        excluded_rows.len()
    )
    .unwrap();
    for ((cat, fixture, check, ours, theirs, shown), hits) in &excluded_rows {
        writeln!(
            out,
            "{:<10} {fixture:<9} {check:<40} {ours:<14} {theirs:<8} {shown}  [would be {}; excluded: {}]",
            "excluded",
            cat.label(),
            hits.join(", ")
        )
        .unwrap();
    }
    writeln!(out, "\n--- documented deviations of ours ({}): tests/openscap/deviations.tsv", deviated_rows.len())
        .unwrap();
    for (cat, fixture, check, ours, theirs, why) in &deviated_rows {
        writeln!(out, "{:<10} {fixture:<9} {check:<40} {ours:<14} {theirs:<8} {why}", cat.label()).unwrap();
    }
    writeln!(out, "\n--- not comparable: OpenSCAP evaluated none of the cited rules").unwrap();
    for (fixture, list) in &not_comparable {
        writeln!(out, "{fixture} ({}):", list.len()).unwrap();
        for line in list {
            writeln!(out, "    {line}").unwrap();
        }
    }
    for c in &conflicts {
        writeln!(out, "note: profiles disagree: {c}").unwrap();
    }

    // Coverage of the cited ids.
    let evaluated_somewhere: BTreeSet<&String> =
        verdicts.values().flat_map(|v| v.iter().filter(|(_, (res, _))| decided(res)).map(|(r, _)| r)).collect();
    let in_content: BTreeSet<&String> =
        cited.iter().filter(|r| catalog.values().any(|(_, cat)| cat.rules.contains(*r))).collect();
    writeln!(
        out,
        "\ncited SSG ids: {}; in the datastreams: {}; decided (pass/fail) on at least one fixture: {}",
        cited.len(),
        in_content.len(),
        cited.iter().filter(|r| evaluated_somewhere.contains(r)).count()
    )
    .unwrap();
    let absent: Vec<&String> = cited.iter().filter(|r| !in_content.contains(r)).collect();
    writeln!(out, "  not in SSG 0.1.65 for ubuntu2204/debian11: {absent:?}").unwrap();
    let never: Vec<&String> = in_content.iter().filter(|r| !evaluated_somewhere.contains(*r)).copied().collect();
    writeln!(out, "  in the content but never decided on these roots: {never:?}").unwrap();

    let count = |c: Category| rows.iter().filter(|r| r.0 == c).count();
    let agree = count(Category::Agree);
    assert!(!rows.is_empty(), "no comparable pair at all: OpenSCAP or the agent did not run as expected\n{out}");
    let figure = 100.0 * agree as f64 / rows.len() as f64;
    writeln!(
        out,
        "\nAGREEMENT {agree}/{} = {figure:.1} % outside exclusions (false pass {}, stricter {}, undecided {}; \
         {} pairs excluded, {} documented deviations); {:.1} s in all",
        rows.len(),
        count(Category::FalsePass),
        count(Category::Stricter),
        count(Category::Undecided),
        excluded_rows.len(),
        deviated_rows.len(),
        started.elapsed().as_secs_f64()
    )
    .unwrap();
    println!("{out}");
    if std::env::var_os("KOSMOS_OPENSCAP_KEEP").is_some() {
        println!("kept: {}", tmp.keep().display());
    }

    // An entry that matched nothing is still a statement about OpenSCAP; it is
    // reported so the list can be pruned when our checks stop citing a rule.
    let unused: Vec<String> = entries
        .iter()
        .filter(|(rule, fixture)| {
            let matches = |f: &str| used_exclusions.contains(&(rule.clone(), f.to_string()));
            if fixture == "*" { !FIXTURES.iter().any(|f| matches(f)) } else { !matches(fixture) }
        })
        .map(|(r, f)| format!("{r}\t{f}"))
        .collect();
    if !unused.is_empty() {
        println!("note: exclusions.tsv entries that excluded no pair this run: {unused:?}");
    }
    // A deviation that no longer happens must go: the list documents what we
    // do now.
    let stale: Vec<String> = deviations
        .iter()
        .filter(|d| !used_deviations.contains(&(d.check.clone(), d.fixture.clone())))
        .map(|d| format!("{}\t{}", d.check, d.fixture))
        .collect();
    assert!(stale.is_empty(), "deviations.tsv entries that matched no pair (remove them): {stale:?}");
    let false_passes: Vec<String> = rows
        .iter()
        .filter(|r| r.0 == Category::FalsePass)
        .map(|(_, f, check, ours, theirs, shown)| format!("{f} {check}: ours {ours}, OpenSCAP {theirs} ({shown})"))
        .collect();
    assert!(false_passes.is_empty(), "FALSE PASS: we pass what OpenSCAP fails:\n{}", false_passes.join("\n"));
    let disagreements: Vec<String> = rows
        .iter()
        .filter(|r| r.0 != Category::Agree)
        .map(|(c, f, check, ours, theirs, _)| format!("{} {f} {check}: ours {ours}, OpenSCAP {theirs}", c.label()))
        .collect();
    assert!(
        disagreements.is_empty(),
        "agreement with OpenSCAP is {figure:.1} %, not 100 %, outside exclusions:\n{}",
        disagreements.join("\n")
    );
}

/// One entry of `tests/openscap/deviations.tsv`.
struct Deviation {
    check: String,
    fixture: String,
    category: String,
    reason_contains: String,
    why: String,
}

/// Where our check deliberately disagrees with the SSG rules it cites (it
/// also implements a CIS control they do not check, or it refuses to decide
/// on input it cannot read, as the engineering standards require). Never a
/// false pass: only `stricter` and `undecided` may be documented.
fn read_deviations() -> Vec<Deviation> {
    let path = repo().join("tests/openscap/deviations.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out: Vec<Deviation> = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l)) {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
        assert!(
            cols.len() == 5,
            "{}:{n}: expected check (or a prefix ending in *)<TAB>fixture<TAB>category<TAB>reason substring<TAB>why",
            path.display()
        );
        assert!(
            matches!(cols[2], "stricter" | "undecided"),
            "{}:{n}: only stricter or undecided can be a documented deviation, never a false pass",
            path.display()
        );
        assert!(cols[1] == "*" || FIXTURES.contains(&cols[1]), "{}:{n}: unknown fixture", path.display());
        assert!(cols[4].len() > 20, "{}:{n}: say why", path.display());
        assert!(
            !out.iter().any(|d| d.check == cols[0] && d.fixture == cols[1]),
            "{}:{n}: duplicate entry",
            path.display()
        );
        out.push(Deviation {
            check: cols[0].to_string(),
            fixture: cols[1].to_string(),
            category: cols[2].to_string(),
            reason_contains: cols[3].to_string(),
            why: cols[4].to_string(),
        });
    }
    out
}

/// A result OpenSCAP decided.
fn decided(result: &str) -> bool {
    result == "pass" || result == "fail"
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

fn oscap_version(oscap: &Path) -> String {
    let out = Command::new(oscap).arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("?").trim().to_string()
}

/// `(rule, fixture) -> reason` from `tests/openscap/exclusions.tsv`, a `*`
/// entry expanded to every fixture; and the entries as written.
type Exclusions = (BTreeMap<(String, String), String>, Vec<(String, String)>);

fn read_exclusions() -> Exclusions {
    let path = repo().join("tests/openscap/exclusions.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut map = BTreeMap::new();
    for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l)) {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() == 3, "{}:{n}: expected rule<TAB>fixture<TAB>reason", path.display());
        let (rule, fixture, reason) = (cols[0].trim(), cols[1].trim(), cols[2].trim());
        assert!(
            !rule.is_empty() && rule.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{}:{n}: bad rule id {rule:?} (without the xccdf prefix)",
            path.display()
        );
        assert!(fixture == "*" || FIXTURES.contains(&fixture), "{}:{n}: unknown fixture {fixture:?}", path.display());
        assert!(reason.len() > 20, "{}:{n}: give the reason OpenSCAP is wrong there", path.display());
        let key = (rule.to_string(), fixture.to_string());
        assert!(map.insert(key, reason.to_string()).is_none(), "{}:{n}: duplicate entry", path.display());
    }
    let entries: Vec<(String, String)> = map.keys().cloned().collect();
    // A `*` entry covers every fixture.
    let stars: Vec<(String, String)> =
        map.iter().filter(|((_, f), _)| f == "*").map(|((r, _), why)| (r.clone(), why.clone())).collect();
    for (rule, why) in stars {
        for f in FIXTURES {
            let key = (rule.clone(), (*f).to_string());
            assert!(!map.contains_key(&key), "exclusions.tsv: {rule} is listed for * and for {f}");
            map.insert(key, why.clone());
        }
    }
    (map, entries)
}

/// Copy a fixture root and apply its `<name>.setup` exactly as the agent's
/// fixture tests do (the same code: `agent/tests/common/fixture.rs`).
fn prepare_root(name: &str, dst: &Path) {
    fixture::prepare(&repo().join("tests/fixtures"), name, dst);
}

/// Every path under `root` (names only; nothing is opened).
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            out.insert(entry.path().strip_prefix(root).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), root, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Our findings that cite SSG rules: (check id, status, cited rule ids, reason).
fn agent_report(root: &Path, state: &Path) -> Vec<(String, String, Vec<String>, String)> {
    let stdout = agent_check(root, state, "json", AS_OF);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("kosmos-node-agent check --output json: not JSON ({e})"));
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let rules: Vec<String> = r["references"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["standard"] == "SSG")
                .map(|x| x["id"].as_str().unwrap().to_string())
                .collect();
            (!rules.is_empty()).then(|| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["status"].as_str().unwrap().to_string(),
                    rules,
                    r["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
        })
        .collect()
}

/// An apt configuration of OpenSCAP's own. The dpkginfo probe initialises
/// libapt with `RootDir` = the root under audit: without this it would read
/// the host's apt.conf.d (one snippet emptying `Dir::Cache::pkgcache` makes
/// every package read as not installed and leaves 31 MB caches in the
/// root). Main file and parts are empty, the binary caches go to a directory
/// that does not exist (so the cache is built in memory), and the dpkg
/// architecture tables, which libapt looks up *under* `RootDir` and which
/// a fixture root does not carry, point back at the host's through `..`.
fn write_apt_config(work: &Path) -> PathBuf {
    let dir = work.join("apt");
    std::fs::create_dir_all(dir.join("apt.conf.d")).unwrap();
    std::fs::write(dir.join("apt.conf"), "").unwrap();
    let up = "../".repeat(64);
    let missing = dir.join("no-such-dir");
    let conf = format!(
        "Dir::Etc::main \"{main}\";\nDir::Etc::parts \"{parts}\";\n\
         Dir::Cache::pkgcache \"{missing}/pkgcache.bin\";\nDir::Cache::srcpkgcache \"{missing}/srcpkgcache.bin\";\n\
         Dir::dpkg::cputable \"{up}usr/share/dpkg/cputable\";\nDir::dpkg::tupletable \"{up}usr/share/dpkg/tupletable\";\n\
         Dir::dpkg::triplettable \"{up}usr/share/dpkg/triplettable\";\n",
        main = dir.join("apt.conf").display(),
        parts = dir.join("apt.conf.d").display(),
        missing = missing.display(),
    );
    let path = dir.join("oscap-apt.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// Whether dpkg itself reads the root's database (then OpenSCAP must too).
fn dpkg_database_readable(root: &Path) -> bool {
    let admin = root.join("var/lib/dpkg");
    admin.join("status").is_file()
        && Command::new("dpkg-query")
            .arg(format!("--admindir={}", admin.display()))
            .arg("-W")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Rule ids and profile selections of a datastream.
struct Catalog {
    rules: BTreeSet<String>,
    values: BTreeSet<String>,
    profiles: BTreeMap<String, BTreeSet<String>>,
}

impl Catalog {
    fn parse(text: &str) -> Catalog {
        let doc = roxmltree::Document::parse_with_options(
            text,
            roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
        )
        .unwrap();
        let xccdf = |n: &roxmltree::Node, name: &str| {
            n.is_element()
                && n.tag_name().name() == name
                && n.tag_name().namespace() == Some("http://checklists.nist.gov/xccdf/1.2")
        };
        let strip = |id: &str, prefix: &str| id.strip_prefix(prefix).map(str::to_string);
        let mut cat = Catalog { rules: BTreeSet::new(), values: BTreeSet::new(), profiles: BTreeMap::new() };
        for n in doc.descendants() {
            if xccdf(&n, "Rule") {
                cat.rules.extend(n.attribute("id").and_then(|id| strip(id, RULE_PREFIX)));
            } else if xccdf(&n, "Value") {
                cat.values.extend(n.attribute("id").and_then(|id| strip(id, VALUE_PREFIX)));
            } else if xccdf(&n, "Profile") {
                let Some(id) = n.attribute("id").and_then(|id| strip(id, PROFILE_PREFIX)) else { continue };
                let selected = n
                    .children()
                    .filter(|c| xccdf(c, "select") && c.attribute("selected") == Some("true"))
                    .filter_map(|c| c.attribute("idref").and_then(|r| strip(r, RULE_PREFIX)))
                    .collect();
                cat.profiles.insert(id, selected);
            }
        }
        cat
    }
}

/// An XCCDF 1.2 tailoring with one profile: `extends` (or nothing, then
/// only `select` is selected), plus `select`, minus `deselect`, with the
/// [`REFINE`] values of the selected rules.
struct Tailoring<'a> {
    profile: &'a str,
    extends: Option<&'a str>,
    select: &'a BTreeSet<String>,
    deselect: &'a BTreeSet<String>,
}

impl Tailoring<'_> {
    fn xml(&self, cat: &Catalog) -> String {
        let mut x = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <xccdf:Tailoring xmlns:xccdf=\"http://checklists.nist.gov/xccdf/1.2\" id=\"xccdf_io.kosmos_tailoring_openscap\">\n\
             \x20 <xccdf:version time=\"2026-01-01T00:00:00\">1</xccdf:version>\n",
        );
        let extends = self.extends.map(|e| format!(" extends=\"{e}\"")).unwrap_or_default();
        writeln!(x, "  <xccdf:Profile id=\"{}\"{extends}>", self.profile).unwrap();
        writeln!(x, "    <xccdf:title>kosmos-node-agent cross-check: {}</xccdf:title>", self.profile).unwrap();
        for (rules, selected) in [(self.select, true), (self.deselect, false)] {
            for rule in rules {
                assert!(cat.rules.contains(rule), "no rule {rule} in the datastream");
                writeln!(x, "    <xccdf:select idref=\"{RULE_PREFIX}{rule}\" selected=\"{selected}\"/>").unwrap();
            }
        }
        for (rule, value, selector, _) in REFINE {
            if self.select.contains(*rule) {
                assert!(cat.values.contains(*value), "no XCCDF value {value} for {rule}");
                writeln!(x, "    <xccdf:refine-value idref=\"{VALUE_PREFIX}{value}\" selector=\"{selector}\"/>")
                    .unwrap();
            }
        }
        x.push_str("  </xccdf:Profile>\n</xccdf:Tailoring>\n");
        x
    }
}

/// Run one evaluation; returns oscap's stderr. Exit 0 (all pass) and 2
/// (some failed) are both a completed evaluation.
fn oscap_eval(oscap: &Path, run: &Run, root: &Path, apt_config: &Path, results: &Path) -> String {
    let mut cmd = Command::new("timeout");
    cmd.arg("600").arg(oscap).args(["xccdf", "eval"]);
    if let Some(t) = &run.tailoring {
        cmd.arg("--tailoring-file").arg(t);
    }
    cmd.arg("--profile").arg(&run.profile).arg("--results").arg(results).arg(&run.datastream);
    cmd.env("OSCAP_PROBE_ROOT", root)
        .env("OSCAP_EVALUATION_TARGET", format!("chroot://{}", root.display()))
        .env("APT_CONFIG", apt_config);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        matches!(out.status.code(), Some(0 | 2)) && results.is_file(),
        "oscap xccdf eval --profile {} on {}: {:?}\n{stderr}",
        run.profile,
        root.display(),
        out.status
    );
    stderr
}

/// `rule -> (result, run label)` from an XCCDF results file.
fn parse_results(path: &Path, label: &str) -> Verdicts {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "rule-result")
        .filter_map(|n| {
            let rule = n.attribute("idref")?.strip_prefix(RULE_PREFIX)?.to_string();
            let result = n.children().find(|c| c.is_element() && c.tag_name().name() == "result")?.text()?.trim();
            (result != "notselected").then(|| (rule, (result.to_string(), label.to_string())))
        })
        .collect()
}

/// oscap's `E:` lines, once each, without the source location.
fn distinct_errors(stderr: &str) -> BTreeSet<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("E: "))
        .map(|l| l.split(" [").next().unwrap_or(l).split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}
