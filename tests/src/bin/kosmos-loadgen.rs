//! Load generator for the collector: N enrolled agents streaming signed
//! attestations over mTLS, each carrying a real report.
//!
//! It enrolls its nodes through the real Enroll RPC (tokens are created with
//! the collector's own store API in its data directory), then opens one
//! Attest stream per node and sends envelopes at a target total rate (or as
//! fast as acks allow with `--rate 0`). It prints sustained ingest, ack
//! latency percentiles and the collector's peak RSS (`VmHWM` of `--pid`).
//!
//! Bodies are what the agent sends: the report gzip-encoded with its signed
//! index digest. `--changed PCT` (default 5) is the share of envelopes whose
//! findings differ from the node's previous envelope (one finding's
//! observed value flips), which the collector must decode and re-index; the
//! rest repeat the previous report, as a healthy node's reports do.
//!
//! Envelopes are signed before the clock starts (in production each node
//! signs on its own CPU); with `--rate 0` each node has
//! `--max-per-node-per-sec` (default 60) × seconds of them, and a node that
//! runs out stops and is counted as `exhausted` (the figure is then a floor).
//!
//! kosmos-loadgen --data-dir D --url https://127.0.0.1:PORT --nodes 1000
//!                --seconds 20 --rate 1000 --report report.json --pid PID
//!                [--changed 5] [--max-per-node-per-sec 60] [--findings N]
//!
//! `--findings N` keeps the report's first N findings (the summary
//! recounted), for an envelope of a given size.
//!
//! `--compact` sends what the daemon sends to a collector that accepts
//! compact attestations: a round whose findings equal the node's latest
//! full report goes as a compact attestation naming it; a full report on
//! change and every `--checkpoint-rounds` rounds (default 288: a day at
//! the 5-minute interval).
//!
//! `--rounds N` sends exactly N envelopes per node after its first (no
//! time limit), and `--sim-interval-ms MS` dates envelope k of a node at
//! `start + k × MS`, ending now: a simulated stretch of time, compressed
//! (a week at 5 minutes is `--rounds 2016 --sim-interval-ms 300000`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kosmos_e2e::{body, channel_to};
use kosmos_proto::chain::{self, GENESIS_PREV_HASH};
use kosmos_proto::report::PackedReport;
use kosmos_proto::v1::attestation_client::AttestationClient;
use tokio::sync::Mutex;

struct Args {
    data_dir: String,
    url: String,
    nodes: usize,
    seconds: u64,
    rate: u64,
    report: String,
    pid: Option<u32>,
    changed_pct: f64,
    max_per_node_per_sec: usize,
    findings: Option<usize>,
    compact: bool,
    checkpoint_rounds: u64,
    rounds: Option<usize>,
    sim_interval_ms: Option<i64>,
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
        changed_pct: 5.0,
        max_per_node_per_sec: 60,
        findings: None,
        compact: false,
        checkpoint_rounds: 288,
        rounds: None,
        sim_interval_ms: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--compact" {
            a.compact = true;
            continue;
        }
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        match k.as_str() {
            "--data-dir" => a.data_dir = v,
            "--url" => a.url = v,
            "--nodes" => a.nodes = v.parse().map_err(|_| "--nodes")?,
            "--seconds" => a.seconds = v.parse().map_err(|_| "--seconds")?,
            "--rate" => a.rate = v.parse().map_err(|_| "--rate")?,
            "--report" => a.report = v,
            "--pid" => a.pid = Some(v.parse().map_err(|_| "--pid")?),
            "--findings" => a.findings = Some(v.parse().map_err(|_| "--findings")?),
            "--changed" => a.changed_pct = v.parse().map_err(|_| "--changed")?,
            "--max-per-node-per-sec" => a.max_per_node_per_sec = v.parse().map_err(|_| "--max-per-node-per-sec")?,
            "--checkpoint-rounds" => a.checkpoint_rounds = v.parse().map_err(|_| "--checkpoint-rounds")?,
            "--rounds" => a.rounds = Some(v.parse().map_err(|_| "--rounds")?),
            "--sim-interval-ms" => a.sim_interval_ms = Some(v.parse().map_err(|_| "--sim-interval-ms")?),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.data_dir.is_empty() || a.url.is_empty() || a.report.is_empty() {
        return Err("--data-dir, --url and --report are required".into());
    }
    Ok(a)
}

/// CPU time a process has used (user + system), from `/proc/PID/stat`
/// (in USER_HZ, 100 per second on Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// A `/proc/PID/status` memory figure (`VmHWM:` peak, `VmRSS:` now), KiB.
fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
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
    let mut parsed = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&args.report).unwrap_or_default())
        .unwrap_or_default();
    // `--findings N`: the first N findings, with the summary recounted.
    if let (Some(n), Some(results)) = (args.findings, parsed["results"].as_array_mut()) {
        results.truncate(n);
        let mut summary = serde_json::Map::new();
        for status in ["pass", "fail", "error", "not_applicable", "waived"] {
            let count = results.iter().filter(|r| r["status"] == status).count();
            summary.insert(status.to_string(), count.into());
        }
        parsed["summary"] = summary.into();
    }
    let report = serde_json::to_vec(&parsed).unwrap_or_default();
    let findings = parsed["results"].as_array().map_or(0, Vec::len);
    // The two reports a node alternates between when its findings change.
    let mut changed = parsed.clone();
    if let Some(first) = changed["results"].get_mut(0) {
        first["observed"] = serde_json::json!("changed by kosmos-loadgen");
    }
    let variants: Arc<[PackedReport; 2]> = Arc::new([
        kosmos_proto::report::pack(&report),
        kosmos_proto::report::pack(&serde_json::to_vec(&changed).unwrap_or_default()),
    ]);
    let wire_bytes = variants[0].bytes.len();

    let t0 = Instant::now();
    let nodes = match kosmos_e2e::enroll_fleet(std::path::Path::new(&args.data_dir), &args.url, &ca, args.nodes).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("kosmos-loadgen: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("enrolled {} nodes in {:.1}s", nodes.len(), t0.elapsed().as_secs_f64());

    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicU64::new(0));
    let per_node_interval =
        if args.rate == 0 { None } else { Some(Duration::from_secs_f64(args.nodes as f64 / args.rate as f64)) };
    // Every node connects and sends its first report before the clock
    // starts: the first report of a node is indexed in full (every finding
    // is new), and 1,000 of them at once measure start-up, not steady state.
    let warm = Arc::new(tokio::sync::Barrier::new(nodes.len() + 1));
    let seconds = args.seconds;
    let mut tasks = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        let (url, ca, variants) = (args.url.clone(), ca.clone(), variants.clone());
        let change_p = args.changed_pct / 100.0;
        let (latencies, acked, errors, warm) = (latencies.clone(), acked.clone(), errors.clone(), warm.clone());
        let n_nodes = args.nodes;
        let budget = 1 + match (args.rounds, per_node_interval) {
            (Some(n), _) => n,
            (None, Some(iv)) => (seconds as f64 / iv.as_secs_f64() * 1.1).ceil() as usize + 2,
            (None, None) => usize::try_from(seconds).unwrap_or(0) * args.max_per_node_per_sec,
        };
        let (compact, checkpoint_rounds, sim_interval_ms) =
            (args.compact, args.checkpoint_rounds, args.sim_interval_ms);
        let fixed_rounds = args.rounds.is_some();
        let exhausted = exhausted.clone();
        tasks.push(tokio::spawn(async move {
            // Sign every envelope this node will send before the clock
            // starts: in production the nodes sign on their own CPUs, which
            // this machine would otherwise have to share with the collector.
            let mut rng = fastrand::Rng::with_seed(i as u64);
            let mut variant = 0usize;
            let mut prev = GENESIS_PREV_HASH;
            let mut envelopes = Vec::with_capacity(budget);
            let sim_start = sim_interval_ms.map(|ms| chrono::Utc::now().timestamp_millis() - ms * budget as i64);
            // (seq, digest) of the node's latest full report.
            let mut baseline: Option<(u64, [u8; 32])> = None;
            for seq in 1..=budget as u64 {
                let mut changed = false;
                if seq > 1 && rng.f64() < change_p {
                    variant = 1 - variant;
                    changed = true;
                }
                let mut b = body(&node.id, seq, prev, &[]);
                if let (Some(start), Some(ms)) = (sim_start, sim_interval_ms) {
                    b.created_at_unix_ms = start + ms * seq as i64;
                }
                b.trigger = kosmos_proto::v1::Trigger::Schedule as i32;
                let due = baseline.is_none_or(|(s, _)| changed || seq - s >= checkpoint_rounds);
                match baseline {
                    Some((same_as, digest)) if compact && !due => {
                        b = kosmos_proto::compact::compact_of(
                            &b,
                            kosmos_proto::compact::Baseline { seq: same_as, digest },
                        );
                        b.seq = seq;
                        b.prev_hash = prev.to_vec();
                    }
                    _ => {
                        let packed = variants[variant].clone();
                        baseline = packed.index_sha256.map(|d| (seq, d));
                        packed.into_body(&mut b);
                    }
                }
                let env = chain::seal(&node.key, &b);
                prev = chain::body_hash(&env.body);
                envelopes.push(env);
                if seq % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let mut envelopes = envelopes.into_iter();
            let mut seq = 0u64;
            let exchange = async |tx: &tokio::sync::mpsc::Sender<_>,
                                  inbound: &mut tonic::Streaming<kosmos_proto::v1::Ack>,
                                  seq: u64,
                                  env|
                   -> Option<Duration> {
                let sent = Instant::now();
                tx.send(env).await.ok()?;
                match inbound.message().await {
                    Ok(Some(ack)) if ack.error.is_empty() && ack.acked_seq == seq => Some(sent.elapsed()),
                    _ => None,
                }
            };
            let connected = async {
                let ch = channel_to(&url, &ca, Some((&node.cert, &node.key_pem))).await.ok()?;
                let mut client = AttestationClient::new(ch);
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let resp = client.attest(tokio_stream::wrappers::ReceiverStream::new(rx)).await.ok()?;
                let mut inbound = resp.into_inner();
                seq += 1;
                exchange(&tx, &mut inbound, seq, envelopes.next()?).await?;
                Some((tx, inbound))
            }
            .await;
            warm.wait().await;
            let Some((tx, mut inbound)) = connected else {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let deadline = if fixed_rounds {
                Instant::now() + Duration::from_secs(86_400 * 365)
            } else {
                Instant::now() + Duration::from_secs(seconds)
            };
            // Spread the nodes' sends over one interval.
            if let Some(iv) = per_node_interval {
                tokio::time::sleep(iv.mul_f64(i as f64 / n_nodes as f64)).await;
            }
            let mut next = tokio::time::Instant::now();
            while Instant::now() < deadline {
                seq += 1;
                let Some(env) = envelopes.next() else {
                    if !fixed_rounds {
                        exhausted.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                };
                match exchange(&tx, &mut inbound, seq, env).await {
                    Some(latency) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        latencies.lock().await.push(latency.as_secs_f64() * 1000.0);
                    }
                    None => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                if let Some(iv) = per_node_interval {
                    next += iv;
                    if next.into_std() >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(next).await;
                }
            }
        }));
    }
    let warm_start = Instant::now();
    warm.wait().await;
    eprintln!("first report of every node stored in {:.1}s (not measured)", warm_start.elapsed().as_secs_f64());
    let started = Instant::now();
    let cpu_before = args.pid.and_then(cpu_seconds);
    let own_cpu_before = cpu_seconds(std::process::id());
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let collector_cpu = cpu_before.zip(args.pid.and_then(cpu_seconds)).map(|(a, b)| b - a);
    let own_cpu = own_cpu_before.zip(cpu_seconds(std::process::id())).map(|(a, b)| b - a);
    let mut lat = latencies.lock().await.clone();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    let n = acked.load(Ordering::Relaxed);
    println!(
        "compact={} nodes={} findings/envelope={} report_bytes={} wire_bytes={} changed={}% target_rate={} acked={} errors={} exhausted={} elapsed={:.1}s ingest={:.0} envelopes/s ack_p50={:.1}ms ack_p99={:.1}ms collector_cpu={} loadgen_cpu={} collector_peak_rss={} collector_rss_at_end={}",
        args.compact,
        args.nodes,
        findings,
        report.len(),
        wire_bytes,
        args.changed_pct,
        if args.rate == 0 { "max".to_string() } else { args.rate.to_string() },
        n,
        errors.load(Ordering::Relaxed),
        exhausted.load(Ordering::Relaxed),
        elapsed,
        n as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        // Cores the collector used, and its CPU time per acked envelope.
        collector_cpu.map_or("?".to_string(), |c| format!(
            "{:.2}cores/{:.0}us_per_envelope",
            c / elapsed,
            c * 1e6 / n.max(1) as f64
        )),
        own_cpu.map_or("?".to_string(), |c| format!("{:.2}cores", c / elapsed)),
        args.pid.and_then(|p| vm_kib(p, "VmHWM:")).map_or("?".to_string(), |k| format!("{:.0}MiB", k as f64 / 1024.0)),
        args.pid.and_then(|p| vm_kib(p, "VmRSS:")).map_or("?".to_string(), |k| format!("{:.0}MiB", k as f64 / 1024.0)),
    );
}
