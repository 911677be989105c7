//! Issue 19, part 3, over the real binaries: `kosmos-node-agent check
//! --output sarif|ocsf|oscal` (one node) and `kosmos-collector report
//! --format sarif|ocsf|oscal` (the fleet) write documents that validate
//! against the standards' own JSON Schemas (vendored in schemas/vendor/, see
//! its README for their sources), and that say what the findings say.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kosmos_e2e::*;
use serde_json::Value;

fn schema(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo().join("schemas/vendor").join(name)).unwrap();
    jsonschema::validator_for(&serde_json::from_str::<Value>(&text).unwrap()).unwrap()
}

/// The schema errors of `doc` (empty when it validates).
fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator.iter_errors(doc).take(20).map(|e| format!("{e} at {}", e.instance_path())).collect()
}

fn assert_valid(validator: &jsonschema::Validator, doc: &Value, what: &str) {
    let errs = errors(validator, doc);
    assert!(errs.is_empty(), "{what} does not validate: {errs:#?}");
}

fn check(root: &Path, state: &Path, output: &str) -> String {
    agent_check(root, state, output, "2026-06-01")
}

fn open_statuses(results: &[Value]) -> BTreeMap<String, String> {
    results
        .iter()
        .filter(|r| r["status"] == "fail" || r["status"] == "error")
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_node_check_in_sarif_ocsf_and_oscal_validates_and_matches_its_findings() {
    let tmp = tempfile::tempdir().unwrap();
    let root = repo().join("tests/fixtures/weak");
    let report: Value = serde_json::from_str(&check(&root, &tmp.path().join("s0"), "json")).unwrap();
    let results = report["results"].as_array().unwrap();
    let open = open_statuses(results);
    assert!(open.values().any(|s| s == "fail"), "the weak fixture fails checks");

    // SARIF: a rule per check, a result per failing or erroring finding.
    let sarif: Value = serde_json::from_str(&check(&root, &tmp.path().join("s1"), "sarif")).unwrap();
    assert_valid(&schema("sarif-schema-2.1.0.json"), &sarif, "check --output sarif");
    let run = &sarif["runs"][0];
    let rules: Vec<&str> =
        run["tool"]["driver"]["rules"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(rules.len(), results.len(), "one rule per check");
    let got: BTreeMap<String, String> = run["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let id = r["ruleId"].as_str().unwrap();
            assert_eq!(rules[r["ruleIndex"].as_u64().unwrap() as usize], id, "ruleIndex points at its rule");
            let status = match (r["kind"].as_str().unwrap(), r["level"].as_str().unwrap()) {
                ("fail", "error" | "warning" | "note") => "fail",
                ("open", "none") => "error",
                other => panic!("{id}: unexpected kind/level {other:?}"),
            };
            assert!(r["locations"][0]["logicalLocations"][0]["name"].is_string());
            // GitHub code scanning refuses a whole log over one result
            // without a physical location.
            let uri = r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].as_str().unwrap();
            assert!(uri.starts_with(report["node"]["hostname"].as_str().unwrap()), "{uri}");
            (id.to_string(), status.to_string())
        })
        .collect();
    assert_eq!(got, open, "SARIF results are exactly the failing and erroring findings");
    let ssh =
        run["tool"]["driver"]["rules"].as_array().unwrap().iter().find(|r| r["id"] == "ssh.permit_root_login").unwrap();
    assert_eq!(ssh["properties"]["security-severity"], "8.0");
    assert!(ssh["help"]["text"].as_str().unwrap().contains("Remediation"), "{ssh}");

    // OCSF: one Compliance Finding per finding, every status.
    let ocsf = check(&root, &tmp.path().join("s2"), "ocsf");
    let validator = schema("ocsf-1.5.0-compliance_finding.schema.json");
    let events: Vec<Value> = ocsf.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), results.len(), "one event per finding");
    for (e, r) in events.iter().zip(results) {
        assert_valid(&validator, e, &format!("OCSF event of {}", r["id"]));
        assert_eq!(e["class_uid"], 2003);
        assert_eq!(e["finding_info"]["title"], r["title"]);
        let want = match r["status"].as_str().unwrap() {
            "pass" => 1,
            "fail" => 3,
            "error" => 0,
            _ => 99,
        };
        assert_eq!(e["compliance"]["status_id"], want, "{} is {}", r["id"], r["status"]);
        let refs = r["references"].as_array().unwrap();
        if let Some(first) = refs.first() {
            let standards = e["compliance"]["standards"].as_array().unwrap();
            assert!(
                standards.iter().any(|s| s.as_str().unwrap().starts_with(first["standard"].as_str().unwrap())),
                "{e}"
            );
        }
    }

    // OSCAL: one observation (the run), a finding per (check, control) not
    // satisfied.
    let oscal: Value = serde_json::from_str(&check(&root, &tmp.path().join("s3"), "oscal")).unwrap();
    assert_valid(&schema("oscal_complete_schema-1.2.3.json"), &oscal, "check --output oscal");
    let result = &oscal["assessment-results"]["results"][0];
    assert_eq!(result["observations"].as_array().unwrap().len(), 1);
    let expected: usize = results
        .iter()
        .filter(|r| r["status"] == "fail" || r["status"] == "error")
        .map(|r| r["references"].as_array().unwrap().len().max(1))
        .sum();
    assert_eq!(result["findings"].as_array().unwrap().len(), expected, "a finding per (check, control) not satisfied");
    for f in result["findings"].as_array().unwrap() {
        assert_eq!(f["target"]["status"]["state"], "not-satisfied");
    }

    // The validators are not vacuous: a document missing what the standard
    // requires is refused by each.
    let mut broken = sarif.clone();
    broken["runs"][0]["tool"]["driver"].as_object_mut().unwrap().remove("name");
    assert!(!errors(&schema("sarif-schema-2.1.0.json"), &broken).is_empty());
    let mut broken = events[0].clone();
    broken["class_uid"] = Value::from(2004);
    assert!(!errors(&validator, &broken).is_empty());
    let mut broken = oscal.clone();
    broken["assessment-results"].as_object_mut().unwrap().remove("import-ap");
    assert!(!errors(&schema("oscal_complete_schema-1.2.3.json"), &broken).is_empty());
    // Patterns are enforced too: a control id must be an OSCAL token.
    let mut broken = oscal.clone();
    broken["assessment-results"]["results"][0]["findings"][0]["target"]["target-id"] = Value::from("4.2.1");
    assert!(!errors(&schema("oscal_complete_schema-1.2.3.json"), &broken).is_empty());
}

#[test]
fn a_fleet_report_in_sarif_ocsf_and_oscal_names_the_signed_attestations() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let mut agents = Vec::new();
    for (i, fixture) in ["weak", "hardened"].iter().enumerate() {
        let agent = Agent::new(&tmp.path().join(format!("agent-{i}")));
        let (code, out, err) = agent.enroll(&collector, &collector.token("1h"), &collector.fingerprint());
        assert_eq!(code, 0, "enroll: {out}{err}");
        agent.configure(&collector.url(), &repo().join("tests/fixtures").join(fixture), "");
        let (code, out, err) = agent.run_once();
        assert_eq!(code, 0, "run --once: {out}{err}");
        agents.push(agent);
    }
    let report = |format: &str, extra: &[&str]| {
        let out = tmp.path().join(format!("fleet.{format}"));
        let mut cmd = Collector::cmd(&collector.data_dir);
        cmd.args(["report", "--format", format, "--out"]).arg(&out).args(extra);
        let (code, stdout, err) = run(&mut cmd);
        assert_eq!(code, 0, "report --format {format}: {stdout}{err}");
        std::fs::read_to_string(out).unwrap()
    };
    let json: Value = serde_json::from_str(&report("json", &["--findings", "all"])).unwrap();
    let nodes = json["nodes"].as_array().unwrap();
    let total: usize = nodes.iter().map(|n| n["findings"].as_array().unwrap().len()).sum();
    let open: usize = nodes
        .iter()
        .flat_map(|n| n["findings"].as_array().unwrap())
        .filter(|f| f["status"] == "fail" || f["status"] == "error")
        .count();

    let sarif: Value = serde_json::from_str(&report("sarif", &[])).unwrap();
    assert_valid(&schema("sarif-schema-2.1.0.json"), &sarif, "report --format sarif");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), open);
    let located: BTreeSet<&str> = results
        .iter()
        .map(|r| r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"].as_str().unwrap())
        .collect();
    assert!(located.contains(agents[0].node_id().as_str()), "the weak node is a location");

    let ocsf = report("ocsf", &[]);
    let validator = schema("ocsf-1.5.0-compliance_finding.schema.json");
    let events: Vec<Value> = ocsf.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), total, "one event per finding of every node");
    for e in &events {
        assert_valid(&validator, e, "an OCSF event of the fleet");
    }

    let oscal: Value = serde_json::from_str(&report("oscal", &["--evidence-bundle", "fleet-evidence.tar.gz"])).unwrap();
    assert_valid(&schema("oscal_complete_schema-1.2.3.json"), &oscal, "report --format oscal");
    let ar = &oscal["assessment-results"];
    let bundle =
        ar["back-matter"]["resources"].as_array().unwrap().iter().find(|r| r["title"] == "Evidence bundle").unwrap();
    assert_eq!(bundle["rlinks"][0]["href"], "fleet-evidence.tar.gz");
    assert!(bundle["description"].as_str().unwrap().contains(&collector.fingerprint()), "{bundle}");
    let observations = ar["results"][0]["observations"].as_array().unwrap();
    assert_eq!(observations.len(), 2, "one observation per node: its attestation");
    let mut store = collector.store();
    for o in observations {
        let prop = |name: &str| {
            o["props"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["value"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let node = prop("node-id");
        let seq: u64 = prop("attestation-seq").parse().unwrap();
        let stored = store.envelope_hash(&node, seq).unwrap().unwrap();
        let hex: String = stored.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(prop("attestation-body-sha256"), hex, "the observation names the stored, signed body");
        assert_eq!(o["relevant-evidence"][0]["href"], format!("#{}", bundle["uuid"].as_str().unwrap()));
    }
    assert_eq!(
        run(Collector::cmd(&collector.data_dir).args(["report", "--format", "csv", "--evidence-bundle", "x"])).0,
        2,
        "--evidence-bundle only goes with oscal"
    );
}
