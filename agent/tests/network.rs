//! Real rulesets in network namespaces: each test creates a server and a
//! client namespace joined by a veth pair (TEST-NET addresses that never
//! leave the machine), loads a ruleset with `nft -f` or `iptables-restore`
//! in the server namespace, opens listeners there, runs the agent binary
//! inside it (`ip netns exec`), and compares the evaluator's answers with
//! what actually happens when the client connects.
//!
//! Needs root and iproute2/nftables/iptables. When namespaces cannot be
//! created the tests fail under `CI=true` and are skipped, saying so,
//! elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

const SERVER_V4: &str = "203.0.113.1";
const SERVER_V6: &str = "2001:db8::1";
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Option<Netns> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("kna-{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]).then_some(Netns { name })
    }
    fn exec(&self, program: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }
    /// Run `f` on a thread that has entered this namespace.
    fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.name]);
    }
}

/// A server namespace with a client namespace on the other end of a veth.
struct Lab {
    server: Netns,
    client: Netns,
    stop: Arc<AtomicBool>,
    _tcp: Vec<TcpListener>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn lab() -> Option<Lab> {
    let Some(server) = Netns::new("s") else {
        common::cannot_run(
            "network namespace test",
            "cannot create a network namespace with `ip netns add` (not root, or iproute2 missing)",
        );
        return None;
    };
    let client = Netns::new("c").unwrap();
    let (s, c) = (server.name.as_str(), client.name.as_str());
    let steps: Vec<Vec<&str>> = vec![
        vec![
            "link",
            "add",
            "veth0",
            "address",
            "02:00:00:00:00:01",
            "netns",
            s,
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "address",
            "02:00:00:00:00:02",
            "netns",
            c,
        ],
        vec!["-n", s, "link", "set", "lo", "up"],
        vec!["-n", c, "link", "set", "lo", "up"],
        vec!["-n", s, "link", "set", "veth0", "up"],
        vec!["-n", c, "link", "set", "veth1", "up"],
        vec!["-n", s, "addr", "add", "203.0.113.1/24", "dev", "veth0"],
        vec!["-n", c, "addr", "add", "203.0.113.10/24", "dev", "veth1"],
        vec!["-n", s, "-6", "addr", "add", "2001:db8::1/64", "dev", "veth0", "nodad"],
        vec!["-n", c, "-6", "addr", "add", "2001:db8::10/64", "dev", "veth1", "nodad"],
        // Static neighbours: a drop policy on IPv6 input would otherwise
        // also drop neighbour discovery, which is not what is tested here.
        vec![
            "-n",
            s,
            "-6",
            "neigh",
            "add",
            "2001:db8::10",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "veth0",
            "nud",
            "permanent",
        ],
        vec![
            "-n",
            c,
            "-6",
            "neigh",
            "add",
            "2001:db8::1",
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            "veth1",
            "nud",
            "permanent",
        ],
        vec!["-n", s, "route", "add", "default", "via", "203.0.113.10"],
        vec!["-n", s, "-6", "route", "add", "default", "via", "2001:db8::10"],
    ];
    for st in steps {
        assert!(ip(&st), "ip {st:?} failed");
    }
    Some(Lab { server, client, stop: Arc::new(AtomicBool::new(false)), _tcp: Vec::new() })
}

impl Lab {
    fn nft(&self, rules: &str) {
        // Statements end at a newline; the one-line rulesets here use " }".
        let out = self.server.exec("nft", &["-f", "-"], Some(&rules.replace(" }", "\n}")));
        assert!(out.status.success(), "nft -f failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    fn restore(&self, program: &str, rules: &str) {
        let out = self.server.exec(program, &[], Some(rules));
        assert!(out.status.success(), "{program} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    /// Dual-stack TCP listeners and UDP echo responders on these ports.
    fn listen(&mut self, tcp: &[u16], udp: &[u16]) {
        let tcp = tcp.to_vec();
        let listeners =
            self.server.run_in(move || tcp.iter().map(|p| TcpListener::bind(("::", *p)).unwrap()).collect::<Vec<_>>());
        self._tcp.extend(listeners);
        for p in udp.iter().copied() {
            let stop = self.stop.clone();
            let sock = self.server.run_in(move || UdpSocket::bind(("::", p)).unwrap());
            sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
            });
        }
    }
    /// Does a connection from the client namespace get through?
    fn reachable(&self, proto: &str, v6: bool, port: u16) -> bool {
        let addr: SocketAddr =
            if v6 { format!("[{SERVER_V6}]:{port}") } else { format!("{SERVER_V4}:{port}") }.parse().unwrap();
        let proto = proto.to_string();
        self.client.run_in(move || {
            if proto == "tcp" {
                TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok()
            } else {
                let bind = if v6 { "[::]:0" } else { "0.0.0.0:0" };
                let s = UdpSocket::bind(bind).unwrap();
                s.set_read_timeout(Some(CONNECT_TIMEOUT)).unwrap();
                s.send_to(b"ping", addr).unwrap();
                let mut buf = [0u8; 8];
                s.recv_from(&mut buf).is_ok()
            }
        })
    }
    /// Run the agent inside the server namespace with a profile.
    fn agent(&self, checks: &[&str], params: &str) -> Value {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("p.toml");
        let include: Vec<String> = checks.iter().map(|c| format!("{c:?}")).collect();
        std::fs::write(
            &profile,
            format!(
                "[profile]\nname = \"ns\"\nversion = \"1\"\n[checks]\ninclude = [{}]\n[params.\"exposure.unexpected_services\"]\nexpected = []\n[params.\"firewall.ruleset_drift\"]\nsnapshot_file = \"{}/snap.json\"\n{params}",
                include.join(", "),
                dir.path().display()
            ),
        )
        .unwrap();
        let exe = env!("CARGO_BIN_EXE_kosmos-node-agent");
        let out = self.server.exec(
            exe,
            &["check", "--output", "json", "--fail-on", "none", "--profile", profile.to_str().unwrap()],
            None,
        );
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
        common::validate_report(&report);
        report
    }
}

fn status<'a>(report: &'a Value, id: &str) -> &'a str {
    common::finding(report, id)["status"].as_str().unwrap()
}

/// The (proto, port, family) the agent says the internet can reach.
fn exposed(report: &Value) -> BTreeSet<String> {
    let f = common::finding(report, "exposure.unexpected_services");
    assert_ne!(f["status"], "error", "{f}");
    f["observed"]["exposed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = e.as_str().unwrap();
            let proto = &s[..3];
            let port: String = s.split("]:").nth(1).unwrap().chars().take_while(char::is_ascii_digit).collect();
            let fam = if s.ends_with("(IPv6)") { "v6" } else { "v4" };
            format!("{proto}/{port}/{fam}")
        })
        .collect()
}

/// Assert that the agent's exposure answers equal real reachability, and
/// equal the expected set.
fn confirm(lab: &Lab, report: &Value, tcp: &[u16], udp: &[u16], expected: &[&str]) {
    let said = exposed(report);
    let mut real = BTreeSet::new();
    for (proto, ports) in [("tcp", tcp), ("udp", udp)] {
        for p in ports {
            for v6 in [false, true] {
                if lab.reachable(proto, v6, *p) {
                    real.insert(format!("{proto}/{p}/{}", if v6 { "v6" } else { "v4" }));
                }
            }
        }
    }
    let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(said, want, "evaluator answers differ from the expectation");
    assert_eq!(real, want, "real connections differ from the expectation");
}

const EXPOSURE: &[&str] =
    &["exposure.unexpected_services", "firewall.input_default_deny_ipv4", "firewall.input_default_deny_ipv6"];

#[test]
fn ruleset_01_default_accept() {
    let Some(mut lab) = lab() else { return };
    lab.listen(&[22, 8080], &[51820]);
    let r = lab.agent(EXPOSURE, "");
    assert_eq!(status(&r, "firewall.input_default_deny_ipv4"), "fail");
    assert_eq!(status(&r, "firewall.input_default_deny_ipv6"), "fail");
    confirm(
        &lab,
        &r,
        &[22, 8080],
        &[51820],
        &["tcp/22/v4", "tcp/22/v6", "tcp/8080/v4", "tcp/8080/v6", "udp/51820/v4", "udp/51820/v6"],
    );
}

#[test]
fn ruleset_02_nft_default_drop_with_holes() {
    let Some(mut lab) = lab() else { return };
    lab.nft("table inet f { chain input { type filter hook input priority 0; policy drop;\n ct state established,related accept\n iifname \"lo\" accept\n tcp dport 22 accept\n udp dport 51820 accept } }\n");
    lab.listen(&[22, 8080], &[51820, 53]);
    let r = lab.agent(&[EXPOSURE, &["exposure.kilo_udp_allowed", "exposure.ssh_restricted"]].concat(), "");
    assert_eq!(status(&r, "firewall.input_default_deny_ipv4"), "pass");
    assert_eq!(status(&r, "firewall.input_default_deny_ipv6"), "pass");
    assert_eq!(status(&r, "exposure.kilo_udp_allowed"), "pass");
    assert_eq!(status(&r, "exposure.ssh_restricted"), "fail");
    confirm(&lab, &r, &[22, 8080], &[51820, 53], &["tcp/22/v4", "tcp/22/v6", "udp/51820/v4", "udp/51820/v6"]);
}

#[test]
fn ruleset_03_ipv6_forgotten() {
    let Some(mut lab) = lab() else { return };
    lab.nft("table ip f { chain input { type filter hook input priority 0; policy drop;\n tcp dport 22 accept } }\n");
    lab.listen(&[22, 5432], &[]);
    let r = lab.agent(EXPOSURE, "");
    assert_eq!(status(&r, "firewall.input_default_deny_ipv4"), "pass");
    assert_eq!(status(&r, "firewall.input_default_deny_ipv6"), "fail");
    confirm(&lab, &r, &[22, 5432], &[], &["tcp/22/v4", "tcp/22/v6", "tcp/5432/v6"]);
}

#[test]
fn ruleset_04_jumps_into_user_chains() {
    let Some(mut lab) = lab() else { return };
    lab.nft("table inet f {\n chain admin { ip saddr 203.0.113.0/24 accept\n return }\n chain svc { tcp dport 8080 jump admin\n tcp dport 9090 accept }\n chain input { type filter hook input priority 0; policy drop;\n jump svc\n tcp dport 22 jump admin } }\n");
    lab.listen(&[22, 8080, 9090, 9091], &[]);
    let r = lab.agent(EXPOSURE, "");
    confirm(&lab, &r, &[22, 8080, 9090, 9091], &[], &["tcp/22/v4", "tcp/8080/v4", "tcp/9090/v4", "tcp/9090/v6"]);
}

#[test]
fn ruleset_05_sets_and_ranges() {
    let Some(mut lab) = lab() else { return };
    lab.nft("table inet f {\n set web { type inet_service; flags interval; elements = { 8000-8100, 443 } }\n set ops { type ipv4_addr; flags interval; elements = { 198.51.100.0/24, 203.0.113.8-203.0.113.12 } }\n chain input { type filter hook input priority 0; policy drop;\n tcp dport @web accept\n ip saddr @ops tcp dport 10250 accept } }\n");
    lab.listen(&[443, 8050, 8101, 10250], &[]);
    let r = lab.agent(&[EXPOSURE, &["exposure.kubelet_api_restricted"]].concat(), "");
    let k = common::finding(&r, "exposure.kubelet_api_restricted");
    assert_eq!(k["status"], "fail");
    let outside = k["observed"]["reachable_from_outside_allowed"].to_string();
    assert!(outside.contains("198.51.100.0/24") && outside.contains("203.0.113.8-203.0.113.12"), "{outside}");
    confirm(
        &lab,
        &r,
        &[443, 8050, 8101, 10250],
        &[],
        &["tcp/443/v4", "tcp/443/v6", "tcp/8050/v4", "tcp/8050/v6", "tcp/10250/v4"],
    );
}

#[test]
fn ruleset_06_ct_state_vmap_and_loopback() {
    let Some(mut lab) = lab() else { return };
    lab.nft("table inet f { chain input { type filter hook input priority 0; policy drop;\n ct state vmap { invalid : drop, established : accept, related : accept }\n iif \"lo\" accept\n ct state new tcp dport 2222 accept } }\n");
    lab.listen(&[2222, 3333], &[]);
    let r = lab.agent(EXPOSURE, "");
    assert_eq!(status(&r, "firewall.input_default_deny_ipv6"), "pass");
    confirm(&lab, &r, &[2222, 3333], &[], &["tcp/2222/v4", "tcp/2222/v6"]);
}

#[test]
fn ruleset_07_unknown_expression_is_an_error_naming_the_rule() {
    let Some(mut lab) = lab() else { return };
    lab.nft("table inet f { chain input { type filter hook input priority 0; policy drop;\n fib daddr type local tcp dport 8080 accept\n tcp dport 22 accept } }\n");
    lab.listen(&[22, 8080], &[]);
    let r = lab.agent(&["exposure.unexpected_services", "exposure.ssh_restricted"], "");
    let f = common::finding(&r, "exposure.unexpected_services");
    assert_eq!(f["status"], "error");
    let reason = f["reason"].as_str().unwrap();
    assert!(reason.contains("handle") && reason.contains("fib"), "{reason}");
    // Port 22 is decided before the unknown rule matters.
    assert_eq!(status(&r, "exposure.ssh_restricted"), "fail");
}

#[test]
fn ruleset_08_iptables_nft_multiport() {
    let Some(mut lab) = lab() else { return };
    lab.restore("iptables-nft-restore", "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -p tcp -m multiport --dports 80,443,7000:7010 -m comment --comment \"web \\\"public\\\"\" -j ACCEPT\nCOMMIT\n");
    lab.restore("ip6tables-nft-restore", "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 443 -j ACCEPT\nCOMMIT\n");
    lab.listen(&[80, 443, 7005, 7011], &[]);
    let r = lab.agent(EXPOSURE, "");
    assert_eq!(status(&r, "firewall.input_default_deny_ipv4"), "pass");
    confirm(&lab, &r, &[80, 443, 7005, 7011], &[], &["tcp/80/v4", "tcp/443/v4", "tcp/443/v6", "tcp/7005/v4"]);
}

#[test]
fn ruleset_09_legacy_and_nft_mixed() {
    let Some(mut lab) = lab() else { return };
    lab.restore(
        "iptables-legacy-restore",
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 8080 -j DROP\nCOMMIT\n",
    );
    lab.nft("table inet f { chain input { type filter hook input priority 0; policy drop;\n tcp dport { 22, 8080 } accept } }\n");
    lab.listen(&[22, 8080], &[]);
    let r = lab.agent(&[EXPOSURE, &["firewall.backends_not_mixed"]].concat(), "");
    let m = common::finding(&r, "firewall.backends_not_mixed");
    assert_eq!(m["status"], "fail", "{m}");
    // The legacy drop applies on top of the nft accept for IPv4 only.
    confirm(&lab, &r, &[22, 8080], &[], &["tcp/22/v4", "tcp/22/v6", "tcp/8080/v6"]);
}

#[test]
fn ruleset_10_reject_and_negation() {
    let Some(mut lab) = lab() else { return };
    lab.restore("iptables-nft-restore", "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT ! -s 198.51.100.7/32 -p tcp --dport 23 -j REJECT --reject-with tcp-reset\n-A INPUT -p tcp ! --dport 1000:65535 -j DROP\nCOMMIT\n");
    lab.restore("ip6tables-nft-restore", "*filter\n:INPUT DROP [0:0]\nCOMMIT\n");
    lab.listen(&[23, 999, 1000], &[]);
    let r = lab.agent(EXPOSURE, "");
    assert_eq!(status(&r, "firewall.input_default_deny_ipv4"), "fail");
    confirm(&lab, &r, &[23, 999, 1000], &[], &["tcp/1000/v4"]);
}

#[test]
fn ruleset_11_goto_does_not_return() {
    let Some(mut lab) = lab() else { return };
    lab.nft("table inet f {\n chain deny { drop }\n chain input { type filter hook input priority 0; policy accept;\n tcp dport 6000 goto deny\n tcp dport 6001 jump deny\n tcp dport 6002 accept\n meta nfproto ipv6 drop } }\n");
    lab.listen(&[6000, 6001, 6002, 6003], &[]);
    let r = lab.agent(EXPOSURE, "");
    confirm(&lab, &r, &[6000, 6001, 6002, 6003], &[], &["tcp/6002/v4", "tcp/6002/v6", "tcp/6003/v4"]);
}

#[test]
fn ruleset_12_accept_is_not_final_across_base_chains() {
    let Some(mut lab) = lab() else { return };
    lab.nft("table inet a { chain input { type filter hook input priority 0; policy accept;\n tcp dport 8080 accept } }\ntable inet b { chain input { type filter hook input priority 10; policy accept;\n tcp dport 8080 drop } }\n");
    lab.listen(&[8080, 8081], &[]);
    let r = lab.agent(EXPOSURE, "");
    confirm(&lab, &r, &[8080, 8081], &[], &["tcp/8081/v4", "tcp/8081/v6"]);
}

#[test]
fn ruleset_13_prerouting_drop_before_input() {
    let Some(mut lab) = lab() else { return };
    lab.nft("table inet raw { chain pre { type filter hook prerouting priority -300; policy accept;\n ip saddr 203.0.113.0/24 tcp dport 9000 drop } }\ntable inet f { chain input { type filter hook input priority 0; policy drop;\n tcp dport { 9000, 9001 } accept } }\n");
    lab.listen(&[9000, 9001], &[]);
    let r = lab.agent(EXPOSURE, "");
    confirm(&lab, &r, &[9000, 9001], &[], &["tcp/9000/v6", "tcp/9001/v4", "tcp/9001/v6"]);
}

#[test]
fn ruleset_14_iptables_unknown_match_is_an_error() {
    let Some(mut lab) = lab() else { return };
    lab.restore(
        "iptables-nft-restore",
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -m addrtype --dst-type LOCAL -p tcp --dport 8443 -j ACCEPT\nCOMMIT\n",
    );
    lab.listen(&[8443], &[]);
    let r = lab.agent(&["exposure.unexpected_services"], "");
    let f = common::finding(&r, "exposure.unexpected_services");
    assert_eq!(f["status"], "error", "{f}");
    assert!(f["reason"].as_str().unwrap().contains("addrtype"));
}

#[test]
fn ruleset_15_ssh_rate_limited() {
    let Some(mut lab) = lab() else { return };
    lab.nft("table inet f { chain input { type filter hook input priority 0; policy drop;\n tcp dport 22 ct state new limit rate 10/minute accept } }\n");
    lab.listen(&[22], &[]);
    let r = lab.agent(&[EXPOSURE, &["exposure.ssh_restricted"]].concat(), "");
    assert_eq!(status(&r, "exposure.ssh_restricted"), "pass");
    let r2 =
        lab.agent(&["exposure.ssh_restricted"], "[params.\"exposure.ssh_restricted\"]\nallow_rate_limited = false\n");
    assert_eq!(status(&r2, "exposure.ssh_restricted"), "fail");
    confirm(&lab, &r, &[22], &[], &["tcp/22/v4", "tcp/22/v6"]);
}

#[test]
fn ruleset_16_kubelet_restricted_and_kilo_blocked() {
    let Some(mut lab) = lab() else { return };
    lab.nft("table inet f { chain input { type filter hook input priority 0; policy drop;\n ip saddr 10.4.0.0/16 tcp dport 10250 accept\n udp dport 51820 drop } }\n");
    lab.listen(&[10250], &[51820]);
    let r = lab.agent(&[EXPOSURE, &["exposure.kubelet_api_restricted", "exposure.kilo_udp_allowed"]].concat(), "");
    assert_eq!(status(&r, "exposure.kubelet_api_restricted"), "pass");
    assert_eq!(status(&r, "exposure.kilo_udp_allowed"), "fail");
    confirm(&lab, &r, &[10250], &[51820], &[]);
}

#[test]
fn ruleset_17_legacy_only_ipv6_ip6tables() {
    let Some(mut lab) = lab() else { return };
    lab.restore(
        "iptables-legacy-restore",
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -p udp --dport 51820 -j ACCEPT\nCOMMIT\n",
    );
    lab.restore(
        "ip6tables-legacy-restore",
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -s 2001:db8::/64 -p tcp --dport 8080 -j ACCEPT\nCOMMIT\n",
    );
    lab.listen(&[8080], &[51820]);
    let r = lab.agent(&[EXPOSURE, &["firewall.backends_not_mixed", "exposure.kilo_udp_allowed"]].concat(), "");
    assert_eq!(status(&r, "firewall.backends_not_mixed"), "pass");
    assert_eq!(status(&r, "exposure.kilo_udp_allowed"), "pass");
    confirm(&lab, &r, &[8080], &[51820], &["tcp/8080/v6", "udp/51820/v4"]);
}

#[test]
fn ruleset_18_drift_between_runs() {
    let Some(lab) = lab() else { return };
    lab.nft("table inet f { chain input { type filter hook input priority 0; policy drop;\n tcp dport 22 accept } }\n");
    let dir = tempfile::tempdir().unwrap();
    let params = format!("[params.\"firewall.ruleset_drift\"]\nsnapshot_file = \"{}/s.json\"\n", dir.path().display());
    let run = |lab: &Lab| {
        let profile = dir.path().join("p.toml");
        std::fs::write(
            &profile,
            format!(
                "[profile]\nname = \"d\"\nversion = \"1\"\n[checks]\ninclude = [\"firewall.ruleset_drift\"]\n{params}"
            ),
        )
        .unwrap();
        let exe = env!("CARGO_BIN_EXE_kosmos-node-agent");
        let out = lab.server.exec(
            exe,
            &["check", "--output", "json", "--fail-on", "none", "--profile", profile.to_str().unwrap()],
            None,
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(status(&run(&lab), "firewall.ruleset_drift"), "not_applicable");
    assert_eq!(status(&run(&lab), "firewall.ruleset_drift"), "pass");
    lab.nft("add rule inet f input tcp dport 8080 accept\n");
    let r = run(&lab);
    let f = common::finding(&r, "firewall.ruleset_drift");
    assert_eq!(f["status"], "fail");
    assert!(f["observed"]["added"].to_string().contains("8080"), "{f}");
}

#[test]
fn api_server_black_holed_times_out() {
    let Some(lab) = lab() else { return };
    // The "API server" address is in the server namespace, which drops 6443.
    lab.nft(
        "table inet f { chain input { type filter hook input priority 0; policy accept;\n tcp dport 6443 drop } }\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n").unwrap();
    let kc = dir.path().join("kubelet.conf");
    std::fs::write(
        &kc,
        format!(
            "clusters:\n- name: c\n  cluster:\n    server: https://{SERVER_V4}:6443\n    certificate-authority: {}\n",
            ca.display()
        ),
    )
    .unwrap();
    let profile = dir.path().join("p.toml");
    std::fs::write(&profile, format!("[profile]\nname = \"b\"\nversion = \"1\"\n[checks]\ninclude = [\"controlplane.api_server_reachable\"]\n[params.\"controlplane.api_server_reachable\"]\nkubeconfig = \"{}\"\nconnect_timeout_ms = 300\ntls_timeout_ms = 300\n", kc.display())).unwrap();
    let exe = env!("CARGO_BIN_EXE_kosmos-node-agent");
    let start = std::time::Instant::now();
    let out = lab.client.exec(
        exe,
        &["check", "--output", "json", "--fail-on", "none", "--profile", profile.to_str().unwrap()],
        None,
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = common::finding(&r, "controlplane.api_server_reachable");
    assert_eq!(f["status"], "fail", "{f}");
    let reason = f["reason"].as_str().unwrap();
    assert!(reason.contains("TCP 6443") && reason.contains("no answer"), "{reason}");
}
