//! Offline verification of a bundle.
//!
//! One streaming pass over the archive: every file is hashed as it is read;
//! each envelope's signature is checked as soon as its body, its signature
//! and its node's certificate have been seen (the exporter writes them in
//! that order, so normally nothing waits; out-of-order bundles are buffered
//! up to [`MAX_PENDING_BYTES`]), and only a small summary of each envelope is
//! kept: its seq, body hash, `prev_hash`, creation time and any gap it
//! declares. The manifest comes last, and then everything is judged: file
//! hashes (no file missing, none unlisted), the CA (and the pinned
//! fingerprint), each certificate path, validity at the envelope times, and
//! each node's hash chain from the manifest's anchor.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use kosmos_proto::chain;
use kosmos_proto::compact::{self, Baseline};
use kosmos_proto::identity;
use kosmos_proto::report;
use kosmos_proto::v1::{AttestationBody, AttestationEnvelope, Trigger};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::archive::{self, Item};
use super::{
    CA_PATH, EvidenceError, FORMAT, MANIFEST_PATH, Manifest, ManifestNode, ManifestPruned, Role, cert_path, hex,
    rfc3339, unhex32,
};

/// Envelope bytes held while waiting for their other half or their node's
/// certificate, at most.
const MAX_PENDING_BYTES: usize = 256 << 20;

/// Problems listed per node (and for the bundle) in the text output; JSON
/// lists all.
const TEXT_PROBLEMS_PER_NODE: usize = 25;

/// One thing that does not verify, naming the node and seq it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub node: Option<String>,
    pub seq: Option<u64>,
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.node, self.seq) {
            (Some(n), Some(s)) => write!(f, "node {n} seq {s}: {}", self.problem),
            (Some(n), None) => write!(f, "node {n}: {}", self.problem),
            (None, _) => write!(f, "bundle: {}", self.problem),
        }
    }
}

/// A chain break the bundle itself explains (a recorded or declared gap, a
/// recorded fork): reported, not failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownBreak {
    /// The seq of the first envelope after the break.
    pub seq: u64,
    /// `gap` or `fork`.
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeVerdict {
    pub id: String,
    pub hostname: String,
    /// `VERIFIED` or `FAILED`.
    pub verdict: &'static str,
    pub envelopes: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub first_created_at: Option<String>,
    pub last_created_at: Option<String>,
    pub revoked_at: Option<String>,
    pub known_breaks: Vec<KnownBreak>,
    pub problems: Vec<Problem>,
}

/// The outcome of `evidence verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub bundle: String,
    /// Hex SHA-256 of `manifest.json`, as `export` printed it.
    pub manifest_sha256: String,
    pub created_at: String,
    /// Fingerprint of the bundle's `ca.pem`, when it has a usable one.
    pub ca_fingerprint: Option<String>,
    /// The fingerprint the auditor pinned, if any.
    pub ca_pinned: Option<String>,
    /// True when every node verified and the bundle has no problem.
    pub verified: bool,
    /// `VERIFIED` or `FAILED`.
    pub verdict: &'static str,
    /// Problems of the bundle as a whole (files outside any node, the CA).
    pub problems: Vec<Problem>,
    pub nodes: Vec<NodeVerdict>,
}

/// What is kept of one envelope.
#[derive(Debug, Clone)]
struct Link {
    body_sha256: [u8; 32],
    /// From the verified body; None when it did not verify.
    verified: Option<VerifiedBody>,
}

#[derive(Debug, Clone)]
struct VerifiedBody {
    prev_hash: [u8; 32],
    created_ms: i64,
    /// The range a signed gap marker declares dropped.
    dropped: Option<(u64, u64)>,
    /// What the body says about the node's findings.
    content: Content,
}

/// What a verified body says about the node's findings.
#[derive(Debug, Clone, Copy)]
enum Content {
    /// No report (a gap marker).
    Nothing,
    /// A report: the index digest computed from it (None when it cannot be
    /// read), and whether it covers the whole profile.
    Report { digest: Option<[u8; 32]>, whole_profile: bool },
    /// A compact attestation: the full report it claims to equal and the
    /// findings digest it claims (None when the claim is malformed, which
    /// is already a problem).
    Claim { same_as: u64, digest: Option<[u8; 32]> },
}

/// Both files of one envelope.
#[derive(Debug)]
struct Whole {
    seq: u64,
    body: Vec<u8>,
    sha: [u8; 32],
    sig: Vec<u8>,
}

impl Whole {
    fn bytes(&self) -> usize {
        self.body.len() + self.sig.len()
    }
}

/// An envelope file waiting for its other half.
#[derive(Debug)]
enum Half {
    Body(Vec<u8>, [u8; 32]),
    Sig(Vec<u8>),
}

#[derive(Debug, Default)]
struct NodeAcc {
    cert_der: Option<Vec<u8>>,
    key: Option<Result<VerifyingKey, String>>,
    halves: BTreeMap<u64, Half>,
    /// Complete envelopes waiting for the certificate.
    parked: Vec<Whole>,
    links: BTreeMap<u64, Link>,
    problems: Vec<Problem>,
}

impl NodeAcc {
    fn problem(&mut self, node: &str, seq: Option<u64>, problem: impl Into<String>) {
        self.problems.push(Problem { node: Some(node.to_string()), seq, problem: problem.into() });
    }

    /// Verify one complete envelope with the node key.
    fn check(&mut self, node: &str, key: &VerifyingKey, whole: Whole) {
        let Whole { seq, body, sha, sig } = whole;
        let env = AttestationEnvelope { body: body.into(), signature: sig };
        let verified = match chain::open(&env, key) {
            Ok(b) => {
                if b.node_id != node {
                    self.problem(node, Some(seq), format!("the signed body names node {:?}", b.node_id));
                }
                if b.seq != seq {
                    self.problem(node, Some(seq), format!("the signed body says seq {}, not its file name's", b.seq));
                }
                let content = if compact::is_compact(&b) {
                    let shape = compact::check_shape(&b);
                    if let Err(e) = &shape {
                        self.problem(node, Some(seq), format!("a malformed compact attestation: {e}"));
                    }
                    Content::Claim { same_as: b.same_as_seq, digest: shape.ok() }
                } else if b.report_json.is_empty() {
                    Content::Nothing
                } else {
                    let (problem, digest) = report_digest(&b);
                    if let Some(p) = problem {
                        self.problem(node, Some(seq), p);
                    }
                    Content::Report { digest, whole_profile: b.families.is_empty() }
                };
                let dropped = (b.trigger == Trigger::Gap as i32)
                    .then(|| b.dropped.as_ref().map(|d| (d.first_seq, d.last_seq)))
                    .flatten();
                // open() checked the length.
                let prev_hash = <[u8; 32]>::try_from(b.prev_hash.as_slice()).unwrap_or([0; 32]);
                (b.node_id == node && b.seq == seq).then_some(VerifiedBody {
                    prev_hash,
                    created_ms: b.created_at_unix_ms,
                    dropped,
                    content,
                })
            }
            Err(e) => {
                self.problem(node, Some(seq), format!("{e}"));
                None
            }
        };
        self.links.insert(seq, Link { body_sha256: sha, verified });
    }
}

/// What is wrong with the report a verified body carries: one that cannot
/// be decoded is evidence nobody can read, and a signed index digest that
/// does not match the report means the collector may have indexed (and
/// reported) something other than what this body says.
/// Also returns the index digest of the report (computed from it, the way
/// the collector does), which compact attestations are checked against.
fn report_digest(b: &AttestationBody) -> (Option<String>, Option<[u8; 32]>) {
    let json = match report::decode(b) {
        Ok(j) => j,
        Err(e) => return (Some(format!("the signed report cannot be read: {e}")), None),
    };
    let parts = match report::IndexedReport::parse(&json) {
        Ok(p) => p,
        Err(e) => return (Some(format!("the signed report is not a report: {e}")), None),
    };
    let digest = parts.digest();
    let problem = (!b.report_index_sha256.is_empty() && b.report_index_sha256.as_slice() != digest)
        .then(|| "the signed report_index_sha256 does not match the signed report".to_string());
    (problem, Some(digest))
}

/// Everything gathered in the streaming pass.
#[derive(Debug, Default)]
struct Gathered {
    manifest: Option<Vec<u8>>,
    ca_pem: Option<Vec<u8>>,
    /// Every file read: path -> (sha256, bytes).
    files: BTreeMap<String, ([u8; 32], u64)>,
    nodes: BTreeMap<String, NodeAcc>,
    /// Problems found while reading, outside any node.
    problems: Vec<Problem>,
    pending_bytes: usize,
}

impl Gathered {
    fn bundle_problem(&mut self, problem: impl Into<String>) {
        self.problems.push(Problem { node: None, seq: None, problem: problem.into() });
    }

    fn take(&mut self, item: Item) -> Result<(), String> {
        let (path, data, sha) = match item {
            Item::Refused { path, why } => {
                self.bundle_problem(format!("entry {path} refused: {why}"));
                return Ok(());
            }
            Item::File { path, data, sha256 } => (path, data, sha256),
        };
        if self.files.contains_key(&path) {
            self.bundle_problem(format!("{path} appears twice; the later copy was ignored"));
            return Ok(());
        }
        self.files.insert(path.clone(), (sha, data.len() as u64));
        match Role::of(&path) {
            Role::Manifest => self.manifest = Some(data),
            Role::Ca => self.ca_pem = Some(data),
            Role::Proto | Role::Unknown => {}
            Role::Cert(node) => {
                let node = node.to_string();
                let acc = self.nodes.entry(node.clone()).or_default();
                let key =
                    pem_cert(&data).ok_or_else(|| "cert.pem holds no PEM certificate".to_string()).and_then(|der| {
                        let key = identity::verifying_key_from_cert(&der).map_err(|e| e.to_string());
                        acc.cert_der = Some(der);
                        key
                    });
                acc.key = Some(key);
                for whole in std::mem::take(&mut acc.parked) {
                    self.pending_bytes = self.pending_bytes.saturating_sub(whole.bytes());
                    if let Some(Ok(k)) = acc.key.clone() {
                        acc.check(&node, &k, whole);
                    } else {
                        acc.links.insert(whole.seq, Link { body_sha256: whole.sha, verified: None });
                    }
                }
            }
            Role::Body(node, seq) | Role::Sig(node, seq) => {
                let is_body = matches!(Role::of(&path), Role::Body(..));
                let node = node.to_string();
                let acc = self.nodes.entry(node.clone()).or_default();
                let whole = match (acc.halves.remove(&seq), is_body) {
                    (Some(Half::Sig(sig)), true) => {
                        self.pending_bytes = self.pending_bytes.saturating_sub(sig.len());
                        Whole { seq, body: data, sha, sig }
                    }
                    (Some(Half::Body(body, body_sha)), false) => {
                        self.pending_bytes = self.pending_bytes.saturating_sub(body.len());
                        Whole { seq, body, sha: body_sha, sig: data }
                    }
                    _ => {
                        // The first of the two files (the duplicate-path
                        // check rules out the same one twice): wait.
                        self.pending_bytes += data.len();
                        acc.halves.insert(seq, if is_body { Half::Body(data, sha) } else { Half::Sig(data) });
                        return self.within_budget();
                    }
                };
                match acc.key.clone() {
                    Some(Ok(k)) => acc.check(&node, &k, whole),
                    // The certificate was unusable: reported once, at the node.
                    Some(Err(_)) => {
                        acc.links.insert(seq, Link { body_sha256: whole.sha, verified: None });
                    }
                    None => {
                        self.pending_bytes += whole.bytes();
                        acc.parked.push(whole);
                        return self.within_budget();
                    }
                }
            }
        }
        Ok(())
    }

    fn within_budget(&self) -> Result<(), String> {
        if self.pending_bytes > MAX_PENDING_BYTES {
            Err(format!(
                "entries are not in the order `evidence export` writes them (certificate, then each body with its \
                 signature), and buffering them would take more than {MAX_PENDING_BYTES} bytes"
            ))
        } else {
            Ok(())
        }
    }
}

fn pem_cert(data: &[u8]) -> Option<Vec<u8>> {
    CertificateDer::pem_slice_iter(data).next().and_then(Result::ok).map(|c| c.to_vec())
}

/// Verify the bundle at `path`, fully offline. `pinned_ca` is a
/// `SHA256:<hex>` fingerprint the bundle's CA must have.
pub fn verify_bundle(path: &Path, pinned_ca: Option<&str>) -> Result<VerifyReport, EvidenceError> {
    let shown = path.display().to_string();
    let unreadable = |problem: String| EvidenceError::Unreadable { path: shown.clone(), problem };
    let mut g = Gathered::default();
    archive::read(path, |item| g.take(item).map_err(|p| unreadable(p.clone())))?;
    let manifest_bytes =
        g.manifest.take().ok_or_else(|| unreadable(format!("not an evidence bundle: no {MANIFEST_PATH}")))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| unreadable(format!("{MANIFEST_PATH} is not a valid manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(unreadable(format!(
            "format {:?} is not supported (this verifier reads {FORMAT})",
            manifest.format
        )));
    }
    let mut report = VerifyReport {
        bundle: shown.clone(),
        manifest_sha256: hex(&Sha256::digest(&manifest_bytes)),
        created_at: manifest.created_at.clone(),
        ca_fingerprint: None,
        ca_pinned: pinned_ca.map(str::to_string),
        verified: false,
        verdict: "FAILED",
        problems: std::mem::take(&mut g.problems),
        nodes: Vec::new(),
    };
    check_files(&manifest, &mut g, &mut report);
    let ca = check_ca(&manifest, &g, pinned_ca, &mut report);
    let mut seen = BTreeSet::new();
    for node in &manifest.nodes {
        if !identity::is_valid_node_id(&node.id) {
            report.problems.push(Problem {
                node: None,
                seq: None,
                problem: format!("the manifest lists an invalid node id {:?}", node.id),
            });
            continue;
        }
        if !seen.insert(node.id.clone()) {
            report.problems.push(Problem {
                node: Some(node.id.clone()),
                seq: None,
                problem: "listed twice in the manifest".into(),
            });
            continue;
        }
        let acc = g.nodes.remove(&node.id).unwrap_or_default();
        report.nodes.push(judge_node(node, acc, ca.as_ref()));
    }
    for id in g.nodes.keys() {
        report.problems.push(Problem {
            node: Some(id.clone()),
            seq: None,
            problem: "has files in the bundle but is not in the manifest".into(),
        });
    }
    report.verified = report.problems.is_empty() && report.nodes.iter().all(|n| n.problems.is_empty());
    report.verdict = if report.verified { "VERIFIED" } else { "FAILED" };
    Ok(report)
}

/// Every file against the manifest: same hash and size, none missing, none
/// unlisted. Problems go to the node the file belongs to.
fn check_files(manifest: &Manifest, g: &mut Gathered, report: &mut VerifyReport) {
    let mut listed = BTreeSet::new();
    let add = |g: &mut Gathered, report: &mut VerifyReport, path: &str, problem: String| {
        let (node, seq) = Role::of(path).owner();
        match node {
            Some(n) => g.nodes.entry(n.clone()).or_default().problem(&n, seq, problem),
            None => report.problems.push(Problem { node: None, seq: None, problem }),
        }
    };
    for f in &manifest.files {
        if f.path == MANIFEST_PATH || !listed.insert(f.path.as_str()) {
            add(g, report, &f.path, format!("{} is listed twice or lists the manifest itself", f.path));
            continue;
        }
        match g.files.get(&f.path).copied() {
            None => {
                add(g, report, &f.path, format!("{} is listed in the manifest but missing from the bundle", f.path))
            }
            Some((sha, bytes)) => {
                if hex(&sha) != f.sha256.to_ascii_lowercase() || bytes != f.bytes {
                    add(g, report, &f.path, format!("{} does not match its SHA-256 in the manifest", f.path));
                }
            }
        }
    }
    let unlisted: Vec<String> =
        g.files.keys().filter(|p| p.as_str() != MANIFEST_PATH && !listed.contains(p.as_str())).cloned().collect();
    for p in unlisted {
        add(g, report, &p, format!("{p} is in the bundle but not listed in the manifest"));
    }
}

/// The trust anchor: the bundle's CA certificate, checked to be a CA, to
/// match the manifest and the pinned fingerprint.
struct Ca {
    der: Vec<u8>,
    /// Why node certificates cannot be trusted through it, if they cannot.
    untrusted: Option<String>,
}

fn check_ca(manifest: &Manifest, g: &Gathered, pinned: Option<&str>, report: &mut VerifyReport) -> Option<Ca> {
    let mut problem = |p: String| report.problems.push(Problem { node: None, seq: None, problem: p });
    let Some(der) = g.ca_pem.as_deref().and_then(pem_cert) else {
        problem(format!("{CA_PATH} is missing or holds no PEM certificate"));
        return None;
    };
    let fp = crate::pki::fingerprint(&der);
    let mut untrusted = None;
    if fp != manifest.collector.ca_fingerprint.to_ascii_lowercase().replacen("sha256:", "SHA256:", 1) {
        problem(format!("{CA_PATH} is {fp}, not the {} the manifest names", manifest.collector.ca_fingerprint));
        untrusted = Some(format!("the bundle's CA {fp} is not the one its manifest names"));
    }
    if let Some(pin) = pinned
        && fp != pin
    {
        problem(format!("the bundle's CA is {fp}, not the pinned {pin}"));
        untrusted = Some(format!("the certificate chains to the bundle's CA {fp}, not to the pinned {pin}"));
    }
    match X509Certificate::from_der(&der) {
        Err(e) => {
            problem(format!("{CA_PATH} does not parse: {e}"));
            return None;
        }
        Ok((_, cert)) => {
            let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
            let may_sign = match cert.key_usage() {
                Ok(Some(ku)) => ku.value.key_cert_sign(),
                Ok(None) => true,
                Err(_) => false,
            };
            if !is_ca || !may_sign {
                problem(format!("{CA_PATH} is not a CA certificate (basic constraints / key usage)"));
                untrusted = Some("the bundle's CA certificate is not a CA".into());
            }
        }
    }
    report.ca_fingerprint = Some(fp);
    Some(Ca { der, untrusted })
}

/// Judge one node: its certificate path, its envelopes, its chain.
fn judge_node(m: &ManifestNode, mut acc: NodeAcc, ca: Option<&Ca>) -> NodeVerdict {
    let id = m.id.as_str();
    let mut breaks = Vec::new();
    // Envelope halves that never found their partner.
    for (seq, half) in std::mem::take(&mut acc.halves) {
        let missing = match half {
            Half::Body(..) => "its signature file (.sig) is missing",
            Half::Sig(_) => "its body file (.body) is missing",
        };
        acc.problem(id, Some(seq), missing);
    }
    // Envelopes still parked never saw a certificate.
    for whole in std::mem::take(&mut acc.parked) {
        acc.links.insert(whole.seq, Link { body_sha256: whole.sha, verified: None });
    }
    if acc.cert_der.is_none() {
        let why = match &acc.key {
            Some(Err(e)) => e.clone(),
            _ => "missing".to_string(),
        };
        acc.problem(id, None, format!("certificate {}: {why}: no envelope can be verified", cert_path(id)));
    }
    if m.certificate != cert_path(id) {
        acc.problem(id, None, format!("the manifest names certificate {:?}, not {}", m.certificate, cert_path(id)));
    }
    let key = acc.key.clone();
    let validity = acc.cert_der.clone().and_then(|der| check_certificate(id, &der, key.as_ref(), ca, &mut acc));
    // Validity at each envelope's (signed) creation time.
    if let Some(windows) = validity {
        let outside: Vec<(u64, i64)> = acc
            .links
            .iter()
            .filter_map(|(s, l)| l.verified.as_ref().map(|v| (*s, v.created_ms)))
            .filter(|(_, ms)| windows.iter().any(|(_, nb, na)| ms / 1000 < *nb || ms / 1000 > *na))
            .collect();
        for (seq, ms) in outside {
            for (who, nb, na) in &windows {
                if ms / 1000 < *nb || ms / 1000 > *na {
                    acc.problem(
                        id,
                        Some(seq),
                        format!(
                            "created at {}, outside the validity of the {who} ({} to {})",
                            rfc3339(ms),
                            rfc3339(nb * 1000),
                            rfc3339(na * 1000)
                        ),
                    );
                }
            }
        }
    }
    check_counts(m, &mut acc);
    check_chain(m, &mut acc, &mut breaks);
    check_claims(m, &mut acc);
    let verified = acc.problems.is_empty();
    NodeVerdict {
        id: m.id.clone(),
        hostname: m.hostname.clone(),
        verdict: if verified { "VERIFIED" } else { "FAILED" },
        envelopes: acc.links.len() as u64,
        first_seq: acc.links.keys().next().copied(),
        last_seq: acc.links.keys().next_back().copied(),
        first_created_at: m.first_created_at.clone(),
        last_created_at: m.last_created_at.clone(),
        revoked_at: m.revoked_at.clone(),
        known_breaks: breaks,
        problems: acc.problems,
    }
}

/// (name, not_before, not_after) in Unix seconds.
type Window = (&'static str, i64, i64);

/// The node certificate: issued by the CA (names and signature), naming this
/// node, with an Ed25519 key. Returns the validity windows to check the
/// envelope times against (node certificate and CA).
fn check_certificate(
    id: &str,
    der: &[u8],
    key: Option<&Result<VerifyingKey, String>>,
    ca: Option<&Ca>,
    acc: &mut NodeAcc,
) -> Option<Vec<Window>> {
    let cert = match X509Certificate::from_der(der) {
        Ok((_, c)) => c,
        Err(e) => {
            acc.problem(id, None, format!("certificate does not parse: {e}"));
            return None;
        }
    };
    match identity::node_id_from_cert(der) {
        Ok(named) if named == id => {}
        Ok(named) => acc.problem(id, None, format!("the certificate names node {named}, not {id}")),
        Err(e) => acc.problem(id, None, format!("certificate: {e}")),
    }
    if let Some(Err(e)) = key {
        acc.problem(id, None, format!("certificate key: {e}"));
    }
    let mut windows =
        vec![("node certificate", cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp())];
    let Some(ca) = ca else {
        acc.problem(id, None, "the certificate path cannot be checked: the bundle has no usable CA");
        return Some(windows);
    };
    let Ok((_, ca_cert)) = X509Certificate::from_der(&ca.der) else { return Some(windows) };
    if let Some(why) = &ca.untrusted {
        acc.problem(id, None, why.clone());
    }
    if cert.issuer().as_raw() != ca_cert.subject().as_raw() {
        acc.problem(
            id,
            None,
            format!("the certificate's issuer ({}) is not the CA ({})", cert.issuer(), ca_cert.subject()),
        );
    }
    if let Err(e) = cert.verify_signature(Some(ca_cert.public_key())) {
        acc.problem(id, None, format!("the certificate is not signed by the bundle's CA ({e})"));
    }
    windows.push((
        "CA certificate",
        ca_cert.validity().not_before.timestamp(),
        ca_cert.validity().not_after.timestamp(),
    ));
    Some(windows)
}

/// What the bundle holds against what the manifest says it holds.
fn check_counts(m: &ManifestNode, acc: &mut NodeAcc) {
    let held = acc.links.len() as u64;
    if held != m.envelope_count {
        acc.problem(
            m.id.as_str(),
            None,
            format!("the manifest says {} envelopes, the bundle holds {held}", m.envelope_count),
        );
    }
    let first = acc.links.keys().next().copied();
    let last = acc.links.keys().next_back().copied();
    if held > 0 && (first < m.first_seq || last > m.last_seq) {
        acc.problem(
            m.id.as_str(),
            None,
            format!(
                "envelopes seq {}..={} lie outside the manifest's range {}..={}",
                first.unwrap_or(0),
                last.unwrap_or(0),
                m.first_seq.map_or("-".into(), |s| s.to_string()),
                m.last_seq.map_or("-".into(), |s| s.to_string())
            ),
        );
    }
}

/// The hash chain, from the manifest's anchor: each envelope must name the
/// previous body, seqs must not skip. A break is a problem unless a gap or
/// fork event recorded by the collector, or a gap declared by the node in a
/// signed gap marker, explains it; then it is a known break.
fn check_chain(m: &ManifestNode, acc: &mut NodeAcc, breaks: &mut Vec<KnownBreak>) {
    let id = m.id.as_str();
    let event_at = |kind: &str, seq: u64| m.events.iter().any(|e| e.kind == kind && e.seq == Some(seq));
    let Some(first) = m.first_seq else { return };
    // (seq, hash if known) of the link before the next envelope.
    let mut prev: Option<(u64, Option<[u8; 32]>)> = match &m.anchor {
        Some(a) if a.seq.checked_add(1) == Some(first) => match &a.sha256 {
            Some(h) => match unhex32(h) {
                Some(h) => Some((a.seq, Some(h))),
                None => {
                    acc.problem(id, Some(first), "the manifest's anchor hash is not 64 hex digits");
                    None
                }
            },
            None => Some((a.seq, None)),
        },
        Some(a) => {
            acc.problem(id, Some(first), format!("the manifest anchors seq {first} on seq {}", a.seq));
            None
        }
        None => {
            acc.problem(id, Some(first), "the manifest records no anchor for the first envelope");
            None
        }
    };
    let links: Vec<(u64, Link)> = acc.links.iter().map(|(s, l)| (*s, l.clone())).collect();
    for (seq, link) in links {
        if let Some((pseq, phash)) = prev {
            let claimed = link.verified.as_ref().map(|v| v.prev_hash);
            let declared = link.verified.as_ref().and_then(|v| v.dropped);
            // The missing seqs before this one: a skip, or the stored
            // predecessor the collector never had.
            let hole = if seq > pseq + 1 {
                Some((pseq + 1, seq - 1))
            } else if phash.is_none() && seq == pseq + 1 && pseq > 0 {
                Some((pseq, pseq))
            } else {
                None
            };
            if let Some((lo, hi)) = hole
                && let Some(ranges) = pruned_cover(&m.pruned, lo, hi)
            {
                retention_gap(id, acc, breaks, (seq, phash, claimed), (lo, hi), &ranges);
            } else if let Some((lo, hi)) = hole {
                let what = if lo == hi { format!("seq {lo} is") } else { format!("seqs {lo}..={hi} are") };
                let recorded = event_at("gap", seq);
                let by_node = declared.is_some_and(|(a, b)| a <= lo && b >= hi);
                let mut sources = Vec::new();
                if recorded {
                    sources.push("the collector recorded a gap".to_string());
                }
                if let Some((a, b)) = declared {
                    sources.push(format!("the node's signed gap marker declares seqs {a}..={b} dropped"));
                }
                if recorded || by_node {
                    breaks.push(KnownBreak {
                        seq,
                        kind: "gap".into(),
                        detail: format!("{what} missing before seq {seq}: {}", sources.join("; ")),
                    });
                } else {
                    acc.problem(id, Some(seq), format!("{what} missing before it and no gap explains it"));
                }
            } else if let (Some(want), Some(got)) = (phash, claimed)
                && seq == pseq + 1
                && want != got
            {
                let whose = if pseq == 0 { "the genesis hash".to_string() } else { format!("the body of seq {pseq}") };
                if event_at("fork", seq) {
                    breaks.push(KnownBreak {
                        seq,
                        kind: "fork".into(),
                        detail: format!("prev_hash does not name {whose}: the collector recorded a fork"),
                    });
                } else {
                    acc.problem(id, Some(seq), format!("prev_hash does not name {whose}: the chain is broken"));
                }
            }
        }
        prev = Some((seq, Some(link.body_sha256)));
    }
}

/// The pruned ranges that together cover every seq of `lo..=hi`, in seq
/// order; None when some seq of the hole was not pruned.
fn pruned_cover(pruned: &[ManifestPruned], lo: u64, hi: u64) -> Option<Vec<&ManifestPruned>> {
    let mut ranges: Vec<&ManifestPruned> =
        pruned.iter().filter(|p| p.last_seq >= lo && p.first_seq <= hi && p.first_seq <= p.last_seq).collect();
    ranges.sort_by_key(|p| p.first_seq);
    let mut next = lo;
    for p in &ranges {
        if p.first_seq > next {
            return None;
        }
        next = next.max(p.last_seq.saturating_add(1));
    }
    (next > hi).then_some(ranges)
}

/// A hole retention explains: a known break, unless the hashes retention
/// recorded contradict the bodies around it (then the chain is broken).
/// `at` is (seq of the body after the hole, hash of the body before it,
/// the prev_hash the body after it names).
fn retention_gap(
    id: &str,
    acc: &mut NodeAcc,
    breaks: &mut Vec<KnownBreak>,
    at: (u64, Option<[u8; 32]>, Option<[u8; 32]>),
    (lo, hi): (u64, u64),
    ranges: &[&ManifestPruned],
) {
    let (seq, before, claimed) = at;
    let first = ranges.iter().find(|p| p.first_seq <= lo && p.last_seq >= lo);
    let last = ranges.iter().rev().find(|p| p.first_seq <= hi && p.last_seq >= hi);
    // The first pruned body chained on the body before the hole, and the
    // body after the hole chains on the last pruned one.
    if let (Some(p), Some(before)) = (first.filter(|p| p.first_seq == lo), before)
        && let Some(recorded) = p.prev_sha256.as_deref()
        && unhex32(recorded) != Some(before)
    {
        acc.problem(
            id,
            Some(seq),
            format!(
                "retention recorded seq {lo} as chained on {recorded}, not on the body before it: the chain is broken"
            ),
        );
    }
    if let (Some(p), Some(claimed)) = (last.filter(|p| p.last_seq == hi), claimed)
        && let Some(recorded) = p.last_sha256.as_deref()
        && unhex32(recorded) != Some(claimed)
    {
        acc.problem(
            id,
            Some(seq),
            format!("prev_hash does not name the last pruned body (seq {hi}, {recorded}): the chain is broken"),
        );
    }
    let what = if lo == hi { format!("seq {lo}") } else { format!("seqs {lo}..={hi}") };
    let how: Vec<String> = ranges
        .iter()
        .map(|p| format!("{}..={} ({}, pruned {})", p.first_seq, p.last_seq, p.reason, p.pruned_at))
        .collect();
    breaks.push(KnownBreak {
        seq,
        kind: "retention".into(),
        detail: format!("{what} removed by the retention policy before seq {seq}: {}", how.join("; ")),
    });
}

/// Every compact attestation's claim, against the full reports of the
/// bundle: the claim names the node's latest body that carried a report,
/// that report covers the whole profile, and its findings digest (computed
/// here from the report) is the one claimed. The export starts at the
/// report the first compact attestation refers to, so the bundle holds it.
fn check_claims(m: &ManifestNode, acc: &mut NodeAcc) {
    let id = m.id.as_str();
    let mut baseline: Option<Baseline> = None;
    let mut problems = Vec::new();
    for (&seq, link) in &acc.links {
        let Some(v) = &link.verified else {
            // An unverified body could have been anything: claims after it
            // are checked against nothing rather than a stale baseline.
            baseline = None;
            continue;
        };
        match v.content {
            Content::Nothing => {}
            Content::Report { digest, whole_profile } => {
                baseline = digest.filter(|_| whole_profile).map(|digest| Baseline { seq, digest });
            }
            Content::Claim { same_as, digest: Some(claimed) } => {
                let why = match baseline {
                    None if acc.links.contains_key(&same_as) => Some(format!(
                        "claims to equal the report at seq {same_as}, which is not a readable report of the whole profile"
                    )),
                    None => Some(format!("claims to equal the report at seq {same_as}, which is not in the bundle")),
                    Some(b) if b.seq != same_as => Some(format!(
                        "claims to equal the report at seq {same_as}, but the node's latest report before it is seq {}",
                        b.seq
                    )),
                    Some(b) if b.digest != claimed => Some(format!(
                        "claims findings digest {} for seq {same_as}, whose report has digest {}: the claim is false",
                        hex(&claimed),
                        hex(&b.digest)
                    )),
                    Some(_) => None,
                };
                if let Some(why) = why {
                    problems.push((seq, why));
                }
            }
            Content::Claim { digest: None, .. } => {}
        }
    }
    for (seq, why) in problems {
        acc.problem(id, Some(seq), why);
    }
}

impl VerifyReport {
    /// The human verdict: a header, one block per node, a final line.
    pub fn to_text(&self) -> String {
        // Everything below may come from the bundle (whose manifest is not
        // signed) or from a node: one value, one visible run of text.
        use crate::untrusted::terminal as t;
        let mut s = String::new();
        let _ = writeln!(s, "evidence bundle {} (created {})", t(&self.bundle), t(&self.created_at));
        let _ = writeln!(s, "  manifest sha256 {}", t(&self.manifest_sha256));
        match (&self.ca_fingerprint, &self.ca_pinned) {
            (Some(fp), Some(pin)) if fp == pin => {
                let _ = writeln!(s, "  CA {} (matches the pinned fingerprint)", t(fp));
            }
            (Some(fp), Some(pin)) => {
                let _ = writeln!(s, "  CA {} (NOT the pinned {})", t(fp), t(pin));
            }
            (Some(fp), None) => {
                let _ =
                    writeln!(s, "  CA {} (not pinned: pass --ca-fingerprint to check it is the collector's CA)", t(fp));
            }
            (None, _) => {
                let _ = writeln!(s, "  CA: none usable");
            }
        }
        for n in &self.nodes {
            let range = match (n.first_seq, n.last_seq) {
                (Some(a), Some(b)) => format!("seq {a}..={b}"),
                _ => "no seq".into(),
            };
            let times = match (&n.first_created_at, &n.last_created_at) {
                (Some(a), Some(b)) => format!(", created {} to {}", t(a), t(b)),
                _ => String::new(),
            };
            let revoked = n.revoked_at.as_ref().map(|r| format!(", revoked {}", t(r))).unwrap_or_default();
            let _ = writeln!(
                s,
                "node {} ({}): {}  {} envelopes, {range}{times}{revoked}",
                t(&n.id),
                t(&n.hostname),
                n.verdict,
                n.envelopes
            );
            for b in &n.known_breaks {
                let _ = writeln!(s, "  known {} at seq {}: {}", t(&b.kind), b.seq, t(&b.detail));
            }
            for p in n.problems.iter().take(TEXT_PROBLEMS_PER_NODE) {
                let _ = writeln!(s, "  {}", t(&p.to_string()));
            }
            if n.problems.len() > TEXT_PROBLEMS_PER_NODE {
                let _ = writeln!(
                    s,
                    "  ... and {} more problems on node {} (--output json lists them all)",
                    n.problems.len() - TEXT_PROBLEMS_PER_NODE,
                    t(&n.id)
                );
            }
        }
        for p in self.problems.iter().take(TEXT_PROBLEMS_PER_NODE) {
            let _ = writeln!(s, "{}", t(&p.to_string()));
        }
        if self.problems.len() > TEXT_PROBLEMS_PER_NODE {
            let _ = writeln!(
                s,
                "bundle: ... and {} more problems (--output json lists them all)",
                self.problems.len() - TEXT_PROBLEMS_PER_NODE
            );
        }
        let failed = self.nodes.iter().filter(|n| !n.problems.is_empty()).count();
        let envelopes: u64 = self.nodes.iter().map(|n| n.envelopes).sum();
        if self.verified {
            let _ = writeln!(s, "VERIFIED: {} node(s), {envelopes} envelopes", self.nodes.len());
        } else {
            let _ = writeln!(
                s,
                "FAILED: {failed} of {} node(s) failed, {} bundle problem(s)",
                self.nodes.len(),
                self.problems.len()
            );
        }
        s
    }
}
