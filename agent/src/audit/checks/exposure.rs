//! Exposure checks (family `exposure`): which ports of a Kubernetes node the
//! firewall lets the internet reach, judged by the rule evaluator, and which
//! listening services are reachable although nothing expects them.

use serde_json::json;

use super::firewall::{internet_packet, internet_params, ruleset};
use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::firewall::model::{Decision, L3, Proto, parse_cidr, range_to_string, subtract_ranges};
use crate::audit::facts::sockets::SocketFacts;
use crate::audit::model::{Evidence, Outcome, Severity};

/// Intervals evaluated per family when computing reachable sources.
const MAX_INTERVALS: usize = 4096;

fn kubelet(facts: &Facts<'_>, params: &Params) -> Outcome {
    let (fw, rs) = match ruleset(facts) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let port = u16::try_from(params.int("port")).unwrap_or(10250);
    let mut allowed = Vec::new();
    for c in params.list("allowed_cidrs") {
        match parse_cidr(&c) {
            Some(r) => allowed.push(r),
            None => return Outcome::error(format!("parameter allowed_cidrs: {c:?} is not a CIDR")),
        }
    }
    let mut evidence = fw.evidence();
    let mut outside = Vec::new();
    for l3 in [L3::Ipv4, L3::Ipv6] {
        let template = match internet_packet(facts, params, l3, Proto::Tcp, port) {
            Ok(p) => p,
            Err(o) => return o,
        };
        match rs.accepted_sources(&template, l3, MAX_INTERVALS) {
            Ok(acc) => {
                let shown: Vec<String> = acc.iter().map(|(a, b)| range_to_string(a, b)).collect();
                evidence.push(Evidence::new(
                    "evaluator",
                    format!(
                        "{} TCP {port}: accepted from {}",
                        l3.as_str(),
                        if shown.is_empty() { "nowhere".into() } else { shown.join(", ") }
                    ),
                ));
                outside.extend(subtract_ranges(&acc, &allowed).iter().map(|(a, b)| range_to_string(a, b)));
            }
            Err(Decision::Unknown { rule, why }) => {
                return Outcome::error(format!("cannot decide who reaches TCP {port}: {why} at {rule}"))
                    .with_evidence(evidence);
            }
            Err(d) => return Outcome::error(d.describe()),
        }
    }
    Outcome::verdict(outside.is_empty())
        .observed(json!({"reachable_from_outside_allowed": outside}))
        .expected(json!({"allowed_cidrs": params.list("allowed_cidrs")}))
        .with_evidence(evidence)
}

/// Per-family decisions with the evidence that explains them.
type Judged = (Vec<(L3, Decision)>, Vec<Evidence>);

/// Verdicts for one port from the internet source, per family.
fn judge(facts: &Facts<'_>, params: &Params, proto: Proto, port: u16, families: &[L3]) -> Result<Judged, Outcome> {
    let (fw, rs) = ruleset(facts)?;
    let mut evidence = fw.evidence();
    let mut out = Vec::new();
    for l3 in families {
        let p = internet_packet(facts, params, *l3, proto, port)?;
        let d = rs.evaluate(&p);
        evidence.push(Evidence::new("evaluator", format!("{}: {}", p.describe(), d.describe())));
        if let Decision::Unknown { rule, why } = &d {
            return Err(
                Outcome::error(format!("cannot decide {}: {why} at {rule}", p.describe())).with_evidence(evidence)
            );
        }
        out.push((*l3, d));
    }
    Ok((out, evidence))
}

/// Listening on `port`? `None` offline (unknown), else whether any
/// non-loopback socket listens.
fn listening(facts: &Facts<'_>, proto: Proto, port: u16) -> Option<bool> {
    let s = facts.get::<SocketFacts>();
    let l = s.listeners.as_ref().ok()?;
    Some(l.iter().any(|x| x.proto == proto && x.port == port && !x.is_loopback()))
}

fn ssh(facts: &Facts<'_>, params: &Params) -> Outcome {
    let port = u16::try_from(params.int("port")).unwrap_or(22);
    if listening(facts, Proto::Tcp, port) == Some(false) {
        return Outcome::pass().note(format!("nothing listens on TCP {port} outside loopback"));
    }
    let (verdicts, evidence) = match judge(facts, params, Proto::Tcp, port, &[L3::Ipv4, L3::Ipv6]) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let allow_limited = params.bool("allow_rate_limited");
    let mut open = Vec::new();
    let mut limited = Vec::new();
    for (l3, d) in &verdicts {
        if let Decision::Accept { rate_limited, .. } = d {
            if *rate_limited { limited.push(l3.as_str()) } else { open.push(l3.as_str()) }
        }
    }
    let ok = open.is_empty() && (allow_limited || limited.is_empty());
    let o = Outcome::verdict(ok)
        .observed(json!({"open_to_internet": open, "open_with_rate_limit": limited}))
        .expected(if allow_limited {
            "SSH restricted to admin ranges, or rate limited"
        } else {
            "SSH restricted to admin ranges"
        })
        .with_evidence(evidence);
    if !open.is_empty() {
        o.note(format!(
            "SSH (TCP {port}) is open to the whole internet over {} without a rate limit",
            open.join(" and ")
        ))
    } else if !limited.is_empty() {
        o.note(format!(
            "SSH (TCP {port}) is reachable from the internet over {} with a rate limit",
            limited.join(" and ")
        ))
    } else {
        o
    }
}

fn kilo(facts: &Facts<'_>, params: &Params) -> Outcome {
    let port = u16::try_from(params.int("port")).unwrap_or(51820);
    let (verdicts, evidence) = match judge(facts, params, Proto::Udp, port, &[L3::Ipv4]) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let ok = verdicts.iter().all(|(_, d)| d.is_accept());
    let o = Outcome::verdict(ok)
        .observed(json!(verdicts.iter().map(|(_, d)| d.describe()).collect::<Vec<_>>()))
        .expected(format!("UDP {port} accepted from the peers' addresses"))
        .with_evidence(evidence);
    if ok { o } else { o.note(format!("UDP {port} is dropped: the node falls out of the Kilo WireGuard mesh")) }
}

fn closed_port(facts: &Facts<'_>, params: &Params) -> Outcome {
    let port = u16::try_from(params.int("port")).unwrap_or(10256);
    let (verdicts, evidence) = match judge(facts, params, Proto::Tcp, port, &[L3::Ipv4, L3::Ipv6]) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let open: Vec<&str> = verdicts.iter().filter(|(_, d)| d.is_accept()).map(|(l, _)| l.as_str()).collect();
    let o = Outcome::verdict(open.is_empty())
        .observed(json!({"open_to_internet": open}))
        .expected(format!("TCP {port} not reachable from the internet"))
        .with_evidence(evidence);
    if open.is_empty() {
        o
    } else {
        o.note(format!("TCP {port} is reachable from the internet over {}", open.join(" and ")))
    }
}

fn nodeports(facts: &Facts<'_>, params: &Params) -> Outcome {
    let (_, rs) = match ruleset(facts) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let (lo, hi) = (30000u64, 32767u64);
    // The verdict only changes where a rule's port range starts or ends.
    let mut points = vec![lo];
    for (a, b) in rs.port_ranges() {
        points.extend([a, b.saturating_add(1)].into_iter().filter(|p| (lo..=hi).contains(p)));
    }
    points.sort_unstable();
    points.dedup();
    let mut open = Vec::new();
    let mut evidence = Vec::new();
    for (i, start) in points.iter().enumerate() {
        let end = points.get(i + 1).map_or(hi, |n| n - 1);
        let port = u16::try_from(*start).unwrap_or(30000);
        let (verdicts, ev) = match judge(facts, params, Proto::Tcp, port, &[L3::Ipv4, L3::Ipv6]) {
            Ok(x) => x,
            Err(o) => return o,
        };
        if i == 0 {
            evidence = ev;
        }
        for (l3, d) in verdicts {
            if d.is_accept() {
                open.push(format!("{} TCP {start}-{end}", l3.as_str()));
            }
        }
    }
    let allowed = params.bool("allow_nodeports");
    Outcome::verdict(open.is_empty() || allowed)
        .observed(json!({"open_to_internet": open}))
        .expected(if allowed { "NodePorts may be exposed (allow_nodeports)" } else { "NodePort range 30000-32767 not reachable from the internet" })
        .with_evidence(evidence)
        .note("NodePort traffic is DNATed to pods after the input-path filter chains evaluated here; the forward path is not evaluated")
}

fn unexpected(facts: &Facts<'_>, params: &Params) -> Outcome {
    let s = facts.get::<SocketFacts>();
    let listeners = match &s.listeners {
        Ok(l) => l.clone(),
        Err(e) if !s.live => return Outcome::not_applicable(e.to_string()),
        Err(e) => return Outcome::error(e.to_string()),
    };
    let expected = params.list("expected");
    let is_expected = |proto: Proto, port: u16| {
        expected.iter().any(|e| {
            let (ports, pr) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
            let (a, b) = ports.split_once('-').unwrap_or((ports, ports));
            pr == proto.as_str()
                && a.parse::<u16>().is_ok_and(|a| a <= port)
                && b.parse::<u16>().is_ok_and(|b| port <= b)
        })
    };
    let mut exposed = Vec::new();
    let mut evidence = Vec::new();
    if let Some(n) = &s.owner_note {
        evidence.push(Evidence::new("/proc/*/fd", n.clone()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for l in listeners.iter().filter(|l| !l.is_loopback() && !is_expected(l.proto, l.port)) {
        // A wildcard IPv6 socket usually also receives IPv4 (bindv6only=0;
        // IPV6_V6ONLY is not visible in /proc/net), so judge both families.
        let families: Vec<L3> = match l.addr {
            std::net::IpAddr::V6(a) if a.is_unspecified() => vec![L3::Ipv6, L3::Ipv4],
            _ => vec![l.l3()],
        };
        for l3 in families {
            if !seen.insert((l.proto, l.port, l3)) {
                continue;
            }
            let (verdicts, _) = match judge(facts, params, l.proto, l.port, &[l3]) {
                Ok(x) => x,
                Err(o) => return o.with_evidence(evidence),
            };
            for (_, d) in verdicts {
                if d.is_accept() {
                    evidence.push(Evidence::new(
                        "/proc/net",
                        format!("{} reachable from the internet over {}: {}", l.describe(), l3.as_str(), d.describe()),
                    ));
                    exposed.push(format!("{} ({})", l.describe(), l3.as_str()));
                }
            }
        }
    }
    let o = Outcome::verdict(exposed.is_empty())
        .observed(json!({"exposed": exposed}))
        .expected(json!({"only_expected_services": expected}))
        .with_evidence(evidence);
    if exposed.is_empty() {
        o
    } else {
        o.note(format!("{} unexpected service(s) reachable from the internet", exposed.len()))
    }
}

pub fn checks() -> Vec<Check> {
    vec![
        internet_params(Check::new("exposure.kubelet_api_restricted", "Kubelet API reachable only from the control plane and Kilo ranges", Severity::Critical, kubelet))
            .param(ParamSpec::int("port", 10250, "kubelet API port"))
            .param(ParamSpec::list("allowed_cidrs", &["10.4.0.0/16"], "source ranges allowed to reach the kubelet API (control plane and Kilo)"))
            .rationale("The kubelet API executes commands in containers and reads their logs and secrets; only the control plane (through the Kilo mesh) needs it, and an anonymous-auth or authorization mistake then becomes a remote takeover.")
            .remediation("Allow TCP 10250 only from the Kilo/control-plane range (e.g. nft: `ip saddr 10.4.0.0/16 tcp dport 10250 accept`) under a default-drop input policy, for IPv4 and IPv6."),
        internet_params(Check::new("exposure.ssh_restricted", "SSH is not open to the whole internet", Severity::High, ssh))
            .param(ParamSpec::int("port", 22, "SSH port"))
            .param(ParamSpec::bool("allow_rate_limited", true, "accept SSH open to the internet when a rate limit guards it"))
            .rationale("SSH open to the whole internet receives constant password and key guessing; restricting it to administration ranges (or at least rate limiting new connections) removes most of that attack surface.")
            .remediation("Allow TCP 22 only from administration ranges or a bastion, or add a rate limit (nft `ct state new limit rate 4/minute accept`, iptables `-m recent`)."),
        internet_params(Check::new("exposure.kilo_udp_allowed", "Kilo WireGuard port (UDP 51820) is allowed inbound", Severity::High, kilo))
            .param(ParamSpec::int("port", 51820, "Kilo WireGuard listen port"))
            .rationale("Kilo builds the pod network as a WireGuard mesh: when UDP 51820 is dropped, peers cannot complete handshakes and the node falls out of the mesh (pods unreachable, kubelet API unreachable for the control plane).")
            .remediation("Allow UDP 51820 inbound (nft: `udp dport 51820 accept`; iptables: `-A INPUT -p udp --dport 51820 -j ACCEPT`)."),
        internet_params(Check::new("exposure.kube_proxy_healthz_restricted", "kube-proxy health port (TCP 10256) not reachable from the internet", Severity::Medium, closed_port))
            .param(ParamSpec::int("port", 10256, "kube-proxy healthz port"))
            .rationale("kube-proxy serves its health endpoint on 0.0.0.0:10256 by default; it leaks cluster state to scanners and is not meant for the internet.")
            .remediation("Drop TCP 10256 from outside the cluster ranges, or set kube-proxy's healthzBindAddress to a private address."),
        internet_params(Check::new("exposure.nodeport_range_restricted", "NodePort range not reachable from the internet", Severity::Medium, nodeports))
            .param(ParamSpec::bool("allow_nodeports", false, "NodePorts are intentionally public on this node"))
            .rationale("Every Service of type NodePort or LoadBalancer opens a port in 30000-32767 on every node; on an internet-facing node that exposes internal services unless the firewall filters the range.")
            .remediation("Drop TCP 30000-32767 from the internet in the input path (raw/prerouting or input before kube-proxy's rules), or set allow_nodeports when exposure is intended."),
        internet_params(Check::new("exposure.unexpected_services", "No unexpected listening service reachable from the internet", Severity::High, unexpected))
            .param(ParamSpec::list("expected", &["22/tcp", "10250/tcp", "10256/tcp", "51820/udp", "30000-32767/tcp"], "services judged by their own checks or intentionally public (port[-port]/proto)"))
            .rationale("A database, a debug endpoint or a container's hostPort listening on a public address is reachable by anyone unless the firewall blocks it; listing what the firewall actually lets through catches what configuration reviews miss.")
            .remediation("Bind the service to loopback or a private address, stop it, or drop its port in the input chain; add it to `expected` only when it must be public."),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::Status;
    use crate::testutil::{eval, eval_with, offline, root_with};

    use crate::testutil::live_recorded as live;

    const RULES: &str = "*filter\n:INPUT DROP [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -s 10.4.0.0/16 -p tcp --dport 10250 -j ACCEPT\n-A INPUT -p udp --dport 51820 -j ACCEPT\n-A INPUT -p tcp --dport 22 -m limit --limit 3/min -j ACCEPT\nCOMMIT\n";

    #[test]
    fn kubelet_ranges() {
        let d = root_with(&[
            ("/etc/iptables/rules.v4", RULES),
            ("/etc/iptables/rules.v6", "*filter\n:INPUT DROP [0:0]\nCOMMIT\n"),
        ]);
        let h = offline(d.path());
        assert_eq!(eval("exposure.kubelet_api_restricted", &h).status, Status::Pass);
        let o = eval_with("exposure.kubelet_api_restricted", &h, &[("allowed_cidrs", json!(["10.4.1.0/24"]))]);
        assert_eq!(o.status, Status::Fail);
        assert!(o.observed.unwrap().to_string().contains("10.4.0.0/24"));
        assert_eq!(
            eval_with("exposure.kubelet_api_restricted", &h, &[("allowed_cidrs", json!(["x"]))]).status,
            Status::Error
        );
        // No rules.v6: IPv6 accepts everything.
        let d = root_with(&[("/etc/iptables/rules.v4", RULES), ("/etc/iptables/rules.v6", "")]);
        let o = eval("exposure.kubelet_api_restricted", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert!(o.observed.unwrap().to_string().contains("::/0"));
    }

    #[test]
    fn ssh_kilo_proxy_nodeports() {
        let d = root_with(&[
            ("/etc/iptables/rules.v4", RULES),
            ("/etc/iptables/rules.v6", "*filter\n:INPUT DROP [0:0]\nCOMMIT\n"),
        ]);
        let h = offline(d.path());
        assert_eq!(eval("exposure.ssh_restricted", &h).status, Status::Pass);
        assert_eq!(
            eval_with("exposure.ssh_restricted", &h, &[("allow_rate_limited", json!(false))]).status,
            Status::Fail
        );
        assert_eq!(eval("exposure.kilo_udp_allowed", &h).status, Status::Pass);
        assert_eq!(eval_with("exposure.kilo_udp_allowed", &h, &[("port", json!(51821))]).status, Status::Fail);
        assert_eq!(eval("exposure.kube_proxy_healthz_restricted", &h).status, Status::Pass);
        assert_eq!(eval("exposure.nodeport_range_restricted", &h).status, Status::Pass);
        let d = root_with(&[
            (
                "/etc/iptables/rules.v4",
                "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m multiport --dports 31000:31010 -j ACCEPT\nCOMMIT\n",
            ),
            ("/etc/iptables/rules.v6", "*filter\n:INPUT DROP [0:0]\nCOMMIT\n"),
        ]);
        let o = eval("exposure.nodeport_range_restricted", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.observed.unwrap()["open_to_internet"], json!(["IPv4 TCP 31000-31010"]));
        assert_eq!(eval("exposure.unexpected_services", &offline(d.path())).status, Status::NotApplicable);
    }

    #[test]
    fn unexpected_services_live() {
        let d = root_with(&[
            (
                "/.commands/iptables-nft-save",
                "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 5432 -j ACCEPT\nCOMMIT\n",
            ),
            ("/.commands/ip6tables-nft-save", "*filter\n:INPUT DROP [0:0]\nCOMMIT\n"),
            (
                "/proc/net/tcp",
                "h\n 0: 00000000:1538 00000000:0000 0A 0 0 0 0 0 11 1\n 1: 00000000:0050 00000000:0000 0A 0 0 0 0 0 12 1\n 2: 0100007F:0051 00000000:0000 0A 0 0 0 0 0 13 1\n",
            ),
            ("/proc/net/udp", "h\n"),
        ]);
        let o = eval("exposure.unexpected_services", &live(d.path()));
        assert_eq!(o.status, Status::Fail, "{o:?}");
        assert!(o.observed.as_ref().unwrap().to_string().contains(":5432"));
        assert!(!o.observed.unwrap().to_string().contains(":80 "));
        let o = eval("exposure.ssh_restricted", &live(d.path()));
        assert_eq!(o.status, Status::Pass);
    }
}
