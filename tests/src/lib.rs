//! Shared helpers for the end-to-end tests: the real `kosmos-collector` and
//! `kosmos-node-agent` binaries started on loopback in temporary directories,
//! plus a hand-driven node client that can send crafted envelopes (tampered,
//! replayed, forked) with a real enrolled identity.
//!
//! The binaries are located next to the test executable's target directory
//! (`target/<profile>/`); `cargo test --workspace` builds them first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_debug_implementations)]

pub mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use kosmos_proto::v1::attestation_client::AttestationClient;
use kosmos_proto::v1::{Ack, AttestationBody, AttestationEnvelope};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The repository's top directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The cargo target directory of this test run (`target/`, or
/// `CARGO_TARGET_DIR`): the test executable is `<target>/<profile>/deps/<test>`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// Path of a workspace binary built for this test run.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace` (or `cargo test --workspace`) first",
        p.display()
    );
    p
}

/// Whether this run is CI (`CI=true`, as `.ci/run` and every CI service set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A test that cannot set up its real component (a tool, a build, a
/// service): in CI this fails the test, loudly, because a test that passes
/// without running proves nothing; elsewhere it prints that the test was
/// skipped and why, and the caller returns.
pub fn cannot_run(test: &str, why: &str) {
    assert!(!in_ci(), "{test} cannot set up its real component in CI: {why}");
    eprintln!("\n*** SKIPPED {test}: {why} (in CI, with CI=true, this fails) ***\n");
}

/// Run a command to completion, returning (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `[tls]` table naming the CA and server certificate files of the
/// collector in `dir`: what a replica's `collector.toml` adds to share them.
pub fn shared_pki_toml(dir: &Path) -> String {
    format!(
        "[tls]\nca_cert = \"{0}/ca.pem\"\nca_key = \"{0}/ca-key.pem\"\nserver_cert = \"{0}/server.pem\"\nserver_key = \"{0}/server-key.pem\"\n",
        dir.display()
    )
}

/// A test's handle on a collector's store. Every call runs on a thread of
/// its own: PostgreSQL's synchronous client cannot run on an async
/// runtime's thread, and tests call from both kinds.
pub struct TestStore(Box<dyn kosmos_collector::store::Store>);

impl TestStore {
    fn off_runtime<R: Send>(&mut self, f: impl FnOnce(&mut dyn kosmos_collector::store::Store) -> R + Send) -> R {
        let store = &mut *self.0;
        std::thread::scope(|s| s.spawn(|| f(store)).join().unwrap())
    }

    pub fn node(&mut self, id: &str) -> Result<Option<kosmos_collector::store::NodeRecord>, StoreError> {
        self.off_runtime(|s| s.node(id))
    }

    pub fn nodes(&mut self) -> Result<Vec<kosmos_collector::store::NodeRecord>, StoreError> {
        self.off_runtime(|s| s.nodes())
    }

    pub fn events(&mut self, node_id: &str) -> Result<Vec<kosmos_collector::store::NodeEvent>, StoreError> {
        self.off_runtime(|s| s.events(node_id))
    }

    pub fn envelopes(&mut self, node_id: &str) -> Result<Vec<kosmos_collector::store::StoredEnvelope>, StoreError> {
        self.off_runtime(|s| s.envelopes(node_id))
    }

    pub fn envelope_hash(&mut self, node_id: &str, seq: u64) -> Result<Option<[u8; 32]>, StoreError> {
        self.off_runtime(|s| s.envelope_hash(node_id, seq))
    }
}

type StoreError = kosmos_collector::store::StoreError;

/// Inodes of the TCP sockets, listeners aside, whose local port is `port`.
fn socket_inodes_on_local_port(port: u16) -> std::collections::HashSet<String> {
    let local = format!(":{port:04X}");
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Fields: sl, local, remote, state (0A: listening), …, inode (10th).
            if let (Some(loc), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9))
                && loc.ends_with(&local)
                && *state != "0A"
            {
                inodes.insert((*inode).to_string());
            }
        }
    }
    inodes
}

/// A collector process with its own data directory.
pub struct Collector {
    pub data_dir: PathBuf,
    pub addr: String,
    /// The dashboard and /metrics address.
    pub http_addr: String,
    child: Option<Child>,
}

impl Collector {
    pub fn cmd(data_dir: &Path) -> Command {
        let mut c = Command::new(bin("kosmos-collector"));
        c.arg("--config").arg(data_dir.join("collector.toml")).arg("--data-dir").arg(data_dir);
        c.env("KOSMOS_COLLECTOR_LOG", "warn");
        c
    }

    /// `collector.toml` lines for a new database on the cluster that
    /// `KOSMOS_E2E_PG_URL` names (with `KOSMOS_E2E_PG_PASSWORD_FILE` and
    /// `KOSMOS_E2E_PG_CA`); None when it names none.
    fn pg_store_for_new_collector() -> Option<String> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let url = std::env::var("KOSMOS_E2E_PG_URL").ok()?;
        let password_file = std::env::var("KOSMOS_E2E_PG_PASSWORD_FILE").unwrap();
        let ca_file = std::env::var("KOSMOS_E2E_PG_CA").unwrap();
        let password = std::fs::read_to_string(&password_file).unwrap();
        let ca = std::fs::read_to_string(&ca_file).unwrap();
        let admin =
            kosmos_collector::store::postgres::PgSettings::new(&url, Some(password.trim()), Some((&ca_file, &ca)))
                .unwrap();
        let db = format!("e2e_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        // Off any async runtime: the synchronous client runs one of its own.
        let create = format!("CREATE DATABASE {db}");
        std::thread::spawn(move || admin.connect().unwrap().batch_execute(&create).unwrap()).join().unwrap();
        let (base, query) = url.split_once('?').unwrap_or((&url, ""));
        let (server, _) = base.rsplit_once('/').unwrap();
        Some(format!(
            "store_url = \"{server}/{db}?{query}\"\nstore_password_file = \"{password_file}\"\nstore_ca_file = \"{ca_file}\"\n"
        ))
    }

    /// Create a data directory with a minimal `collector.toml` (kept if
    /// one is there already).
    pub fn prepare(data_dir: &Path) {
        std::fs::create_dir_all(data_dir).unwrap();
        let cfg = data_dir.join("collector.toml");
        let mut text = std::fs::read_to_string(&cfg).unwrap_or_else(|_| "# test collector\n".into());
        // The suite on PostgreSQL (`KOSMOS_E2E_PG_URL`, see
        // `kosmos-e2e-pg`): a database of its own for each collector, the
        // keys first (before any table of the test's own configuration).
        if !text.contains("store_url")
            && let Some(store) = Self::pg_store_for_new_collector()
        {
            text = format!("{store}{text}");
        }
        std::fs::write(&cfg, text).unwrap();
    }

    /// Start a collector on 127.0.0.1 (a free port, or `port` to reuse one).
    pub fn start(data_dir: &Path, port: u16) -> Collector {
        Self::start_with_stderr(data_dir, port, Stdio::inherit())
    }

    /// [`Collector::start`], with the collector's stderr going to `stderr`
    /// (a file, for a test that reads the log).
    pub fn start_with_stderr(data_dir: &Path, port: u16, stderr: Stdio) -> Collector {
        Self::start_on(data_dir, &format!("127.0.0.1:{port}"), stderr)
    }

    /// A collector whose gRPC endpoint listens on `grpc_listen` (another
    /// loopback address, e.g. `127.0.0.2:PORT`).
    pub fn start_on(data_dir: &Path, grpc_listen: &str, stderr: Stdio) -> Collector {
        Self::prepare(data_dir);
        let _ = std::fs::remove_file(data_dir.join("grpc.addr"));
        let mut child = Self::cmd(data_dir)
            .args(["serve", "--grpc-listen", grpc_listen, "--http-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "collector did not start: {line:?}");
        let addr = std::fs::read_to_string(data_dir.join("grpc.addr")).unwrap().trim().to_string();
        let http_addr = std::fs::read_to_string(data_dir.join("http.addr")).unwrap().trim().to_string();
        Collector { data_dir: data_dir.to_path_buf(), addr, http_addr, child: Some(child) }
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn token(&self, ttl: &str) -> String {
        let (code, out, err) = run(Self::cmd(&self.data_dir).args(["token", "create", "--ttl", ttl]));
        assert_eq!(code, 0, "token create: {err}");
        out.lines().next().unwrap().trim().to_string()
    }

    pub fn fingerprint(&self) -> String {
        let (code, out, err) = run(Self::cmd(&self.data_dir).args(["ca", "fingerprint"]));
        assert_eq!(code, 0, "ca fingerprint: {err}");
        out.trim().to_string()
    }

    pub fn revoke(&self, node: &str) {
        let (code, _, err) = run(Self::cmd(&self.data_dir).args(["node", "revoke", node]));
        assert_eq!(code, 0, "node revoke: {err}");
    }

    /// The collector's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Open file descriptors of the collector process.
    /// The collector's open client connections: its descriptors of TCP
    /// sockets on its gRPC port, the listener aside. (Not every descriptor:
    /// on PostgreSQL the readers' pool opens and closes connections, each
    /// with a runtime of its own, by rules of its own.)
    pub fn client_connections(&self) -> usize {
        let pid = self.pid().expect("collector running");
        let ours = socket_inodes_on_local_port(self.port());
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        let target = std::fs::read_link(e.path()).unwrap_or_default();
                        let target = target.to_string_lossy();
                        target
                            .strip_prefix("socket:[")
                            .and_then(|t| t.strip_suffix(']'))
                            .is_some_and(|i| ours.contains(i))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Stop with SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    /// Kill with SIGKILL (a crash) and wait.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Open the store directly (as an auditor with access to the data dir
    /// would): the one its configuration names, SQLite or PostgreSQL.
    pub fn store(&self) -> TestStore {
        let config = self.data_dir.join("collector.toml");
        let location = kosmos_collector::config::Config::load(Some(&config), Some(&self.data_dir)).unwrap().store;
        TestStore(std::thread::scope(|s| s.spawn(|| location.open().unwrap()).join().unwrap()))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An agent's state and configuration in a temporary directory.
pub struct Agent {
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    /// The agent binary (the workspace's, unless a test brings another build).
    pub binary: PathBuf,
}

impl Agent {
    pub fn new(dir: &Path) -> Agent {
        Self::with_binary(dir, &bin("kosmos-node-agent"))
    }

    /// An agent run from another build of the binary (e.g. a release build).
    pub fn with_binary(dir: &Path, binary: &Path) -> Agent {
        let state_dir = dir.join("state");
        std::fs::create_dir_all(dir).unwrap();
        Agent { dir: dir.to_path_buf(), state_dir, config: dir.join("agent.toml"), binary: binary.to_path_buf() }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.env("KOSMOS_AGENT_LOG", "warn");
        c
    }

    pub fn enroll(&self, collector: &Collector, token: &str, fingerprint: &str) -> (i32, String, String) {
        run(self.cmd().args([
            "enroll",
            "--collector",
            &collector.url(),
            "--token",
            token,
            "--ca-fingerprint",
            fingerprint,
            "--state-dir",
            self.state_dir.to_str().unwrap(),
        ]))
    }

    /// Write agent.toml pointing at `collector`, auditing the offline `root`.
    pub fn configure(&self, collector_url: &str, root: &Path, extra: &str) {
        std::fs::write(
            &self.config,
            format!(
                "collector_url = \"{collector_url}\"\nstate_dir = \"{}\"\nroot = \"{}\"\nwatch = false\nbackoff_min_ms = 100\nbackoff_max_ms = 1000\n{extra}",
                self.state_dir.display(),
                root.display()
            ),
        )
        .unwrap();
    }

    pub fn run_once(&self) -> (i32, String, String) {
        run(self.cmd().args(["run", "--once", "--timeout", "30", "--config", self.config.to_str().unwrap()]))
    }

    pub fn spawn_daemon(&self) -> Child {
        self.cmd()
            .args(["run", "--config", self.config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    pub fn node_id(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("node_id")).unwrap().trim().to_string()
    }

    pub fn signing_key(&self) -> SigningKey {
        let pem = std::fs::read_to_string(self.state_dir.join("key.pem")).unwrap();
        SigningKey::from_pkcs8_pem(&pem).unwrap()
    }

    pub fn cert_der(&self) -> Vec<u8> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let pem = std::fs::read(self.state_dir.join("cert.pem")).unwrap();
        CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap().to_vec()
    }
}

/// A plain HTTP/1.1 GET on loopback: (status, headers, body). Enough for the
/// dashboard tests without an HTTP client dependency.
pub fn http_get(addr: &str, path: &str, bearer: Option<&str>) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (status, head.to_string(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Render `url` in headless Chromium (Debian's `chromium`, installed by
/// `.ci/run`): the DOM after rendering, and a PNG screenshot at `png`.
pub fn chromium(url: &str, png: &Path) -> String {
    let exe = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("chromium is not installed: .ci/run installs Debian's chromium package");
    let profile = tempfile::tempdir().unwrap();
    let common = |c: &mut Command| {
        c.arg("60")
            .arg(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                // /dev/shm is small in containers; a renderer that runs out
                // of it hangs rather than fails.
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    // Headless Chromium now and then hangs at start on a loaded machine
    // (seen in CI: "Failed to send GetTerminationStatus message to zygote",
    // killed by the 60 s timeout, exit 124). A hang is tried once more; any
    // other failure, or a second hang, fails the test.
    let run_chromium = |what: &str, extra: &dyn Fn(&mut Command)| {
        let mut last = (0, String::new(), String::new());
        for _ in 0..2 {
            let mut c = Command::new("timeout");
            common(&mut c);
            extra(&mut c);
            last = run(&mut c);
            if last.0 != 124 {
                break;
            }
        }
        assert_eq!(last.0, 0, "chromium {what} failed: {}", last.2);
        last.1
    };
    run_chromium("--screenshot", &|c: &mut Command| {
        c.arg(format!("--screenshot={}", png.display())).arg("--window-size=1400,2400").arg(url);
    });
    run_chromium("--dump-dom", &|c: &mut Command| {
        c.arg("--dump-dom").arg(url);
    })
}

/// Every `data-summary="key">value<` of a rendered page.
pub fn dom_summary(dom: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut rest = dom;
    while let Some(i) = rest.find("data-summary=\"") {
        rest = &rest[i + 14..];
        let Some(end) = rest.find('"') else { break };
        let key = rest[..end].to_string();
        let Some(gt) = rest.find('>') else { break };
        let Some(lt) = rest[gt..].find('<') else { break };
        out.insert(key, rest[gt + 1..gt + lt].trim().to_string());
        rest = &rest[gt..];
    }
    out
}

/// A gRPC channel to the collector with the given client identity (or none).
pub async fn channel(
    collector: &Collector,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let ca = std::fs::read_to_string(collector.data_dir.join("ca.pem")).unwrap();
    channel_to(&collector.url(), &ca, identity).await
}

/// A gRPC channel to `url` trusting `ca_pem`, with an optional client identity.
pub async fn channel_to(
    url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("127.0.0.1");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A node enrolled by hand (not by the agent binary): its id, certificate
/// and key, for sending crafted envelopes.
pub struct RawNode {
    pub id: String,
    pub cert: String,
    pub key_pem: String,
    pub key: SigningKey,
}

/// A PKCS#10 request for a fresh Ed25519 key: (CSR PEM, key PEM).
pub fn new_csr() -> (String, String) {
    use rcgen::{CertificateParams, KeyPair, PKCS_ED25519};
    let kp = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let csr = CertificateParams::default().serialize_request(&kp).unwrap().pem().unwrap();
    (csr, kp.serialize_pem())
}

/// Enroll a node with `token` as `hostname`, the way the agent does but with
/// any hostname.
pub async fn enroll_raw(url: &str, ca_pem: &str, token: &str, hostname: &str) -> Result<RawNode, tonic::Status> {
    use kosmos_proto::v1::EnrollRequest;
    use kosmos_proto::v1::enrollment_client::EnrollmentClient;
    let (csr_pem, key_pem) = new_csr();
    let ch = channel_to(url, ca_pem, None).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let resp = EnrollmentClient::new(ch)
        .enroll(EnrollRequest {
            token: token.to_string(),
            csr_pem,
            hostname: hostname.to_string(),
            machine_id: String::new(),
        })
        .await?
        .into_inner();
    let key = SigningKey::from_pkcs8_pem(&key_pem).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(RawNode { id: resp.node_id, cert: resp.certificate_pem, key_pem, key })
}

/// Enroll `n` nodes for a load test: tokens straight into the collector's
/// store in `data_dir` (the benches measure ingest, not token creation),
/// then the real Enroll RPC, 16 at a time (each is a TLS handshake and a
/// CSR signature).
pub async fn enroll_fleet(data_dir: &Path, url: &str, ca: &str, n: usize) -> Result<Vec<RawNode>, String> {
    // The store the collector's configuration names (SQLite in the data
    // directory, or PostgreSQL), opened off the async runtime.
    let dir = data_dir.to_path_buf();
    let tokens = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
        let config = dir.join("collector.toml");
        let location = if config.exists() {
            kosmos_collector::config::Config::load(Some(&config), Some(&dir)).map_err(|e| e.to_string())?.store
        } else {
            kosmos_collector::store::StoreLocation::Sqlite(dir.join("collector.db"))
        };
        let mut store = location.open().map_err(|e| e.to_string())?;
        let now = kosmos_collector::store::now_ms();
        let mut tokens = Vec::new();
        for i in 0..n {
            let t = format!("loadgen-{now}-{i}");
            store
                .create_token(&kosmos_collector::service::token_hash(&t), now, now + 3_600_000)
                .map_err(|e| e.to_string())?;
            tokens.push(t);
        }
        Ok(tokens)
    })
    .await
    .map_err(|e| e.to_string())??;
    let mut nodes = Vec::with_capacity(n);
    for chunk in tokens.chunks(16) {
        let joins: Vec<_> = chunk
            .iter()
            .map(|t| {
                let (url, ca, t) = (url.to_string(), ca.to_string(), t.clone());
                tokio::spawn(async move { enroll_raw(&url, &ca, &t, "loadgen").await })
            })
            .collect();
        for j in joins {
            nodes.push(j.await.map_err(|e| e.to_string())?.map_err(|e| format!("enroll: {}", e.message()))?);
        }
    }
    Ok(nodes)
}

/// Raise this process's open-files soft limit to its hard limit (tests that
/// open thousands of connections).
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    hard
}

/// The agent's own identity files, as PEM strings.
pub fn identity_of(agent: &Agent) -> (String, String) {
    (
        std::fs::read_to_string(agent.state_dir.join("cert.pem")).unwrap(),
        std::fs::read_to_string(agent.state_dir.join("key.pem")).unwrap(),
    )
}

/// Send envelopes on one Attest stream and collect the acks (until the
/// server closes or `expect` acks arrived).
pub async fn attest(channel: Channel, envelopes: Vec<AttestationEnvelope>) -> Result<Vec<Ack>, tonic::Status> {
    let expect = envelopes.len();
    let mut client = AttestationClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(expect.max(1));
    for e in envelopes {
        tx.send(e).await.unwrap();
    }
    let mut inbound = client.attest(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acks.len() < expect && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Ok(Ok(Some(ack))) => {
                let stop = !ack.error.is_empty();
                acks.push(ack);
                if stop {
                    break;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(status)) => return Err(status),
            Err(_) => break,
        }
    }
    drop(tx);
    Ok(acks)
}

/// A body for node `node_id` at `seq` chained on `prev`.
pub fn body(node_id: &str, seq: u64, prev: [u8; 32], report: &[u8]) -> AttestationBody {
    AttestationBody {
        node_id: node_id.to_string(),
        seq,
        prev_hash: prev.to_vec(),
        created_at_unix_ms: time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
        agent_version: "e2e".into(),
        profile_name: "e2e".into(),
        profile_version: "1".into(),
        trigger: kosmos_proto::v1::Trigger::Manual as i32,
        report_json: report.to_vec().into(),
        dropped: None,
        families: Vec::new(),
        // Plain JSON without a digest: what a body from an agent before the
        // gzip encoding looks like, which the collector still indexes.
        ..Default::default()
    }
}

/// `kosmos-node-agent check` of the offline root `root` (state in `state`,
/// waivers and end-of-life dates judged as of `as_of`, never failing on
/// findings) in `output` format: its standard output, after checking that
/// it exited 0.
pub fn agent_check(root: &Path, state: &Path, output: &str, as_of: &str) -> String {
    std::fs::create_dir_all(state).unwrap();
    let out = Command::new(bin("kosmos-node-agent"))
        .env("KOSMOS_AGENT_LOG", "warn")
        .arg("check")
        .arg("--root")
        .arg(root)
        .args(["--output", output, "--fail-on", "none", "--as-of", as_of, "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "kosmos-node-agent check --root {} --output {output}: {stderr}",
        root.display()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Wait until `f` holds, polling, or panic after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}
