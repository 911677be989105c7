//! Issue 19, part 2, over real Prometheus servers (Debian's `prometheus`
//! package, installed by `.ci/run`): the shipped alerting rules pass
//! `promtool check` and their unit tests; a Prometheus running the shipped
//! configuration scrapes a live collector and evaluates the rules without an
//! error, every series the rules select exists, and a refused envelope
//! fires its alert; the Cockpit configuration remote-writes the collector's
//! series, with its push token, to a second Prometheus that receives remote
//! writes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use kosmos_e2e::*;
use serde_json::Value;

fn shipped(name: &str) -> PathBuf {
    repo().join("packaging/prometheus").join(name)
}

/// `prometheus` and `promtool`, or why they cannot be used.
fn tools(test: &str) -> Option<(PathBuf, PathBuf)> {
    let found = |name: &str| {
        ["/usr/bin", "/usr/local/bin", "/usr/sbin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.is_file())
    };
    match (found("prometheus"), found("promtool")) {
        (Some(p), Some(t)) => Some((p, t)),
        _ => {
            cannot_run(test, "prometheus and promtool are not installed (Debian package prometheus)");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Percent-encoding of a query parameter (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    const ESCAPED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(s, ESCAPED).to_string()
}

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(exe: &Path, dir: &Path, config: &str, extra: &[&str]) -> Prometheus {
        std::fs::create_dir_all(dir).unwrap();
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let mut cmd = Command::new(exe);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--web.listen-address={addr}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if !extra.iter().any(|a| a.contains("agent")) {
            cmd.arg(format!("--storage.tsdb.path={}", dir.join("data").display()));
        }
        let child = cmd.spawn().unwrap();
        let p = Prometheus { child, addr, log };
        p.wait("to be ready", Duration::from_secs(60), |p| {
            TcpStream::connect(&p.addr).is_ok() && http_get(&p.addr, "/-/ready", None).0 == 200
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll `f` until it holds; on timeout, fail with Prometheus's log.
    fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Prometheus) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("timed out waiting for Prometheus at {} {what}; its log:\n{}", self.addr, self.log());
    }

    fn api(&self, path: &str) -> Value {
        let (code, _, body) = http_get(&self.addr, path, None);
        assert_eq!(code, 200, "GET {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        v["data"].clone()
    }

    fn query(&self, promql: &str) -> Vec<Value> {
        self.api(&format!("/api/v1/query?query={}", encode(promql)))["result"].as_array().unwrap().clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` with `from` replaced by `to`, which must occur.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the shipped configuration no longer contains {from:?}");
    text.replace(from, to)
}

/// Every series selector in the rules file that names a kosmos_ metric, or
/// `up{...}`, with its label matchers (`name{...}`). Comment lines are
/// skipped; prose never contains a kosmos_ name followed by anything but a
/// selector.
fn selectors(rules: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            let len = line[i..].bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
            let name = &line[i..i + len];
            let matchers = line[i + len..].strip_prefix('{').and_then(|m| m.find('}').map(|end| &m[..end]));
            if boundary && (name.starts_with("kosmos_") || (name == "up" && matchers.is_some())) {
                out.push(match matchers {
                    Some(m) => format!("{name}{{{m}}}"),
                    None => name.to_string(),
                });
            }
            i += len.max(1);
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn the_shipped_rules_and_configurations_pass_promtool() {
    let Some((_, promtool)) = tools("the_shipped_rules_and_configurations_pass_promtool") else {
        return;
    };
    let dir = shipped("");
    for args in [
        vec!["check", "rules", "kosmos-alerts.rules.yml"],
        vec!["test", "rules", "kosmos-alerts.test.yml"],
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "config", "--agent", "cockpit-agent.yml"],
    ] {
        let (code, out, err) = run(Command::new(&promtool).args(&args).current_dir(&dir));
        assert_eq!(code, 0, "promtool {args:?}:\n{out}{err}");
        assert!(out.contains("SUCCESS") || err.contains("SUCCESS"), "promtool {args:?}:\n{out}{err}");
    }
}

#[test]
fn the_selectors_of_the_rules_are_found() {
    // The extraction the live test relies on finds the rules' selectors.
    let rules = std::fs::read_to_string(shipped("kosmos-alerts.rules.yml")).unwrap();
    let s = selectors(&rules);
    for want in [
        "kosmos_fleet_compliant_ratio",
        "kosmos_fleet_nodes{state=\"stale\"}",
        "kosmos_collector_envelope_refusals_total",
        "kosmos_node_certificate_expiry_timestamp_seconds",
        "kosmos_collector_certificate_expiry_timestamp_seconds",
        "up{job=\"kosmos-collector\"}",
    ] {
        assert!(s.iter().any(|x| x == want), "{want} not among {s:?}");
    }
    assert!(s.len() >= 10, "{s:?}");
}

/// A collector with one node that attested once; the node's agent.
fn collector_with_a_node(dir: &Path) -> (Collector, Agent) {
    let collector = Collector::start(&dir.join("collector"), 0);
    let agent = Agent::new(&dir.join("agent"));
    let (code, out, err) = agent.enroll(&collector, &collector.token("1h"), &collector.fingerprint());
    assert_eq!(code, 0, "enroll: {out}{err}");
    agent.configure(&collector.url(), &repo().join("tests/fixtures/hardened"), "");
    let (code, out, err) = agent.run_once();
    assert_eq!(code, 0, "run --once: {out}{err}");
    wait_for("the dashboard to show the node", Duration::from_secs(30), || {
        http_get(&collector.http_addr, "/metrics", None).2.contains("kosmos_fleet_nodes{state=\"ok\"} 1")
    });
    (collector, agent)
}

/// Send the node's next envelope signed with a key that is not the node's.
fn send_badly_signed(collector: &Collector, agent: &Agent) {
    let node = collector.store().node(&agent.node_id()).unwrap().unwrap();
    let prev = node.head_hash.unwrap();
    let forged = kosmos_proto::chain::seal(
        &SigningKey::from_bytes(&[7u8; 32]),
        &body(&agent.node_id(), node.head_seq + 1, prev, br#"{"results":[]}"#),
    );
    let (cert, key) = identity_of(agent);
    let acks = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        attest(channel(collector, Some((&cert, &key))).await.unwrap(), vec![forged]).await.unwrap()
    });
    assert_eq!(acks.len(), 1);
    assert!(!acks[0].error.is_empty(), "a badly signed envelope must be refused: {:?}", acks[0]);
}

#[test]
fn a_real_prometheus_scrapes_the_collector_and_evaluates_the_shipped_rules() {
    let Some((prometheus, _)) = tools("a_real_prometheus_scrapes_the_collector_and_evaluates_the_shipped_rules") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (collector, agent) = collector_with_a_node(tmp.path());

    // The shipped prometheus.yml, sped up and pointed at this collector.
    let shipped_config = std::fs::read_to_string(shipped("prometheus.yml")).unwrap();
    let config = edit(&shipped_config, "scrape_interval: 60s", "scrape_interval: 1s");
    let config = edit(&config, "evaluation_interval: 60s", "evaluation_interval: 1s");
    let rules_path = shipped("kosmos-alerts.rules.yml");
    let config = edit(&config, "- kosmos-alerts.rules.yml", &format!("- {}", rules_path.display()));
    let config = edit(&config, "\"127.0.0.1:7080\"", &format!("\"{}\"", collector.http_addr));
    let p = Prometheus::start(&prometheus, &tmp.path().join("prometheus"), &config, &[]);

    p.wait("to scrape the collector", Duration::from_secs(60), |p| {
        p.query("up{job=\"kosmos-collector\"} == 1").len() == 1
    });

    // Every rule is evaluated, and none fails to evaluate.
    let rule_count = std::fs::read_to_string(&rules_path).unwrap().matches("- alert:").count();
    p.wait("to evaluate every rule", Duration::from_secs(60), |p| {
        let groups = p.api("/api/v1/rules");
        let rules: Vec<&Value> =
            groups["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
        rules.len() == rule_count
            && rules.iter().all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")))
    });
    let groups = p.api("/api/v1/rules");
    for rule in groups["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        assert_eq!(rule["health"], "ok", "rule {} does not evaluate: {}", rule["name"], rule["lastError"]);
    }

    // Every selector in the rules matches a series the collector serves:
    // a misspelt metric or label would make its alert silently never fire.
    let rules = std::fs::read_to_string(&rules_path).unwrap();
    let mut missing = Vec::new();
    for sel in selectors(&rules) {
        // The kubelet certificate checks exist only where the profile ran
        // them; the hardened fixture's profile does.
        let found = p.api(&format!("/api/v1/series?match[]={}", encode(&sel)));
        if found.as_array().unwrap().is_empty() {
            missing.push(sel);
        }
    }
    assert!(missing.is_empty(), "selectors of the shipped rules that match no series: {missing:?}");

    // Healthy: nothing fires but what this young fleet really shows.
    let alerts = p.api("/api/v1/alerts");
    let names: Vec<&str> =
        alerts["alerts"].as_array().unwrap().iter().filter_map(|a| a["labels"]["alertname"].as_str()).collect();
    for quiet in [
        "KosmosCollectorDown",
        "KosmosCollectorCertificateExpiresSoon",
        "KosmosNodeCertificateExpiresSoon",
        "KosmosEnvelopesRefused",
    ] {
        assert!(!names.contains(&quiet), "{quiet} fires on a healthy collector: {alerts}");
    }

    // A refused envelope fires KosmosEnvelopesRefused{reason="bad_signature"}.
    let sent = Instant::now();
    send_badly_signed(&collector, &agent);
    p.wait("KosmosEnvelopesRefused to fire", Duration::from_secs(60), |p| {
        p.api("/api/v1/alerts")["alerts"].as_array().unwrap().iter().any(|a| {
            a["labels"]["alertname"] == "KosmosEnvelopesRefused"
                && a["labels"]["reason"] == "bad_signature"
                && a["state"] == "firing"
        })
    });
    eprintln!("KosmosEnvelopesRefused fired {:?} after the refusal (1 s scrape and evaluation)", sent.elapsed());
}

/// A TCP relay to `to` that keeps every byte the client sent, to show which
/// headers a remote-write request carried.
fn recording_relay(to: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(&to) else { return };
            let mut back = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut back.1, &mut back.0);
            });
            let record = Arc::clone(&record);
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = client.read(&mut buf) {
                    if n == 0 || server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let mut seen = record.lock().unwrap();
                    // Headers are what is looked for: keep the first 1 MiB.
                    if seen.len() < 1 << 20 {
                        seen.extend_from_slice(&buf[..n]);
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, seen)
}

#[test]
fn the_cockpit_configuration_remote_writes_the_collector_series_with_its_token() {
    let Some((prometheus, _)) = tools("the_cockpit_configuration_remote_writes_the_collector_series_with_its_token")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (collector, _agent) = collector_with_a_node(tmp.path());

    // Cockpit's metrics data source stands in as a Prometheus that accepts
    // remote writes (Cockpit's push path is /api/v1/push, Prometheus's
    // receiver is /api/v1/write), behind a relay that records the requests.
    let cockpit = Prometheus::start(
        &prometheus,
        &tmp.path().join("cockpit"),
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    );
    let (relay, seen) = recording_relay(cockpit.addr.clone());

    let token = "push-token-for-the-test-0123456789";
    let shipped_config = std::fs::read_to_string(shipped("cockpit-agent.yml")).unwrap();
    let config = edit(&shipped_config, "scrape_interval: 60s", "scrape_interval: 1s");
    let config = edit(
        &config,
        "https://EDIT-DATA-SOURCE-ID.metrics.cockpit.fr-par.scw.cloud/api/v1/push",
        &format!("http://{relay}/api/v1/write"),
    );
    let config = edit(&config, "EDIT-COCKPIT-PUSH-TOKEN", token);
    let config = edit(&config, "\"127.0.0.1:7080\"", &format!("\"{}\"", collector.http_addr));
    let agent_dir = tmp.path().join("agent-mode");
    let _agent_mode = Prometheus::start(
        &prometheus,
        &agent_dir,
        &config,
        &["--enable-feature=agent", &format!("--storage.agent.path={}", agent_dir.join("wal").display())],
    );

    cockpit.wait("to receive the collector's series by remote write", Duration::from_secs(90), |c| {
        c.query("kosmos_fleet_nodes{state=\"ok\",job=\"kosmos-collector\",kosmos_collector=\"collector-1\"} == 1").len()
            == 1
            && !c.query("kosmos_collector_envelopes_ingested_total").is_empty()
            && !c.query("kosmos_node_certificate_expiry_timestamp_seconds").is_empty()
    });
    // Only the collector's series leave the host (write_relabel_configs).
    let names = cockpit.api("/api/v1/label/__name__/values");
    let names: Vec<&str> = names.as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(names.iter().all(|n| n.starts_with("kosmos_") || *n == "up"), "{names:?}");

    let requests = String::from_utf8_lossy(&seen.lock().unwrap()).to_ascii_lowercase();
    let first_head = requests.split("\r\n\r\n").next().unwrap_or_default().to_string();
    assert!(requests.contains("post /api/v1/write"), "no remote-write request went through the relay");
    assert!(
        requests.contains(&format!("authorization: bearer {token}")),
        "the push token is not sent as a bearer token: {first_head}"
    );
    // X-Token is what Scaleway documents; Debian 12's 2.42.0+ds drops
    // remote_write headers (prometheus/prometheus#13030), any other build
    // must send it.
    let (_, out, err) = run(Command::new(&prometheus).arg("--version"));
    let version = format!("{out}{err}");
    if version.contains("2.42.0+ds") {
        eprintln!("Debian's prometheus 2.42.0+ds: X-Token not sent (prometheus/prometheus#13030): {first_head}");
    } else {
        assert!(requests.contains(&format!("x-token: {token}")), "X-Token not sent by {version}: {first_head}");
    }
}
