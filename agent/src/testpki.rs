//! Test PKI and in-process collector stand-ins: a CA, a server certificate
//! for localhost, CSR signing and node client certificates, generated per
//! test with rcgen (never committed), plus tonic servers implementing the
//! Enrollment and Attestation services over real TLS on 127.0.0.1:0.

use std::sync::{Arc, Mutex};

use kosmos_proto::chain::open;
use kosmos_proto::identity::{node_uri, verifying_key_from_cert};
use kosmos_proto::v1::attestation_server::{Attestation, AttestationServer};
use kosmos_proto::v1::enrollment_server::{Enrollment, EnrollmentServer};
use kosmos_proto::v1::{Ack, AttestationBody, AttestationEnvelope, EnrollRequest, EnrollResponse};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, SanType,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

pub const TOKEN: &str = "good-token";

pub struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    pub ca_der: Vec<u8>,
    pub ca_pem: String,
    pub server_der: Vec<u8>,
    pub server_pem: String,
    pub server_key_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.distinguished_name.push(DnType::CommonName, "test collector CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut sp = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        sp.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = sp.signed_by(&server_key, &Issuer::from_params(&ca_params, &ca_key)).unwrap();
        Pki {
            ca_der: ca.der().to_vec(),
            ca_pem: ca.pem(),
            server_der: server.der().to_vec(),
            server_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            ca_params,
            ca_key,
        }
    }

    pub fn sign_csr(&self, csr_pem: &str, node_id: &str) -> String {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        csr.params.subject_alt_names = vec![SanType::URI(node_uri(node_id).try_into().unwrap())];
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        csr.signed_by(&Issuer::from_params(&self.ca_params, &self.ca_key)).unwrap().pem()
    }

    /// A node identity (key PEM, cert PEM) signed by this CA.
    pub fn node(&self, node_id: &str) -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let csr = CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        (key.serialize_pem(), self.sign_csr(&csr, node_id))
    }

    fn tls(&self, client_auth: bool) -> ServerTlsConfig {
        // The collector presents its CA in the chain so agents can pin it.
        let chain = format!("{}{}", self.server_pem, self.ca_pem);
        let tls = ServerTlsConfig::new().identity(Identity::from_pem(chain, &self.server_key_pem));
        if client_auth { tls.client_ca_root(Certificate::from_pem(&self.ca_pem)) } else { tls }
    }
}

struct TestEnrollment(Arc<Pki>);

#[tonic::async_trait]
impl Enrollment for TestEnrollment {
    async fn enroll(&self, req: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        let req = req.into_inner();
        if req.token != TOKEN {
            return Err(Status::permission_denied("unknown or used token"));
        }
        let cert = self.0.sign_csr(&req.csr_pem, "node-test-1");
        Ok(Response::new(EnrollResponse {
            node_id: "node-test-1".into(),
            certificate_pem: cert,
            ca_pem: self.0.ca_pem.clone(),
        }))
    }
}

async fn listener() -> (String, TcpIncoming) {
    listener_at("127.0.0.1:0".parse().unwrap()).await
}

async fn listener_at(addr: std::net::SocketAddr) -> (String, TcpIncoming) {
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = l.local_addr().unwrap();
    (format!("https://127.0.0.1:{}", addr.port()), TcpIncoming::from(l))
}

/// Serve Enrollment (server-authenticated TLS only); returns the URL.
pub async fn enrollment_server(pki: &Pki) -> (String, tokio::task::JoinHandle<()>) {
    let pki = Arc::new(Pki {
        ca_params: pki.ca_params.clone(),
        ca_key: KeyPair::from_pem(&pki.ca_key.serialize_pem()).unwrap(),
        ca_der: pki.ca_der.clone(),
        ca_pem: pki.ca_pem.clone(),
        server_der: pki.server_der.clone(),
        server_pem: pki.server_pem.clone(),
        server_key_pem: pki.server_key_pem.clone(),
    });
    let (url, incoming) = listener().await;
    let server = Server::builder()
        .tls_config(pki.tls(false))
        .unwrap()
        .add_service(EnrollmentServer::new(TestEnrollment(pki.clone())))
        .serve_with_incoming(incoming);
    (url, tokio::spawn(async move { server.await.unwrap() }))
}

/// What the test Attestation service does with each envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Verify, store and ack every envelope.
    Ack,
    /// Refuse the first envelope with an Ack error, then behave.
    RefuseFirst,
    /// Close the stream after storing the first envelope, without acking.
    DropAfterFirst,
    /// Like `Ack`, and announce compact attestations (as a collector of
    /// this release does).
    AckAnnouncingCompact,
}

/// Envelopes received by the test collector, verified with the client's
/// certificate key.
#[derive(Default, Debug)]
pub struct Received {
    pub bodies: Vec<AttestationBody>,
    pub streams: usize,
    pub refused: usize,
    pub dropped: usize,
}

struct TestAttestation {
    received: Arc<Mutex<Received>>,
    behaviour: Behaviour,
}

#[tonic::async_trait]
impl Attestation for TestAttestation {
    type AttestStream = ReceiverStream<Result<Ack, Status>>;

    async fn attest(
        &self,
        req: Request<Streaming<AttestationEnvelope>>,
    ) -> Result<Response<Self::AttestStream>, Status> {
        let certs = req.peer_certs().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let cert = certs.first().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let key = verifying_key_from_cert(cert.as_ref()).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let received = self.received.clone();
        let behaviour = self.behaviour;
        tokio::spawn(async move {
            received.lock().unwrap().streams += 1;
            while let Ok(Some(env)) = inbound.message().await {
                let body = match open(&env, &key) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Ok(Ack { acked_seq: 0, error: e.to_string(), refused_seq: 0 })).await;
                        return;
                    }
                };
                let seq = body.seq;
                let action = {
                    let mut r = received.lock().unwrap();
                    if behaviour == Behaviour::RefuseFirst && r.refused == 0 {
                        r.refused += 1;
                        Some(true)
                    } else {
                        if !r.bodies.iter().any(|b| b.seq == seq) {
                            r.bodies.push(body);
                        }
                        if behaviour == Behaviour::DropAfterFirst && r.dropped == 0 {
                            r.dropped += 1;
                            Some(false)
                        } else {
                            None
                        }
                    }
                };
                match action {
                    Some(true) => {
                        let _ = tx
                            .send(Ok(Ack { acked_seq: 0, error: "refused for the test".into(), refused_seq: 0 }))
                            .await;
                        return;
                    }
                    Some(false) => return,
                    None => {}
                }
                if tx.send(Ok(Ack { acked_seq: seq, error: String::new(), refused_seq: 0 })).await.is_err() {
                    return;
                }
            }
        });
        let mut response = Response::new(ReceiverStream::new(rx));
        if self.behaviour == Behaviour::AckAnnouncingCompact {
            response.metadata_mut().insert(
                kosmos_proto::compact::FEATURES_HEADER,
                tonic::metadata::MetadataValue::from_static(kosmos_proto::compact::COMPACT_V1),
            );
        }
        Ok(response)
    }
}

/// Serve Attestation with mandatory mTLS; returns the URL and what arrives.
pub async fn attestation_server(
    pki: &Pki,
    behaviour: Behaviour,
) -> (String, Arc<Mutex<Received>>, tokio::task::JoinHandle<()>) {
    let (url, incoming) = listener().await;
    let (received, handle) = serve_attestation(pki, incoming, behaviour);
    (url, received, handle)
}

/// Serve Attestation on a given address (a collector coming back).
pub async fn attestation_server_at(
    pki: &Pki,
    addr: std::net::SocketAddr,
    behaviour: Behaviour,
) -> Arc<Mutex<Received>> {
    let (_, incoming) = listener_at(addr).await;
    serve_attestation(pki, incoming, behaviour).0
}

fn serve_attestation(
    pki: &Pki,
    incoming: TcpIncoming,
    behaviour: Behaviour,
) -> (Arc<Mutex<Received>>, tokio::task::JoinHandle<()>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let server = Server::builder()
        .tls_config(pki.tls(true))
        .unwrap()
        .add_service(AttestationServer::new(TestAttestation { received: received.clone(), behaviour }))
        .serve_with_incoming(incoming);
    (received, tokio::spawn(async move { server.await.unwrap() }))
}
