//! The daemon's configuration: `/etc/kosmos-node-agent/agent.toml`, then the
//! drop-ins `agent.d/*.toml` in lexical order, then `KOSMOS_AGENT_*`
//! environment variables; a later layer wins key by key.
//!
//! Each layer is read into [`RawConfig`] (every key optional, unknown keys
//! refused) one key at a time, so that every bad key of every layer is
//! reported at once, naming its origin. The merged layers are then validated
//! once into the typed [`Config`]. The environment is read through [`Env`] so
//! tests never mutate the process environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::state::DEFAULT_STATE_DIR;

/// Default location of the main file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/kosmos-node-agent/agent.toml";
/// Default location of the drop-in directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/kosmos-node-agent/agent.d";
/// Prefix of the environment overrides (`KOSMOS_AGENT_INTERVAL_SECS=60`).
pub const ENV_PREFIX: &str = "KOSMOS_AGENT_";
/// Environment variables with the prefix that are not configuration keys.
const ENV_NOT_CONFIG: &[&str] = &["KOSMOS_AGENT_LOG"];
/// Config files larger than this are refused.
const CONFIG_LIMIT: u64 = 256 * 1024;

/// Where environment variables come from.
pub trait Env {
    /// Every variable, as (name, value); non-UTF-8 ones are skipped.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
    }
}

/// A fixed environment, for tests.
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl MapEnv {
    pub fn new<const N: usize>(pairs: [(&str, &str); N]) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
}

impl Env for MapEnv {
    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Where the configuration files are.
#[derive(Debug, Clone)]
pub struct ConfigPaths {
    pub file: PathBuf,
    /// Whether `file` was named explicitly (then it must exist).
    pub file_required: bool,
    pub dir: PathBuf,
}

impl ConfigPaths {
    /// The default locations, overridden by `--config` / `--config-dir`.
    pub fn new(file: Option<PathBuf>, dir: Option<PathBuf>) -> Self {
        let file_required = file.is_some();
        let file = file.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        let dir = dir.unwrap_or_else(|| match (file_required, file.parent()) {
            // An explicit --config brings its own agent.d beside it.
            (true, Some(p)) => p.join("agent.d"),
            _ => PathBuf::from(DEFAULT_CONFIG_DIR),
        });
        Self { file, file_required, dir }
    }
}

/// `collector_url`: one URL or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CollectorUrls {
    One(String),
    Many(Vec<String>),
}

impl CollectorUrls {
    fn into_vec(self) -> Vec<String> {
        match self {
            CollectorUrls::One(u) => vec![u],
            CollectorUrls::Many(v) => v,
        }
    }
}

/// How long an Attest stream stays open with nothing to deliver: longer
/// than the default interval and its jitter (330 s), so that consecutive
/// rounds share one stream. Opening and ending a stream every round cost
/// about 100 bytes a round on the link, a third of a compact round.
pub const DEFAULT_STREAM_LINGER_SECS: u64 = 360;

/// One day: the default and the longest `checkpoint_secs` (an auditor
/// expects a full report every day).
pub const DAY_SECS: u64 = 24 * 3600;

/// Most collector URLs an agent takes (a replica set, not a fleet).
pub const MAX_COLLECTOR_URLS: usize = 16;

/// One layer of configuration: every key optional, unknown keys refused.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// One URL, or several (the collector's replicas): the agent fails over
    /// from one to the next.
    pub collector_url: Option<CollectorUrls>,
    /// TLS name to expect in the collector certificate when it differs from
    /// the host in `collector_url` (e.g. connecting by IP).
    pub server_name: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub profile: Option<String>,
    pub interval_secs: Option<u64>,
    pub jitter_percent: Option<u64>,
    pub spool_max_bytes: Option<u64>,
    pub watch: Option<bool>,
    pub key_path: Option<PathBuf>,
    pub cert_path: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub backoff_min_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub stream_linger_secs: Option<u64>,
    pub root: Option<PathBuf>,
    /// Send a compact attestation for a round whose findings equal the
    /// latest full report's (when the collector accepts them).
    pub compact: Option<bool>,
    /// Longest time between two full reports (the daily checkpoint).
    pub checkpoint_secs: Option<u64>,
}

macro_rules! merge_fields {
    ($into:ident, $from:ident, $($f:ident),*) => { $( if $from.$f.is_some() { $into.$f = $from.$f; } )* };
}

impl RawConfig {
    /// Overlay `later` on `self`: keys set in `later` win.
    pub fn merge(&mut self, later: RawConfig) {
        merge_fields!(
            self,
            later,
            collector_url,
            server_name,
            state_dir,
            profile,
            interval_secs,
            jitter_percent,
            spool_max_bytes,
            watch,
            key_path,
            cert_path,
            ca_path,
            backoff_min_ms,
            backoff_max_ms,
            shutdown_grace_secs,
            stream_linger_secs,
            root,
            compact,
            checkpoint_secs
        );
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The collector's URLs, in the order the agent tries them (at least
    /// one; several for replicas behind no load balancer).
    pub collector_urls: Vec<String>,
    pub server_name: Option<String>,
    pub state_dir: PathBuf,
    pub profile: String,
    pub interval: Duration,
    pub jitter_percent: u64,
    pub spool_max_bytes: u64,
    pub watch: bool,
    pub key_path: PathBuf,
    pub cert_path: PathBuf,
    pub ca_path: PathBuf,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub shutdown_grace: Duration,
    /// How long the Attest stream stays open with nothing to deliver before
    /// the agent ends it (keeping the connection, on which the next report
    /// opens a new stream); None: for good. An idle stream holds buffers on
    /// the collector for every node of the fleet.
    pub stream_linger: Option<Duration>,
    pub root: PathBuf,
    /// Whether unchanged rounds are attested compactly (`compact`, default
    /// true; only to a collector that announces it accepts them).
    pub compact: bool,
    /// A full report is sent at least this often, whatever the findings
    /// (`checkpoint_secs`, default one day): the checkpoint that keeps
    /// every day's evidence self-contained and lets retention keep a day's
    /// standing without its compact rounds.
    pub checkpoint: Duration,
}

impl Config {
    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.state_dir.join("spool")
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("configuration is invalid:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Load and validate the configuration.
pub fn load(paths: &ConfigPaths, env: &dyn Env) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let mut raw = RawConfig::default();
    let mut origins: BTreeMap<String, String> = BTreeMap::new();

    let mut files = Vec::new();
    match std::fs::metadata(&paths.file) {
        Ok(_) => files.push(paths.file.clone()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !paths.file_required => {}
        Err(e) => problems.push(format!("{}: {e}", paths.file.display())),
    }
    match std::fs::read_dir(&paths.dir) {
        Ok(rd) => {
            let mut dropins: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            dropins.sort();
            files.extend(dropins);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problems.push(format!("{}: {e}", paths.dir.display())),
    }

    for file in &files {
        let origin = file.display().to_string();
        let table = match read_table(file) {
            Ok(t) => t,
            Err(why) => {
                problems.push(format!("{origin}: {why}"));
                continue;
            }
        };
        for (key, value) in table {
            apply_key(&mut raw, &mut origins, &mut problems, &origin, &key, value);
        }
    }

    let mut env_vars = env.vars();
    env_vars.sort();
    for (name, value) in env_vars {
        let Some(suffix) = name.strip_prefix(ENV_PREFIX) else { continue };
        if ENV_NOT_CONFIG.contains(&name.as_str()) {
            continue;
        }
        let key = suffix.to_ascii_lowercase();
        let origin = format!("environment {name}");
        // Environment values carry no type: try the natural TOML type first,
        // then fall back to a string (a profile may be named "2026").
        let typed = guess_toml(&value);
        let as_string = toml::Value::String(value.clone());
        if try_key(&key, typed.clone()).is_ok() {
            apply_key(&mut raw, &mut origins, &mut problems, &origin, &key, typed);
        } else {
            apply_key(&mut raw, &mut origins, &mut problems, &origin, &key, as_string);
        }
    }

    let config = validate(raw, &origins, &mut problems);
    if problems.is_empty() { Ok(config) } else { Err(ConfigError { problems }) }
}

fn read_table(path: &Path) -> Result<toml::Table, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    f.take(CONFIG_LIMIT + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
    if text.len() as u64 > CONFIG_LIMIT {
        return Err(format!("larger than {CONFIG_LIMIT} bytes"));
    }
    text.parse::<toml::Table>().map_err(|e| e.to_string().trim().to_string())
}

fn guess_toml(value: &str) -> toml::Value {
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match value {
        "true" | "yes" | "on" => toml::Value::Boolean(true),
        "false" | "no" | "off" => toml::Value::Boolean(false),
        _ => toml::Value::String(value.to_string()),
    }
}

fn try_key(key: &str, value: toml::Value) -> Result<RawConfig, String> {
    let mut one = toml::Table::new();
    one.insert(key.to_string(), value);
    RawConfig::deserialize(one).map_err(|e| e.message().trim().to_string())
}

fn apply_key(
    raw: &mut RawConfig,
    origins: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
    origin: &str,
    key: &str,
    value: toml::Value,
) {
    match try_key(key, value) {
        Ok(one) => {
            raw.merge(one);
            origins.insert(key.to_string(), origin.to_string());
        }
        Err(why) => problems.push(format!("{origin}: {key}: {why}")),
    }
}

struct Problems<'a> {
    origins: &'a BTreeMap<String, String>,
    list: &'a mut Vec<String>,
}

impl Problems<'_> {
    fn bad(&mut self, key: &str, why: String) {
        let origin = self.origins.get(key).map(String::as_str).unwrap_or("default");
        self.list.push(format!("{origin}: {key}: {why}"));
    }

    fn range(&mut self, key: &str, v: u64, lo: u64, hi: u64) -> u64 {
        if v < lo || v > hi {
            self.bad(key, format!("must be between {lo} and {hi} (got {v})"));
        }
        v.clamp(lo, hi)
    }

    fn absolute(&mut self, key: &str, p: PathBuf) -> PathBuf {
        if !p.is_absolute() {
            self.bad(key, format!("must be an absolute path (got {:?})", p.display().to_string()));
        }
        p
    }
}

fn validate(raw: RawConfig, origins: &BTreeMap<String, String>, problems: &mut Vec<String>) -> Config {
    let mut p = Problems { origins, list: problems };
    let interval_secs = p.range("interval_secs", raw.interval_secs.unwrap_or(300), 1, 7 * 24 * 3600);
    let jitter_percent = p.range("jitter_percent", raw.jitter_percent.unwrap_or(10), 0, 50);
    let spool_max_bytes = p.range("spool_max_bytes", raw.spool_max_bytes.unwrap_or(64 << 20), 4096, 64 << 30);
    let backoff_min_ms = p.range("backoff_min_ms", raw.backoff_min_ms.unwrap_or(500), 1, 3_600_000);
    let backoff_max_ms = p.range("backoff_max_ms", raw.backoff_max_ms.unwrap_or(60_000), 1, 3_600_000);
    let shutdown_grace_secs = p.range("shutdown_grace_secs", raw.shutdown_grace_secs.unwrap_or(10), 0, 600);
    let stream_linger_secs =
        p.range("stream_linger_secs", raw.stream_linger_secs.unwrap_or(DEFAULT_STREAM_LINGER_SECS), 0, 24 * 3600);
    let checkpoint_secs = p.range("checkpoint_secs", raw.checkpoint_secs.unwrap_or(DAY_SECS), 1, DAY_SECS);
    if backoff_max_ms < backoff_min_ms {
        p.bad("backoff_max_ms", format!("must not be below backoff_min_ms ({backoff_min_ms})"));
    }
    let state_dir = p.absolute("state_dir", raw.state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)));
    let key_path = match raw.key_path {
        Some(path) => p.absolute("key_path", path),
        None => state_dir.join(super::identity::KEY_FILE),
    };
    let cert_path = match raw.cert_path {
        Some(path) => p.absolute("cert_path", path),
        None => state_dir.join(super::identity::CERT_FILE),
    };
    let ca_path = match raw.ca_path {
        Some(path) => p.absolute("ca_path", path),
        None => state_dir.join(super::identity::CA_FILE),
    };
    let root = p.absolute("root", raw.root.unwrap_or_else(|| PathBuf::from("/")));

    let profile = raw.profile.unwrap_or_else(|| crate::audit::profile::DEFAULT_PROFILE.to_string());
    if profile.trim().is_empty() {
        p.bad("profile", "must not be empty".into());
    }
    let collector_urls = match raw.collector_url.map(CollectorUrls::into_vec) {
        None => {
            p.list.push("collector_url: required (the collector's https:// URL)".into());
            Vec::new()
        }
        Some(urls) => {
            if urls.is_empty() {
                p.bad("collector_url", "an empty list: give at least one https:// URL".into());
            }
            if urls.len() > MAX_COLLECTOR_URLS {
                p.bad("collector_url", format!("{} URLs: at most {MAX_COLLECTOR_URLS}", urls.len()));
            }
            for (i, url) in urls.iter().enumerate() {
                if let Err(why) = super::tls::CollectorUrl::parse(url) {
                    p.bad("collector_url", why);
                }
                if urls[..i].contains(url) {
                    p.bad("collector_url", format!("{url:?} is listed twice"));
                }
            }
            urls
        }
    };
    if let Some(name) = &raw.server_name
        && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        p.bad("server_name", format!("{name:?} is not a DNS name or IP address"));
    }

    Config {
        collector_urls,
        server_name: raw.server_name,
        state_dir,
        profile,
        interval: Duration::from_secs(interval_secs),
        jitter_percent,
        spool_max_bytes,
        watch: raw.watch.unwrap_or(true),
        key_path,
        cert_path,
        ca_path,
        backoff_min: Duration::from_millis(backoff_min_ms),
        backoff_max: Duration::from_millis(backoff_max_ms.max(backoff_min_ms)),
        shutdown_grace: Duration::from_secs(shutdown_grace_secs),
        stream_linger: (stream_linger_secs > 0).then(|| Duration::from_secs(stream_linger_secs)),
        root,
        compact: raw.compact.unwrap_or(true),
        checkpoint: Duration::from_secs(checkpoint_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn paths(dir: &Path) -> ConfigPaths {
        ConfigPaths::new(Some(dir.join("agent.toml")), None)
    }

    #[test]
    fn defaults_apply_when_only_the_url_is_given() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("agent.toml"), "collector_url = \"https://collector.example:7443\"\n").unwrap();
        let c = load(&paths(t.path()), &MapEnv::default()).unwrap();
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.key_path, PathBuf::from("/var/lib/kosmos-node-agent/key.pem"));
        assert_eq!(c.profile, "kosmos-external");
        assert_eq!(c.interval, Duration::from_secs(300));
        assert_eq!(c.jitter_percent, 10);
        assert_eq!(c.spool_max_bytes, 64 << 20);
        assert!(c.watch);
        assert!(c.compact);
        assert_eq!(c.checkpoint, Duration::from_secs(DAY_SECS));
        assert_eq!(c.root, PathBuf::from("/"));
    }

    #[test]
    fn dropins_in_lexical_order_then_env_win() {
        let t = tempfile::tempdir().unwrap();
        fs::write(
            t.path().join("agent.toml"),
            "collector_url = \"https://a:1\"\ninterval_secs = 60\nprofile = \"base\"\n",
        )
        .unwrap();
        fs::create_dir(t.path().join("agent.d")).unwrap();
        fs::write(t.path().join("agent.d/20-late.toml"), "interval_secs = 20\nstate_dir = \"/srv/k\"\n").unwrap();
        fs::write(t.path().join("agent.d/10-early.toml"), "interval_secs = 10\njitter_percent = 5\n").unwrap();
        fs::write(t.path().join("agent.d/ignored.conf"), "this is not toml").unwrap();
        let env = MapEnv::new([
            ("KOSMOS_AGENT_PROFILE", "2026"),
            ("KOSMOS_AGENT_WATCH", "false"),
            ("KOSMOS_AGENT_LOG", "debug"),
            ("PATH", "/bin"),
        ]);
        let c = load(&paths(t.path()), &env).unwrap();
        assert_eq!(c.interval, Duration::from_secs(20));
        assert_eq!(c.jitter_percent, 5);
        assert_eq!(c.state_dir, PathBuf::from("/srv/k"));
        assert_eq!(c.cert_path, PathBuf::from("/srv/k/cert.pem"), "paths default under the final state_dir");
        assert_eq!(c.profile, "2026", "a numeric-looking env value for a string key stays a string");
        assert!(!c.watch);
        assert_eq!(c.collector_urls, ["https://a:1"]);
    }

    #[test]
    fn every_bad_key_is_reported_at_once_with_its_origin() {
        let t = tempfile::tempdir().unwrap();
        fs::write(
            t.path().join("agent.toml"),
            "collector_url = \"http://plain:80\"\ninterval_secs = 0\ncolour = \"blue\"\nwatch = \"maybe\"\n",
        )
        .unwrap();
        fs::create_dir(t.path().join("agent.d")).unwrap();
        fs::write(t.path().join("agent.d/50-x.toml"), "jitter_percent = 90\nstate_dir = \"relative/dir\"\n").unwrap();
        fs::write(t.path().join("agent.d/60-broken.toml"), "this = = toml").unwrap();
        let env = MapEnv::new([("KOSMOS_AGENT_BOGUS", "1"), ("KOSMOS_AGENT_BACKOFF_MIN_MS", "soon")]);
        let err = load(&paths(t.path()), &env).unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "agent.toml: collector_url",
            "agent.toml: interval_secs: must be between 1",
            "agent.toml: colour: unknown field",
            "agent.toml: watch:",
            "50-x.toml: jitter_percent: must be between 0 and 50",
            "50-x.toml: state_dir: must be an absolute path",
            "60-broken.toml:",
            "environment KOSMOS_AGENT_BOGUS: bogus: unknown field",
            "environment KOSMOS_AGENT_BACKOFF_MIN_MS: backoff_min_ms:",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(err.problems.len(), 9, "{all}");
    }

    #[test]
    fn missing_default_file_is_fine_but_explicit_one_is_not() {
        let t = tempfile::tempdir().unwrap();
        let env = MapEnv::new([("KOSMOS_AGENT_COLLECTOR_URL", "https://c:7443")]);
        let implicit =
            ConfigPaths { file: t.path().join("absent.toml"), file_required: false, dir: t.path().join("agent.d") };
        assert!(load(&implicit, &env).is_ok());
        let err = load(&paths(t.path()), &env).unwrap_err();
        assert!(err.problems[0].contains("agent.toml"), "{err}");
    }

    #[test]
    fn url_and_backoff_cross_checks() {
        let t = tempfile::tempdir().unwrap();
        fs::write(
            t.path().join("agent.toml"),
            "backoff_min_ms = 5000\nbackoff_max_ms = 100\nserver_name = \"not a name\"\n",
        )
        .unwrap();
        let err = load(&paths(t.path()), &MapEnv::default()).unwrap_err();
        let all = err.problems.join("\n");
        assert!(all.contains("collector_url: required"), "{all}");
        assert!(all.contains("backoff_max_ms: must not be below"), "{all}");
        assert!(all.contains("server_name"), "{all}");
        assert!(super::super::tls::CollectorUrl::parse("https://10.0.0.1:7443").is_ok());
        assert!(super::super::tls::CollectorUrl::parse("https://").is_err());
    }

    /// The commented default configuration the packages install as
    /// /etc/kosmos-node-agent/agent.toml: with every `#key = value` line
    /// uncommented it must load, and every value it documents must be the
    /// built-in default (only the two example-only keys differ).
    #[test]
    fn shipped_default_config_documents_the_real_defaults() {
        let shipped =
            fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/agent/agent.toml")).unwrap();
        // As installed, every key is commented out.
        assert!(shipped.parse::<toml::Table>().unwrap().is_empty());
        let mut keys = Vec::new();
        let uncommented: String = shipped
            .lines()
            .filter_map(|l| {
                let line = l.strip_prefix('#')?;
                let t = line.parse::<toml::Table>().ok().filter(|t| t.len() == 1)?;
                keys.extend(t.keys().cloned());
                Some(format!("{line}\n"))
            })
            .collect();
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("agent.toml"), uncommented).unwrap();
        let all = load(&paths(t.path()), &MapEnv::default()).unwrap();
        let url = "collector_url = \"https://collector.example:7443\"\nserver_name = \"collector.example\"\n";
        fs::write(t.path().join("agent.toml"), url).unwrap();
        let defaults = load(&paths(t.path()), &MapEnv::default()).unwrap();
        assert_eq!(all, defaults);
        // Every key of the configuration is documented: serde names them all
        // when it refuses an unknown one.
        let refusal = try_key("not_a_key", toml::Value::Boolean(true)).unwrap_err();
        let mut known: Vec<&str> = refusal.split('`').skip(3).step_by(2).collect();
        known.sort();
        let mut documented: Vec<&str> = keys.iter().map(String::as_str).collect();
        documented.sort();
        assert!(known.len() > 10, "{refusal}");
        assert_eq!(documented, known);
    }

    #[test]
    fn collector_url_is_one_url_or_a_list_and_a_later_layer_replaces_the_list() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("agent.toml"), "collector_url = [\"https://a:7443\", \"https://b:7443\"]\n").unwrap();
        let c = load(
            &ConfigPaths::new(Some(t.path().join("agent.toml")), Some(t.path().join("agent.d"))),
            &MapEnv::default(),
        )
        .unwrap();
        assert_eq!(c.collector_urls, ["https://a:7443", "https://b:7443"]);
        fs::create_dir(t.path().join("agent.d")).unwrap();
        fs::write(t.path().join("agent.d/10-one.toml"), "collector_url = \"https://c:7443\"\n").unwrap();
        let c = load(
            &ConfigPaths::new(Some(t.path().join("agent.toml")), Some(t.path().join("agent.d"))),
            &MapEnv::default(),
        )
        .unwrap();
        assert_eq!(c.collector_urls, ["https://c:7443"]);
    }

    #[test]
    fn a_bad_collector_url_list_is_refused_with_the_reason() {
        let cases = [
            ("collector_url = []", "an empty list"),
            ("collector_url = [\"https://a:1\", \"https://a:1\"]", "listed twice"),
            ("collector_url = [\"https://a:1\", \"http://b:2\"]", "must start with https://"),
            ("collector_url = [1, 2]", "collector_url"),
        ];
        for (line, expected) in cases {
            let t = tempfile::tempdir().unwrap();
            fs::write(t.path().join("agent.toml"), format!("{line}\n")).unwrap();
            let e = load(&ConfigPaths::new(Some(t.path().join("agent.toml")), None), &MapEnv::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{line}: {e}");
        }
        let many: Vec<String> = (0..=MAX_COLLECTOR_URLS).map(|i| format!("\"https://r{i}:7443\"")).collect();
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("agent.toml"), format!("collector_url = [{}]\n", many.join(","))).unwrap();
        let e = load(&ConfigPaths::new(Some(t.path().join("agent.toml")), None), &MapEnv::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 16"), "{e}");
    }
}
