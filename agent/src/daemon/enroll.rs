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
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use kosmos_proto::identity::{is_valid_node_id, node_id_from_cert, verifying_key_from_cert};
use kosmos_proto::v1::EnrollRequest;
use kosmos_proto::v1::enrollment_client::EnrollmentClient;
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ED25519};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Uri};

use crate::state::durable;

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

/// The SHA-256 fingerprint of the collector CA certificate (DER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Parse `SHA256:<hex>` (colons allowed) or `SHA256:<base64>` (standard
    /// or URL-safe, padding optional). The `SHA256:` prefix may be omitted.
    pub fn parse(s: &str) -> Result<Fingerprint, String> {
        let t = s.trim();
        let v = t.get(..7).filter(|p| p.eq_ignore_ascii_case("sha256:")).map_or(t, |_| &t[7..]);
        let hex: String = v.chars().filter(|&c| c != ':').collect();
        let bytes = if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            crate::daemon::spool::hex_decode(&hex.to_ascii_lowercase())
        } else {
            let trimmed = v.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
                .ok()
        };
        bytes
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Fingerprint)
            .ok_or_else(|| format!("{s:?} is not a SHA-256 fingerprint (SHA256:<64 hex digits> or SHA256:<base64>)"))
    }

    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", crate::daemon::spool::hex_encode(&self.0))
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

/// The crypto provider used for every TLS connection the agent makes.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies a server chain against the CA pinned by fingerprint, and keeps
/// that CA for later use.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
    /// The pinned CA, once a handshake presented it.
    found: Mutex<Option<CertificateDer<'static>>>,
    /// Fingerprints presented by the last handshake, for the error message.
    presented: Mutex<Vec<Fingerprint>>,
}

impl PinnedCaVerifier {
    pub fn new(pin: Fingerprint, provider: Arc<CryptoProvider>) -> Self {
        Self { pin, provider, found: Mutex::new(None), presented: Mutex::new(Vec::new()) }
    }

    /// The pinned CA certificate, if a handshake presented and verified it.
    pub fn pinned_ca(&self) -> Option<CertificateDer<'static>> {
        self.found.lock().ok().and_then(|g| g.clone())
    }

    fn presented(&self) -> Vec<Fingerprint> {
        self.presented.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<&CertificateDer<'_>> = std::iter::once(end_entity).chain(intermediates).collect();
        if let Ok(mut p) = self.presented.lock() {
            *p = chain.iter().map(|c| Fingerprint::of(c)).collect();
        }
        let Some(ca) = chain.iter().find(|c| Fingerprint::of(c) == self.pin) else {
            return Err(rustls::Error::General(
                "no certificate in the server chain matches the pinned fingerprint".into(),
            ));
        };
        let ca = CertificateDer::from(ca.as_ref().to_vec());
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("cannot use the pinned CA: {e}")))?;
        let verified = webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        if let Ok(mut f) = self.found.lock() {
            *f = Some(ca);
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Host, port and TLS name of a collector URL.
pub fn parse_collector(url: &str, server_name: Option<&str>) -> Result<(String, u16, ServerName<'static>), String> {
    crate::daemon::config::check_collector_url(url)?;
    let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(443);
    let name = server_name.unwrap_or(&host);
    let name = ServerName::try_from(name.to_string()).map_err(|e| format!("bad TLS name {name:?}: {e}"))?;
    Ok((host, port, name))
}

/// Handshake with the collector and return its CA, verified against `pin`.
pub async fn fetch_pinned_ca(
    url: &str,
    server_name: Option<&str>,
    pin: Fingerprint,
) -> Result<CertificateDer<'static>, EnrollError> {
    let (host, port, name) =
        parse_collector(url, server_name).map_err(|why| EnrollError::BadUrl { url: url.to_string(), why })?;
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

/// PEM of one DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
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
    let key_path = opts.state_dir.join("key.pem");
    let cert_path = opts.state_dir.join("cert.pem");
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

    let (_, _, name) = parse_collector(url, opts.server_name.as_deref())
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

    store(opts, &key.serialize_pem(), &response.certificate_pem, &ca_pem, &response.node_id)?;
    Ok(Enrolled { node_id: response.node_id, state_dir: opts.state_dir.clone() })
}

fn store(opts: &EnrollOptions, key_pem: &str, cert: &str, ca: &str, node_id: &str) -> Result<(), EnrollError> {
    let dir = &opts.state_dir;
    let werr = |p: &Path| {
        let path = p.display().to_string();
        move |source| EnrollError::Write { path, source }
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(werr(dir))?;
    if opts.force {
        // A new identity starts a new chain at seq 1; the old identity's
        // unsent envelopes could not be delivered under the new certificate.
        let spool = crate::daemon::spool::Spool::open(dir, u64::MAX)
            .map_err(|e| EnrollError::Write { path: dir.display().to_string(), source: std::io::Error::other(e) })?;
        if !spool.is_empty() {
            tracing::warn!(count = spool.len(), "re-enrolling: dropping envelopes of the previous identity");
        }
        drop(spool);
        let _ = std::fs::remove_dir_all(dir.join("spool"));
        let _ = std::fs::remove_file(dir.join("chain.json"));
    }
    let files: [(&str, &str, u32); 4] = [
        ("key.pem", key_pem, 0o600),
        ("cert.pem", cert, 0o644),
        ("ca.pem", ca, 0o644),
        ("node_id", &format!("{node_id}\n"), 0o644),
    ];
    for (name, content, mode) in files {
        let p = dir.join(name);
        durable::replace(&p, content.as_bytes(), mode).map_err(werr(&p))?;
    }
    Ok(())
}

/// An error with its sources, for transport errors whose Display is terse.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpki::{Pki, enrollment_server};

    #[test]
    fn fingerprint_formats() {
        let der = b"certificate bytes";
        let fp = Fingerprint::of(der);
        let hex = crate::daemon::spool::hex_encode(&fp.0);
        assert_eq!(Fingerprint::parse(&format!("SHA256:{hex}")).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&hex.to_uppercase()).unwrap(), fp);
        let colons: Vec<String> = fp.0.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(Fingerprint::parse(&format!("sha256:{}", colons.join(":"))).unwrap(), fp);
        let b64 = base64::engine::general_purpose::STANDARD.encode(fp.0);
        assert_eq!(Fingerprint::parse(&format!("SHA256:{b64}")).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&format!("SHA256:{}", b64.trim_end_matches('='))).unwrap(), fp);
        assert!(Fingerprint::parse("SHA256:abcd").is_err());
        assert!(Fingerprint::parse("").is_err());
        assert_eq!(Fingerprint::parse(&fp.to_string()).unwrap(), fp);
    }

    fn verify(pki: &Pki, pin: Fingerprint, chain: &[CertificateDer<'static>]) -> Result<(), rustls::Error> {
        let v = PinnedCaVerifier::new(pin, crypto_provider());
        let name = ServerName::try_from("localhost").unwrap();
        let r = v.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()).map(|_| ());
        if r.is_ok() {
            assert_eq!(v.pinned_ca().unwrap().as_ref(), pki.ca_der.as_slice());
        } else {
            assert!(v.pinned_ca().is_none());
        }
        r
    }

    #[test]
    fn pin_verifier_accepts_the_right_ca_and_refuses_others() {
        let pki = Pki::new();
        let chain = vec![CertificateDer::from(pki.server_der.clone()), CertificateDer::from(pki.ca_der.clone())];
        assert!(verify(&pki, Fingerprint::of(&pki.ca_der), &chain).is_ok());
        // Wrong pin.
        let err = verify(&pki, Fingerprint([9; 32]), &chain).unwrap_err();
        assert!(err.to_string().contains("pinned fingerprint"), "{err}");
        // The pinned CA is presented, but the server certificate comes from
        // another CA: refused by webpki.
        let other = Pki::new();
        let mixed = vec![CertificateDer::from(other.server_der.clone()), CertificateDer::from(pki.ca_der.clone())];
        assert!(verify(&pki, Fingerprint::of(&pki.ca_der), &mixed).is_err());
        // Pinning the server certificate itself is not pinning a CA.
        assert!(verify(&pki, Fingerprint::of(&pki.server_der), &chain).is_err());
    }

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
