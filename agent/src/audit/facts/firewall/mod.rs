//! Firewall facts: the rules that apply to inbound packets, from every
//! backend at once, plus what is needed to report on them.
//!
//! Live, the kernel state is listed with `nft -j list ruleset`; tables that
//! iptables-nft manages are re-read with `iptables-nft-save` /
//! `ip6tables-nft-save` (their nft form hides matches behind compat `xt`
//! expressions), and legacy x_tables with `iptables-legacy-save` /
//! `ip6tables-legacy-save` when the legacy modules are loaded. Legacy and
//! nftables rules are both traversed by every packet; having both is a known
//! cause of broken Kubernetes nodes and is reported.
//!
//! Offline, the configuration that applies at boot is read: netfilter-
//! persistent's `/etc/iptables/rules.v4|v6` (iptables-save format, evaluated
//! exactly). `/etc/nftables.conf`, ufw and firewalld configurations are not
//! parsed, so when one of them is active the ruleset is declared not
//! evaluable rather than guessed.

pub mod drift;
pub mod iptables;
pub mod model;
pub mod nft;

use sha2::{Digest, Sha256};

use super::{FactError, Facts, Gather};
use crate::audit::host::Host;
use model::{Backend, L3, Ruleset, Table};

/// Upper bound for rules files read from an offline root.
const RULES_FILE_LIMIT: u64 = 16 * 1024 * 1024;

/// One place rules were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    /// The command line or file path.
    pub source: String,
    pub backend: Backend,
    pub tables: usize,
    pub rules: usize,
}

/// The gathered firewall.
#[derive(Debug, Clone)]
pub struct FirewallFacts {
    /// The combined ruleset, or why there is none we can trust.
    pub ruleset: Result<Ruleset, FactError>,
    /// Why the ruleset cannot be evaluated at all (offline configuration
    /// in a syntax we do not parse); checks then say not applicable.
    pub not_evaluable: Option<String>,
    pub sources: Vec<RuleSource>,
    /// Notes for evidence (commands not installed, legacy not loaded...).
    pub notes: Vec<String>,
    pub live: bool,
}

impl FirewallFacts {
    /// Legacy and nftables-based rules both present and doing something.
    pub fn mixed_backends(&self) -> Option<(Vec<String>, Vec<String>)> {
        let rs = self.ruleset.as_ref().ok()?;
        let effective =
            |t: &&Table| t.rule_count() > 0 || t.chains.iter().any(|c| c.hook.as_ref().is_some_and(|h| !h.accept));
        let legacy: Vec<String> = rs
            .tables
            .iter()
            .filter(|t| t.backend == Backend::IptablesLegacy)
            .filter(effective)
            .map(Table::label)
            .collect();
        let nft: Vec<String> = rs
            .tables
            .iter()
            .filter(|t| t.backend != Backend::IptablesLegacy)
            .filter(effective)
            .map(Table::label)
            .collect();
        (!legacy.is_empty() && !nft.is_empty()).then_some((legacy, nft))
    }

    /// Evidence lines naming where the rules came from.
    pub fn evidence(&self) -> Vec<crate::audit::model::Evidence> {
        let mut ev: Vec<crate::audit::model::Evidence> = self
            .sources
            .iter()
            .map(|s| {
                crate::audit::model::Evidence::new(
                    &s.source,
                    format!("{}: {} table(s), {} rule(s)", s.backend.as_str(), s.tables, s.rules),
                )
            })
            .collect();
        ev.extend(self.notes.iter().map(|n| crate::audit::model::Evidence::new("firewall", n)));
        ev
    }
}

impl Gather for FirewallFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        let host = facts.host();
        if host.is_live() { gather_live(host) } else { gather_offline(host) }
    }
}

fn empty(live: bool) -> FirewallFacts {
    FirewallFacts { ruleset: Ok(Ruleset::default()), not_evaluable: None, sources: Vec::new(), notes: Vec::new(), live }
}

fn record(f: &mut FirewallFacts, source: &str, backend: Backend, rs: &Ruleset) {
    f.sources.push(RuleSource {
        source: source.to_string(),
        backend,
        tables: rs.tables.len(),
        rules: rs.tables.iter().map(Table::rule_count).sum(),
    });
}

/// Run a save-style command: `Ok(None)` when not installed.
fn run_text(host: &Host, program: &str, args: &[&str]) -> Result<Option<String>, FactError> {
    let shown = crate::audit::host::runner::display_command(program, args);
    match host.run(program, args) {
        Ok(out) if out.success() => Ok(Some(out.stdout_text(&shown)?.to_string())),
        Ok(out) => Err(FactError::new(format!(
            "{shown}: exit status {}: {}",
            out.status.map_or_else(|| "signal".to_string(), |c| c.to_string()),
            String::from_utf8_lossy(&out.stderr).trim().chars().take(300).collect::<String>()
        ))),
        Err(e) if e.is_unavailable() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn gather_live(host: &Host) -> FirewallFacts {
    let mut f = empty(true);
    let mut combined = Ruleset::default();
    let fail = |mut f: FirewallFacts, e: FactError| {
        f.ruleset = Err(e);
        f
    };
    let nft_cmd = "nft -j list ruleset";
    let nft_available = match run_text(host, "nft", &["-j", "list", "ruleset"]) {
        Ok(Some(text)) => match nft::parse(&text) {
            Ok(rs) => {
                record(&mut f, nft_cmd, Backend::Nftables, &rs);
                combined.tables.extend(rs.tables);
                true
            }
            Err(e) => return fail(f, FactError::new(format!("{nft_cmd}: {e}"))),
        },
        Ok(None) => {
            f.notes.push("nft is not installed: only tables visible to iptables-nft-save are evaluated".into());
            false
        }
        Err(e) => return fail(f, e),
    };
    // iptables-nft tables: the save format keeps every match readable.
    for (prog, l3) in [("iptables-nft-save", L3::Ipv4), ("ip6tables-nft-save", L3::Ipv6)] {
        match run_text(host, prog, &[]) {
            Ok(Some(text)) => match iptables::parse_save(&text, l3, Backend::IptablesNft, prog) {
                Ok(rs) => {
                    record(&mut f, prog, Backend::IptablesNft, &rs);
                    for t in rs.tables {
                        combined.tables.retain(|x| !(x.family == t.family && x.name == t.name));
                        combined.tables.push(t);
                    }
                }
                Err(e) => return fail(f, FactError::new(e)),
            },
            Ok(None) if nft_available => {
                f.notes.push(format!("{prog} not installed: iptables-nft tables are read from nft's listing"));
            }
            Ok(None) => {}
            Err(e) => return fail(f, e),
        }
    }
    // Legacy x_tables, only when the kernel has them (listing them would
    // otherwise load the modules).
    for (prog, names, l3) in [
        ("iptables-legacy-save", "/proc/net/ip_tables_names", L3::Ipv4),
        ("ip6tables-legacy-save", "/proc/net/ip6_tables_names", L3::Ipv6),
    ] {
        let loaded = match host.read_text_limited(names, 64 * 1024) {
            Ok(t) => !t.trim().is_empty(),
            Err(e) if e.is_not_found() => false,
            Err(e) => return fail(f, e.into()),
        };
        if !loaded {
            continue;
        }
        match run_text(host, prog, &[]) {
            Ok(Some(text)) => match iptables::parse_save(&text, l3, Backend::IptablesLegacy, prog) {
                Ok(rs) => {
                    record(&mut f, prog, Backend::IptablesLegacy, &rs);
                    combined.tables.extend(rs.tables);
                }
                Err(e) => return fail(f, FactError::new(e)),
            },
            Ok(None) => {
                return fail(
                    f,
                    FactError::new(format!("{names} lists legacy tables but {prog} is not installed to read them")),
                );
            }
            Err(e) => return fail(f, e),
        }
    }
    if !nft_available && f.sources.is_empty() {
        return fail(
            f,
            FactError::new("no firewall tool available: neither nft nor iptables-nft-save nor legacy tables"),
        );
    }
    f.ruleset = Ok(combined);
    f
}

fn unit_enabled(host: &Host, unit: &str) -> bool {
    ["sysinit.target.wants", "multi-user.target.wants", "basic.target.wants", "network-pre.target.wants"]
        .iter()
        .any(|w| host.exists(&format!("/etc/systemd/system/{w}/{unit}")))
}

fn gather_offline(host: &Host) -> FirewallFacts {
    let mut f = empty(false);
    let mut reasons = Vec::new();
    if unit_enabled(host, "nftables.service") && host.exists("/etc/nftables.conf") {
        reasons.push("/etc/nftables.conf is loaded at boot (nftables.service enabled) and nft configuration syntax is not evaluated offline".to_string());
    }
    if let Ok(Some(ufw)) = host.read_optional("/etc/ufw/ufw.conf")
        && ufw.lines().any(|l| l.trim().eq_ignore_ascii_case("ENABLED=yes"))
    {
        reasons.push("ufw is enabled (/etc/ufw/ufw.conf): its rules are generated at boot".into());
    }
    if unit_enabled(host, "firewalld.service") {
        reasons.push("firewalld is enabled: its zones are not evaluated offline".into());
    }
    if !reasons.is_empty() {
        f.not_evaluable = Some(format!("offline root: {}", reasons.join("; ")));
    }
    let backend = match host.read_link("/etc/alternatives/iptables") {
        Ok(t) if t.contains("legacy") => Backend::IptablesLegacy,
        _ => Backend::IptablesNft,
    };
    let mut combined = Ruleset::default();
    for (path, l3) in [("/etc/iptables/rules.v4", L3::Ipv4), ("/etc/iptables/rules.v6", L3::Ipv6)] {
        match host.read_text_limited(path, RULES_FILE_LIMIT) {
            Ok(text) => match iptables::parse_save(&text, l3, backend.clone(), path) {
                Ok(rs) => {
                    record(&mut f, path, backend.clone(), &rs);
                    combined.tables.extend(rs.tables);
                }
                Err(e) => {
                    f.ruleset = Err(FactError::new(e));
                    return f;
                }
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                f.ruleset = Err(e.into());
                return f;
            }
        }
    }
    if f.sources.is_empty() && f.not_evaluable.is_none() {
        f.notes.push(
            "offline root: no boot-time firewall configuration found (/etc/iptables/rules.v4|v6, enabled nftables.service, ufw, firewalld): the kernel accepts every packet at boot"
                .into(),
        );
    } else if !f.sources.is_empty() {
        f.notes.push("offline root: rules as loaded at boot by netfilter-persistent (iptables-persistent)".into());
    }
    f.ruleset = Ok(combined);
    f
}

/// A canonical, readable listing of the ruleset for drift detection: one
/// line per chain policy and per rule, without counters or handles.
pub fn snapshot_lines(rs: &Ruleset) -> Vec<String> {
    let mut out = Vec::new();
    for t in &rs.tables {
        let prefix = format!("{} {} {}", t.backend.as_str(), t.family.as_str(), t.name);
        for c in &t.chains {
            match &c.hook {
                Some(h) => out.push(format!(
                    "{prefix} chain {} (hook {} priority {} policy {})",
                    c.name,
                    h.hook,
                    h.priority,
                    if h.accept { "accept" } else { "drop" }
                )),
                None => out.push(format!("{prefix} chain {}", c.name)),
            }
            for r in &c.rules {
                out.push(format!("{prefix} chain {}: {}", c.name, strip_counters(&r.text)));
            }
        }
        for (name, s) in &t.sets {
            out.push(format!("{prefix} set {name}: {:?}", s.elems));
        }
    }
    out
}

fn strip_counters(text: &str) -> String {
    // iptables-save -c prefixes "[pkts:bytes]"; nft renderings skip counters.
    match text.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((_, rest)) => rest.trim().to_string(),
        None => text.to_string(),
    }
}

/// SHA-256 of the snapshot lines, hex.
pub fn snapshot_hash(lines: &[String]) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::host::RecordedRunner;
    use crate::testutil::{root_with, write};

    fn live_recorded(root: &std::path::Path) -> Host {
        Host::with_runner(root, true, Box::new(RecordedRunner::new(root.join(".commands"))))
    }

    const V4: &str = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";

    #[test]
    fn live_combines_nft_iptables_nft_and_legacy() {
        let d = root_with(&[
            (
                "/.commands/nft_-j_list_ruleset",
                r#"{"nftables": [{"table": {"family": "ip", "name": "filter"}}, {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "hook": "input", "prio": 0, "type": "filter", "policy": "drop"}}, {"table": {"family": "inet", "name": "kilo"}}]}"#,
            ),
            ("/.commands/iptables-nft-save", V4),
            ("/.commands/iptables-legacy-save", V4),
            ("/proc/net/ip_tables_names", "filter\n"),
        ]);
        let f = gather_live(&live_recorded(d.path()));
        let rs = f.ruleset.as_ref().unwrap();
        assert_eq!(rs.tables.len(), 3, "{:?}", f.sources);
        assert!(rs.tables.iter().any(|t| t.backend == Backend::IptablesNft && t.name == "filter"));
        let (legacy, nft) = f.mixed_backends().unwrap();
        assert_eq!(legacy.len(), 1);
        assert_eq!(nft.len(), 1);
    }

    #[test]
    fn live_errors_are_reported() {
        let d = root_with(&[("/.commands/nft_-j_list_ruleset", "{\"nftables\": ")]);
        let f = gather_live(&live_recorded(d.path()));
        assert!(f.ruleset.unwrap_err().0.contains("nft -j list ruleset"));
        let d = root_with(&[("/.commands/nft_-j_list_ruleset.timeout", "")]);
        assert!(gather_live(&live_recorded(d.path())).ruleset.unwrap_err().0.contains("timed out"));
        let d = root_with(&[
            ("/.commands/nft_-j_list_ruleset.exit", "1"),
            ("/.commands/nft_-j_list_ruleset.stderr", "Operation not permitted"),
        ]);
        assert!(gather_live(&live_recorded(d.path())).ruleset.unwrap_err().0.contains("Operation not permitted"));
        let d = root_with(&[("/.commands/x", "")]);
        assert!(gather_live(&live_recorded(d.path())).ruleset.is_err());
    }

    #[test]
    fn offline_reads_rules_files_and_refuses_nft_syntax() {
        let d = root_with(&[("/etc/iptables/rules.v4", V4)]);
        let f = gather_offline(&Host::offline(d.path()));
        assert_eq!(f.ruleset.as_ref().unwrap().tables.len(), 1);
        assert!(f.not_evaluable.is_none());
        write(d.path(), "/etc/nftables.conf", b"flush ruleset\n");
        std::fs::create_dir_all(d.path().join("etc/systemd/system/sysinit.target.wants")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/nftables.service",
            d.path().join("etc/systemd/system/sysinit.target.wants/nftables.service"),
        )
        .unwrap();
        write(d.path(), "/lib/systemd/system/nftables.service", b"[Unit]\n");
        let f = gather_offline(&Host::offline(d.path()));
        assert!(f.not_evaluable.unwrap().contains("nftables.conf"));
        let d = root_with(&[("/etc/iptables/rules.v6", "*filter\n-A INPUT -j ACCEPT\n")]);
        assert!(gather_offline(&Host::offline(d.path())).ruleset.is_err());
    }

    #[test]
    fn snapshot_is_stable() {
        let rs = iptables::parse_save(V4, L3::Ipv4, Backend::IptablesLegacy, "f").unwrap();
        let lines = snapshot_lines(&rs);
        assert!(lines.iter().any(|l| l.contains("-A INPUT -p tcp --dport 22 -j ACCEPT")));
        assert_eq!(snapshot_hash(&lines), snapshot_hash(&snapshot_lines(&rs)));
        assert_eq!(snapshot_hash(&lines).len(), 64);
    }
}
