//! The collector's certificate authority and server identity.
//!
//! On first start the collector creates, in its data directory, a CA
//! (ECDSA P-256, 10 years) and a server certificate signed by it (1 year,
//! SANs `localhost`, `127.0.0.1`, `::1` plus configured names). Operators may
//! bring their own instead (paths in `collector.toml`). Private keys are
//! written 0600 from creation. The CA signs node client certificates at
//! enrollment: the CSR's key (Ed25519, the node's attestation key) is kept,
//! everything else (subject, SAN, usages, validity) is decided here.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use sha2::{Digest, Sha256};

/// Errors from the PKI, naming the file or operation at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Rcgen {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: not a usable PEM certificate")]
    BadCertificate { path: String },
    #[error("certificate signing request refused: {0}")]
    BadCsr(String),
}

fn rc(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Rcgen { what, source }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.display().to_string(), source }
}

/// Where the PKI files live.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl PkiPaths {
    pub fn in_dir(dir: &Path) -> Self {
        PkiPaths {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
        }
    }
}

/// The loaded PKI.
pub struct Pki {
    pub ca_cert_pem: String,
    pub ca_cert_der: Vec<u8>,
    /// Server certificate chain (server, then CA) in PEM: clients that pin
    /// the CA find it in the chain.
    pub server_chain_pem: String,
    pub server_key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("ca_fingerprint", &self.ca_fingerprint()).finish_non_exhaustive()
    }
}

/// Write a file that must be private from the moment it exists.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn write_public(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp).map_err(io(&tmp))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn first_cert_der(pem: &str, path: &Path) -> Result<Vec<u8>, PkiError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|c| c.to_vec())
        .ok_or_else(|| PkiError::BadCertificate { path: path.display().to_string() })
}

/// The fingerprint of the CA certificate in the PEM file `path`, without
/// loading (or creating) the rest of the PKI.
pub fn file_fingerprint(path: &Path) -> Result<String, PkiError> {
    Ok(fingerprint(&first_cert_der(&read(path)?, path)?))
}

/// The notAfter (Unix seconds) of a DER certificate, or why it cannot be
/// read.
pub fn not_after(der: &[u8]) -> Result<i64, String> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .map_err(|e| e.to_string())
}

/// `SHA256:<hex>` fingerprint of a DER certificate, as agents pin it.
pub fn fingerprint(der: &[u8]) -> String {
    let d = Sha256::digest(der);
    format!("SHA256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl Pki {
    /// Load the PKI from `paths`, creating a CA and server certificate when
    /// `create` is set and the files do not exist.
    pub fn load_or_create(paths: &PkiPaths, server_names: &[String], create: bool) -> Result<Pki, PkiError> {
        if create && !paths.ca_cert.exists() && !paths.ca_key.exists() {
            Self::create_ca(paths)?;
        }
        let ca_cert_pem = read(&paths.ca_cert)?;
        let ca_key = KeyPair::from_pem(&read(&paths.ca_key)?).map_err(rc(paths.ca_key.display().to_string()))?;
        let ca_cert_der = first_cert_der(&ca_cert_pem, &paths.ca_cert)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key).map_err(rc(paths.ca_cert.display().to_string()))?;
        if create && !paths.server_cert.exists() && !paths.server_key.exists() {
            Self::create_server(paths, &issuer, &ca_cert_pem, server_names)?;
        }
        let server_chain_pem = read(&paths.server_cert)?;
        let server_key_pem = read(&paths.server_key)?;
        Ok(Pki { ca_cert_pem, ca_cert_der, server_chain_pem, server_key_pem, issuer })
    }

    fn create_ca(paths: &PkiPaths) -> Result<(), PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rc("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "kosmos-collector CA");
        params.distinguished_name.push(DnType::OrganizationName, "kosmos-node-agent");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = time_now();
        params.not_before = now - rcgen_days(1);
        params.not_after = now + rcgen_days(3650);
        let cert = params.self_signed(&key).map_err(rc("self-signing the CA"))?;
        write_private(&paths.ca_key, key.serialize_pem().as_bytes())?;
        write_public(&paths.ca_cert, cert.pem().as_bytes())
    }

    fn create_server(
        paths: &PkiPaths,
        issuer: &Issuer<'static, KeyPair>,
        ca_pem: &str,
        names: &[String],
    ) -> Result<(), PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rc("generating the server key"))?;
        let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        sans.extend(names.iter().cloned());
        sans.dedup();
        let mut params = CertificateParams::new(sans).map_err(rc("server certificate names"))?;
        params.distinguished_name.push(DnType::CommonName, "kosmos-collector");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time_now();
        params.not_before = now - rcgen_days(1);
        params.not_after = now + rcgen_days(365);
        let cert = params.signed_by(&key, issuer).map_err(rc("signing the server certificate"))?;
        write_private(&paths.server_key, key.serialize_pem().as_bytes())?;
        write_public(&paths.server_cert, format!("{}{}", cert.pem(), ca_pem).as_bytes())
    }

    /// The CA fingerprint agents pin at enrollment.
    pub fn ca_fingerprint(&self) -> String {
        fingerprint(&self.ca_cert_der)
    }

    /// Sign a node's CSR. Only the CSR's public key is used; the certificate
    /// names the node by `node_id` and is valid for client auth only.
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        node_id: &str,
        validity_days: i64,
    ) -> Result<(String, Vec<u8>), PkiError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let uri = kosmos_proto::identity::node_uri(node_id);
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, node_id);
        params.subject_alt_names =
            vec![SanType::URI(uri.try_into().map_err(|e: rcgen::Error| PkiError::BadCsr(e.to_string()))?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time_now();
        params.not_before = now - rcgen_days(1);
        params.not_after = now + rcgen_days(validity_days);
        csr.params = params;
        let cert = csr.signed_by(&self.issuer).map_err(rc("signing a node certificate"))?;
        // The attestation key must be Ed25519 (the proto's signature scheme).
        kosmos_proto::identity::verifying_key_from_cert(cert.der())
            .map_err(|e| PkiError::BadCsr(format!("node key: {e}")))?;
        Ok((cert.pem(), cert.der().to_vec()))
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn rcgen_days(d: i64) -> time::Duration {
    time::Duration::days(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PKCS_ED25519;

    #[test]
    fn creates_reloads_and_signs() {
        let d = tempfile::tempdir().unwrap();
        let paths = PkiPaths::in_dir(d.path());
        let pki = Pki::load_or_create(&paths, &["collector.example".into()], true).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&paths.ca_key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&paths.server_key).unwrap().permissions().mode() & 0o777, 0o600);
        let again = Pki::load_or_create(&paths, &[], true).unwrap();
        assert_eq!(pki.ca_fingerprint(), again.ca_fingerprint());

        let node_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let csr = CertificateParams::default().serialize_request(&node_key).unwrap().pem().unwrap();
        let (_, der) = pki.sign_node_csr(&csr, "node-42", 365).unwrap();
        assert_eq!(kosmos_proto::identity::node_id_from_cert(&der).unwrap(), "node-42");
        assert!(pki.sign_node_csr("garbage", "node-42", 365).is_err());
        // A non-Ed25519 key is refused.
        let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default().serialize_request(&ec).unwrap().pem().unwrap();
        assert!(matches!(pki.sign_node_csr(&csr, "node-43", 365), Err(PkiError::BadCsr(_))));
    }
}
