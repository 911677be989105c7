//! sudo policy checks (family `sudo`): privilege escalation must ask for the
//! user's password. Without `/etc/sudoers` sudo is not installed and the
//! checks do not apply; a policy file that could not be read or parsed
//! makes them `error`, since the unread part may hold exactly such a rule.

use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::sudoers::{SUDOERS, SudoPolicy, SudoersFacts, SudoersState};
use crate::audit::model::{Evidence, Outcome, Severity, cis_debian, ssg};

const MAX_EVIDENCE: usize = 50;

fn not_installed() -> Outcome {
    Outcome::not_applicable(format!("no {SUDOERS}: sudo is not installed"))
}

fn problems(p: &SudoPolicy) -> Option<String> {
    if p.problems.is_empty() {
        return None;
    }
    let shown: Vec<String> = p.problems.iter().take(5).map(|x| format!("{}: {}", x.source, x.what)).collect();
    Some(shown.join("; "))
}

fn finish(found: bool, p: &SudoPolicy, evidence: Vec<Evidence>) -> Outcome {
    let read = Evidence::new(SUDOERS, format!("policy files read: {}", p.files.join(", ")));
    let o = match (found, problems(p)) {
        (true, None) => Outcome::fail(),
        (true, Some(why)) => Outcome::fail().note(format!("parts of the policy could not be read: {why}")),
        (false, None) => Outcome::pass(),
        (false, Some(why)) => Outcome::error(format!("sudo policy incompletely read, cannot conclude: {why}")),
    };
    o.with_evidence(evidence).with_evidence([read])
}

fn nopasswd(facts: &Facts<'_>, params: &Params) -> Outcome {
    let f = facts.get::<SudoersFacts>();
    let p = match &f.state {
        SudoersState::NotInstalled => return not_installed(),
        SudoersState::Parsed(p) => p,
    };
    let allowed = params.list("allowed_users");
    let mut evidence = Vec::new();
    let mut offending = Vec::new();
    let mut tolerated = 0usize;
    for rule in &p.nopasswd {
        let members = p.expand_users(&rule.users);
        let all_allowed = !members.is_empty() && members.iter().all(|m| allowed.contains(m));
        if all_allowed {
            tolerated += 1;
            evidence.push(Evidence::new(&rule.source, format!("allowed by allowed_users: {}", rule.text)));
        } else {
            offending.push(rule.source.clone());
            evidence.insert(offending.len() - 1, Evidence::new(&rule.source, &rule.text));
        }
    }
    evidence.truncate(MAX_EVIDENCE);
    finish(!offending.is_empty(), p, evidence)
        .observed(json!({ "nopasswd_rules": offending, "allowed_nopasswd_rules": tolerated }))
        .expected(json!({ "nopasswd_rules": [], "allowed_users": allowed }))
}

fn no_authenticate(facts: &Facts<'_>) -> Outcome {
    let f = facts.get::<SudoersFacts>();
    let p = match &f.state {
        SudoersState::NotInstalled => return not_installed(),
        SudoersState::Parsed(p) => p,
    };
    let evidence: Vec<Evidence> = p
        .no_authenticate
        .iter()
        .take(MAX_EVIDENCE)
        .map(|n| Evidence::new(&n.source, format!("{} ({})", n.text, n.scope)))
        .collect();
    let sources: Vec<&str> = p.no_authenticate.iter().map(|n| n.source.as_str()).collect();
    finish(!sources.is_empty(), p, evidence)
        .observed(json!({ "no_authenticate": sources }))
        .expected(json!({ "no_authenticate": [] }))
}

/// All sudo checks.
pub fn checks() -> Vec<Check> {
    vec![
        Check::new("sudo.nopasswd", "sudo rules require the user's password (no NOPASSWD)", Severity::Medium, |f, p| {
            nopasswd(f, p)
        })
        .param(ParamSpec::list(
            "allowed_users",
            &[],
            "Users, %groups or User_Alias members whose NOPASSWD rules are accepted (e.g. automation accounts)",
        ))
        .rationale("With NOPASSWD, anyone who gets a shell as the user (a stolen SSH key, a compromised process) becomes root without knowing any secret.")
        .remediation("Remove the NOPASSWD: tag from the listed rules (visudo -f FILE); for automation accounts that must not be prompted, list them in allowed_users and restrict their rules to the exact commands they need.")
        .refs([ssg("sudo_remove_nopasswd")]),
        Check::new("sudo.no_authenticate", "sudo authentication is not disabled (no !authenticate)", Severity::High, |f, _| {
            no_authenticate(f)
        })
        .rationale("Defaults !authenticate turns off password prompts for every rule it covers: any process of a sudo user becomes root silently.")
        .remediation("Remove !authenticate from the Defaults lines listed (visudo -f FILE).")
        .refs([cis_debian("5.2.5"), ssg("sudo_remove_no_authenticate")]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::Status;
    use crate::testutil::{eval, eval_with, offline, root_with};

    const DEBIAN: &str = "Defaults\tenv_reset\nDefaults\tuse_pty\nroot\tALL=(ALL:ALL) ALL\n%sudo\tALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n";

    #[test]
    fn debian_default_passes() {
        let d = root_with(&[("/etc/sudoers", DEBIAN), ("/etc/sudoers.d/README", "# comment only\n")]);
        let h = offline(d.path());
        assert_eq!(eval("sudo.nopasswd", &h).status, Status::Pass);
        let o = eval("sudo.no_authenticate", &h);
        assert_eq!(o.status, Status::Pass);
        assert!(o.evidence.last().unwrap().detail.contains("/etc/sudoers.d/README"));
    }

    #[test]
    fn not_installed() {
        let d = root_with(&[]);
        let h = offline(d.path());
        for id in ["sudo.nopasswd", "sudo.no_authenticate"] {
            let o = eval(id, &h);
            assert_eq!(o.status, Status::NotApplicable);
            assert!(o.reason.unwrap().contains("not installed"));
        }
    }

    #[test]
    fn nopasswd_fails_unless_allowed() {
        let d = root_with(&[
            ("/etc/sudoers", DEBIAN),
            ("/etc/sudoers.d/90-cloud", "User_Alias BOTS = ci, deploy\nBOTS ALL=(ALL) NOPASSWD: ALL\n"),
        ]);
        let h = offline(d.path());
        let o = eval("sudo.nopasswd", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/etc/sudoers.d/90-cloud:2");
        let o = eval_with("sudo.nopasswd", &h, &[("allowed_users", json!(["ci"]))]);
        assert_eq!(o.status, Status::Fail, "deploy is not allowed");
        let o = eval_with("sudo.nopasswd", &h, &[("allowed_users", json!(["ci", "deploy"]))]);
        assert_eq!(o.status, Status::Pass);
        assert_eq!(o.observed.unwrap()["allowed_nopasswd_rules"], json!(1));
    }

    #[test]
    fn no_authenticate_fails() {
        let d = root_with(&[("/etc/sudoers", "Defaults:ci !authenticate\nroot ALL=(ALL) ALL\n")]);
        let o = eval("sudo.no_authenticate", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/etc/sudoers:1");
    }

    #[test]
    fn unreadable_policy_parts() {
        // Nothing found, but an include is missing: cannot conclude.
        let d = root_with(&[("/etc/sudoers", "root ALL=(ALL) ALL\n@include /etc/sudoers.extra\n")]);
        let h = offline(d.path());
        let o = eval("sudo.nopasswd", &h);
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("/etc/sudoers.extra"));
        assert_eq!(eval("sudo.no_authenticate", &h).status, Status::Error);
        // A rule found is a failure even so.
        let d = root_with(&[("/etc/sudoers", "x ALL=NOPASSWD: ALL\n@include /etc/sudoers.extra\n")]);
        let o = eval("sudo.nopasswd", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("could not be read"));
        // A binary sudoers.
        let d = root_with(&[]);
        crate::testutil::write(d.path(), "/etc/sudoers", &[0xff, 0xfe, 0]);
        assert_eq!(eval("sudo.nopasswd", &offline(d.path())).status, Status::Error);
    }
}
