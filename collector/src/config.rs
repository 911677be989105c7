//! `collector.toml`: the collector's configuration, validated once into a
//! typed [`Config`]. Unknown keys are errors, reported with the file name.

use crate::store::StoreLocation;
use crate::store::postgres::PgSettings;
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
    /// `sqlite:PATH` or `postgres://USER@HOST/DB?sslmode=require`; absent:
    /// SQLite in `data_dir`.
    store_url: Option<String>,
    /// PostgreSQL: the password, in a file of its own (else the
    /// environment's KOSMOS_COLLECTOR_STORE_PASSWORD).
    store_password_file: Option<PathBuf>,
    /// PostgreSQL: the CA that signed the server's certificate (else the
    /// system's trust store).
    store_ca_file: Option<PathBuf>,
    tls: Option<RawTls>,
    limits: Option<RawLimits>,
    retention: Option<RawRetention>,
    notifications: Option<crate::notify::config::RawNotifications>,
    #[serde(default)]
    webhooks: Vec<crate::notify::config::RawWebhook>,
}

/// `[retention]` (see [`crate::store::retention`]). Durations are
/// humantime strings: "30d", "12h", "90s".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_all: Option<String>,
    max_age: Option<String>,
    interval: Option<String>,
}

/// `[limits]`: what a connection or a stream may hold (see
/// [`crate::server`]). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<usize>,
    max_connections_per_node: Option<usize>,
    handshake_timeout_secs: Option<u64>,
    enroll_connection_secs: Option<u64>,
    read_idle_secs: Option<u64>,
    keepalive_interval_secs: Option<u64>,
    keepalive_timeout_secs: Option<u64>,
    stream_idle_secs: Option<u64>,
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
    /// Connection and stream limits of the gRPC port.
    pub limits: crate::server::Limits,
    /// Where the store is (`store_url`).
    pub store: StoreLocation,
    /// `[retention]`; None keeps everything.
    pub retention: Option<crate::store::retention::Policy>,
    /// `[notifications]` and `[[webhooks]]`; None: no webhook configured.
    pub notifications: Option<crate::notify::config::Notifications>,
}

/// The environment variable the PostgreSQL password may come from.
pub const STORE_PASSWORD_ENV: &str = "KOSMOS_COLLECTOR_STORE_PASSWORD";

/// Read a small secret or certificate file (at most `limit` bytes).
fn read_small(path: &Path, limit: u64, option: &str) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
        .map_err(|e| format!("{option} {}: {e}", path.display()))?;
    if text.len() as u64 > limit {
        return Err(format!("{option} {}: larger than {limit} bytes", path.display()));
    }
    Ok(text)
}

/// Where the store is, from `store_url` and its companions.
fn store_location(raw: &RawConfig, data_dir: &Path, env_password: Option<String>) -> Result<StoreLocation, String> {
    let url = match &raw.store_url {
        None => {
            if raw.store_password_file.is_some() || raw.store_ca_file.is_some() {
                return Err("store_password_file and store_ca_file go with a postgres:// store_url".into());
            }
            return Ok(StoreLocation::Sqlite(data_dir.join("collector.db")));
        }
        Some(u) => u.trim(),
    };
    if let Some(path) = url.strip_prefix("sqlite:") {
        if raw.store_password_file.is_some() || raw.store_ca_file.is_some() {
            return Err("store_password_file and store_ca_file go with a postgres:// store_url".into());
        }
        if path.is_empty() {
            return Err("store_url: sqlite: needs a path (sqlite:/var/lib/kosmos-collector/collector.db)".into());
        }
        // A relative path is relative to data_dir.
        return Ok(StoreLocation::Sqlite(data_dir.join(path)));
    }
    let settings =
        postgres_settings(url, raw.store_password_file.as_deref(), raw.store_ca_file.as_deref(), env_password)?;
    Ok(StoreLocation::Postgres(Box::new(settings)))
}

/// A PostgreSQL store's settings from its URL, the file holding its
/// password (else `env_password`, from KOSMOS_COLLECTOR_STORE_PASSWORD) and
/// the file of its CA certificates. Errors name the option at fault.
pub fn postgres_settings(
    url: &str,
    password_file: Option<&Path>,
    ca_file: Option<&Path>,
    env_password: Option<String>,
) -> Result<PgSettings, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("store_url: sqlite:PATH or postgres://USER@HOST/DATABASE".into());
    }
    let password = match password_file {
        Some(file) => {
            let text = read_small(file, 4096, "store_password_file")?;
            // One trailing newline is the file's, not the password's.
            let pw = text.strip_suffix('\n').unwrap_or(&text);
            let pw = pw.strip_suffix('\r').unwrap_or(pw).to_string();
            if pw.is_empty() {
                return Err(format!("store_password_file {}: empty", file.display()));
            }
            Some(pw)
        }
        None => env_password.filter(|p| !p.is_empty()),
    };
    let ca = match ca_file {
        Some(file) => Some((file.display().to_string(), read_small(file, 1 << 20, "store_ca_file")?)),
        None => None,
    };
    PgSettings::new(url, password.as_deref(), ca.as_ref().map(|(p, pem)| (p.as_str(), pem.as_str())))
        .map_err(|e| e.to_string())
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
            .or_else(|| raw.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let store = store_location(&raw, &data_dir, std::env::var(STORE_PASSWORD_ENV).ok())
            .map_err(|problem| ConfigError::Invalid { path: shown.clone(), problem })?;
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
        let limits = limits(raw.limits.unwrap_or_default(), report_interval_secs)
            .map_err(|problem| ConfigError::Invalid { path: shown.clone(), problem })?;
        let retention = raw
            .retention
            .map(retention)
            .transpose()
            .map_err(|problem| ConfigError::Invalid { path: shown.clone(), problem })?;
        let notifications = crate::notify::config::parse(raw.notifications, raw.webhooks)
            .map_err(|problem| ConfigError::Invalid { path: shown.clone(), problem })?;
        Ok(Config {
            store,
            retention,
            notifications,
            limits,
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

    /// Where the store is (`store_url`; SQLite in `data_dir` by default).
    pub fn store_location(&self) -> StoreLocation {
        self.store.clone()
    }
}

/// Validate `[retention]`: `keep_all` is required (what the table is
/// for), `max_age` must exceed it, and the interval is a minute to a day
/// (default an hour).
fn retention(raw: RawRetention) -> Result<crate::store::retention::Policy, String> {
    use std::time::Duration;
    let parse = |key: &str, v: &str| {
        humantime::parse_duration(v).map_err(|e| format!("retention.{key} = {v:?}: {e} (e.g. \"30d\", \"12h\")"))
    };
    let keep_all = match raw.keep_all.as_deref() {
        Some(v) => parse("keep_all", v)?,
        None => return Err("retention.keep_all is required (e.g. keep_all = \"30d\")".into()),
    };
    if keep_all.is_zero() {
        return Err("retention.keep_all must be longer than 0".into());
    }
    let max_age = raw.max_age.as_deref().map(|v| parse("max_age", v)).transpose()?;
    if let Some(max) = max_age
        && max <= keep_all
    {
        return Err(format!(
            "retention.max_age ({}) must be longer than retention.keep_all ({})",
            humantime::format_duration(max),
            humantime::format_duration(keep_all)
        ));
    }
    let interval =
        raw.interval.as_deref().map(|v| parse("interval", v)).transpose()?.unwrap_or(Duration::from_secs(3600));
    if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&interval) {
        return Err("retention.interval must be between 1s and 1d".into());
    }
    Ok(crate::store::retention::Policy { keep_all, max_age, interval })
}

/// Validate `[limits]`. A stream may stay silent for three report intervals
/// and a minute by default: an agent sends at least one envelope per interval.
fn limits(raw: RawLimits, report_interval_secs: u64) -> Result<crate::server::Limits, String> {
    use std::time::Duration;
    let d = crate::server::Limits::default();
    let secs = |v: Option<u64>, default: Duration, name: &str, range: std::ops::RangeInclusive<u64>| {
        let v = v.unwrap_or(default.as_secs());
        if range.contains(&v) {
            Ok(Duration::from_secs(v))
        } else {
            Err(format!("limits.{name} must be {}..={}", range.start(), range.end()))
        }
    };
    let count = |v: Option<usize>, default: usize, name: &str, range: std::ops::RangeInclusive<usize>| {
        let v = v.unwrap_or(default);
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(format!("limits.{name} must be {}..={}", range.start(), range.end()))
        }
    };
    let limits = crate::server::Limits {
        max_connections: count(raw.max_connections, d.max_connections, "max_connections", 1..=1_000_000)?,
        max_connections_per_node: count(
            raw.max_connections_per_node,
            d.max_connections_per_node,
            "max_connections_per_node",
            1..=64,
        )?,
        handshake_timeout: secs(raw.handshake_timeout_secs, d.handshake_timeout, "handshake_timeout_secs", 1..=300)?,
        unauthenticated_lifetime: secs(
            raw.enroll_connection_secs,
            d.unauthenticated_lifetime,
            "enroll_connection_secs",
            1..=3600,
        )?,
        read_idle: secs(raw.read_idle_secs, d.read_idle, "read_idle_secs", 1..=86_400)?,
        keepalive_interval: secs(
            raw.keepalive_interval_secs,
            d.keepalive_interval,
            "keepalive_interval_secs",
            1..=3600,
        )?,
        keepalive_timeout: secs(raw.keepalive_timeout_secs, d.keepalive_timeout, "keepalive_timeout_secs", 1..=600)?,
        stream_idle: secs(
            raw.stream_idle_secs,
            Duration::from_secs(report_interval_secs.saturating_mul(3).saturating_add(60)),
            "stream_idle_secs",
            1..=7 * 86_400,
        )?,
    };
    if limits.read_idle <= limits.keepalive_interval {
        return Err(
            "limits.read_idle_secs must be longer than limits.keepalive_interval_secs (a live peer answers the pings)"
                .into(),
        );
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn retention_is_validated() {
        use std::time::Duration;
        let policy = |t: &str| retention(raw(t).retention.unwrap_or_default());
        let p = policy("[retention]\nkeep_all = \"30d\"\nmax_age = \"400d\"").unwrap();
        assert_eq!(p.keep_all, Duration::from_secs(30 * 86_400));
        assert_eq!(p.max_age, Some(Duration::from_secs(400 * 86_400)));
        assert_eq!(p.interval, Duration::from_secs(3600));
        for (text, expected) in [
            ("[retention]\nmax_age = \"1d\"", "keep_all is required"),
            ("[retention]\nkeep_all = \"a month\"", "retention.keep_all = \"a month\""),
            ("[retention]\nkeep_all = \"0s\"", "longer than 0"),
            ("[retention]\nkeep_all = \"2d\"\nmax_age = \"1d\"", "must be longer than retention.keep_all"),
            ("[retention]\nkeep_all = \"2d\"\ninterval = \"2d\"", "between 1s and 1d"),
        ] {
            let e = policy(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
        assert!(toml::from_str::<RawConfig>("[retention]\nkeep = \"1d\"").is_err(), "unknown keys are refused");
    }

    #[test]
    fn store_url_selects_the_store() {
        let dir = Path::new("/var/lib/kc");
        let at = |t: &str| store_location(&raw(t), dir, None).map(|s| s.to_string());
        assert_eq!(at("").unwrap(), "sqlite:/var/lib/kc/collector.db");
        assert_eq!(at("store_url = \"sqlite:/srv/c.db\"").unwrap(), "sqlite:/srv/c.db");
        assert_eq!(at("store_url = \"sqlite:other.db\"").unwrap(), "sqlite:/var/lib/kc/other.db");
        assert_eq!(
            at("store_url = \"postgres://kosmos@localhost/fleet\"").unwrap(),
            "postgres://kosmos@localhost/fleet"
        );
        for (text, expected) in [
            ("store_url = \"mysql://x/y\"", "sqlite:PATH or postgres://"),
            ("store_url = \"sqlite:\"", "needs a path"),
            ("store_url = \"postgres://kosmos@db.example.com/fleet\"", "TLS is required"),
            ("store_url = \"postgres://kosmos:pw@localhost/fleet\"", "store_password_file"),
            ("store_password_file = \"/etc/pw\"", "go with a postgres:// store_url"),
            ("store_url = \"sqlite:/c.db\"\nstore_ca_file = \"/etc/ca.pem\"", "go with a postgres:// store_url"),
            ("store_url = \"postgres://k@localhost/f\"\nstore_password_file = \"/nonexistent/pw\"", "/nonexistent/pw"),
        ] {
            let e = at(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn the_store_password_comes_from_its_file_or_the_environment_never_shown() {
        let t = tempfile::tempdir().unwrap();
        let pw = t.path().join("pw");
        std::fs::write(&pw, "s3cret-pw\n").unwrap();
        let text = format!("store_url = \"postgres://k@localhost/f\"\nstore_password_file = \"{}\"", pw.display());
        let loc = store_location(&raw(&text), t.path(), Some("from-env".into())).unwrap();
        let shown = format!("{loc} {loc:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("from-env"), "{shown}");
        std::fs::write(&pw, "\n").unwrap();
        let e = store_location(&raw(&text), t.path(), None).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        // From the environment when there is no file.
        store_location(&raw("store_url = \"postgres://k@localhost/f\""), t.path(), Some("from-env".into())).unwrap();
        // An oversized file is refused, not read whole.
        std::fs::write(&pw, "x".repeat(5000)).unwrap();
        let e = store_location(&raw(&text), t.path(), None).unwrap_err();
        assert!(e.contains("larger than 4096 bytes"), "{e}");
    }

    /// The shipped collector.toml shows every key with its real default:
    /// uncommenting everything but the `[tls]` table (which replaces the
    /// managed PKI) and the example `[[webhooks]]` changes nothing.
    #[test]
    fn shipped_config_documents_the_real_defaults() {
        let shipped = include_str!("../../packaging/collector/collector.toml");
        let mut in_tls = false;
        let uncommented: String = shipped
            .lines()
            .filter_map(|line| {
                let body = line.strip_prefix('#')?;
                if body.starts_with('[') {
                    // [tls] replaces the managed PKI; [[webhooks]] is an
                    // example receiver (its secret file does not exist).
                    in_tls = body.starts_with("[tls]") || body.starts_with("[[webhooks]]");
                }
                let key = body.split('=').next()?.trim();
                let is_setting = body.starts_with('[')
                    || (!key.is_empty()
                        && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        && body.contains('='));
                (is_setting && !in_tls).then(|| format!("{body}\n"))
            })
            .collect();
        assert!(uncommented.contains("[limits]") && uncommented.contains("stream_idle_secs"), "{uncommented}");
        let t = tempfile::tempdir().unwrap();
        let all_path = t.path().join("all.toml");
        std::fs::write(&all_path, &uncommented).unwrap();
        let empty_path = t.path().join("empty.toml");
        std::fs::write(&empty_path, "").unwrap();
        let dir = Path::new("/var/lib/kosmos-collector");
        let all = Config::load(Some(&all_path), Some(dir)).unwrap();
        let defaults = Config::load(Some(&empty_path), Some(dir)).unwrap();
        assert_eq!(all.limits, defaults.limits);
        assert_eq!(all.grpc_listen, defaults.grpc_listen);
        assert_eq!(all.http_listen, defaults.http_listen);
        assert_eq!(all.report_interval_secs, defaults.report_interval_secs);
        assert_eq!(all.store.to_string(), defaults.store.to_string());
        assert_eq!(all.node_cert_days, defaults.node_cert_days);
        assert!(uncommented.contains("[notifications]") && uncommented.contains("storm_window"), "{uncommented}");
        assert!(all.notifications.is_none() && defaults.notifications.is_none());
    }
}
