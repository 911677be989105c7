//! Host firewall checks (family `firewall`): default-deny input policy per
//! IP family, no mix of legacy and nftables backends, and drift of the
//! ruleset since the previous run. Port-level exposure lives in
//! [`super::exposure`]; both use the evaluator of
//! [`crate::audit::facts::firewall::model`].

use std::net::IpAddr;

use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::firewall::model::{Decision, Elem, Key, L3, Packet, Proto, Rhs, Ruleset, Stmt};
use crate::audit::facts::firewall::{FirewallFacts, snapshot_hash, snapshot_lines};
use crate::audit::facts::sockets::SocketFacts;
use crate::audit::model::{Outcome, Severity};

/// Where the previous run's ruleset snapshot is kept (written by the CLI
/// after a live run, read here through the Host).
pub const DEFAULT_SNAPSHOT_FILE: &str = "/var/lib/kosmos-node-agent/firewall-snapshot.json";

/// The agent's state directory for this run, when it has one: the default
/// `snapshot_file` then lives there (`firewall-snapshot.json`), so an agent
/// configured with another `state_dir` keeps all its state in it.
#[derive(Debug, Clone, Default)]
pub struct SnapshotDir(pub Option<std::path::PathBuf>);

impl crate::audit::facts::Gather for SnapshotDir {
    fn gather(_facts: &Facts<'_>) -> Self {
        SnapshotDir(None)
    }
}

/// Where the ruleset snapshot is kept: the `snapshot_file` parameter, except
/// that its default follows the run's state directory.
fn snapshot_path(param: &str, dir: &SnapshotDir) -> std::path::PathBuf {
    match &dir.0 {
        Some(d) if param == DEFAULT_SNAPSHOT_FILE => d.join("firewall-snapshot.json"),
        _ => std::path::PathBuf::from(param),
    }
}

/// Snapshots larger than this many lines are not kept (report size).
pub const MAX_SNAPSHOT_LINES: usize = 5000;

/// Parameters shared by every check that asks about internet traffic.
pub fn internet_params(c: Check) -> Check {
    c.param(ParamSpec::str("internet_source_v4", "203.0.113.10", "IPv4 source address standing for the internet"))
        .param(ParamSpec::str("internet_source_v6", "2001:db8::10", "IPv6 source address standing for the internet"))
        .param(ParamSpec::str(
            "internet_interface",
            "",
            "interface internet traffic arrives on (empty: the default route's interface)",
        ))
}

/// The ruleset to evaluate, or the outcome explaining why there is none.
pub fn ruleset(facts: &Facts<'_>) -> Result<(std::rc::Rc<FirewallFacts>, Ruleset), Outcome> {
    let fw = facts.get::<FirewallFacts>();
    if let Some(why) = &fw.not_evaluable {
        return Err(Outcome::not_applicable(why.clone()).with_evidence(fw.evidence()));
    }
    match &fw.ruleset {
        Ok(rs) => {
            let rs = rs.clone();
            Ok((fw, rs))
        }
        Err(e) => Err(Outcome::error(e.to_string()).with_evidence(fw.evidence())),
    }
}

/// An internet packet for a family, per the parameters.
pub fn internet_packet(facts: &Facts<'_>, params: &Params, l3: L3, proto: Proto, port: u16) -> Result<Packet, Outcome> {
    let (name, want_v4) = match l3 {
        L3::Ipv4 => ("internet_source_v4", true),
        L3::Ipv6 => ("internet_source_v6", false),
    };
    let src: IpAddr = params.str(name).parse().ok().filter(|a: &IpAddr| a.is_ipv4() == want_v4).ok_or_else(|| {
        Outcome::error(format!("parameter {name} = {:?} is not an address of that family", params.str(name)))
    })?;
    let iif = match params.str("internet_interface") {
        "" => {
            let s = facts.get::<SocketFacts>();
            s.default_iface.get(&l3).cloned()
        }
        i => Some(i.to_string()),
    };
    Ok(Packet { proto, src, dport: port, iif })
}

/// A destination port no rule names (the ruleset's default for traffic it
/// did not plan for), preferring unprivileged ports.
pub fn unnamed_port(rs: &Ruleset) -> u16 {
    let mut named: Vec<(u64, u64)> = Vec::new();
    for t in &rs.tables {
        let set_elems = t.sets.values().flat_map(|s| s.elems.iter().flatten());
        for e in set_elems {
            if let Elem::Int(a, b) = e {
                named.push((*a, *b));
            }
        }
        for c in &t.chains {
            for r in &c.rules {
                for s in &r.stmts {
                    let elems: Vec<&Elem> = match s {
                        Stmt::Match { key: Key::Dport(_), rhs: Rhs::Elems(e), .. } => e.iter().collect(),
                        Stmt::Vmap { key: Key::Dport(_), map } => map.iter().map(|(e, _)| e).collect(),
                        _ => Vec::new(),
                    };
                    for e in elems {
                        if let Elem::Int(a, b) = e {
                            named.push((*a, *b));
                        }
                    }
                }
            }
        }
    }
    // Ranges wider than half the port space are defaults, not holes.
    named.retain(|(a, b)| b.saturating_sub(*a) < 32768);
    (1024u16..=65535)
        .chain(1..1024)
        .find(|p| !named.iter().any(|(a, b)| *a <= u64::from(*p) && u64::from(*p) <= *b))
        .unwrap_or(1)
}

fn default_deny(facts: &Facts<'_>, params: &Params, l3: L3) -> Outcome {
    let (fw, rs) = match ruleset(facts) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let port = unnamed_port(&rs);
    let mut observed = serde_json::Map::new();
    let mut evidence = fw.evidence();
    let mut accepted = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        let p = match internet_packet(facts, params, l3, proto, port) {
            Ok(p) => p,
            Err(o) => return o,
        };
        let d = rs.evaluate(&p);
        evidence.push(crate::audit::model::Evidence::new("evaluator", format!("{}: {}", p.describe(), d.describe())));
        observed.insert(proto.as_str().into(), json!(d));
        match d {
            Decision::Unknown { rule, why } => {
                return Outcome::error(format!("cannot decide the {} input policy: {why} at {rule}", l3.as_str()))
                    .observed(serde_json::Value::Object(observed))
                    .with_evidence(evidence);
            }
            Decision::Accept { .. } => accepted.push(proto.as_str()),
            Decision::Drop { .. } => {}
        }
    }
    let o = Outcome::verdict(accepted.is_empty())
        .observed(serde_json::Value::Object(observed))
        .expected(json!(format!("new inbound {} packets to ports no rule allows are dropped", l3.as_str())))
        .with_evidence(evidence);
    if accepted.is_empty() {
        o
    } else {
        o.note(format!(
            "a new {} {} packet from the internet to port {port}, which no rule names, is accepted",
            l3.as_str(),
            accepted.join(" and ")
        ))
    }
}

fn mixed(facts: &Facts<'_>) -> Outcome {
    let fw = facts.get::<FirewallFacts>();
    if !fw.live {
        return Outcome::not_applicable("offline root: which backends hold rules is a property of the running kernel")
            .with_evidence(fw.evidence());
    }
    if let Err(e) = &fw.ruleset {
        return Outcome::error(e.to_string()).with_evidence(fw.evidence());
    }
    match fw.mixed_backends() {
        None => Outcome::pass().with_evidence(fw.evidence()),
        Some((legacy, nft)) => Outcome::fail()
            .observed(json!({"legacy": legacy, "nftables": nft}))
            .expected("rules in one backend only")
            .with_evidence(fw.evidence())
            .note("legacy iptables rules and nftables rules are both loaded"),
    }
}

/// The previous snapshot as stored by the CLI.
#[derive(Debug, serde::Deserialize)]
struct StoredSnapshot {
    hash: String,
    lines: Vec<String>,
}

fn drift(facts: &Facts<'_>, params: &Params) -> Outcome {
    let fw = facts.get::<FirewallFacts>();
    if !fw.live {
        return Outcome::not_applicable("offline root: drift compares the running ruleset between runs");
    }
    let rs = match &fw.ruleset {
        Ok(rs) => rs,
        Err(e) => return Outcome::error(e.to_string()).with_evidence(fw.evidence()),
    };
    let lines = snapshot_lines(rs);
    let hash = snapshot_hash(&lines);
    let path = snapshot_path(params.str("snapshot_file"), &facts.get::<SnapshotDir>());
    let path = path.to_string_lossy();
    let path = path.as_ref();
    let snapshot = if lines.len() <= MAX_SNAPSHOT_LINES {
        json!({"hash": hash, "lines": lines})
    } else {
        json!({"hash": hash, "lines": serde_json::Value::Null})
    };
    let previous = match facts.host().read_optional(path) {
        Ok(None) => {
            return Outcome::not_applicable(format!("no previous ruleset snapshot at {path}: this run records one"))
                .observed(json!({"snapshot": snapshot}));
        }
        Ok(Some(t)) => match serde_json::from_str::<StoredSnapshot>(&t) {
            Ok(s) => s,
            Err(e) => {
                return Outcome::error(format!("{path}: not a ruleset snapshot ({e})"))
                    .observed(json!({"snapshot": snapshot}));
            }
        },
        Err(e) => return Outcome::error(e.to_string()).observed(json!({"snapshot": snapshot})),
    };
    if previous.hash == hash {
        return Outcome::pass()
            .observed(json!({"hash": hash, "snapshot": snapshot}))
            .evidence(path, format!("unchanged since the previous run (sha256 {hash})"));
    }
    let added: Vec<&String> = lines.iter().filter(|l| !previous.lines.contains(l)).collect();
    let removed: Vec<&String> = previous.lines.iter().filter(|l| !lines.contains(l)).collect();
    let mut o = Outcome::fail()
        .observed(json!({
            "hash": hash, "previous_hash": previous.hash,
            "added": added.iter().take(50).collect::<Vec<_>>(),
            "removed": removed.iter().take(50).collect::<Vec<_>>(),
            "snapshot": snapshot,
        }))
        .expected(json!({"hash": previous.hash}))
        .note(format!(
            "the ruleset changed since the previous run: {} rule line(s) added, {} removed",
            added.len(),
            removed.len()
        ));
    for l in added.iter().take(20) {
        o = o.evidence("firewall drift", format!("+ {l}"));
    }
    for l in removed.iter().take(20) {
        o = o.evidence("firewall drift", format!("- {l}"));
    }
    o
}

/// After a live run, keep the ruleset snapshot of `firewall.ruleset_drift`
/// for the next run to compare with (0600 in a 0700 directory, replaced
/// atomically). Best effort: a read-only or missing state directory only
/// means the next run has no reference, and that run says so.
#[derive(Debug)]
pub struct SnapshotHook<'p> {
    pub profile: &'p crate::audit::profile::Profile,
    /// The agent's state directory, when the run has one.
    pub state_dir: Option<&'p std::path::Path>,
}

impl crate::audit::engine::RunHook for SnapshotHook<'_> {
    fn before_run(&self, facts: &Facts<'_>) {
        facts.provide(SnapshotDir(self.state_dir.map(std::path::Path::to_path_buf)));
    }

    fn after_run(&self, facts: &Facts<'_>, report: &crate::audit::report::Report) {
        if facts.host().is_live() {
            record_snapshot(report, self.profile, &facts.get::<SnapshotDir>());
        }
    }
}

fn record_snapshot(report: &crate::audit::report::Report, profile: &crate::audit::profile::Profile, dir: &SnapshotDir) {
    use std::os::unix::fs::DirBuilderExt;
    let Some(f) = report.results.iter().find(|f| f.id == "firewall.ruleset_drift") else { return };
    let Some(snap) = f.observed.as_ref().and_then(|o| o.get("snapshot")).filter(|s| s["lines"].is_array()) else {
        return;
    };
    let path = profile
        .params
        .get("firewall.ruleset_drift")
        .and_then(|p| p.get("snapshot_file"))
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_SNAPSHOT_FILE);
    let path = snapshot_path(path, dir);
    let path = path.as_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
    }
    if let Err(e) = crate::state::durable::replace(path, snap.to_string().as_bytes(), 0o600) {
        tracing::warn!("cannot record the firewall ruleset snapshot in {}: {e}", path.display());
    }
}

pub fn checks() -> Vec<Check> {
    vec![
        internet_params(Check::new(
            "firewall.input_default_deny_ipv4",
            "IPv4 inbound traffic is denied by default",
            Severity::High,
            |f, p| default_deny(f, p, L3::Ipv4),
        ))
        .rationale("An external node often sits directly on the internet: any service started later, by a package or a pod with hostNetwork, is exposed unless the input path drops what it does not explicitly allow.")
        .remediation("Set the input chain policy to drop (nft: `policy drop;`, iptables: `-P INPUT DROP`) and allow only established traffic, loopback, SSH from admin ranges, UDP 51820 for Kilo and TCP 10250 from the control plane."),
        internet_params(Check::new(
            "firewall.input_default_deny_ipv6",
            "IPv6 inbound traffic is denied by default",
            Severity::High,
            |f, p| default_deny(f, p, L3::Ipv6),
        ))
        .rationale("IPv6 left open is the classic gap: iptables rules do not apply to IPv6, and a node with a global IPv6 address exposes every listening service to the internet.")
        .remediation("Apply the same default-drop policy with ip6tables or in an nftables `inet` table, or disable IPv6 on the public interface."),
        Check::new(
            "firewall.backends_not_mixed",
            "Firewall rules are not split between iptables-legacy and nftables",
            Severity::High,
            |f, _| mixed(f),
        )
        .rationale("Legacy x_tables and nftables rules are both traversed by every packet; kube-proxy, Kilo and the administrator then each see only part of the firewall, a known cause of broken Kubernetes nodes and of unexpected exposure.")
        .remediation("Use one backend: `update-alternatives --set iptables /usr/sbin/iptables-nft` (and ip6tables), flush the legacy tables with iptables-legacy -F / -X, and reboot or restart the components that install rules."),
        Check::new(
            "firewall.ruleset_drift",
            "Firewall ruleset unchanged since the previous run",
            Severity::Low,
            drift,
        )
        .param(ParamSpec::str(
            "snapshot_file",
            DEFAULT_SNAPSHOT_FILE,
            "where the previous run's ruleset snapshot is kept (left at its default, it follows the agent's state_dir)",
        ))
        .rationale("An unplanned change of the firewall (a package, a manual command, a compromised process) can open the node silently; comparing with the previous run makes every change visible with the rules that changed.")
        .remediation("Review the added and removed rules in the finding; if the change is intended, the next run takes it as the new reference."),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::Status;
    use crate::testutil::{eval, eval_with, offline, root_with};

    use crate::testutil::live_recorded as live;

    const DROP_V4: &str = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";

    #[test]
    fn default_deny_per_family() {
        let d = root_with(&[("/etc/iptables/rules.v4", DROP_V4)]);
        let h = offline(d.path());
        assert_eq!(eval("firewall.input_default_deny_ipv4", &h).status, Status::Pass);
        let o = eval("firewall.input_default_deny_ipv6", &h);
        assert_eq!(o.status, Status::Fail, "{o:?}");
        // No firewall at all: everything is accepted.
        let d = root_with(&[("/etc/hostname", "n\n")]);
        assert_eq!(eval("firewall.input_default_deny_ipv4", &offline(d.path())).status, Status::Fail);
        // Unknown expressions make it an error naming the rule.
        let d = root_with(&[(
            "/etc/iptables/rules.v4",
            "*filter\n:INPUT DROP [0:0]\n-A INPUT -m owner --uid-owner 0 -j ACCEPT\nCOMMIT\n",
        )]);
        let o = eval("firewall.input_default_deny_ipv4", &offline(d.path()));
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("rules.v4:3"));
        // Malformed: error.
        let d = root_with(&[("/etc/iptables/rules.v4", "*filter\n:INPUT DROP\n")]);
        assert_eq!(eval("firewall.input_default_deny_ipv4", &offline(d.path())).status, Status::Error);
        let o =
            eval_with("firewall.input_default_deny_ipv4", &offline(d.path()), &[("internet_source_v4", json!("::1"))]);
        assert_eq!(o.status, Status::Error);
    }

    #[test]
    fn mixed_backends_live_only() {
        let d = root_with(&[
            (
                "/.commands/nft_-j_list_ruleset",
                r#"{"nftables": [{"table": {"family": "inet", "name": "f"}}, {"chain": {"family": "inet", "table": "f", "name": "input", "hook": "input", "prio": 0, "type": "filter", "policy": "drop"}}]}"#,
            ),
            ("/.commands/iptables-legacy-save", DROP_V4),
            ("/proc/net/ip_tables_names", "filter\n"),
        ]);
        assert_eq!(eval("firewall.backends_not_mixed", &live(d.path())).status, Status::Fail);
        std::fs::remove_file(d.path().join("proc/net/ip_tables_names")).unwrap();
        assert_eq!(eval("firewall.backends_not_mixed", &live(d.path())).status, Status::Pass);
        assert_eq!(eval("firewall.backends_not_mixed", &offline(d.path())).status, Status::NotApplicable);
    }

    #[test]
    fn the_default_snapshot_follows_the_state_dir() {
        let d = root_with(&[("/.commands/iptables-nft-save", DROP_V4)]);
        let h = live(d.path());
        let all = crate::audit::checks::registry();
        let c = all.iter().find(|c| c.id == "firewall.ruleset_drift").unwrap();
        let run = |dir: Option<&str>, param: Option<&str>| {
            let facts = Facts::new(&h);
            facts.provide(SnapshotDir(dir.map(std::path::PathBuf::from)));
            let o: std::collections::BTreeMap<String, serde_json::Value> =
                param.map(|p| ("snapshot_file".to_string(), json!(p))).into_iter().collect();
            crate::audit::engine::evaluate(c, &facts, &Params::new(&c.params, Some(&o)))
        };
        let first = run(Some("/state"), None);
        assert_eq!(first.status, Status::NotApplicable);
        assert!(first.reason.as_deref().unwrap().contains("/state/firewall-snapshot.json"), "{:?}", first.reason);
        let snap = first.observed.unwrap()["snapshot"].to_string();
        crate::testutil::write(d.path(), "/state/firewall-snapshot.json", snap.as_bytes());
        assert_eq!(run(Some("/state"), None).status, Status::Pass);
        // Without a state directory the default path itself; a path set in
        // the profile wins over the state directory.
        assert!(run(None, None).reason.unwrap().contains(DEFAULT_SNAPSHOT_FILE));
        assert!(run(Some("/state"), Some("/elsewhere/s.json")).reason.unwrap().contains("/elsewhere/s.json"));
    }

    #[test]
    fn drift_compares_with_snapshot() {
        let d = root_with(&[("/.commands/iptables-nft-save", DROP_V4)]);
        let h = live(d.path());
        let o = eval_with("firewall.ruleset_drift", &h, &[("snapshot_file", json!("/state/snap.json"))]);
        assert_eq!(o.status, Status::NotApplicable);
        let snap = o.observed.unwrap()["snapshot"].to_string();
        crate::testutil::write(d.path(), "/state/snap.json", snap.as_bytes());
        let o = eval_with("firewall.ruleset_drift", &h, &[("snapshot_file", json!("/state/snap.json"))]);
        assert_eq!(o.status, Status::Pass);
        crate::testutil::write(d.path(), "/.commands/iptables-nft-save", DROP_V4.replace("22", "23").as_bytes());
        let o = eval_with("firewall.ruleset_drift", &h, &[("snapshot_file", json!("/state/snap.json"))]);
        assert_eq!(o.status, Status::Fail);
        assert!(o.evidence.iter().any(|e| e.detail.starts_with("+ ") && e.detail.contains("23")));
        assert!(o.evidence.iter().any(|e| e.detail.starts_with("- ") && e.detail.contains("22")));
        crate::testutil::write(d.path(), "/state/snap.json", b"garbage");
        let o = eval_with("firewall.ruleset_drift", &h, &[("snapshot_file", json!("/state/snap.json"))]);
        assert_eq!(o.status, Status::Error);
        assert_eq!(eval("firewall.ruleset_drift", &offline(d.path())).status, Status::NotApplicable);
    }
}
