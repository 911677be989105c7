//! The kubelet's client certificate (how it authenticates to the API server)
//! and serving certificate (what port 10250 presents), and when they expire.
//!
//! Client: the kubeconfig's `client-certificate` (path) or
//! `client-certificate-data` (inline), else `<cert-dir>/kubelet-client-current.pem`
//! (what client rotation maintains). Serving: `tlsCertFile`; else, with
//! `serverTLSBootstrap`, `<cert-dir>/kubelet-server-current.pem`; else the
//! self-signed `<cert-dir>/kubelet.crt` the kubelet generates at start.

use base64::Engine;
use serde_json::Value;
use x509_parser::pem::Pem;

use super::config::parse_document;
use super::{Component, KubeletFacts};
use crate::audit::facts::{FactError, Facts, Gather};
use crate::audit::host::Host;

/// Certificates, kubeconfigs and PEM bundles are small.
pub const CERT_FILE_LIMIT: u64 = 1024 * 1024;

/// One certificate's validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Where it was read (a path, or `kubeconfig-path (client-certificate-data)`).
    pub source: String,
    /// Why this certificate is the one in use.
    pub why: String,
    pub subject: String,
    /// Unix time of notAfter.
    pub not_after: i64,
}

/// The certificate of one role, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertState {
    Found(CertInfo),
    /// No certificate applies (e.g. token authentication), with the reason.
    None(String),
    Error(FactError),
}

/// Parse the first CERTIFICATE block of a PEM bundle.
pub fn parse_pem_cert(bytes: &[u8], source: &str, why: &str) -> Result<CertInfo, FactError> {
    for pem in Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|e| FactError::new(format!("{source}: invalid PEM: {e}")))?;
        if pem.label != "CERTIFICATE" {
            continue;
        }
        let cert = pem.parse_x509().map_err(|e| FactError::new(format!("{source}: invalid certificate: {e}")))?;
        return Ok(CertInfo {
            source: source.to_string(),
            why: why.to_string(),
            subject: cert.subject().to_string(),
            not_after: cert.validity().not_after.timestamp(),
        });
    }
    Err(FactError::new(format!("{source}: no PEM CERTIFICATE block")))
}

fn read_cert(host: &Host, path: &str, why: &str) -> CertState {
    match host.read_bytes_limited(path, CERT_FILE_LIMIT) {
        Ok(b) => match parse_pem_cert(&b, path, why) {
            Ok(c) => CertState::Found(c),
            Err(e) => CertState::Error(e),
        },
        Err(e) => CertState::Error(e.into()),
    }
}

/// The client-certificate settings of a kubeconfig's first user.
/// `client-certificate` (path) and `client-certificate-data` of a user.
type ClientCertRef = (Option<String>, Option<String>);

fn kubeconfig_client_cert(text: &str, path: &str) -> Result<Option<ClientCertRef>, FactError> {
    let doc = parse_document(text).map_err(|e| FactError::new(format!("{path}: {e}")))?;
    let user = doc.get("users").and_then(Value::as_array).and_then(|u| u.first()).and_then(|u| u.get("user"));
    let Some(user) = user else { return Ok(None) };
    let file = user.get("client-certificate").and_then(Value::as_str).map(str::to_string);
    let data = user.get("client-certificate-data").and_then(Value::as_str).map(str::to_string);
    Ok(Some((file, data)))
}

/// Resolve a kubeconfig-relative path as kubectl does.
fn relative_to(base_file: &str, p: &str) -> String {
    if p.starts_with('/') {
        return p.to_string();
    }
    let dir = base_file.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    format!("{dir}/{p}")
}

fn client_cert(host: &Host, k: &Component) -> CertState {
    let kubeconfig = match k.flag("kubeconfig") {
        Ok(f) => f.map(|f| f.value.clone()).filter(|v| !v.is_empty()),
        Err(e) => return CertState::Error(e),
    };
    let rotated = format!("{}/kubelet-client-current.pem", k.cert_dir());
    if let Some(kc) = &kubeconfig {
        match host.read_text_limited(kc, CERT_FILE_LIMIT) {
            Ok(text) => match kubeconfig_client_cert(&text, kc) {
                Ok(Some((Some(file), _))) => {
                    let p = relative_to(kc, &file);
                    return read_cert(host, &p, &format!("client-certificate of {kc}"));
                }
                Ok(Some((None, Some(data)))) => {
                    let source = format!("{kc} (client-certificate-data)");
                    return match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
                        Ok(b) => match parse_pem_cert(&b, &source, "inline in the kubeconfig") {
                            Ok(c) => CertState::Found(c),
                            Err(e) => CertState::Error(e),
                        },
                        Err(e) => CertState::Error(FactError::new(format!("{source}: invalid base64: {e}"))),
                    };
                }
                Ok(_) => {
                    return CertState::None(format!("{kc} authenticates without a client certificate"));
                }
                Err(e) => return CertState::Error(e),
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => return CertState::Error(e.into()),
        }
    }
    match host.symlink_metadata(&rotated) {
        Ok(_) => read_cert(host, &rotated, "the rotated client certificate in --cert-dir"),
        Err(_) => CertState::None(format!(
            "no client certificate: {} and {rotated} are absent (the node may not be registered yet)",
            kubeconfig.as_deref().unwrap_or("no --kubeconfig")
        )),
    }
}

fn serving_cert(host: &Host, k: &Component) -> CertState {
    let tls = match k.lookup("tlsCertFile") {
        Ok(s) => s.and_then(|s| s.value.as_str().map(str::to_string)).filter(|v| !v.is_empty()),
        Err(e) => return CertState::Error(e),
    };
    if let Some(p) = tls {
        return read_cert(host, &p, "tlsCertFile");
    }
    let bootstrap = match k.lookup("serverTLSBootstrap") {
        Ok(s) => s.is_some_and(|s| s.value == Value::Bool(true)),
        Err(e) => return CertState::Error(e),
    };
    let (path, why) = if bootstrap {
        (format!("{}/kubelet-server-current.pem", k.cert_dir()), "serverTLSBootstrap: the rotated serving certificate")
    } else {
        (format!("{}/kubelet.crt", k.cert_dir()), "no tlsCertFile: the self-signed certificate the kubelet generates")
    };
    match host.symlink_metadata(&path) {
        Ok(_) => read_cert(host, &path, why),
        Err(_) => CertState::None(format!("no serving certificate on disk ({path} absent; {why})")),
    }
}

/// The kubelet's certificates.
#[derive(Debug, Clone)]
pub struct KubeletCerts {
    pub client: CertState,
    pub serving: CertState,
}

impl Gather for KubeletCerts {
    fn gather(facts: &Facts<'_>) -> Self {
        let k = facts.get::<KubeletFacts>();
        let host = facts.host();
        match &k.kubelet {
            None => {
                let r = k.not_found_reason();
                KubeletCerts { client: CertState::None(r.clone()), serving: CertState::None(r) }
            }
            Some(c) => KubeletCerts { client: client_cert(host, c), serving: serving_cert(host, c) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_forms() {
        let a = kubeconfig_client_cert(
            "apiVersion: v1\nkind: Config\nusers:\n- name: default-auth\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n",
            "/k",
        )
        .unwrap();
        assert_eq!(a, Some((Some("/var/lib/kubelet/pki/kubelet-client-current.pem".into()), None)));
        let b = kubeconfig_client_cert("users:\n- user:\n    token: abc\n", "/k").unwrap();
        assert_eq!(b, Some((None, None)));
        assert!(kubeconfig_client_cert("users: [\n", "/k").is_err());
        assert_eq!(relative_to("/etc/kubernetes/kubelet.conf", "pki/c.pem"), "/etc/kubernetes/pki/c.pem");
    }

    #[test]
    fn pem_parsing() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["node".into()]).unwrap().self_signed(&key).unwrap();
        let bundle = format!("{}{}", key.serialize_pem(), cert.pem());
        let info = parse_pem_cert(bundle.as_bytes(), "/c", "test").unwrap();
        assert!(info.not_after > 0);
        assert!(parse_pem_cert(b"garbage", "/c", "t").is_err());
        assert!(parse_pem_cert(key.serialize_pem().as_bytes(), "/c", "t").unwrap_err().to_string().contains("no PEM"));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..512), s in "\\PC*") {
            let _ = parse_pem_cert(&b, "/p", "t");
            let _ = parse_pem_cert(format!("-----BEGIN CERTIFICATE-----\n{s}\n-----END CERTIFICATE-----\n").as_bytes(), "/p", "t");
            let _ = kubeconfig_client_cert(&s, "/p");
        }
    }
}
