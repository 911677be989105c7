//! `KubeletConfiguration` and `KubeProxyConfiguration` files (YAML, or JSON,
//! which the kubelet also accepts), flattened to dotted keys
//! (`authentication.anonymous.enabled`) so that flags, file values and
//! defaults share one vocabulary and drift can be reported key by key.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::audit::facts::FactError;
use crate::audit::facts::confd::{ConfDirs, MissingDir, NullLink};
use crate::audit::host::Host;

/// A kubelet config file is a few KiB; 1 MiB leaves room for comments and
/// refuses a hostile file without reading it.
pub const CONFIG_FILE_LIMIT: u64 = 1024 * 1024;

/// Nesting beyond this is not a configuration file.
const MAX_DEPTH: usize = 32;

/// Parse configuration text into a JSON value. JSON is tried first when the
/// text looks like JSON, so that a JSON file's error messages make sense.
pub fn parse_document(text: &str) -> Result<Value, String> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str::<Value>(text).map_err(|e| format!("invalid JSON: {e}"));
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        let msg = e.to_string();
        // Keep the reason short enough for a finding.
        let first = msg.lines().next().unwrap_or("malformed").to_string();
        format!("invalid YAML: {first}")
    })
}

/// Check the object's `kind` and flatten it. `expected_kind` is
/// `KubeletConfiguration` or `KubeProxyConfiguration`.
pub fn parse_config(text: &str, expected_kind: &str) -> Result<BTreeMap<String, Value>, String> {
    let doc = parse_document(text)?;
    let Value::Object(map) = &doc else {
        return Err(format!("not a {expected_kind}: the document is not a mapping"));
    };
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k == expected_kind => {}
        Some(k) => return Err(format!("kind is {k:?}, not {expected_kind}")),
        None => return Err(format!("no kind: field (expected kind: {expected_kind})")),
    }
    let mut out = BTreeMap::new();
    flatten("", &doc, 0, &mut out)?;
    out.remove("kind");
    Ok(out)
}

fn flatten(prefix: &str, v: &Value, depth: usize, out: &mut BTreeMap<String, Value>) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, child, depth + 1, out)?;
            }
        }
        other if !prefix.is_empty() => {
            out.insert(prefix.to_string(), other.clone());
        }
        _ => {}
    }
    Ok(())
}

/// Read and parse a configuration file through the host.
pub fn load_config(host: &Host, path: &str, expected_kind: &str) -> Result<BTreeMap<String, Value>, FactError> {
    let text = host.read_text_limited(path, CONFIG_FILE_LIMIT)?;
    parse_config(&text, expected_kind).map_err(|e| FactError::new(format!("{path}: {e}")))
}

/// Flattened keys of one file, with its path.
pub type ConfigFile = (String, BTreeMap<String, Value>);

/// `--config-dir` drop-ins (kubelet 1.30+): `*.conf` files in lexical order,
/// each overriding the main file key by key.
///
/// The kubelet's rule is the configuration-directory rule
/// ([`crate::audit::facts::confd`]) reduced to one directory and without
/// masks: it reads a link to `/dev/null` or an empty file, finds it empty
/// and refuses to start, and so do we (the read or the parse fails); and a
/// directory that does not exist stops it too. Any file that cannot be used
/// makes the whole configuration unusable, as it does for the kubelet.
///
/// Known departure: the kubelet walks subdirectories too (`filepath.WalkDir`),
/// where we read the top level only and a subdirectory named `*.conf` is an
/// error.
pub fn load_config_dir(host: &Host, dir: &str) -> Result<Vec<ConfigFile>, FactError> {
    let set = ConfDirs::new([dir], ".conf").null_link(NullLink::IsAFile).missing_dir(MissingDir::Error).resolve(host);
    if let Some(problem) = set.problems.into_iter().next() {
        return Err(problem.into());
    }
    let mut out = Vec::new();
    for f in set.files {
        let keys = load_config(host, &f.path, "KubeletConfiguration")?;
        out.push((f.path, keys));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_flatten_to_the_same_keys() {
        let y = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication:\n  anonymous:\n    enabled: false\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\nreadOnlyPort: 0\ntlsCipherSuites: [A, B]\nfeatureGates:\n  RotateKubeletServerCertificate: true\n";
        let j = r#"{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"KubeletConfiguration","authentication":{"anonymous":{"enabled":false},"x509":{"clientCAFile":"/etc/kubernetes/pki/ca.crt"}},"readOnlyPort":0,"tlsCipherSuites":["A","B"],"featureGates":{"RotateKubeletServerCertificate":true}}"#;
        let a = parse_config(y, "KubeletConfiguration").unwrap();
        let b = parse_config(j, "KubeletConfiguration").unwrap();
        assert_eq!(a, b);
        assert_eq!(a["authentication.anonymous.enabled"], Value::Bool(false));
        assert_eq!(a["readOnlyPort"], Value::from(0));
        assert_eq!(a["featureGates.RotateKubeletServerCertificate"], Value::Bool(true));
        assert!(!a.contains_key("kind"));
    }

    #[test]
    fn wrong_kind_malformed_and_scalars_are_errors() {
        assert!(parse_config("kind: Pod\n", "KubeletConfiguration").unwrap_err().contains("Pod"));
        assert!(parse_config("a: [\n", "KubeletConfiguration").unwrap_err().contains("YAML"));
        assert!(parse_config("{\"kind\":", "KubeletConfiguration").unwrap_err().contains("JSON"));
        assert!(parse_config("just a string", "KubeletConfiguration").is_err());
        assert!(parse_config("readOnlyPort: 0\n", "KubeletConfiguration").unwrap_err().contains("no kind"));
    }

    #[test]
    fn alias_bombs_are_refused_or_bounded() {
        let mut s = String::from("kind: KubeletConfiguration\na: &a [x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            s.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = c;
        }
        // Must return (error or value) without exhausting memory.
        let _ = parse_config(&s, "KubeletConfiguration");
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_config(&s, "KubeletConfiguration");
            let _ = parse_config(&format!("kind: KubeletConfiguration\n{s}"), "KubeletConfiguration");
        }
    }
}
