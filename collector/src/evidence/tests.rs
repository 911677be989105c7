//! Export and verify against a real store, CA and node certificates, then
//! tamper with the bundle the ways an attacker or an accident would.

use std::io::Read;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use kosmos_proto::chain::{self, GENESIS_PREV_HASH};
use kosmos_proto::v1::{AttestationBody, DroppedRange, Trigger};
use prost::Message;
use rcgen::{CertificateParams, KeyPair, PKCS_ED25519};

use super::*;
use crate::pki::{Pki, PkiPaths};
use crate::store::sqlite::SqliteStore;
use crate::store::{IngestItem, IngestResult, NewNode, Store};

const REPORT: &[u8] = br#"{"summary":{"pass":0,"fail":0,"error":0,"not_applicable":0,"waived":0},"results":[]}"#;

struct Fixture {
    dir: tempfile::TempDir,
    store: SqliteStore,
    pki: Pki,
    /// Creation time of seq 0 of every node; seq n is created n seconds later.
    base_ms: i64,
}

struct Node {
    id: String,
    key: SigningKey,
    prev: [u8; 32],
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(&PkiPaths::in_dir(dir.path()), &[], true).unwrap();
    let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    let base_ms = crate::store::now_ms() - 3_600_000;
    Fixture { dir, store, pki, base_ms }
}

impl Fixture {
    fn enroll(&mut self, id: &str) -> Node {
        let kp = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let csr = CertificateParams::default().serialize_request(&kp).unwrap().pem().unwrap();
        let (_, der) = self.pki.sign_node_csr(&csr, id, 365).unwrap();
        self.store
            .insert_node(&NewNode {
                id: id.into(),
                hostname: format!("host-{id}"),
                machine_id: "m".into(),
                cert_der: der,
                enrolled_at_ms: self.base_ms,
            })
            .unwrap();
        let key = SigningKey::from_pkcs8_der(&kp.serialize_der()).unwrap();
        Node { id: id.into(), key, prev: GENESIS_PREV_HASH }
    }

    /// Seal and ingest `body` (its prev_hash set to the node's last) as the
    /// collector would after verifying it.
    fn send_body(&mut self, node: &mut Node, mut body: AttestationBody) -> IngestResult {
        body.prev_hash = node.prev.to_vec();
        let env = chain::seal(&node.key, &body);
        node.prev = chain::body_hash(&env.body);
        let item = IngestItem::new(node.id.clone(), env.body, env.signature, body, self.base_ms);
        self.store.ingest(&[item], crate::store::now_ms()).unwrap().remove(0)
    }

    fn send(&mut self, node: &mut Node, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            let r = self.send_body(node, self.body(node, seq));
            assert!(matches!(r, IngestResult::Acked { .. }), "{r:?}");
        }
    }

    fn body(&self, node: &Node, seq: u64) -> AttestationBody {
        AttestationBody {
            node_id: node.id.clone(),
            seq,
            created_at_unix_ms: self.created(seq),
            trigger: Trigger::Schedule as i32,
            report_json: REPORT.to_vec().into(),
            ..Default::default()
        }
    }

    fn created(&self, seq: u64) -> i64 {
        self.base_ms + 1000 * seq as i64
    }

    fn export_to(&mut self, name: &str, req: impl FnOnce(&mut ExportRequest)) -> PathBuf {
        let out = self.dir.path().join(name);
        let mut r = ExportRequest { nodes: Vec::new(), all: true, from_ms: None, to_ms: None, out: out.clone() };
        req(&mut r);
        let ca = self.pki.ca_cert_pem.clone();
        export(&mut self.store, &ca, &r, crate::store::now_ms()).unwrap();
        out
    }
}

/// node-a: seq 1..=10. node-b: seq 1..=5, then a signed gap marker at 8
/// declaring 6..=7 dropped (a spool overflow), then 9..=10.
fn two_nodes() -> (Fixture, Node, Node) {
    let mut f = fixture();
    let mut a = f.enroll("node-a");
    let mut b = f.enroll("node-b");
    f.send(&mut a, 1..=10);
    f.send(&mut b, 1..=5);
    let gap = AttestationBody {
        trigger: Trigger::Gap as i32,
        report_json: Vec::new().into(),
        dropped: Some(DroppedRange { first_seq: 6, last_seq: 7, reason: "spool overflow".into() }),
        ..f.body(&b, 8)
    };
    f.send_body(&mut b, gap);
    f.send(&mut b, 9..=10);
    (f, a, b)
}

fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut ar = tar::Archive::new(gz);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut d = Vec::new();
            e.read_to_end(&mut d).unwrap();
            (p, d)
        })
        .collect()
}

/// Write entries back as a tar.gz; names are written raw into the header
/// (so that hostile names can be tested), `kinds` override entry types.
fn repack(path: &Path, entries: &[(String, Vec<u8>)], kinds: &[(&str, tar::EntryType)]) {
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (p, d) in entries {
        let mut h = tar::Header::new_ustar();
        let name = &mut h.as_old_mut().name;
        name[..p.len()].copy_from_slice(p.as_bytes());
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(kinds.iter().find(|(k, _)| k == p).map_or(tar::EntryType::Regular, |(_, t)| *t));
        h.set_cksum();
        b.append(&h, d.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

/// What a careful forger does after editing files: rewrite the manifest's
/// hashes so that only the cryptography can catch the edit.
fn rehash_manifest(entries: &mut [(String, Vec<u8>)]) {
    let mut m: Manifest = serde_json::from_slice(&entries.iter().find(|(p, _)| p == MANIFEST_PATH).unwrap().1).unwrap();
    m.files = entries
        .iter()
        .filter(|(p, _)| p != MANIFEST_PATH)
        .map(|(p, d)| ManifestFile {
            path: p.clone(),
            sha256: hex(&<sha2::Sha256 as sha2::Digest>::digest(d)),
            bytes: d.len() as u64,
        })
        .collect();
    if let Some(ca) = entries.iter().find(|(p, _)| p == CA_PATH) {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::pem_slice_iter(&ca.1).next().unwrap().unwrap();
        m.collector.ca_fingerprint = crate::pki::fingerprint(&der);
    }
    set_manifest(entries, &m);
}

fn manifest_of(entries: &[(String, Vec<u8>)]) -> Manifest {
    serde_json::from_slice(&entries.iter().find(|(p, _)| p == MANIFEST_PATH).unwrap().1).unwrap()
}

fn set_manifest(entries: &mut [(String, Vec<u8>)], m: &Manifest) {
    let slot = entries.iter_mut().find(|(p, _)| p == MANIFEST_PATH).unwrap();
    slot.1 = serde_json::to_vec_pretty(m).unwrap();
}

fn node<'a>(r: &'a VerifyReport, id: &str) -> &'a NodeVerdict {
    r.nodes.iter().find(|n| n.id == id).unwrap()
}

fn problems(r: &VerifyReport) -> Vec<String> {
    r.problems.iter().chain(r.nodes.iter().flat_map(|n| &n.problems)).map(|p| p.to_string()).collect()
}

#[test]
fn export_then_verify_passes() {
    let (mut f, _, _) = two_nodes();
    let out = f.export_to("bundle.tar.gz", |_| {});
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let fp = f.pki.ca_fingerprint();
    let r = verify_bundle(&out, Some(&fp)).unwrap();
    assert!(r.verified, "{}", r.to_text());
    assert_eq!(r.ca_fingerprint.as_deref(), Some(fp.as_str()));
    let a = node(&r, "node-a");
    assert_eq!((a.verdict, a.envelopes, a.first_seq, a.last_seq), ("VERIFIED", 10, Some(1), Some(10)));
    assert!(a.known_breaks.is_empty());
    // node-b's hole is reported, explained by both the collector and the node.
    let b = node(&r, "node-b");
    assert_eq!((b.verdict, b.envelopes), ("VERIFIED", 8));
    assert_eq!(b.known_breaks.len(), 1, "{:?}", b.known_breaks);
    let k = &b.known_breaks[0];
    assert_eq!((k.seq, k.kind.as_str()), (8, "gap"));
    assert!(k.detail.contains("6..=7") && k.detail.contains("collector") && k.detail.contains("signed gap marker"));
    let text = r.to_text();
    assert!(text.contains("node node-a (host-node-a): VERIFIED"), "{text}");
    assert!(text.contains("known gap at seq 8"), "{text}");
    assert!(text.lines().last().unwrap().starts_with("VERIFIED: 2 node(s), 18 envelopes"), "{text}");

    // The layout and the manifest.
    let e = entries(&out);
    let names: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        &names[..4],
        ["attest.proto", "ca.pem", "nodes/node-a/cert.pem", "nodes/node-a/00000000000000000001.body"]
    );
    assert_eq!(names.last(), Some(&"manifest.json"));
    assert!(names.iter().all(|n| n.len() <= 100));
    let m = manifest_of(&e);
    assert_eq!(m.format, FORMAT);
    assert_eq!(m.collector.ca_fingerprint, fp);
    assert_eq!(m.files.len(), e.len() - 1);
    let mb = m.nodes.iter().find(|n| n.id == "node-b").unwrap();
    assert_eq!(mb.anchor, Some(Anchor { seq: 0, sha256: Some("0".repeat(64)) }));
    assert_eq!((mb.first_seq, mb.last_seq, mb.envelope_count), (Some(1), Some(10), 8));
    let kinds: Vec<&str> = mb.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["gap", "spool_overflow"]);
    // The signature file is the raw 64 bytes and the body the exact signed bytes.
    let sig = &e.iter().find(|(p, _)| p == &sig_path("node-a", 3)).unwrap().1;
    assert_eq!(sig.len(), 64);
    let body = &e.iter().find(|(p, _)| p == &body_path("node-a", 3)).unwrap().1;
    assert_eq!(AttestationBody::decode(body.as_slice()).unwrap().seq, 3);
}

#[test]
fn a_flipped_byte_names_the_node_and_seq() {
    let (mut f, _, _) = two_nodes();
    let out = f.export_to("bundle.tar.gz", |_| {});
    let mut e = entries(&out);
    let target = body_path("node-a", 4);
    let slot = e.iter_mut().find(|(p, _)| *p == target).unwrap();
    let mid = slot.1.len() / 2;
    slot.1[mid] ^= 0x01;
    repack(&out, &e, &[]);
    let r = verify_bundle(&out, None).unwrap();
    assert!(!r.verified);
    assert_eq!(node(&r, "node-b").verdict, "VERIFIED", "{}", r.to_text());
    let a = node(&r, "node-a");
    assert_eq!(a.verdict, "FAILED");
    let at4: Vec<&Problem> = a.problems.iter().filter(|p| p.seq == Some(4)).collect();
    assert!(at4.iter().any(|p| p.problem.contains("does not match its SHA-256")), "{:?}", a.problems);
    assert!(at4.iter().any(|p| p.problem.contains("signature")), "{:?}", a.problems);
    // seq 5 chains on the original seq 4, which is no longer what the bundle holds.
    assert!(a.problems.iter().any(|p| p.seq == Some(5) && p.problem.contains("prev_hash")), "{:?}", a.problems);
    let text = r.to_text();
    assert!(text.contains("node node-a seq 4: "), "{text}");
    assert!(text.lines().last().unwrap().starts_with("FAILED: 1 of 2 node(s) failed"), "{text}");
}

#[test]
fn a_forged_signature_fails_even_with_a_rewritten_manifest() {
    let (mut f, _, _) = two_nodes();
    let out = f.export_to("bundle.tar.gz", |_| {});
    let mut e = entries(&out);
    let target = sig_path("node-b", 9);
    e.iter_mut().find(|(p, _)| *p == target).unwrap().1[0] ^= 0x80;
    rehash_manifest(&mut e);
    repack(&out, &e, &[]);
    let r = verify_bundle(&out, None).unwrap();
    assert_eq!(
        node(&r, "node-b").problems,
        [Problem {
            node: Some("node-b".into()),
            seq: Some(9),
            problem: "signature does not verify with the node key".into()
        }]
    );
    assert_eq!(node(&r, "node-a").verdict, "VERIFIED");
}

fn other_ca() -> (String, rcgen::Issuer<'static, KeyPair>) {
    use rcgen::{BasicConstraints, IsCa};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    (pem.clone(), rcgen::Issuer::from_ca_cert_pem(&pem, key).unwrap())
}

#[test]
fn a_wrong_ca_fails() {
    let (mut f, _, _) = two_nodes();
    let out = f.export_to("bundle.tar.gz", |_| {});
    // The auditor pins another CA.
    let wrong = format!("SHA256:{}", "ab".repeat(32));
    let r = verify_bundle(&out, Some(&wrong)).unwrap();
    assert!(!r.verified);
    assert!(r.nodes.iter().all(|n| n.verdict == "FAILED"));
    assert!(r.problems.iter().any(|p| p.problem.contains("not the pinned")), "{:?}", r.problems);
    assert!(r.to_text().contains("NOT the pinned"));
    // The bundle's CA is swapped for another one, manifest and all: the node
    // certificates are not signed by it.
    let mut e = entries(&out);
    let (pem, _) = other_ca();
    e.iter_mut().find(|(p, _)| p == CA_PATH).unwrap().1 = pem.into_bytes();
    rehash_manifest(&mut e);
    repack(&out, &e, &[]);
    let r = verify_bundle(&out, None).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    for n in &r.nodes {
        assert_eq!(n.verdict, "FAILED");
        assert!(
            n.problems.iter().any(|p| p.seq.is_none() && p.problem.contains("not signed by the bundle's CA")),
            "{:?}",
            n.problems
        );
    }
    // And with the original pin, the swap is caught at the CA too.
    let r = verify_bundle(&out, Some(&f.pki.ca_fingerprint())).unwrap();
    assert!(r.problems.iter().any(|p| p.problem.contains("not the pinned")));
}

#[test]
fn a_missing_file_names_the_node_and_seq() {
    let (mut f, _, _) = two_nodes();
    let out = f.export_to("bundle.tar.gz", |_| {});
    let mut e = entries(&out);
    let gone = [body_path("node-a", 6), sig_path("node-a", 6), sig_path("node-b", 2)];
    e.retain(|(p, _)| !gone.contains(p));
    repack(&out, &e, &[]);
    let r = verify_bundle(&out, None).unwrap();
    let a = node(&r, "node-a");
    assert!(
        a.problems.iter().any(|p| p.seq == Some(6) && p.problem.contains("missing from the bundle")),
        "{:?}",
        a.problems
    );
    // The hole in the chain is not explained by any recorded gap.
    assert!(a.problems.iter().any(|p| p.seq == Some(7) && p.problem.contains("seq 6 is missing")), "{:?}", a.problems);
    let b = node(&r, "node-b");
    assert!(b.problems.iter().any(|p| p.seq == Some(2) && p.problem.contains(".sig) is missing")), "{:?}", b.problems);
    // A certificate gone: nothing of that node verifies.
    let out = f.export_to("bundle2.tar.gz", |_| {});
    let mut e = entries(&out);
    e.retain(|(p, _)| *p != cert_path("node-b"));
    repack(&out, &e, &[]);
    let r = verify_bundle(&out, None).unwrap();
    let b = node(&r, "node-b");
    assert!(
        b.problems
            .iter()
            .any(|p| p.problem == "certificate nodes/node-b/cert.pem: missing: no envelope can be verified"),
        "{:?}",
        b.problems
    );
    assert_eq!(b.envelopes, 8);
}

#[test]
fn a_swapped_certificate_fails() {
    let (mut f, _, _) = two_nodes();
    let out = f.export_to("bundle.tar.gz", |_| {});
    let e0 = entries(&out);
    let cert_b = e0.iter().find(|(p, _)| *p == cert_path("node-b")).unwrap().1.clone();
    // node-b's certificate put in node-a's place (manifest rewritten).
    let mut e = e0.clone();
    e.iter_mut().find(|(p, _)| *p == cert_path("node-a")).unwrap().1 = cert_b;
    rehash_manifest(&mut e);
    repack(&out, &e, &[]);
    let r = verify_bundle(&out, None).unwrap();
    let a = node(&r, "node-a");
    assert!(a.problems.iter().any(|p| p.problem.contains("names node node-b, not node-a")), "{:?}", a.problems);
    assert_eq!(a.problems.iter().filter(|p| p.problem.contains("signature does not verify")).count(), 10);
    assert_eq!(node(&r, "node-b").verdict, "VERIFIED");
    // A genuine certificate of the same CA for node-a, with another key (the
    // collector could issue one): the signatures give it away.
    let kp = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let csr = CertificateParams::default().serialize_request(&kp).unwrap().pem().unwrap();
    let (pem, _) = f.pki.sign_node_csr(&csr, "node-a", 365).unwrap();
    let mut e = e0;
    e.iter_mut().find(|(p, _)| *p == cert_path("node-a")).unwrap().1 = pem.into_bytes();
    rehash_manifest(&mut e);
    repack(&out, &e, &[]);
    let r = verify_bundle(&out, None).unwrap();
    let a = node(&r, "node-a");
    assert_eq!(a.problems.len(), 10, "{:?}", a.problems);
    assert!(a.problems.iter().all(|p| p.seq.is_some() && p.problem.contains("signature")));
}

#[test]
fn hostile_entries_are_refused() {
    let (mut f, _, _) = two_nodes();
    let out = f.export_to("bundle.tar.gz", |_| {});
    let mut e = entries(&out);
    e.insert(0, ("../../tmp/evil".into(), b"x".to_vec()));
    e.insert(1, ("/etc/cron.d/evil".into(), b"x".to_vec()));
    e.insert(2, ("nodes/node-a/link".into(), Vec::new()));
    e.push(("notes.txt".into(), b"unlisted".to_vec()));
    // Pax headers: a harmless one (timestamps, as `tar --format=pax` writes)
    // before a real file, and one that renames the file after it.
    let at = e.iter().position(|(p, _)| p == CA_PATH).unwrap();
    e.insert(at, ("./PaxHeaders/ca.pem".into(), b"20 mtime=1795357630\n".to_vec()));
    e.push(("./PaxHeaders/x".into(), b"23 path=../../etc/evil\n".to_vec()));
    e.push(("innocent.txt".into(), b"x".to_vec()));
    repack(
        &out,
        &e,
        &[
            ("nodes/node-a/link", tar::EntryType::Symlink),
            ("./PaxHeaders/ca.pem", tar::EntryType::XHeader),
            ("./PaxHeaders/x", tar::EntryType::XHeader),
        ],
    );
    let r = verify_bundle(&out, None).unwrap();
    assert!(!r.verified);
    let all = problems(&r).join("\n");
    assert!(all.contains(r#"entry "../../tmp/evil" refused: not a plain relative path"#), "{all}");
    assert!(all.contains(r#"entry "/etc/cron.d/evil" refused: not a plain relative path: absolute path"#), "{all}");
    assert!(all.contains(r#"entry "nodes/node-a/link" refused: a symbolic link"#), "{all}");
    assert!(all.contains("notes.txt is in the bundle but not listed"), "{all}");
    assert!(all.contains(r#"entry "innocent.txt" refused: a pax header redefines its path"#), "{all}");
    assert_eq!(r.problems.len(), 5, "{all}");
    // The nodes themselves still verify: the problems are the bundle's.
    assert!(r.nodes.iter().all(|n| n.verdict == "VERIFIED"), "{all}");
    assert!(!std::path::Path::new("/tmp/evil").exists());
}

#[test]
fn unreadable_bundles_are_errors() {
    let f = fixture();
    let p = f.dir.path().join("x.tar.gz");
    std::fs::write(&p, b"not gzip at all").unwrap();
    assert!(matches!(verify_bundle(&p, None), Err(EvidenceError::Unreadable { .. })));
    repack(&p, &[("ca.pem".into(), b"x".to_vec())], &[]);
    let e = verify_bundle(&p, None).unwrap_err();
    assert!(e.to_string().contains("no manifest.json"), "{e}");
    repack(&p, &[("manifest.json".into(), br#"{"format":"kosmos.evidence/v9"}"#.to_vec())], &[]);
    assert!(verify_bundle(&p, None).is_err());
    assert!(matches!(verify_bundle(&f.dir.path().join("absent"), None), Err(EvidenceError::Io { .. })));
}

#[test]
fn a_time_range_exports_a_middle_stretch_anchored_on_its_predecessor() {
    let (mut f, _, _) = two_nodes();
    let (from, to) = (f.created(3), f.created(6));
    let out = f.export_to("range.tar.gz", |r| {
        r.all = false;
        r.nodes = vec!["node-a".into()];
        r.from_ms = Some(from);
        r.to_ms = Some(to);
    });
    let r = verify_bundle(&out, None).unwrap();
    assert!(r.verified, "{}", r.to_text());
    assert_eq!(r.nodes.len(), 1);
    assert_eq!((r.nodes[0].first_seq, r.nodes[0].last_seq), (Some(3), Some(6)));
    let mut e = entries(&out);
    let mut m = manifest_of(&e);
    let anchor = m.nodes[0].anchor.clone().unwrap();
    assert_eq!(anchor.seq, 2);
    assert_eq!(anchor.sha256.as_deref(), Some(hex(&f.store.envelope_hash("node-a", 2).unwrap().unwrap()).as_str()));
    // A forged anchor breaks the first link.
    m.nodes[0].anchor = Some(Anchor { seq: 2, sha256: Some("11".repeat(32)) });
    set_manifest(&mut e, &m);
    repack(&out, &e, &[]);
    let r = verify_bundle(&out, None).unwrap();
    assert_eq!(r.nodes[0].problems.len(), 1, "{:?}", r.nodes[0].problems);
    assert_eq!(r.nodes[0].problems[0].seq, Some(3));
    assert!(r.nodes[0].problems[0].problem.contains("prev_hash does not name the body of seq 2"));
    // Unknown nodes are a usage error.
    let mut req = ExportRequest {
        nodes: vec!["node-zz".into()],
        all: false,
        from_ms: None,
        to_ms: None,
        out: f.dir.path().join("no.tar.gz"),
    };
    let ca = f.pki.ca_cert_pem.clone();
    assert!(matches!(export(&mut f.store, &ca, &req, 0), Err(EvidenceError::UnknownNode(_))));
    req.nodes.clear();
    assert!(!req.out.exists());
}

#[test]
fn recorded_forks_and_unexplained_breaks() {
    let mut f = fixture();
    let mut a = f.enroll("node-a");
    f.send(&mut a, 1..=3);
    // seq 4 chains on something else: the collector stores it and records a fork.
    a.prev = [7; 32];
    f.send(&mut a, 4..=5);
    let out = f.export_to("fork.tar.gz", |_| {});
    let r = verify_bundle(&out, None).unwrap();
    assert!(r.verified, "{}", r.to_text());
    let n = node(&r, "node-a");
    assert_eq!(n.known_breaks.len(), 1);
    assert_eq!((n.known_breaks[0].seq, n.known_breaks[0].kind.as_str()), (4, "fork"));
    // Without the collector's record the same break is a failure.
    let mut e = entries(&out);
    let mut m = manifest_of(&e);
    m.nodes[0].events.clear();
    set_manifest(&mut e, &m);
    repack(&out, &e, &[]);
    let r = verify_bundle(&out, None).unwrap();
    let n = node(&r, "node-a");
    assert_eq!(n.verdict, "FAILED");
    assert_eq!(n.problems[0].seq, Some(4));
    assert!(n.problems[0].problem.contains("prev_hash does not name the body of seq 3"));
}

#[test]
fn a_reordered_bundle_still_verifies() {
    let (mut f, _, _) = two_nodes();
    let out = f.export_to("bundle.tar.gz", |_| {});
    let mut e = entries(&out);
    // Manifest first, signatures before bodies, certificates last.
    e.sort_by_key(|(p, _)| match Role::of(p) {
        Role::Manifest => 0,
        Role::Sig(..) => 1,
        Role::Body(..) => 2,
        _ => 3,
    });
    repack(&out, &e, &[]);
    let r = verify_bundle(&out, None).unwrap();
    assert!(r.verified, "{}", r.to_text());
}

#[test]
fn time_bounds_and_fingerprints_parse() {
    let day = TimeBound::parse_from("2026-03-01").unwrap().ms;
    assert_eq!(day, 1_772_323_200_000);
    assert_eq!(TimeBound::parse_to("2026-03-01").unwrap().ms, day + 86_400_000 - 1);
    assert_eq!(TimeBound::parse_from("2026-03-01T01:00:00+01:00").unwrap().ms, day);
    assert_eq!(TimeBound::parse_to("2026-03-01T00:00:00Z").unwrap().ms, day);
    assert!(TimeBound::parse_from("yesterday").is_err());
    assert!(TimeBound::parse_from("2026-02-30").is_err());
    let fp = format!("SHA256:{}", "AB".repeat(32));
    assert_eq!(parse_fingerprint(&fp).unwrap(), format!("SHA256:{}", "ab".repeat(32)));
    assert!(parse_fingerprint("SHA256:abcd").is_err());
}

#[test]
fn a_report_contradicting_its_signed_index_digest_fails() {
    let mut f = fixture();
    let mut a = f.enroll("node-a");
    // seq 1: gzip with its true digest (what the agent sends); seq 2: the
    // node signs a digest of some other content.
    let mut honest = f.body(&a, 1);
    kosmos_proto::report::pack(REPORT).into_body(&mut honest);
    f.send_body(&mut a, honest);
    let mut lying = f.body(&a, 2);
    kosmos_proto::report::pack(REPORT).into_body(&mut lying);
    lying.report_index_sha256 = vec![3; 32];
    f.send_body(&mut a, lying);
    let out = f.export_to("bundle.tar.gz", |_| {});
    let r = verify_bundle(&out, None).unwrap();
    let v = node(&r, "node-a");
    assert_eq!(v.verdict, "FAILED", "{}", r.to_text());
    assert_eq!(
        v.problems,
        [Problem {
            node: Some("node-a".into()),
            seq: Some(2),
            problem: "the signed report_index_sha256 does not match the signed report".into()
        }]
    );
}
