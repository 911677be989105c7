//! Command-line interface: argument parsing and the one-shot commands
//! (`check`, `checks`, `explain`, `baseline pin`), the entry points of
//! `enroll` and `run` (the daemon), and the process set-up around them
//! (logging, the TLS crypto provider, the exit code).
//!
//! Exit codes: 0 ok, 1 a finding at or above `--fail-on` failed (or could not
//! be decided; for `run --once`: the report was not acked in time; for
//! `enroll`: the collector could not be reached or refused), 2 usage or
//! configuration error (including a CA fingerprint mismatch at enrollment).
//!
//! [`main`] is the whole program behind the binary's `main`, with the
//! registry of checks as its one parameter (see [`Registry`]).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::audit::check::Check;
use crate::audit::checks::Registry;
use crate::audit::facts::Facts;
use crate::audit::facts::kubelet::drift::PINNED_SNAPSHOT;
use crate::audit::facts::kubelet::drift::build_snapshot;
use crate::audit::facts::kubelet::{ConfigState, KubeletFacts};
use crate::audit::host::Host;
use crate::audit::model::Severity;
use crate::audit::profile::{DEFAULT_PROFILE, Profile, ProfileError};
use crate::audit::report::{exchange, junit, text};
use crate::audit_run::{AuditRequest, audit};
use crate::daemon::config::{self, ConfigPaths, ProcessEnv};
use crate::daemon::enroll::{self, EnrollError, EnrollOptions, Fingerprint, Secret};
use crate::daemon::{self, DaemonError, Mode, Systemd};
use crate::state::{self, StateDir};

/// Exit code when findings breach the threshold.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "kosmos-node-agent",
    version,
    about = "Hardening and compliance audit for Scaleway Kosmos external nodes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Audit this machine (or an offline root) once and print the report.
    Check(CheckArgs),
    /// List every check with its id, severity and references.
    Checks {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        output: ListFormat,
        /// Only the checks a profile selects.
        #[arg(long)]
        profile: Option<String>,
    },
    /// Show everything about one check: rationale, remediation, references, parameters.
    Explain {
        /// The check id, e.g. sysctl.kptr_restrict.
        id: String,
    },
    /// Manage the pinned reference configuration that drift is measured against.
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Enroll this node with a collector: generate the node key, get a certificate.
    Enroll(EnrollArgs),
    /// Run the attestation daemon (or, with --once, deliver one report and exit).
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The collector's gRPC URL, e.g. https://collector.example:7443.
    #[arg(long, value_name = "URL")]
    pub collector: String,
    /// The one-time enrollment token (`kosmos-collector token create`).
    #[arg(long, value_name = "TOKEN", required_unless_present = "token_file", conflicts_with = "token_file")]
    pub token: Option<Secret>,
    /// Read the token from a file instead (keeps it out of the process list).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the collector CA certificate: SHA256:<hex> or SHA256:<base64>.
    #[arg(long, value_name = "SHA256:..", value_parser = parse_fingerprint)]
    pub ca_fingerprint: Fingerprint,
    /// Where to write key.pem, cert.pem, ca.pem and node_id.
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// TLS name to expect in the collector certificate, when it differs from the URL host.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Enroll again even if this node is enrolled (new key, new chain).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Main configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Drop-in directory (default: agent.d beside --config, else /etc/kosmos-node-agent/agent.d).
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Produce one report, deliver it, wait for its ack, exit (0 acked, 1 not).
    #[arg(long)]
    pub once: bool,
    /// With --once: how long to wait for the ack, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, requires = "once")]
    pub timeout: u64,
}

fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    Fingerprint::parse(s)
}

#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Record the kubelet's current effective configuration as the pinned reference.
    Pin {
        /// Read an offline root (image, chroot, mounted disk) instead of this machine.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Where the agent keeps its state (required with --root).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Audit an offline root (image, chroot, mounted disk) instead of this machine.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Built-in profile name or path to a profile TOML file.
    #[arg(long, value_name = "NAME|FILE", default_value = DEFAULT_PROFILE)]
    pub profile: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Run only these check ids (comma-separated), whatever the profile selects.
    #[arg(long, value_delimiter = ',', value_name = "ID,..")]
    pub only: Option<Vec<String>>,
    /// Exit 1 when a finding at or above this severity fails or errors ("none" never does).
    #[arg(long, value_name = "SEVERITY", default_value = "high", value_parser = parse_fail_on)]
    pub fail_on: FailOn,
    /// Judge dates (waivers, end of life) as of this day (YYYY-MM-DD) instead of today.
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub as_of: Option<chrono::NaiveDate>,
    /// Where the agent keeps state (kubelet drift
    /// snapshots, first-seen times of pending updates) (default /var/lib/kosmos-node-agent on the live host;
    /// with --root, state is used only when this is given).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Junit,
    /// SARIF 2.1.0: a rule per check, a result per failing or erroring finding.
    Sarif,
    /// OCSF 1.5.0 Compliance Finding events, one JSON object per line.
    Ocsf,
    /// OSCAL 1.2.3 Assessment Results.
    Oscal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Text,
    Json,
}

/// `--fail-on`: a severity threshold, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    Severity(Severity),
    Never,
}

fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))
}

fn parse_fail_on(s: &str) -> Result<FailOn, String> {
    if s == "none" {
        return Ok(FailOn::Never);
    }
    Severity::parse(s)
        .map(FailOn::Severity)
        .ok_or_else(|| format!("{s:?} is not a severity (critical, high, medium, low, info, none)"))
}

/// Errors that end a command with exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--root {path}: {why}")]
    BadRoot { path: String, why: String },
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("--only: unknown check id(s): {0} (see `kosmos-node-agent checks`)")]
    UnknownChecks(String),
    #[error("unknown check id {0:?} (see `kosmos-node-agent checks`)")]
    UnknownCheck(String),
    #[error("baseline: {0}")]
    Baseline(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("--token-file {path}: {why}")]
    TokenFile { path: String, why: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
    #[error("cannot render the report as {0}")]
    Render(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Enroll(e) => e.exit_code(),
            CliError::Daemon(e) => e.exit_code(),
            CliError::Runtime(_) | CliError::Render(_) => 1,
            _ => EXIT_USAGE,
        }
    }
}

/// The agent program: parse the command line, set up logging and the TLS
/// crypto provider, run the command with the checks of `registry`, and turn
/// the result into the exit code (an error is printed on stderr).
pub fn main(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) | Command::Enroll(_) => "info",
        _ => "warn",
    };
    init_logging(default_level);
    // Every TLS connection names the ring provider explicitly; installing it
    // as the process default covers any path that does not.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli, registry) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            let e = anyhow::Error::from(e);
            eprintln!("kosmos-node-agent: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Logging: under systemd (stderr is the journal) records go to journald
/// with their priority through systemd-journal-logger. That crate is a `log`
/// backend, so no tracing subscriber is installed then and tracing's `log`
/// feature forwards every event as a `log` record. Elsewhere a tracing fmt
/// subscriber writes to stderr. KOSMOS_AGENT_LOG sets the level (a tracing
/// filter on stderr; a plain level such as `debug` for the journal).
fn init_logging(default_level: &str) {
    let wanted = std::env::var("KOSMOS_AGENT_LOG").ok();
    if systemd_journal_logger::connected_to_journal()
        && let Ok(journal) = systemd_journal_logger::JournalLog::new()
        && journal.install().is_ok()
    {
        let level = wanted.as_deref().unwrap_or(default_level).parse().unwrap_or(log::LevelFilter::Info);
        log::set_max_level(level);
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, never in files or CI logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            wanted
                .and_then(|w| tracing_subscriber::EnvFilter::try_new(w).ok())
                .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
}

/// Run a parsed command line with the checks of `registry`; returns the
/// process exit code.
pub fn run(cli: Cli, registry: Registry) -> Result<u8, CliError> {
    let checks = registry();
    match cli.command {
        Command::Check(args) => check(args, &checks),
        Command::Checks { output, profile } => list(output, profile.as_deref(), &checks),
        Command::Explain { id } => explain(&id, &checks),
        Command::Baseline(BaselineCommand::Pin { root, state_dir }) => pin(root.as_deref(), state_dir.as_deref()),
        Command::Enroll(args) => enroll_cmd(args),
        Command::Run(args) => run_cmd(args, registry),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    // One thread is plenty for one stream and a timer; audits run on the
    // blocking pool. It also keeps the idle daemon small.
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| CliError::Runtime(e.to_string()))
}

fn enroll_cmd(args: EnrollArgs) -> Result<u8, CliError> {
    let token = match (args.token, &args.token_file) {
        (Some(t), _) => t,
        (None, Some(path)) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::TokenFile { path: shown.clone(), why: e.to_string() })?;
            let t = text.trim();
            if t.is_empty() || t.len() > 4096 {
                return Err(CliError::TokenFile { path: shown, why: "empty or too long".into() });
            }
            Secret(t.to_string())
        }
        (None, None) => {
            return Err(CliError::TokenFile { path: "-".into(), why: "--token or --token-file is required".into() });
        }
    };
    let opts = EnrollOptions {
        collector_url: args.collector,
        token,
        ca_fingerprint: args.ca_fingerprint,
        state_dir: args.state_dir,
        server_name: args.server_name,
        force: args.force,
    };
    let enrolled = runtime()?.block_on(enroll::enroll(&opts))?;
    write_stdout(&format!("enrolled as node {} (state in {})\n", enrolled.node_id, enrolled.state_dir.display()))?;
    Ok(0)
}

fn run_cmd(args: RunArgs, registry: Registry) -> Result<u8, CliError> {
    let paths = ConfigPaths::new(args.config, args.config_dir);
    let config = config::load(&paths, &ProcessEnv)?;
    let mode =
        if args.once { Mode::Once { timeout: std::time::Duration::from_secs(args.timeout) } } else { Mode::Daemon };
    let rt = runtime()?;
    rt.block_on(async move {
        let shutdown = daemon::systemd::shutdown_signal();
        Ok(daemon::run(config, mode, Systemd { notify: true }, shutdown, registry).await?)
    })
}

/// The host to audit: the live machine, or an offline root
/// ([`Host::at`] decides which).
fn host_for(root: Option<&std::path::Path>) -> Result<Host, CliError> {
    Ok(match root {
        None => Host::live(),
        Some(dir) => {
            let shown = dir.display().to_string();
            let meta =
                std::fs::metadata(dir).map_err(|e| CliError::BadRoot { path: shown.clone(), why: e.to_string() })?;
            if !meta.is_dir() {
                return Err(CliError::BadRoot { path: shown, why: "not a directory".into() });
            }
            Host::at(dir)
        }
    })
}

fn pin(root: Option<&std::path::Path>, state_dir: Option<&std::path::Path>) -> Result<u8, CliError> {
    let host = host_for(root)?;
    let dir = state::dir_for(&host, state_dir).map_err(CliError::Baseline)?;
    let state =
        StateDir::open(&dir).map_err(|e| CliError::Baseline(format!("state directory {}: {e}", dir.display())))?;
    let facts = Facts::new(&host);
    let k = facts.get::<KubeletFacts>();
    let Some(c) = &k.kubelet else { return Err(CliError::Baseline(k.not_found_reason())) };
    if let Some(e) = &c.flags_uncertain {
        return Err(CliError::Baseline(format!("the kubelet command line is uncertain: {e}")));
    }
    if let ConfigState::Failed { error, .. } = &c.config {
        return Err(CliError::Baseline(format!("the kubelet config file is unusable: {error}")));
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let snap = build_snapshot(c, None, None, &now);
    state
        .write_json(PINNED_SNAPSHOT, &snap)
        .map_err(|e| CliError::Baseline(format!("{}: {e}", dir.join(PINNED_SNAPSHOT).display())))?;
    write_stdout(&format!(
        "pinned {} kubelet configuration keys ({}) to {}\n",
        snap.entries.len(),
        c.discovery.describe(),
        dir.join(PINNED_SNAPSHOT).display()
    ))?;
    Ok(0)
}

fn check(args: CheckArgs, registry: &[Check]) -> Result<u8, CliError> {
    let host = host_for(args.root.as_deref())?;
    let profile = Profile::load(&args.profile, registry)?;
    if let Some(only) = &args.only {
        let unknown: Vec<&str> =
            only.iter().filter(|id| !registry.iter().any(|c| &c.id == *id)).map(String::as_str).collect();
        if !unknown.is_empty() {
            return Err(CliError::UnknownChecks(unknown.join(", ")));
        }
    }
    let today = args.as_of.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let report = audit(
        registry,
        &AuditRequest {
            host: &host,
            profile: &profile,
            only: args.only.as_deref(),
            today,
            state_dir: args.state_dir.as_deref(),
        },
    );
    let rendered = match args.output {
        OutputFormat::Text => text::render(&report),
        OutputFormat::Json => report.to_json() + "\n",
        OutputFormat::Junit => junit::render(&report),
        OutputFormat::Sarif => exchange_render(&report, exchange::Format::Sarif)?,
        OutputFormat::Ocsf => exchange_render(&report, exchange::Format::Ocsf)?,
        OutputFormat::Oscal => exchange_render(&report, exchange::Format::Oscal)?,
    };
    write_stdout(&rendered)?;
    let breach = match args.fail_on {
        FailOn::Never => false,
        FailOn::Severity(s) => report.breaches(s),
    };
    Ok(if breach { EXIT_FINDINGS } else { 0 })
}

fn exchange_render(report: &crate::audit::report::Report, format: exchange::Format) -> Result<String, CliError> {
    exchange::render(report, format).map_err(|e| CliError::Render(format!("{format:?}: {e}")))
}

fn write_stdout(s: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        // A closed pipe (`| head`) is not an error worth a non-zero exit.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CliError::Output),
    }
}

fn refs_short(c: &Check) -> String {
    c.references
        .iter()
        .map(|r| match r.standard {
            "SSG" => format!("SSG:{}", r.id),
            "ANSSI BP-028" => format!("ANSSI:{}", r.id),
            s if s.starts_with("CIS Debian") => format!("CIS-Debian:{}", r.id),
            s if s.starts_with("CIS Kubernetes") => format!("CIS-K8s:{}", r.id),
            s => format!("{s}:{}", r.id),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn list(output: ListFormat, profile: Option<&str>, registry: &[Check]) -> Result<u8, CliError> {
    let profile = profile.map(|p| Profile::load(p, registry)).transpose()?;
    let selected: Vec<&Check> = registry.iter().filter(|c| profile.as_ref().is_none_or(|p| p.selects(&c.id))).collect();
    let rendered = match output {
        ListFormat::Json => {
            let v: Vec<serde_json::Value> = selected.iter().map(|c| check_json(c)).collect();
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
        ListFormat::Text => {
            let w = selected.iter().map(|c| c.id.len()).max().unwrap_or(10);
            let mut s = String::new();
            for c in &selected {
                s.push_str(&format!("{:<w$}  {:<8}  {}  [{}]\n", c.id, c.severity.as_str(), c.title, refs_short(c)));
            }
            s.push_str(&format!("{} checks\n", selected.len()));
            s
        }
    };
    write_stdout(&rendered)?;
    Ok(0)
}

fn check_json(c: &Check) -> serde_json::Value {
    serde_json::json!({
        "id": c.id,
        "title": c.title,
        "family": c.family(),
        "severity": c.severity,
        "rationale": c.rationale,
        "remediation": c.remediation,
        "references": c.references,
        "responsibility": c.responsibility,
        "params": c.params.iter().map(|p| serde_json::json!({
            "name": p.name, "type": p.kind.describe(), "default": p.default, "help": p.help,
        })).collect::<Vec<_>>(),
    })
}

fn explain(id: &str, registry: &[Check]) -> Result<u8, CliError> {
    let c = registry.iter().find(|c| c.id == id).ok_or_else(|| CliError::UnknownCheck(id.to_string()))?;
    let mut s = format!("{}\n  {}\n\n", c.id, c.title);
    s.push_str(&format!(
        "severity:       {}\nfamily:         {}\nresponsibility: {:?}\n\n",
        c.severity,
        c.family(),
        c.responsibility
    ));
    s.push_str(&format!("why:\n  {}\n\nremediation:\n  {}\n", c.rationale, c.remediation));
    if !c.references.is_empty() {
        s.push_str("\nreferences:\n");
        for r in &c.references {
            match r.version {
                Some(v) => s.push_str(&format!("  {} {} {}\n", r.standard, v, r.id)),
                None => s.push_str(&format!("  {} {}\n", r.standard, r.id)),
            }
        }
    }
    if !c.params.is_empty() {
        s.push_str("\nparameters (override in a profile under [params.\"ID\"]):\n");
        for p in &c.params {
            s.push_str(&format!("  {} ({}, default {}): {}\n", p.name, p.kind.describe(), p.default, p.help));
        }
    }
    write_stdout(&s)?;
    Ok(0)
}
