//! Command-line interface: argument parsing and the one-shot commands
//! (`check`, `checks`, `explain`). `main` only calls [`run`].
//!
//! Exit codes: 0 ok, 1 a finding at or above `--fail-on` failed (or could not
//! be decided), 2 usage or configuration error.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::check::Check;
use crate::checks::registry;
use crate::engine::{self, RunOptions};
use crate::host::Host;
use crate::model::Severity;
use crate::profile::{DEFAULT_PROFILE, Profile, ProfileError};
use crate::report::{junit, text};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Junit,
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
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<u8, CliError> {
    let registry = registry();
    match cli.command {
        Command::Check(args) => check(args, &registry),
        Command::Checks { output, profile } => list(output, profile.as_deref(), &registry),
        Command::Explain { id } => explain(&id, &registry),
    }
}

fn check(args: CheckArgs, registry: &[Check]) -> Result<u8, CliError> {
    let host = match &args.root {
        None => Host::live(),
        Some(dir) => {
            let shown = dir.display().to_string();
            let meta =
                std::fs::metadata(dir).map_err(|e| CliError::BadRoot { path: shown.clone(), why: e.to_string() })?;
            if !meta.is_dir() {
                return Err(CliError::BadRoot { path: shown, why: "not a directory".into() });
            }
            // "/" given explicitly is the live host.
            if std::fs::canonicalize(dir).is_ok_and(|p| p == std::path::Path::new("/")) {
                Host::live()
            } else {
                Host::offline(dir)
            }
        }
    };
    let profile = Profile::load(&args.profile, registry)?;
    if let Some(only) = &args.only {
        let unknown: Vec<&str> =
            only.iter().filter(|id| !registry.iter().any(|c| &c.id == *id)).map(String::as_str).collect();
        if !unknown.is_empty() {
            return Err(CliError::UnknownChecks(unknown.join(", ")));
        }
    }
    let opts = RunOptions { profile: &profile, only: args.only.as_deref(), today: chrono::Utc::now().date_naive() };
    let report = engine::run(&host, registry, &opts);
    if host.is_live() {
        crate::checks::firewall::record_snapshot(&report, &profile);
    }
    let rendered = match args.output {
        OutputFormat::Text => text::render(&report),
        OutputFormat::Json => report.to_json() + "\n",
        OutputFormat::Junit => junit::render(&report),
    };
    write_stdout(&rendered)?;
    let breach = match args.fail_on {
        FailOn::Never => false,
        FailOn::Severity(s) => report.breaches(s),
    };
    Ok(if breach { EXIT_FINDINGS } else { 0 })
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
