//! The attestation pipeline end to end, over real binaries and real mTLS on
//! loopback: enrollment, delivery, offline verification, rejections, chain
//! anomalies, a collector outage, and crashes of either side.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use kosmos_e2e::*;
use kosmos_proto::chain::{self, GENESIS_PREV_HASH};
use kosmos_proto::identity;
use kosmos_proto::v1::AttestationBody;

/// The smallest well-formed report body (no findings).
const EMPTY_REPORT: &[u8] = br#"{"summary":{"pass":0,"fail":0,"error":0,"not_applicable":0,"waived":0},"results":[]}"#;

fn hardened_root() -> std::path::PathBuf {
    repo().join("tests/fixtures/hardened")
}

/// A collector and one enrolled agent configured to audit the hardened fixture.
fn enrolled(tmp: &std::path::Path, extra_config: &str) -> (Collector, Agent) {
    let collector = Collector::start(&tmp.join("collector"), 0);
    let agent = Agent::new(&tmp.join("agent"));
    let (code, out, err) = agent.enroll(&collector, &collector.token("1h"), &collector.fingerprint());
    assert_eq!(code, 0, "enroll failed: {out}{err}");
    agent.configure(&collector.url(), &hardened_root(), extra_config);
    (collector, agent)
}

/// Verify every stored envelope of a node with the node certificate alone.
fn verify_offline(collector: &Collector, node_id: &str) -> Vec<AttestationBody> {
    let mut store = collector.store();
    let node = store.node(node_id).unwrap().expect("node enrolled");
    assert_eq!(identity::node_id_from_cert(&node.cert_der).unwrap(), node_id);
    let key = identity::verifying_key_from_cert(&node.cert_der).unwrap();
    let mut prev = GENESIS_PREV_HASH;
    let mut bodies = Vec::new();
    for (seq, body, signature) in store.envelopes(node_id).unwrap() {
        let env = kosmos_proto::v1::AttestationEnvelope { body: body.clone().into(), signature };
        let b = chain::open(&env, &key).unwrap_or_else(|e| panic!("seq {seq} does not verify: {e}"));
        assert_eq!(b.seq, seq);
        assert_eq!(b.prev_hash, prev.to_vec(), "seq {seq} does not chain on its predecessor");
        prev = chain::body_hash(&body);
        bodies.push(b);
    }
    bodies
}

fn event_kinds(collector: &Collector, node_id: &str) -> Vec<String> {
    collector.store().events(node_id).unwrap().into_iter().map(|e| e.kind).collect()
}

#[test]
fn enroll_run_store_and_verify_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let (collector, agent) = enrolled(tmp.path(), "");
    // Key written 0600, state dir 0700.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&agent.state_dir.join("key.pem")), 0o600);
    assert_eq!(mode(&agent.state_dir), 0o700);
    for _ in 0..2 {
        let (code, out, err) = agent.run_once();
        assert_eq!(code, 0, "run --once: {out}{err}");
    }
    let bodies = verify_offline(&collector, &agent.node_id());
    assert_eq!(bodies.len(), 2);
    for b in &bodies {
        assert_eq!(b.node_id, agent.node_id());
        // The report is plain gzip: any gzip decoder reads it, not only ours.
        assert_eq!(b.report_encoding, kosmos_proto::v1::ReportEncoding::Gzip as i32);
        let mut json = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&b.report_json[..]), &mut json).unwrap();
        let report: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(report["schema"], "kosmos.report/v1");
        assert_eq!(report["node"]["hostname"], "node-hardened-01");
        let digest = kosmos_proto::report::IndexedReport::parse(&json).unwrap().digest();
        assert_eq!(b.report_index_sha256, digest.to_vec());
    }
    // No malformed_report (or any other) event: the collector's own digest
    // of each report matched the signed one.
    assert!(event_kinds(&collector, &agent.node_id()).is_empty());
}

/// Issue 16: `collector_url` may list several collectors (replicas); the
/// real agent skips one that is down for the next, with its backoff.
#[test]
fn a_list_of_collector_urls_fails_over_to_one_that_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let (collector, agent) = enrolled(tmp.path(), "");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    // The same configuration with the list in place of the one URL; the
    // live collector is named by IP, so its certificate is checked against
    // the name `localhost`.
    let config = std::fs::read_to_string(&agent.config).unwrap();
    let listed = config.replace(
        &format!("collector_url = \"{}\"", collector.url()),
        &format!("collector_url = [\"{dead}\", \"{}\"]", collector.url()),
    );
    assert_ne!(listed, config, "the URL line was not found in:\n{config}");
    std::fs::write(&agent.config, listed).unwrap();
    let (code, out, err) = agent.run_once();
    assert_eq!(code, 0, "run --once with a dead first collector: {out}{err}");
    assert!(err.contains("failing over to the next collector endpoint"), "{err}");
    assert_eq!(verify_offline(&collector, &agent.node_id()).len(), 1);
}

#[test]
fn tokens_are_single_use_and_expire_and_the_ca_is_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let fp = collector.fingerprint();
    let token = collector.token("1h");
    let a = Agent::new(&tmp.path().join("a"));
    assert_eq!(a.enroll(&collector, &token, &fp).0, 0);
    let b = Agent::new(&tmp.path().join("b"));
    let (code, out, err) = b.enroll(&collector, &token, &fp);
    assert_ne!(code, 0, "a reused token must be refused");
    assert!(format!("{out}{err}").contains("already used"), "{out}{err}");
    assert!(!b.state_dir.join("cert.pem").exists());
    let short = collector.token("1s");
    std::thread::sleep(Duration::from_millis(1500));
    let (code, out, err) = b.enroll(&collector, &short, &fp);
    assert_ne!(code, 0);
    assert!(format!("{out}{err}").contains("expired"), "{out}{err}");
    // A wrong CA fingerprint: nothing is sent, nothing is written.
    let wrong = format!("SHA256:{}", "00".repeat(32));
    let (code, out, err) = b.enroll(&collector, &collector.token("1h"), &wrong);
    assert_ne!(code, 0, "{out}{err}");
    assert!(!b.state_dir.join("key.pem").exists());
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Issue a client certificate for `node_id` with the given CA and validity.
fn issue(ca_cert_pem: &str, ca_key_pem: &str, node_id: &str, expired: bool) -> (String, String) {
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, PKCS_ED25519, SanType};
    let ca_key = KeyPair::from_pem(ca_key_pem).unwrap();
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).unwrap();
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(identity::node_uri(node_id).try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - time::Duration::days(10);
        params.not_after = now - time::Duration::days(1);
    } else {
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(1);
    }
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn other_ca() -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

#[test]
fn attest_rejections() {
    let tmp = tempfile::tempdir().unwrap();
    let (collector, agent) = enrolled(tmp.path(), "");
    let node = agent.node_id();
    let (cert, key) = identity_of(&agent);
    let sk = agent.signing_key();
    let ca_pem = std::fs::read_to_string(collector.data_dir.join("ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(collector.data_dir.join("ca-key.pem")).unwrap();
    let rt = rt();
    rt.block_on(async {
        let ok = chain::seal(&sk, &body(&node, 1, GENESIS_PREV_HASH, EMPTY_REPORT));
        // No client certificate: Attest refuses.
        let ch = channel(&collector, None).await.unwrap();
        let err = attest(ch, vec![ok.clone()]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
        // A certificate from another CA: the TLS handshake fails.
        let (oc, ok_key) = other_ca();
        let (c2, k2) = issue(&oc, &ok_key, &node, false);
        let refused = match channel(&collector, Some((&c2, &k2))).await {
            Err(_) => true,
            Ok(ch) => attest(ch, vec![ok.clone()]).await.is_err(),
        };
        assert!(refused, "a certificate from another CA was accepted");
        // An expired certificate from the right CA: refused at the handshake.
        let (c3, k3) = issue(&ca_pem, &ca_key, &node, true);
        let refused = match channel(&collector, Some((&c3, &k3))).await {
            Err(_) => true,
            Ok(ch) => attest(ch, vec![ok.clone()]).await.is_err(),
        };
        assert!(refused, "an expired certificate was accepted");
        // A valid certificate of our CA that was not the one issued to the node.
        let (c4, k4) = issue(&ca_pem, &ca_key, &node, false);
        let ch = channel(&collector, Some((&c4, &k4))).await.unwrap();
        let err = attest(ch, vec![ok.clone()]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

        // An altered body: the signature no longer verifies.
        let mut tampered = ok.clone();
        let mut altered = tampered.body.to_vec();
        let last = altered.len() - 1;
        altered[last] ^= 0x01;
        tampered.body = altered.into();
        let ch = channel(&collector, Some((&cert, &key))).await.unwrap();
        let acks = attest(ch, vec![tampered]).await.unwrap();
        assert!(acks[0].error.contains("signature"), "{:?}", acks);
        // A body claiming another node's id, signed with this node's key.
        let forged = chain::seal(&sk, &body("node-someoneelse", 1, GENESIS_PREV_HASH, EMPTY_REPORT));
        let ch = channel(&collector, Some((&cert, &key))).await.unwrap();
        let acks = attest(ch, vec![forged]).await.unwrap();
        assert!(acks[0].error.contains("does not match"), "{:?}", acks);
        // Nothing of that was stored.
        assert!(collector.store().envelopes(&node).unwrap().is_empty());
    });
    let kinds = event_kinds(&collector, &node);
    assert!(kinds.contains(&"bad_signature".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"identity_mismatch".to_string()), "{kinds:?}");

    // Revocation: from now on the node's own certificate is refused.
    assert_eq!(agent.run_once().0, 0);
    collector.revoke(&node);
    let (code, out, err) = agent.run_once();
    assert_ne!(code, 0, "a revoked node delivered: {out}{err}");
    rt.block_on(async {
        let ch = channel(&collector, Some((&cert, &key))).await.unwrap();
        let err =
            attest(ch, vec![chain::seal(&sk, &body(&node, 2, GENESIS_PREV_HASH, EMPTY_REPORT))]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
    });
    assert!(event_kinds(&collector, &node).contains(&"revoked".to_string()));
}

#[test]
fn replayed_skipped_and_forked_sequences_become_node_events() {
    let tmp = tempfile::tempdir().unwrap();
    let (collector, agent) = enrolled(tmp.path(), "");
    let node = agent.node_id();
    let (cert, key) = identity_of(&agent);
    let sk = agent.signing_key();
    let e1 = chain::seal(&sk, &body(&node, 1, GENESIS_PREV_HASH, EMPTY_REPORT));
    let h1 = chain::body_hash(&e1.body);
    let e2 = chain::seal(&sk, &body(&node, 2, h1, EMPTY_REPORT));
    let h2 = chain::body_hash(&e2.body);
    let e5 = chain::seal(&sk, &body(&node, 5, h2, EMPTY_REPORT));
    let e6 = chain::seal(&sk, &body(&node, 6, [7; 32], EMPTY_REPORT));
    let acks = rt().block_on(async {
        let ch = channel(&collector, Some((&cert, &key))).await.unwrap();
        attest(ch, vec![e1.clone(), e2, e1, e5, e6]).await.unwrap()
    });
    let seqs: Vec<u64> = acks.iter().map(|a| a.acked_seq).collect();
    assert_eq!(seqs, [1, 2, 2, 5, 6]);
    assert_eq!(event_kinds(&collector, &node), ["replay", "gap", "fork"]);
    assert_eq!(collector.store().envelopes(&node).unwrap().len(), 4, "the replay is stored once");
}

#[test]
fn collector_outage_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut collector, agent) = enrolled(tmp.path(), "interval_secs = 1\njitter_percent = 0\n");
    let port = collector.port();
    let mut daemon = agent.spawn_daemon();
    let node = agent.node_id();
    wait_for("first attestations", Duration::from_secs(30), || {
        collector.store().envelopes(&node).map(|e| e.len() >= 2).unwrap_or(false)
    });
    collector.stop();
    // The agent keeps producing attestations into its spool for 30 s.
    std::thread::sleep(Duration::from_secs(30));
    let spooled = std::fs::read_dir(agent.state_dir.join("spool"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert!(spooled >= 20, "only {spooled} envelopes spooled during the outage");
    let collector = Collector::start(&tmp.path().join("collector"), port);
    let target = {
        // Everything produced until now must arrive.
        let head = collector.store().node(&node).unwrap().unwrap().head_seq;
        head + spooled as u64
    };
    wait_for("the spool to drain", Duration::from_secs(60), || {
        collector.store().node(&node).map(|n| n.map_or(0, |n| n.head_seq) >= target).unwrap_or(false)
    });
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon exit on SIGTERM: {status:?}");
    let bodies = verify_offline(&collector, &node);
    let seqs: Vec<u64> = bodies.iter().map(|b| b.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every envelope, in order, each once");
    let kinds = event_kinds(&collector, &node);
    assert!(!kinds.iter().any(|k| k == "gap" || k == "fork" || k == "bad_signature"), "{kinds:?}");
}

#[test]
fn collector_kill9_keeps_every_acked_envelope() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut collector, agent) = enrolled(tmp.path(), "");
    let node = agent.node_id();
    let (cert, key) = identity_of(&agent);
    let sk = agent.signing_key();
    // A real report (85 findings) as the payload of every envelope.
    let (code, report, err) = run(agent.cmd().args([
        "check",
        "--root",
        hardened_root().to_str().unwrap(),
        "--output",
        "json",
        "--fail-on",
        "none",
    ]));
    assert_eq!(code, 0, "{err}");
    let report = report.into_bytes();
    // Pre-build a long chain.
    let mut prev = GENESIS_PREV_HASH;
    let mut envs = Vec::new();
    for seq in 1..=3000u64 {
        let e = chain::seal(&sk, &body(&node, seq, prev, &report));
        prev = chain::body_hash(&e.body);
        envs.push(e);
    }
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = acked.clone();
    let url = collector.url();
    let ca = std::fs::read_to_string(collector.data_dir.join("ca.pem")).unwrap();
    let sender = std::thread::spawn(move || {
        rt().block_on(async move {
            let Ok(ch) = channel_to(&url, &ca, Some((&cert, &key))).await else { return };
            let mut client = kosmos_proto::v1::attestation_client::AttestationClient::new(ch);
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(async move {
                for e in envs {
                    if tx.send(e).await.is_err() {
                        break;
                    }
                }
            });
            let Ok(resp) = client.attest(tokio_stream::wrappers::ReceiverStream::new(rx)).await else { return };
            let mut inbound = resp.into_inner();
            while let Ok(Some(ack)) = inbound.message().await {
                seen.fetch_max(ack.acked_seq, std::sync::atomic::Ordering::SeqCst);
            }
        })
    });
    // Let ingest run, then crash the collector in the middle of it.
    wait_for("ingest to start", Duration::from_secs(20), || acked.load(std::sync::atomic::Ordering::SeqCst) > 200);
    collector.kill9();
    let _ = sender.join();
    let last_acked = acked.load(std::sync::atomic::Ordering::SeqCst);
    assert!(last_acked < 3000, "the crash came too late to test anything");
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let stored: BTreeSet<u64> = collector.store().envelopes(&node).unwrap().into_iter().map(|(s, _, _)| s).collect();
    for seq in 1..=last_acked {
        assert!(stored.contains(&seq), "seq {seq} was acked but is not in the store");
    }
    verify_offline(&collector, &node);
}

#[test]
fn agent_kill9_never_sends_a_corrupt_envelope() {
    let tmp = tempfile::tempdir().unwrap();
    let (collector, agent) = enrolled(tmp.path(), "interval_secs = 1\njitter_percent = 0\n");
    let node = agent.node_id();
    for i in 0..6u64 {
        let mut daemon = agent.spawn_daemon();
        std::thread::sleep(Duration::from_millis(700 + 290 * i));
        daemon.kill().unwrap();
        daemon.wait().unwrap();
    }
    let (code, out, err) = agent.run_once();
    assert_eq!(code, 0, "{out}{err}");
    let bodies = verify_offline(&collector, &node);
    assert!(bodies.len() >= 3);
    let kinds = event_kinds(&collector, &node);
    assert!(
        !kinds.iter().any(|k| k == "bad_signature" || k == "malformed_report" || k == "fork"),
        "a corrupt or conflicting envelope reached the collector: {kinds:?}"
    );
}
