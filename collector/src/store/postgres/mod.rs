//! PostgreSQL, the store for fleets that outgrow one machine: several
//! collector replicas share one database.
//!
//! This module owns how the collector reaches the database: the URL (no
//! password in it), the password (from a file or the environment), and TLS
//! through rustls with certificate verification, required for any host that
//! is not this machine. [`schema`] owns the versioned migrations.
//!
//! [`store::PgStore`] implements `Store` and `EvidenceRead`, and
//! [`fleet::PgFleetReader`] `FleetRead`; `store_url` in `collector.toml`
//! selects them (`crate::config`).

pub mod fleet;
mod outbox;
pub mod schema;
pub mod store;

use std::net::IpAddr;

use ::postgres::config::{Host, SslMode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::StoreError;

/// A PostgreSQL connection that may be dropped on any thread. The
/// synchronous client closes its connection by blocking on a runtime of its
/// own, which panics on a thread that drives async tasks (the collector's
/// runtime drops what its tasks still hold when it shuts down); there the
/// close moves to a thread of its own.
pub struct Conn(Option<::postgres::Client>);

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("closed", &self.0.as_ref().map(::postgres::Client::is_closed)).finish()
    }
}

impl Conn {
    pub(crate) fn new(client: ::postgres::Client) -> Conn {
        Conn(Some(client))
    }
}

impl std::ops::Deref for Conn {
    type Target = ::postgres::Client;
    fn deref(&self) -> &::postgres::Client {
        // Invariant: the client is taken out only in `drop`.
        #[allow(clippy::expect_used)]
        self.0.as_ref().expect("a connection is present until dropped")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut ::postgres::Client {
        // Invariant: the client is taken out only in `drop`.
        #[allow(clippy::expect_used)]
        self.0.as_mut().expect("a connection is present until dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new().name("pg-close".into()).spawn(move || drop(client));
            } else {
                drop(client);
            }
        }
    }
}

/// Wrap a PostgreSQL error with what the store was doing.
pub(crate) fn pg(doing: &'static str) -> impl FnOnce(::postgres::Error) -> StoreError {
    move |source| StoreError::Backend { doing, source: Box::new(PgError(source)) }
}

/// A PostgreSQL error whose message is the server's: the client's own
/// `Display` of a server error is only "db error", which told an operator
/// (and an agent's `store_failed` event) nothing.
#[derive(Debug)]
struct PgError(::postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(f, "{} {}: {}", db.severity(), db.code().code(), db.message())?;
                if let Some(detail) = db.detail() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// What is wrong with how the database is to be reached.
#[derive(Debug, thiserror::Error)]
pub enum PgSettingsError {
    #[error("store_url: {0}")]
    Url(String),
    #[error(
        "store_url carries a password: it belongs in store_password_file (or KOSMOS_COLLECTOR_STORE_PASSWORD), never in the configuration"
    )]
    PasswordInUrl,
    #[error(
        "store_url: the database host {host} is not this machine, so TLS is required: add sslmode=require (the server certificate is then verified)"
    )]
    TlsRequired { host: String },
    #[error("store_ca_file {path}: {why}")]
    Ca { path: String, why: String },
}

/// How to reach the database.
#[derive(Clone)]
pub struct PgSettings {
    config: ::postgres::Config,
    /// Trust anchors for the server certificate: the `store_ca_file`'s, or
    /// the system's.
    roots: std::sync::Arc<rustls::RootCertStore>,
    /// The readers' pool, made at the first read and shared by every clone
    /// of these settings (the dashboard's, the CLI's).
    readers: std::sync::Arc<std::sync::OnceLock<r2d2::Pool<Readers>>>,
}

/// Most connections the readers hold at once: the dashboard's change
/// watcher, a rebuild on two connections, node pages and reports.
const MAX_READERS: u32 = 8;

/// The readers' connections: opened as the store's (TLS verified), checked
/// with an empty query when taken from the pool (a database restart closes
/// them all), closed after five idle minutes, and always closed off the
/// async runtime ([`Conn`]).
#[derive(Debug)]
pub struct Readers(PgSettings);

impl r2d2::ManageConnection for Readers {
    type Connection = Conn;
    type Error = StoreError;

    fn connect(&self) -> Result<Conn, StoreError> {
        self.0.conn()
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), StoreError> {
        conn.simple_query("").map(|_| ()).map_err(pg("checking a pooled connection"))
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.is_closed()
    }
}

/// A reader's connection, back to the pool when dropped.
pub(crate) type ReaderConn = r2d2::PooledConnection<Readers>;

impl std::fmt::Display for PgSettings {
    /// `postgres://USER@HOST[,HOST…]/DATABASE`, never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        write!(
            f,
            "postgres://{}@{}/{}",
            self.config.get_user().unwrap_or(""),
            hosts.join(","),
            self.config.get_dbname().unwrap_or("")
        )
    }
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PgSettings")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .finish_non_exhaustive()
    }
}

/// Whether a host is this machine: a Unix socket, `localhost` or a
/// loopback address.
fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    }
}

impl PgSettings {
    /// Parse a `postgres://` URL (or a `key=value` connection string),
    /// refusing a password in it and a remote host without TLS. `password`
    /// comes from `store_password_file` or the environment; `ca_pem` is
    /// (where it came from, its PEM text), from `store_ca_file`.
    pub fn new(url: &str, password: Option<&str>, ca_pem: Option<(&str, &str)>) -> Result<PgSettings, PgSettingsError> {
        let mut config: ::postgres::Config =
            url.parse().map_err(|e: ::postgres::Error| PgSettingsError::Url(e.to_string()))?;
        if config.get_password().is_some() {
            return Err(PgSettingsError::PasswordInUrl);
        }
        if config.get_hosts().is_empty() {
            return Err(PgSettingsError::Url("no host".into()));
        }
        if let Some(remote) = config.get_hosts().iter().find(|h| !is_local(h))
            && config.get_ssl_mode() != SslMode::Require
        {
            let host = match remote {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            return Err(PgSettingsError::TlsRequired { host });
        }
        if let Some(p) = password {
            config.password(p);
        }
        let mut roots = rustls::RootCertStore::empty();
        match ca_pem {
            Some((source, pem)) => {
                let ca_err = |why: String| PgSettingsError::Ca { path: source.to_string(), why };
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| ca_err(e.to_string()))?;
                    roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(ca_err("no certificate in it".into()));
                }
            }
            None => {
                // The system's trust store (Debian: /etc/ssl/certs); a
                // certificate it cannot parse is skipped, as every TLS
                // client on the system skips it.
                let found = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                let _ = added;
            }
        }
        Ok(PgSettings { config, roots: std::sync::Arc::new(roots), readers: Default::default() })
    }

    /// Open one connection (TLS as the URL's `sslmode` says, verified
    /// against the trust anchors).
    pub fn connect(&self) -> Result<::postgres::Client, StoreError> {
        self.client()
    }

    /// A connection from the readers' pool (opened when none is idle; waits
    /// up to 15 s when all [`MAX_READERS`] are taken).
    pub(crate) fn reader(&self) -> Result<ReaderConn, StoreError> {
        let pool = self.readers.get_or_init(|| {
            r2d2::Pool::builder()
                .max_size(MAX_READERS)
                .min_idle(Some(0))
                .idle_timeout(Some(std::time::Duration::from_secs(300)))
                .connection_timeout(std::time::Duration::from_secs(15))
                .build_unchecked(Readers(PgSettings { readers: Default::default(), ..self.clone() }))
        });
        pool.get().map_err(|e| StoreError::Open { path: format!("{self:?}"), source: e.into() })
    }

    /// [`PgSettings::connect`], as a connection the store may drop anywhere.
    pub(crate) fn conn(&self) -> Result<Conn, StoreError> {
        self.client().map(Conn::new)
    }

    fn client(&self) -> Result<::postgres::Client, StoreError> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Backend { doing: "setting up TLS to the database", source: e.into() })?
            .with_root_certificates(std::sync::Arc::clone(&self.roots))
            .with_no_client_auth();
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config);
        let shown = format!("{self:?}");
        self.config.connect(tls).map_err(|e| StoreError::Open { path: shown, source: e.into() })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn refused(url: &str) -> String {
        PgSettings::new(url, None, None).unwrap_err().to_string()
    }

    #[test]
    fn a_password_in_the_url_is_refused() {
        let e = refused("postgres://kosmos:secret@localhost/kosmos");
        assert!(e.contains("store_password_file"), "{e}");
        assert!(!e.contains("secret"), "the message must not repeat the password: {e}");
        let e = refused("host=localhost user=kosmos password=secret");
        assert!(e.contains("never in the configuration"), "{e}");
    }

    #[test]
    fn a_remote_host_needs_tls_required_not_preferred() {
        for url in [
            "postgres://kosmos@db.example.com/kosmos",
            "postgres://kosmos@db.example.com/kosmos?sslmode=prefer",
            "postgres://kosmos@db.example.com/kosmos?sslmode=disable",
            "postgres://kosmos@10.0.0.5:5432/kosmos",
            // One remote host among local ones is enough.
            "host=localhost,db.example.com user=kosmos",
        ] {
            let e = refused(url);
            assert!(e.contains("TLS is required") && e.contains("sslmode=require"), "{url}: {e}");
        }
        assert!(refused("postgres://kosmos@db.example.com/kosmos").contains("db.example.com"));
        PgSettings::new("postgres://kosmos@db.example.com/kosmos?sslmode=require", Some("pw"), None).unwrap();
    }

    #[test]
    fn this_machine_may_be_reached_without_tls() {
        for url in [
            "postgres://kosmos@localhost/kosmos",
            "postgres://kosmos@127.0.0.1:5433/kosmos",
            "postgres://kosmos@[::1]/kosmos",
            "host=/run/postgresql user=kosmos dbname=kosmos",
        ] {
            PgSettings::new(url, None, None).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn malformed_urls_and_ca_files_are_errors_naming_the_option() {
        assert!(refused("postgres://kosmos@localhost:notaport/kosmos").starts_with("store_url:"));
        assert!(refused("mysql://x").starts_with("store_url:"));
        let e = PgSettings::new("postgres://kosmos@localhost/kosmos", None, Some(("/etc/kosmos/db-ca.pem", "not pem")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("store_ca_file /etc/kosmos/db-ca.pem:"), "{e}");
    }

    #[test]
    fn the_debug_form_never_shows_the_password() {
        let s = PgSettings::new("postgres://kosmos@localhost/kosmos", Some("hunter2-secret"), None).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("kosmos"), "{shown}");
    }
}
