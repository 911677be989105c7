//! SARIF 2.1.0, as Kubescape and Trivy emit it for configuration scanning:
//! one run, one rule per check (title, help with the remediation and the
//! controls it implements, severity), one result per failing or erroring
//! finding, located on its node.
//!
//! A failing finding is `kind: fail` with a level from its severity; an
//! erroring one is `kind: open` ("the tool could not determine whether the
//! problem was present", SARIF §3.27.9), which the standard requires to have
//! level `none`. Passing, not-applicable and waived findings produce no
//! result. GitHub code scanning reads `security-severity` from the rule's
//! properties.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Assessment, Finding};

const SCHEMA: &str = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// The CVSS-like score GitHub maps to critical/high/medium/low.
fn security_severity(severity: &str) -> &'static str {
    match severity {
        "critical" => "9.5",
        "high" => "8.0",
        "medium" => "5.5",
        "low" => "3.0",
        _ => "0.0",
    }
}

fn level(severity: &str) -> &'static str {
    match severity {
        "critical" | "high" => "error",
        "medium" => "warning",
        _ => "note",
    }
}

fn rule(f: &Finding) -> Value {
    let mut help = String::new();
    if let Some(r) = f.remediation.as_deref().filter(|r| !r.is_empty()) {
        help.push_str("Remediation: ");
        help.push_str(r);
    }
    if !f.references.is_empty() {
        if !help.is_empty() {
            help.push_str("\n\n");
        }
        help.push_str("Implements: ");
        let refs: Vec<String> =
            f.references.iter().map(|r| format!("{} {}", r.standard_with_version(), r.id)).collect();
        help.push_str(&refs.join("; "));
    }
    if help.is_empty() {
        help = f.title.clone();
    }
    let mut tags = vec![Value::from("security"), Value::from("compliance"), Value::from(f.family.clone())];
    for r in &f.references {
        tags.push(Value::from(format!("{} {}", r.standard, r.id)));
    }
    json!({
        "id": f.id,
        "name": f.id,
        "shortDescription": { "text": f.title },
        "fullDescription": { "text": f.title },
        "help": { "text": help },
        "defaultConfiguration": { "level": level(&f.severity) },
        "properties": {
            "security-severity": security_severity(&f.severity),
            "severity": f.severity,
            "family": f.family,
            "tags": tags,
        },
    })
}

/// The SARIF log of `a`.
pub fn render(a: &Assessment<'_>) -> Value {
    // Rules: every check seen, in id order; the first finding of a check
    // describes it (checks are the same on every node of one version).
    let mut by_id: BTreeMap<&str, &Finding> = BTreeMap::new();
    for n in &a.nodes {
        for f in &n.findings {
            by_id.entry(f.id.as_str()).or_insert(f);
        }
    }
    let index: BTreeMap<&str, usize> = by_id.keys().enumerate().map(|(i, id)| (*id, i)).collect();
    let rules: Vec<Value> = by_id.values().map(|f| rule(f)).collect();

    let mut results = Vec::new();
    for n in &a.nodes {
        for f in n.findings.iter().filter(|f| f.is_open()) {
            let failing = f.status == "fail";
            let text = match f.explanation() {
                Some(e) => format!("{} on {}: {e}", f.title, n.hostname),
                None => format!("{} on {}", f.title, n.hostname),
            };
            let mut location = json!({
                "logicalLocations": [{
                    "name": n.hostname,
                    "fullyQualifiedName": n.uid(),
                    "kind": "resource",
                }],
            });
            // The file the evidence was read from, when it is one.
            if let Some(path) = f.evidence.iter().map(|e| e.source.as_str()).find(|s| s.starts_with('/')) {
                location["physicalLocation"] = json!({ "artifactLocation": { "uri": format!("file://{path}") } });
            }
            let mut properties = json!({
                "status": f.status,
                "node": n.uid(),
                "hostname": n.hostname,
            });
            if let Some(att) = &n.attestation {
                properties["attestationSeq"] = json!(att.seq);
                properties["attestationBodySha256"] = json!(att.body_sha256);
            }
            results.push(json!({
                "ruleId": f.id,
                "ruleIndex": index.get(f.id.as_str()).copied().unwrap_or(0),
                "kind": if failing { "fail" } else { "open" },
                "level": if failing { level(&f.severity) } else { "none" },
                "message": { "text": text },
                "locations": [location],
                "partialFingerprints": { "kosmosFinding/v1": super::stable_uuid(&[n.uid(), &f.id]) },
                "properties": properties,
            }));
        }
    }

    json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": a.producer.name,
                "version": a.producer.version,
                "semanticVersion": a.producer.version,
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": true,
                "endTimeUtc": a.generated_at,
            }],
            "results": results,
            "properties": {
                "profile": a.profile,
                "nodes": a.nodes.len(),
            },
        }],
    })
}
