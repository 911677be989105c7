//! Delivery of spooled envelopes over one long-lived `Attest` stream (mTLS).
//!
//! A session connects, opens the bidi stream, sends every spooled envelope
//! in seq order (the oldest unacked first, then new ones as the producer
//! appends them) and applies acks: an ack deletes every spooled envelope up
//! to its seq. An ack carrying `error`, a closed stream or a transport
//! error ends the session; the caller reconnects after a [`Backoff`] delay
//! (exponential, full jitter, between the configured bounds). Delivery is at
//! least once: after a reconnect everything not yet acked is sent again and
//! the collector stores idempotently by (node, seq).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;

use kosmos_proto::v1::AttestationEnvelope;
use kosmos_proto::v1::attestation_client::AttestationClient;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::daemon::spool::Spool;
use crate::daemon::status::StatusBoard;
use crate::daemon::tls::error_chain;

/// Envelopes in flight on the stream before waiting for the transport.
const IN_FLIGHT: usize = 16;

/// Exponential backoff with full jitter: the n-th consecutive failure (from
/// 0) waits a uniformly random time in `[min, min(max, min * 2^(n+1))]`.
/// Even the first retry is spread over `[min, 2 min]`: when a collector
/// restarts, thousands of agents lose their stream at the same instant, and
/// a fixed first delay would bring them all back at the same instant too.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), attempt: 0, rng: fastrand::Rng::new() }
    }

    /// A deterministic sequence, for tests.
    pub fn with_seed(min: Duration, max: Duration, seed: u64) -> Self {
        Self { rng: fastrand::Rng::with_seed(seed), ..Self::new(min, max) }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.saturating_add(1).min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The next delay; each call counts as one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let lo = self.min.as_millis() as u64;
        let hi = self.ceiling().as_millis() as u64;
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(self.rng.u64(lo..=hi.max(lo)))
    }

    /// Wait for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// The link works again: start over from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How a session ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The goal was reached.
    Done,
    /// The stop signal fired.
    Stopped,
}

/// When a session may end successfully.
pub trait Goal: Sync {
    /// Reached given the highest ack seen and the spool.
    fn reached(&self, acked: u64, spool: &Spool) -> bool;
}

/// Never: run until stopped.
#[derive(Debug)]
pub struct Forever;
impl Goal for Forever {
    fn reached(&self, _: u64, _: &Spool) -> bool {
        false
    }
}

/// Everything spooled is acked.
#[derive(Debug)]
pub struct Drained;
impl Goal for Drained {
    fn reached(&self, _: u64, spool: &Spool) -> bool {
        spool.is_empty()
    }
}

/// A given seq is acked.
#[derive(Debug)]
pub struct AckedAtLeast(pub u64);
impl Goal for AckedAtLeast {
    fn reached(&self, acked: u64, _: &Spool) -> bool {
        acked >= self.0
    }
}

/// The collector's endpoints in the order of `collector_url`, and the one
/// in use. After a failed session the sender moves on to the next (and
/// round again), with its usual backoff in between: replicas without a load
/// balancer in front of them are tried in turn.
#[derive(Debug, Clone)]
pub struct Endpoints {
    list: Vec<Endpoint>,
    current: usize,
}

impl Endpoints {
    /// None for an empty list.
    pub fn new(list: Vec<Endpoint>) -> Option<Endpoints> {
        (!list.is_empty()).then_some(Endpoints { list, current: 0 })
    }

    /// The endpoint the next session uses.
    pub fn current(&self) -> Option<&Endpoint> {
        self.list.get(self.current)
    }

    /// The URI of the endpoint in use, for logs.
    pub fn uri(&self) -> String {
        self.current().map(|e| e.uri().to_string()).unwrap_or_default()
    }

    /// Move on to the next endpoint (the first after the last); returns
    /// whether there was another one to move to.
    pub fn fail_over(&mut self) -> bool {
        if self.list.len() < 2 {
            return false;
        }
        self.current = (self.current + 1) % self.list.len();
        true
    }
}

/// The sending side of the daemon.
pub struct Sender {
    pub endpoints: Endpoints,
    pub spool: Arc<Mutex<Spool>>,
    /// Signalled by the producer after each push.
    pub appended: Arc<Notify>,
    pub status: Arc<StatusBoard>,
    pub backoff: Backoff,
    /// The node's id and key: a refused envelope is replaced by a signed gap
    /// marker.
    pub node_id: String,
    pub key: SigningKey,
    /// End the stream after this long with nothing to deliver, keeping the
    /// connection (`stream_linger_secs`); None keeps it open for good.
    pub linger: Option<Duration>,
    /// Set from each stream's `kosmos-attest-features` response header:
    /// whether this collector accepts compact attestations. The producer
    /// reads it for the next round.
    pub collector_takes_compact: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("endpoint", &self.endpoints.uri())
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn spool_error(e: impl std::fmt::Display) -> String {
    format!("spool: {e}")
}

impl Sender {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Spool>, String> {
        self.spool.lock().map_err(|_| "spool lock poisoned".to_string())
    }

    fn goal_reached(&self, goal: &dyn Goal) -> Result<bool, String> {
        let acked = self.status.acked_seq();
        Ok(goal.reached(acked, &*self.lock()?))
    }

    /// Say why the session ended, and move on to the next endpoint.
    fn session_failed(&mut self, why: &str) {
        self.status.disconnected(why);
        let from = self.endpoints.uri();
        if self.endpoints.fail_over() {
            let next = self.endpoints.uri();
            tracing::warn!(collector = %from, next = %next, "attestation stream: {why}; failing over to the next collector endpoint");
        } else {
            tracing::warn!(collector = %from, "attestation stream: {why}");
        }
    }

    /// Sessions with backoff until `goal` is reached or `stop` fires.
    pub async fn run(&mut self, goal: &dyn Goal, stop: &mut tokio::sync::watch::Receiver<bool>) -> SessionEnd {
        loop {
            match self.session(goal, Some(&mut *stop)).await {
                Ok(end) => return end,
                Err(why) => {
                    self.session_failed(&why);
                    let delay = self.backoff.next_delay();
                    tracing::info!(delay_ms = delay.as_millis() as u64, "reconnecting after backoff");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return SessionEnd::Stopped,
                    }
                }
            }
        }
    }

    /// Sessions with backoff until `goal` is reached (no stop signal); bound
    /// it with a timeout.
    pub async fn run_until(&mut self, goal: &dyn Goal) -> SessionEnd {
        loop {
            match self.session(goal, None).await {
                Ok(end) => return end,
                Err(why) => {
                    self.session_failed(&why);
                    self.backoff.wait().await;
                }
            }
        }
    }

    /// The collector refused `seq` for good: set it aside with a signed gap
    /// marker in its place (see [`Spool::set_aside`]), so the spool is not
    /// wedged on it, and say so in the logs and the status. Returns why the
    /// session ends (the collector closes the stream after a refusal).
    fn set_aside(&self, seq: u64, reason: &str) -> Result<String, String> {
        let template = kosmos_proto::v1::AttestationBody {
            node_id: self.node_id.clone(),
            created_at_unix_ms: chrono::Utc::now().timestamp_millis(),
            agent_version: crate::audit::engine::AGENT_VERSION.to_string(),
            ..Default::default()
        };
        let (marker, spooled, quarantined) = {
            let mut spool = self.lock()?;
            let marker = spool.set_aside(&self.key, seq, &template, reason).map_err(spool_error)?;
            (marker, spool.len(), spool.quarantined().len())
        };
        self.appended.notify_one();
        self.status.spooled(spooled, quarantined);
        match marker {
            Some(gap_seq) => {
                tracing::error!(
                    seq,
                    gap_seq,
                    reason,
                    "the collector refused envelope {seq} for good: moved to the spool's quarantine, gap declared in envelope {gap_seq}"
                );
                self.status.refused(seq, reason);
                Ok(format!(
                    "collector refused envelope {seq} for good ({reason}); set aside, gap declared as seq {gap_seq}"
                ))
            }
            None => Ok(format!("collector refused envelope {seq} ({reason}), which is no longer spooled")),
        }
    }

    /// One connection: a stream while there is something to deliver (and
    /// for the linger after), then, with nothing to deliver, the connection
    /// alone (HTTP/2 keepalive pings keep it known to be alive), and a new
    /// stream on it when the next envelope is spooled.
    pub async fn session(
        &mut self,
        goal: &dyn Goal,
        mut stop: Option<&mut tokio::sync::watch::Receiver<bool>>,
    ) -> Result<SessionEnd, String> {
        if self.goal_reached(goal)? {
            return Ok(SessionEnd::Done);
        }
        let endpoint = self.endpoints.current().ok_or("no collector endpoint")?.clone();
        let channel = endpoint.connect().await.map_err(|e| format!("cannot connect: {}", error_chain(&e)))?;
        loop {
            match self.stream(channel.clone(), goal, stop.as_deref_mut()).await? {
                StreamEnd::Session(end) => return Ok(end),
                StreamEnd::Idle => {
                    tracing::debug!("nothing to deliver: stream ended, connection kept");
                    let stop_fut = async {
                        match stop.as_deref_mut() {
                            Some(rx) => {
                                let _ = rx.changed().await;
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    tokio::select! {
                        () = stop_fut => return Ok(SessionEnd::Stopped),
                        () = self.appended.notified() => {}
                    }
                }
            }
        }
    }

    /// One Attest stream on `channel`.
    async fn stream(
        &mut self,
        channel: tonic::transport::Channel,
        goal: &dyn Goal,
        mut stop: Option<&mut tokio::sync::watch::Receiver<bool>>,
    ) -> Result<StreamEnd, String> {
        let (tx, rx) = mpsc::channel::<AttestationEnvelope>(IN_FLIGHT);
        let mut client = AttestationClient::new(channel);
        let response = client
            .attest(ReceiverStream::new(rx))
            .await
            .map_err(|s| format!("stream refused: {}: {}", s.code(), s.message()))?;
        // No header (a collector from before compact attestations): full
        // reports every round.
        let takes_compact = response
            .metadata()
            .get(kosmos_proto::compact::FEATURES_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(kosmos_proto::compact::announces_compact);
        self.collector_takes_compact.store(takes_compact, std::sync::atomic::Ordering::Release);
        let mut inbound = response.into_inner();
        self.status.connected();
        tracing::info!(collector = %self.endpoints.uri(), "attestation stream open");
        // The last seq handed to the stream in this session.
        let mut cursor = 0u64;
        let mut idle_since = tokio::time::Instant::now();
        loop {
            if self.goal_reached(goal)? {
                return Ok(StreamEnd::Session(SessionEnd::Done));
            }
            let (next, drained) = {
                let spool = self.lock()?;
                (spool.next_after(cursor), spool.is_empty())
            };
            // Nothing in flight and nothing to send: after the linger, end
            // the stream (the collector frees what it held for it).
            let linger_over = match (drained, self.linger) {
                (true, Some(linger)) => Some(idle_since + linger),
                _ => {
                    idle_since = tokio::time::Instant::now();
                    None
                }
            };
            let stop_fut = async {
                match stop.as_deref_mut() {
                    Some(rx) => {
                        let _ = rx.changed().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let lingered = tokio::select! {
                biased;
                () = stop_fut => return Ok(StreamEnd::Session(SessionEnd::Stopped)),
                msg = inbound.message() => { match msg {
                    Ok(Some(ack)) => {
                        if !ack.error.is_empty() && ack.refused_seq > 0 {
                            return Err(self.set_aside(ack.refused_seq, &ack.error)?);
                        }
                        if !ack.error.is_empty() {
                            return Err(format!("collector refused an envelope: {}", ack.error));
                        }
                        let (deleted, left) = {
                            let mut spool = self.lock()?;
                            let deleted = spool.ack(ack.acked_seq).map_err(spool_error)?;
                            (deleted, spool.len())
                        };
                        if ack.acked_seq >= self.lock()?.next_seq() {
                            tracing::warn!(acked = ack.acked_seq, "collector acked a seq this agent never produced");
                        }
                        tracing::debug!(acked = ack.acked_seq, deleted, left, "ack");
                        self.status.acked(ack.acked_seq, left);
                        self.backoff.reset();
                    }
                    Ok(None) => return Err("the collector closed the stream".into()),
                    Err(s) => return Err(format!("{}: {}", s.code(), s.message())),
                } false },
                permit = tx.reserve(), if next.is_some() => {
                    let permit = permit.map_err(|_| "the stream's sending side closed".to_string())?;
                    let seq = next.unwrap_or(cursor);
                    cursor = seq;
                    let env = self.lock()?.read(seq).map_err(spool_error)?;
                    // A file that no longer validates was quarantined and is
                    // skipped: the collector will record the hole as a gap.
                    if let Some(env) = env {
                        permit.send(env);
                    }
                    false
                },
                () = self.appended.notified(), if next.is_none() => false,
                () = async {
                    match linger_over {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            if lingered {
                drop(tx);
                // The collector ends its side once ours is closed.
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                return Ok(StreamEnd::Idle);
            }
        }
    }
}

/// How one stream ended without error.
enum StreamEnd {
    /// The session is over (goal reached or stopped).
    Session(SessionEnd),
    /// Nothing left to deliver for the linger: the connection is kept.
    Idle,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_bounds() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(5_000));
        let mut b = Backoff::with_seed(min, max, 42);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d >= min && d <= ceiling, "{d:?} not in [{min:?}, {ceiling:?}]");
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(&ceilings[..7], &[200, 400, 800, 1600, 3200, 5000, 5000]);
        assert!(ceilings[7..].iter().all(|&c| c == 5000));
        b.reset();
        assert_eq!(b.ceiling(), min * 2, "even the first retry is jittered");
        // Full jitter: draws spread over the range, not all at the ceiling.
        let mut b = Backoff::with_seed(min, max, 7);
        for _ in 0..10 {
            b.next_delay();
        }
        let draws: Vec<Duration> = (0..50).map(|_| b.next_delay()).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(2_500)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(2_500)));
        // Degenerate bounds do not panic.
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(1));
        assert_eq!(b.next_delay(), Duration::from_millis(10));
        let mut b = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        for _ in 0..100 {
            assert_eq!(b.next_delay(), Duration::from_secs(3600));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_waits_on_the_tokio_clock() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(60));
        let mut b = Backoff::with_seed(min, max, 1);
        let mut total = Duration::ZERO;
        for attempt in 0..10u32 {
            let ceiling = b.ceiling();
            let start = tokio::time::Instant::now();
            b.wait().await;
            let waited = start.elapsed();
            assert!(waited >= min && waited <= ceiling + Duration::from_millis(1), "attempt {attempt}: {waited:?}");
            total += waited;
        }
        // Ten paused-clock waits of up to a minute each took no real time.
        assert!(total >= 10 * min);
    }
}
