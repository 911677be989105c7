//! Command-line interface of the collector: `serve`, `token create`,
//! `node list|revoke`, `ca fingerprint`.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::pki::{Pki, PkiError};
use crate::service::{Shared, new_token, token_hash};
use crate::store::sqlite::SqliteStore;
use crate::store::writer::StoreWriter;
use crate::store::{Store, StoreError, now_ms};

#[derive(Debug, Parser)]
#[command(name = "kosmos-collector", version, about = "Collects and verifies kosmos-node-agent attestations")]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (database, CA, server certificate); overrides the config.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC endpoint (attestations and enrollment).
    Serve {
        /// Listen address, e.g. 0.0.0.0:7443 (overrides grpc_listen).
        #[arg(long, value_name = "ADDR")]
        grpc_listen: Option<std::net::SocketAddr>,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Enrolled nodes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// The collector CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a one-time enrollment token and print it.
    Create {
        /// How long the token stays valid (e.g. 30m, 1h, 7d).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List enrolled nodes.
    List,
    /// Revoke a node: its certificate is refused from now on.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the CA fingerprint that agents pin at enrollment.
    Fingerprint,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no such node {0}")]
    UnknownNode(String),
    #[error("{0}")]
    Other(String),
}

fn prepare_data_dir(cfg: &Config) -> Result<(), CliError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.data_dir)
        .map_err(|e| CliError::Io { path: cfg.data_dir.display().to_string(), source: e })
}

fn open(cfg: &Config) -> Result<(Pki, SqliteStore), CliError> {
    prepare_data_dir(cfg)?;
    let pki = Pki::load_or_create(&cfg.pki, &cfg.server_names, cfg.pki_managed)?;
    let store = SqliteStore::open(&cfg.database())?;
    Ok((pki, store))
}

fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<u8, CliError> {
    let cfg = Config::load(cli.config.as_deref(), cli.data_dir.as_deref())?;
    match cli.command {
        Command::Serve { grpc_listen } => serve(cfg, grpc_listen),
        Command::Token { command: TokenCommand::Create { ttl } } => {
            let (pki, mut store) = open(&cfg)?;
            let token = new_token().map_err(CliError::Other)?;
            let now = now_ms();
            let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            store.create_token(&token_hash(&token), now, now.saturating_add(ttl_ms))?;
            say(&format!(
                "{token}\n# valid for {}, single use. On the node:\n#   kosmos-node-agent enroll --collector https://{} --token {token} --ca-fingerprint {}\n",
                humantime::format_duration(ttl),
                cfg.grpc_listen,
                pki.ca_fingerprint()
            ));
            Ok(0)
        }
        Command::Node { command: NodeCommand::List } => {
            let (_, mut store) = open(&cfg)?;
            for n in store.nodes()? {
                let state = if n.revoked_at_ms.is_some() { "revoked" } else { "active" };
                say(&format!("{}\t{}\t{}\thead_seq={}\n", n.id, n.hostname, state, n.head_seq));
            }
            Ok(0)
        }
        Command::Node { command: NodeCommand::Revoke { id } } => {
            let (_, mut store) = open(&cfg)?;
            if !store.revoke_node(&id, now_ms())? {
                return Err(CliError::UnknownNode(id));
            }
            say(&format!("revoked {id}\n"));
            Ok(0)
        }
        Command::Ca { command: CaCommand::Fingerprint } => {
            let (pki, _) = open(&cfg)?;
            say(&format!("{}\n", pki.ca_fingerprint()));
            Ok(0)
        }
    }
}

/// How long open streams may keep going after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

fn serve(cfg: Config, listen: Option<std::net::SocketAddr>) -> Result<u8, CliError> {
    let (pki, store) = open(&cfg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    let addr = listen.unwrap_or(cfg.grpc_listen);
    let (writer, writer_thread) = StoreWriter::spawn(Box::new(store));
    let shared = Shared {
        writer,
        pki: Arc::new(pki),
        node_cert_days: cfg.node_cert_days,
        metrics: Arc::new(Metrics::default()),
    };
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::Io { path: format!("listen {addr}"), source: e })?;
        let bound = listener.local_addr().map_err(|e| CliError::Io { path: format!("listen {addr}"), source: e })?;
        let addr_file = cfg.data_dir.join("grpc.addr");
        std::fs::write(&addr_file, format!("{bound}\n"))
            .map_err(|e| CliError::Io { path: addr_file.display().to_string(), source: e })?;
        say(&format!(
            "kosmos-collector listening on {bound} (gRPC, mTLS), CA fingerprint {}\n",
            shared.pki.ca_fingerprint()
        ));
        tracing::info!("listening on {bound}");
        systemd_ready();
        // Graceful shutdown waits for open streams to end, but agents hold
        // theirs open for good: after the signal, in-flight envelopes get a
        // short grace period, then the server stops regardless. Agents keep
        // unacked envelopes spooled and resend them to the next collector.
        let signalled = Arc::new(tokio::sync::Notify::new());
        let notify = Arc::clone(&signalled);
        let server = crate::server::run(listener, shared, async move {
            shutdown_signal().await;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            notify.notify_waiters();
        });
        tokio::select! {
            r = server => r.map_err(|e| CliError::Other(e.to_string())),
            () = async {
                signalled.notified().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::info!("grace period over: closing the remaining streams");
                Ok(())
            }
        }
    });
    // Dropping the runtime drops the last writer handles; the writer thread
    // then commits what it holds and exits.
    drop(runtime);
    let _ = writer_thread.join();
    result.map(|()| 0)
}

/// `Type=notify`: tell systemd the listener is bound (so READY is true when
/// it arrives), and feed its watchdog from the async runtime for as long as
/// that runs. Outside systemd (no `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) both
/// are no-ops. Must be called inside the runtime.
fn systemd_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(period) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            // Twice per period, as sd_watchdog_enabled(3) recommends.
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers we can only be stopped by SIGKILL; keep serving.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
