//! The node identity on disk, in one place: the file names under the state
//! directory, writing them at enrollment ([`store`]) and reading them back
//! at daemon start ([`load`]), where key, certificate and CA must belong
//! together.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use kosmos_proto::identity::{node_id_from_cert, verifying_key_from_cert};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::DaemonError;
use super::config::Config;
use super::enroll::EnrollError;
use super::tls::ClientTls;
use crate::state::durable;

/// The node's Ed25519 private key (PKCS#8 PEM, 0600).
pub const KEY_FILE: &str = "key.pem";
/// The node certificate the collector's CA issued.
pub const CERT_FILE: &str = "cert.pem";
/// The collector's CA, pinned at enrollment.
pub const CA_FILE: &str = "ca.pem";
/// The node id, for people (the certificate is authoritative).
pub const NODE_ID_FILE: &str = "node_id";
/// Identity files larger than this are refused.
const PEM_LIMIT: u64 = 64 * 1024;

/// The node's enrolled identity.
pub struct NodeIdentity {
    pub node_id: String,
    pub key: SigningKey,
    pub tls: ClientTls,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity").field("node_id", &self.node_id).field("key", &"<redacted>").finish()
    }
}

fn read_pem(path: &Path) -> Result<String, DaemonError> {
    use std::io::Read;
    let not = |why: String| DaemonError::NotEnrolled { path: path.display().to_string(), why };
    let f = std::fs::File::open(path).map_err(|e| not(e.to_string()))?;
    let mut s = String::new();
    f.take(PEM_LIMIT + 1).read_to_string(&mut s).map_err(|e| not(e.to_string()))?;
    if s.len() as u64 > PEM_LIMIT {
        return Err(not(format!("larger than {PEM_LIMIT} bytes")));
    }
    Ok(s)
}

/// Load key, certificate and CA, and check that they belong together.
pub fn load(config: &Config) -> Result<NodeIdentity, DaemonError> {
    let key_pem = read_pem(&config.key_path)?;
    let cert_pem = read_pem(&config.cert_path)?;
    let ca_pem = read_pem(&config.ca_path)?;
    let key = SigningKey::from_pkcs8_pem(&key_pem).map_err(|e| {
        DaemonError::BadIdentity(format!("{}: not an Ed25519 PKCS#8 key: {e}", config.key_path.display()))
    })?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| DaemonError::BadIdentity(format!("{}: {e}", config.cert_path.display())))?;
    let node_id = node_id_from_cert(&cert).map_err(|e| DaemonError::BadIdentity(e.to_string()))?;
    let cert_key = verifying_key_from_cert(&cert).map_err(|e| DaemonError::BadIdentity(e.to_string()))?;
    if cert_key != key.verifying_key() {
        return Err(DaemonError::BadIdentity(format!(
            "{} is not the certificate of {}",
            config.cert_path.display(),
            config.key_path.display()
        )));
    }
    CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| DaemonError::BadIdentity(format!("{}: {e}", config.ca_path.display())))?;
    Ok(NodeIdentity { node_id, key, tls: ClientTls { cert_pem, key_pem, ca_pem } })
}

/// Write a new identity into the state directory `dir` (0700): `key.pem`
/// 0600 from its creation, the certificates and node id 0644, each replaced
/// atomically. `replace`: the node had an identity before, whose chain ends
/// here (its spool and chain head are dropped).
pub fn store(dir: &Path, replace: bool, key_pem: &str, cert: &str, ca: &str, node_id: &str) -> Result<(), EnrollError> {
    let werr = |p: &Path| {
        let path = p.display().to_string();
        move |source| EnrollError::Write { path, source }
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(werr(dir))?;
    if replace {
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
        (KEY_FILE, key_pem, 0o600),
        (CERT_FILE, cert, 0o644),
        (CA_FILE, ca, 0o644),
        (NODE_ID_FILE, &format!("{node_id}\n"), 0o644),
    ];
    for (name, content, mode) in files {
        let p = dir.join(name);
        durable::replace(&p, content.as_bytes(), mode).map_err(werr(&p))?;
    }
    Ok(())
}
