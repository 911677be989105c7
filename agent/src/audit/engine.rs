//! Runs a profile's checks against a host and assembles the report.
//!
//! This is where profile decisions (selection, parameters, waivers) meet the
//! pure check evaluations. A check that panics would take the daemon down,
//! so each evaluation is isolated: a bug in one check becomes an `error`
//! finding naming the check, and the run goes on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use chrono::{NaiveDate, SecondsFormat, Utc};

use crate::audit::check::{Check, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::node::node_info;
use crate::audit::host::Host;
use crate::audit::model::{Outcome, Status};
use crate::audit::profile::Profile;
use crate::audit::report::{Finding, Node, Os, ProfileRef, ReferenceOut, Report, SCHEMA, Summary, WaiverOut};

/// The agent's version, as it appears in reports.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What to run.
#[derive(Debug)]
pub struct RunOptions<'a> {
    pub profile: &'a Profile,
    /// Explicit check ids; when set, they replace the profile's selection.
    pub only: Option<&'a [String]>,
    /// The date waivers are judged against.
    pub today: NaiveDate,
}

/// Which checks a run evaluates, in registry order.
pub fn select<'c>(registry: &'c [Check], opts: &RunOptions<'_>) -> Vec<&'c Check> {
    registry
        .iter()
        .filter(|c| match opts.only {
            Some(ids) => ids.iter().any(|i| i == &c.id),
            None => opts.profile.selects(&c.id),
        })
        .collect()
}

/// Evaluate one check, turning a panic into an error finding, and a read of
/// a parameter the check did not declare into one too: the value it read
/// was a stand-in, so the verdict built on it is unknown.
pub fn evaluate(check: &Check, facts: &Facts<'_>, params: &Params) -> Outcome {
    let outcome = match catch_unwind(AssertUnwindSafe(|| (check.evaluate)(facts, params))) {
        Ok(o) => o,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            tracing::error!(check = %check.id, "check panicked: {what}");
            return Outcome::error(format!(
                "internal error while evaluating {}: {what} (a bug: please report it)",
                check.id
            ));
        }
    };
    match params.misuse() {
        Some(m) => Outcome::error(format!(
            "internal error in {}: {m} (a bug: please report it); the verdict is unknown",
            check.id
        )),
        None => outcome,
    }
}

/// Work done around a run by the layer that owns state, never by checks:
/// `before_run` may [`Facts::provide`] facts that do not come from the host
/// (e.g. the previous drift snapshot), `after_run` may persist what the run
/// computed (e.g. the new snapshot), reading it with [`Facts::gathered`].
pub trait RunHook {
    fn before_run(&self, _facts: &Facts<'_>) {}
    fn after_run(&self, _facts: &Facts<'_>) {}
}

/// Run the selected checks and build the report, with the hooks called
/// before the first and after the last check. Callers outside the audit
/// library go through [`crate::audit_run::audit`], which brings the state
/// layer's hooks.
pub fn run(host: &Host, registry: &[Check], opts: &RunOptions<'_>, hooks: &[&dyn RunHook]) -> Report {
    let started = Utc::now();
    let clock = Instant::now();
    let facts = Facts::new(host);
    facts.provide(crate::audit::facts::Today(opts.today));
    for h in hooks {
        h.before_run(&facts);
    }
    let info = node_info(host);
    let mut summary = Summary::default();
    let mut results = Vec::new();
    for check in select(registry, opts) {
        let params = Params::new(&check.params, opts.profile.params.get(&check.id));
        let outcome = evaluate(check, &facts, &params);
        let finding = to_finding(check, outcome, opts);
        summary.count(finding.status);
        results.push(finding);
    }
    let report = Report {
        schema: SCHEMA.to_string(),
        agent_version: AGENT_VERSION.to_string(),
        node: Node {
            hostname: info.hostname,
            machine_id: info.machine_id,
            os: Os { id: info.os.id, version_id: info.os.version_id, pretty_name: info.os.pretty_name },
            kernel: info.kernel,
        },
        root: host.root().display().to_string(),
        profile: ProfileRef { name: opts.profile.name.clone(), version: opts.profile.version.clone() },
        started_at: started.to_rfc3339_opts(SecondsFormat::Millis, true),
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        summary,
        results,
    };
    for h in hooks {
        h.after_run(&facts);
    }
    report
}

fn to_finding(check: &Check, mut outcome: Outcome, opts: &RunOptions<'_>) -> Finding {
    // The schema requires a reason for error and not_applicable.
    if matches!(outcome.status, Status::Error | Status::NotApplicable)
        && outcome.reason.as_deref().is_none_or(str::is_empty)
    {
        outcome.reason = Some("no reason given by the check (a bug: please report it)".into());
    }
    let mut waiver = None;
    if let Some(w) = opts.profile.waiver_for(&check.id) {
        let active = w.is_active(opts.today);
        if outcome.status == Status::Fail {
            if active {
                outcome.status = Status::Waived;
            } else {
                let note = format!("waiver expired on {}; the failure counts again", w.expires);
                outcome.reason = Some(match outcome.reason {
                    Some(r) => format!("{r}; {note}"),
                    None => note,
                });
            }
        }
        waiver = Some(WaiverOut { reason: w.reason.clone(), expires: w.expires.to_string(), expired: !active });
    }
    Finding {
        id: check.id.clone(),
        title: check.title.clone(),
        family: check.family().to_string(),
        severity: check.severity,
        status: outcome.status,
        observed: outcome.observed,
        expected: outcome.expected,
        evidence: outcome.evidence,
        reason: outcome.reason,
        remediation: Some(check.remediation.clone()).filter(|s| !s.is_empty()),
        references: check
            .references
            .iter()
            .map(|r| ReferenceOut {
                standard: r.standard.to_string(),
                version: r.version.map(str::to_string),
                id: r.id.to_string(),
            })
            .collect(),
        responsibility: check.responsibility,
        waiver,
    }
}
