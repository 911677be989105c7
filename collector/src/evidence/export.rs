//! Writing a bundle from the store: the envelopes are streamed page by page
//! from SQLite into the compressed tar, hashed on the way, and the manifest
//! goes last. The file appears under its final name only when complete
//! (temporary file in the same directory, fsync, rename, fsync of the
//! directory), private (0600) from its creation.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use flate2::Compression;
use flate2::write::GzEncoder;
use kosmos_proto::chain::{self, GENESIS_PREV_HASH};
use kosmos_proto::v1::AttestationBody;
use prost::Message;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use super::{
    Anchor, CA_PATH, CollectorInfo, EvidenceError, ExportParams, FORMAT, MANIFEST_PATH, Manifest, ManifestEvent,
    ManifestFile, ManifestNode, ManifestPruned, PROTO_PATH, body_path, cert_path, hex, io_err, rfc3339, sig_path,
};
use crate::store::{EvidenceRead, NodeEvent, NodeRecord};

/// Envelopes read from the store per query: bounds memory (bodies are up to
/// 16 MiB, ~150 KiB typically) without a query per envelope.
const PAGE: usize = 64;

/// Fast compression: bodies are JSON reports that compress well even at a
/// low level, and an export of a few GiB should not take minutes.
const GZIP_LEVEL: u32 = 3;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Nodes named with `--node` (ignored with `all`).
    pub nodes: Vec<String>,
    pub all: bool,
    /// Inclusive bounds on the bodies' creation times; None is unbounded.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub out: PathBuf,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub path: PathBuf,
    pub nodes: usize,
    pub envelopes: u64,
    /// Size of the bundle file.
    pub bytes: u64,
    /// Hex SHA-256 of `manifest.json`, to compare with what `verify` prints.
    pub manifest_sha256: String,
}

/// Write a bundle for `req` to `req.out`.
pub fn export(
    store: &mut dyn EvidenceRead,
    ca_pem: &str,
    req: &ExportRequest,
    now_ms: i64,
) -> Result<ExportSummary, EvidenceError> {
    let ca_der = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| EvidenceError::Usage("the collector CA certificate is not a PEM certificate".into()))?;
    let nodes = select_nodes(store, req)?;
    let out = &req.out;
    let name =
        out.file_name().ok_or_else(|| EvidenceError::Usage(format!("--out {}: not a file name", out.display())))?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let written = write_bundle(store, file, &tmp, ca_pem, &ca_der, &nodes, req, now_ms);
    let (envelopes, manifest_sha256) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        EvidenceError::Io { path: out.display().to_string(), source: e }
    })?;
    // The rename is durable once the directory is.
    File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err(&dir))?;
    let bytes = std::fs::metadata(out).map_err(io_err(out))?.len();
    Ok(ExportSummary { path: out.clone(), nodes: nodes.len(), envelopes, bytes, manifest_sha256 })
}

fn select_nodes(store: &mut dyn EvidenceRead, req: &ExportRequest) -> Result<Vec<NodeRecord>, EvidenceError> {
    if req.all {
        return Ok(store.nodes()?);
    }
    let mut ids = req.nodes.clone();
    ids.sort();
    ids.dedup();
    let mut nodes = Vec::with_capacity(ids.len());
    for id in ids {
        match store.node(&id)? {
            Some(n) => nodes.push(n),
            None => return Err(EvidenceError::UnknownNode(id)),
        }
    }
    Ok(nodes)
}

/// Appends files to the tar and remembers their hashes for the manifest.
struct TarOut<W: Write> {
    tar: tar::Builder<W>,
    files: Vec<ManifestFile>,
    mtime: u64,
    path: PathBuf,
}

impl<W: Write> TarOut<W> {
    fn add(&mut self, name: &str, data: &[u8]) -> Result<[u8; 32], EvidenceError> {
        let sha: [u8; 32] = Sha256::digest(data).into();
        self.add_hashed(name, data, sha)
    }

    /// Add a file whose SHA-256 the caller already has (a body's is its
    /// chain hash).
    fn add_hashed(&mut self, name: &str, data: &[u8], sha: [u8; 32]) -> Result<[u8; 32], EvidenceError> {
        self.append(name, data)?;
        self.files.push(ManifestFile { path: name.to_string(), sha256: hex(&sha), bytes: data.len() as u64 });
        Ok(sha)
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), EvidenceError> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).map_err(io_err(&self.path))?;
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(self.mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.tar.append(&h, data).map_err(io_err(&self.path))
    }
}

fn pem_certificate(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Where a node's export starts when its first selected envelope is
/// `first`: at the full report a compact attestation there refers to, when
/// that is earlier and stored, so that the bundle holds what each exported
/// claim is checked against (at most one checkpoint period more).
fn reference_start(store: &mut dyn EvidenceRead, node_id: &str, first: u64) -> Result<u64, EvidenceError> {
    let Some(e) = store.envelopes_in(node_id, first, first, 1)?.into_iter().next() else {
        return Ok(first);
    };
    let same_as = AttestationBody::decode(e.body.as_slice()).map_or(0, |b| b.same_as_seq);
    if same_as == 0 || same_as >= first {
        return Ok(first);
    }
    Ok(if store.envelope_hash(node_id, same_as)?.is_some() { same_as } else { first })
}

#[allow(clippy::too_many_arguments)]
fn write_bundle(
    store: &mut dyn EvidenceRead,
    file: File,
    tmp: &Path,
    ca_pem: &str,
    ca_der: &[u8],
    nodes: &[NodeRecord],
    req: &ExportRequest,
    now_ms: i64,
) -> Result<(u64, String), EvidenceError> {
    let gz = GzEncoder::new(BufWriter::with_capacity(1 << 20, file), Compression::new(GZIP_LEVEL));
    let mut out = TarOut {
        tar: tar::Builder::new(gz),
        files: Vec::new(),
        mtime: u64::try_from(now_ms / 1000).unwrap_or(0),
        path: tmp.to_path_buf(),
    };
    out.add(PROTO_PATH, kosmos_proto::ATTEST_PROTO.as_bytes())?;
    out.add(CA_PATH, ca_pem.as_bytes())?;
    let from = req.from_ms.unwrap_or(i64::MIN);
    let to = req.to_ms.unwrap_or(i64::MAX);
    let mut manifest_nodes = Vec::with_capacity(nodes.len());
    let mut total = 0u64;
    for node in nodes {
        let certificate = cert_path(&node.id);
        out.add(&certificate, pem_certificate(&node.cert_der).as_bytes())?;
        let mut entry = ManifestNode {
            id: node.id.clone(),
            hostname: node.hostname.clone(),
            machine_id: node.machine_id.clone(),
            enrolled_at: rfc3339(node.enrolled_at_ms),
            revoked_at: node.revoked_at_ms.map(rfc3339),
            certificate,
            envelope_count: 0,
            first_seq: None,
            last_seq: None,
            first_created_at: None,
            last_created_at: None,
            anchor: None,
            events: Vec::new(),
            pruned: Vec::new(),
        };
        let pruned = store.pruned_ranges(&node.id)?;
        let span = match store.envelope_span(&node.id, from, to)? {
            Some((first, last)) => Some((reference_start(store, &node.id, first)?, last)),
            None => None,
        };
        let mut created: Option<(i64, i64)> = None;
        if let Some((first, last)) = span {
            let anchor_hash = if first <= 1 {
                Some(GENESIS_PREV_HASH)
            } else {
                match store.envelope_hash(&node.id, first - 1)? {
                    Some(h) => Some(h),
                    // Pruned: what retention recorded of the last body it removed.
                    None => pruned.iter().find(|p| p.last_seq == first - 1).and_then(|p| p.last_sha256),
                }
            };
            entry.pruned = pruned
                .iter()
                .filter(|p| p.last_seq.saturating_add(1) >= first && p.first_seq <= last)
                .map(|p| ManifestPruned {
                    first_seq: p.first_seq,
                    last_seq: p.last_seq,
                    count: p.count,
                    reason: p.reason.clone(),
                    prev_sha256: p.prev_sha256.map(|h| hex(&h)),
                    last_sha256: p.last_sha256.map(|h| hex(&h)),
                    pruned_at: rfc3339(p.pruned_ms),
                })
                .collect();
            entry.anchor = Some(Anchor { seq: first.saturating_sub(1), sha256: anchor_hash.map(|h| hex(&h)) });
            let mut next = first;
            loop {
                let page = store.envelopes_in(&node.id, next, last, PAGE)?;
                let Some(last_in_page) = page.last().map(|e| e.seq) else { break };
                for e in &page {
                    out.add_hashed(&body_path(&node.id, e.seq), &e.body, chain::body_hash(&e.body))?;
                    out.add(&sig_path(&node.id, e.seq), &e.signature)?;
                    entry.envelope_count += 1;
                    created =
                        Some(created.map_or((e.created_ms, e.created_ms), |(lo, hi)| {
                            (lo.min(e.created_ms), hi.max(e.created_ms))
                        }));
                }
                if last_in_page >= last {
                    break;
                }
                next = last_in_page + 1;
            }
            entry.first_seq = Some(first);
            entry.last_seq = Some(last);
        }
        entry.first_created_at = created.map(|c| rfc3339(c.0));
        entry.last_created_at = created.map(|c| rfc3339(c.1));
        let in_range = |e: &NodeEvent| {
            let by_seq = matches!((span, e.seq), (Some((f, l)), Some(s)) if s >= f && s <= l);
            by_seq || (e.at_ms >= from && e.at_ms <= to)
        };
        entry.events = store
            .events(&node.id)?
            .into_iter()
            .filter(in_range)
            .map(|e| ManifestEvent { kind: e.kind, seq: e.seq, detail: e.detail, at: rfc3339(e.at_ms) })
            .collect();
        total += entry.envelope_count;
        manifest_nodes.push(entry);
    }
    let mut files = std::mem::take(&mut out.files);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        format: FORMAT.to_string(),
        created_at: rfc3339(now_ms),
        collector: CollectorInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ca_fingerprint: crate::pki::fingerprint(ca_der),
        },
        export: ExportParams {
            all: req.all,
            nodes: if req.all { Vec::new() } else { nodes.iter().map(|n| n.id.clone()).collect() },
            from: req.from_ms.map(rfc3339),
            to: req.to_ms.map(rfc3339),
        },
        nodes: manifest_nodes,
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| EvidenceError::Usage(format!("cannot serialise the manifest: {e}")))?;
    let manifest_sha = hex(&Sha256::digest(&json));
    out.append(MANIFEST_PATH, &json)?;
    let gz = out.tar.into_inner().map_err(io_err(tmp))?;
    let buffered = gz.finish().map_err(io_err(tmp))?;
    let file = buffered
        .into_inner()
        .map_err(|e| EvidenceError::Io { path: tmp.display().to_string(), source: e.into_error() })?;
    file.sync_all().map_err(io_err(tmp))?;
    Ok((total, manifest_sha))
}
