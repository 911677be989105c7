//! The registry of every check the agent knows, by family.
//!
//! Each family lives in the module named after it (`ssh.*` in [`ssh`],
//! `files.*` in [`files`], …), with one exception: the `kube_proxy.*`
//! checks live in [`kubelet`], interleaved with the kubelet's in the CIS
//! Kubernetes Benchmark's order (its worker section mixes kube-proxy
//! controls with the kubelet's), which is the order of the report.
//!
//! Ids are stable: once released, an id keeps its meaning forever, because
//! collectors, waivers and auditors' spreadsheets refer to it.

pub mod accounts;
pub mod clock;
pub mod containerd;
pub mod controlplane;
pub mod exposure;
pub mod files;
pub mod firewall;
pub mod kilo;
pub mod kmod;
pub mod kosmos;
pub mod kubelet;
pub mod logging;
pub mod mounts;
pub mod os;
pub mod patch;
pub mod services;
pub mod ssh;
pub mod sudo;
pub mod sysctl;

use crate::audit::check::Check;

/// Where a binary gets its checks from: [`registry`] in the agent. It is a
/// parameter of [`crate::cli::main`] and the daemon so that a test binary can
/// add checks to the real agent without a cargo feature (the fault-injection
/// agent of `tests/fault-agent` adds one that panics).
pub type Registry = fn() -> Vec<Check>;

/// Every check, in a stable order (family by family).
pub fn registry() -> Vec<Check> {
    let mut all = Vec::new();
    all.extend(clock::checks());
    all.extend(controlplane::checks());
    all.extend(exposure::checks());
    all.extend(firewall::checks());
    all.extend(kilo::checks());
    all.extend(sysctl::checks());
    all.extend(ssh::checks());
    all.extend(accounts::checks());
    all.extend(files::checks());
    all.extend(sudo::checks());
    all.extend(kmod::checks());
    all.extend(mounts::checks());
    all.extend(services::checks());
    all.extend(logging::checks());
    all.extend(kubelet::checks());
    all.extend(kosmos::checks());
    all.extend(containerd::checks());
    all.extend(patch::checks());
    all.extend(os::checks());
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_well_formed_and_documented() {
        let all = registry();
        let mut seen = HashSet::new();
        for c in &all {
            assert!(seen.insert(c.id.clone()), "duplicate id {}", c.id);
            let ok = c.id.split('.').count() >= 2
                && c.id.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
                });
            assert!(ok, "malformed id {}", c.id);
            assert!(!c.title.is_empty(), "{} has no title", c.id);
            assert!(!c.rationale.is_empty(), "{} has no rationale", c.id);
            assert!(!c.remediation.is_empty(), "{} has no remediation", c.id);
        }
    }
}

#[cfg(test)]
mod params_tests {
    use super::*;
    use crate::audit::check::Params;
    use crate::audit::facts::Facts;
    use crate::audit::host::{Host, OfflineRunner, RecordedRunner};

    /// Every check, on every fixture root, offline and as a live host, reads
    /// only the parameters it declared, with the declared types. (The engine
    /// also turns such a read into an `error` finding at run time; this test
    /// finds the bug before a user does.)
    #[test]
    fn every_check_reads_only_declared_parameters() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let mut roots: Vec<_> = std::fs::read_dir(&fixtures)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        roots.sort();
        assert!(roots.len() >= 5, "fixture roots not found under {}", fixtures.display());
        let all = registry();
        let mut misuse = Vec::new();
        for root in &roots {
            let hosts = [
                Host::offline(root),
                Host::with_runner(root, true, Box::new(OfflineRunner)),
                Host::with_runner(root, true, Box::new(RecordedRunner::new(root.join(".commands")))),
            ];
            for host in &hosts {
                let facts = Facts::new(host);
                for c in &all {
                    let params = Params::new(&c.params, None);
                    let _ = crate::audit::engine::evaluate(c, &facts, &params);
                    if let Some(m) = params.misuse() {
                        misuse.push(format!("{} on {}: {m}", c.id, root.display()));
                    }
                }
            }
        }
        assert!(misuse.is_empty(), "undeclared parameter reads:\n{}", misuse.join("\n"));
    }

    #[test]
    fn an_undeclared_or_mistyped_read_makes_the_finding_an_error() {
        use crate::audit::check::ParamSpec;
        use crate::audit::model::{Outcome, Severity, Status};
        let check = Check::new("demo.typo", "demo", Severity::High, |_f, p| {
            // `max_tries` was declared; `max_trys` is the typo.
            Outcome::verdict(p.int("max_trys") <= 3)
        })
        .param(ParamSpec::int("max_tries", 3, "demo"));
        let d = tempfile::tempdir().unwrap();
        let host = Host::offline(d.path());
        let facts = Facts::new(&host);
        let params = Params::new(&check.params, None);
        let o = crate::audit::engine::evaluate(&check, &facts, &params);
        assert_eq!(o.status, Status::Error, "{o:?}");
        assert!(o.reason.as_deref().unwrap().contains("`max_trys` is not declared"), "{o:?}");

        let check = Check::new("demo.kind", "demo", Severity::High, |_f, p| Outcome::verdict(p.bool("max_tries")))
            .param(ParamSpec::int("max_tries", 3, "demo"));
        let params = Params::new(&check.params, None);
        let o = crate::audit::engine::evaluate(&check, &facts, &params);
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.as_deref().unwrap().contains("declared as an integer but read as a boolean"), "{o:?}");

        // A declared read of the right type is fine.
        let check = Check::new("demo.ok", "demo", Severity::High, |_f, p| Outcome::verdict(p.int("max_tries") <= 3))
            .param(ParamSpec::int("max_tries", 3, "demo"));
        let params = Params::new(&check.params, None);
        assert_eq!(crate::audit::engine::evaluate(&check, &facts, &params).status, Status::Pass);
    }
}

#[cfg(test)]
mod reference_tests {
    use super::*;

    /// Every SSG rule a check cites is one whose mapping to CIS and ANSSI was
    /// verified in `docs/reference-map.tsv` (auditors cross-map through it),
    /// and none of the rules that table marks as not existing is cited.
    #[test]
    fn every_cited_ssg_rule_is_in_the_reference_map() {
        let map = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reference-map.tsv")).unwrap();
        let rows: std::collections::BTreeMap<&str, &str> =
            map.lines().skip(1).filter_map(|l| l.split_once('\t')).collect();
        let mut missing = Vec::new();
        for c in registry() {
            for r in c.references.iter().filter(|r| r.standard == "SSG") {
                match rows.get(r.id) {
                    None => missing.push(format!("{} cites {}, not in docs/reference-map.tsv", c.id, r.id)),
                    Some(row) if row.contains("Does not exist") => {
                        missing.push(format!("{} cites {}, which the map says does not exist", c.id, r.id))
                    }
                    Some(_) => {}
                }
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
