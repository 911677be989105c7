//! Markdown rendering (for tickets, wikis and merge requests): the summary,
//! responsibilities, nodes, failing checks, drift, integrity, waivers and
//! trend as tables. Per-finding evidence stays in the HTML, JSON and CSV.

use std::fmt::Write;

use super::{FleetReport, SEVERITIES};

/// Drift rows shown; the JSON and CSV carry all.
const DRIFT_SHOWN: usize = 200;

/// Table cells: no pipes or line breaks from node data may break the table.
/// A table cell of node-controlled text (see [`crate::untrusted`]).
fn cell(s: &str) -> String {
    crate::untrusted::markdown_cell(s)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |p| format!("{p:.1}%"))
}

/// Render the report as Markdown.
pub fn render(r: &FleetReport) -> String {
    let mut o = String::new();
    let s = &r.summary;
    let _ = writeln!(o, "# Fleet hardening report\n");
    let _ = writeln!(
        o,
        "Generated {} by kosmos-collector {}{}. Stale after {} s.\n",
        r.generated_at,
        r.collector_version,
        r.since.as_ref().map(|d| format!(", history since {d}")).unwrap_or_default(),
        r.settings.stale_after_secs
    );
    let _ = writeln!(o, "## Summary\n");
    let _ = writeln!(o, "| | |\n|---|---:|");
    for (k, v) in [
        ("Nodes enrolled", s.nodes_total.to_string()),
        ("Compliant nodes", s.nodes_compliant.to_string()),
        ("Compliant (of non-revoked)", pct(s.compliant_pct)),
        ("Reporting on time", s.nodes_ok.to_string()),
        ("Stale", s.nodes_stale.to_string()),
        ("Never reported", s.nodes_never_reported.to_string()),
        ("Revoked", s.nodes_revoked.to_string()),
        ("Failing findings", s.findings.fail.to_string()),
        ("Undecided (error)", s.findings.error.to_string()),
        ("Passing findings", s.findings.pass.to_string()),
        ("Waived", s.findings.waived.to_string()),
        ("Not applicable", s.findings.not_applicable.to_string()),
        ("Nodes with chain events", s.nodes_with_integrity_events.to_string()),
        ("Waivers expiring within 30 days", s.waivers_expiring_soon.to_string()),
    ] {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    let _ = writeln!(o, "\nCompliant: {}. Score: {}.\n", r.settings.compliance_rule, r.settings.score_rule);
    let _ = writeln!(
        o,
        "Failures by severity: {}\n",
        SEVERITIES
            .iter()
            .map(|k| format!("{k} {}", s.failures_by_severity.get(*k).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" · ")
    );
    let _ = writeln!(
        o,
        "Failures by family: {}\n",
        s.failures_by_family.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(" · ")
    );

    let _ = writeln!(
        o,
        "## Shared responsibility model\n\n| Responsibility | Status | Nodes ok | Failing | Not evidenced | Failing checks |\n|---|---|---:|---:|---:|---|"
    );
    for a in &r.srm {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&a.area),
            a.status,
            a.nodes_ok,
            a.nodes_failing,
            a.nodes_unknown,
            cell(&a.failing_checks.join(", "))
        );
    }

    let _ = writeln!(
        o,
        "\n## Nodes\n\n| Node | Id | State | Last attestation | Score | Blocking | Fail | Error | Compliant | Chain events |\n|---|---|---|---|---:|---:|---:|---:|---|---:|"
    );
    for n in &r.nodes {
        let _ = writeln!(
            o,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&n.hostname),
            cell(&n.id),
            n.state.as_str(),
            n.last_attestation_at.as_deref().unwrap_or("never"),
            pct(n.score_pct),
            n.blocking,
            n.counts.fail,
            n.counts.error,
            if n.compliant { "yes" } else { "**no**" },
            n.integrity_events
        );
    }

    let _ = writeln!(
        o,
        "\n## Failing checks\n\n| Check | Severity | Pass rate | Fail | Error | Remediation |\n|---|---|---:|---:|---:|---|"
    );
    for c in r.checks.iter().filter(|c| c.counts.fail + c.counts.error > 0) {
        let _ = writeln!(
            o,
            "| `{}` {} | {} | {} | {} | {} | {} |",
            cell(&c.id),
            cell(&c.title),
            cell(&c.severity),
            pct(c.pass_rate_pct),
            c.counts.fail,
            c.counts.error,
            cell(c.remediation.as_deref().unwrap_or(""))
        );
    }

    let _ = writeln!(o, "\n## Drift timeline\n");
    if r.drift.is_empty() {
        let _ = writeln!(o, "No change in kubelet, kube-proxy, firewall, exposure, sshd or sysctl findings.");
    } else {
        if r.drift.len() > DRIFT_SHOWN {
            let _ = writeln!(
                o,
                "The {DRIFT_SHOWN} most recent of {} changes (the JSON and CSV list all).\n",
                r.drift.len()
            );
        }
        let _ = writeln!(o, "| Time | Node | Check | Status | Observed: old → new |\n|---|---|---|---|---|");
        for d in r.drift.iter().take(DRIFT_SHOWN) {
            let _ = writeln!(
                o,
                "| {} | {} | `{}` | {} → {} | {} → {} |",
                d.at,
                cell(&d.hostname),
                cell(&d.check_id),
                cell(d.old_status.as_deref().unwrap_or("new")),
                cell(&d.new_status),
                cell(d.old_observed.as_deref().unwrap_or("∅")),
                cell(d.new_observed.as_deref().unwrap_or("∅"))
            );
        }
    }

    let _ = writeln!(o, "\n## Integrity\n");
    let troubled: Vec<_> = r.integrity.iter().filter(|i| i.chain != "intact").collect();
    let _ = writeln!(
        o,
        "{} of {} nodes have an intact chain with every signature verified at ingest.\n",
        r.integrity.len() - troubled.len(),
        r.integrity.len()
    );
    if !troubled.is_empty() {
        let _ = writeln!(o, "| Node | Head seq | Events |\n|---|---:|---|");
        for i in troubled {
            let ev = i.events_by_kind.iter().map(|(k, v)| format!("{k} × {v}")).collect::<Vec<_>>().join(", ");
            let _ = writeln!(o, "| {} | {} | {} |", cell(&i.hostname), i.head_seq, cell(&ev));
        }
    }

    let _ = writeln!(o, "\n## Waivers\n");
    if r.waivers.is_empty() {
        let _ = writeln!(o, "No finding is waived.");
    } else {
        let _ = writeln!(o, "| Node | Check | Reason | Expires | State |\n|---|---|---|---|---|");
        for w in &r.waivers {
            let state = if w.expired {
                "expired"
            } else if w.expires_soon {
                "expires within 30 days"
            } else {
                "active"
            };
            let _ = writeln!(
                o,
                "| {} | `{}` | {} | {} | {state} |",
                cell(&w.hostname),
                cell(&w.check_id),
                cell(w.reason.as_deref().unwrap_or("")),
                cell(w.expires.as_deref().unwrap_or("never"))
            );
        }
    }

    let _ = writeln!(
        o,
        "\n## Trend\n\n| Day (UTC) | Nodes reporting | Compliant | Compliant % | Score |\n|---|---:|---:|---:|---:|"
    );
    for d in r.trend.iter().rev() {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.1}% | {} |",
            d.day,
            d.nodes_reporting,
            d.nodes_compliant,
            d.compliant_pct,
            pct(d.score_pct)
        );
    }
    o
}
