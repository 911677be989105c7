//! `kosmos-node-agent`: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use kosmos_node_agent::cli::{self, Cli, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KOSMOS_AGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let e = anyhow::Error::from(e);
            eprintln!("kosmos-node-agent: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
