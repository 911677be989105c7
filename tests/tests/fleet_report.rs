//! Fleet reports, the dashboard and /metrics over a store filled by real
//! agent runs: three enrolled agents audit fixture roots (one of them drifts
//! between two runs), a fourth node enrolls and never reports. Every format
//! is read back: JSON against its schema, CSV with a CSV parser, JUnit with
//! a JUnit parser, HTML and the dashboard rendered in headless Chromium
//! with their summary numbers compared with the JSON report's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kosmos_e2e::*;
use serde_json::Value;

struct Fleet {
    tmp: tempfile::TempDir,
    collector: Collector,
    /// The agents that report; the first one drifted.
    agents: Vec<Agent>,
    silent: Agent,
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

fn fleet() -> Fleet {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let fingerprint = collector.fingerprint();
    let drifting = tmp.path().join("drifting-root");
    let (code, _, err) = run(Command::new("cp").arg("-a").arg(fixture("hardened")).arg(&drifting));
    assert_eq!(code, 0, "cp: {err}");
    let mut agents = Vec::new();
    for (i, root) in [drifting.clone(), fixture("weak"), fixture("minimal")].iter().enumerate() {
        let agent = Agent::new(&tmp.path().join(format!("agent-{i}")));
        let (code, out, err) = agent.enroll(&collector, &collector.token("1h"), &fingerprint);
        assert_eq!(code, 0, "enroll: {out}{err}");
        agent.configure(&collector.url(), root, "");
        let (code, out, err) = agent.run_once();
        assert_eq!(code, 0, "run --once: {out}{err}");
        agents.push(agent);
    }
    // Drift: root login is switched on (first value wins in sshd_config).
    let sshd = drifting.join("etc/ssh/sshd_config");
    let text = std::fs::read_to_string(&sshd).unwrap();
    std::fs::write(&sshd, format!("PermitRootLogin yes\n{text}")).unwrap();
    let (code, out, err) = agents[0].run_once();
    assert_eq!(code, 0, "second run: {out}{err}");
    let silent = Agent::new(&tmp.path().join("agent-silent"));
    let (code, out, err) = silent.enroll(&collector, &collector.token("1h"), &fingerprint);
    assert_eq!(code, 0, "enroll: {out}{err}");
    Fleet { tmp, collector, agents, silent }
}

fn report(collector: &Collector, args: &[&str]) -> (i32, String, String) {
    run(Collector::cmd(&collector.data_dir).arg("report").args(args))
}

fn report_file(f: &Fleet, format: &str, extra: &[&str]) -> PathBuf {
    let out = f.tmp.path().join(format!("fleet-report{}.{format}", extra.len()));
    let mut args = vec!["--format", format, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, stdout, err) = report(&f.collector, &args);
    assert_eq!(code, 0, "report --format {format}: {stdout}{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    out
}

fn validate(report: &Value) {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/fleet-report.v1.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(report).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "fleet report does not match its schema: {errors:#?}");
}

fn counts_sum(items: &[Value], key: &str) -> [u64; 5] {
    let mut sum = [0u64; 5];
    for it in items {
        for (i, s) in ["pass", "fail", "error", "not_applicable", "waived"].iter().enumerate() {
            sum[i] += it[key][s].as_u64().unwrap();
        }
    }
    sum
}

fn summary_counts(j: &Value) -> [u64; 5] {
    counts_sum(std::slice::from_ref(&j["summary"]), "findings")
}

fn pct_text(v: &Value) -> String {
    v.as_f64().map_or_else(|| "–".into(), |p| format!("{p:.1}%"))
}

/// The DOM's summary cards equal the JSON report's summary.
fn assert_dom_matches(dom: &str, j: &Value) {
    let cards = dom_summary(dom);
    let s = &j["summary"];
    let expect = [
        ("nodes_total", s["nodes_total"].to_string()),
        ("nodes_compliant", s["nodes_compliant"].to_string()),
        ("compliant_pct", pct_text(&s["compliant_pct"])),
        ("nodes_ok", s["nodes_ok"].to_string()),
        ("nodes_stale", s["nodes_stale"].to_string()),
        ("nodes_never_reported", s["nodes_never_reported"].to_string()),
        ("nodes_revoked", s["nodes_revoked"].to_string()),
        ("fail", s["findings"]["fail"].to_string()),
        ("error", s["findings"]["error"].to_string()),
        ("pass", s["findings"]["pass"].to_string()),
        ("waived", s["findings"]["waived"].to_string()),
        ("not_applicable", s["findings"]["not_applicable"].to_string()),
        ("nodes_with_integrity_events", s["nodes_with_integrity_events"].to_string()),
        ("waivers_expiring_soon", s["waivers_expiring_soon"].to_string()),
    ];
    for (k, v) in expect {
        assert_eq!(cards.get(k), Some(&v), "summary card {k} in the rendered DOM");
    }
}

fn png_ok(p: &Path) {
    let bytes = std::fs::read(p).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", p.display());
    assert!(bytes.len() > 20_000, "screenshot {} is suspiciously small ({} bytes)", p.display(), bytes.len());
}

#[test]
fn fleet_reports_in_every_format() {
    let f = fleet();
    let drifted = f.agents[0].node_id();

    // JSON: the contract.
    let json_path = report_file(&f, "json", &[]);
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    validate(&j);
    let s = &j["summary"];
    assert_eq!(s["nodes_total"], 4);
    assert_eq!(s["nodes_ok"], 3);
    assert_eq!(s["nodes_never_reported"], 1);
    let nodes = j["nodes"].as_array().unwrap();
    let checks = j["checks"].as_array().unwrap();
    assert!(checks.len() > 100, "every check the agents ran is in the per-check view");
    assert_eq!(counts_sum(nodes, "counts"), summary_counts(&j), "node counts add up to the summary");
    assert_eq!(counts_sum(checks, "counts"), summary_counts(&j), "check counts add up to the summary");
    let compliant = nodes.iter().filter(|n| n["compliant"] == true).count() as u64;
    assert_eq!(s["nodes_compliant"], compliant);
    let silent = nodes.iter().find(|n| n["id"] == f.silent.node_id().as_str()).unwrap();
    assert_eq!(silent["state"], "never_reported");
    assert_eq!(silent["compliant"], false);
    // Each node lists exactly its non-passing findings, with evidence.
    for n in nodes {
        let c = &n["counts"];
        let shown = n["findings"].as_array().unwrap();
        let not_pass = c["fail"].as_u64().unwrap()
            + c["error"].as_u64().unwrap()
            + c["waived"].as_u64().unwrap()
            + c["not_applicable"].as_u64().unwrap();
        assert_eq!(shown.len() as u64, not_pass, "node {}", n["hostname"]);
        assert!(shown.iter().all(|x| x["status"] != "pass"));
    }
    // Per-check view: failing nodes are named.
    let root_login = checks.iter().find(|c| c["id"] == "ssh.permit_root_login").unwrap();
    assert!(root_login["failing_nodes"].as_array().unwrap().iter().any(|n| n == drifted.as_str()));
    assert!(root_login["remediation"].as_str().is_some_and(|r| !r.is_empty()));
    // Drift: the sshd change, old -> new.
    let drift = j["drift"].as_array().unwrap();
    let d = drift
        .iter()
        .find(|d| d["node_id"] == drifted.as_str() && d["check_id"] == "ssh.permit_root_login")
        .unwrap_or_else(|| panic!("no drift entry for the sshd change: {drift:#?}"));
    assert_eq!(d["old_status"], "pass");
    assert_eq!(d["new_status"], "fail");
    assert_ne!(d["old_observed"], d["new_observed"]);
    assert!(d["new_observed"].as_str().unwrap().contains("yes"));
    // Integrity: every chain intact; SRM: silence fails health monitoring.
    assert!(j["integrity"].as_array().unwrap().iter().all(|i| i["chain"] == "intact"));
    let srm = j["srm"].as_array().unwrap();
    let monitoring = srm.iter().find(|a| a["area"] == "Health monitoring").unwrap();
    assert!(monitoring["nodes_failing"].as_u64().unwrap() >= 1);
    assert!(srm.iter().any(|a| a["area"] == "Kubelet configuration"));
    assert!(srm.iter().all(|a| !a["area"].as_str().unwrap().starts_with("Unmapped")), "every family is mapped");
    // Trend: today, three reporting nodes.
    let trend = j["trend"].as_array().unwrap();
    assert_eq!(trend.len(), 1);
    assert_eq!(trend[0]["nodes_reporting"], 3);

    // --findings all lists every finding; --since in the future empties history.
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(report_file(&f, "json", &["--findings", "all"])).unwrap())
            .unwrap();
    validate(&all);
    for n in all["nodes"].as_array().unwrap() {
        let total: u64 = ["pass", "fail", "error", "not_applicable", "waived"]
            .iter()
            .map(|k| n["counts"][k].as_u64().unwrap())
            .sum();
        assert_eq!(n["findings"].as_array().unwrap().len() as u64, total);
    }
    let later: Value = serde_json::from_str(
        &std::fs::read_to_string(report_file(&f, "json", &["--since", "2099-01-01", "--findings", "failing"])).unwrap(),
    )
    .unwrap();
    assert!(later["drift"].as_array().unwrap().is_empty());
    assert!(later["trend"].as_array().unwrap().is_empty());
    let (code, _, err) = report(&f.collector, &["--since", "last tuesday"]);
    assert_eq!(code, 2, "a bad --since is a usage error: {err}");
    assert!(err.contains("--since"), "{err}");

    // CSV: parsed back, one row per listed finding.
    let csv_path = report_file(&f, "csv", &[]);
    let mut rdr = csv::Reader::from_path(&csv_path).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(header, kosmos_collector::fleet::csv::COLUMNS);
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let listed: usize = nodes.iter().map(|n| n["findings"].as_array().unwrap().len()).sum();
    assert_eq!(rows.len(), listed);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let drifted_row = rows
        .iter()
        .find(|r| &r[col("node_id")] == drifted.as_str() && &r[col("check_id")] == "ssh.permit_root_login")
        .unwrap();
    assert_eq!(&drifted_row[col("status")], "fail");
    assert_eq!(&drifted_row[col("severity")], root_login["severity"].as_str().unwrap());
    assert!(rows.iter().all(|r| &r[col("status")] != "pass"));

    // JUnit: read by a JUnit parser.
    let junit_path = report_file(&f, "junit", &[]);
    let suites = junit_parser::from_reader(std::io::BufReader::new(std::fs::File::open(&junit_path).unwrap())).unwrap();
    let by_name = |n: &str| suites.suites.iter().find(|s| s.name == n).unwrap();
    let jchecks = by_name("checks");
    assert_eq!(jchecks.cases.len(), checks.len());
    let failing_checks = checks.iter().filter(|c| !c["failing_nodes"].as_array().unwrap().is_empty()).count();
    assert_eq!(jchecks.failures as usize, failing_checks);
    let jnodes = by_name("nodes");
    assert_eq!(jnodes.cases.len(), 4);
    assert_eq!(jnodes.failures, 4 - compliant, "every non-compliant node fails its testcase");

    // Markdown.
    let md = std::fs::read_to_string(report_file(&f, "md", &[])).unwrap();
    assert!(md.contains("| Nodes enrolled | 4 |"), "{md}");
    assert!(md.contains(&format!("| Failing findings | {} |", s["findings"]["fail"])));
    // Node-controlled text is escaped for Markdown (a check id comes from
    // the node's report): renders as ssh.permit_root_login.
    assert!(md.contains("ssh.permit\\_root\\_login"), "{md}");

    // HTML: self-contained, rendered by Chromium, numbers equal the JSON's.
    let html_path = report_file(&f, "html", &[]);
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(!html.contains("<script"), "no script in the report");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "nothing fetched at view time");
    let png = f.tmp.path().join("fleet-report.png");
    let dom = chromium(&format!("file://{}", html_path.display()), &png);
    assert_dom_matches(&dom, &j);
    png_ok(&png);
    // Node details carry evidence; the drifted node's finding is there.
    assert!(dom.contains(&format!("id=\"node-{drifted}\"")));
    assert!(dom.contains("PermitRootLogin yes"), "the evidence of the drifted sshd_config is shown");
}

fn wait_for_snapshot(f: &Fleet) -> Value {
    let mut last = Value::Null;
    // The whole fleet: the three reports, the drift, and the node enrolled
    // last that never reported. A snapshot rebuilt between the drifting
    // node's second report and that enrollment has the reports but not the
    // fourth node; the page rendered a moment later would show 4 nodes where
    // this JSON says 3 (seen in CI on PostgreSQL).
    wait_for("the dashboard snapshot to include every node and report", Duration::from_secs(30), || {
        let (code, _, body) = http_get(&f.collector.http_addr, "/api/report.json", None);
        if code != 200 {
            return false;
        }
        last = serde_json::from_str(&body).unwrap();
        let s = &last["summary"];
        s["nodes_total"] == 4
            && s["nodes_ok"] == 3
            && s["nodes_never_reported"] == 1
            && !last["drift"].as_array().unwrap().is_empty()
    });
    let silent = f.silent.node_id();
    assert!(
        last["nodes"].as_array().unwrap().iter().any(|n| n["id"] == silent.as_str() && n["state"] == "never_reported"),
        "{}",
        last["nodes"]
    );
    last
}

#[test]
fn dashboard_pages_metrics_and_access() {
    let f = fleet();
    let j = wait_for_snapshot(&f);
    validate(&j);
    let addr = &f.collector.http_addr;

    // The fleet page, rendered in Chromium, shows the JSON's numbers.
    let png = f.tmp.path().join("dashboard.png");
    let dom = chromium(&format!("http://{addr}/"), &png);
    assert_dom_matches(&dom, &j);
    png_ok(&png);
    let (code, head, body) = http_get(addr, "/", None);
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("content-security-policy: default-src 'none'"), "{head}");
    assert!(!body.contains("<script"));

    // Filters: only critical checks; only one node.
    let critical = j["checks"].as_array().unwrap().iter().filter(|c| c["severity"] == "critical").count();
    let (_, _, body) = http_get(addr, "/?severity=critical", None);
    assert_eq!(body.matches("data-check=").count(), critical);
    let weak = f.agents[1].node_id();
    let (_, _, body) = http_get(addr, &format!("/?node={weak}"), None);
    assert_eq!(body.matches("data-node=").count(), 1);

    // Drill-down: a node's page lists every finding, passes included.
    let node = j["nodes"].as_array().unwrap().iter().find(|n| n["id"] == weak.as_str()).unwrap();
    let total: u64 =
        ["pass", "fail", "error", "not_applicable", "waived"].iter().map(|k| node["counts"][k].as_u64().unwrap()).sum();
    let (code, _, body) = http_get(addr, &format!("/nodes/{weak}"), None);
    assert_eq!(code, 200);
    assert_eq!(body.matches("data-finding=").count() as u64, total);
    let (code, _, body) = http_get(addr, &format!("/nodes/{weak}?family=ssh"), None);
    assert_eq!(code, 200);
    assert!(body.matches("data-finding=").count() as u64 > 0);
    assert!(body.matches("data-finding=").count() as u64 <= 18);
    let (code, _, body) = http_get(addr, "/checks/ssh.permit_root_login", None);
    assert_eq!(code, 200);
    assert!(body.contains("Remediation"));
    assert_eq!(http_get(addr, "/checks/no.such_check", None).0, 404);
    assert_eq!(http_get(addr, "/nodes/nobody", None).0, 404);

    // /metrics in the Prometheus/OpenMetrics text format.
    let (code, head, m) = http_get(addr, "/metrics", None);
    assert_eq!(code, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(m.contains("kosmos_fleet_nodes{state=\"ok\"} 3"), "{m}");
    assert!(m.contains("kosmos_fleet_nodes{state=\"never_reported\"} 1"), "{m}");
    assert!(m.contains(&format!("kosmos_node_compliance_ratio{{node=\"{weak}\"")), "{m}");
    assert!(m.contains(&format!("kosmos_node_last_attestation_timestamp_seconds{{node=\"{weak}\"")), "{m}");
    assert!(m.contains("kosmos_check_failing_nodes{check=\"ssh.permit_root_login\",severity="), "{m}");
    assert!(m.contains("kosmos_collector_envelopes_ingested_total 4"), "{m}");
    assert!(m.contains("kosmos_collector_ingest_latency_seconds_count 4"), "{m}");
    assert!(m.trim_end().ends_with("# EOF"));
    assert_eq!(http_get(addr, "/healthz", None).0, 200);

    // The shipped Grafana dashboard only queries metrics the collector serves.
    let grafana: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("packaging/grafana/kosmos-fleet.json")).unwrap())
            .unwrap();
    let mut queried = 0;
    for panel in grafana["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|t| t.starts_with("kosmos_"))
            {
                assert!(
                    m.contains(name),
                    "Grafana panel {:?} queries {name}, which /metrics does not serve",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10);
}

#[test]
fn dashboard_off_loopback_needs_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("c");
    Collector::prepare(&data);
    let (code, _, err) =
        run(Collector::cmd(&data).args(["serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "0.0.0.0:0"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("http_token_file"), "{err}");

    let token = "s3cret-token-for-the-dashboard";
    let token_file = tmp.path().join("http-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let data2 = tmp.path().join("c2");
    std::fs::create_dir_all(&data2).unwrap();
    std::fs::write(data2.join("collector.toml"), format!("http_token_file = \"{}\"\n", token_file.display())).unwrap();
    let c = Collector::start(&data2, 0);
    assert_eq!(http_get(&c.http_addr, "/", None).0, 401);
    assert_eq!(http_get(&c.http_addr, "/metrics", Some("wrong-token-wrong-token")).0, 401);
    assert_eq!(http_get(&c.http_addr, "/", Some(token)).0, 200);
    assert_eq!(http_get(&c.http_addr, "/metrics", Some(token)).0, 200);
    assert_eq!(http_get(&c.http_addr, "/healthz", None).0, 200, "health checks need no token");
}
