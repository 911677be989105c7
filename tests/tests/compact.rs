//! Issue 17 end to end, over the real binaries: compact attestations from
//! the agent daemon (with checkpoints, and a full report as soon as
//! something changes), the collector's confirmation of every claim before
//! it acks, older agents beside newer ones, and evidence bundles and fleet
//! reports over chains that retention pruned.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kosmos_e2e::*;
use kosmos_proto::chain::{self, GENESIS_PREV_HASH};
use kosmos_proto::compact;
use kosmos_proto::v1::attestation_client::AttestationClient;
use kosmos_proto::v1::{Ack, AttestationBody, AttestationEnvelope, Trigger};
use prost::Message;

const EMPTY_REPORT: &[u8] = br#"{"summary":{"pass":0,"fail":0,"error":0,"not_applicable":0,"waived":0},"results":[]}"#;
const ONE_FAILURE: &[u8] = br#"{"summary":{"pass":0,"fail":1,"error":0,"not_applicable":0,"waived":0},
    "results":[{"id":"ssh.permit_root_login","status":"fail","severity":"high","family":"ssh","title":"t"}]}"#;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn digest(report: &[u8]) -> [u8; 32] {
    kosmos_proto::report::IndexedReport::parse(report).unwrap().digest()
}

fn enrolled(collector: &Collector, dir: &Path) -> Agent {
    let agent = Agent::new(dir);
    let (code, out, err) = agent.enroll(collector, &collector.token("1h"), &collector.fingerprint());
    assert_eq!(code, 0, "enroll: {out}{err}");
    agent
}

/// A copy of the hardened fixture the test may change.
fn fixture_copy(to: &Path) -> PathBuf {
    let (code, out, err) = run(Command::new("cp").arg("-a").arg(repo().join("tests/fixtures/hardened")).arg(to));
    assert_eq!(code, 0, "cp: {out}{err}");
    to.to_path_buf()
}

/// Every stored body of a node, verified with its certificate and chained.
fn stored_bodies(collector: &Collector, node_id: &str) -> Vec<AttestationBody> {
    let mut store = collector.store();
    let node = store.node(node_id).unwrap().unwrap();
    let key = kosmos_proto::identity::verifying_key_from_cert(&node.cert_der).unwrap();
    let mut prev = GENESIS_PREV_HASH;
    store
        .envelopes(node_id)
        .unwrap()
        .into_iter()
        .map(|(seq, body, signature)| {
            let env = AttestationEnvelope { body: body.clone().into(), signature };
            let b = chain::open(&env, &key).unwrap();
            assert_eq!((b.seq, b.prev_hash.as_slice()), (seq, prev.as_slice()), "seq {seq} chains on its predecessor");
            prev = chain::body_hash(&body);
            b
        })
        .collect()
}

fn event_kinds(collector: &Collector, node_id: &str) -> Vec<String> {
    collector.store().events(node_id).unwrap().into_iter().map(|e| e.kind).collect()
}

/// Send `envelopes` on one stream as `agent`: the acks, and whether the
/// collector announced compact attestations.
fn send(collector: &Collector, agent: &Agent, envelopes: Vec<AttestationEnvelope>) -> (Vec<Ack>, bool) {
    let (cert, key) = identity_of(agent);
    rt().block_on(async {
        let ch = channel(collector, Some((&cert, &key))).await.unwrap();
        let expect = envelopes.len();
        let (tx, rx) = tokio::sync::mpsc::channel(expect.max(1));
        for e in envelopes {
            tx.send(e).await.unwrap();
        }
        let response =
            AttestationClient::new(ch).attest(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap();
        let announced = response
            .metadata()
            .get(compact::FEATURES_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(compact::announces_compact);
        let mut inbound = response.into_inner();
        let mut acks = Vec::new();
        while acks.len() < expect {
            match tokio::time::timeout(Duration::from_secs(20), inbound.message()).await {
                Ok(Ok(Some(ack))) => {
                    let stop = !ack.error.is_empty();
                    acks.push(ack);
                    if stop {
                        break;
                    }
                }
                _ => break,
            }
        }
        drop(tx);
        (acks, announced)
    })
}

/// A compact body of `node` at `seq` claiming the report at `same_as`.
fn compact_body(node: &str, seq: u64, prev: [u8; 32], same_as: u64, digest: [u8; 32], at_ms: i64) -> AttestationBody {
    AttestationBody {
        node_id: node.into(),
        seq,
        prev_hash: prev.to_vec(),
        created_at_unix_ms: at_ms,
        trigger: Trigger::Schedule as i32,
        report_index_sha256: digest.to_vec(),
        same_as_seq: same_as,
        ..Default::default()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn collector_cli(collector: &Collector, args: &[&str]) -> (i32, String, String) {
    run(Collector::cmd(&collector.data_dir).args(args))
}

fn verify(bundle: &Path, fp: &str) -> (i32, String, String) {
    run(Command::new(bin("kosmos-collector")).args(["evidence", "verify", "--ca-fingerprint", fp]).arg(bundle))
}

#[test]
fn a_steady_daemon_attests_compactly_and_a_change_is_reported_in_full_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let agent = enrolled(&collector, &tmp.path().join("agent"));
    let root = fixture_copy(&tmp.path().join("root"));
    agent.configure(&collector.url(), &root, "interval_secs = 1\njitter_percent = 0\ncheckpoint_secs = 5\n");
    let node = agent.node_id();
    let mut daemon = agent.spawn_daemon();
    let head = || collector.store().node(&node).unwrap().map_or(0, |n| n.head_seq);
    wait_for("ten rounds", Duration::from_secs(90), || head() >= 10);
    // Something changes on the node: root login allowed.
    let sshd = root.join("etc/ssh/sshd_config.d/10-kosmos.conf");
    let text = std::fs::read_to_string(&sshd).unwrap().replace("PermitRootLogin no", "PermitRootLogin yes");
    std::fs::write(&sshd, text).unwrap();
    let changed_at = head();
    wait_for("six more rounds", Duration::from_secs(90), || head() >= changed_at + 6);
    let _ = daemon.kill();
    let _ = daemon.wait();

    let bodies = stored_bodies(&collector, &node);
    let first = &bodies[0];
    assert!(!compact::is_compact(first), "the startup round is a full report");
    let before = first.report_index_sha256.clone();
    let compacts = bodies.iter().filter(|b| compact::is_compact(b)).count();
    assert!(compacts >= bodies.len() / 2, "{compacts} compact of {}", bodies.len());
    // Every compact round names the latest full report and its digest, and
    // a full report came at least every checkpoint (5 s, rounds of ~1 s).
    let mut baseline: Option<&AttestationBody> = None;
    for b in &bodies {
        if compact::is_compact(b) {
            let base = baseline.unwrap();
            assert_eq!((b.same_as_seq, &b.report_index_sha256), (base.seq, &base.report_index_sha256), "seq {}", b.seq);
            assert!(b.report_json.is_empty());
            assert!(b.created_at_unix_ms - base.created_at_unix_ms < 5000, "seq {}: a checkpoint was due", b.seq);
        } else {
            baseline = Some(b);
        }
    }
    let checkpoints =
        bodies.iter().filter(|b| !compact::is_compact(b) && b.report_index_sha256 == before && b.seq > 1).count();
    assert!(checkpoints >= 1, "no checkpoint in {} rounds", bodies.len());
    // The change: the first body with another digest is a full report, at
    // most two rounds after the change (one audit may have been under way),
    // and every later round carries the new findings.
    let changed = bodies.iter().position(|b| b.report_index_sha256 != before).expect("the change was attested");
    assert!(!compact::is_compact(&bodies[changed]), "seq {} is compact", bodies[changed].seq);
    assert!(bodies[changed].seq <= changed_at + 2, "seq {} for a change at head {changed_at}", bodies[changed].seq);
    assert!(bodies[changed..].iter().all(|b| b.report_index_sha256 == bodies[changed].report_index_sha256));
    assert!(event_kinds(&collector, &node).is_empty(), "{:?}", event_kinds(&collector, &node));

    // The fleet report shows the change (root login now fails).
    let (code, json, err) = collector_cli(&collector, &["report", "--format", "json", "--findings", "all"]);
    assert_eq!(code, 0, "{err}");
    assert!(json.contains("ssh.permit_root_login"), "{json}");

    // An auditor verifies the whole chain, compact rounds included.
    let bundle = tmp.path().join("bundle.tar.gz");
    let (code, out, err) =
        collector_cli(&collector, &["evidence", "export", "--all", "--out", bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "export: {out}{err}");
    let (code, out, err) = verify(&bundle, &collector.fingerprint());
    assert_eq!(code, 0, "verify: {out}{err}");
    assert!(out.contains(&format!("{} envelopes", bodies.len())), "{out}");
}

#[test]
fn a_forged_compact_attestation_is_refused_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let a = enrolled(&collector, &tmp.path().join("a"));
    let b = enrolled(&collector, &tmp.path().join("b"));
    let (na, nb) = (a.node_id(), b.node_id());
    let (ka, kb) = (a.signing_key(), b.signing_key());
    // Each node's first report: a has no finding, b one failure.
    let a1 = chain::seal(&ka, &body(&na, 1, GENESIS_PREV_HASH, EMPTY_REPORT));
    let b1 = chain::seal(&kb, &body(&nb, 1, GENESIS_PREV_HASH, ONE_FAILURE));
    let (acks, announced) = send(&collector, &a, vec![a1.clone()]);
    assert!(announced, "the collector announces compact-v1 on the Attest stream");
    assert_eq!(acks[0].acked_seq, 1);
    assert_eq!(send(&collector, &b, vec![b1]).0[0].acked_seq, 1);
    let h1 = chain::body_hash(&a1.body);
    let at = now_ms();
    // a claims b's findings (the digest of b's report), then a digest of
    // nothing at all: each refused for good, naming the seq.
    for (claimed, why) in [(digest(ONE_FAILURE), "whose report has digest"), ([7; 32], "whose report has digest")] {
        let forged = chain::seal(&ka, &compact_body(&na, 2, h1, 1, claimed, at));
        let (acks, _) = send(&collector, &a, vec![forged]);
        assert!(acks[0].error.contains(why), "{acks:?}");
        assert_eq!(acks[0].refused_seq, 2, "{acks:?}");
    }
    // The true claim is stored.
    let honest = chain::seal(&ka, &compact_body(&na, 2, h1, 1, digest(EMPTY_REPORT), at));
    assert_eq!(send(&collector, &a, vec![honest.clone()]).0[0].acked_seq, 2);
    // After another full report, a claim about the earlier one (with its
    // true digest) is refused: a claim names the node's latest report.
    let a3 = chain::seal(&ka, &body(&na, 3, chain::body_hash(&honest.body), EMPTY_REPORT));
    assert_eq!(send(&collector, &a, vec![a3.clone()]).0[0].acked_seq, 3);
    let stale = chain::seal(&ka, &compact_body(&na, 4, chain::body_hash(&a3.body), 1, digest(EMPTY_REPORT), at));
    let (acks, _) = send(&collector, &a, vec![stale]);
    assert!(acks[0].error.contains("latest full report is seq 3"), "{acks:?}");
    assert_eq!(acks[0].refused_seq, 4);
    let kinds = event_kinds(&collector, &na);
    assert_eq!(kinds, ["false_claim", "false_claim", "false_claim"], "{kinds:?}");
    let events = collector.store().events(&na).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [Some(2), Some(2), Some(4)]);
    assert_eq!(stored_bodies(&collector, &na).len(), 3);
    assert!(event_kinds(&collector, &nb).is_empty());
}

#[test]
fn an_older_agent_and_a_newer_one_share_a_collector() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let newer = enrolled(&collector, &tmp.path().join("newer"));
    let older = enrolled(&collector, &tmp.path().join("older"));
    let legacy = enrolled(&collector, &tmp.path().join("legacy"));
    let fixture = repo().join("tests/fixtures/hardened");
    newer.configure(&collector.url(), &fixture, "interval_secs = 1\njitter_percent = 0\n");
    // Full reports every round, as agents before compact attestations send.
    older.configure(&collector.url(), &fixture, "interval_secs = 1\njitter_percent = 0\ncompact = false\n");
    let mut daemons = [newer.spawn_daemon(), older.spawn_daemon()];
    // And the oldest format: plain JSON reports without an index digest.
    let key = legacy.signing_key();
    let mut prev = GENESIS_PREV_HASH;
    let envs: Vec<AttestationEnvelope> = (1..=3)
        .map(|seq| {
            let e = chain::seal(&key, &body(&legacy.node_id(), seq, prev, ONE_FAILURE));
            prev = chain::body_hash(&e.body);
            e
        })
        .collect();
    assert_eq!(send(&collector, &legacy, envs).0.last().unwrap().acked_seq, 3);
    let head = |a: &Agent| collector.store().node(&a.node_id()).unwrap().map_or(0, |n| n.head_seq);
    wait_for("six rounds of each daemon", Duration::from_secs(90), || head(&newer) >= 6 && head(&older) >= 6);
    for d in &mut daemons {
        let _ = d.kill();
        let _ = d.wait();
    }
    let compact_of =
        |a: &Agent| stored_bodies(&collector, &a.node_id()).iter().filter(|b| compact::is_compact(b)).count();
    assert!(compact_of(&newer) >= 3, "{}", compact_of(&newer));
    assert_eq!(compact_of(&older), 0);
    assert_eq!(compact_of(&legacy), 0);
    for a in [&newer, &older, &legacy] {
        assert!(event_kinds(&collector, &a.node_id()).is_empty(), "{:?}", event_kinds(&collector, &a.node_id()));
    }
    // One fleet report over all three.
    let (code, json, err) = collector_cli(&collector, &["report", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    for a in [&newer, &older, &legacy] {
        assert!(json.contains(&a.node_id()), "{json}");
    }
}

/// The files of a bundle, and a bundle written from edited files with the
/// manifest's hashes and sizes updated (what a forger would do).
fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
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

fn forge(path: &Path, mut files: Vec<(String, Vec<u8>)>, edit_manifest: impl FnOnce(&mut serde_json::Value)) {
    use sha2::Digest;
    let (_, manifest) = files.pop().unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        let (_, data) = files.iter().find(|(p, _)| p == f["path"].as_str().unwrap()).unwrap();
        f["sha256"] = hex(&sha2::Sha256::digest(data)).into();
        f["bytes"] = data.len().into();
    }
    edit_manifest(&mut m);
    files.push(("manifest.json".into(), serde_json::to_vec_pretty(&m).unwrap()));
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (p, d) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_path(p).unwrap();
        h.set_size(d.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append(&h, d.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn database_bytes(data_dir: &Path) -> u64 {
    ["collector.db", "collector.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(data_dir.join(f)).map_or(0, |m| m.len()))
        .sum()
}

/// Retention over a chain of compact attestations: `prune` removes those
/// past `keep_all`, records the runs, gives the space back (SQLite), leaves
/// the fleet report as it was, and the evidence bundle shows a retention
/// gap (not a break) that still chains; a signed but false claim, and a
/// retention record that contradicts the chain, fail verification.
#[test]
fn retention_prunes_compact_rounds_and_evidence_still_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(&tmp.path().join("collector"), 0);
    let fp = collector.fingerprint();
    let agent = enrolled(&collector, &tmp.path().join("agent"));
    let node = agent.node_id();
    let key = agent.signing_key();
    // Three hours ago a full report, then 2,000 compact rounds two seconds
    // apart; half an hour ago a checkpoint, then eight compact rounds.
    let start = now_ms() - 3 * 3_600_000;
    let d = digest(ONE_FAILURE);
    let mut bodies =
        vec![AttestationBody { created_at_unix_ms: start, ..body(&node, 1, GENESIS_PREV_HASH, ONE_FAILURE) }];
    bodies.extend(
        (2..=2001).map(|seq| compact_body(&node, seq, [0; 32], 1, d, start + i64::try_from(seq).unwrap() * 2000)),
    );
    let recent = now_ms() - 1_800_000;
    bodies.push(AttestationBody { created_at_unix_ms: recent, ..body(&node, 2002, [0; 32], ONE_FAILURE) });
    bodies.extend(
        (2003..=2010).map(|seq| compact_body(&node, seq, [0; 32], 2002, d, recent + i64::try_from(seq).unwrap())),
    );
    let mut prev = GENESIS_PREV_HASH;
    let envs: Vec<AttestationEnvelope> = bodies
        .into_iter()
        .map(|b| {
            let e = chain::seal(&key, &AttestationBody { prev_hash: prev.to_vec(), ..b });
            prev = chain::body_hash(&e.body);
            e
        })
        .collect();
    for chunk in envs.chunks(500) {
        let (acks, _) = send(&collector, &agent, chunk.to_vec());
        assert!(acks.iter().all(|a| a.error.is_empty()), "{:?}", acks.iter().find(|a| !a.error.is_empty()));
    }
    assert_eq!(collector.store().node(&node).unwrap().unwrap().head_seq, 2010);
    collector.stop();
    let as_of = chrono::Utc::now().to_rfc3339();
    let report = || {
        let (code, json, err) = collector_cli(&collector, &["report", "--format", "json", "--as-of", &as_of]);
        assert_eq!(code, 0, "{err}");
        json
    };
    let report_before = report();
    let bytes_before = database_bytes(&collector.data_dir);

    // No policy: prune says so (usage error).
    let (code, _, err) = collector_cli(&collector, &["prune"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no [retention]"), "{err}");
    let config = collector.data_dir.join("collector.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[retention]\nkeep_all = \"1h\"\nmax_age = \"400d\"\n");
    std::fs::write(&config, text).unwrap();
    let (code, out, err) = collector_cli(&collector, &["prune"]);
    assert_eq!(code, 0, "prune: {out}{err}");
    assert!(out.contains("removed 2000 compact attestations and 0 full envelopes (1 ranges recorded"), "{out}");
    let (code, out, _) = collector_cli(&collector, &["prune"]);
    assert_eq!(code, 0);
    assert!(out.contains("removed 0 compact attestations"), "a second run finds nothing: {out}");
    let bytes_after = database_bytes(&collector.data_dir);
    if std::env::var_os("KOSMOS_E2E_PG_URL").is_none() {
        // 2,000 compact rows are ~500 KB; their pages went back to the file system.
        assert!(bytes_after + 250_000 < bytes_before, "{bytes_before} -> {bytes_after} bytes");
    }
    assert_eq!(report(), report_before, "the fleet report over the retained window is unchanged");

    let seqs: Vec<u64> = collector.store().envelopes(&node).unwrap().iter().map(|e| e.0).collect();
    assert_eq!(seqs, [vec![1], (2002..=2010).collect()].concat());
    let bundle = tmp.path().join("bundle.tar.gz");
    let (code, out, err) =
        collector_cli(&collector, &["evidence", "export", "--all", "--out", bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "export: {out}{err}");
    let (code, out, err) = verify(&bundle, &fp);
    assert_eq!(code, 0, "verify: {out}{err}");
    assert!(
        out.contains("known retention at seq 2002: seqs 2..=2001 removed by the retention policy before seq 2002"),
        "{out}"
    );

    // The last compact round re-signed (with the node's own key) to claim
    // other findings: the signature holds, the claim does not.
    let files = entries(&bundle);
    let last = format!("nodes/{node}/{:020}.body", 2010);
    let original = AttestationBody::decode(files.iter().find(|(p, _)| *p == last).unwrap().1.as_slice()).unwrap();
    let lie = chain::seal(&key, &AttestationBody { report_index_sha256: digest(EMPTY_REPORT).to_vec(), ..original });
    let mut forged = files.clone();
    for (p, data) in &mut forged {
        if *p == last {
            *data = lie.body.to_vec();
        } else if *p == format!("nodes/{node}/{:020}.sig", 2010) {
            *data = lie.signature.clone();
        }
    }
    let forged_path = tmp.path().join("forged.tar.gz");
    forge(&forged_path, forged, |_| {});
    let (code, out, _) = verify(&forged_path, &fp);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("node {node} seq 2010: claims findings digest")) && out.contains("the claim is false"),
        "{out}"
    );

    // A retention record whose last hash is not what seq 2002 chains on.
    let contradicting = tmp.path().join("contradicting.tar.gz");
    forge(&contradicting, files, |m| {
        m["nodes"][0]["pruned"][0]["last_sha256"] = "00".repeat(32).into();
    });
    let (code, out, _) = verify(&contradicting, &fp);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 2002: prev_hash does not name the last pruned body (seq 2001"), "{out}");
}
