//! `serve`: the gRPC endpoint, started on a listener the caller provides and
//! stopped by a shutdown future (so tests run it on 127.0.0.1:0).

use std::future::Future;
use std::sync::Arc;

use kosmos_proto::v1::attestation_server::AttestationServer;
use kosmos_proto::v1::enrollment_server::EnrollmentServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::service::{AttestService, EnrollService, Shared};

/// Largest envelope accepted on the wire (the body limit plus framing).
const MAX_MESSAGE: usize = kosmos_proto::chain::MAX_BODY_BYTES + 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    #[error("gRPC server: {0}")]
    Transport(#[source] tonic::transport::Error),
}

/// Serve until `shutdown` resolves.
pub async fn run(listener: TcpListener, shared: Shared, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let pki = Arc::clone(&shared.pki);
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&pki.server_chain_pem, &pki.server_key_pem))
        .client_ca_root(Certificate::from_pem(&pki.ca_cert_pem))
        // Enroll is reached before the node has a certificate; Attest
        // refuses any stream without one.
        .client_auth_optional(true);
    Server::builder()
        // A gzip report is 10-20 KiB: accepting 64 KiB frames lets an
        // envelope arrive in one DATA frame instead of two.
        .max_frame_size(Some(64 * 1024))
        .tls_config(tls)
        .map_err(ServeError::Tls)?
        .add_service(AttestationServer::new(AttestService(shared.clone())).max_decoding_message_size(MAX_MESSAGE))
        .add_service(EnrollmentServer::new(EnrollService(shared)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(ServeError::Transport)
}
