//! Host firewall checks (family `firewall`): default-deny input policy per
//! IP family, no mix of legacy and nftables backends, and drift of the
//! ruleset since the previous run. Port-level exposure lives in
//! [`super::exposure`]; both use the evaluator of
//! [`crate::audit::facts::firewall::model`].

use std::net::IpAddr;

use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::firewall::FirewallFacts;
use crate::audit::facts::firewall::drift::{CurrentRuleset, PreviousRuleset};
use crate::audit::facts::firewall::model::{Decision, L3, Packet, Proto, Ruleset};
use crate::audit::facts::sockets::SocketFacts;
use crate::audit::model::{Outcome, Severity};

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
    let mut named = rs.port_ranges();
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

fn drift(facts: &Facts<'_>) -> Outcome {
    let fw = facts.get::<FirewallFacts>();
    if !fw.live {
        return Outcome::not_applicable("offline root: drift compares the running ruleset between runs");
    }
    let current = facts.get::<CurrentRuleset>();
    let (lines, hash) = match &current.0 {
        Ok(s) => (&s.lines, &s.hash),
        Err(e) => return Outcome::error(e.to_string()).with_evidence(fw.evidence()),
    };
    let snapshot = match &current.0 {
        Ok(s) if s.keepable() => json!({"hash": hash, "lines": lines}),
        _ => json!({"hash": hash, "lines": serde_json::Value::Null}),
    };
    let prev = facts.get::<PreviousRuleset>();
    let path = prev.path.as_str();
    let previous = match &prev.snapshot {
        Ok(None) => {
            return Outcome::not_applicable(format!("no previous ruleset snapshot at {path}: this run records one"))
                .observed(json!({"snapshot": snapshot}));
        }
        Ok(Some(s)) => s,
        Err(e) => return Outcome::error(e.clone()).observed(json!({"snapshot": snapshot})),
    };
    if previous.hash == *hash {
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
            |f, _| drift(f),
        )
        // Read by the state layer, which keeps the snapshot between runs
        // (crate::state::firewall_drift); the check itself only compares.
        .param(ParamSpec::str(
            "snapshot_file",
            "",
            "where the previous run's ruleset snapshot is kept (empty: firewall-snapshot.json in the agent's state_dir)",
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
}
