//! The collector's HTTP port: the live dashboard (the fleet report's views,
//! with node and check drill-down and filters), `/metrics` for Prometheus
//! (Scaleway Cockpit, Grafana), the report as JSON, and `/healthz`.
//!
//! It is read-only: it opens the store read-only and has no route that
//! changes anything. It binds to localhost by default; anywhere else it
//! refuses to start without a bearer token (checked on every route but
//! `/healthz`). Pages carry a Content-Security-Policy that forbids scripts
//! and remote resources, so even a hostile node's strings cannot run code.
//!
//! The fleet report is rebuilt in the background when the store changes
//! (see [`refresh_loop`]) and served from memory, so the fleet page and
//! `/metrics` cost a render, not a scan of the store. A node's page reads
//! that node's findings live.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

use crate::fleet::html::{self, Filter};
use crate::fleet::{Detail, FleetReport, NodeState, Options};
use crate::metrics::Metrics;
use crate::store::judge::EventKind;
use crate::store::{FleetRead, StoreError, StoreLocation, now_ms};

/// The fleet report is rebuilt at least this often, so that ages advance.
pub const REFRESH: Duration = Duration::from_secs(60);
/// How often the store is asked whether anything changed.
const POLL: Duration = Duration::from_secs(1);

/// Bearer tokens shorter than this are refused as configuration errors.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("http_listen {addr} is not a loopback address: set http_token_file to require a bearer token")]
    TokenRequired { addr: SocketAddr },
    #[error("cannot read http_token_file {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http_token_file {path}: the token must be at least {MIN_TOKEN_LEN} characters")]
    TokenTooShort { path: String },
}

/// Read the bearer token and decide whether one is required.
pub fn load_token(listen: SocketAddr, token_file: Option<&std::path::Path>) -> Result<Option<String>, DashboardError> {
    match token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| DashboardError::Token { path: path.display().to_string(), source: e })?;
            let token = text.trim().to_string();
            if token.len() < MIN_TOKEN_LEN {
                return Err(DashboardError::TokenTooShort { path: path.display().to_string() });
            }
            Ok(Some(token))
        }
        None if listen.ip().is_loopback() => Ok(None),
        None => Err(DashboardError::TokenRequired { addr: listen }),
    }
}

/// The dashboard's state.
#[derive(Debug)]
pub struct Dashboard {
    store: StoreLocation,
    interval_secs: u64,
    /// SHA-256 of the bearer token, when one is required.
    token_sha256: Option<[u8; 32]>,
    ingest: Arc<Metrics>,
    snapshot: RwLock<Arc<Snapshot>>,
}

/// The fleet report and what is rendered from it once per rebuild: the
/// unfiltered fleet page and the fleet part of `/metrics`.
#[derive(Debug)]
struct Snapshot {
    report: FleetReport,
    fleet_page: String,
    fleet_metrics: String,
}

impl Snapshot {
    fn new(report: FleetReport) -> Snapshot {
        let fleet_page = html::fleet_page(&report, &Filter::default());
        let fleet_metrics = match fleet_metrics(&report) {
            Ok(text) => text,
            Err(e) => format!("# fleet metrics could not be encoded: {e}\n"),
        };
        Snapshot { report, fleet_page, fleet_metrics }
    }
}

type Shared = Arc<Dashboard>;

impl Dashboard {
    /// Build the first snapshot (so the first page is served from memory).
    pub fn new(
        store: StoreLocation,
        interval_secs: u64,
        token: Option<String>,
        ingest: Arc<Metrics>,
    ) -> Result<Dashboard, StoreError> {
        let first = build(&store, interval_secs)?;
        Ok(Dashboard {
            store,
            interval_secs,
            token_sha256: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            ingest,
            snapshot: RwLock::new(Arc::new(Snapshot::new(first))),
        })
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace(&self, snapshot: Snapshot) {
        match self.snapshot.write() {
            Ok(mut g) => *g = Arc::new(snapshot),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(snapshot),
        }
    }
}

/// The snapshot the dashboard keeps: counts and summaries, no finding text
/// (about 100 KB per node for a full report, which for 10,000 nodes would
/// be a gigabyte held for pages that never show it: a node's page reads its
/// findings live, and `/api/report.json` builds the full report on demand).
/// Built on one core (see [`Options::parallel`]).
fn build(store: &StoreLocation, interval_secs: u64) -> Result<FleetReport, StoreError> {
    build_detailed(store, interval_secs, Detail::Summary, false)
}

fn build_detailed(
    store: &StoreLocation,
    interval_secs: u64,
    detail: Detail,
    parallel: bool,
) -> Result<FleetReport, StoreError> {
    store.fleet_reader()?.fleet_report(&Options { now_ms: now_ms(), since_ms: None, interval_secs, detail, parallel })
}

/// Keep the snapshot fresh until the task is dropped.
///
/// Every [`POLL`] it asks the store whether anything was committed
/// ([`FleetRead::change_token`], read without scanning anything). After
/// a change it rebuilds, but no sooner than five times the last build's
/// cost after the previous one, so a large, busy fleet spends at most about
/// a fifth of a core on the dashboard. Without changes it still rebuilds
/// every [`REFRESH`], so that ages and staleness move on.
pub async fn refresh_loop(dash: Shared) {
    let mut watcher: Option<Box<dyn FleetRead>> = None;
    let mut seen_version: Option<i64> = None;
    let mut last_build = Instant::now();
    let mut last_cost = Duration::ZERO;
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        // Store calls block (PostgreSQL's client runs its own runtime, which
        // cannot start inside this one): they run on the blocking pool. A
        // reader whose token cannot be read is dropped and opened again at
        // the next tick (a database restart ends its connection).
        let store = dash.store.clone();
        let taken = watcher.take();
        let (kept, version) = tokio::task::spawn_blocking(move || {
            let mut w = taken.or_else(|| store.fleet_reader().ok());
            let version = w.as_mut().and_then(|w| w.change_token().ok());
            (w.filter(|_| version.is_some()), version)
        })
        .await
        .unwrap_or((None, None));
        watcher = kept;
        let changed = version.is_none() || version != seen_version;
        let gap = (last_cost * 5).max(POLL);
        let due = (changed && last_build.elapsed() >= gap) || last_build.elapsed() >= REFRESH;
        if !due {
            continue;
        }
        seen_version = version;
        let d = Arc::clone(&dash);
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || build(&d.store, d.interval_secs).map(Snapshot::new)).await {
            Ok(Ok(snapshot)) => {
                dash.replace(snapshot);
                tracing::debug!("fleet snapshot rebuilt in {:?}", started.elapsed());
            }
            Ok(Err(e)) => tracing::warn!("cannot rebuild the fleet snapshot: {e}"),
            Err(e) => tracing::warn!("fleet snapshot task failed: {e}"),
        }
        last_cost = started.elapsed();
        last_build = Instant::now();
    }
}

/// The router (tests drive it on a `127.0.0.1:0` listener).
pub fn router(dash: Shared) -> Router {
    let protected = Router::new()
        .route("/", get(fleet_page))
        .route("/nodes/{id}", get(node_page))
        .route("/checks/{id}", get(check_page))
        .route("/api/report.json", get(report_json))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&dash), require_token));
    Router::new().route("/healthz", get(healthz)).merge(protected).with_state(dash)
}

async fn require_token(
    State(dash): State<Shared>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let Some(expected) = dash.token_sha256 else { return next.run(request).await };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| -> [u8; 32] { Sha256::digest(t.trim().as_bytes()).into() });
    // Comparing digests keeps the comparison's timing independent of how
    // much of the token an attacker guessed.
    if presented == Some(expected) {
        next.run(request).await
    } else {
        let mut r = (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    }
}

fn html_response(body: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (headers, body).into_response()
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("no such {what}\n")).into_response()
}

async fn fleet_page(State(dash): State<Shared>, Query(filter): Query<Filter>) -> Response {
    let snap = dash.snapshot();
    if filter.is_empty() {
        html_response(snap.fleet_page.clone())
    } else {
        html_response(html::fleet_page(&snap.report, &filter))
    }
}

async fn node_page(State(dash): State<Shared>, UrlPath(id): UrlPath<String>, Query(filter): Query<Filter>) -> Response {
    let snap = dash.snapshot();
    let report = &snap.report;
    let Some(node) = report.nodes.iter().find(|n| n.id == id).cloned() else { return not_found("node") };
    let d = Arc::clone(&dash);
    let lookup = id.clone();
    let findings = tokio::task::spawn_blocking(move || d.store.fleet_reader()?.node_findings(&lookup)).await;
    match findings {
        Ok(Ok(f)) => html_response(html::node_page(report, &node, &f, &filter)),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn check_page(State(dash): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    let snap = dash.snapshot();
    match snap.report.checks.iter().find(|c| c.id == id) {
        Some(c) => html_response(html::check_page(&snap.report, c)),
        None => not_found("check"),
    }
}

async fn report_json(State(dash): State<Shared>) -> Response {
    // The full report (every finding that is not a pass), built for this
    // request: the snapshot keeps no finding text.
    let (store, interval) = (dash.store.clone(), dash.interval_secs);
    let report =
        match tokio::task::spawn_blocking(move || build_detailed(&store, interval, Detail::Failing, true)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        };
    match serde_json::to_vec(&report) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn healthz(State(dash): State<Shared>) -> Response {
    let snap = dash.snapshot();
    let r = &snap.report;
    format!("ok\nsnapshot {}\nnodes {}\n", r.generated_at, r.summary.nodes_total).into_response()
}

async fn metrics(State(dash): State<Shared>) -> Response {
    let snap = dash.snapshot();
    match ingest_metrics(&dash.ingest) {
        Ok(ingest) => {
            // The fleet part was encoded with the snapshot; the ingest part
            // is live and carries the single `# EOF` terminator.
            let mut text = String::with_capacity(snap.fleet_metrics.len() + ingest.len());
            text.push_str(&snap.fleet_metrics);
            text.push_str(&ingest);
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

type Labels = Vec<(&'static str, String)>;

/// The collector's ingest metrics (live counters), ending with `# EOF`.
pub fn ingest_metrics(ingest: &Metrics) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    ingest.register(&mut reg);
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

/// The fleet metrics of a report, without the `# EOF` terminator. Per-node
/// series are labelled with node id and hostname.
pub fn fleet_metrics(report: &FleetReport) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();

    let by_state = Family::<Labels, Gauge>::default();
    for state in [NodeState::Ok, NodeState::Stale, NodeState::NeverReported, NodeState::Revoked] {
        let n = report.nodes.iter().filter(|n| n.state == state).count();
        by_state.get_or_create(&vec![("state", state.as_str().to_string())]).set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    reg.register("kosmos_fleet_nodes", "Enrolled nodes by reporting state", by_state);

    let ratio = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let compliant = Family::<Labels, Gauge>::default();
    let last = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let chain = Family::<Labels, Gauge>::default();
    let cert_expiry = Family::<Labels, Gauge>::default();
    for n in &report.nodes {
        let labels = vec![("node", n.id.clone()), ("hostname", crate::untrusted::terminal(&n.hostname).into_owned())];
        if let Some(p) = n.score_pct {
            ratio.get_or_create(&labels).set(p / 100.0);
        }
        compliant.get_or_create(&labels).set(i64::from(n.compliant));
        // Revoked nodes need no renewal: no series, so no alert.
        if n.state != NodeState::Revoked
            && let Some(t) =
                n.certificate_expires_at.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            cert_expiry.get_or_create(&labels).set(t.timestamp());
        }
        if let Some(age) = n.last_attestation_age_secs {
            let generated =
                chrono::DateTime::parse_from_rfc3339(&report.generated_at).map(|t| t.timestamp()).unwrap_or(0);
            last.get_or_create(&labels).set((generated - age) as f64);
        }
    }
    for i in &report.integrity {
        for (kind, count) in &i.events_by_kind {
            chain
                .get_or_create(&vec![("node", i.node_id.clone()), ("kind", kind.clone())])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }
    reg.register("kosmos_node_compliance_ratio", "pass / (pass + fail + error) of the node's latest findings", ratio);
    reg.register("kosmos_node_compliant", "1 when the node is compliant (on time, no blocking finding)", compliant);
    reg.register(
        "kosmos_node_last_attestation_timestamp_seconds",
        "Creation time of the node's newest attestation (Unix seconds)",
        last,
    );
    reg.register("kosmos_node_chain_events", "Chain and security events recorded on the node, by kind", chain);
    reg.register(
        "kosmos_node_certificate_expiry_timestamp_seconds",
        "notAfter of the node's client certificate issued at enrollment (Unix seconds); not for revoked nodes",
        cert_expiry,
    );

    // Fleet-wide chain events with every known kind present (0 included),
    // so that dashboards and alerts see the series before the first event.
    let by_kind = Family::<Labels, Gauge>::default();
    let mut kinds: std::collections::BTreeMap<String, u64> =
        EventKind::ALL.iter().map(|k| (k.as_str().to_string(), 0)).collect();
    for i in &report.integrity {
        for (kind, count) in &i.events_by_kind {
            *kinds.entry(kind.clone()).or_insert(0) += count;
        }
    }
    for (kind, count) in kinds {
        by_kind.get_or_create(&vec![("kind", kind)]).set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    reg.register("kosmos_fleet_chain_events", "Chain and security events recorded across the fleet, by kind", by_kind);
    let troubled = Gauge::<i64>::default();
    troubled.set(i64::try_from(report.summary.nodes_with_integrity_events).unwrap_or(i64::MAX));
    reg.register("kosmos_fleet_nodes_with_chain_events", "Nodes with at least one chain or security event", troubled);

    let failing = Family::<Labels, Gauge>::default();
    for c in &report.checks {
        failing
            .get_or_create(&vec![
                ("check", c.id.clone()),
                ("severity", c.severity.clone()),
                ("family", c.family.clone()),
            ])
            .set(i64::try_from(c.counts.fail).unwrap_or(i64::MAX));
    }
    reg.register("kosmos_check_failing_nodes", "Nodes whose latest finding for the check is fail", failing);

    let fleet_ratio = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    fleet_ratio.set(report.summary.compliant_pct.map_or(0.0, |p| p / 100.0));
    reg.register("kosmos_fleet_compliant_ratio", "Compliant nodes among non-revoked nodes", fleet_ratio);

    let mut out = String::new();
    encode(&mut out, &reg)?;
    if let Some(body) = out.strip_suffix("# EOF\n") {
        out.truncate(body.len());
    }
    Ok(out)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    dash: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let refresher = tokio::spawn(refresh_loop(Arc::clone(&dash)));
    let result = axum::serve(listener, router(dash)).with_graceful_shutdown(shutdown).await;
    refresher.abort();
    result
}
