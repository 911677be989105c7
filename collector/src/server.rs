//! `serve`: the gRPC endpoint, started on a listener the caller provides and
//! stopped by a shutdown future (so tests run it on 127.0.0.1:0).
//!
//! The collector accepts connections itself instead of leaving TLS to tonic,
//! because the port faces the network and a connection is a file descriptor
//! and memory held on behalf of whoever opened it:
//! - at most `max_connections` are held at once; beyond that a new one is
//!   closed at once (and counted), so strangers cannot exhaust descriptors;
//! - the TLS handshake must finish within `handshake_timeout`;
//! - a connection without a client certificate (enrollment) lives at most
//!   `unauthenticated_lifetime`;
//! - an enrolled node holds at most `max_connections_per_node`;
//! - any connection that sends nothing for `read_idle` is closed. The
//!   collector pings every `keepalive_interval` (HTTP/2 PING): a live peer
//!   answers, which counts as traffic, and a peer that does not answer within
//!   `keepalive_timeout` is dropped by HTTP/2 itself;
//! - an Attest stream that carries no envelope for `stream_idle` is ended
//!   (see [`crate::service`]), and a node has at most one live stream.
//!
//! The listening socket ([`listen`]) queues up to `max_connections`
//! handshakes the process has not accepted yet (the kernel caps the queue at
//! `net.core.somaxconn`): with the default of 128, a reconnect storm
//! overflowed it whenever the accept loop paused for a few milliseconds, and
//! every dropped SYN cost its client a one-second retransmission.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use kosmos_proto::v1::attestation_server::AttestationServer;
use kosmos_proto::v1::enrollment_server::EnrollmentServer;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::{CertificateLabel, Metrics, ReasonLabel};
use crate::pki::Pki;
use crate::service::{AttestService, EnrollService, Shared};

/// Largest envelope accepted on the wire (the body limit plus framing).
const MAX_MESSAGE: usize = kosmos_proto::chain::MAX_BODY_BYTES + 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("gRPC server: {0}")]
    Transport(#[source] tonic::transport::Error),
}

/// Connection and stream limits (`collector.toml`, see [`crate::config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_node: usize,
    pub handshake_timeout: Duration,
    pub unauthenticated_lifetime: Duration,
    pub read_idle: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub stream_idle: Duration,
}

impl Default for Limits {
    /// Sized for a fleet of 10,000 nodes (one connection each) with room
    /// for reconnect storms and enrollments; `LimitNOFILE` in the unit is
    /// larger still.
    fn default() -> Self {
        Limits {
            max_connections: 16_384,
            max_connections_per_node: 4,
            handshake_timeout: Duration::from_secs(10),
            unauthenticated_lifetime: Duration::from_secs(60),
            // Agents report every five minutes by default and each answer
            // to a ping costs a metered link ~40 bytes: a ping after five
            // quiet minutes, a connection closed after fifteen.
            read_idle: Duration::from_secs(900),
            keepalive_interval: Duration::from_secs(300),
            keepalive_timeout: Duration::from_secs(20),
            stream_idle: Duration::from_secs(960),
        }
    }
}

/// The rustls configuration of the gRPC port: the server certificate, and
/// client certificates verified against the collector CA but optional
/// (Enroll is reached before a node has one; Attest refuses a stream
/// without one).
fn tls_config(pki: &Pki) -> Result<rustls::ServerConfig, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pki.server_chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("server certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes())
        .map_err(|e| ServeError::Tls(format!("server key: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca_cert_pem.as_bytes()) {
        let ca = ca.map_err(|e| ServeError::Tls(format!("CA certificate: {e}")))?;
        roots.add(ca).map_err(|e| ServeError::Tls(format!("CA certificate: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .allow_unauthenticated()
        .build()
        .map_err(|e| ServeError::Tls(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ServeError::Tls(format!("server certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Publish the notAfter of the server certificate and of the CA, so that an
/// alert fires weeks before nodes can no longer connect. A certificate
/// x509-parser cannot read is logged and has no series (the alert rules
/// treat a missing series as a fault of its own).
fn record_certificate_expiry(pki: &Pki, metrics: &Metrics) {
    for (label, pem) in [("server", &pki.server_chain_pem), ("ca", &pki.ca_cert_pem)] {
        let not_after = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .ok_or_else(|| "no certificate in the PEM".to_string())
            .and_then(|der| der.map_err(|e| e.to_string()))
            .and_then(|der| crate::pki::not_after(der.as_ref()));
        match not_after {
            Ok(t) => {
                metrics.certificate_expiry.get_or_create(&CertificateLabel { certificate: label }).set(t);
            }
            Err(e) => tracing::warn!("cannot read the notAfter of the {label} certificate: {e}"),
        }
    }
}

/// Listen on `addr` with a queue of `backlog` connections not yet accepted
/// (the kernel caps it at `net.core.somaxconn`). `SO_REUSEADDR` is set, as
/// the standard library's `bind` does, so that a restarted collector can
/// listen again while connections of the previous one are in TIME_WAIT.
pub fn listen(addr: std::net::SocketAddr, backlog: usize) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(u32::try_from(backlog).unwrap_or(u32::MAX))
}

/// Serve until `shutdown` resolves.
pub async fn run(listener: TcpListener, shared: Shared, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let limits = shared.limits;
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&shared.pki)?));
    record_certificate_expiry(&shared.pki, &shared.metrics);
    let (conn_tx, conn_rx) = mpsc::channel::<TlsStream<Guarded>>(1024);
    let accepting = tokio::spawn(accept_loop(listener, acceptor, limits, Arc::clone(&shared.metrics), conn_tx));
    let incoming = ReceiverStream::new(conn_rx).map(Ok::<_, io::Error>);
    let served = Server::builder()
        // A gzip report is 10-20 KiB: accepting 64 KiB frames lets an
        // envelope arrive in one DATA frame instead of two.
        .max_frame_size(Some(64 * 1024))
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_service(AttestationServer::new(AttestService(shared.clone())).max_decoding_message_size(MAX_MESSAGE))
        .add_service(EnrollmentServer::new(EnrollService(shared)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(ServeError::Transport);
    accepting.abort();
    served
}

/// Accept TCP connections, hold them within the limits, and hand the ones
/// whose TLS handshake completed to the gRPC server.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    metrics: Arc<Metrics>,
    conns: mpsc::Sender<TlsStream<Guarded>>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_node: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.connections_refused.get_or_create(&ReasonLabel { reason: "max_connections" }).inc();
            tracing::debug!(%peer, "max_connections reached: connection closed");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let io = Guarded::new(tcp, permit, limits.read_idle, Arc::clone(&metrics));
        let acceptor = acceptor.clone();
        let metrics = Arc::clone(&metrics);
        let per_node = Arc::clone(&per_node);
        let conns = conns.clone();
        tokio::spawn(async move {
            let mut tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    metrics.handshakes_failed.get_or_create(&ReasonLabel { reason: "tls" }).inc();
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    metrics.handshakes_failed.get_or_create(&ReasonLabel { reason: "timeout" }).inc();
                    tracing::debug!(%peer, "TLS handshake not finished within {:?}", limits.handshake_timeout);
                    return;
                }
            };
            let node = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| kosmos_proto::identity::node_id_from_cert(leaf).ok());
            match node {
                None => tls.get_mut().0.limit_lifetime(limits.unauthenticated_lifetime),
                Some(node) => match NodeSlot::take(&per_node, &node, limits.max_connections_per_node) {
                    Some(slot) => tls.get_mut().0.node_slot = Some(slot),
                    None => {
                        metrics
                            .connections_refused
                            .get_or_create(&ReasonLabel { reason: "max_connections_per_node" })
                            .inc();
                        tracing::warn!(%peer, node, "node already holds {} connections: closed", limits.max_connections_per_node);
                        return;
                    }
                },
            }
            let _ = conns.send(tls).await;
        });
    }
}

/// One of a node's connections, counted while it lives.
#[derive(Debug)]
struct NodeSlot {
    node: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl NodeSlot {
    fn take(counts: &Arc<Mutex<HashMap<String, usize>>>, node: &str, max: usize) -> Option<NodeSlot> {
        let mut map = counts.lock().ok()?;
        let n = map.entry(node.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(NodeSlot { node: node.to_string(), counts: Arc::clone(counts) })
    }
}

impl Drop for NodeSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.counts.lock()
            && let Some(n) = map.get_mut(&self.node)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.node);
            }
        }
    }
}

/// A TCP connection held within the limits: it owns its connection slot
/// (released when it is dropped), and its reads fail once it has been silent
/// for `read_idle` or, without a client certificate, once it has lived for
/// the unauthenticated lifetime. hyper always has a read pending, so a
/// failed read closes the connection.
pub struct Guarded {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
    node_slot: Option<NodeSlot>,
    read_idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    lifetime: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").field("tcp", &self.tcp).field("node", &self.node_slot).finish_non_exhaustive()
    }
}

impl Guarded {
    fn new(tcp: TcpStream, slot: OwnedSemaphorePermit, read_idle: Duration, metrics: Arc<Metrics>) -> Guarded {
        metrics.connections_open.inc();
        Guarded {
            tcp,
            _slot: slot,
            node_slot: None,
            read_idle,
            idle_timer: Box::pin(tokio::time::sleep(read_idle)),
            lifetime: None,
            metrics,
        }
    }

    fn limit_lifetime(&mut self, lifetime: Duration) {
        self.lifetime = Some(Box::pin(tokio::time::sleep(lifetime)));
    }

    fn closed(&self, reason: &'static str) -> io::Error {
        self.metrics.connections_closed.get_or_create(&ReasonLabel { reason }).inc();
        io::Error::new(io::ErrorKind::TimedOut, format!("connection closed by the collector: {reason}"))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.metrics.connections_open.dec();
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(l) = this.lifetime.as_mut()
            && l.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(this.closed("unauthenticated_lifetime")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let deadline = Instant::now() + this.read_idle;
                    this.idle_timer.as_mut().reset(deadline);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.idle_timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(this.closed("read_idle")));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The queue of connections the process has not accepted yet holds as
    /// many as asked (up to the kernel's cap): a burst of connections to a
    /// collector that is busy for a moment completes instead of having its
    /// SYNs dropped. With the default backlog (tokio's `bind`: 128) the
    /// connections beyond it time out.
    #[tokio::test(flavor = "current_thread")]
    async fn the_accept_queue_holds_a_burst_the_process_has_not_accepted_yet() {
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(128);
        let burst = 600.min(cap.saturating_sub(8));
        assert!(burst > 200, "net.core.somaxconn is {cap}: too small to test a burst");
        let listener = listen("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
        let addr = listener.local_addr().unwrap();
        // Nothing accepts while the burst connects (blocking connects on
        // another thread: this runtime never polls the listener).
        let connected = tokio::task::spawn_blocking(move || {
            let mut held = Vec::new();
            for _ in 0..burst {
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                    Ok(s) => held.push(s),
                    Err(_) => break,
                }
            }
            held.len()
        })
        .await
        .unwrap();
        assert_eq!(connected, burst, "connections completed before the first accept");
        drop(listener);
    }
}
