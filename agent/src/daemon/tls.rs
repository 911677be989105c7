//! The agent's TLS client side, in one place: the collector URL (parsed
//! once, for the configuration, enrollment and the stream), the crypto
//! provider, the CA pin and its verifier (enrollment's first handshake),
//! and the mutual-TLS endpoint of the attestation stream.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Uri};

/// How long the stream's TCP connection and TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A collector's URL: `https://host[:port]` (the stream is always TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorUrl {
    /// Host name or address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

impl CollectorUrl {
    /// Parse and check a collector URL; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<CollectorUrl, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("{url:?} must start with https:// (the stream is always TLS)"));
        }
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        Ok(CollectorUrl { host, port: uri.port_u16().unwrap_or(443) })
    }

    /// The name the collector's certificate must carry: `server_name` when
    /// given, else the URL's host.
    pub fn tls_name(&self, server_name: Option<&str>) -> Result<ServerName<'static>, String> {
        let name = server_name.unwrap_or(&self.host);
        ServerName::try_from(name.to_string()).map_err(|e| format!("bad TLS name {name:?}: {e}"))
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

    pub fn presented(&self) -> Vec<Fingerprint> {
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

/// TLS material for the stream: node certificate + key, collector CA.
#[derive(Clone)]
pub struct ClientTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// Build the mTLS endpoint for the collector.
pub fn endpoint(url: &str, server_name: Option<&str>, tls: &ClientTls) -> Result<Endpoint, String> {
    let name = CollectorUrl::parse(url)?.tls_name(server_name)?;
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .domain_name(name.to_str());
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .tls_config(config)
        .map_err(|e| error_chain(&e))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(Some(Duration::from_secs(60)))
        // A ping when nothing was read for five minutes (a round's ack
        // counts), and none on a connection without a stream: at the
        // default interval a ping every 30 s was 2,880 a day, about 110 KB
        // on the link, more than the day's attestations. A dead collector
        // is noticed by the next round's stream instead.
        .http2_keep_alive_interval(Duration::from_secs(300))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(false))
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
    use crate::testpki::Pki;

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
}
