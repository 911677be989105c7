//! `collector.toml`: the collector's configuration, validated once into a
//! typed [`Config`]. Unknown keys are errors, reported with the file name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::pki::PkiPaths;

/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/kosmos-collector/collector.toml";
/// The default data directory (database, CA, server certificate).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/kosmos-collector";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    grpc_listen: Option<SocketAddr>,
    server_names: Option<Vec<String>>,
    node_cert_days: Option<i64>,
    http_listen: Option<SocketAddr>,
    http_token_file: Option<PathBuf>,
    report_interval_secs: Option<u64>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub grpc_listen: SocketAddr,
    pub server_names: Vec<String>,
    pub node_cert_days: i64,
    /// Where the PKI files are; `pki_managed` when the collector creates them.
    pub pki: PkiPaths,
    pub pki_managed: bool,
    /// Dashboard, `/metrics` and `/healthz` (plain HTTP, read-only).
    pub http_listen: SocketAddr,
    /// A file holding the bearer token the HTTP port requires; mandatory
    /// when `http_listen` is not a loopback address.
    pub http_token_file: Option<PathBuf>,
    /// The attestation interval the agents are configured with; a node
    /// silent for three of them is stale.
    pub report_interval_secs: u64,
}

impl Config {
    /// Load `path` (which may be absent when it is the default path), then
    /// apply the data-dir override.
    pub fn load(path: Option<&Path>, data_dir_override: Option<&Path>) -> Result<Config, ConfigError> {
        let (file, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let shown = file.display().to_string();
        let raw: RawConfig = match std::fs::read_to_string(&file) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| ConfigError::Parse { path: shown.clone(), source: Box::new(e) })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => RawConfig::default(),
            Err(e) => return Err(ConfigError::Read { path: shown, source: e }),
        };
        let data_dir = data_dir_override
            .map(Path::to_path_buf)
            .or(raw.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let node_cert_days = raw.node_cert_days.unwrap_or(365);
        if !(1..=3650).contains(&node_cert_days) {
            return Err(ConfigError::Invalid { path: shown, problem: "node_cert_days must be 1..=3650".into() });
        }
        let (pki, pki_managed) = match raw.tls {
            Some(t) => (
                PkiPaths { ca_cert: t.ca_cert, ca_key: t.ca_key, server_cert: t.server_cert, server_key: t.server_key },
                false,
            ),
            None => (PkiPaths::in_dir(&data_dir), true),
        };
        let report_interval_secs = raw.report_interval_secs.unwrap_or(300);
        if !(10..=86_400).contains(&report_interval_secs) {
            return Err(ConfigError::Invalid {
                path: shown,
                problem: "report_interval_secs must be 10..=86400".into(),
            });
        }
        let http_listen = raw.http_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7080)));
        Ok(Config {
            http_listen,
            http_token_file: raw.http_token_file,
            report_interval_secs,
            grpc_listen: raw.grpc_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7443))),
            server_names: raw.server_names.unwrap_or_default(),
            node_cert_days,
            pki,
            pki_managed,
            data_dir,
        })
    }

    /// The SQLite database file.
    pub fn database(&self) -> PathBuf {
        self.data_dir.join("collector.db")
    }
}
