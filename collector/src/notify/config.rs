//! `[notifications]` and `[[webhooks]]` in collector.toml, validated into
//! [`Notifications`]. Errors name the key at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kosmos_proto::verdict::Severity;
use serde::Deserialize;

/// `[notifications]`: how the notifier reads, groups and warns. Every key
/// is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    storm_threshold: Option<usize>,
    storm_window: Option<String>,
    poll_interval: Option<String>,
    stale_scan_interval: Option<String>,
    expiry_scan_interval: Option<String>,
    certificate_warning_days: Option<Vec<i64>>,
    end_of_life_warning_days: Option<Vec<i64>>,
    waiver_warning_days: Option<Vec<i64>>,
    keep_delivered: Option<String>,
    max_backoff: Option<String>,
}

/// One `[[webhooks]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    name: Option<String>,
    url: String,
    secret_file: PathBuf,
    kinds: Option<Vec<String>>,
    min_severity: Option<String>,
    nodes: Option<Vec<String>>,
    ca_file: Option<PathBuf>,
    timeout: Option<String>,
}

/// One receiving endpoint.
#[derive(Clone)]
pub struct Webhook {
    /// The outbox's name for the endpoint (`name`, else the URL): renaming
    /// it starts a new queue, the old one's messages stay undelivered.
    pub name: String,
    pub url: reqwest::Url,
    /// The HMAC-SHA256 key (the secret file's content, one trailing
    /// newline removed).
    pub secret: Vec<u8>,
    /// Kind patterns (`finding.failing`, `chain.*`); empty: every kind.
    pub kinds: Vec<glob::Pattern>,
    pub min_severity: Severity,
    /// Node id or hostname patterns; empty: every node.
    pub nodes: Vec<glob::Pattern>,
    /// PEM certificates trusted for the receiver, besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Webhook").field("name", &self.name).field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

/// The validated notification settings.
#[derive(Debug, Clone)]
pub struct Notifications {
    pub webhooks: Vec<Webhook>,
    /// This many events of one kind and subject within `storm_window` are
    /// a storm: sent as one grouped message.
    pub storm_threshold: usize,
    pub storm_window: Duration,
    pub poll_interval: Duration,
    pub stale_scan_interval: Duration,
    pub expiry_scan_interval: Duration,
    /// Days before expiry at which a warning goes out, largest first.
    pub certificate_warning_days: Vec<i64>,
    pub end_of_life_warning_days: Vec<i64>,
    pub waiver_warning_days: Vec<i64>,
    /// Delivered messages are kept this long (what was sent, when).
    pub keep_delivered: Duration,
    pub max_backoff: Duration,
}

fn duration(key: &str, v: Option<&str>, default: Duration, range: (Duration, Duration)) -> Result<Duration, String> {
    let Some(v) = v else { return Ok(default) };
    let d = humantime::parse_duration(v).map_err(|e| format!("{key} = {v:?}: {e} (e.g. \"30s\", \"1h\")"))?;
    if d < range.0 || d > range.1 {
        return Err(format!(
            "{key} = {v:?}: must be between {} and {}",
            humantime::format_duration(range.0),
            humantime::format_duration(range.1)
        ));
    }
    Ok(d)
}

fn warning_days(key: &str, v: Option<Vec<i64>>, default: &[i64]) -> Result<Vec<i64>, String> {
    let mut days = v.unwrap_or_else(|| default.to_vec());
    if days.iter().any(|d| !(1..=3650).contains(d)) {
        return Err(format!("notifications.{key}: every value must be 1..=3650 days"));
    }
    days.sort_unstable_by(|a, b| b.cmp(a));
    days.dedup();
    Ok(days)
}

const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(86_400);

/// Validate `[notifications]` and the `[[webhooks]]`; None when there is
/// no webhook (nothing to notify; the settings are still checked).
pub fn parse(raw: Option<RawNotifications>, hooks: Vec<RawWebhook>) -> Result<Option<Notifications>, String> {
    let raw = raw.unwrap_or_default();
    let mut webhooks: Vec<Webhook> = Vec::new();
    for (i, h) in hooks.into_iter().enumerate() {
        let hook = webhook(h).map_err(|e| format!("webhooks[{i}]: {e}"))?;
        if webhooks.iter().any(|w| w.name == hook.name) {
            return Err(format!("webhooks[{i}]: the name {:?} is used twice", hook.name));
        }
        webhooks.push(hook);
    }
    let storm_threshold = raw.storm_threshold.unwrap_or(10);
    if !(2..=100_000).contains(&storm_threshold) {
        return Err("notifications.storm_threshold must be 2..=100000".into());
    }
    let settings = Notifications {
        webhooks,
        storm_threshold,
        storm_window: duration(
            "notifications.storm_window",
            raw.storm_window.as_deref(),
            Duration::from_secs(60),
            (SECOND, Duration::from_secs(3600)),
        )?,
        poll_interval: duration(
            "notifications.poll_interval",
            raw.poll_interval.as_deref(),
            Duration::from_millis(500),
            (Duration::from_millis(100), Duration::from_secs(60)),
        )?,
        stale_scan_interval: duration(
            "notifications.stale_scan_interval",
            raw.stale_scan_interval.as_deref(),
            Duration::from_secs(30),
            (SECOND, Duration::from_secs(3600)),
        )?,
        expiry_scan_interval: duration(
            "notifications.expiry_scan_interval",
            raw.expiry_scan_interval.as_deref(),
            Duration::from_secs(3600),
            (SECOND, DAY),
        )?,
        certificate_warning_days: warning_days("certificate_warning_days", raw.certificate_warning_days, &[30, 7])?,
        end_of_life_warning_days: warning_days("end_of_life_warning_days", raw.end_of_life_warning_days, &[90, 30])?,
        waiver_warning_days: warning_days("waiver_warning_days", raw.waiver_warning_days, &[14, 3])?,
        keep_delivered: duration(
            "notifications.keep_delivered",
            raw.keep_delivered.as_deref(),
            7 * DAY,
            (Duration::from_secs(60), 3650 * DAY),
        )?,
        max_backoff: duration(
            "notifications.max_backoff",
            raw.max_backoff.as_deref(),
            Duration::from_secs(300),
            (SECOND, DAY),
        )?,
    };
    Ok(if settings.webhooks.is_empty() { None } else { Some(settings) })
}

/// Read a secret file: at most 4 KiB, not readable by others.
fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(path).map_err(|e| format!("secret_file {}: {e}", path.display()))?;
    let meta = file.metadata().map_err(|e| format!("secret_file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(format!("secret_file {}: readable by every user; chmod o-r (0600 or 0640)", path.display()));
    }
    let mut secret = Vec::new();
    file.take(4097).read_to_end(&mut secret).map_err(|e| format!("secret_file {}: {e}", path.display()))?;
    if secret.len() > 4096 {
        return Err(format!("secret_file {}: larger than 4096 bytes", path.display()));
    }
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.len() < 16 {
        return Err(format!("secret_file {}: the secret must be at least 16 bytes", path.display()));
    }
    Ok(secret)
}

fn patterns(key: &str, v: Option<Vec<String>>) -> Result<Vec<glob::Pattern>, String> {
    v.unwrap_or_default().iter().map(|p| glob::Pattern::new(p).map_err(|e| format!("{key}: {p:?}: {e}"))).collect()
}

fn webhook(raw: RawWebhook) -> Result<Webhook, String> {
    let url = reqwest::Url::parse(&raw.url).map_err(|e| format!("url {:?}: {e}", raw.url))?;
    match url.scheme() {
        "https" => {}
        // Health data must be encrypted in transit: plain HTTP only to
        // this machine (a local relay, the tests' receiver).
        "http" if url_is_loopback(&url) => {}
        "http" => {
            return Err(format!("url {:?}: plain http is allowed only to a loopback address; use https", raw.url));
        }
        other => return Err(format!("url {:?}: the scheme must be https (not {other})", raw.url)),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("url {:?}: no credentials in the URL; the secret_file signs every message", raw.url));
    }
    let secret = read_secret(&raw.secret_file)?;
    let min_severity = match raw.min_severity.as_deref() {
        None => Severity::Info,
        Some(s) => {
            Severity::parse(s).ok_or_else(|| format!("min_severity {s:?}: one of info, low, medium, high, critical"))?
        }
    };
    let ca_pem = match &raw.ca_file {
        None => None,
        Some(p) => {
            let pem = std::fs::read(p).map_err(|e| format!("ca_file {}: {e}", p.display()))?;
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("ca_file {}: {e}", p.display()))?;
            Some(pem)
        }
    };
    let timeout =
        duration("timeout", raw.timeout.as_deref(), Duration::from_secs(10), (SECOND, Duration::from_secs(120)))?;
    // The default name is the URL without its query or fragment (which
    // may carry a token): it is shown in logs and metrics.
    let name = raw.name.unwrap_or_else(|| {
        let mut shown = url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        shown.to_string()
    });
    if name.is_empty() || name.len() > 200 {
        return Err("name must be 1 to 200 characters".into());
    }
    Ok(Webhook {
        name,
        url,
        secret,
        kinds: patterns("kinds", raw.kinds)?,
        min_severity,
        nodes: patterns("nodes", raw.nodes)?,
        ca_pem,
        timeout,
    })
}

fn url_is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(h) => {
            h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn secret(dir: &Path, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("secret");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn hook(url: &str, secret_file: &Path) -> RawWebhook {
        RawWebhook {
            name: None,
            url: url.into(),
            secret_file: secret_file.into(),
            kinds: None,
            min_severity: None,
            nodes: None,
            ca_file: None,
            timeout: None,
        }
    }

    #[test]
    fn a_webhook_needs_https_off_loopback_and_a_private_secret() {
        let d = tempfile::tempdir().unwrap();
        let s = secret(d.path(), 0o600);
        let ok = parse(None, vec![hook("https://siem.example/hook", &s)]).unwrap().unwrap();
        assert_eq!(ok.webhooks[0].secret, b"0123456789abcdef0123");
        assert_eq!(ok.webhooks[0].name, "https://siem.example/hook");
        assert!(parse(None, vec![hook("http://127.0.0.1:9/hook", &s)]).unwrap().is_some());
        let e = parse(None, vec![hook("http://siem.example/hook", &s)]).unwrap_err();
        assert!(e.contains("webhooks[0]") && e.contains("use https"), "{e}");
        let e = parse(None, vec![hook("https://u:p@siem.example/hook", &s)]).unwrap_err();
        assert!(e.contains("no credentials"), "{e}");
        let world = secret(d.path(), 0o644);
        let e = parse(None, vec![hook("https://siem.example/hook", &world)]).unwrap_err();
        assert!(e.contains("readable by every user"), "{e}");
    }

    #[test]
    fn settings_are_checked_and_defaulted() {
        let d = tempfile::tempdir().unwrap();
        let s = secret(d.path(), 0o600);
        assert!(parse(None, Vec::new()).unwrap().is_none());
        assert!(parse(Some(RawNotifications::default()), Vec::new()).unwrap().is_none());
        let bad = RawNotifications { storm_threshold: Some(1), ..Default::default() };
        assert!(parse(Some(bad), Vec::new()).unwrap_err().contains("storm_threshold"), "checked without webhooks too");
        let n = parse(None, vec![hook("https://a.example/", &s)]).unwrap().unwrap();
        assert_eq!((n.storm_threshold, n.storm_window), (10, Duration::from_secs(60)));
        assert_eq!(n.certificate_warning_days, vec![30, 7]);
        let raw = RawNotifications { storm_window: Some("2 fortnights".into()), ..Default::default() };
        let e = parse(Some(raw), vec![hook("https://a.example/", &s)]).unwrap_err();
        assert!(e.contains("notifications.storm_window"), "{e}");
        let e = parse(None, vec![hook("https://a.example/", &s), hook("https://a.example/", &s)]).unwrap_err();
        assert!(e.contains("used twice"), "{e}");
        let mut bad = hook("https://a.example/", &s);
        bad.min_severity = Some("severe".into());
        assert!(parse(None, vec![bad]).unwrap_err().contains("min_severity"));
    }
}
