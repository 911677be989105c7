//! Network probes of the live host: DNS resolution, TCP connect, a TLS
//! handshake verified against a given CA, and a minimal HTTPS GET. Every
//! step has its own timeout and reports its own error, so a finding can say
//! which layer broke. Offline roots refuse: probing from the auditor's
//! machine would describe the wrong network.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::Host;

/// Largest HTTP response read from a probe.
const MAX_RESPONSE: u64 = 256 * 1024;

/// What one step of a probe produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Step<T> {
    pub result: Result<T, String>,
    pub elapsed: Duration,
}

/// Status and body of an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl Host {
    fn require_live(&self, what: &str) -> Result<(), String> {
        if self.is_live() { Ok(()) } else { Err(format!("offline root: {what} is only probed on the running node")) }
    }

    /// Resolve `host:port`, giving up after `timeout` (the resolver itself
    /// has no timeout, so it runs on a helper thread).
    pub fn resolve_host(&self, host: &str, port: u16, timeout: Duration) -> Step<Vec<SocketAddr>> {
        let start = Instant::now();
        let result = self.require_live("DNS").and_then(|()| {
            let (tx, rx) = std::sync::mpsc::channel();
            let target = format!("{host}:{port}");
            std::thread::spawn(move || {
                let _ = tx.send(target.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
            });
            match rx.recv_timeout(timeout) {
                Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
                Ok(Ok(_)) => Err(format!("{host}: no address")),
                Ok(Err(e)) => Err(format!("{host}: {e}")),
                Err(_) => Err(format!("{host}: resolution timed out after {timeout:?}")),
            }
        });
        Step { result, elapsed: start.elapsed() }
    }

    /// Open a TCP connection to the first address that answers.
    pub fn tcp_connect(&self, addrs: &[SocketAddr], timeout: Duration) -> Step<TcpStream> {
        let start = Instant::now();
        let result = self.require_live("TCP connectivity").and_then(|()| {
            let mut errors = Vec::new();
            for a in addrs {
                match TcpStream::connect_timeout(a, timeout) {
                    Ok(s) => return Ok(s),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock =>
                    {
                        errors.push(format!("{a}: no answer within {timeout:?} (filtered or black-holed?)"));
                    }
                    Err(e) => errors.push(format!("{a}: {e}")),
                }
            }
            Err(errors.join("; "))
        });
        Step { result, elapsed: start.elapsed() }
    }

    /// TLS handshake over `stream`, verifying the server against `ca_pem`
    /// for `server_name`, then `GET path`. Returns the handshake step and
    /// the HTTP step (absent when the handshake failed).
    pub fn tls_get(
        &self,
        stream: TcpStream,
        ca_pem: &[u8],
        server_name: &str,
        path: &str,
        timeout: Duration,
    ) -> (Step<()>, Option<Step<HttpResponse>>) {
        let start = Instant::now();
        let fail = |e: String| (Step { result: Err(e), elapsed: start.elapsed() }, None);
        if let Err(e) = self.require_live("TLS") {
            return fail(e);
        }
        let mut roots = rustls::RootCertStore::empty();
        let mut count = 0;
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            match cert {
                Ok(c) => match roots.add(c) {
                    Ok(()) => count += 1,
                    Err(e) => return fail(format!("cluster CA certificate rejected: {e}")),
                },
                Err(e) => return fail(format!("cluster CA is not valid PEM: {e}")),
            }
        }
        if count == 0 {
            return fail("cluster CA contains no certificate".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
            Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
            Err(e) => return fail(format!("TLS configuration: {e}")),
        };
        let name = match ServerName::try_from(server_name.to_string()) {
            Ok(n) => n,
            Err(e) => return fail(format!("{server_name}: not a valid server name: {e}")),
        };
        let mut conn = match rustls::ClientConnection::new(Arc::new(config), name) {
            Ok(c) => c,
            Err(e) => return fail(format!("TLS: {e}")),
        };
        let mut sock = stream;
        if sock.set_read_timeout(Some(timeout)).and_then(|()| sock.set_write_timeout(Some(timeout))).is_err() {
            return fail("cannot set socket timeouts".into());
        }
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                let why = match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                        format!("no TLS answer within {timeout:?} (server too slow or not speaking TLS)")
                    }
                    _ => format!("TLS handshake failed: {e}"),
                };
                return fail(why);
            }
            if start.elapsed() > timeout * 2 {
                return fail(format!("TLS handshake took longer than {:?}", timeout * 2));
            }
        }
        let handshake = Step { result: Ok(()), elapsed: start.elapsed() };
        let http_start = Instant::now();
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {server_name}\r\nAccept: application/json\r\nUser-Agent: kosmos-node-agent\r\nConnection: close\r\n\r\n"
        );
        let result = (|| {
            tls.write_all(request.as_bytes()).map_err(|e| format!("sending GET {path}: {e}"))?;
            let mut buf = Vec::new();
            match tls.take(MAX_RESPONSE).read_to_end(&mut buf) {
                Ok(_) => {}
                // A server that closes without close_notify still sent its answer.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err(format!("no HTTP answer to GET {path} within {timeout:?}"));
                }
                Err(e) => return Err(format!("reading the answer to GET {path}: {e}")),
            }
            parse_http(&buf)
        })();
        (handshake, Some(Step { result, elapsed: http_start.elapsed() }))
    }
}

/// Parse an HTTP/1.1 response (status line, headers, body; a chunked body
/// is reassembled).
pub fn parse_http(raw: &[u8]) -> Result<HttpResponse, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("incomplete HTTP response")?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(format!("not an HTTP response: {:?}", status_line.chars().take(60).collect::<String>()));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or("bad HTTP status line")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").ok_or("truncated chunked body")?;
            let n =
                usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).map_err(|_| "bad chunk size")?;
            if n == 0 {
                break;
            }
            let chunk = after.get(..n).ok_or("truncated chunk")?;
            out.push_str(chunk);
            rest = after.get(n..).unwrap_or("").trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    Ok(HttpResponse { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http() {
        let r = parse_http(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"major\":\"1\"}").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "{\"major\":\"1\"}");
        let r =
            parse_http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!(r.body, "{\"a\":1}");
        assert!(parse_http(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_http(b"HTTP/1.1 200").is_err());
        assert!(parse_http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }

    #[test]
    fn offline_refuses() {
        let h = Host::offline("/nonexistent");
        assert!(h.resolve_host("localhost", 1, Duration::from_secs(1)).result.is_err());
        assert!(h.tcp_connect(&["127.0.0.1:1".parse().unwrap()], Duration::from_secs(1)).result.is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_http(&s);
            let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            v.extend_from_slice(&s);
            let _ = parse_http(&v);
        }
    }
}
