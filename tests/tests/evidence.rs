//! Evidence for auditors end to end: a real collector filled over mTLS by
//! two enrolled nodes (one through the real agent), the real `evidence
//! export` and `evidence verify` commands, then one flipped byte inside the
//! bundle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::Path;
use std::process::Command;

use kosmos_e2e::*;
use kosmos_proto::chain::{self, GENESIS_PREV_HASH};
use kosmos_proto::v1::AttestationEnvelope;

const EMPTY_REPORT: &[u8] = br#"{"summary":{"pass":0,"fail":0,"error":0,"not_applicable":0,"waived":0},"results":[]}"#;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Send envelopes as `agent` over its own mTLS identity; every one must be acked.
fn deliver(collector: &Collector, agent: &Agent, envelopes: Vec<AttestationEnvelope>) {
    let (cert, key) = identity_of(agent);
    let n = envelopes.len();
    let acks = rt().block_on(async {
        let ch = channel(collector, Some((&cert, &key))).await.unwrap();
        attest(ch, envelopes).await.unwrap()
    });
    assert_eq!(acks.len(), n);
    assert!(acks.iter().all(|a| a.error.is_empty()), "{acks:?}");
}

/// Envelopes `seqs` of `node`, chained on `prev`; returns them and the last hash.
fn chained(agent: &Agent, seqs: impl Iterator<Item = u64>, mut prev: [u8; 32]) -> (Vec<AttestationEnvelope>, [u8; 32]) {
    let key = agent.signing_key();
    let node = agent.node_id();
    let envs = seqs
        .map(|seq| {
            let e = chain::seal(&key, &body(&node, seq, prev, EMPTY_REPORT));
            prev = chain::body_hash(&e.body);
            e
        })
        .collect();
    (envs, prev)
}

/// The real `kosmos-collector evidence verify`, run as an auditor would:
/// no configuration, no data directory.
fn verify(bundle: &Path, extra: &[&str]) -> (i32, String, String) {
    run(Command::new(bin("kosmos-collector")).args(["evidence", "verify"]).arg(bundle).args(extra))
}

fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()));
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

fn repack(path: &Path, entries: &[(String, Vec<u8>)]) {
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for (p, d) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_path(p).unwrap();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, d.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

#[test]
fn export_verify_then_a_flipped_byte_names_the_node_and_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let fp = collector.fingerprint();
    let a = Agent::new(&tmp.path().join("a"));
    let b = Agent::new(&tmp.path().join("b"));
    for agent in [&a, &b] {
        let (code, out, err) = agent.enroll(&collector, &collector.token("1h"), &fp);
        assert_eq!(code, 0, "enroll: {out}{err}");
    }
    // Node a: a real audit delivered by the agent, then 30 more envelopes.
    a.configure(&collector.url(), &repo().join("tests/fixtures/hardened"), "");
    let (code, out, err) = a.run_once();
    assert_eq!(code, 0, "run --once: {out}{err}");
    let head = collector.store().node(&a.node_id()).unwrap().unwrap();
    let (envs, _) = chained(&a, head.head_seq + 1..=head.head_seq + 30, head.head_hash.unwrap());
    deliver(&collector, &a, envs);
    // Node b: 1..=20, then seqs 21..=22 never arrive and 23..=25 do: a gap
    // the collector records.
    let (envs, h20) = chained(&b, 1..=20, GENESIS_PREV_HASH);
    deliver(&collector, &b, envs);
    let (envs, _) = chained(&b, 23..=25, [9; 32]);
    deliver(&collector, &b, envs);
    let (na, nb) = (a.node_id(), b.node_id());
    assert_eq!(h20, collector.store().envelope_hash(&nb, 20).unwrap().unwrap());

    // Export while the collector keeps running.
    let bundle = tmp.path().join("evidence.tar.gz");
    let (code, out, err) =
        run(Collector::cmd(&collector.data_dir).args(["evidence", "export", "--all", "--out"]).arg(&bundle));
    assert_eq!(code, 0, "export: {out}{err}");
    assert!(out.contains("2 node(s), 54 envelope(s)"), "{out}");
    let manifest_sha = out.lines().find_map(|l| l.strip_prefix("manifest sha256 ")).unwrap().to_string();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o777, 0o600);

    let (code, out, err) = verify(&bundle, &["--ca-fingerprint", &fp]);
    assert_eq!(code, 0, "verify: {out}{err}");
    assert!(out.contains(&format!("manifest sha256 {manifest_sha}")), "{out}");
    assert!(out.contains(&format!("node {na} (")) && out.contains(&format!("node {nb} (")), "{out}");
    assert_eq!(out.matches(": VERIFIED  ").count(), 2, "{out}");
    assert!(out.contains("known gap at seq 23: seqs 21..=22 are missing before seq 23"), "{out}");
    assert!(out.lines().last().unwrap().starts_with("VERIFIED: 2 node(s), 54 envelopes"), "{out}");
    let (code, json, _) = verify(&bundle, &["--output", "json"]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["verdict"], "VERIFIED");
    assert_eq!(report["ca_fingerprint"], fp.as_str());

    // The auditor expects another CA.
    let (code, out, _) = verify(&bundle, &["--ca-fingerprint", &format!("SHA256:{}", "00".repeat(32))]);
    assert_eq!(code, 1, "{out}");

    // One byte of one envelope of node b flipped, in a repacked bundle.
    let mut files = entries(&bundle);
    let target = format!("nodes/{nb}/{:020}.body", 7);
    let slot = files.iter_mut().find(|(p, _)| *p == target).unwrap();
    let i = slot.1.len() / 3;
    slot.1[i] ^= 0x20;
    let tampered = tmp.path().join("tampered.tar.gz");
    repack(&tampered, &files);
    let (code, out, err) = verify(&tampered, &["--ca-fingerprint", &fp]);
    assert_eq!(code, 1, "verify of a tampered bundle: {out}{err}");
    let verdict_of = |id: &str| out.lines().find(|l| l.starts_with(&format!("node {id} ("))).unwrap().to_string();
    assert!(verdict_of(&nb).contains("): FAILED  "), "{out}");
    assert!(verdict_of(&na).contains("): VERIFIED  "), "{out}");
    assert!(out.contains(&format!("node {nb} seq 7: signature does not verify")), "{out}");
    assert!(out.contains(&format!("node {nb} seq 7: {target} does not match its SHA-256")), "{out}");
    assert!(!out.contains(&format!("node {na} seq")), "node a is untouched: {out}");
    assert!(out.lines().last().unwrap().starts_with("FAILED: 1 of 2 node(s) failed"), "{out}");
    let (code, json, _) = verify(&tampered, &["--output", "json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let node_b = report["nodes"].as_array().unwrap().iter().find(|n| n["id"] == nb.as_str()).unwrap();
    assert_eq!(node_b["verdict"], "FAILED");
    assert!(node_b["problems"].as_array().unwrap().iter().all(|p| p["seq"] == 7 || p["seq"] == 8), "{node_b}");

    // Not a bundle: exit 2.
    std::fs::write(tmp.path().join("junk.tar.gz"), b"junk").unwrap();
    let (code, _, err) = verify(&tmp.path().join("junk.tar.gz"), &[]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn export_selects_nodes_and_days() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let fp = collector.fingerprint();
    let a = Agent::new(&tmp.path().join("a"));
    assert_eq!(a.enroll(&collector, &collector.token("1h"), &fp).0, 0);
    let (envs, _) = chained(&a, 1..=5, GENESIS_PREV_HASH);
    deliver(&collector, &a, envs);
    let today = time::OffsetDateTime::now_utc().date();
    let day = |d: time::Date| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
    let export = |args: &[&str], out: &str| {
        run(Collector::cmd(&collector.data_dir)
            .args(["evidence", "export", "--out"])
            .arg(tmp.path().join(out))
            .args(args))
    };
    // Today, as bare dates (both inclusive): everything.
    let (code, out, err) =
        export(&["--node", &a.node_id(), "--from", &day(today), "--to", &day(today)], "today.tar.gz");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 node(s), 5 envelope(s)"), "{out}");
    assert_eq!(verify(&tmp.path().join("today.tar.gz"), &["--ca-fingerprint", &fp]).0, 0);
    // Yesterday: the node, no envelopes; still a verifiable bundle.
    let yesterday = today.previous_day().unwrap();
    let (code, out, err) = export(&["--all", "--to", &day(yesterday)], "yesterday.tar.gz");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 node(s), 0 envelope(s)"), "{out}");
    let (code, out, _) = verify(&tmp.path().join("yesterday.tar.gz"), &[]);
    assert_eq!(code, 0, "{out}");
    // Usage errors: exit 2, nothing written.
    for bad in [
        &["--node", "node-nope"][..],
        &["--all", "--from", "2026-13-01"],
        &["--all", "--from", &day(today), "--to", &day(yesterday)],
        &["--from", &day(today)],
    ] {
        let (code, out, err) = export(bad, "bad.tar.gz");
        assert_eq!(code, 2, "{bad:?}: {out}{err}");
        assert!(!tmp.path().join("bad.tar.gz").exists());
    }
}
