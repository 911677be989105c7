//! Operating system lifecycle (family `os`): is the release still
//! supported, and is it one Kosmos supports for external nodes.
//!
//! End-of-life dates are data: a built-in table (from endoflife.date, see
//! docs) that a profile can extend or override with the `eol_table`
//! parameter, entries `"ID VERSION STANDARD_END [EXTENDED_END]"` such as
//! `"debian 12 2026-07-11 2028-06-30"`. Because a check has one severity,
//! the issue's "high when no support is left, medium when only extended
//! support (LTS/ESM/ELS) remains" is two checks: `os.end_of_life` (high)
//! and `os.extended_support_only` (medium).

use chrono::NaiveDate;
use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::node::{OsRelease, os_release};
use crate::audit::model::{Outcome, Severity};

/// (os-release ID, VERSION_ID or its major, standard support end, extended support end)
const BUILTIN_EOL: &[(&str, &str, &str, Option<&str>)] = &[
    ("debian", "11", "2024-08-14", Some("2026-08-31")),
    ("debian", "12", "2026-07-11", Some("2028-06-30")),
    ("debian", "13", "2028-08-09", Some("2030-06-30")),
    ("ubuntu", "20.04", "2025-05-31", Some("2030-04-02")),
    ("ubuntu", "22.04", "2027-04-01", Some("2032-04-09")),
    ("ubuntu", "24.04", "2029-05-31", Some("2036-05-31")),
    ("ubuntu", "26.04", "2031-04-30", Some("2036-04-30")),
    ("rhel", "8", "2029-05-31", Some("2033-05-31")),
    ("rhel", "9", "2032-05-31", Some("2036-05-31")),
    ("rhel", "10", "2035-05-31", Some("2039-05-31")),
];

/// One lifecycle entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lifecycle {
    id: String,
    version: String,
    standard_end: NaiveDate,
    extended_end: Option<NaiveDate>,
    source: String,
}

fn date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// The built-in table overlaid with the profile's entries.
fn table(p: &Params) -> Result<Vec<Lifecycle>, String> {
    let mut t: Vec<Lifecycle> = BUILTIN_EOL
        .iter()
        .filter_map(|(id, v, s, e)| {
            Some(Lifecycle {
                id: id.to_string(),
                version: v.to_string(),
                standard_end: date(s)?,
                extended_end: e.and_then(date),
                source: "built-in lifecycle table (endoflife.date)".into(),
            })
        })
        .collect();
    for entry in p.list("eol_table") {
        let parts: Vec<&str> = entry.split_whitespace().collect();
        let parsed = match parts.as_slice() {
            [id, v, s] => date(s).map(|s| (id, v, s, None)),
            [id, v, s, e] => date(s).zip(date(e)).map(|(s, e)| (id, v, s, Some(e))),
            _ => None,
        };
        let Some((id, v, s, e)) = parsed else {
            return Err(format!("eol_table entry {entry:?} is not \"ID VERSION YYYY-MM-DD [YYYY-MM-DD]\""));
        };
        t.retain(|l| !(l.id == *id && l.version == *v));
        t.push(Lifecycle {
            id: id.to_string(),
            version: v.to_string(),
            standard_end: s,
            extended_end: e,
            source: "profile parameter eol_table".into(),
        });
    }
    Ok(t)
}

/// The table entry for this OS: exact VERSION_ID, else its major version.
fn lookup<'t>(t: &'t [Lifecycle], os: &OsRelease) -> Option<&'t Lifecycle> {
    let major = os.version_id.split('.').next().unwrap_or_default();
    t.iter()
        .find(|l| l.id == os.id && l.version == os.version_id)
        .or_else(|| t.iter().find(|l| l.id == os.id && l.version == major))
}

/// Where the OS stands in its lifecycle on `today`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Standard,
    ExtendedOnly,
    Unsupported,
}

fn phase(l: &Lifecycle, today: NaiveDate) -> Phase {
    if today <= l.standard_end {
        Phase::Standard
    } else if l.extended_end.is_some_and(|e| today <= e) {
        Phase::ExtendedOnly
    } else {
        Phase::Unsupported
    }
}

fn evaluate_lifecycle(facts: &Facts<'_>, p: &Params, today: NaiveDate, extended_check: bool) -> Outcome {
    let t = match table(p) {
        Ok(t) => t,
        Err(e) => return Outcome::error(e),
    };
    let Some(os) = os_release(facts.host()) else {
        return Outcome::error(
            "neither /etc/os-release nor /usr/lib/os-release is readable: the OS release is unknown",
        );
    };
    if os.version_id.is_empty() {
        return Outcome::error(format!(
            "/etc/os-release: ID={} has no VERSION_ID (testing/unstable or rolling release?): no end-of-life date applies",
            os.id
        ));
    }
    let Some(l) = lookup(&t, &os) else {
        return Outcome::error(format!(
            "no end-of-life dates known for {} {} ({}); add them with the eol_table parameter",
            os.id, os.version_id, os.pretty_name
        ));
    };
    let ext = l.extended_end.map_or("none known".to_string(), |d| d.to_string());
    let observed = json!({"os": os.pretty_name, "id": os.id, "version_id": os.version_id,
        "standard_support_end": l.standard_end.to_string(), "extended_support_end": l.extended_end.map(|d| d.to_string()),
        "phase": format!("{:?}", phase(l, today)).to_lowercase()});
    let detail =
        format!("{} {}: standard support until {}, extended support until {ext}", l.id, l.version, l.standard_end);
    let ph = phase(l, today);
    let o = if extended_check {
        match ph {
            Phase::Standard => Outcome::pass(),
            Phase::ExtendedOnly => Outcome::fail().note(format!(
                "standard support ended on {}; only extended support (LTS/ESM/ELS) remains, until {ext}",
                l.standard_end
            )),
            Phase::Unsupported => {
                return Outcome::not_applicable(format!(
                    "{} {} has no support left at all; see os.end_of_life",
                    os.id, os.version_id
                ))
                .evidence(&l.source, detail);
            }
        }
        .expected(json!("within standard support"))
    } else {
        match ph {
            Phase::Unsupported => Outcome::fail().note(format!(
                "end of life: standard support ended on {} and extended support {}",
                l.standard_end,
                l.extended_end.map_or("is not known".to_string(), |d| format!("ended on {d}"))
            )),
            _ => Outcome::pass(),
        }
        .expected(json!("a supported release"))
    };
    o.observed(observed)
        .evidence("/etc/os-release", format!("{} (ID={}, VERSION_ID={})", os.pretty_name, os.id, os.version_id))
        .evidence(&l.source, detail)
}

fn end_of_life(facts: &Facts<'_>, p: &Params) -> Outcome {
    evaluate_lifecycle(facts, p, facts.get::<crate::audit::facts::Today>().0, false)
}

fn extended_only(facts: &Facts<'_>, p: &Params) -> Outcome {
    evaluate_lifecycle(facts, p, facts.get::<crate::audit::facts::Today>().0, true)
}

fn kosmos_supported(facts: &Facts<'_>, _p: &Params) -> Outcome {
    let Some(os) = os_release(facts.host()) else {
        return Outcome::error("neither /etc/os-release nor /usr/lib/os-release is readable: the OS is unknown");
    };
    let ok = matches!(os.id.as_str(), "debian" | "ubuntu");
    let o = Outcome::verdict(ok)
        .observed(json!({"id": os.id, "version_id": os.version_id, "pretty_name": os.pretty_name}))
        .expected(json!("Debian or Ubuntu"))
        .evidence("/etc/os-release", format!("ID={} ({})", os.id, os.pretty_name));
    if ok {
        o
    } else {
        o.note(format!(
            "{} is not an OS Scaleway supports for Kosmos external nodes (Debian or Ubuntu): it may work, but Scaleway support will not help with it",
            os.pretty_name
        ))
    }
}

fn eol_param() -> ParamSpec {
    ParamSpec::list(
        "eol_table",
        &[],
        "extra or overriding lifecycle entries \"ID VERSION STANDARD_END [EXTENDED_END]\", e.g. \"debian 12 2026-07-11 2028-06-30\"",
    )
}

pub fn checks() -> Vec<Check> {
    vec![
        Check::new("os.end_of_life", "The OS release still receives security support", Severity::High, end_of_life)
            .rationale("A release past its end of life gets no security fixes at all: every new vulnerability stays open for good.")
            .remediation("Upgrade the node to a supported release (e.g. Debian 13 or Ubuntu 24.04), or re-install it and re-join the Kosmos pool.")
            .param(eol_param()),
        Check::new("os.extended_support_only", "The OS release is within standard (not only extended) support", Severity::Medium, extended_only)
            .rationale("After standard support, only extended programmes (Debian LTS, Ubuntu ESM, RHEL ELS) fix a subset of packages, sometimes only with a subscription: fewer and later fixes.")
            .remediation("Plan the upgrade to the next release before extended support ends; check that the extended support sources (e.g. ESM) are enabled meanwhile.")
            .param(eol_param()),
        Check::new("os.kosmos_supported", "The OS is one Kosmos supports for external nodes", Severity::Low, kosmos_supported)
            .rationale("Scaleway supports Debian and Ubuntu (amd64, arm64) for Kosmos external nodes; other distributions are unofficial and not covered by Scaleway support.")
            .remediation("Use Debian or Ubuntu for external nodes, or accept the risk with a waiver."),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::check::Params;
    use crate::audit::facts::Facts;
    use crate::audit::model::Status;
    use crate::testutil::{eval, eval_with, offline, root_with};

    fn at(root: &std::path::Path, today: &str, extended: bool, table: &[&str]) -> Outcome {
        let h = offline(root);
        let facts = Facts::new(&h);
        let specs = [eol_param()];
        let o: std::collections::BTreeMap<String, serde_json::Value> =
            [("eol_table".to_string(), json!(table))].into_iter().collect();
        evaluate_lifecycle(&facts, &Params::new(&specs, Some(&o)), date(today).unwrap(), extended)
    }

    #[test]
    fn lifecycle_phases() {
        let d = root_with(&[(
            "/etc/os-release",
            "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        )]);
        let o = at(d.path(), "2026-01-01", false, &[]);
        assert_eq!(o.status, Status::Pass);
        assert!(
            o.evidence
                .iter()
                .any(|e| e.detail.contains("standard support until 2026-07-11, extended support until 2028-06-30"))
        );
        assert_eq!(at(d.path(), "2026-01-01", true, &[]).status, Status::Pass);
        assert_eq!(at(d.path(), "2027-01-01", false, &[]).status, Status::Pass);
        let o = at(d.path(), "2027-01-01", true, &[]);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("2026-07-11"));
        assert_eq!(at(d.path(), "2029-01-01", false, &[]).status, Status::Fail);
        assert_eq!(at(d.path(), "2029-01-01", true, &[]).status, Status::NotApplicable);
        // The profile overrides the table: no extended support known => EOL.
        let o = at(d.path(), "2027-01-01", false, &["debian 12 2026-07-11"]);
        assert_eq!(o.status, Status::Fail);
        assert!(o.evidence.iter().any(|e| e.source == "profile parameter eol_table"));
        assert_eq!(at(d.path(), "2027-01-01", false, &["debian 12 soon"]).status, Status::Error);
    }

    #[test]
    fn unknown_releases_are_errors_and_rhel_uses_major() {
        let d = root_with(&[("/etc/os-release", "ID=debian\nPRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\n")]);
        assert_eq!(at(d.path(), "2026-01-01", false, &[]).status, Status::Error);
        let d = root_with(&[("/etc/os-release", "ID=gentoo\nVERSION_ID=2.15\n")]);
        assert!(at(d.path(), "2026-01-01", false, &[]).reason.unwrap().contains("eol_table"));
        let d = root_with(&[("/etc/os-release", "ID=\"rhel\"\nVERSION_ID=\"9.4\"\n")]);
        assert_eq!(at(d.path(), "2033-01-01", false, &[]).status, Status::Pass);
        assert_eq!(at(d.path(), "2033-01-01", true, &[]).status, Status::Fail);
        let d = root_with(&[]);
        assert_eq!(eval("os.end_of_life", &offline(d.path())).status, Status::Error);
        // Through the registry, with a far-future override.
        let d = root_with(&[("/etc/os-release", "ID=debian\nVERSION_ID=99\n")]);
        let o = eval_with("os.end_of_life", &offline(d.path()), &[("eol_table", json!(["debian 99 2999-01-01"]))]);
        assert_eq!(o.status, Status::Pass);
    }

    #[test]
    fn kosmos_supported_os() {
        let d = root_with(&[("/etc/os-release", "ID=ubuntu\nVERSION_ID=\"24.04\"\n")]);
        assert_eq!(eval("os.kosmos_supported", &offline(d.path())).status, Status::Pass);
        let d = root_with(&[(
            "/etc/os-release",
            "ID=rocky\nID_LIKE=\"rhel centos fedora\"\nPRETTY_NAME=\"Rocky Linux 9.4\"\n",
        )]);
        let o = eval("os.kosmos_supported", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("Rocky Linux 9.4"));
        assert_eq!(eval("os.kosmos_supported", &offline(root_with(&[]).path())).status, Status::Error);
    }
}
