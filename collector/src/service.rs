//! The gRPC services: `Attest` (mTLS, streaming) and `Enroll` (server TLS,
//! one-time token).
//!
//! Identity comes only from the verified client certificate: the node id in
//! its SAN, and its Ed25519 key, which must verify every envelope. The body's
//! own `node_id` is compared with the certificate's and a mismatch is refused
//! and recorded. Nothing is acked before the writer has committed it.

use std::pin::Pin;
use std::sync::Arc;

use kosmos_proto::chain;
use kosmos_proto::identity;
use kosmos_proto::v1::attestation_server::Attestation;
use kosmos_proto::v1::enrollment_server::Enrollment;
use kosmos_proto::v1::{Ack, AttestationEnvelope, EnrollRequest, EnrollResponse};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::store::judge::EventKind;
use crate::store::writer::StoreWriter;
use crate::store::{IngestItem, IngestResult, NewNode, NodeEvent, TokenUse, now_ms};

/// State shared by the services.
#[derive(Debug, Clone)]
pub struct Shared {
    pub writer: StoreWriter,
    pub pki: Arc<Pki>,
    pub node_cert_days: i64,
    pub metrics: Arc<Metrics>,
    pub streams: Arc<StreamRegistry>,
    pub limits: crate::server::Limits,
}

/// Attest service.
#[derive(Debug, Clone)]
pub struct AttestService(pub Shared);

/// Enroll service.
#[derive(Debug, Clone)]
pub struct EnrollService(pub Shared);

type AckStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send>>;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

async fn record(writer: &StoreWriter, node_id: &str, seq: Option<u64>, kind: EventKind, detail: String) {
    let event =
        NodeEvent { node_id: node_id.to_string(), seq, kind: kind.as_str().to_string(), detail, at_ms: now_ms() };
    if let Err(e) = writer.call(move |s| s.record_event(&event)).await {
        tracing::error!("cannot record {kind} event for {node_id}: {e}");
    }
}

/// The largest seq the store can represent (a signed 64-bit column). A seq
/// above it is refused, never stored under another value than the one acked.
pub const MAX_STORABLE_SEQ: u64 = i64::MAX as u64;

/// Why a stream's next message is not an envelope to process.
enum StreamStop {
    /// The client ended the stream (or went away): nothing to answer.
    Closed,
    /// A newer stream from the same node took over.
    Replaced,
    /// No envelope for the idle limit.
    Idle,
    /// The message could not be decoded (too large, cut, not protobuf).
    Refused(Status),
}

/// Whether a receive error is our decoder refusing the message (no
/// transport error behind it) rather than the client or the connection
/// going away.
fn is_refused_message(status: &Status) -> bool {
    status.code() != tonic::Code::Cancelled && std::error::Error::source(status).is_none()
}

#[tonic::async_trait]
impl Attestation for AttestService {
    type AttestStream = AckStream;

    async fn attest(
        &self,
        request: Request<Streaming<AttestationEnvelope>>,
    ) -> Result<Response<Self::AttestStream>, Status> {
        let certs = request.peer_certs().ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs.first().ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let node_id = identity::node_id_from_cert(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let key = identity::verifying_key_from_cert(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let leaf_sha: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
        let shared = self.0.clone();
        let lookup = node_id.clone();
        let node = shared.writer.call(move |s| s.node(&lookup)).await.map_err(internal)?.map_err(internal)?;
        let Some(node) = node else {
            return Err(Status::permission_denied(format!("node {node_id} is not enrolled")));
        };
        if node.revoked_at_ms.is_some() {
            record(
                &shared.writer,
                &node_id,
                None,
                EventKind::Revoked,
                "connection with a revoked certificate refused".into(),
            )
            .await;
            return Err(Status::permission_denied(format!("node {node_id} is revoked")));
        }
        if node.cert_sha256 != leaf_sha {
            record(
                &shared.writer,
                &node_id,
                None,
                EventKind::IdentityMismatch,
                "certificate is not the one issued at enrollment".into(),
            )
            .await;
            return Err(Status::permission_denied("certificate is not the one issued to this node"));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<Ack, Status>>(64);
        // At most one live stream per node: a node that reconnects (after a
        // network change, say) replaces its old stream, which ends here.
        let (generation, mut replaced) = shared.streams.register(&node_id);
        tokio::spawn(async move {
            shared.metrics.streams_open.inc();
            let idle = shared.limits.stream_idle;
            loop {
                let next = tokio::select! {
                    biased;
                    _ = &mut replaced => Err(StreamStop::Replaced),
                    m = tokio::time::timeout(idle, inbound.message()) => match m {
                        Err(_) => Err(StreamStop::Idle),
                        Ok(Ok(Some(env))) => Ok(env),
                        Ok(Ok(None)) => Err(StreamStop::Closed),
                        Ok(Err(status)) if is_refused_message(&status) => Err(StreamStop::Refused(status)),
                        Ok(Err(status)) => {
                            tracing::debug!(node = %node_id, "stream ended: {}: {}", status.code(), status.message());
                            Err(StreamStop::Closed)
                        }
                    },
                };
                let env = match next {
                    Ok(env) => env,
                    Err(StreamStop::Closed) => break,
                    Err(StreamStop::Replaced) => {
                        shared.metrics.streams_replaced.inc();
                        tracing::info!(node = %node_id, "stream replaced by a newer one from the same node");
                        let _ = tx.send(Err(Status::aborted("replaced by a newer stream from the same node"))).await;
                        break;
                    }
                    Err(StreamStop::Idle) => {
                        shared.metrics.streams_idle_closed.inc();
                        tracing::info!(node = %node_id, "no envelope for {}s: closing the stream", idle.as_secs());
                        let _ = tx
                            .send(Err(Status::deadline_exceeded(format!(
                                "no envelope for {}s: idle stream closed",
                                idle.as_secs()
                            ))))
                            .await;
                        break;
                    }
                    Err(StreamStop::Refused(status)) => {
                        let too_large =
                            matches!(status.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted);
                        let reason = if too_large { "too_large" } else { "undecodable" };
                        shared.metrics.refusal(reason);
                        tracing::warn!(node = %node_id, "envelope refused ({reason}): {}", status.message());
                        record(
                            &shared.writer,
                            &node_id,
                            None,
                            EventKind::MalformedEnvelope,
                            status.message().to_string(),
                        )
                        .await;
                        let message = format!("envelope refused: {}", status.message());
                        let answer = if too_large {
                            Status::resource_exhausted(message)
                        } else {
                            Status::invalid_argument(message)
                        };
                        let _ = tx.send(Err(answer)).await;
                        break;
                    }
                };
                let started = std::time::Instant::now();
                // A refusal of this envelope for good: the agent sets it aside.
                let refuse = |reason: String, seq: u64| Ack { acked_seq: 0, error: reason, refused_seq: seq };
                let body = match chain::open(&env, &key) {
                    Ok(b) => b,
                    Err(e) => {
                        shared.metrics.refusal("bad_signature");
                        // The seq as the unverified body claims it, so the
                        // agent can find the envelope in its spool.
                        let claimed = kosmos_proto::v1::AttestationBody::decode(env.body.clone()).map_or(0, |b| b.seq);
                        record(
                            &shared.writer,
                            &node_id,
                            Some(claimed).filter(|s| *s > 0 && *s <= MAX_STORABLE_SEQ),
                            EventKind::BadSignature,
                            e.to_string(),
                        )
                        .await;
                        let _ = tx.send(Ok(refuse(format!("envelope refused: {e}"), claimed))).await;
                        break;
                    }
                };
                if body.node_id != node_id {
                    shared.metrics.refusal("identity_mismatch");
                    record(
                        &shared.writer,
                        &node_id,
                        Some(body.seq).filter(|s| *s <= MAX_STORABLE_SEQ),
                        EventKind::IdentityMismatch,
                        format!("body claims node {:?}, certificate says {node_id}", body.node_id),
                    )
                    .await;
                    let _ = tx
                        .send(Ok(refuse("body node_id does not match the client certificate".into(), body.seq)))
                        .await;
                    break;
                }
                if body.seq == 0 || body.seq > MAX_STORABLE_SEQ {
                    shared.metrics.refusal("seq_out_of_range");
                    record(
                        &shared.writer,
                        &node_id,
                        None,
                        EventKind::SeqOutOfRange,
                        format!("seq {} is outside 1..={MAX_STORABLE_SEQ}; the envelope was not stored", body.seq),
                    )
                    .await;
                    let _ = tx
                        .send(Ok(refuse(
                            format!("envelope refused: seq {} is outside 1..={MAX_STORABLE_SEQ}", body.seq),
                            body.seq,
                        )))
                        .await;
                    break;
                }
                let seq = body.seq;
                let item = IngestItem::new(node_id.clone(), env.body, env.signature, body, now_ms());
                let ack = match shared.writer.ingest(item).await {
                    Ok(IngestResult::Acked { head_seq }) => {
                        shared.metrics.observe_ingest(started.elapsed());
                        Ack { acked_seq: head_seq, error: String::new(), refused_seq: 0 }
                    }
                    Ok(IngestResult::Rejected { reason }) => {
                        shared.metrics.refusal("false_claim");
                        tracing::warn!(node = %node_id, "{reason}");
                        let _ = tx.send(Ok(refuse(reason, seq))).await;
                        break;
                    }
                    Ok(IngestResult::Refused { reason }) => {
                        shared.metrics.refusal("node_refused");
                        let _ = tx.send(Ok(Ack { acked_seq: 0, error: reason, refused_seq: 0 })).await;
                        break;
                    }
                    Ok(IngestResult::Failed { reason }) => {
                        // Storing this envelope failed on its own (the rest of
                        // the batch was stored): the agent retries it later.
                        shared.metrics.refusal("store_failed");
                        tracing::error!(node = %node_id, "storing an envelope failed: {reason}");
                        let _ = tx.send(Err(Status::unavailable("storing this envelope failed, retry later"))).await;
                        break;
                    }
                    Err(e) => {
                        tracing::error!(node = %node_id, "storing an envelope failed: {e}");
                        let _ = tx.send(Err(Status::unavailable("store unavailable, retry later"))).await;
                        break;
                    }
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
            shared.streams.unregister(&node_id, generation);
            shared.metrics.streams_open.dec();
        });
        let mut response = Response::new(Box::pin(ReceiverStream::new(rx)) as Self::AttestStream);
        // The protocol rule (attest.proto, same_as_seq): agents send compact
        // attestations only to a collector that announces them here.
        response.metadata_mut().insert(
            kosmos_proto::compact::FEATURES_HEADER,
            tonic::metadata::MetadataValue::from_static(kosmos_proto::compact::COMPACT_V1),
        );
        Ok(response)
    }
}

/// The live Attest streams, one per node.
#[derive(Debug, Default)]
pub struct StreamRegistry {
    // A std Mutex is fine: it is held for a map operation, never across an
    // `.await`.
    live: std::sync::Mutex<std::collections::HashMap<String, (u64, oneshot::Sender<()>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl StreamRegistry {
    /// Register a new stream of `node`, ending its previous one. Returns the
    /// stream's generation and the signal that a newer one replaced it.
    pub fn register(&self, node: &str) -> (u64, oneshot::Receiver<()>) {
        let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut live) = self.live.lock()
            && let Some((_, old)) = live.insert(node.to_string(), (generation, tx))
        {
            let _ = old.send(());
        }
        (generation, rx)
    }

    /// A stream ended; forget it unless a newer one already replaced it.
    pub fn unregister(&self, node: &str, generation: u64) {
        if let Ok(mut live) = self.live.lock()
            && live.get(node).is_some_and(|(g, _)| *g == generation)
        {
            live.remove(node);
        }
    }

    /// Streams currently registered.
    pub fn len(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn random_hex(bytes: usize) -> Result<String, Status> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Status::internal(format!("no randomness: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// SHA-256 of an enrollment token, as stored.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// Create a new one-time token: `kna_` + 32 random bytes in hex.
pub fn new_token() -> Result<String, String> {
    random_hex(32).map(|h| format!("kna_{h}")).map_err(|s| s.message().to_string())
}

#[tonic::async_trait]
impl Enrollment for EnrollService {
    async fn enroll(&self, request: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        let req = request.into_inner();
        let shared = &self.0;
        if req.csr_pem.len() > 64 * 1024 || req.hostname.len() > 253 || req.machine_id.len() > 128 {
            return Err(Status::invalid_argument("request fields too large"));
        }
        // Refuse what cannot be a hostname before anything is spent: a
        // hostname is one line of text, shown to operators and auditors.
        if let Some(problem) = crate::untrusted::hostname_problem(&req.hostname).or_else(|| {
            crate::untrusted::hostname_problem(&req.machine_id).map(|p| p.replace("hostname", "machine id"))
        }) {
            return Err(Status::invalid_argument(problem));
        }
        // The CSR is checked and signed first: a malformed one must not burn
        // the token. The token is then consumed and the node recorded in one
        // transaction, so a certificate is returned only for a recorded node.
        let node_id = format!("node-{}", random_hex(8)?);
        let (cert_pem, cert_der) = shared
            .pki
            .sign_node_csr(&req.csr_pem, &node_id, shared.node_cert_days)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let node = NewNode {
            id: node_id.clone(),
            hostname: req.hostname,
            machine_id: req.machine_id,
            cert_der,
            enrolled_at_ms: now_ms(),
        };
        let hash = token_hash(&req.token);
        let verdict =
            shared.writer.call(move |s| s.enroll(&hash, now_ms(), &node)).await.map_err(internal)?.map_err(internal)?;
        match verdict {
            TokenUse::Accepted => {}
            TokenUse::Unknown => return Err(Status::permission_denied("unknown enrollment token")),
            TokenUse::AlreadyUsed => return Err(Status::permission_denied("enrollment token already used")),
            TokenUse::Expired => return Err(Status::permission_denied("enrollment token expired")),
        }
        tracing::info!("enrolled {node_id}");
        Ok(Response::new(EnrollResponse { node_id, certificate_pem: cert_pem, ca_pem: shared.pki.ca_cert_pem.clone() }))
    }
}
