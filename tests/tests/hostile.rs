//! The collector under a hostile node and hostile strangers (issue 15), over
//! the real binaries on loopback: one node must never hurt the others, a
//! refused envelope is answered as refused, node-controlled text cannot forge
//! lines in what operators and auditors read, silent connections are closed,
//! and a malformed CSR does not burn an enrollment token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use kosmos_e2e::*;
use kosmos_proto::chain::{self, GENESIS_PREV_HASH};
use kosmos_proto::v1::{Ack, AttestationEnvelope};
use prost::Message;

const REPORT: &[u8] = br#"{"summary":{"pass":0,"fail":0,"error":0,"not_applicable":0,"waived":0},"results":[]}"#;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn ca(collector: &Collector) -> String {
    std::fs::read_to_string(collector.data_dir.join("ca.pem")).unwrap()
}

fn events(collector: &Collector, node: &str) -> Vec<String> {
    collector.store().events(node).unwrap().into_iter().map(|e| e.kind).collect()
}

/// A chain of `n` envelopes for `node`, starting at seq 1.
fn chain_of(node: &RawNode, n: u64) -> Vec<AttestationEnvelope> {
    let mut prev = GENESIS_PREV_HASH;
    (1..=n)
        .map(|seq| {
            let e = chain::seal(&node.key, &body(&node.id, seq, prev, REPORT));
            prev = chain::body_hash(&e.body);
            e
        })
        .collect()
}

/// Issue 15, defect 1: a node sending seqs the store cannot represent (at
/// and above 2^63) while honest nodes send in the same batch windows. The
/// attacker gets a refusal naming the seq; the honest nodes get every ack.
#[test]
fn a_seq_above_two_to_the_63_is_refused_and_never_hurts_honest_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let (url, ca) = (collector.url(), ca(&collector));
    let tokens: Vec<String> = (0..4).map(|_| collector.token("1h")).collect();
    let (attacker, honest, refusals, honest_acks) = rt().block_on(async {
        let attacker = enroll_raw(&url, &ca, &tokens[0], "attacker").await.unwrap();
        let mut honest = Vec::new();
        for t in &tokens[1..] {
            honest.push(enroll_raw(&url, &ca, t, "honest").await.unwrap());
        }
        // Honest nodes: 150 envelopes each, in chunks on fresh streams, while
        // the attacker hammers the writer with out-of-range seqs.
        let mut tasks = Vec::new();
        for node in &honest {
            let envs = chain_of(node, 150);
            let (url, ca, cert, key) = (url.clone(), ca.clone(), node.cert.clone(), node.key_pem.clone());
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                for chunk in envs.chunks(25) {
                    let ch = channel_to(&url, &ca, Some((&cert, &key))).await.unwrap();
                    acks.extend(attest(ch, chunk.to_vec()).await.unwrap());
                }
                acks
            }));
        }
        let mut refusals: Vec<Ack> = Vec::new();
        for k in 0..40u64 {
            let seq = (1u64 << 63) + k % 3;
            let env = chain::seal(&attacker.key, &body(&attacker.id, seq, [k as u8; 32], REPORT));
            let ch = channel_to(&url, &ca, Some((&attacker.cert, &attacker.key_pem))).await.unwrap();
            refusals.extend(attest(ch, vec![env]).await.unwrap());
        }
        let mut honest_acks = Vec::new();
        for t in tasks {
            honest_acks.push(t.await.unwrap());
        }
        (attacker, honest, refusals, honest_acks)
    });
    assert_eq!(refusals.len(), 40);
    for a in &refusals {
        assert!(a.error.contains("outside 1..="), "{a:?}");
        assert!(a.refused_seq >= 1 << 63, "the refusal names the seq: {a:?}");
        assert_eq!(a.acked_seq, 0);
    }
    for (node, acks) in honest.iter().zip(&honest_acks) {
        assert_eq!(acks.len(), 150, "{}", node.id);
        assert!(acks.iter().all(|a| a.error.is_empty()), "an honest node got an error: {acks:?}");
        assert_eq!(acks.last().unwrap().acked_seq, 150);
        assert_eq!(collector.store().envelopes(&node.id).unwrap().len(), 150);
        assert!(events(&collector, &node.id).is_empty(), "{:?}", events(&collector, &node.id));
    }
    assert!(collector.store().envelopes(&attacker.id).unwrap().is_empty(), "nothing stored under another seq");
    let kinds = events(&collector, &attacker.id);
    assert_eq!(kinds.len(), 40);
    assert!(kinds.iter().all(|k| k == "seq_out_of_range"), "{kinds:?}");
}

/// Raw bytes on the Attest stream, to send what no honest client would.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Default)]
struct RawEncoder;
#[derive(Debug, Default)]
struct AckDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for AckDecoder {
    type Item = Ack;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Ack>, tonic::Status> {
        let bytes = bytes::Buf::copy_to_bytes(src, bytes::Buf::remaining(src));
        Ack::decode(bytes).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Ack;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

/// Send raw messages on one Attest stream; the first answer (ack or status).
async fn raw_attest(ch: tonic::transport::Channel, messages: Vec<Vec<u8>>) -> Result<Option<Ack>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/kosmos.attest.v1.Attestation/Attest");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for m in messages {
        tx.send(m).await.unwrap();
    }
    drop(tx);
    let mut inbound = grpc
        .streaming(tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)), path, RawCodec)
        .await?
        .into_inner();
    tokio::time::timeout(Duration::from_secs(30), inbound.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no answer"))?
}

/// Issue 15, defect 2: an envelope that cannot be decoded (64 MiB, or a cut
/// protobuf) is refused with a non-OK status that says so, counted in
/// /metrics and recorded; it was closed with status OK before.
#[test]
fn an_envelope_that_cannot_be_decoded_is_refused_not_closed_with_ok() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let (url, ca) = (collector.url(), ca(&collector));
    let token = collector.token("1h");
    let (node, big, cut, after) = rt().block_on(async {
        let node = enroll_raw(&url, &ca, &token, "n").await.unwrap();
        let id = Some((node.cert.as_str(), node.key_pem.as_str()));
        let big = raw_attest(channel_to(&url, &ca, id).await.unwrap(), vec![vec![0u8; 64 << 20]]).await;
        let whole = chain::seal(&node.key, &body(&node.id, 1, GENESIS_PREV_HASH, REPORT)).encode_to_vec();
        let cut = raw_attest(channel_to(&url, &ca, id).await.unwrap(), vec![whole[..whole.len() / 2].to_vec()]).await;
        // The node is still served afterwards.
        let after = attest(channel_to(&url, &ca, id).await.unwrap(), chain_of(&node, 2)).await.unwrap();
        (node, big, cut, after)
    });
    let big = big.expect_err("a 64 MiB message must be refused");
    assert_eq!(big.code(), tonic::Code::ResourceExhausted, "{big:?}");
    assert!(big.message().contains("envelope refused"), "{big:?}");
    let cut = cut.expect_err("a cut protobuf must be refused");
    assert_eq!(cut.code(), tonic::Code::InvalidArgument, "{cut:?}");
    assert!(cut.message().contains("envelope refused"), "{cut:?}");
    assert_eq!(after.iter().map(|a| a.acked_seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(events(&collector, &node.id), ["malformed_envelope", "malformed_envelope"]);
    let (_, _, metrics) = http_get(&collector.http_addr, "/metrics", None);
    for reason in ["too_large", "undecodable"] {
        let line = format!("kosmos_collector_envelope_refusals_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "{line} not in /metrics:\n{metrics}");
    }
}

/// A hostname whose text would forge output lines.
const FORGED: &str = "=HYPERLINK(\"http://x\")\nnode node-00000000deadbeef (h): VERIFIED  9 envelopes\u{1b}[2K\u{202e}";

/// Issue 15, defect 3: control characters in a hostname are refused at
/// enrollment; a hostname a node puts in its reports is made safe in every
/// output format and CLI listing.
#[test]
fn a_hostname_cannot_forge_lines_in_any_output() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let (url, ca) = (collector.url(), ca(&collector));
    let (t1, t2) = (collector.token("1h"), collector.token("1h"));
    let node = rt().block_on(async {
        let refused = enroll_raw(&url, &ca, &t1, "node-1\nnode node-2 (x): VERIFIED").await.err().expect("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("control character"), "{refused:?}");
        // A hostname starting with `=` has no control character: accepted,
        // then neutralised where it matters (CSV).
        let node = enroll_raw(&url, &ca, &t1, "=SUM(A1)").await.expect("the token survived the refusal");
        // The report overwrites the hostname with the forged one.
        let report = serde_json::json!({
            "schema": "kosmos.report/v1", "agent_version": "0.1.0",
            "node": {"hostname": FORGED, "machine_id": "m", "os": {"id": "debian", "version_id": "12", "pretty_name": FORGED}, "kernel": FORGED},
            "root": "/", "profile": {"name": FORGED, "version": "1"},
            "started_at": "2026-11-22T10:00:00Z", "duration_ms": 1,
            "summary": {"pass": 0, "fail": 1, "error": 0, "not_applicable": 0, "waived": 0},
            "results": [{"id": "ssh.permit_root_login", "title": FORGED, "family": "ssh", "severity": "high",
                "status": "fail", "observed": FORGED, "expected": "no", "reason": FORGED,
                "evidence": [{"source": FORGED, "detail": FORGED}], "remediation": FORGED, "references": [],
                "responsibility": "customer"}]
        });
        let env = chain::seal(&node.key, &body(&node.id, 1, GENESIS_PREV_HASH, report.to_string().as_bytes()));
        let acks = attest(channel_to(&url, &ca, Some((&node.cert, &node.key_pem))).await.unwrap(), vec![env])
            .await
            .unwrap();
        assert_eq!(acks[0].acked_seq, 1, "{acks:?}");
        let _ = t2;
        node
    });
    let forged_line = |text: &str| text.lines().any(|l| l.starts_with("node node-00000000deadbeef"));
    let no_controls = |what: &str, text: &str| {
        assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}'), "{what} carries a display control:\n{text}");
        assert!(!forged_line(text), "{what} has a forged line:\n{text}");
    };

    // CLI listing.
    let (code, out, err) = run(Collector::cmd(&collector.data_dir).args(["node", "list"]));
    assert_eq!(code, 0, "{err}");
    no_controls("node list", &out);
    assert_eq!(out.lines().count(), 1, "one line per node:\n{out}");

    // Every report format.
    let report = |format: &str| {
        let path = tmp.path().join(format!("fleet.{format}"));
        let (code, _, err) = run(Collector::cmd(&collector.data_dir).args([
            "report",
            "--format",
            format,
            "--findings",
            "all",
            "--out",
            path.to_str().unwrap(),
        ]));
        assert_eq!(code, 0, "report --format {format}: {err}");
        std::fs::read_to_string(path).unwrap()
    };
    let md = report("md");
    no_controls("Markdown report", &md);
    let node_rows: Vec<&str> = md.lines().filter(|l| l.contains(&node.id) && l.starts_with('|')).collect();
    assert_eq!(node_rows.len(), 1, "{node_rows:?}");
    assert_eq!(node_rows[0].matches(" | ").count(), 9, "the row keeps its 10 cells: {}", node_rows[0]);

    let csv_text = report("csv");
    let mut rows = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let host_col = headers.iter().position(|h| h == "hostname").unwrap();
    let mut n = 0;
    for row in rows.records() {
        let row = row.unwrap();
        n += 1;
        for cell in row.iter() {
            assert!(!cell.starts_with(['=', '+', '-', '@']), "formula cell {cell:?}");
            assert!(!cell.contains('\u{1b}') && !cell.contains('\n'), "control in cell {cell:?}");
        }
        assert!(row[host_col].starts_with("'=HYPERLINK"), "{:?}", &row[host_col]);
    }
    assert_eq!(n, 1, "one finding row; events {:?}:\n{csv_text}", events(&collector, &node.id));

    let xml = report("junit");
    junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).expect("well-formed JUnit XML");
    roxmltree::Document::parse(&xml).expect("XML 1.0");

    let html = report("html");
    assert!(!html.contains("<node"), "HTML is escaped");
    let json: serde_json::Value = serde_json::from_str(&report("json")).unwrap();
    assert_eq!(json["nodes"][0]["hostname"], FORGED, "JSON keeps the exact value (serde escapes it)");

    // The auditor's verification, text output.
    let bundle = tmp.path().join("bundle.tar.gz");
    let (code, _, err) = run(Collector::cmd(&collector.data_dir).args([
        "evidence",
        "export",
        "--all",
        "--out",
        bundle.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) =
        run(Collector::cmd(&collector.data_dir).args(["evidence", "verify", bundle.to_str().unwrap()]));
    assert_eq!(code, 0, "verify: {out}{err}");
    no_controls("evidence verify", &out);
    assert_eq!(out.lines().filter(|l| l.starts_with("node ")).count(), 1, "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("VERIFIED")).count(), 2, "the node line and the final line:\n{out}");
}

/// Issue 15, defect 5: a token presented with a malformed CSR is still
/// usable; used with a valid CSR it enrolls exactly one node.
#[test]
fn a_malformed_csr_does_not_burn_the_token() {
    use kosmos_proto::v1::EnrollRequest;
    use kosmos_proto::v1::enrollment_client::EnrollmentClient;
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let (url, ca) = (collector.url(), ca(&collector));
    let token = collector.token("1h");
    rt().block_on(async {
        for csr in ["not a csr", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"] {
            let ch = channel_to(&url, &ca, None).await.unwrap();
            let err = EnrollmentClient::new(ch)
                .enroll(EnrollRequest {
                    token: token.clone(),
                    csr_pem: csr.into(),
                    hostname: "n".into(),
                    machine_id: String::new(),
                })
                .await
                .expect_err("a malformed CSR is refused");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        }
        enroll_raw(&url, &ca, &token, "n").await.expect("the token still works");
        let again = enroll_raw(&url, &ca, &token, "n").await.err().expect("single use");
        assert!(again.message().contains("already used"), "{again:?}");
    });
    assert_eq!(collector.store().nodes().unwrap().len(), 1);
}

/// Issue 15, defect 4: thousands of connections from a stranger that never
/// speak (plain TCP, and TLS without a certificate) are closed within the
/// timeouts and the collector's descriptors return to their baseline, while
/// enrolled nodes keep being served.
#[test]
fn silent_connections_are_closed_and_nodes_keep_being_served() {
    let limit = raise_nofile();
    let silent = 3000.min(limit.saturating_sub(200) as usize);
    assert!(silent >= 1000 || !in_ci(), "the open-files limit ({limit}) leaves room for only {silent} connections");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("collector");
    Collector::prepare(&dir);
    std::fs::write(
        dir.join("collector.toml"),
        "[limits]\nhandshake_timeout_secs = 10\nenroll_connection_secs = 12\nread_idle_secs = 14\nkeepalive_interval_secs = 2\nkeepalive_timeout_secs = 2\n",
    )
    .unwrap();
    let collector = Collector::start(&dir, 0);
    let (url, ca) = (collector.url(), ca(&collector));
    let token = collector.token("1h");
    let node = rt().block_on(enroll_raw(&url, &ca, &token, "honest")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let baseline = collector.client_connections();

    // The flood: plain TCP connections that never send a byte, and TLS
    // connections without a certificate that never send a request.
    let addr: std::net::SocketAddr = collector.addr.parse().unwrap();
    let mut tcp = Vec::new();
    for _ in 0..silent {
        tcp.push(std::net::TcpStream::connect(addr).unwrap());
    }
    // Measured before the handshake timeout starts closing them.
    wait_for("the collector to hold the flood", Duration::from_secs(9), || {
        collector.client_connections() >= baseline + silent / 2
    });
    let during = collector.client_connections();
    let rt = rt();
    let tls: Vec<tonic::transport::Channel> = rt.block_on(async {
        let mut out = Vec::new();
        for _ in 0..20 {
            out.push(channel_to(&url, &ca, None).await.unwrap());
        }
        out
    });

    // An enrolled node is served during the flood.
    let started = Instant::now();
    let acks = rt
        .block_on(async {
            let ch = channel_to(&url, &ca, Some((&node.cert, &node.key_pem))).await.unwrap();
            attest(ch, chain_of(&node, 3)).await
        })
        .unwrap();
    assert_eq!(acks.iter().map(|a| a.acked_seq).collect::<Vec<_>>(), [1, 2, 3], "served during the flood");
    let served_in = started.elapsed();

    // Every silent connection is closed within the timeouts (10 s handshake,
    // 12 s without a certificate): the descriptors return to the baseline.
    wait_for("the silent connections to be closed", Duration::from_secs(30), || {
        collector.client_connections() <= baseline + 2
    });
    let (_, _, metrics) = http_get(&collector.http_addr, "/metrics", None);
    let failed: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("kosmos_collector_tls_handshakes_failed_total{reason=\"timeout\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(failed >= silent as u64, "handshake timeouts counted: {failed}\n{metrics}");
    assert!(
        metrics.contains("kosmos_collector_connections_closed_total{reason=\"unauthenticated_lifetime\"}"),
        "{metrics}"
    );
    eprintln!(
        "{silent} silent TCP + {} TLS connections: collector client connections {baseline} -> {during} -> {} ; node served in {served_in:?}",
        tls.len(),
        collector.client_connections()
    );
    drop(tcp);
    drop(tls);
}

/// Beyond `max_connections` a new connection is closed at once (and
/// counted), and at most one stream per node lives: a newer one replaces it.
#[test]
fn connection_cap_and_one_stream_per_node() {
    raise_nofile();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("collector");
    Collector::prepare(&dir);
    std::fs::write(dir.join("collector.toml"), "[limits]\nmax_connections = 50\nhandshake_timeout_secs = 30\n")
        .unwrap();
    let collector = Collector::start(&dir, 0);
    let (url, ca) = (collector.url(), ca(&collector));
    let token = collector.token("1h");
    let node = rt().block_on(enroll_raw(&url, &ca, &token, "n")).unwrap();
    let addr: std::net::SocketAddr = collector.addr.parse().unwrap();
    let held: Vec<_> = (0..80).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    // The 30 beyond the cap are closed by the collector: their read ends.
    let closed = held
        .iter()
        .filter(|s| {
            use std::io::Read;
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut b = [0u8; 1];
            matches!((&**s).read(&mut b), Ok(0))
        })
        .count();
    assert_eq!(closed, 30, "connections beyond max_connections = 50");
    let (_, _, metrics) = http_get(&collector.http_addr, "/metrics", None);
    assert!(metrics.contains("kosmos_collector_connections_refused_total{reason=\"max_connections\"} 30"), "{metrics}");
    drop(held);
    wait_for("slots to free", Duration::from_secs(10), || collector.client_connections() < 40);

    // Two streams of the same node: the older one is ended as replaced.
    let envs = chain_of(&node, 2);
    let (first, second) = rt().block_on(async {
        let id = Some((node.cert.as_str(), node.key_pem.as_str()));
        let mut c1 =
            kosmos_proto::v1::attestation_client::AttestationClient::new(channel_to(&url, &ca, id).await.unwrap());
        let (tx1, rx1) = tokio::sync::mpsc::channel(4);
        tx1.send(envs[0].clone()).await.unwrap();
        let mut in1 = c1.attest(tokio_stream::wrappers::ReceiverStream::new(rx1)).await.unwrap().into_inner();
        let ack1 = in1.message().await.unwrap().unwrap();
        assert_eq!(ack1.acked_seq, 1);
        let second = attest(channel_to(&url, &ca, id).await.unwrap(), vec![envs[1].clone()]).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), in1.message()).await.unwrap();
        drop(tx1);
        (first, second)
    });
    let replaced = first.expect_err("the older stream ends");
    assert_eq!(replaced.code(), tonic::Code::Aborted, "{replaced:?}");
    assert!(replaced.message().contains("replaced by a newer stream"), "{replaced:?}");
    assert_eq!(second[0].acked_seq, 2);
}

/// Rewrite a spooled envelope with a signature that no longer verifies (the
/// frame itself stays valid, as after a restore of another node's backup):
/// header = magic, format version, payload length, SHA-256 of the payload.
fn corrupt_spooled_signature(path: &std::path::Path) {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    let mut env = AttestationEnvelope::decode(&bytes[48..]).unwrap();
    env.signature[0] ^= 0xff;
    let payload = env.encode_to_vec();
    let mut out = Vec::new();
    out.extend_from_slice(&bytes[..8]);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&sha2::Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    std::fs::write(path, out).unwrap();
}

/// Issue 15, defect 2 (agent side): an envelope the collector refuses for
/// good does not wedge the spool. The agent moves it to the quarantine,
/// declares the hole with a signed gap marker naming why, says so in its
/// logs, and its chain goes on; the evidence still verifies.
#[test]
fn an_envelope_refused_for_good_is_set_aside_with_a_signed_gap_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("collector");
    let mut collector = Collector::start(&dir, 0);
    let port = collector.port();
    let agent = Agent::new(&tmp.path().join("agent"));
    let (code, out, err) = agent.enroll(&collector, &collector.token("1h"), &collector.fingerprint());
    assert_eq!(code, 0, "enroll: {out}{err}");
    agent.configure(&collector.url(), &repo().join("tests/fixtures/hardened"), "");
    let node = agent.node_id();
    // Collector down: the first report stays in the spool.
    collector.stop();
    let (code, _, _) =
        run(agent.cmd().args(["run", "--once", "--timeout", "3", "--config", agent.config.to_str().unwrap()]));
    assert_eq!(code, 1, "not delivered while the collector is down");
    corrupt_spooled_signature(&agent.state_dir.join("spool").join(format!("{:020}.env", 1)));

    let collector = Collector::start(&dir, port);
    let (code, _, err) = agent.run_once();
    assert_eq!(code, 0, "the refused envelope must not wedge delivery: {err}");
    assert!(err.contains("refused envelope 1 for good"), "said in the logs: {err}");
    let (code, _, err) = agent.run_once();
    assert_eq!(code, 0, "{err}");
    let quarantined: Vec<String> = std::fs::read_dir(agent.state_dir.join("spool/quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(quarantined, [format!("{:020}.env", 1)], "set aside, kept for inspection");
    let kinds = events(&collector, &node);
    assert!(kinds.starts_with(&["bad_signature".to_string(), "gap".to_string()]), "{kinds:?}");
    let declared = collector
        .store()
        .events(&node)
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "spool_overflow")
        .expect("the signed gap marker arrived");
    assert!(
        declared.detail.contains("seq 1..=1") && declared.detail.contains("refused by the collector"),
        "{declared:?}"
    );
    let stored: Vec<u64> = collector.store().envelopes(&node).unwrap().into_iter().map(|(s, _, _)| s).collect();
    assert_eq!(stored, [2, 3, 4]);
    // The auditor's check: the hole is explained by the node's signed marker.
    let bundle = tmp.path().join("b.tar.gz");
    let (code, _, err) =
        run(Collector::cmd(&dir).args(["evidence", "export", "--node", &node, "--out", bundle.to_str().unwrap()]));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(Collector::cmd(&dir).args(["evidence", "verify", bundle.to_str().unwrap()]));
    assert_eq!(code, 0, "verify: {out}{err}");
    assert!(out.contains("known gap"), "{out}");
}
