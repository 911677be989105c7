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
    severity: String,
    remediation: Option<String>,
    control_label: String,
    any_fail: bool,
    /// "hostname (status): explanation" per node.
    lines: Vec<String>,
    observations: Vec<String>,
}

/// Write the Assessment Results document of `a` and `nodes` to `w`. Nodes
/// are read once; per node only its inventory item and observation are
/// kept, and per (check, control) not satisfied one line per node.
pub fn write(a: &Assessment<'_>, nodes: impl Iterator<Item = NodeItem>, w: &mut dyn Write) -> Result<(), RenderError> {
    let doc = render(a, nodes)?;
    serde_json::to_writer_pretty(&mut *w, &doc)?;
    w.write_all(b"\n")?;
    Ok(())
}

/// The Assessment Results document of `a` and `nodes`.
pub fn render(a: &Assessment<'_>, nodes: impl Iterator<Item = NodeItem>) -> Result<Value, RenderError> {
    let doc_uuid = stable_uuid(&["assessment-results", a.producer.name, &a.generated_at]);
    let plan_uuid = stable_uuid(&["assessment-plan", a.profile.as_deref().unwrap_or("")]);
    let evidence_uuid = a.evidence.as_ref().map(|_| stable_uuid(&["evidence", &a.generated_at]));

    let mut inventory = Vec::new();
    let mut observations = Vec::new();
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
                    severity: f.severity.clone(),
                    remediation: f.remediation.clone().filter(|r| !r.is_empty()),
                    control_label: label,
                    any_fail: false,
                    lines: Vec::new(),
                    observations: Vec::new(),
                });
                entry.any_fail |= f.status == "fail";
                entry.lines.push(match f.explanation() {
                    Some(e) => format!("{} ({}): {e}", n.hostname, f.status),
                    None => format!("{} ({})", n.hostname, f.status),
                });
                entry.observations.push(observation_uuid.clone());
            }
        }
    }

    let findings: Vec<Value> = open
        .iter()
        .map(|((check, control), o)| {
            let related: Vec<Value> = o.observations.iter().map(|u| json!({ "observation-uuid": u })).collect();
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
                    o.lines.len(),
                    o.lines.join("\n")
                ),
                "props": [prop("check-id", check.clone()), prop("severity", o.severity.clone())],
                "target": target,
                "related-observations": related,
            });
            if let Some(r) = &o.remediation {
                finding["remarks"] = json!(format!("Remediation: {r}"));
            }
            finding
        })
        .collect();

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
    if !findings.is_empty() {
        result["findings"] = json!(findings);
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

    Ok(json!({
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
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ids_are_oscal_tokens() {
        let r = Reference { standard: "CIS Kubernetes Benchmark".into(), version: None, id: "4.2.1".into() };
        assert_eq!(control_id(&r), "cis-kubernetes-benchmark_4.2.1");
        let r = Reference { standard: "ANSSI BP-028".into(), version: Some("v2".into()), id: "R28".into() };
        assert_eq!(control_id(&r), "anssi-bp-028_r28");
        assert_eq!(token("1.2 x"), "c-1.2-x");
    }
}
