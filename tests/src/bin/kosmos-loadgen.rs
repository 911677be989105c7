//! Load generator for the collector: N enrolled agents streaming signed
//! attestations over mTLS, each carrying a real report.
//!
//! It enrolls its nodes through the real Enroll RPC (tokens are created with
//! the collector's own store API in its data directory), then opens one
//! Attest stream per node and sends envelopes at a target total rate (or as
//! fast as acks allow with `--rate 0`). It prints sustained ingest, ack
//! latency percentiles and the collector's peak RSS (`VmHWM` of `--pid`).
//!
//! kosmos-loadgen --data-dir D --url https://127.0.0.1:PORT --nodes 1000
//!                --seconds 20 --rate 1000 --report report.json --pid PID

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use kosmos_collector::store::Store;
use kosmos_e2e::{body, channel_to};
use kosmos_proto::chain::{self, GENESIS_PREV_HASH};
use kosmos_proto::v1::EnrollRequest;
use kosmos_proto::v1::attestation_client::AttestationClient;
use kosmos_proto::v1::enrollment_client::EnrollmentClient;
use rcgen::{CertificateParams, KeyPair, PKCS_ED25519};
use tokio::sync::Mutex;

struct Args {
    data_dir: String,
    url: String,
    nodes: usize,
    seconds: u64,
    rate: u64,
    report: String,
    pid: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        data_dir: String::new(),
        url: String::new(),
        nodes: 100,
        seconds: 10,
        rate: 0,
        report: String::new(),
        pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        match k.as_str() {
            "--data-dir" => a.data_dir = v,
            "--url" => a.url = v,
            "--nodes" => a.nodes = v.parse().map_err(|_| "--nodes")?,
            "--seconds" => a.seconds = v.parse().map_err(|_| "--seconds")?,
            "--rate" => a.rate = v.parse().map_err(|_| "--rate")?,
            "--report" => a.report = v,
            "--pid" => a.pid = Some(v.parse().map_err(|_| "--pid")?),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.data_dir.is_empty() || a.url.is_empty() || a.report.is_empty() {
        return Err("--data-dir, --url and --report are required".into());
    }
    Ok(a)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

struct Node {
    id: String,
    cert: String,
    key_pem: String,
    key: SigningKey,
}

async fn enroll(url: &str, ca: &str, token: &str) -> Result<Node, String> {
    let kp = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| e.to_string())?;
    let csr = CertificateParams::default().serialize_request(&kp).map_err(|e| e.to_string())?;
    let ch = channel_to(url, ca, None).await.map_err(|e| e.to_string())?;
    let resp = EnrollmentClient::new(ch)
        .enroll(EnrollRequest {
            token: token.to_string(),
            csr_pem: csr.pem().map_err(|e| e.to_string())?,
            hostname: "loadgen".into(),
            machine_id: String::new(),
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let key_pem = kp.serialize_pem();
    let key = SigningKey::from_pkcs8_pem(&key_pem).map_err(|e| e.to_string())?;
    Ok(Node { id: resp.node_id, cert: resp.certificate_pem, key_pem, key })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kosmos-loadgen: {e}");
            std::process::exit(2);
        }
    };
    let ca = std::fs::read_to_string(format!("{}/ca.pem", args.data_dir)).unwrap_or_default();
    let report = std::fs::read(&args.report).unwrap_or_default();
    let findings = serde_json::from_slice::<serde_json::Value>(&report)
        .ok()
        .and_then(|v| v["results"].as_array().map(Vec::len))
        .unwrap_or(0);

    // Tokens straight into the store: the bench measures ingest, not token creation.
    let mut tokens = Vec::new();
    {
        let mut store = match kosmos_collector::store::sqlite::SqliteStore::open(
            &std::path::Path::new(&args.data_dir).join("collector.db"),
        ) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("kosmos-loadgen: {e}");
                std::process::exit(2);
            }
        };
        let now = kosmos_collector::store::now_ms();
        for i in 0..args.nodes {
            let t = format!("loadgen-{now}-{i}");
            if let Err(e) = store.create_token(&kosmos_collector::service::token_hash(&t), now, now + 3_600_000) {
                eprintln!("kosmos-loadgen: {e}");
                std::process::exit(2);
            }
            tokens.push(t);
        }
    }
    let t0 = Instant::now();
    let mut nodes = Vec::new();
    for t in &tokens {
        match enroll(&args.url, &ca, t).await {
            Ok(n) => nodes.push(n),
            Err(e) => {
                eprintln!("kosmos-loadgen: enroll: {e}");
                std::process::exit(1);
            }
        }
    }
    eprintln!("enrolled {} nodes in {:.1}s", nodes.len(), t0.elapsed().as_secs_f64());

    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let per_node_interval =
        if args.rate == 0 { None } else { Some(Duration::from_secs_f64(args.nodes as f64 / args.rate as f64)) };
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        let (url, ca, report) = (args.url.clone(), ca.clone(), report.clone());
        let (latencies, acked, errors) = (latencies.clone(), acked.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(ch) = channel_to(&url, &ca, Some((&node.cert, &node.key_pem))).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut client = AttestationClient::new(ch);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let Ok(resp) = client.attest(tokio_stream::wrappers::ReceiverStream::new(rx)).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut inbound = resp.into_inner();
            let mut prev = GENESIS_PREV_HASH;
            let mut seq = 0u64;
            // Spread the nodes' first sends over one interval.
            if let Some(iv) = per_node_interval {
                tokio::time::sleep(iv.mul_f64(i as f64 / args.nodes as f64)).await;
            }
            let mut next = tokio::time::Instant::now();
            while Instant::now() < deadline {
                seq += 1;
                let env = chain::seal(&node.key, &body(&node.id, seq, prev, &report));
                prev = chain::body_hash(&env.body);
                let sent = Instant::now();
                if tx.send(env).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                match inbound.message().await {
                    Ok(Some(ack)) if ack.error.is_empty() && ack.acked_seq == seq => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        latencies.lock().await.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                if let Some(iv) = per_node_interval {
                    next += iv;
                    tokio::time::sleep_until(next).await;
                }
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().await.clone();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    let n = acked.load(Ordering::Relaxed);
    println!(
        "nodes={} findings/envelope={} target_rate={} acked={} errors={} elapsed={:.1}s ingest={:.0} envelopes/s ack_p50={:.1}ms ack_p99={:.1}ms collector_peak_rss={}",
        args.nodes,
        findings,
        if args.rate == 0 { "max".to_string() } else { args.rate.to_string() },
        n,
        errors.load(Ordering::Relaxed),
        elapsed,
        n as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        args.pid.and_then(vm_hwm_kib).map_or("?".to_string(), |k| format!("{:.0}MiB", k as f64 / 1024.0)),
    );
}
