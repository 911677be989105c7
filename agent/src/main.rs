//! `kosmos-node-agent`: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use kosmos_node_agent::cli::{self, Cli, Command};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) | Command::Enroll(_) => "info",
        _ => "warn",
    };
    init_logging(default_level);
    // Every TLS connection names the ring provider explicitly; installing it
    // as the process default covers any path that does not.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            let e = anyhow::Error::from(e);
            eprintln!("kosmos-node-agent: {e:#}");
            ExitCode::from(code)
        }
    }
}
