//! `kosmos-node-agent run`: the long-running attestation daemon.
//!
//! Two tasks share the spool. The producer audits the host (the full
//! profile, in `spawn_blocking`) at start, at every jittered interval, and
//! about two seconds after the last change to a watched file, and turns each
//! report into a signed, chained envelope in the spool. The sender streams
//! the spool to the collector (see [`crate::daemon::sender`]). Audits are
//! serialized: changes arriving during an audit coalesce into one re-run.
//! A file change re-runs the full profile (the body's `families` stays
//! empty), which keeps every attestation a complete picture of the node.
//!
//! systemd integration: READY=1 once configuration, identity and spool are
//! loaded; WATCHDOG=1 at half the WATCHDOG_USEC period; STATUS= lines from
//! [`StatusBoard`]. SIGTERM/SIGINT (or the caller's shutdown future) stop
//! the schedule, then unacked envelopes are flushed for up to
//! `shutdown_grace_secs` before the stream is closed.

pub mod config;
pub mod enroll;
pub mod file_watch;
pub mod identity;
pub mod sender;
pub mod spool;
pub mod status;
pub mod systemd;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use kosmos_proto::v1::{AttestationBody, Trigger};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::audit::checks::Registry;
use crate::audit::engine::AGENT_VERSION;
use crate::audit::host::Host;
use crate::audit::profile::Profile;
use crate::audit_run::AuditRequest;
use crate::daemon::config::Config;
use crate::daemon::file_watch::FileWatch;
use crate::daemon::sender::{AckedAtLeast, Backoff, Drained, Endpoints, Forever, Sender, SessionEnd};
use crate::daemon::spool::{CompactPolicy, Spool};
use crate::daemon::status::StatusBoard;

/// Quiet time after the last file change before re-auditing.
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// Longest a burst of changes can postpone the re-audit.
const DEBOUNCE_MAX: Duration = Duration::from_secs(10);

/// Errors that stop the daemon before or while it runs.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("not enrolled: {path}: {why} (run `kosmos-node-agent enroll` first)")]
    NotEnrolled { path: String, why: String },
    #[error("node identity is inconsistent: {0}")]
    BadIdentity(String),
    #[error(transparent)]
    Profile(#[from] crate::audit::profile::ProfileError),
    #[error(transparent)]
    Spool(#[from] crate::daemon::spool::SpoolError),
    #[error("collector endpoint: {0}")]
    Endpoint(String),
    #[error("audit failed: {0}")]
    Audit(String),
}

impl DaemonError {
    /// 2 for configuration and enrollment problems, 1 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::NotEnrolled { .. }
            | DaemonError::BadIdentity(_)
            | DaemonError::Profile(_)
            | DaemonError::Endpoint(_) => 2,
            DaemonError::Spool(_) | DaemonError::Audit(_) => 1,
        }
    }
}

/// How to run.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Until shutdown.
    Daemon,
    /// One report, delivered and acked within `timeout`.
    Once { timeout: Duration },
}

/// Whether to talk to systemd (tests turn it off).
#[derive(Debug, Clone, Copy)]
pub struct Systemd {
    pub notify: bool,
}

/// State shared by the producer and the sender.
struct Shared {
    config: Config,
    node_id: String,
    key: SigningKey,
    spool: Arc<Mutex<Spool>>,
    appended: Arc<Notify>,
    status: Arc<StatusBoard>,
    /// The checks each audit round runs.
    registry: Registry,
    /// Whether the collector of the latest stream announced that it
    /// accepts compact attestations (set by the sender).
    collector_takes_compact: Arc<AtomicBool>,
}

/// Run the daemon until `shutdown` resolves (or, with [`Mode::Once`], one
/// report is acked), auditing with the checks of `registry`. Returns the
/// exit code.
pub async fn run(
    config: Config,
    mode: Mode,
    systemd: Systemd,
    shutdown: impl Future<Output = ()> + Send + 'static,
    registry: Registry,
) -> Result<u8, DaemonError> {
    let identity = identity::load(&config)?;
    // Fail fast on a bad profile rather than at the first audit.
    Profile::load(&config.profile, &registry())?;
    let spool = Spool::open(&config.state_dir, config.spool_max_bytes)?;
    for q in spool.quarantined() {
        tracing::warn!("quarantined at start: {q}");
    }
    let endpoints = config
        .collector_urls
        .iter()
        .map(|url| crate::daemon::tls::endpoint(url, config.server_name.as_deref(), &identity.tls))
        .collect::<Result<Vec<_>, _>>()
        .map_err(DaemonError::Endpoint)?;
    let endpoints = Endpoints::new(endpoints).ok_or_else(|| DaemonError::Endpoint("no collector_url".into()))?;
    let status = Arc::new(StatusBoard::new(systemd.notify));
    status.spooled(spool.len(), spool.quarantined().len());
    tracing::info!(node_id = %identity.node_id, collector = %config.collector_urls.join(", "), spooled = spool.len(), next_seq = spool.next_seq(), "agent started");

    let shared = Arc::new(Shared {
        node_id: identity.node_id.clone(),
        key: identity.key.clone(),
        spool: Arc::new(Mutex::new(spool)),
        appended: Arc::new(Notify::new()),
        status: status.clone(),
        config,
        registry,
        collector_takes_compact: Arc::new(AtomicBool::new(false)),
    });
    let mut sender = Sender {
        endpoints,
        spool: shared.spool.clone(),
        appended: shared.appended.clone(),
        status: status.clone(),
        backoff: Backoff::new(shared.config.backoff_min, shared.config.backoff_max),
        node_id: shared.node_id.clone(),
        key: shared.key.clone(),
        linger: shared.config.stream_linger,
        collector_takes_compact: shared.collector_takes_compact.clone(),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    if systemd.notify {
        self::systemd::ready(stop_rx.clone());
    }

    match mode {
        Mode::Once { timeout } => {
            let mut stop = stop_rx;
            tokio::select! {
                r = run_once(&shared, &mut sender, timeout) => r,
                _ = stop.changed() => {
                    tracing::warn!("stopped before the report was acked; it stays spooled");
                    Ok(1)
                }
            }
        }
        Mode::Daemon => run_daemon(shared, sender, stop_rx, systemd).await,
    }
}

async fn run_once(shared: &Arc<Shared>, sender: &mut Sender, timeout: Duration) -> Result<u8, DaemonError> {
    let deadline = Instant::now() + timeout;
    let seq = match produce(shared, Trigger::Manual).await? {
        Some(seq) => seq,
        // The report could not be spooled (larger than the spool): deliver
        // the gap marker that says so, and report failure.
        None => shared.spool.lock().map(|s| s.next_seq().saturating_sub(1)).unwrap_or(0),
    };
    let acked = tokio::time::timeout_at(deadline, sender.run_until(&AckedAtLeast(seq))).await;
    match acked {
        Ok(SessionEnd::Done) => {
            tracing::info!(seq, "report acked");
            Ok(0)
        }
        _ => {
            tracing::error!(seq, "report not acked within {}s; it stays spooled", timeout.as_secs());
            Ok(1)
        }
    }
}

async fn run_daemon(
    shared: Arc<Shared>,
    mut sender: Sender,
    stop: watch::Receiver<bool>,
    systemd: Systemd,
) -> Result<u8, DaemonError> {
    let producer = tokio::spawn(produce_loop(shared.clone(), stop.clone()));
    let mut sender_stop = stop.clone();
    let end = sender.run(&Forever, &mut sender_stop).await;
    debug_assert_eq!(end, SessionEnd::Stopped);
    // The schedule stops first so nothing new is produced while flushing.
    let produced = producer.await;
    shared.status.phase("stopping");
    if systemd.notify {
        self::systemd::stopping();
    }
    let grace = shared.config.shutdown_grace;
    let left = shared.spool.lock().map(|s| s.len()).unwrap_or(0);
    if left > 0 && !grace.is_zero() {
        tracing::info!(left, "flushing unacked envelopes for up to {}s", grace.as_secs());
        sender.backoff.reset();
        if tokio::time::timeout(grace, sender.run_until(&Drained)).await.is_err() {
            let left = shared.spool.lock().map(|s| s.len()).unwrap_or(0);
            tracing::warn!(left, "shutdown grace expired; unacked envelopes stay spooled for the next start");
        }
    }
    tracing::info!("stopped");
    match produced {
        Ok(Err(e)) => Err(e),
        _ => Ok(0),
    }
}

/// The jittered delay until the next scheduled audit.
pub fn next_interval(interval: Duration, jitter_percent: u64, rng: &mut fastrand::Rng) -> Duration {
    let base = interval.as_millis() as u64;
    let spread = base.saturating_mul(jitter_percent) / 100;
    let lo = base.saturating_sub(spread).max(1);
    let hi = base.saturating_add(spread);
    Duration::from_millis(rng.u64(lo..=hi))
}

async fn produce_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Result<(), DaemonError> {
    let mut rng = fastrand::Rng::new();
    let mut watch = if shared.config.watch {
        match FileWatch::start(&shared.config.root) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("file watches unavailable ({e}); relying on the schedule");
                None
            }
        }
    } else {
        None
    };
    let mut trigger = Trigger::Startup;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        match produce(&shared, trigger).await {
            Ok(_) => {}
            // A spool that cannot be written is fatal: nothing can be kept.
            Err(e @ DaemonError::Spool(_)) => {
                tracing::error!("{e}");
                return Err(e);
            }
            Err(e) => tracing::error!("{e}"),
        }
        if let Some(w) = watch.as_mut() {
            w.rearm();
        }
        let next_tick = Instant::now() + next_interval(shared.config.interval, shared.config.jitter_percent, &mut rng);
        let mut change: Option<(Instant, Instant)> = None; // (first, last)
        trigger = loop {
            let debounce_at = change.map(|(first, last)| (last + DEBOUNCE).min(first + DEBOUNCE_MAX));
            let changed = async {
                match watch.as_mut() {
                    Some(w) => w.changes.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                () = tokio::time::sleep_until(next_tick) => break Trigger::Schedule,
                () = async { match debounce_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    break Trigger::FileChange;
                }
                path = changed => match path {
                    Some(p) => {
                        tracing::debug!(path = %p.display(), "watched file changed");
                        let now = Instant::now();
                        change = Some(change.map_or((now, now), |(first, _)| (first, now)));
                    }
                    None => watch = None,
                },
            }
        };
    }
}

/// Audit once and spool the signed envelope; returns the report's seq.
async fn produce(shared: &Arc<Shared>, trigger: Trigger) -> Result<Option<u64>, DaemonError> {
    let root = shared.config.root.clone();
    let profile_name = shared.config.profile.clone();
    let state_dir = shared.config.state_dir.clone();
    let registry = shared.registry;
    let audited = tokio::task::spawn_blocking(move || -> Result<_, DaemonError> {
        let registry = registry();
        let profile = Profile::load(&profile_name, &registry)?;
        let host = Host::at(&root);
        // The same audit as `check`, with the same state (drift snapshots,
        // first-seen times of pending updates) in the configured directory.
        let report = crate::audit_run::audit(
            &registry,
            &AuditRequest {
                host: &host,
                profile: &profile,
                only: None,
                today: chrono::Utc::now().date_naive(),
                state_dir: Some(&state_dir),
            },
        );
        let json = serde_json::to_vec(&report).map_err(|e| DaemonError::Audit(e.to_string()))?;
        Ok((json, profile.name.clone(), profile.version.clone(), report.summary))
    })
    .await
    .map_err(|e| DaemonError::Audit(e.to_string()))??;
    let (json, profile_name, profile_version, summary) = audited;
    let mut template = AttestationBody {
        node_id: shared.node_id.clone(),
        created_at_unix_ms: chrono::Utc::now().timestamp_millis(),
        agent_version: AGENT_VERSION.to_string(),
        profile_name,
        profile_version,
        trigger: trigger as i32,
        ..Default::default()
    };
    // gzip plus the index digest: a ninth of the bytes in the spool and on
    // the link, and an unchanged report costs the collector no decoding.
    kosmos_proto::report::pack(&json).into_body(&mut template);
    let spool = shared.spool.clone();
    let key = shared.key.clone();
    let policy = CompactPolicy {
        allowed: shared.config.compact && shared.collector_takes_compact.load(Ordering::Acquire),
        checkpoint_ms: i64::try_from(shared.config.checkpoint.as_millis()).unwrap_or(i64::MAX),
    };
    let (pushed, len, quarantined) = tokio::task::spawn_blocking(move || {
        let mut s = spool.lock().map_err(|_| DaemonError::Audit("spool lock poisoned".into()))?;
        let pushed = s.push_round(&key, template, policy)?;
        Ok::<_, DaemonError>((pushed, s.len(), s.quarantined().len()))
    })
    .await
    .map_err(|e| DaemonError::Audit(e.to_string()))??;
    shared.appended.notify_one();
    shared.status.report_made(len, quarantined);
    tracing::info!(
        seq = pushed.report_seq,
        trigger = trigger.as_str_name(),
        compact = pushed.compact,
        pass = summary.pass,
        fail = summary.fail,
        error = summary.error,
        spooled = len,
        "attestation spooled"
    );
    Ok(pushed.report_seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checks::registry;
    use crate::testpki::{Behaviour, Pki, attestation_server};
    use std::path::PathBuf;

    #[test]
    fn interval_jitter_stays_in_range() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..200 {
            let d = next_interval(Duration::from_secs(300), 10, &mut rng);
            assert!(d >= Duration::from_secs(270) && d <= Duration::from_secs(330), "{d:?}");
        }
        assert_eq!(next_interval(Duration::from_secs(1), 0, &mut rng), Duration::from_secs(1));
    }

    /// An enrolled state dir and a config pointing at `url`.
    fn setup(pki: &Pki, url: &str, state: &std::path::Path, root: &std::path::Path) -> Config {
        let (key, cert) = pki.node("node-d1");
        std::fs::create_dir_all(state).unwrap();
        std::fs::write(state.join("key.pem"), key).unwrap();
        std::fs::write(state.join("cert.pem"), cert).unwrap();
        std::fs::write(state.join("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
        Config {
            collector_urls: vec![url.to_string()],
            server_name: Some("localhost".into()),
            state_dir: state.to_path_buf(),
            profile: "linux-baseline".into(),
            interval: Duration::from_secs(1),
            jitter_percent: 0,
            spool_max_bytes: 64 << 20,
            watch: false,
            key_path: state.join("key.pem"),
            cert_path: state.join("cert.pem"),
            ca_path: state.join("ca.pem"),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(5),
            stream_linger: None,
            root: root.to_path_buf(),
            compact: true,
            checkpoint: Duration::from_secs(crate::daemon::config::DAY_SECS),
        }
    }

    const OFF: Systemd = Systemd { notify: false };

    fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (s, r) = (t.path().join("state"), t.path().join("root"));
        (t, s, r)
    }

    /// An https:// URL on which nothing listens.
    fn dead_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://127.0.0.1:{}", l.local_addr().unwrap().port())
    }

    #[tokio::test]
    async fn a_collector_endpoint_that_is_down_is_skipped_for_the_next() {
        let pki = Pki::new();
        let (live, received, _srv) = attestation_server(&pki, Behaviour::Ack).await;
        let (_t, state, root) = dirs();
        let mut config = setup(&pki, &live, &state, &root);
        config.collector_urls = vec![dead_url(), dead_url(), live];
        let once = Mode::Once { timeout: Duration::from_secs(20) };
        assert_eq!(run(config, once, OFF, std::future::pending(), registry).await.unwrap(), 0);
        let r = received.lock().unwrap();
        assert_eq!(r.bodies.iter().map(|b| b.seq).collect::<Vec<_>>(), [1]);
    }

    #[tokio::test]
    async fn a_collector_that_drops_the_stream_is_left_for_the_next_and_the_report_resent() {
        let pki = Pki::new();
        let (first, first_received, _a) = attestation_server(&pki, Behaviour::DropAfterFirst).await;
        let (second, second_received, _b) = attestation_server(&pki, Behaviour::Ack).await;
        let (_t, state, root) = dirs();
        let mut config = setup(&pki, &first, &state, &root);
        config.collector_urls = vec![first, second];
        let once = Mode::Once { timeout: Duration::from_secs(20) };
        assert_eq!(run(config, once, OFF, std::future::pending(), registry).await.unwrap(), 0);
        // The first replica got the envelope but never acked it; the second
        // got it again and acked it.
        assert_eq!(first_received.lock().unwrap().bodies.iter().map(|b| b.seq).collect::<Vec<_>>(), [1]);
        assert_eq!(second_received.lock().unwrap().bodies.iter().map(|b| b.seq).collect::<Vec<_>>(), [1]);
    }

    #[tokio::test]
    async fn once_delivers_a_signed_chained_report_and_deletes_it_when_acked() {
        let pki = Pki::new();
        let (url, received, _srv) = attestation_server(&pki, Behaviour::Ack).await;
        let (_t, state, root) = dirs();
        let config = setup(&pki, &url, &state, &root);
        let once = Mode::Once { timeout: Duration::from_secs(20) };
        assert_eq!(run(config.clone(), once, OFF, std::future::pending(), registry).await.unwrap(), 0);
        assert_eq!(run(config.clone(), once, OFF, std::future::pending(), registry).await.unwrap(), 0);
        let r = received.lock().unwrap();
        assert_eq!(r.bodies.len(), 2);
        let (b1, b2) = (&r.bodies[0], &r.bodies[1]);
        assert_eq!((b1.seq, b2.seq), (1, 2));
        assert_eq!(b1.node_id, "node-d1");
        assert_eq!(b1.trigger, Trigger::Manual as i32);
        assert_eq!(b1.profile_name, "linux-baseline");
        // Sent gzip-encoded, with the index digest of its own content.
        assert_eq!(b1.report_encoding, kosmos_proto::v1::ReportEncoding::Gzip as i32);
        let json = kosmos_proto::report::decode(b1).unwrap();
        let report: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(report["schema"], "kosmos.report/v1");
        let digest = kosmos_proto::report::IndexedReport::parse(&json).unwrap().digest();
        assert_eq!(b1.report_index_sha256, digest.to_vec());
        assert_eq!(b1.prev_hash, kosmos_proto::chain::GENESIS_PREV_HASH.to_vec());
        assert_eq!(b2.prev_hash.len(), 32);
        assert_ne!(b2.prev_hash, b1.prev_hash);
        let spool = Spool::open(&state, 1 << 20).unwrap();
        assert!(spool.is_empty(), "acked envelopes are deleted");
        assert_eq!(spool.next_seq(), 3);
    }

    #[tokio::test]
    async fn once_fails_with_exit_1_when_nobody_acks_and_keeps_the_envelope() {
        let pki = Pki::new();
        // A port with nothing listening.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://127.0.0.1:{}", l.local_addr().unwrap().port());
        drop(l);
        let (_t, state, root) = dirs();
        let config = setup(&pki, &url, &state, &root);
        let once = Mode::Once { timeout: Duration::from_millis(600) };
        assert_eq!(run(config, once, OFF, std::future::pending(), registry).await.unwrap(), 1);
        assert_eq!(Spool::open(&state, 1 << 20).unwrap().seqs(), vec![1]);
    }

    #[tokio::test]
    async fn refused_and_dropped_streams_reconnect_and_resend_unacked() {
        for behaviour in [Behaviour::RefuseFirst, Behaviour::DropAfterFirst] {
            let pki = Pki::new();
            let (url, received, _srv) = attestation_server(&pki, behaviour).await;
            let (_t, state, root) = dirs();
            let config = setup(&pki, &url, &state, &root);
            let once = Mode::Once { timeout: Duration::from_secs(20) };
            assert_eq!(run(config, once, OFF, std::future::pending(), registry).await.unwrap(), 0, "{behaviour:?}");
            let r = received.lock().unwrap();
            assert!(r.streams >= 2, "{behaviour:?}: reconnected");
            assert_eq!(r.bodies.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![1]);
        }
    }

    /// Issue 17: unchanged rounds go as compact attestations only to a
    /// collector that announces them (an older one gets full reports every
    /// round), and a full report is due again after `checkpoint`.
    #[tokio::test]
    async fn compact_rounds_only_to_a_collector_that_announces_them_with_checkpoints() {
        for (behaviour, checkpoint) in [(Behaviour::Ack, 3600), (Behaviour::AckAnnouncingCompact, 3)] {
            let pki = Pki::new();
            let (url, received, _server) = attestation_server(&pki, behaviour).await;
            let (_t, state, root) = dirs();
            let config = Config { checkpoint: Duration::from_secs(checkpoint), ..setup(&pki, &url, &state, &root) };
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let daemon = tokio::spawn(run(
                config,
                Mode::Daemon,
                OFF,
                async move {
                    let _ = stop_rx.await;
                },
                registry,
            ));
            let enough = async {
                while received.lock().unwrap().bodies.len() < 7 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(30), enough).await.unwrap();
            stop_tx.send(()).unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(15), daemon).await;
            let r = received.lock().unwrap();
            let compact: Vec<bool> = r.bodies.iter().map(kosmos_proto::compact::is_compact).collect();
            if behaviour == Behaviour::Ack {
                assert!(compact.iter().all(|c| !c), "{behaviour:?}: {compact:?}");
                continue;
            }
            // The first round (startup) is full, unchanged ones after it
            // compact, each naming the latest full report and its digest.
            assert!(!compact[0], "{compact:?}");
            assert!(compact.iter().filter(|c| **c).count() >= 3, "{compact:?}");
            let mut baseline = None;
            for b in &r.bodies {
                if kosmos_proto::compact::is_compact(b) {
                    let base: &AttestationBody = baseline.unwrap();
                    assert_eq!(b.same_as_seq, base.seq);
                    assert_eq!(b.report_index_sha256, base.report_index_sha256);
                    assert!(b.report_json.is_empty() && b.agent_version.is_empty());
                    assert!(b.created_at_unix_ms - base.created_at_unix_ms < 3000, "a checkpoint was due");
                } else {
                    baseline = Some(b);
                }
            }
            // With a 3 s checkpoint and 1 s rounds, seven rounds hold a
            // second full report.
            assert!(compact.iter().skip(1).any(|c| !c), "no checkpoint: {compact:?}");
        }
    }

    #[tokio::test]
    async fn daemon_spools_during_an_outage_then_delivers_in_order_and_stops_cleanly() {
        let pki = Pki::new();
        // Reserve a port, leave it closed for the outage.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let url = format!("https://127.0.0.1:{}", addr.port());
        let (_t, state, root) = dirs();
        let config = setup(&pki, &url, &state, &root);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run(
            config,
            Mode::Daemon,
            OFF,
            async move {
                let _ = stop_rx.await;
            },
            registry,
        ));
        // Startup + scheduled reports pile up while the collector is down.
        let wait_spooled = async {
            loop {
                let n = std::fs::read_dir(state.join("spool"))
                    .map(|d| {
                        d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".env")).count()
                    })
                    .unwrap_or(0);
                if n >= 3 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait_spooled).await.unwrap();
        // The collector comes up on the same port.
        let received = crate::testpki::attestation_server_at(&pki, addr, Behaviour::Ack).await;
        let delivered = async {
            loop {
                if received.lock().unwrap().bodies.len() >= 4 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), delivered).await.unwrap();
        stop_tx.send(()).unwrap();
        let code = tokio::time::timeout(Duration::from_secs(15), daemon).await.unwrap().unwrap().unwrap();
        assert_eq!(code, 0);
        let r = received.lock().unwrap();
        let seqs: Vec<u64> = r.bodies.iter().map(|b| b.seq).collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "in order, each once");
        assert_eq!(r.bodies[0].trigger, Trigger::Startup as i32);
        assert_eq!(r.bodies[1].trigger, Trigger::Schedule as i32);
        // The chain links every envelope to its predecessor.
        for w in r.bodies.windows(2) {
            let bytes = prost::Message::encode_to_vec(&w[0]);
            assert_eq!(w[1].prev_hash, kosmos_proto::chain::body_hash(&bytes).to_vec());
        }
    }

    #[tokio::test]
    async fn a_change_to_a_watched_file_triggers_a_re_audit_after_the_debounce() {
        let pki = Pki::new();
        let (url, received, _srv) = attestation_server(&pki, Behaviour::Ack).await;
        let (_t, state, root) = dirs();
        let mut config = setup(&pki, &url, &state, &root);
        config.watch = true;
        config.interval = Duration::from_secs(3600);
        std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
        std::fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run(
            config,
            Mode::Daemon,
            OFF,
            async move {
                let _ = stop_rx.await;
            },
            registry,
        ));
        let count = |n: usize| {
            let received = received.clone();
            async move {
                while received.lock().unwrap().bodies.len() < n {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), count(1)).await.unwrap();
        let edited = Instant::now();
        std::fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin yes\n").unwrap();
        tokio::time::timeout(Duration::from_secs(10), count(2)).await.unwrap();
        assert!(edited.elapsed() >= DEBOUNCE, "waited for the debounce");
        stop_tx.send(()).unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), daemon).await.unwrap().unwrap().unwrap(), 0);
        let r = received.lock().unwrap();
        assert_eq!(r.bodies.len(), 2, "one re-audit for one edit");
        assert_eq!(r.bodies[1].trigger, Trigger::FileChange as i32);
        assert!(r.bodies[1].families.is_empty(), "the full profile is re-run");
    }

    #[tokio::test]
    async fn a_missing_identity_is_a_configuration_error() {
        let (_t, state, root) = dirs();
        let pki = Pki::new();
        let mut config = setup(&pki, "https://127.0.0.1:1", &state, &root);
        config.key_path = state.join("absent.pem");
        let err = run(config, Mode::Once { timeout: Duration::from_secs(1) }, OFF, std::future::pending(), registry)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("not enrolled"), "{err}");
    }
}
