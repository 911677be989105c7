//! A throwaway PostgreSQL cluster for the tests: `initdb` into a temporary
//! directory, a server on a free loopback port (and a Unix socket in the
//! same directory), TLS with a certificate from a CA the test makes, and
//! `pg_ctl stop -m immediate` when dropped. It uses the server binaries of
//! Debian's `postgresql` package (`/usr/lib/postgresql/*/bin`, or
//! `KOSMOS_PG_BINDIR`); run as root, the cluster belongs to the `postgres`
//! user, because PostgreSQL refuses to run as root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// The role and database the tests use (the cluster's superuser).
pub const USER: &str = "kosmos";
pub const DATABASE: &str = "kosmos";
/// The role's password (password authentication over TCP).
pub const PASSWORD: &str = "kosmos-test-password";

/// A running throwaway cluster.
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    pub port: u16,
    /// The PEM of the CA that signed the server certificate (for
    /// `localhost` and 127.0.0.1).
    pub ca_pem: String,
}

impl std::fmt::Debug for TempPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempPostgres").field("dir", &self.dir.path()).field("port", &self.port).finish()
    }
}

/// The directory of the PostgreSQL server binaries, if installed.
pub fn bindir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KOSMOS_PG_BINDIR") {
        return Some(PathBuf::from(d));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    // The newest major version.
    found.sort_by_key(|b| {
        b.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    found.pop()
}

fn as_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A command run as the cluster's owner.
fn owner_command(program: &Path) -> Command {
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TempPostgres {
    /// Start a cluster, or None (after [`crate::cannot_run`]) when the
    /// PostgreSQL server binaries are not installed.
    pub fn start(test: &str) -> Option<TempPostgres> {
        let Some(bindir) = bindir() else {
            crate::cannot_run(test, "the PostgreSQL server binaries are not installed (Debian: postgresql)");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("kosmos-pg-").tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).unwrap();

        // TLS: a CA of the test's own and a server certificate it signed.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "kosmos test database CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        server_params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        let server = server_params.signed_by(&server_key, &Issuer::from_params(&ca_params, &ca_key)).unwrap();
        std::fs::write(data.join("server.crt"), server.pem()).unwrap();
        std::fs::write(data.join("server.key"), server_key.serialize_pem()).unwrap();

        if as_root() {
            run_ok(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()), "chown");
        }
        // The key must be private to the cluster's owner.
        run_ok(Command::new("chmod").args(["0600"]).arg(data.join("server.key")), "chmod");
        // initdb wants an empty directory: the certificate files go in after.
        let staging = dir.path().join("tls");
        std::fs::create_dir(&staging).unwrap();
        for f in ["server.crt", "server.key"] {
            std::fs::rename(data.join(f), staging.join(f)).unwrap();
        }
        run_ok(
            owner_command(&bindir.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", USER, "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        );
        for f in ["server.crt", "server.key"] {
            std::fs::rename(staging.join(f), data.join(f)).unwrap();
        }
        let port = free_port();
        // fsync off: a killed server (`restart`, `-m immediate`) still keeps
        // every acknowledged commit, because commits reach the operating
        // system before they are acknowledged (synchronous_commit stays on);
        // only a crash of the machine would lose them, which no test causes.
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nssl = on\n\
             fsync = off\nmax_connections = 200\n",
            dir.path().display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .unwrap();
        let pg = TempPostgres { dir, bindir, port, ca_pem: ca.pem() };
        pg.pg_ctl_start();
        run_ok(
            owner_command(&pg.bindir.join("createdb")).args(["-h"]).arg(pg.dir.path()).args([
                "-p",
                &port.to_string(),
                "-U",
                USER,
                DATABASE,
            ]),
            "createdb",
        );
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self) {
        run_ok(
            owner_command(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        );
    }

    /// Stop the server at once (as a crash would) and start it again.
    pub fn restart(&self) {
        self.stop();
        self.pg_ctl_start();
    }

    /// Stop the server at once (`-m immediate`: no shutdown checkpoint).
    pub fn stop(&self) {
        let _ = owner_command(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    /// Wait until the server accepts connections again.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ok = Command::new(self.bindir.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("PostgreSQL did not come back within {timeout:?}");
    }

    /// A URL over TCP with TLS verified against [`TempPostgres::ca_pem`]
    /// (no password in it: the collector reads it from a file).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@localhost:{}/{DATABASE}?sslmode=require", self.port)
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The temporary directory (holds the Unix socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
