//! Kilo WireGuard tunnel checks (family `kilo`): the interface exists with
//! the expected listen port, and peers have handshaken recently.

use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::wireguard::{WgInterface, WgState, WireguardFacts};
use crate::audit::model::{Outcome, Severity};

fn interface(facts: &Facts<'_>) -> Result<(String, WgInterface), Outcome> {
    let wg = facts.get::<WireguardFacts>();
    match &wg.state {
        WgState::Offline => {
            Err(Outcome::not_applicable("offline root: the WireGuard interface exists only on a running node"))
        }
        WgState::Missing(err) => Err(Outcome::fail()
            .observed("absent")
            .expected("interface kilo0 present")
            .evidence(&wg.command, err.clone())
            .note("the Kilo WireGuard interface kilo0 does not exist: the node is not in the mesh")),
        WgState::Failed(e) => Err(Outcome::error(e.to_string())),
        WgState::Present(i) => Ok((wg.command.clone(), i.clone())),
    }
}

fn listen_port(facts: &Facts<'_>, params: &Params) -> Outcome {
    let (cmd, i) = match interface(facts) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let want = params.int("port");
    let got = i.listen_port.map(i64::from);
    Outcome::verdict(got == Some(want))
        .observed(json!(got))
        .expected(json!(want))
        .evidence(cmd, format!("listen port {}", got.map_or("none".to_string(), |p| p.to_string())))
}

fn handshakes(facts: &Facts<'_>, params: &Params) -> Outcome {
    let (cmd, i) = match interface(facts) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let max_age = u64::try_from(params.int("max_age_seconds")).unwrap_or(300);
    if i.peers.is_empty() {
        return Outcome::fail().observed(json!({"peers": 0})).evidence(cmd, "no peers").note("kilo0 has no peers");
    }
    let mut ages = serde_json::Map::new();
    let mut o = Outcome::pass();
    let mut fresh = 0usize;
    for p in &i.peers {
        let age = p.latest_handshake.map(|t| now.saturating_sub(t));
        if age.is_some_and(|a| a <= max_age) {
            fresh += 1;
        }
        ages.insert(p.public_key.clone(), json!(age));
        o = o.evidence(
            cmd.clone(),
            format!(
                "peer {} ({}, endpoint {}): {}",
                p.public_key,
                p.allowed_ips,
                p.endpoint.as_deref().unwrap_or("none"),
                age.map_or("never handshaken".to_string(), |a| format!("latest handshake {a} s ago"))
            ),
        );
    }
    o.status = if fresh > 0 { crate::audit::model::Status::Pass } else { crate::audit::model::Status::Fail };
    let o = o
        .observed(json!({"handshake_age_seconds": ages, "recent_peers": fresh}))
        .expected(json!({"max_age_seconds": max_age, "recent_peers": ">= 1"}));
    if fresh > 0 { o } else { o.note(format!("no peer has handshaken in the last {max_age} s: the tunnel is down")) }
}

pub fn checks() -> Vec<Check> {
    vec![
        Check::new("kilo.wireguard_listen_port", "Kilo WireGuard interface kilo0 exists and listens on the expected port", Severity::High, listen_port)
            .param(ParamSpec::int("port", 51820, "expected WireGuard listen port"))
            .rationale("Kilo connects every Kosmos node through WireGuard on kilo0; without the interface, or on another port than the one the firewall and peers expect, the node is cut from the pod network and from the control plane.")
            .remediation("Check the kilo pod on this node (`kubectl -n kube-system logs ds/kilo`), that the wireguard module is loaded, and that nothing else holds UDP 51820."),
        Check::new("kilo.peer_handshake_recent", "At least one Kilo peer handshook recently", Severity::High, handshakes)
            .param(ParamSpec::int("max_age_seconds", 300, "maximum age of the latest handshake"))
            .rationale("WireGuard re-handshakes about every two minutes while traffic flows; when no peer handshook for several minutes the tunnel is down (blocked UDP 51820, NAT without keepalive, wrong endpoint) and the node is unreachable for the control plane.")
            .remediation("Allow UDP 51820 inbound and outbound, set the persistent-keepalive annotation on nodes behind NAT, and check the endpoints in `wg show kilo0`."),
    ]
}

#[cfg(test)]
mod tests {
    use crate::audit::model::Status;
    use crate::testutil::{eval, eval_with, offline, root_with};
    use serde_json::json;

    use crate::testutil::live_recorded as live;

    fn dump(age: u64) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        format!(
            "priv\tpub\t51820\toff\npeerA=\t(none)\t198.51.100.7:51820\t10.4.0.1/32\t{}\t1\t2\toff\npeerB=\t(none)\t(none)\t10.4.0.2/32\t0\t0\t0\t25\n",
            now - age
        )
    }

    #[test]
    fn recorded_wg_outputs() {
        let d = root_with(&[("/.commands/wg_show_kilo0_dump", &dump(30))]);
        let h = live(d.path());
        assert_eq!(eval("kilo.wireguard_listen_port", &h).status, Status::Pass);
        assert_eq!(eval_with("kilo.wireguard_listen_port", &h, &[("port", json!(51821))]).status, Status::Fail);
        let o = eval("kilo.peer_handshake_recent", &h);
        assert_eq!(o.status, Status::Pass);
        assert!(o.evidence.iter().any(|e| e.detail.contains("never handshaken")));
        let d = root_with(&[("/.commands/wg_show_kilo0_dump", &dump(900))]);
        assert_eq!(eval("kilo.peer_handshake_recent", &live(d.path())).status, Status::Fail);
        let d = root_with(&[
            ("/.commands/wg_show_kilo0_dump.exit", "1"),
            ("/.commands/wg_show_kilo0_dump.stderr", "Unable to access interface: No such device\n"),
        ]);
        assert_eq!(eval("kilo.wireguard_listen_port", &live(d.path())).status, Status::Fail);
        let d = root_with(&[("/etc/hostname", "x")]);
        assert_eq!(eval("kilo.wireguard_listen_port", &live(d.path())).status, Status::Fail);
        crate::testutil::write(d.path(), "/sys/class/net/kilo0/mtu", b"1420");
        assert_eq!(eval("kilo.wireguard_listen_port", &live(d.path())).status, Status::Error);
        let d = root_with(&[("/.commands/wg_show_kilo0_dump", "garbage")]);
        assert_eq!(eval("kilo.peer_handshake_recent", &live(d.path())).status, Status::Error);
        let d = root_with(&[("/.commands/wg_show_kilo0_dump.timeout", "")]);
        assert_eq!(eval("kilo.peer_handshake_recent", &live(d.path())).status, Status::Error);
        assert_eq!(eval("kilo.peer_handshake_recent", &offline(d.path())).status, Status::NotApplicable);
    }
}
