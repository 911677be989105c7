//! Enrollment: turn a one-time token into a node identity.
//!
//! The agent generates its Ed25519 node key, builds a CSR, and calls the
//! collector's `Enrollment.Enroll` over server-authenticated TLS. It trusts
//! nothing on the network until the collector's CA is pinned: a first TLS
//! handshake uses [`PinnedCaVerifier`], which looks in the presented chain for
//! the certificate whose SHA-256 equals the operator-supplied fingerprint and
//! verifies the server certificate against it with webpki. Only then is that
//! CA used as the trust root of the gRPC channel. Nothing is written to disk
//! until the collector has answered, so a wrong fingerprint leaves no trace.
//!
//! State written (under the state directory, 0700): `key.pem` (0600, created
//! with that mode), `cert.pem`, `ca.pem` (0644) and `node_id`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kosmos_proto::identity::{is_valid_node_id, node_id_from_cert, verifying_key_from_cert};
use kosmos_proto::v1::EnrollRequest;
use kosmos_proto::v1::enrollment_client::EnrollmentClient;
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ED25519};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use super::identity;
pub use super::tls::Fingerprint;
use super::tls::{CollectorUrl, PinnedCaVerifier, cert_pem, crypto_provider, error_chain};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// A secret string (the enrollment token): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "the collector at {url} did not present a CA certificate with fingerprint {pin} (presented: {presented}); check --ca-fingerprint: nothing was written"
    )]
    PinMismatch { url: String, pin: Fingerprint, presented: String },
    #[error("invalid --collector {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot reach the collector at {url}: {why}")]
    Connect { url: String, why: String },
    #[error("TLS handshake with {url} failed: {why}")]
    Handshake { url: String, why: String },
    #[error("the collector refused the enrollment: {0}")]
    Refused(String),
    #[error("the collector's answer is not acceptable: {0}")]
    BadResponse(String),
    #[error("{path} already exists: this node is enrolled (use --force to enroll again with a new key)")]
    AlreadyEnrolled { path: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate the node key or CSR: {0}")]
    Key(String),
}

impl EnrollError {
    /// Exit code: 2 for what the operator must fix (fingerprint, URL,
    /// existing enrollment), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            EnrollError::PinMismatch { .. } | EnrollError::BadUrl { .. } | EnrollError::AlreadyEnrolled { .. } => 2,
            _ => 1,
        }
    }
}

/// What to enroll with.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    pub collector_url: String,
    pub token: Secret,
    pub ca_fingerprint: Fingerprint,
    pub state_dir: PathBuf,
    /// TLS name of the collector when it differs from the URL's host.
    pub server_name: Option<String>,
    /// Replace an existing enrollment (new key, new node id, fresh chain).
    pub force: bool,
}

/// The enrolled identity.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub node_id: String,
    pub state_dir: PathBuf,
}

/// Handshake with the collector and return its CA, verified against `pin`.
pub async fn fetch_pinned_ca(
    url: &str,
    server_name: Option<&str>,
    pin: Fingerprint,
) -> Result<CertificateDer<'static>, EnrollError> {
    let bad_url = |why| EnrollError::BadUrl { url: url.to_string(), why };
    let collector = CollectorUrl::parse(url).map_err(bad_url)?;
    let name = collector.tls_name(server_name).map_err(bad_url)?;
    let (host, port) = (collector.host, collector.port);
    let provider = crypto_provider();
    let verifier = Arc::new(PinnedCaVerifier::new(pin, provider.clone()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EnrollError::Handshake { url: url.to_string(), why: e.to_string() })?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| EnrollError::Connect { url: url.to_string(), why: "timed out".into() })?
        .map_err(|e| EnrollError::Connect { url: url.to_string(), why: e.to_string() })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await;
    let result = match handshake {
        Err(_) => Err("timed out".to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(mut stream)) => {
            use tokio::io::AsyncWriteExt;
            let _ = stream.shutdown().await;
            Ok(())
        }
    };
    match (result, verifier.pinned_ca()) {
        (Ok(()), Some(ca)) => Ok(ca),
        (outcome, _) => {
            let presented = verifier.presented();
            if !presented.is_empty() && !presented.contains(&pin) {
                let presented = presented.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                return Err(EnrollError::PinMismatch { url: url.to_string(), pin, presented });
            }
            let why = outcome.err().unwrap_or_else(|| "the server chain was not verified".into());
            Err(EnrollError::Handshake { url: url.to_string(), why })
        }
    }
}

fn read_small(path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path).ok()?.take(4096).read_to_string(&mut s).ok()?;
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Enroll this node: key, CSR, pinned handshake, Enroll RPC, then store.
pub async fn enroll(opts: &EnrollOptions) -> Result<Enrolled, EnrollError> {
    let url = opts.collector_url.as_str();
    let key_path = opts.state_dir.join(identity::KEY_FILE);
    let cert_path = opts.state_dir.join(identity::CERT_FILE);
    if !opts.force {
        for p in [&key_path, &cert_path] {
            if p.exists() {
                return Err(EnrollError::AlreadyEnrolled { path: p.display().to_string() });
            }
        }
    }
    let ca = fetch_pinned_ca(url, opts.server_name.as_deref(), opts.ca_fingerprint).await?;
    let ca_pem = cert_pem(&ca);

    let hostname = read_small("/proc/sys/kernel/hostname").unwrap_or_default();
    let machine_id = read_small("/etc/machine-id")
        .filter(|m| m.len() == 32 && m.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_default();
    let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| EnrollError::Key(e.to_string()))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| EnrollError::Key(e.to_string()))?;
    params.distinguished_name.push(DnType::CommonName, if hostname.is_empty() { "kosmos-node" } else { &hostname });
    let csr = params.serialize_request(&key).and_then(|c| c.pem()).map_err(|e| EnrollError::Key(e.to_string()))?;

    let name = CollectorUrl::parse(url)
        .and_then(|c| c.tls_name(opts.server_name.as_deref()))
        .map_err(|why| EnrollError::BadUrl { url: url.into(), why })?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)).domain_name(name.to_str());
    let channel = Endpoint::from_shared(url.to_string())
        .map_err(|e| EnrollError::BadUrl { url: url.into(), why: e.to_string() })?
        .tls_config(tls)
        .map_err(|e| EnrollError::Handshake { url: url.into(), why: e.to_string() })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(RPC_TIMEOUT)
        .connect()
        .await
        .map_err(|e| EnrollError::Connect { url: url.into(), why: error_chain(&e) })?;
    let request = EnrollRequest { token: opts.token.0.clone(), csr_pem: csr, hostname: hostname.clone(), machine_id };
    let response = EnrollmentClient::new(channel)
        .enroll(request)
        .await
        .map_err(|s| EnrollError::Refused(format!("{}: {}", s.code(), s.message())))?
        .into_inner();

    // Accept only a certificate for our key naming the node id we were given.
    if !is_valid_node_id(&response.node_id) {
        return Err(EnrollError::BadResponse(format!("node id {:?} is not valid", response.node_id)));
    }
    let cert_der = CertificateDer::from_pem_slice(response.certificate_pem.as_bytes())
        .map_err(|e| EnrollError::BadResponse(format!("certificate is not PEM: {e}")))?;
    let cert_id = node_id_from_cert(&cert_der).map_err(|e| EnrollError::BadResponse(e.to_string()))?;
    if cert_id != response.node_id {
        return Err(EnrollError::BadResponse(format!(
            "certificate names node {cert_id:?}, the answer says {:?}",
            response.node_id
        )));
    }
    let cert_key = verifying_key_from_cert(&cert_der).map_err(|e| EnrollError::BadResponse(e.to_string()))?;
    if cert_key.as_bytes().as_slice() != key.public_key_raw() {
        return Err(EnrollError::BadResponse("the certificate is not for the key we generated".into()));
    }
    if !response.ca_pem.is_empty() {
        let returned = CertificateDer::from_pem_slice(response.ca_pem.as_bytes())
            .map_err(|e| EnrollError::BadResponse(format!("CA is not PEM: {e}")))?;
        if Fingerprint::of(&returned) != opts.ca_fingerprint {
            return Err(EnrollError::BadResponse("the CA in the answer is not the pinned CA".into()));
        }
    }

    identity::store(
        &opts.state_dir,
        opts.force,
        &key.serialize_pem(),
        &response.certificate_pem,
        &ca_pem,
        &response.node_id,
    )?;
    Ok(Enrolled { node_id: response.node_id, state_dir: opts.state_dir.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpki::{Pki, enrollment_server};

    #[tokio::test]
    async fn enroll_against_an_in_process_collector() {
        let pki = Pki::new();
        let (url, _server) = enrollment_server(&pki).await;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("state");
        let mut opts = EnrollOptions {
            collector_url: url.clone(),
            token: Secret("wrong-token".into()),
            ca_fingerprint: Fingerprint::of(&pki.ca_der),
            state_dir: dir.clone(),
            server_name: Some("localhost".into()),
            force: false,
        };
        let err = enroll(&opts).await.unwrap_err();
        assert!(matches!(err, EnrollError::Refused(_)), "{err}");
        assert!(!dir.exists(), "nothing is written on refusal");

        // A wrong pin: exit 2 and nothing written.
        opts.token = Secret(crate::testpki::TOKEN.into());
        opts.ca_fingerprint = Fingerprint([1; 32]);
        let err = enroll(&opts).await.unwrap_err();
        assert!(matches!(err, EnrollError::PinMismatch { .. }), "{err}");
        assert_eq!(err.exit_code(), 2);
        assert!(!dir.exists());

        opts.ca_fingerprint = Fingerprint::of(&pki.ca_der);
        let enrolled = enroll(&opts).await.unwrap();
        assert_eq!(enrolled.node_id, "node-test-1");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("key.pem"), 0o600);
        assert_eq!(mode("cert.pem"), 0o644);
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::read_to_string(dir.join("node_id")).unwrap().trim(), "node-test-1");
        let ca = CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap();
        assert_eq!(ca.as_ref(), pki.ca_der.as_slice());
        // Enrolling again without --force is refused.
        let err = enroll(&opts).await.unwrap_err();
        assert!(matches!(err, EnrollError::AlreadyEnrolled { .. }), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(format!("{:?}", Secret("tok".into())), "<redacted>");
    }
}
