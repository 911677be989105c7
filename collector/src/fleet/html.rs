//! HTML rendering of the fleet report: one self-contained page (inline CSS
//! and SVG, no script, nothing fetched at view time) that prints well, and
//! the pages of the live dashboard, which are the same views with links to
//! node and check drill-downs and filters.
//!
//! Everything from a node (hostnames, observed values, evidence) is
//! untrusted: maud escapes every interpolation, so a hostile node cannot
//! inject markup into the report an auditor opens.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::svg;
use super::{CheckReport, FleetReport, NodeFinding, NodeReport, NodeState, SEVERITIES, json_text};

/// Drift entries shown in HTML; the JSON and CSV reports carry all of them.
pub const DRIFT_SHOWN: usize = 500;
/// Failing nodes listed inline per check in the summary table.
const NODES_INLINE: usize = 8;

const CSS: &str = r#"
:root{--fail:#b42318;--error:#b54708;--pass:#067647;--na:#667085;--waived:#6941c6;--stale:#b54708;--ink:#101828;--muted:#475467;--line:#eaecf0;--bg:#f9fafb}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);margin:0;background:#fff}
header{padding:18px 28px;border-bottom:1px solid var(--line);background:var(--bg)}header h1{margin:0 0 4px;font-size:22px}
.meta{color:var(--muted);font-size:13px}main{padding:8px 28px 40px}nav{padding:8px 28px;border-bottom:1px solid var(--line);font-size:13px}
nav a{margin-right:14px;color:#175cd3;text-decoration:none}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:120px}
.card .v{font-size:22px;font-weight:600}.card .k{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:13px}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--bg);font-weight:600}tr{break-inside:avoid}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.b{display:inline-block;padding:0 7px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.s-fail,.st-failing{background:var(--fail)}.s-error{background:var(--error)}.s-pass,.st-ok,.n-ok{background:var(--pass)}.s-not_applicable,.st-incomplete{background:var(--na)}
.s-waived{background:var(--waived)}.n-stale,.n-never_reported{background:var(--stale)}.n-revoked{background:#344054}
.sev-critical{color:#7a271a;font-weight:700}.sev-high{color:var(--fail);font-weight:600}.sev-medium{color:var(--error)}.sev-low,.sev-info{color:var(--muted)}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}pre{white-space:pre-wrap;word-break:break-word;margin:0}
.ev{color:var(--muted)}.note{color:var(--muted);font-size:12px}.charts{display:flex;flex-wrap:wrap;gap:24px}
svg.chart .lbl{font-size:11px;fill:var(--muted)}svg.chart .val{font-size:11px;fill:var(--ink)}svg.chart .grid{stroke:var(--line)}
svg.chart rect.bar-fail{fill:var(--fail)}svg.chart rect.bar-sev{fill:#d92d20}svg.chart .l-compliant{fill:none;stroke:var(--pass);stroke-width:2}
svg.chart .l-score{fill:none;stroke:#175cd3;stroke-width:2;stroke-dasharray:4 3}svg.chart .d-compliant{fill:var(--pass)}
form.filters{display:flex;gap:10px;align-items:end;margin:10px 0}form.filters label{font-size:12px;color:var(--muted);display:flex;flex-direction:column}
.stale-row{background:#fffaeb}
@media print{nav,form.filters{display:none}header{background:none}main{padding:0 8px}h2{break-after:avoid}section.node,section.check{break-inside:auto}a{color:inherit;text-decoration:none}}
"#;

/// Dashboard filters (all optional).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Filter {
    pub severity: Option<String>,
    pub family: Option<String>,
    pub node: Option<String>,
}

impl Filter {
    fn set(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        Self::set(&self.severity).is_none() && Self::set(&self.family).is_none() && Self::set(&self.node).is_none()
    }

    fn severity_ok(&self, s: &str) -> bool {
        Self::set(&self.severity).is_none_or(|f| f == s)
    }

    fn family_ok(&self, s: &str) -> bool {
        Self::set(&self.family).is_none_or(|f| f == s)
    }

    fn node_ok(&self, id: &str, hostname: &str) -> bool {
        Self::set(&self.node).is_none_or(|f| id.contains(f) || hostname.contains(f))
    }
}

/// Where links point: anchors in the single-file report, or dashboard pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Static,
    Live,
}

fn node_href(mode: Mode, id: &str) -> String {
    match mode {
        Mode::Static => format!("#node-{id}"),
        Mode::Live => format!("/nodes/{}", urlencode(id)),
    }
}

fn check_href(mode: Mode, id: &str) -> String {
    match mode {
        Mode::Static => format!("#check-{id}"),
        Mode::Live => format!("/checks/{}", urlencode(id)),
    }
}

/// Node and check ids are `[A-Za-z0-9._:-]`; anything else is escaped.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |p| format!("{p:.1}%"))
}

fn age(secs: Option<i64>) -> String {
    match secs {
        Some(s) if s >= 0 => humantime::format_duration(std::time::Duration::from_secs(s.unsigned_abs())).to_string(),
        Some(_) => "in the future".into(),
        None => "never".into(),
    }
}

fn page(title: &str, report: &FleetReport, mode: Mode, body: Markup) -> String {
    let mut out = page_open(title, report, mode);
    out.push_str(&body.into_string());
    out.push_str(PAGE_CLOSE);
    out
}

const PAGE_CLOSE: &str = "</main></body></html>";

/// Everything of a page up to the opening of `main`: the body is written
/// after it (section by section for the large single-file report).
fn page_open(title: &str, report: &FleetReport, mode: Mode) -> String {
    let root = if mode == Mode::Live { "/" } else { "" };
    let markup = html! {
        (DOCTYPE)
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        @if mode == Mode::Live { meta http-equiv="refresh" content="60"; }
        title { (title) }
        style { (PreEscaped(CSS)) }
        header {
            h1 { (title) }
            div.meta {
                "Generated " span #generated-at { (report.generated_at) }
                " by kosmos-collector " (report.collector_version)
                @if let Some(s) = &report.since { " · history since " (s) }
                " · stale after " (report.settings.stale_after_secs) " s (3 × the "
                (report.settings.interval_secs) " s attestation interval)"
                @if mode == Mode::Live { " · live view, refreshed every 60 s" }
            }
        }
        nav {
            @if mode == Mode::Live { a href="/" { "Fleet" } }
            @for (anchor, label) in [("summary", "Summary"), ("srm", "Responsibilities"), ("nodes", "Nodes"), ("checks", "Checks"),
                                     ("drift", "Drift"), ("integrity", "Integrity"), ("waivers", "Waivers"), ("trend", "Trend")] {
                a href={ (root) "#" (anchor) } { (label) }
            }
            @if mode == Mode::Live { a href="/metrics" { "/metrics" } a href="/api/report.json" { "JSON" } }
        }
    };
    // html/head/body start tags are implied (HTML5); written explicitly for
    // readers of the source.
    let mut s = markup.into_string();
    if let Some(rest) = s.strip_prefix("<!DOCTYPE html>") {
        s = format!("<!DOCTYPE html><html lang=\"en\"><head>{}", rest.replacen("<header>", "</head><body><header>", 1));
    }
    s.push_str("<main>");
    s
}

/// The single-file report: every view, with each node's and each failing
/// check's details in the same file. Written section by section, so the
/// page never exists whole in memory.
pub fn write_report<W: std::io::Write + ?Sized>(report: &FleetReport, out: &mut W) -> std::io::Result<()> {
    let filter = Filter::default();
    let names = hostnames(report);
    out.write_all(page_open("Fleet hardening report", report, Mode::Static).as_bytes())?;
    out.write_all(fleet_sections(report, Mode::Static, &filter).into_string().as_bytes())?;
    let intro = html! {
        h2 #check-details { "Failing checks in detail" }
        @for c in report.checks.iter().filter(|c| c.counts.fail + c.counts.error > 0) {
            (check_section(c, Mode::Static, &names))
        }
        h2 #node-details { "Nodes in detail" }
        p.note { @match report.settings.detail {
            super::Detail::Failing => "Every finding that is not a pass (fail, error, waived, not applicable) with its evidence; passes are counted. Generate with --findings all to list passes too.",
            super::Detail::All => "Every finding, passes included.",
            super::Detail::Summary => "Findings are counted, not listed (generated with --findings summary).",
        } }
    };
    out.write_all(intro.into_string().as_bytes())?;
    super::write_parallel(&report.nodes, out, |_, chunk, buf| {
        for n in chunk {
            buf.extend_from_slice(node_section(n, &n.findings, Mode::Static, &filter).into_string().as_bytes());
        }
        Ok(())
    })?;
    out.write_all(PAGE_CLOSE.as_bytes())
}

/// The dashboard's fleet page.
pub fn fleet_page(report: &FleetReport, filter: &Filter) -> String {
    page("Fleet hardening dashboard", report, Mode::Live, fleet_sections(report, Mode::Live, filter))
}

/// The dashboard's page of one node (with every finding).
pub fn node_page(report: &FleetReport, node: &NodeReport, findings: &[NodeFinding], filter: &Filter) -> String {
    let body = node_section(node, findings, Mode::Live, filter);
    page(&format!("Node {}", node.hostname), report, Mode::Live, body)
}

/// The dashboard's page of one check.
pub fn check_page(report: &FleetReport, check: &CheckReport) -> String {
    let body = check_section(check, Mode::Live, &hostnames(report));
    page(&format!("Check {}", check.id), report, Mode::Live, body)
}

fn summary_card(key: &str, label: &str, value: String) -> Markup {
    html! { div.card { div.v data-summary=(key) { (value) } div.k { (label) } } }
}

fn filters_form(report: &FleetReport, filter: &Filter) -> Markup {
    let mut families: Vec<&str> = report.checks.iter().map(|c| c.family.as_str()).collect();
    families.sort_unstable();
    families.dedup();
    html! {
        form.filters method="get" action="/" {
            label { "Severity"
                select name="severity" {
                    option value="" { "any" }
                    @for s in SEVERITIES { option value=(s) selected[filter.severity.as_deref() == Some(s)] { (s) } }
                }
            }
            label { "Family"
                select name="family" {
                    option value="" { "any" }
                    @for f in &families { option value=(f) selected[filter.family.as_deref() == Some(*f)] { (f) } }
                }
            }
            label { "Node" input type="text" name="node" value=(filter.node.clone().unwrap_or_default()) placeholder="id or hostname"; }
            button type="submit" { "Filter" }
            @if !filter.is_empty() { a href="/" { "clear" } }
        }
    }
}

fn fleet_sections(r: &FleetReport, mode: Mode, filter: &Filter) -> Markup {
    let s = &r.summary;
    let sev_bars: Vec<(String, u64, &str)> = SEVERITIES
        .iter()
        .map(|k| (k.to_string(), s.failures_by_severity.get(*k).copied().unwrap_or(0), "bar-sev"))
        .collect();
    let mut fam: Vec<(String, u64, &str)> =
        s.failures_by_family.iter().map(|(k, v)| (k.clone(), *v, "bar-fail")).collect();
    fam.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let trend_points: Vec<(String, f64, Option<f64>)> =
        r.trend.iter().map(|d| (d.day.clone(), d.compliant_pct, d.score_pct)).collect();
    let nodes: Vec<&NodeReport> = r.nodes.iter().filter(|n| filter.node_ok(&n.id, &n.hostname)).collect();
    let checks: Vec<&CheckReport> =
        r.checks.iter().filter(|c| filter.severity_ok(&c.severity) && filter.family_ok(&c.family)).collect();
    let drift: Vec<_> =
        r.drift.iter().filter(|d| filter.family_ok(&d.family) && filter.node_ok(&d.node_id, &d.hostname)).collect();
    html! {
        @if mode == Mode::Live { (filters_form(r, filter)) }
        @if !filter.is_empty() { p.note { "Filtered view: the summary covers the whole fleet; the tables below show only what matches the filter." } }
        section #summary {
            h2 { "Fleet summary" }
            div.cards {
                (summary_card("nodes_total", "nodes enrolled", s.nodes_total.to_string()))
                (summary_card("nodes_compliant", "compliant nodes", s.nodes_compliant.to_string()))
                (summary_card("compliant_pct", "compliant (of non-revoked)", pct(s.compliant_pct)))
                (summary_card("nodes_ok", "reporting on time", s.nodes_ok.to_string()))
                (summary_card("nodes_stale", "stale (silent > 3 intervals)", s.nodes_stale.to_string()))
                (summary_card("nodes_never_reported", "never reported", s.nodes_never_reported.to_string()))
                (summary_card("nodes_revoked", "revoked", s.nodes_revoked.to_string()))
            }
            div.cards style="margin-top:10px" {
                (summary_card("fail", "failing findings", s.findings.fail.to_string()))
                (summary_card("error", "undecided (error)", s.findings.error.to_string()))
                (summary_card("pass", "passing findings", s.findings.pass.to_string()))
                (summary_card("waived", "waived", s.findings.waived.to_string()))
                (summary_card("not_applicable", "not applicable", s.findings.not_applicable.to_string()))
                (summary_card("nodes_with_integrity_events", "nodes with chain events", s.nodes_with_integrity_events.to_string()))
                (summary_card("waivers_expiring_soon", "waivers expiring ≤ 30 days", s.waivers_expiring_soon.to_string()))
            }
            p.note { "Compliant: " (r.settings.compliance_rule) ". Score: " (r.settings.score_rule) "." }
            div.charts {
                div { h3 { "Failures by severity" } (svg::bars("Failing findings by severity", &sev_bars)) }
                div { h3 { "Failures by family" } (svg::bars("Failing findings by family", &fam)) }
            }
        }
        section #srm {
            h2 { "Shared responsibility model: customer responsibilities" }
            table {
                thead { tr { th { "Responsibility" } th { "Status" } th.num { "Nodes ok" } th.num { "Failing" } th.num { "Not evidenced" } th { "Families" } th { "Failing checks" } } }
                tbody {
                    @for a in &r.srm {
                        tr {
                            td { strong { (a.area) } br; span.note { (a.srm_text) } }
                            td { span class={ "b st-" (a.status) } data-srm-status=(a.area) { (a.status) } }
                            td.num { (a.nodes_ok) } td.num { (a.nodes_failing) } td.num { (a.nodes_unknown) }
                            td { (a.families.join(", ")) }
                            td { @for c in &a.failing_checks { a href=(check_href(mode, c)) { code { (c) } } " " } }
                        }
                    }
                }
            }
        }
        section #nodes {
            h2 { "Nodes" }
            table {
                thead { tr { th { "Node" } th { "State" } th { "Last attestation" } th { "Age" } th.num { "Score" } th.num { "Blocking" }
                    th.num { "Fail" } th.num { "Error" } th { "Compliant" } th.num { "Chain events" } th { "OS" } } }
                tbody {
                    @for n in &nodes {
                        tr class=[(matches!(n.state, NodeState::Stale | NodeState::NeverReported)).then_some("stale-row")] data-node=(n.id) {
                            td { a href=(node_href(mode, &n.id)) { (n.hostname) } br; code.note { (n.id) } }
                            td { span class={ "b n-" (n.state.as_str()) } { (n.state.as_str()) } }
                            td { (n.last_attestation_at.clone().unwrap_or_else(|| "never".into())) }
                            td { (age(n.last_attestation_age_secs)) }
                            td.num { (pct(n.score_pct)) }
                            td.num { (n.blocking) }
                            td.num { (n.counts.fail) } td.num { (n.counts.error) }
                            td { @if n.compliant { "yes" } @else { strong { "no" } } }
                            td.num { (n.integrity_events) }
                            td { (n.os.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        section #checks {
            h2 { "Checks across the fleet" }
            table {
                thead { tr { th { "Check" } th { "Family" } th { "Severity" } th.num { "Pass rate" } th.num { "Pass" } th.num { "Fail" } th.num { "Error" } th.num { "N/A" } th.num { "Waived" } th { "Failing nodes" } } }
                tbody {
                    @for c in &checks {
                        tr data-check=(c.id) {
                            td { a href=(check_href(mode, &c.id)) { code { (c.id) } } br; span.note { (c.title) } }
                            td { (c.family) }
                            td { span class={ "sev-" (c.severity) } { (c.severity) } }
                            td.num { (pct(c.pass_rate_pct)) }
                            td.num { (c.counts.pass) } td.num { (c.counts.fail) } td.num { (c.counts.error) }
                            td.num { (c.counts.not_applicable) } td.num { (c.counts.waived) }
                            td {
                                @for id in c.failing_nodes.iter().take(NODES_INLINE) { a href=(node_href(mode, id)) { code { (short(id)) } } " " }
                                @if c.failing_nodes.len() > NODES_INLINE { span.note { "and " (c.failing_nodes.len() - NODES_INLINE) " more" } }
                            }
                        }
                    }
                }
            }
        }
        section #drift {
            h2 { "Drift timeline (kubelet, kube-proxy, firewall, exposure, sshd, sysctl)" }
            @if drift.is_empty() { p.note { "No change in these families" @if let Some(s) = &r.since { " since " (s) } "." } }
            @else {
                @if drift.len() > DRIFT_SHOWN { p.note { "The " (DRIFT_SHOWN) " most recent of " (drift.len()) " changes; the JSON and CSV reports list them all." } }
                table {
                    thead { tr { th { "Time" } th { "Node" } th { "Check" } th { "Status" } th { "Observed: old → new" } th.num { "Seq" } } }
                    tbody {
                        @for d in drift.iter().take(DRIFT_SHOWN) {
                            tr {
                                td { (d.at) } td { a href=(node_href(mode, &d.node_id)) { (d.hostname) } }
                                td { code { (d.check_id) } }
                                td { (d.old_status.clone().unwrap_or_else(|| "new".into())) " → " (d.new_status) }
                                td { pre { (d.old_observed.clone().unwrap_or_else(|| "∅".into())) " → " (d.new_observed.clone().unwrap_or_else(|| "∅".into())) } }
                                td.num { (d.seq) }
                            }
                        }
                    }
                }
            }
        }
        section #integrity {
            h2 { "Integrity: signatures and hash chains" }
            p.note { "Every stored envelope's Ed25519 signature was verified against the node's enrolled certificate before it was stored; anything else was refused and recorded below. Chain events: gaps, forks, replays, spool overflow markers, clock anomalies, refused envelopes. `kosmos-collector evidence verify` re-checks an exported bundle offline." }
            @let troubled: Vec<_> = r.integrity.iter().filter(|i| i.chain != "intact" && filter.node_ok(&i.node_id, &i.hostname)).collect();
            p { strong data-summary="chains_intact" { (r.integrity.len() - r.integrity.iter().filter(|i| i.chain != "intact").count()) } " of " (r.integrity.len()) " nodes have an intact chain and no refused envelope." }
            @if !troubled.is_empty() {
            table {
                thead { tr { th { "Node" } th.num { "Head seq" } th { "Chain" } th { "Events" } } }
                tbody {
                    @for i in troubled {
                        tr data-integrity=(i.node_id) {
                            td { a href=(node_href(mode, &i.node_id)) { (i.hostname) } }
                            td.num { (i.head_seq) }
                            td { @if i.chain == "intact" { span.b.st-ok { "intact" } } @else { span.b.st-failing { "events" } } }
                            td {
                                @for (k, v) in &i.events_by_kind { code { (k) } " × " (v) " " }
                                @if !i.recent_events.is_empty() {
                                    ul { @for e in &i.recent_events { li.ev { (e.at) " " code { (e.kind) } @if let Some(s) = e.seq { " seq " (s) } ": " (e.detail) } } }
                                }
                            }
                        }
                    }
                }
            }
            }
        }
        section #waivers {
            h2 { "Waivers" }
            @if r.waivers.is_empty() { p.note { "No finding is waived." } }
            @else {
                table {
                    thead { tr { th { "Node" } th { "Check" } th { "Reason" } th { "Expires" } th { "State" } } }
                    tbody {
                        @for w in r.waivers.iter().filter(|w| filter.node_ok(&w.node_id, &w.hostname)) {
                            tr {
                                td { (w.hostname) } td { code { (w.check_id) } } td { (w.reason.clone().unwrap_or_default()) }
                                td { (w.expires.clone().unwrap_or_else(|| "never".into())) }
                                td { @if w.expired { span.b.s-fail { "expired: no longer applies" } } @else if w.expires_soon { span.b.s-error { "expires within 30 days" } } @else { span.b.s-waived { "active" } } }
                            }
                        }
                    }
                }
            }
        }
        section #trend {
            h2 { "Compliance trend" }
            @if r.trend.is_empty() { p.note { "No history yet." } }
            @else {
                (svg::trend(&trend_points))
                p.note { "Solid: compliant nodes among those that reported that day (their last report of the day). Dashed: fleet score." }
                table {
                    thead { tr { th { "Day (UTC)" } th.num { "Nodes reporting" } th.num { "Compliant" } th.num { "Compliant %" } th.num { "Score" } } }
                    tbody { @for d in r.trend.iter().rev() { tr { td { (d.day) } td.num { (d.nodes_reporting) } td.num { (d.nodes_compliant) } td.num { (format!("{:.1}%", d.compliant_pct)) } td.num { (pct(d.score_pct)) } } } }
                }
            }
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn node_section(n: &NodeReport, findings: &[NodeFinding], mode: Mode, filter: &Filter) -> Markup {
    let shown: Vec<&NodeFinding> =
        findings.iter().filter(|f| filter.severity_ok(&f.severity) && filter.family_ok(&f.family)).collect();
    html! {
        section.node id={ "node-" (n.id) } {
            h3 { "Node " (n.hostname) " " code.note { (n.id) } }
            p {
                span class={ "b n-" (n.state.as_str()) } { (n.state.as_str()) }
                " last attestation " (n.last_attestation_at.clone().unwrap_or_else(|| "never".into())) " (" (age(n.last_attestation_age_secs)) " ago), seq " (n.head_seq)
                " · score " (pct(n.score_pct)) " · " (n.counts.pass) " pass, " (n.counts.fail) " fail, " (n.counts.error) " error, "
                (n.counts.waived) " waived, " (n.counts.not_applicable) " not applicable"
                @if let Some(os) = &n.os { " · " (os) } @if let Some(k) = &n.kernel { " · kernel " (k) }
                @if let Some(p) = &n.profile { " · profile " (p) } @if let Some(v) = &n.agent_version { " · agent " (v) }
            }
            @if n.state == NodeState::Stale { p.note { strong { "Stale: " } "no attestation for more than three intervals. For an external node this is itself a connectivity or health finding." } }
            @if shown.is_empty() { p.note { "No finding to show." } }
            @else {
                table {
                    thead { tr { th { "Check" } th { "Status" } th { "Severity" } th { "Observed" } th { "Expected" } th { "Evidence / reason" } } }
                    tbody {
                        @for f in &shown {
                            @match f.view() {
                                Ok(v) => {
                                    tr data-finding=(f.check_id) {
                                        td { a href=(check_href(mode, &f.check_id)) { code { (f.check_id) } } br; span.note { (v.title) } }
                                        td { span class={ "b s-" (f.status) } { (f.status) } }
                                        td { span class={ "sev-" (f.severity) } { (f.severity) } }
                                        td { pre { (json_text(v.observed)) } }
                                        td { pre { (json_text(v.expected)) } }
                                        td {
                                            @if let Some(r) = &v.reason { div { (r) } }
                                            @if let Some(w) = &v.waiver { div.note { "Waiver: " (w.reason.as_deref().unwrap_or("")) " (expires " (w.expires.as_deref().unwrap_or("never")) ")" @if w.expired == Some(true) { strong { " expired" } } } }
                                            @for e in &v.evidence { div.ev { code { (e.source) } " " (e.detail) } }
                                        }
                                    }
                                }
                                Err(e) => {
                                    tr data-finding=(f.check_id) {
                                        td { code { (f.check_id) } } td { span class={ "b s-" (f.status) } { (f.status) } }
                                        td { (f.severity) } td colspan="3" { "the stored finding cannot be read: " (e.to_string()) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

type Hostnames<'a> = std::collections::HashMap<&'a str, &'a str>;

fn hostnames(report: &FleetReport) -> Hostnames<'_> {
    report.nodes.iter().map(|n| (n.id.as_str(), n.hostname.as_str())).collect()
}

fn check_section(c: &CheckReport, mode: Mode, names: &Hostnames<'_>) -> Markup {
    let hostname = |id: &str| -> String { names.get(id).map_or_else(|| short(id).to_string(), |h| h.to_string()) };
    html! {
        section.check id={ "check-" (c.id) } {
            h3 { code { (c.id) } " " (c.title) }
            p { span class={ "sev-" (c.severity) } { (c.severity) } " · family " (c.family)
                @if let Some(r) = &c.responsibility { " · responsibility " (r) }
                " · pass rate " (pct(c.pass_rate_pct)) " (" (c.counts.pass) " pass, " (c.counts.fail) " fail, " (c.counts.error) " error, "
                (c.counts.waived) " waived, " (c.counts.not_applicable) " not applicable)" }
            @if let Some(rem) = &c.remediation { p { strong { "Remediation: " } (rem) } }
            @if !c.references.is_empty() {
                p.note { "References: " @for r in &c.references { (r.standard) @if let Some(v) = &r.version { " " (v) } " " code { (r.id) } "; " } }
            }
            @if !c.failing_nodes.is_empty() {
                p { strong { "Failing on " (c.failing_nodes.len()) " node(s): " } @for id in &c.failing_nodes { a href=(node_href(mode, id)) { (hostname(id)) } " " } }
            }
            @if !c.error_nodes.is_empty() {
                p { strong { "Undecided (error) on " (c.error_nodes.len()) " node(s): " } @for id in &c.error_nodes { a href=(node_href(mode, id)) { (hostname(id)) } " " } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(report: &FleetReport) -> String {
        let mut out = Vec::new();
        write_report(report, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A report whose node data is hostile markup.
    fn hostile() -> FleetReport {
        let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
        let finding = serde_json::json!({"id": "ssh.permit_root_login", "title": evil, "family": "ssh", "severity": "high",
            "status": "fail", "observed": evil, "expected": "no", "evidence": [{"source": evil, "detail": evil}], "reason": null});
        serde_json::from_value(serde_json::json!({
            "schema": "kosmos.fleet-report/v1", "generated_at": "2026-11-22T00:00:00Z", "collector_version": "0",
            "since": null,
            "settings": {"interval_secs": 300, "stale_after_secs": 900, "detail": "failing", "compliance_rule": "r", "score_rule": "s"},
            "summary": {"nodes_total": 1, "nodes_ok": 1, "nodes_stale": 0, "nodes_never_reported": 0, "nodes_revoked": 0,
                "nodes_compliant": 0, "compliant_pct": 0.0, "findings": {"pass": 0, "fail": 1, "error": 0, "not_applicable": 0, "waived": 0},
                "failures_by_severity": {"high": 1}, "failures_by_family": {"ssh": 1}, "errors_total": 0,
                "nodes_with_integrity_events": 0, "waivers_total": 0, "waivers_expiring_soon": 0, "waivers_expired": 0},
            "srm": [],
            "nodes": [{"id": "node-1", "hostname": evil, "state": "ok", "enrolled_at": "2026-11-22T00:00:00Z",
                "last_attestation_at": "2026-11-22T00:00:00Z", "last_attestation_age_secs": 1, "head_seq": 1,
                "counts": {"pass": 0, "fail": 1, "error": 0, "not_applicable": 0, "waived": 0}, "blocking": 1,
                "failing_by_severity": {"high": 1}, "score_pct": 0.0, "compliant": false, "integrity_events": 0,
                "findings": [{"check_id": "ssh.permit_root_login", "family": "ssh", "severity": "high", "status": "fail", "seq": 1,
                    "finding": finding}]}],
            "checks": [], "drift": [], "integrity": [], "waivers": [], "trend": []
        }))
        .unwrap()
    }

    #[test]
    fn node_data_is_escaped_everywhere() {
        let r = hostile();
        for page in [
            report(&r),
            fleet_page(&r, &Filter::default()),
            node_page(&r, &r.nodes[0], &r.nodes[0].findings, &Filter::default()),
        ] {
            assert!(!page.contains("<script"), "unescaped script tag");
            assert!(!page.contains("<img"), "unescaped img tag");
            assert!(page.contains("&lt;script&gt;"));
        }
    }

    #[test]
    fn filters_select_rows() {
        let r = hostile();
        let f = Filter { severity: Some("critical".into()), ..Filter::default() };
        let page = node_page(&r, &r.nodes[0], &r.nodes[0].findings, &f);
        assert!(!page.contains("data-finding="), "a high finding is hidden by a critical filter");
        let page = node_page(&r, &r.nodes[0], &r.nodes[0].findings, &Filter::default());
        assert_eq!(page.matches("data-finding=").count(), 1);
        assert_eq!(urlencode("node-1/../x"), "node-1%2F..%2Fx");
    }
}
