//! A fleet of simulated agents against a real collector: memory per
//! connected agent, ack latency at the fleet's steady rate, and the
//! reconnect storm after a collector restart.
//!
//! It starts the collector itself (`--collector BIN --data-dir D`), records
//! its RSS with no agent connected, enrolls `--nodes N` nodes through the
//! real Enroll RPC, and runs each as an agent does: one long-lived mTLS
//! connection with one Attest stream, one envelope every `--interval-secs`
//! (the first spread over one interval), every envelope kept until acked and
//! resent after a reconnect, and reconnects with the agent's exponential
//! backoff with full jitter (`[min, min(max, min·2^(n+1))]`, 500 ms to 60 s).
//! Envelopes carry the report of `--report` as the daemon sends it (gzip,
//! signed index digest) and are signed before the clock starts.
//!
//! Phases:
//! 1. steady: every node connected; ack latency of the envelopes sent during
//!    `--seconds`, the collector's RSS and CPU;
//! 2. storm (`--storm`): the collector is killed (SIGKILL), restarted on the
//!    same port after `--down-secs`, and the time until every node is
//!    connected again and every envelope it produced is acked is measured.
//!
//! kosmos-fleetsim --collector target/release/kosmos-collector --data-dir D
//!                 --nodes 10000 --interval-secs 300 --seconds 120
//!                 --report report.json [--storm --down-secs 10]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kosmos_e2e::{RawNode, body, channel_to};
use kosmos_proto::chain::{self, GENESIS_PREV_HASH};
use kosmos_proto::report::PackedReport;
use kosmos_proto::v1::AttestationEnvelope;
use kosmos_proto::v1::attestation_client::AttestationClient;
use tokio::sync::{Mutex, watch};

struct Args {
    collector: PathBuf,
    data_dir: PathBuf,
    nodes: usize,
    interval: Duration,
    seconds: u64,
    report: PathBuf,
    storm: bool,
    /// Collector replicas sharing the store and the CA (the store must be
    /// PostgreSQL for more than one); node i talks to replica i mod N.
    replicas: usize,
    down: Duration,
    /// How long a simulated agent keeps its stream open with nothing to send
    /// (the agent's `stream_linger_secs`); None: for good.
    linger: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        collector: PathBuf::new(),
        data_dir: PathBuf::new(),
        nodes: 1000,
        interval: Duration::from_secs(300),
        seconds: 60,
        report: PathBuf::new(),
        storm: false,
        replicas: 1,
        down: Duration::from_secs(10),
        linger: Some(Duration::from_secs(30)),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--storm" {
            a.storm = true;
            continue;
        }
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |name: &str| v.parse::<u64>().map_err(|_| format!("{name}: not a number"));
        match k.as_str() {
            "--collector" => a.collector = v.into(),
            "--data-dir" => a.data_dir = v.into(),
            "--nodes" => a.nodes = num("--nodes")? as usize,
            "--interval-secs" => a.interval = Duration::from_secs(num("--interval-secs")?.max(1)),
            "--seconds" => a.seconds = num("--seconds")?,
            "--report" => a.report = v.into(),
            "--replicas" => a.replicas = num("--replicas")?.clamp(1, 8) as usize,
            "--down-secs" => a.down = Duration::from_secs(num("--down-secs")?),
            "--linger-secs" => {
                a.linger = match num("--linger-secs")? {
                    0 => None,
                    l => Some(Duration::from_secs(l)),
                }
            }
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.collector.as_os_str().is_empty() || a.data_dir.as_os_str().is_empty() || a.report.as_os_str().is_empty() {
        return Err("--collector, --data-dir and --report are required".into());
    }
    if a.storm && a.replicas > 1 {
        return Err("--storm runs with one replica".into());
    }
    Ok(a)
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = s.rfind(')').and_then(|i| s.get(i + 2..)) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (t(11) + t(12)) as f64 / 100.0
}

/// The collector process, started as `systemd/kosmos-collector.service`
/// runs it.
fn start_collector(a: &Args, port: u16) -> Result<(Child, String), String> {
    start_collector_in(a, &a.data_dir, port)
}

/// Replica `r` (1, 2, …) of the collector in `data_dir`: its own data
/// directory, the first one's configuration (the same store) and its CA
/// and server certificate.
fn start_replica(a: &Args, r: usize) -> Result<(Child, String), String> {
    let dir = a.data_dir.join(format!("replica-{r}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let base = std::fs::read_to_string(a.data_dir.join("collector.toml")).unwrap_or_default();
    let toml = format!("{base}\n{}", kosmos_e2e::shared_pki_toml(&a.data_dir));
    std::fs::write(dir.join("collector.toml"), toml).map_err(|e| format!("{}: {e}", dir.display()))?;
    start_collector_in(a, &dir, 0)
}

fn start_collector_in(a: &Args, data_dir: &std::path::Path, port: u16) -> Result<(Child, String), String> {
    let addr_file = data_dir.join("grpc.addr");
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new(&a.collector)
        .arg("--config")
        .arg(data_dir.join("collector.toml"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--grpc-listen", &format!("127.0.0.1:{port}"), "--http-listen", "127.0.0.1:0"])
        .env("KOSMOS_COLLECTOR_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", a.collector.display()))?;
    let mut child = child;
    for _ in 0..300 {
        if let Ok(s) = std::fs::read_to_string(&addr_file)
            && !s.trim().is_empty()
        {
            return Ok((child, s.trim().to_string()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err("the collector did not write grpc.addr within 15 s".into())
}

fn exit_with(e: &str) -> ! {
    eprintln!("kosmos-fleetsim: {e}");
    std::process::exit(1);
}

/// The agent's reconnect backoff (agent/src/daemon/sender.rs), for the simulation.
struct Backoff {
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    const MIN_MS: u64 = 500;
    const MAX_MS: u64 = 60_000;
    fn next(&mut self) -> Duration {
        let ceiling = Self::MIN_MS.saturating_mul(1 << self.attempt.saturating_add(1).min(20)).min(Self::MAX_MS);
        self.attempt += 1;
        Duration::from_millis(self.rng.u64(Self::MIN_MS..=ceiling))
    }
}

#[derive(Default)]
struct Stats {
    latencies_ms: Mutex<Vec<f64>>,
    acked: AtomicU64,
    refused: AtomicU64,
    connected: AtomicUsize,
    reconnects: AtomicU64,
    /// Envelopes produced by all nodes so far.
    produced: AtomicU64,
    /// Nodes connected again after the collector's restart with every
    /// envelope they produced acked.
    restored: AtomicUsize,
}

struct Node {
    raw: RawNode,
    envelopes: Vec<AttestationEnvelope>,
}

/// The collector's life as the simulated agents see it: `Up(n)` is its
/// n-th start (0 the first), `Down` a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collector {
    Up(u32),
    Down,
}

/// One simulated agent: produce on the interval, deliver over one
/// connection (a stream while there is something to deliver and for
/// `linger` after, or for good when `linger` is None), reconnect with the
/// agent's backoff, resend what is unacked.
#[allow(clippy::too_many_arguments)]
async fn agent(
    i: usize,
    node: Node,
    url: Arc<String>,
    ca: Arc<String>,
    interval: Duration,
    n_nodes: usize,
    stats: Arc<Stats>,
    mut life: watch::Receiver<Collector>,
    linger: Option<Duration>,
) {
    let Node { raw, envelopes } = node;
    let total = envelopes.len();
    let produced = Arc::new(AtomicUsize::new(1)); // the first report at start
    stats.produced.fetch_add(1, Ordering::Relaxed);
    // Production: one envelope per interval, the first spread over one.
    {
        let (produced, stats) = (produced.clone(), stats.clone());
        tokio::spawn(async move {
            tokio::time::sleep(interval.mul_f64(i as f64 / n_nodes as f64)).await;
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                if produced.load(Ordering::Relaxed) < total {
                    produced.fetch_add(1, Ordering::Relaxed);
                    stats.produced.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let mut backoff = Backoff { attempt: 0, rng: fastrand::Rng::with_seed(i as u64) };
    let mut acked = 0usize; // envelopes acked (a prefix)
    // The collector start this node has caught up with (counted once).
    let mut restored: Option<u32> = None;
    loop {
        let start = *life.borrow();
        let acked_before = acked;
        let session: Result<(), String> = async {
            let Collector::Up(start_no) = start else { return Err("collector down".into()) };
            let ch = channel_to(&url, &ca, Some((&raw.cert, &raw.key_pem))).await.map_err(|e| e.to_string())?;
            stats.connected.fetch_add(1, Ordering::Relaxed);
            let result: Result<(), String> = 'connection: loop {
                // Wait for something to deliver (or the collector's crash,
                // which a real agent sees at once: the socket is reset).
                while acked >= produced.load(Ordering::Relaxed) {
                    if start_no > 0 && restored != Some(start_no) {
                        restored = Some(start_no);
                        stats.restored.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = life.changed() => {
                            if *life.borrow() != start {
                                break 'connection Err("collector crashed".into());
                            }
                        }
                    }
                }
                let mut client = AttestationClient::new(ch.clone());
                let (tx, rx) = tokio::sync::mpsc::channel::<AttestationEnvelope>(4);
                let mut inbound = match client.attest(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
                    Ok(r) => r.into_inner(),
                    Err(e) => break 'connection Err(e.to_string()),
                };
                let mut sent = acked;
                let mut sent_at: std::collections::VecDeque<Instant> = Default::default();
                let mut idle_since = Instant::now();
                loop {
                    // Send what is produced and not yet sent (at most 4 in flight).
                    while sent < produced.load(Ordering::Relaxed) && sent - acked < 4 {
                        if tx.send(envelopes[sent].clone()).await.is_err() {
                            break;
                        }
                        sent_at.push_back(Instant::now());
                        sent += 1;
                    }
                    if acked < produced.load(Ordering::Relaxed) {
                        idle_since = Instant::now();
                    } else {
                        if start_no > 0 && restored != Some(start_no) {
                            restored = Some(start_no);
                            stats.restored.fetch_add(1, Ordering::Relaxed);
                        }
                        if linger.is_some_and(|l| idle_since.elapsed() >= l) {
                            break; // nothing left: end the stream, keep the connection
                        }
                    }
                    tokio::select! {
                        m = inbound.message() => match m {
                            Ok(Some(ack)) if ack.error.is_empty() => {
                                let newly = (ack.acked_seq as usize).saturating_sub(acked);
                                let now = Instant::now();
                                let mut lat = stats.latencies_ms.lock().await;
                                for _ in 0..newly {
                                    if let Some(t) = sent_at.pop_front() {
                                        lat.push((now - t).as_secs_f64() * 1000.0);
                                    }
                                }
                                drop(lat);
                                acked = acked.max(ack.acked_seq as usize);
                                stats.acked.fetch_add(newly as u64, Ordering::Relaxed);
                            }
                            Ok(Some(ack)) => {
                                stats.refused.fetch_add(1, Ordering::Relaxed);
                                break 'connection Err(format!("refused: {}", ack.error));
                            }
                            Ok(None) => break 'connection Err("stream closed".into()),
                            Err(s) => break 'connection Err(s.message().to_string()),
                        },
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = life.changed() => {
                            if *life.borrow() != start {
                                break 'connection Err("collector crashed".into());
                            }
                        }
                    }
                }
                drop(tx);
                // The collector ends its side once ours is closed.
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
            };
            stats.connected.fetch_sub(1, Ordering::Relaxed);
            result
        }
        .await;
        let _ = session;
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
        // As the agent: an ack means the link works, so start over from min.
        if acked > acked_before {
            backoff.attempt = 0;
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kosmos-fleetsim: {e}");
            std::process::exit(2);
        }
    };
    kosmos_e2e::raise_nofile();
    std::fs::create_dir_all(&args.data_dir).unwrap_or_default();
    let toml = args.data_dir.join("collector.toml");
    if !toml.exists() {
        let _ = std::fs::write(&toml, format!("report_interval_secs = {}\n", args.interval.as_secs().max(10)));
    }
    let (mut collector, addr) = start_collector(&args, 0).unwrap_or_else(|e| exit_with(&e));
    let port: u16 = addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let url = Arc::new(format!("https://{addr}"));
    let mut replicas: Vec<(Child, Arc<String>)> = Vec::new();
    for r in 1..args.replicas {
        let (child, addr) = start_replica(&args, r).unwrap_or_else(|e| exit_with(&e));
        replicas.push((child, Arc::new(format!("https://{addr}"))));
    }
    let ca = Arc::new(std::fs::read_to_string(args.data_dir.join("ca.pem")).unwrap_or_default());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = vm_kib(collector.id(), "VmRSS:");

    let t0 = Instant::now();
    let nodes = match kosmos_e2e::enroll_fleet(&args.data_dir, &url, &ca, args.nodes).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("kosmos-fleetsim: {e}");
            let _ = collector.kill();
            std::process::exit(1);
        }
    };
    eprintln!("enrolled {} nodes in {:.1}s", nodes.len(), t0.elapsed().as_secs_f64());
    // Envelopes for the whole run, signed now.
    let report = std::fs::read(&args.report).unwrap_or_default();
    let packed: PackedReport = kosmos_proto::report::pack(&report);
    // Five minutes of slack for the fleet to catch up after the first
    // reports (the steady phase starts only then: 10,000 first reports take
    // minutes), more with a storm.
    let run_secs = args.seconds + 300 + if args.storm { args.down.as_secs() + 180 } else { 0 };
    let per_node = 2 + (run_secs as f64 / args.interval.as_secs_f64()).ceil() as usize;
    let mut fleet = Vec::with_capacity(nodes.len());
    for raw in nodes {
        let mut prev = GENESIS_PREV_HASH;
        let envelopes = (1..=per_node as u64)
            .map(|seq| {
                let mut b = body(&raw.id, seq, prev, &[]);
                packed.clone().into_body(&mut b);
                let e = chain::seal(&raw.key, &b);
                prev = chain::body_hash(&e.body);
                e
            })
            .collect();
        fleet.push(Node { raw, envelopes });
    }
    let stats = Arc::new(Stats::default());
    let (life_tx, life_rx) = watch::channel(Collector::Up(0));
    let n = fleet.len();
    let t_connect = Instant::now();
    for (i, node) in fleet.into_iter().enumerate() {
        // Node i talks to replica i mod N.
        let replica_url = match i % args.replicas {
            0 => url.clone(),
            r => replicas[r - 1].1.clone(),
        };
        tokio::spawn(agent(
            i,
            node,
            replica_url,
            ca.clone(),
            args.interval,
            n,
            stats.clone(),
            life_rx.clone(),
            args.linger,
        ));
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    while stats.connected.load(Ordering::Relaxed) < n && t_connect.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{} of {n} connected in {:.1}s",
        stats.connected.load(Ordering::Relaxed),
        t_connect.elapsed().as_secs_f64()
    );
    // Every node's first report is indexed in full (every finding is new):
    // that is start-up, not the steady state, so wait for it.
    while stats.acked.load(Ordering::Relaxed) < n as u64 && t_connect.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("first report of every node acked after {:.1}s (not measured)", t_connect.elapsed().as_secs_f64());
    // The first reports delayed what came after them: wait until the fleet
    // has caught up, so the steady phase measures the steady state.
    // Caught up: no more outstanding than one second of the fleet's
    // production. (Not zero: an agent notices a new report within 250 ms,
    // so at 333 envelopes/s some are always on their way.)
    let one_second = (n as u64 / args.interval.as_secs().max(1)).max(1);
    while stats.produced.load(Ordering::Relaxed).saturating_sub(stats.acked.load(Ordering::Relaxed)) > one_second
        && t_connect.elapsed() < Duration::from_secs(1200)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("caught up after {:.1}s", t_connect.elapsed().as_secs_f64());

    // Steady phase.
    stats.latencies_ms.lock().await.clear();
    let acked_before = stats.acked.load(Ordering::Relaxed);
    let cpu_before = cpu_seconds(collector.id());
    let pids: Vec<u32> = replicas.iter().map(|(c, _)| c.id()).collect();
    let replica_cpu_before: Vec<f64> = pids.iter().map(|&p| cpu_seconds(p)).collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(collector.id()) - cpu_before;
    let rss = vm_kib(collector.id(), "VmRSS:");
    let hwm = vm_kib(collector.id(), "VmHWM:");
    let mut lat = stats.latencies_ms.lock().await.clone();
    lat.sort_by(f64::total_cmp);
    let acked = stats.acked.load(Ordering::Relaxed) - acked_before;
    // Every replica's CPU (cores) and RSS (MiB), the first one first.
    let per_replica: Vec<String> = std::iter::once(format!("{:.2}cores/{}MiB", cpu / elapsed, rss / 1024))
        .chain(pids.iter().zip(&replica_cpu_before).map(|(&p, &before)| {
            format!("{:.2}cores/{}MiB", (cpu_seconds(p) - before) / elapsed, vm_kib(p, "VmRSS:") / 1024)
        }))
        .collect();
    let behind = stats.produced.load(Ordering::Relaxed).saturating_sub(stats.acked.load(Ordering::Relaxed));
    println!("replicas: {} [{}] produced_not_acked_at_end={behind}", args.replicas, per_replica.join(", "));
    println!(
        "steady: nodes={n} connected={} streams_linger={} interval={}s elapsed={elapsed:.0}s acked={acked} rate={:.1}/s ack_p50={:.1}ms ack_p99={:.1}ms refused={} collector_cpu={:.2}cores collector_rss_idle={}MiB collector_rss={}MiB collector_peak_rss={}MiB per_connected_agent={:.1}KiB",
        stats.connected.load(Ordering::Relaxed),
        args.linger.map_or("forever".to_string(), |l| format!("{}s", l.as_secs())),
        args.interval.as_secs(),
        acked as f64 / elapsed,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        stats.refused.load(Ordering::Relaxed),
        cpu / elapsed,
        rss_idle / 1024,
        rss / 1024,
        hwm / 1024,
        (rss.saturating_sub(rss_idle)) as f64 / n.max(1) as f64,
    );

    if args.storm {
        // Kill the collector (a crash: every agent sees its socket reset and
        // starts its backoff), restart it on the same port after the outage,
        // and time the fleet's return: every node connected again with every
        // envelope it produced acked.
        let _ = collector.kill();
        let _ = collector.wait();
        let _ = life_tx.send(Collector::Down);
        tokio::time::sleep(args.down).await;
        let (c2, _) = start_collector(&args, port).unwrap_or_else(|e| exit_with(&e));
        collector = c2;
        let up_at = Instant::now();
        let cpu_before = cpu_seconds(collector.id());
        let _ = life_tx.send(Collector::Up(1));
        let deadline = up_at + Duration::from_secs(600);
        let mut all_connected = None;
        while Instant::now() < deadline {
            if all_connected.is_none() && stats.connected.load(Ordering::Relaxed) >= n {
                all_connected = Some(up_at.elapsed());
            }
            if stats.restored.load(Ordering::Relaxed) >= n && all_connected.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = up_at.elapsed().as_secs_f64();
        println!(
            "storm: nodes={n} down={}s all_connected_after={} all_caught_up_after={took:.1}s restored={} refused={} collector_cpu={:.2}cores collector_peak_rss={}MiB",
            args.down.as_secs(),
            all_connected.map_or("never".to_string(), |d| format!("{:.1}s", d.as_secs_f64())),
            stats.restored.load(Ordering::Relaxed),
            stats.refused.load(Ordering::Relaxed),
            (cpu_seconds(collector.id()) - cpu_before) / took,
            vm_kib(collector.id(), "VmHWM:") / 1024,
        );
    }
    // A clean stop at the end (SIGTERM), as systemd stops it.
    let _ =
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(collector.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && matches!(collector.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = collector.kill();
    let _ = collector.wait();
    for (mut c, _) in replicas {
        let _ = c.kill();
        let _ = c.wait();
    }
}
