//! OSCAL 1.2.3 Assessment Results: what an auditor's tooling imports, and
//! what no comparable scanner emits natively.
//!
//! - Each node is an inventory item of the result's local definitions.
//! - Each node's assessment is an observation: for the collector, the signed
//!   attestation its findings arrived in (node, seq, time, body SHA-256),
//!   pointing at the evidence bundle it can be verified against; for a
//!   local `check`, the unsigned run.
//! - Each check that does not pass is a finding per control it implements
//!   (from its references: CIS, ANSSI, ...), `not-satisfied`, related to the
//!   observations of the nodes where it failed (`reason: fail`) or could not
//!   be decided (`reason: other`). A check with no reference targets itself.
//!
//! OSCAL identifiers are tokens (a letter or `_` first), so controls are
//! named `<standard>_<id>` (e.g. `cis-kubernetes-benchmark_4.2.1`). The
//! assessment plan the schema requires is described in the back matter (the
//! profile the checks ran under); there is no separate plan document.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde_json::{Value, json};

use super::{Assessment, Finding, NodeAssessment, NodeItem, Reference, RenderError, stable_uuid};
use crate::verdict::{Severity, Status};

pub const OSCAL_VERSION: &str = "1.2.3";
/// The namespace of our own properties (OSCAL requires one for names it
/// does not define).
const NS: &str = "urn:kosmos-node-agent:oscal";

/// An OSCAL token from free text: letters, digits, `.`, `-`, `_`, starting
/// with a letter.
fn token(text: &str) -> String {
    let mut t: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c.to_ascii_lowercase() } else { '-' })
        .collect();
    if !t.starts_with(|c: char| c.is_ascii_alphabetic()) {
        t.insert_str(0, "c-");
    }
    t
}

/// The control a reference names, as an OSCAL control id.
pub fn control_id(r: &Reference) -> String {
    format!("{}_{}", token(&r.standard), token(&r.id).trim_start_matches("c-"))
}

/// The controls a finding is assessed against: its references, or the
/// check itself when it has none.
fn controls(f: &Finding) -> Vec<(String, String)> {
    if f.references.is_empty() {
        return vec![(token(&f.id), format!("check {}", f.id))];
    }
    f.references.iter().map(|r| (control_id(r), format!("{} {}", r.standard_with_version(), r.id))).collect()
}

fn prop(name: &str, value: impl Into<String>) -> Value {
    json!({ "name": name, "ns": NS, "value": value.into() })
}

fn observation(n: &NodeAssessment, subject: &str, evidence_uuid: Option<&str>) -> (String, Value) {
    let uuid = stable_uuid(&["observation", n.uid(), &n.assessed_at]);
    let mut props = vec![prop("node-id", n.uid()), prop("hostname", n.hostname.clone())];
    let (title, description, collected) = match &n.attestation {
        Some(att) => {
            props.push(prop("attestation-seq", att.seq.to_string()));
            props.push(prop("attestation-body-sha256", att.body_sha256.clone()));
            (
                format!("Signed attestation {} of {}", att.seq, n.hostname),
                format!(
                    "The findings of node {} ({}) as signed by its agent in attestation seq {} (body SHA-256 {}), \
                     created {}, hash-chained to the node's earlier attestations and verified by the collector.",
                    n.hostname,
                    n.uid(),
                    att.seq,
                    att.body_sha256,
                    att.created_at
                ),
                att.created_at.clone(),
            )
        }
        None => (
            format!("Local check of {}", n.hostname),
            format!(
                "The findings of {} from a local, unsigned run of kosmos-node-agent check at {}.",
                n.hostname, n.assessed_at
            ),
            n.assessed_at.clone(),
        ),
    };
    let mut o = json!({
        "uuid": uuid,
        "title": title,
        "description": description,
        "props": props,
        "methods": ["TEST"],
        "subjects": [{ "subject-uuid": subject, "type": "inventory-item" }],
        "collected": collected,
    });
    if let (Some(ev), Some(att)) = (evidence_uuid, &n.attestation) {
        o["relevant-evidence"] = json!([{
            "href": format!("#{ev}"),
            "description": format!("Attestation seq {} of node {} in the evidence bundle", att.seq, n.uid()),
        }]);
    }
    (uuid, o)
}

/// What an OSCAL finding gathers about one (check, control) over the nodes.
struct Open {
    title: String,
    severity: Severity,
    remediation: Option<String>,
    control_label: String,
    any_fail: bool,
    /// "hostname (status): explanation" for the first [`LISTED_NODES`] nodes.
    lines: Vec<String>,
    /// The observation of each node concerned (an index into the
    /// observations: every node is named there).
    observations: Vec<u32>,
}

/// How many nodes a finding's description lists by name and explanation:
/// past that, a fleet-wide failure would be a description nobody reads
/// (and memory for one line per node); every node stays related through
/// its observation.
const LISTED_NODES: usize = 20;

/// Write the Assessment Results document of `a` and `nodes` to `w`
/// (compact JSON). Nodes are read once; per node only its inventory item
/// and observation are kept, per (check, control) not satisfied the first
/// [`LISTED_NODES`] explanations and an index per node; each OSCAL finding
/// is built and written in turn.
pub fn write(a: &Assessment<'_>, nodes: impl Iterator<Item = NodeItem>, w: &mut dyn Write) -> Result<(), RenderError> {
    let g = gather(a, nodes)?;
    if g.open.is_empty() {
        serde_json::to_writer(&mut *w, &g.doc)?;
        w.write_all(b"\n")?;
        return Ok(());
    }
    // {"assessment-results":{...,"results":[{...,"findings":[ F, F, ... ]}]}}
    let ar = g
        .doc
        .get("assessment-results")
        .and_then(Value::as_object)
        .ok_or_else(|| RenderError::Source("internal: the document has no assessment-results".into()))?;
    w.write_all(b"{\"assessment-results\":{")?;
    for (key, value) in ar.iter().filter(|(k, _)| k.as_str() != "results") {
        serde_json::to_writer(&mut *w, key)?;
        w.write_all(b":")?;
        serde_json::to_writer(&mut *w, value)?;
        w.write_all(b",")?;
    }
    let result = ar
        .get("results")
        .and_then(|r| r.get(0))
        .ok_or_else(|| RenderError::Source("internal: the document has no result".into()))?;
    let mut head = serde_json::to_vec(result)?;
    // An object's JSON ends with its closing brace: reopen it.
    head.pop();
    w.write_all(b"\"results\":[")?;
    w.write_all(&head)?;
    w.write_all(b",\"findings\":[")?;
    for (i, ((check, control), o)) in g.open.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        serde_json::to_writer(&mut *w, &finding(a, check, control, o, &g.observation_uuids))?;
    }
    w.write_all(b"]}]}}\n")?;
    Ok(())
}

/// The document without its findings, and what the findings are made of.
struct Gathered {
    doc: Value,
    open: BTreeMap<(String, String), Open>,
    observation_uuids: Vec<String>,
}

fn finding(a: &Assessment<'_>, check: &str, control: &str, o: &Open, observation_uuids: &[String]) -> Value {
    let related: Vec<Value> = o
        .observations
        .iter()
        .filter_map(|i| observation_uuids.get(*i as usize))
        .map(|u| json!({ "observation-uuid": u }))
        .collect();
    let mut listed = o.lines.join("\n");
    if o.observations.len() > o.lines.len() {
        listed.push_str(&format!(
            "\n… and {} more node(s), each named by a related observation",
            o.observations.len() - o.lines.len()
        ));
    }
    let mut target = json!({
        "type": "objective-id",
        "target-id": control,
        "title": o.control_label,
        "status": { "state": "not-satisfied", "reason": if o.any_fail { "fail" } else { "other" } },
    });
    if !o.any_fail {
        target["status"]["remarks"] =
            json!("The check could not decide on these nodes (status error): not shown to be satisfied.");
    }
    let mut finding = json!({
        "uuid": stable_uuid(&["finding", &a.generated_at, check, control]),
        "title": format!("{} ({})", o.title, o.control_label),
        "description": format!(
            "Check {} ({} severity) is not satisfied on {} node(s):\n{}",
            check,
            o.severity,
            o.observations.len(),
            listed
        ),
        "props": [prop("check-id", check), prop("severity", o.severity.as_str())],
        "target": target,
        "related-observations": related,
    });
    if let Some(r) = &o.remediation {
        finding["remarks"] = json!(format!("Remediation: {r}"));
    }
    finding
}

fn gather(a: &Assessment<'_>, nodes: impl Iterator<Item = NodeItem>) -> Result<Gathered, RenderError> {
    let doc_uuid = stable_uuid(&["assessment-results", a.producer.name, &a.generated_at]);
    let plan_uuid = stable_uuid(&["assessment-plan", a.profile.as_deref().unwrap_or("")]);
    let evidence_uuid = a.evidence.as_ref().map(|_| stable_uuid(&["evidence", &a.generated_at]));

    let mut inventory = Vec::new();
    let mut observations = Vec::new();
    let mut observation_uuids: Vec<String> = Vec::new();
    let mut open: BTreeMap<(String, String), Open> = BTreeMap::new();
    let mut reviewed: BTreeSet<String> = BTreeSet::new();
    let mut start: Option<String> = None;
    for n in nodes {
        let n = n.map_err(RenderError::Source)?;
        let item = stable_uuid(&["inventory-item", n.uid()]);
        let mut props = vec![prop("node-id", n.uid()), prop("hostname", n.hostname.clone())];
        if let Some(os) = &n.os {
            props.push(prop("os", os.clone()));
        }
        inventory.push(json!({
            "uuid": item,
            "description": format!("Kubernetes node {} ({})", n.hostname, n.uid()),
            "props": props,
        }));
        let (observation_uuid, o) = observation(&n, &item, evidence_uuid.as_deref());
        observations.push(o);
        let observation_index = u32::try_from(observation_uuids.len()).unwrap_or(u32::MAX);
        observation_uuids.push(observation_uuid);
        if start.as_deref().is_none_or(|s| n.assessed_at.as_str() < s) {
            start = Some(n.assessed_at.clone());
        }
        for f in &n.findings {
            for (control, label) in controls(f) {
                reviewed.insert(control.clone());
                if !f.is_open() {
                    continue;
                }
                let entry = open.entry((f.id.clone(), control)).or_insert_with(|| Open {
                    title: f.title.clone(),
                    severity: f.severity,
                    remediation: f.remediation.clone().filter(|r| !r.is_empty()),
                    control_label: label,
                    any_fail: false,
                    lines: Vec::new(),
                    observations: Vec::new(),
                });
                entry.any_fail |= f.status == Status::Fail;
                if entry.lines.len() < LISTED_NODES {
                    entry.lines.push(match f.explanation() {
                        Some(e) => format!("{} ({}): {e}", n.hostname, f.status),
                        None => format!("{} ({})", n.hostname, f.status),
                    });
                }
                entry.observations.push(observation_index);
            }
        }
    }

    let selection = if reviewed.is_empty() {
        json!({ "include-all": {} })
    } else {
        json!({ "include-controls": reviewed.iter().map(|c| json!({ "control-id": c })).collect::<Vec<_>>() })
    };
    let start = start.unwrap_or_else(|| a.generated_at.clone());
    let node_count = inventory.len();
    let mut result = json!({
        "uuid": stable_uuid(&["result", &a.generated_at]),
        "title": format!("Hardening assessment of {node_count} node(s)"),
        "description": format!(
            "Continuous assessment by {} {} of Kubernetes external nodes: OS patch level, hardening baseline, \
             kubelet configuration, firewall and control-plane connectivity.",
            a.producer.name, a.producer.version
        ),
        "start": start,
        "end": a.generated_at,
        "local-definitions": { "inventory-items": inventory },
        "reviewed-controls": { "control-selections": [selection] },
    });
    if !observations.is_empty() {
        result["observations"] = json!(observations);
    }

    let mut resources = vec![json!({
        "uuid": plan_uuid,
        "title": "Assessment plan",
        "description": format!(
            "The checks of the kosmos-node-agent profile {}, run on every node at each interval.",
            a.profile.as_deref().unwrap_or("(not recorded)")
        ),
    })];
    if let (Some(uuid), Some(ev)) = (&evidence_uuid, &a.evidence) {
        let mut r = json!({ "uuid": uuid, "title": "Evidence bundle", "description": ev.description });
        if let Some(href) = &ev.href {
            r["rlinks"] = json!([{ "href": href }]);
        }
        resources.push(r);
    }

    let doc = json!({
        "assessment-results": {
            "uuid": doc_uuid,
            "metadata": {
                "title": format!("kosmos-node-agent assessment results, {}", a.generated_at),
                "last-modified": a.generated_at,
                "version": a.producer.version,
                "oscal-version": OSCAL_VERSION,
            },
            "import-ap": { "href": format!("#{plan_uuid}") },
            "results": [result],
            "back-matter": { "resources": resources },
        }
    });
    Ok(Gathered { doc, open, observation_uuids })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing_node(i: usize) -> super::super::NodeItem {
        let f = super::super::Finding::parse(
            r#"{"id":"ssh.permit_root_login","title":"t","family":"ssh","severity":"high","status":"fail",
                "evidence":[{"source":"/etc/ssh/sshd_config","detail":"PermitRootLogin yes"}],
                "references":[{"standard":"CIS Debian Linux","id":"5.2.10"}]}"#,
        )
        .unwrap();
        Ok(NodeAssessment {
            node_id: Some(format!("node-{i}")),
            hostname: format!("h{i}"),
            os: None,
            assessed_at: "2026-12-03T00:00:00Z".into(),
            attestation: None,
            findings: vec![f],
        })
    }

    #[test]
    fn a_fleet_wide_failure_names_every_node_but_lists_twenty() {
        let a = Assessment {
            producer: super::super::Producer { name: "t", version: "1" },
            generated_at: "2026-12-03T00:00:00Z".into(),
            profile: None,
            evidence: None,
        };
        let doc = written(&a, (0..25).map(failing_node));
        let finding = &doc["assessment-results"]["results"][0]["findings"][0];
        assert_eq!(finding["related-observations"].as_array().unwrap().len(), 25);
        let text = finding["description"].as_str().unwrap();
        assert!(text.contains("not satisfied on 25 node(s)"), "{text}");
        assert_eq!(text.matches("(fail)").count(), 20, "{text}");
        assert!(text.contains("and 5 more node(s)"), "{text}");
        assert_eq!(finding["target"]["target-id"], "cis-debian-linux_5.2.10");
    }

    /// The document `write` produces, parsed.
    fn written(a: &Assessment<'_>, nodes: impl Iterator<Item = super::super::NodeItem>) -> Value {
        let mut out = Vec::new();
        write(a, nodes, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn the_findings_are_spliced_into_the_result() {
        let a = Assessment {
            producer: super::super::Producer { name: "t", version: "1" },
            generated_at: "2026-12-03T00:00:00Z".into(),
            profile: Some("p 1".into()),
            evidence: Some(super::super::EvidenceSource { description: "d".into(), href: Some("b.tar.gz".into()) }),
        };
        let doc = written(&a, (0..3).map(failing_node));
        let ar = doc["assessment-results"].as_object().unwrap();
        let keys: Vec<&str> = ar.keys().map(String::as_str).collect();
        assert_eq!(keys, ["back-matter", "import-ap", "metadata", "results", "uuid"]);
        let result = &ar["results"][0];
        assert_eq!(result["findings"].as_array().unwrap().len(), 1);
        assert_eq!(result["observations"].as_array().unwrap().len(), 3);
        assert!(result["reviewed-controls"].is_object() && result["uuid"].is_string());
        assert_eq!(ar["back-matter"]["resources"][1]["rlinks"][0]["href"], "b.tar.gz");
    }

    #[test]
    fn control_ids_are_oscal_tokens() {
        let r = Reference { standard: "CIS Kubernetes Benchmark".into(), version: None, id: "4.2.1".into() };
        assert_eq!(control_id(&r), "cis-kubernetes-benchmark_4.2.1");
        let r = Reference { standard: "ANSSI BP-028".into(), version: Some("v2".into()), id: "R28".into() };
        assert_eq!(control_id(&r), "anssi-bp-028_r28");
        assert_eq!(token("1.2 x"), "c-1.2-x");
    }
}
