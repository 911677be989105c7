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
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::store::writer::StoreWriter;
use crate::store::{IngestItem, IngestResult, NewNode, NodeEvent, TokenUse, now_ms};

/// State shared by the services.
#[derive(Debug, Clone)]
pub struct Shared {
    pub writer: StoreWriter,
    pub pki: Arc<Pki>,
    pub node_cert_days: i64,
    pub metrics: Arc<Metrics>,
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

async fn record(writer: &StoreWriter, node_id: &str, seq: Option<u64>, kind: &str, detail: String) {
    let event = NodeEvent { node_id: node_id.to_string(), seq, kind: kind.to_string(), detail, at_ms: now_ms() };
    if let Err(e) = writer.call(move |s| s.record_event(&event)).await {
        tracing::error!("cannot record {kind} event for {node_id}: {e}");
    }
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
            record(&shared.writer, &node_id, None, "revoked", "connection with a revoked certificate refused".into())
                .await;
            return Err(Status::permission_denied(format!("node {node_id} is revoked")));
        }
        if node.cert_sha256 != leaf_sha {
            record(
                &shared.writer,
                &node_id,
                None,
                "identity_mismatch",
                "certificate is not the one issued at enrollment".into(),
            )
            .await;
            return Err(Status::permission_denied("certificate is not the one issued to this node"));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<Ack, Status>>(64);
        tokio::spawn(async move {
            shared.metrics.streams_open.inc();
            loop {
                let env = match inbound.message().await {
                    Ok(Some(env)) => env,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("stream from {node_id} ended: {e}");
                        break;
                    }
                };
                let started = std::time::Instant::now();
                let refuse = |reason: String| Ack { acked_seq: 0, error: reason };
                let body = match chain::open(&env, &key) {
                    Ok(b) => b,
                    Err(e) => {
                        shared.metrics.refused.inc();
                        record(&shared.writer, &node_id, None, "bad_signature", e.to_string()).await;
                        let _ = tx.send(Ok(refuse(format!("envelope refused: {e}")))).await;
                        break;
                    }
                };
                if body.node_id != node_id {
                    shared.metrics.refused.inc();
                    record(
                        &shared.writer,
                        &node_id,
                        Some(body.seq),
                        "identity_mismatch",
                        format!("body claims node {:?}, certificate says {node_id}", body.node_id),
                    )
                    .await;
                    let _ = tx.send(Ok(refuse("body node_id does not match the client certificate".into()))).await;
                    break;
                }
                let item = IngestItem::new(node_id.clone(), env.body, env.signature, body, now_ms());
                let ack = match shared.writer.ingest(item).await {
                    Ok(IngestResult::Acked { head_seq }) => {
                        shared.metrics.observe_ingest(started.elapsed());
                        Ack { acked_seq: head_seq, error: String::new() }
                    }
                    Ok(IngestResult::Refused { reason }) => {
                        shared.metrics.refused.inc();
                        let _ = tx.send(Ok(refuse(reason))).await;
                        break;
                    }
                    Err(e) => {
                        tracing::error!("storing an envelope from {node_id} failed: {e}");
                        let _ = tx.send(Err(Status::unavailable("store unavailable, retry later"))).await;
                        break;
                    }
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
            shared.metrics.streams_open.dec();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
        let hash = token_hash(&req.token);
        let verdict =
            shared.writer.call(move |s| s.consume_token(&hash, now_ms())).await.map_err(internal)?.map_err(internal)?;
        match verdict {
            TokenUse::Accepted => {}
            TokenUse::Unknown => return Err(Status::permission_denied("unknown enrollment token")),
            TokenUse::AlreadyUsed => return Err(Status::permission_denied("enrollment token already used")),
            TokenUse::Expired => return Err(Status::permission_denied("enrollment token expired")),
        }
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
        shared.writer.call(move |s| s.insert_node(&node)).await.map_err(internal)?.map_err(internal)?;
        tracing::info!("enrolled {node_id}");
        Ok(Response::new(EnrollResponse { node_id, certificate_pem: cert_pem, ca_pem: shared.pki.ca_cert_pem.clone() }))
    }
}
