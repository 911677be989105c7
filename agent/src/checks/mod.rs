//! The registry of every check the agent knows, by family.
//!
//! Ids are stable: once released, an id keeps its meaning forever, because
//! collectors, waivers and auditors' spreadsheets refer to it.

pub mod accounts;
pub mod clock;
pub mod controlplane;
pub mod exposure;
pub mod file_permissions;
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
pub mod world_writable;

use crate::check::Check;

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
    all.extend(file_permissions::checks());
    all.extend(world_writable::checks());
    all.extend(sudo::checks());
    all.extend(kmod::checks());
    all.extend(mounts::checks());
    all.extend(services::checks());
    all.extend(logging::checks());
    all.extend(kubelet::checks());
    all.extend(kosmos::checks());
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
