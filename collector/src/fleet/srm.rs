//! The customer responsibilities of Scaleway's shared responsibility model
//! for external Kosmos nodes, and which check families evidence each.
//!
//! The wording is the SRM's ("Nodes hosted outside of Scaleway are under the
//! full responsibility of the user for OS patching, security hardening,
//! connectivity, and health monitoring"; "Users must manage networking
//! connectivity, firewall rules…"; "When users modify or replace
//! preinstalled components (e.g., altering kubelet configurations…),
//! responsibility … transfers to the customer"). A family that no area
//! claims is shown as its own "unmapped" area rather than dropped.

/// One responsibility and the families that evidence it.
#[derive(Debug, Clone, Copy)]
pub struct Area {
    pub name: &'static str,
    pub srm_text: &'static str,
    pub families: &'static [&'static str],
}

/// The name of the area evidenced by attestation freshness itself.
pub const MONITORING: &str = "Health monitoring";

pub const AREAS: &[Area] = &[
    Area {
        name: "OS patching",
        srm_text: "Users must ensure operating system security, patching, and hardening (external nodes).",
        families: &["patch", "os"],
    },
    Area {
        name: "Security hardening",
        srm_text: "Nodes hosted outside of Scaleway are under the full responsibility of the user for OS patching, security hardening, connectivity, and health monitoring.",
        families: &["sysctl", "ssh", "kmod", "accounts", "files", "mounts", "sudo", "services"],
    },
    Area {
        name: "Kubelet configuration",
        srm_text: "When users modify or replace preinstalled components (e.g., altering kubelet configurations, node networking), responsibility for those components transfers to the customer.",
        families: &["kubelet", "kube_proxy", "kosmos", "containerd"],
    },
    Area {
        name: "Firewall rules",
        srm_text: "Users must manage networking connectivity, firewall rules, and node bootstrap configurations.",
        families: &["firewall", "exposure"],
    },
    Area {
        name: "Connectivity to the control plane",
        srm_text: "Users must manage networking connectivity, firewall rules, and node bootstrap configurations.",
        families: &["controlplane", "kilo", "clock"],
    },
    Area {
        name: MONITORING,
        srm_text: "Logging and monitoring are configured to meet compliance and audit requirements; external nodes are under the user's responsibility for health monitoring. Evidenced by the node's logging checks and by its attestations arriving on time.",
        families: &["logging"],
    },
];

/// The area index of a family, if one claims it.
pub fn area_of(family: &str) -> Option<usize> {
    AREAS.iter().position(|a| a.families.contains(&family))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_belong_to_one_area_each() {
        let mut seen = std::collections::BTreeSet::new();
        for a in AREAS {
            for f in a.families {
                assert!(seen.insert(*f), "{f} is in two areas");
            }
        }
        assert_eq!(area_of("kubelet").map(|i| AREAS[i].name), Some("Kubelet configuration"));
        assert_eq!(area_of("nonesuch"), None);
    }
}
