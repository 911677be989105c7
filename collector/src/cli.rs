//! Command-line interface of the collector: `serve`, `report`,
//! `token create`, `node list|revoke`, `ca fingerprint`,
//! `evidence export|verify`.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::dashboard::{Dashboard, DashboardError};
use crate::evidence::{self, EvidenceCommand, EvidenceError};
use crate::fleet::{self, Detail};
use crate::metrics::Metrics;
use crate::pki::{Pki, PkiError};
use crate::service::{Shared, new_token, token_hash};
use crate::store::writer::StoreWriter;
use crate::store::{Store, StoreError, StoreLocation, now_ms};

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
        /// Dashboard and /metrics address (overrides http_listen; port 0
        /// picks a free one, written to DATA_DIR/http.addr).
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<std::net::SocketAddr>,
    },
    /// Write the fleet hardening report from the store (offline).
    Report {
        #[arg(long, value_enum, default_value = "html")]
        format: ReportFormat,
        /// Output file (written atomically, mode 0600); standard output when absent.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Drift, integrity events and trend from this date (YYYY-MM-DD or RFC 3339).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Which findings each node's section lists.
        #[arg(long, value_enum, default_value = "failing")]
        findings: Detail,
        /// The moment the report describes (staleness and ages); default now.
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        /// With --format oscal: the evidence bundle (file name or URL) the
        /// results name, from `evidence export`.
        #[arg(long, value_name = "FILE")]
        evidence_bundle: Option<String>,
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
    /// Evidence bundles for auditors: export, and verify offline.
    Evidence {
        #[command(subcommand)]
        command: EvidenceCommand,
    },
    /// The store itself.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Apply the `[retention]` policy of collector.toml now (the serving
    /// collector also applies it every `retention.interval`): remove compact
    /// attestations past `keep_all` and everything past `max_age`, record
    /// what was removed, and give the space back.
    Prune {
        /// Also rewrite the database (SQLite: VACUUM, which also turns on
        /// incremental auto-vacuum for a database created without it;
        /// PostgreSQL: VACUUM FULL). Takes a lock for its duration: run it
        /// with the collector stopped, or in a quiet hour.
        #[arg(long)]
        vacuum: bool,
    },
    /// Webhook notifications (`[[webhooks]]` in collector.toml).
    Notifications {
        #[command(subcommand)]
        command: NotificationsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// The newest messages of the durable outbox, delivered or not, with
    /// their attempts and last error.
    List {
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Send a signed `notification.test` message to every webhook now
    /// (not through the outbox) and report each answer; exit 1 when one
    /// was not delivered.
    Test,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy this collector's SQLite store to an empty PostgreSQL database,
    /// verbatim, then verify the copy (row counts, chain heads, an evidence
    /// bundle exported from it). Stop the collector first. An interrupted
    /// copy resumes when run again.
    Migrate {
        /// The PostgreSQL database: postgres://USER@HOST[:PORT]/DATABASE
        /// (sslmode=require for any host but this machine).
        #[arg(long, value_name = "URL")]
        to: String,
        /// The database password, in a file (else KOSMOS_COLLECTOR_STORE_PASSWORD).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// CA certificates for the database's server certificate (else the system's).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// Skip the last check, an evidence bundle of every node exported
        /// from the copy and verified (on a large store it takes about as
        /// long as the copy); the counts, heads and hashes are still checked.
        #[arg(long)]
        no_evidence_check: bool,
    },
}

/// Output formats of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// One self-contained page (inline CSS and SVG) that prints well.
    Html,
    /// The machine contract, `kosmos.fleet-report/v1`.
    Json,
    /// One row per node finding, for spreadsheets.
    Csv,
    /// Tables for tickets and wikis.
    Md,
    /// A testcase per check and per node, for CI gates.
    Junit,
    /// SARIF 2.1.0: a rule per check, a result per failing or erroring finding, the node as location.
    Sarif,
    /// OCSF 1.5.0 Compliance Finding events (class 2003), one JSON object per line, every finding.
    Ocsf,
    /// OSCAL 1.2.3 Assessment Results: attestations as observations, failing checks as findings per control.
    Oscal,
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
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Dashboard(#[from] DashboardError),
    #[error("{option}: {problem}")]
    Usage { option: &'static str, problem: String },
    #[error("no such node {0}")]
    UnknownNode(String),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process's exit code: 1 for a store that cannot be reached or
    /// used right now (a database still starting, a failover in progress:
    /// systemd restarts the service), 2 for everything a restart cannot
    /// fix (the command line, the configuration, the files it names;
    /// `RestartPreventExitStatus=2`).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Store(StoreError::Open { .. } | StoreError::Backend { .. } | StoreError::WriterGone) => 1,
            _ => 2,
        }
    }
}

fn prepare_data_dir(cfg: &Config) -> Result<(), CliError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.data_dir)
        .map_err(|e| CliError::Io { path: cfg.data_dir.display().to_string(), source: e })
}

fn open(cfg: &Config) -> Result<(Pki, Box<dyn Store>), CliError> {
    let pki = open_pki(cfg)?;
    let store = cfg.store_location().open()?;
    Ok((pki, store))
}

fn open_pki(cfg: &Config) -> Result<Pki, CliError> {
    prepare_data_dir(cfg)?;
    Ok(Pki::load_or_create(&cfg.pki, &cfg.server_names, cfg.pki_managed)?)
}

fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<u8, CliError> {
    // An auditor verifies a bundle anywhere: no configuration, no data dir.
    if let Command::Evidence { command: EvidenceCommand::Verify(args) } = &cli.command {
        return Ok(evidence::run_verify(args)?);
    }
    let cfg = Config::load(cli.config.as_deref(), cli.data_dir.as_deref())?;
    match cli.command {
        Command::Serve { grpc_listen, http_listen } => serve(cfg, grpc_listen, http_listen),
        Command::Report { format, out, since, findings, as_of, evidence_bundle } => {
            let wanted = Wanted { format, findings, evidence_bundle };
            report(&cfg, &wanted, out, since.as_deref(), as_of.as_deref())
        }
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
                // The hostname is the node's to choose: one line per node.
                let host = crate::untrusted::terminal(&n.hostname);
                say(&format!("{}\t{}\t{}\thead_seq={}\n", n.id, host, state, n.head_seq));
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
        Command::Evidence { command: EvidenceCommand::Export(args) } => {
            let (pki, mut store) = open(&cfg)?;
            Ok(evidence::run_export(&mut *store, &pki.ca_cert_pem, &args)?)
        }
        Command::Evidence { command: EvidenceCommand::Verify(args) } => Ok(evidence::run_verify(&args)?),
        Command::Store { command: StoreCommand::Migrate { to, password_file, ca_file, no_evidence_check } } => {
            migrate_store(&cfg, &to, password_file.as_deref(), ca_file.as_deref(), !no_evidence_check)
        }
        Command::Prune { vacuum } => prune(&cfg, vacuum),
        Command::Notifications { command: NotificationsCommand::List { limit } } => list_notifications(&cfg, limit),
        Command::Notifications { command: NotificationsCommand::Test } => test_notifications(&cfg),
    }
}

/// `kosmos-collector notifications list`.
fn list_notifications(cfg: &Config, limit: usize) -> Result<u8, CliError> {
    let mut store = cfg.store_location().open()?;
    let entries = store.outbox_list(limit)?;
    let when = |ms: Option<i64>| ms.map_or_else(|| "-".to_string(), crate::notify::notice::rfc3339);
    say("ID\tENDPOINT\tKIND\tKEY\tCREATED\tATTEMPTS\tDELIVERED\tNEXT ATTEMPT\tLAST ERROR\n");
    for e in entries {
        let next = if e.delivered_ms.is_some() { "-".to_string() } else { when(Some(e.next_ms)) };
        say(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            e.id,
            e.endpoint,
            e.kind,
            e.key,
            when(Some(e.created_ms)),
            e.attempts,
            when(e.delivered_ms),
            next,
            e.last_error.as_deref().unwrap_or("-")
        ));
    }
    Ok(0)
}

/// `kosmos-collector notifications test`.
fn test_notifications(cfg: &Config) -> Result<u8, CliError> {
    let Some(settings) = &cfg.notifications else {
        return Err(CliError::Usage {
            option: "notifications test",
            problem: "collector.toml has no [[webhooks]] table".into(),
        });
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    let mut failed = 0;
    for hook in &settings.webhooks {
        let message = crate::notify::notice::test_message(&hook.name, now_ms());
        let sender = crate::notify::deliver::Sender::new(hook.clone()).map_err(|e| CliError::Other(e.to_string()))?;
        match runtime.block_on(sender.send(&message.key, &message.kind, &message.body, 1)) {
            Ok(()) => say(&format!("{}: delivered ({})\n", hook.name, message.key)),
            Err(e) => {
                failed += 1;
                say(&format!("{}: NOT delivered: {e}\n", hook.name));
            }
        }
    }
    Ok(u8::from(failed > 0))
}

/// `kosmos-collector prune`.
fn prune(cfg: &Config, vacuum: bool) -> Result<u8, CliError> {
    let Some(policy) = cfg.retention else {
        return Err(CliError::Usage {
            option: "prune",
            problem: "collector.toml has no [retention] table: nothing is ever pruned (set at least keep_all)".into(),
        });
    };
    let mut store = cfg.store_location().open()?;
    let started = std::time::Instant::now();
    let mut runner: &mut dyn Store = &mut *store;
    let summary = crate::store::retention::apply(&policy, now_ms(), &mut runner)?;
    let reclaimed = store.reclaim(vacuum)?;
    say(&format!(
        "retention {}: removed {} compact attestations and {} full envelopes ({} ranges recorded, {} nodes), \
         {} drift changes, {} daily standings, {} events in {:.1}s\nspace: {}; the file shrank by {} bytes, {} bytes free inside it\n",
        policy.describe(),
        summary.compact_envelopes,
        summary.envelopes,
        summary.ranges,
        summary.nodes,
        summary.finding_changes,
        summary.node_days,
        summary.events,
        started.elapsed().as_secs_f64(),
        reclaimed.how,
        reclaimed.file_bytes,
        reclaimed.free_bytes
    ));
    Ok(0)
}

/// Runs retention's store operations on the serving collector's writer
/// thread, one at a time between ingest batches.
struct OnWriter {
    writer: StoreWriter,
    handle: tokio::runtime::Handle,
    /// Set at shutdown: the run stops at its next store operation instead
    /// of holding the writer (and the exit) until it is done.
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl crate::store::retention::StoreRunner for OnWriter {
    fn run<R, F>(&mut self, f: F) -> Result<R, crate::store::StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<R, crate::store::StoreError> + Send + 'static,
    {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return Err(crate::store::StoreError::WriterGone);
        }
        self.handle.block_on(self.writer.call(f))?
    }
}

/// Apply `policy` every `policy.interval`, the first time a minute after
/// the start (not during a restart's reconnection storm).
async fn retention_task(
    writer: StoreWriter,
    policy: crate::store::retention::Policy,
    stopping: Arc<std::sync::atomic::AtomicBool>,
) {
    use crate::store::retention::StoreRunner;
    let mut next = tokio::time::Instant::now() + policy.interval.min(std::time::Duration::from_secs(60));
    loop {
        tokio::time::sleep_until(next).await;
        next = tokio::time::Instant::now() + policy.interval;
        let mut runner = OnWriter {
            writer: writer.clone(),
            handle: tokio::runtime::Handle::current(),
            stopping: Arc::clone(&stopping),
        };
        let run = tokio::task::spawn_blocking(move || {
            let summary = crate::store::retention::apply(&policy, now_ms(), &mut runner)?;
            let reclaimed = if summary.is_empty() { None } else { Some(runner.run(|s| s.reclaim(false))?) };
            Ok::<_, crate::store::StoreError>((summary, reclaimed))
        })
        .await;
        match run {
            Ok(Ok((summary, reclaimed))) if !summary.is_empty() => tracing::info!(
                compact = summary.compact_envelopes,
                envelopes = summary.envelopes,
                ranges = summary.ranges,
                changes = summary.finding_changes,
                days = summary.node_days,
                events = summary.events,
                shrank = reclaimed.map_or(0, |r| r.file_bytes),
                "retention applied ({})",
                policy.describe()
            ),
            Ok(Ok(_)) => tracing::debug!("retention: nothing to remove"),
            Ok(Err(e)) => tracing::error!("retention failed: {e}"),
            Err(e) => tracing::error!("retention task failed: {e}"),
        }
    }
}

fn migrate_store(
    cfg: &Config,
    to: &str,
    password_file: Option<&std::path::Path>,
    ca_file: Option<&std::path::Path>,
    evidence_check: bool,
) -> Result<u8, CliError> {
    let StoreLocation::Sqlite(source) = cfg.store_location() else {
        return Err(CliError::Usage {
            option: "store migrate",
            problem: format!(
                "this collector's store is {}, not SQLite: only a SQLite store is migrated",
                cfg.store_location()
            ),
        });
    };
    let env_password = std::env::var(crate::config::STORE_PASSWORD_ENV).ok();
    let settings = crate::config::postgres_settings(to, password_file, ca_file, env_password)
        .map_err(|problem| CliError::Usage { option: "--to", problem })?;
    let pki = open_pki(cfg)?;
    let started = std::time::Instant::now();
    let summary = crate::store::migrate::migrate(
        &source,
        &settings,
        &pki.ca_cert_pem,
        &pki.ca_fingerprint(),
        evidence_check.then_some(cfg.data_dir.as_path()),
        &mut |line| eprintln!("{line}"),
    )
    .map_err(|e| CliError::Other(e.to_string()))?;
    let tables: Vec<String> = summary.tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
    say(&format!(
        "migrated sqlite:{} to {settings}{} in {:.1}s\nrows: {}\nverified: row counts, {} nodes' chain heads, every body against its hash, {}\nnext: set store_url = \"{to}\" in the configuration of every collector, then start them\n",
        source.display(),
        if summary.resumed { " (resumed)" } else { "" },
        started.elapsed().as_secs_f64(),
        tables.join(", "),
        summary.nodes_verified,
        match summary.bundle {
            Some(_) => format!("an evidence bundle of {} envelopes", summary.bundle_envelopes),
            None => "no evidence bundle (--no-evidence-check)".into(),
        },
    ));
    Ok(0)
}

/// How long open streams may keep going after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// What `report` is asked to write.
struct Wanted {
    format: ReportFormat,
    findings: Detail,
    evidence_bundle: Option<String>,
}

impl ReportFormat {
    /// The exchange format this is, if it is one.
    fn exchange(self) -> Option<kosmos_proto::exchange::Format> {
        use kosmos_proto::exchange::Format;
        match self {
            ReportFormat::Sarif => Some(Format::Sarif),
            ReportFormat::Ocsf => Some(Format::Ocsf),
            ReportFormat::Oscal => Some(Format::Oscal),
            ReportFormat::Html | ReportFormat::Json | ReportFormat::Csv | ReportFormat::Md | ReportFormat::Junit => {
                None
            }
        }
    }
}

fn report(
    cfg: &Config,
    wanted: &Wanted,
    out: Option<PathBuf>,
    since: Option<&str>,
    as_of: Option<&str>,
) -> Result<u8, CliError> {
    let format = wanted.format;
    // The exchange formats read each node's findings (all of them: OCSF
    // reports passes too, OSCAL lists every control reviewed) when they
    // write that node, not in the report.
    let detail = if format.exchange().is_some() { Detail::Summary } else { wanted.findings };
    if wanted.evidence_bundle.is_some() && format != ReportFormat::Oscal {
        return Err(CliError::Usage { option: "--evidence-bundle", problem: "only goes with --format oscal".into() });
    }
    let since_ms =
        since.map(fleet::parse_date).transpose().map_err(|problem| CliError::Usage { option: "--since", problem })?;
    let now = match as_of {
        Some(t) => fleet::parse_date(t).map_err(|problem| CliError::Usage { option: "--as-of", problem })?,
        None => now_ms(),
    };
    if let StoreLocation::Sqlite(db) = &cfg.store
        && !db.exists()
    {
        return Err(CliError::Usage {
            option: "--data-dir",
            problem: format!("{} does not exist: no collector has stored anything there", db.display()),
        });
    }
    let opts =
        fleet::Options { now_ms: now, since_ms, interval_secs: cfg.report_interval_secs, detail, parallel: true };
    let mut reader = cfg.store_location().fleet_reader()?;
    let report = reader.fleet_report(&opts)?;
    let exchange = if let Some(kind) = format.exchange() {
        let fp = crate::pki::file_fingerprint(&cfg.pki.ca_cert)?;
        let evidence = kosmos_proto::exchange::EvidenceSource {
            description: format!(
                "Signed, hash-chained attestations exported by `kosmos-collector evidence export` from this \
                 collector; verify offline with `kosmos-collector evidence verify --ca-fingerprint {fp} BUNDLE`."
            ),
            href: wanted.evidence_bundle.clone(),
        };
        Some((kind, fleet::exchange::assessment(&report, evidence)))
    } else {
        None
    };
    let mut render = |w: &mut dyn Write| -> std::io::Result<()> {
        if let Some((kind, a)) = &exchange {
            return kind.write(a, fleet::exchange::nodes(&report, &mut *reader), w).map_err(std::io::Error::other);
        }
        match format {
            ReportFormat::Html => fleet::html::write_report(&report, w),
            ReportFormat::Json => fleet::write_json(&report, w),
            ReportFormat::Csv => fleet::csv::render(&report, &mut *w).map_err(std::io::Error::other),
            ReportFormat::Md => w.write_all(fleet::markdown::render(&report).as_bytes()),
            ReportFormat::Junit => {
                let xml = fleet::junit::render(&report).map_err(std::io::Error::other)?;
                w.write_all(xml.as_bytes())
            }
            // Written above.
            ReportFormat::Sarif | ReportFormat::Ocsf | ReportFormat::Oscal => Ok(()),
        }
    };
    match out {
        None => {
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            render(&mut stdout)
                .and_then(|()| stdout.flush())
                .map_err(|e| CliError::Io { path: "standard output".into(), source: e })?;
        }
        Some(path) => write_private(&path, render)?,
    }
    // The process exits next: freeing hundreds of thousands of findings one
    // by one would only add to the report's wall time.
    std::mem::forget(report);
    Ok(0)
}

/// Write to `path` atomically (temporary file, rename), 0600: a fleet
/// report lists every weakness of every node. Readers see the old file or
/// the whole new one. There is no fsync: a report is derived from the store
/// and can be written again, and forcing hundreds of megabytes to disk
/// would double the time a large fleet's report takes.
fn write_private(
    path: &std::path::Path,
    render: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| CliError::Io { path: path.display().to_string(), source: e };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let written = render(&mut w)
        .and_then(|()| w.into_inner().map_err(std::io::IntoInnerError::into_error))
        .and_then(|_file| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}
fn serve(
    cfg: Config,
    listen: Option<std::net::SocketAddr>,
    http_listen: Option<std::net::SocketAddr>,
) -> Result<u8, CliError> {
    let http_addr = http_listen.unwrap_or(cfg.http_listen);
    let token = crate::dashboard::load_token(http_addr, cfg.http_token_file.as_deref())?;
    raise_open_files_limit(cfg.limits.max_connections);
    let pki = open_pki(&cfg)?;
    let serving = cfg.store_location().open_for_serving()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    let addr = listen.unwrap_or(cfg.grpc_listen);
    let mut serving = serving;
    if cfg.notifications.is_some() {
        // Before anything is ingested: the notifier's cursor starts at the
        // end of what this store held before, never after a change that
        // arrives while the notifier starts.
        serving.store.notify_cursor()?;
    }
    let (writer, writer_thread) = StoreWriter::spawn(serving.store, serving.deferred_sync);
    let pruner = cfg.retention.map(|policy| (writer.clone(), policy));
    let notifier = cfg.notifications.clone().map(|settings| (writer.clone(), settings));
    let upkeep = serving.upkeep;
    let metrics = Arc::new(Metrics::default());
    let dashboard =
        Arc::new(Dashboard::new(cfg.store_location(), cfg.report_interval_secs, token, Arc::clone(&metrics))?);
    let shared = Shared {
        writer,
        pki: Arc::new(pki),
        node_cert_days: cfg.node_cert_days,
        metrics,
        streams: Arc::default(),
        limits: cfg.limits,
    };
    let result = runtime.block_on(async {
        let listener = crate::server::listen(addr, cfg.limits.max_connections)
            .map_err(|e| CliError::Io { path: format!("listen {addr}"), source: e })?;
        let bound = listener.local_addr().map_err(|e| CliError::Io { path: format!("listen {addr}"), source: e })?;
        let addr_file = cfg.data_dir.join("grpc.addr");
        std::fs::write(&addr_file, format!("{bound}\n"))
            .map_err(|e| CliError::Io { path: addr_file.display().to_string(), source: e })?;
        let http = crate::server::listen(http_addr, cfg.limits.max_connections)
            .map_err(|e| CliError::Io { path: format!("listen {http_addr}"), source: e })?;
        let http_bound =
            http.local_addr().map_err(|e| CliError::Io { path: format!("listen {http_addr}"), source: e })?;
        let http_file = cfg.data_dir.join("http.addr");
        std::fs::write(&http_file, format!("{http_bound}\n"))
            .map_err(|e| CliError::Io { path: http_file.display().to_string(), source: e })?;
        say(&format!(
            "kosmos-collector listening on {bound} (gRPC, mTLS), CA fingerprint {}\n",
            shared.pki.ca_fingerprint()
        ));
        say(&format!("dashboard and /metrics on http://{http_bound}/\n"));
        tracing::info!("listening on {bound}; dashboard on {http_bound}");
        let http_stop = Arc::new(tokio::sync::Notify::new());
        let http_stopped = Arc::clone(&http_stop);
        let http_task = tokio::spawn(crate::dashboard::serve(http, dashboard, async move {
            http_stopped.notified().await;
        }));
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let retention =
            pruner.map(|(writer, policy)| tokio::spawn(retention_task(writer, policy, Arc::clone(&stopping))));
        let notifications = match notifier {
            Some((writer, settings)) => {
                let hooks = settings.webhooks.len();
                let tasks = crate::notify::start(
                    settings,
                    writer,
                    cfg.store_location(),
                    Arc::clone(&shared.metrics),
                    cfg.report_interval_secs,
                )
                .map_err(|e| CliError::Other(e.to_string()))?;
                tracing::info!("notifications on: {hooks} webhook(s)");
                tasks
            }
            None => Vec::new(),
        };
        // Both listeners are bound: READY is true now.
        crate::systemd::ready();
        // Graceful shutdown waits for open streams to end, but agents hold
        // theirs open for good: after the signal, in-flight envelopes get a
        // short grace period, then the server stops regardless. Agents keep
        // unacked envelopes spooled and resend them to the next collector.
        let signalled = Arc::new(tokio::sync::Notify::new());
        let notify = Arc::clone(&signalled);
        let server = crate::server::run(listener, shared, async move {
            crate::systemd::shutdown_signal().await;
            crate::systemd::stopping();
            notify.notify_waiters();
        });
        let outcome = tokio::select! {
            r = server => r.map_err(|e| CliError::Other(e.to_string())),
            () = async {
                signalled.notified().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::info!("grace period over: closing the remaining streams");
                Ok(())
            }
        };
        http_stop.notify_waiters();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, http_task).await;
        stopping.store(true, std::sync::atomic::Ordering::Release);
        if let Some(task) = retention {
            task.abort();
        }
        for task in notifications {
            task.abort();
        }
        outcome
    });
    // Dropping the runtime drops the last writer handles; the writer thread
    // then commits what it holds and exits.
    drop(runtime);
    let _ = writer_thread.join();
    drop(upkeep);
    result.map(|()| 0)
}

/// Each agent connection is a file descriptor: raise the soft limit to the
/// hard one (systemd's `LimitNOFILE` sets both; a shell often has a soft
/// limit of 1024), and say so when it stays below what the connection cap
/// needs.
fn raise_open_files_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        tracing::warn!("cannot raise the open-files limit from {soft} to {hard}");
    }
    let now = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    // Connections plus the store, the dashboard and its clients.
    let wanted = max_connections as u64 + 256;
    if now < wanted {
        tracing::warn!(
            "the open-files limit is {now}, below limits.max_connections + 256 ({wanted}): connections beyond it fail to be accepted; raise LimitNOFILE"
        );
    }
}
