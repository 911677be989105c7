//! SARIF 2.1.0, as Kubescape and Trivy emit it for configuration scanning:
//! one run, one rule per check (title, help with the remediation and the
//! controls it implements, severity), one result per failing or erroring
//! finding, located on its node (and the evidence file on it, if any).
//!
//! A failing finding is `kind: fail` with a level from its severity; an
//! erroring one is `kind: open` ("the tool could not determine whether the
//! problem was present", SARIF §3.27.9), which the standard requires to have
//! level `none`. Passing, not-applicable and waived findings produce no
//! result. GitHub code scanning reads `security-severity` from the rule's
//! properties.

use std::collections::HashMap;
use std::io::Write;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use super::{Assessment, Finding, NodeAssessment, NodeItem, RenderError, put};
use crate::verdict::{Severity, Status};

const SCHEMA: &str = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// The CVSS-like score GitHub maps to critical/high/medium/low.
fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
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
        "defaultConfiguration": { "level": level(f.severity) },
        "properties": {
            "security-severity": security_severity(f.severity),
            "severity": f.severity,
            "family": f.family,
            "tags": tags,
        },
    })
}

/// Write the SARIF log of `a` and `nodes` to `w` (compact JSON). Results
/// are written as each node comes; the run's `tool` (with the rules, in
/// the order checks first appear) follows them, which JSON's unordered
/// objects allow.
pub fn write(a: &Assessment<'_>, nodes: impl Iterator<Item = NodeItem>, w: &mut dyn Write) -> Result<(), RenderError> {
    let mut rules: Vec<Value> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut count = 0usize;
    write!(w, "{{\"$schema\":\"{SCHEMA}\",\"version\":\"2.1.0\",\"runs\":[{{\"results\":[")?;
    let mut first = true;
    for n in nodes {
        let n = n.map_err(RenderError::Source)?;
        count += 1;
        for f in &n.findings {
            let i = *index.entry(f.id.clone()).or_insert_with(|| {
                rules.push(rule(f));
                rules.len() - 1
            });
            if !f.is_open() {
                continue;
            }
            if !first {
                w.write_all(b",")?;
            }
            first = false;
            put(w, &result(&n, f, i))?;
        }
    }
    w.write_all(b"],\"tool\":")?;
    put(
        w,
        &json!({ "driver": {
            "name": a.producer.name,
            "version": a.producer.version,
            "semanticVersion": a.producer.version,
            "rules": rules,
        }}),
    )?;
    w.write_all(b",\"invocations\":")?;
    put(w, &json!([{ "executionSuccessful": true, "endTimeUtc": a.generated_at }]))?;
    w.write_all(b",\"properties\":")?;
    put(w, &json!({ "profile": a.profile, "nodes": count }))?;
    w.write_all(b"}]}\n")?;
    Ok(())
}

/// The artifact a result is located in: the node, and below it the file
/// the evidence was read from when there is one (`node-1a2b/etc/ssh/sshd_config`).
/// A relative URI, percent-encoded: GitHub code scanning refuses a whole
/// log if one result has no physical location, and resolves relative URIs
/// against the checkout, where these simply point nowhere.
fn artifact_uri(n: &NodeAssessment, f: &Finding) -> String {
    let mut uri = encode(n.uid());
    if let Some(path) = f.evidence.iter().map(|e| e.source.as_str()).find(|s| s.starts_with('/')) {
        for segment in path.split('/').filter(|s| !s.is_empty() && *s != "." && *s != "..") {
            uri.push('/');
            uri.push_str(&encode(segment));
        }
    }
    uri
}

/// RFC 3986's unreserved characters stay; everything else is escaped.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encoding of one URI path segment.
fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, ESCAPED).to_string()
}

fn result(n: &NodeAssessment, f: &Finding, rule_index: usize) -> Value {
    let failing = f.status == Status::Fail;
    let text = match f.explanation() {
        Some(e) => format!("{} on {}: {e}", f.title, n.hostname),
        None => format!("{} on {}", f.title, n.hostname),
    };
    let location = json!({
        "physicalLocation": { "artifactLocation": { "uri": artifact_uri(n, f) } },
        "logicalLocations": [{
            "name": n.hostname,
            "fullyQualifiedName": n.uid(),
            "kind": "resource",
        }],
    });
    let mut properties = json!({
        "status": f.status,
        "node": n.uid(),
        "hostname": n.hostname,
    });
    if let Some(att) = &n.attestation {
        properties["attestationSeq"] = json!(att.seq);
        properties["attestationBodySha256"] = json!(att.body_sha256);
    }
    json!({
        "ruleId": f.id,
        "ruleIndex": rule_index,
        "kind": if failing { "fail" } else { "open" },
        "level": if failing { level(f.severity) } else { "none" },
        "message": { "text": text },
        "locations": [location],
        "partialFingerprints": { "kosmosFinding/v1": super::stable_uuid(&[n.uid(), &f.id]) },
        "properties": properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_has_a_physical_location_under_its_node() {
        let f = Finding::parse(
            r#"{"id":"a.b","title":"t","family":"f","severity":"high","status":"fail",
                "evidence":[{"source":"/etc/ssh/sshd_config.d/my conf","detail":"x"}]}"#,
        )
        .unwrap();
        let n = NodeAssessment {
            node_id: Some("node-1".into()),
            hostname: "h".into(),
            os: None,
            assessed_at: "2026-12-03T00:00:00Z".into(),
            attestation: None,
            findings: vec![],
        };
        assert_eq!(artifact_uri(&n, &f), "node-1/etc/ssh/sshd_config.d/my%20conf");
        let no_file = Finding::parse(
            r#"{"id":"a.b","title":"t","family":"f","severity":"high","status":"error","reason":"sshd -T failed"}"#,
        )
        .unwrap();
        assert_eq!(artifact_uri(&n, &no_file), "node-1");
        assert_eq!(result(&n, &no_file, 0)["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "node-1");
    }
}
