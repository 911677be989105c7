//! Node identity in certificates.
//!
//! A node's id lives in its client certificate as the URI SAN
//! `urn:kosmos:node:<id>`; the certificate's key is the node's Ed25519
//! signing key. The collector takes identity only from the verified
//! certificate, and an auditor can verify any stored envelope with the
//! certificate alone.

use ed25519_dalek::VerifyingKey;
use x509_parser::prelude::*;

/// URI SAN prefix naming a node.
pub const NODE_URI_PREFIX: &str = "urn:kosmos:node:";

/// OID of Ed25519 public keys (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("certificate has no {NODE_URI_PREFIX}<id> URI SAN")]
    NoNodeId,
    #[error("node id {0:?} is not valid (1-64 of a-z, 0-9, '-')")]
    BadNodeId(String),
    #[error("certificate key is not Ed25519 (algorithm {0})")]
    NotEd25519(String),
    #[error("certificate Ed25519 key is malformed")]
    BadKey,
}

/// Whether a string is a well-formed node id.
pub fn is_valid_node_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The URI SAN value for a node id.
pub fn node_uri(id: &str) -> String {
    format!("{NODE_URI_PREFIX}{id}")
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, IdentityError> {
    X509Certificate::from_der(der).map(|(_, c)| c).map_err(|e| IdentityError::Parse(e.to_string()))
}

/// The node id named by a certificate (DER).
pub fn node_id_from_cert(der: &[u8]) -> Result<String, IdentityError> {
    let cert = parse(der)?;
    let san = cert.subject_alternative_name().map_err(|e| IdentityError::Parse(e.to_string()))?;
    let Some(san) = san else { return Err(IdentityError::NoNodeId) };
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && let Some(id) = uri.strip_prefix(NODE_URI_PREFIX)
        {
            return if is_valid_node_id(id) {
                Ok(id.to_string())
            } else {
                Err(IdentityError::BadNodeId(id.to_string()))
            };
        }
    }
    Err(IdentityError::NoNodeId)
}

/// The Ed25519 verifying key of a certificate (DER).
pub fn verifying_key_from_cert(der: &[u8]) -> Result<VerifyingKey, IdentityError> {
    let cert = parse(der)?;
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    if oid != ED25519_OID {
        return Err(IdentityError::NotEd25519(oid));
    }
    let raw: [u8; 32] = spki.subject_public_key.data.as_ref().try_into().map_err(|_| IdentityError::BadKey)?;
    VerifyingKey::from_bytes(&raw).map_err(|_| IdentityError::BadKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, PKCS_ED25519, SanType};

    fn cert_with(sans: Vec<SanType>) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        let cert = params.self_signed(&key).unwrap();
        (cert.der().to_vec(), key)
    }

    #[test]
    fn reads_node_id_and_key() {
        let (der, key) = cert_with(vec![SanType::URI(node_uri("node-1a2b").try_into().unwrap())]);
        assert_eq!(node_id_from_cert(&der).unwrap(), "node-1a2b");
        let vk = verifying_key_from_cert(&der).unwrap();
        assert_eq!(vk.as_bytes().as_slice(), key.public_key_raw());
    }

    #[test]
    fn rejects_missing_or_bad_ids() {
        let (der, _) = cert_with(vec![SanType::DnsName("node.example".try_into().unwrap())]);
        assert_eq!(node_id_from_cert(&der), Err(IdentityError::NoNodeId));
        let (der, _) = cert_with(vec![SanType::URI("urn:kosmos:node:../etc".try_into().unwrap())]);
        assert!(matches!(node_id_from_cert(&der), Err(IdentityError::BadNodeId(_))));
        assert!(matches!(node_id_from_cert(b"garbage"), Err(IdentityError::Parse(_))));
        assert!(!is_valid_node_id("") && !is_valid_node_id("A") && is_valid_node_id("node-9"));
    }
}
