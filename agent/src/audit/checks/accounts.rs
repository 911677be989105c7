//! Local account checks (family `accounts`): the contents of the account
//! databases (uid 0, empty passwords, duplicates, NIS leftovers) and the
//! account policy in `/etc/login.defs` (password age, hashing, umask).
//!
//! A database with malformed lines makes every check that reads it `error`,
//! naming the lines: glibc skips them, so what they hide is unknown.

use std::collections::BTreeMap;

use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::accounts::{AccountsFacts, Database, DbState, GROUP, PASSWD, SHADOW};
use crate::audit::facts::login_defs::{
    DEFAULT_PASS_MAX_DAYS, DEFAULT_UMASK, LOGIN_DEFS, LoginDefsFacts, LoginDefsState, Setting, parse_c_long,
};
use crate::audit::model::{Evidence, Outcome, Severity, cis_debian, ssg};

/// At most this many offending entries are listed in the evidence.
const MAX_EVIDENCE: usize = 50;

/// The parsed `/etc/passwd`, or the outcome explaining why there is none.
fn passwd(facts: &AccountsFacts) -> Result<&Database<crate::audit::facts::accounts::PasswdEntry>, Outcome> {
    match &facts.passwd {
        DbState::Parsed(db) => Ok(db),
        DbState::Absent => Err(Outcome::error(format!("no {PASSWD}: not a usable root"))),
        DbState::Unreadable(e) => Err(Outcome::error(e.to_string())),
    }
}

/// A database that must be readable and clean for the question at hand.
fn clean<T>(db: &Database<T>) -> Result<&Database<T>, Outcome> {
    match db.problem_summary() {
        Some(p) => Err(Outcome::error(format!("{}: {p}", db.path))
            .with_evidence(db.problems.iter().take(MAX_EVIDENCE).map(|p| Evidence::new(&p.source, &p.what)))),
        None => Ok(db),
    }
}

fn group(facts: &AccountsFacts) -> Result<&Database<crate::audit::facts::accounts::GroupEntry>, Outcome> {
    match &facts.group {
        DbState::Parsed(db) => Ok(db),
        DbState::Absent => Err(Outcome::error(format!("no {GROUP}: not a usable root"))),
        DbState::Unreadable(e) => Err(Outcome::error(e.to_string())),
    }
}

fn unwrap_outcome(r: Result<Outcome, Outcome>) -> Outcome {
    r.unwrap_or_else(|o| o)
}

fn uid0_only_root(facts: &Facts<'_>) -> Result<Outcome, Outcome> {
    let accounts = facts.get::<AccountsFacts>();
    let db = clean(passwd(&accounts)?)?;
    let extra: Vec<_> = db.entries.iter().filter(|e| e.uid == 0 && e.name != "root").collect();
    let names: Vec<&str> = extra.iter().map(|e| e.name.as_str()).collect();
    Ok(Outcome::verdict(extra.is_empty())
        .observed(json!({ "uid0_accounts_besides_root": names }))
        .expected(json!({ "uid0_accounts_besides_root": [] }))
        .with_evidence(
            extra.iter().take(MAX_EVIDENCE).map(|e| Evidence::new(&e.source, format!("{} has uid 0", e.name))),
        )
        .evidence(PASSWD, format!("{} accounts examined", db.entries.len())))
}

fn empty_passwords(facts: &Facts<'_>) -> Result<Outcome, Outcome> {
    let accounts = facts.get::<AccountsFacts>();
    let pw = clean(passwd(&accounts)?)?;
    let mut offenders = Vec::new();
    let mut evidence = Vec::new();
    // pam_unix only consults /etc/shadow when the passwd field is "x" (or
    // "##"): an empty passwd field is a password-less account by itself.
    for e in pw.entries.iter().filter(|e| e.password.is_empty()) {
        offenders.push(e.name.clone());
        evidence.push(Evidence::new(&e.source, format!("{}: empty password field in {PASSWD}", e.name)));
    }
    match &accounts.shadow {
        DbState::Parsed(db) => {
            let db = clean(db)?;
            for e in db.entries.iter().filter(|e| e.password.is_empty()) {
                if !offenders.contains(&e.name) {
                    offenders.push(e.name.clone());
                }
                evidence.push(Evidence::new(&e.source, format!("{}: empty password field in {SHADOW}", e.name)));
            }
            evidence.push(Evidence::new(SHADOW, format!("{} entries examined", db.entries.len())));
        }
        DbState::Absent => {
            evidence.push(Evidence::new(SHADOW, "absent: only the password fields of /etc/passwd were examined"));
        }
        DbState::Unreadable(e) => return Err(Outcome::error(e.to_string())),
    }
    evidence.truncate(MAX_EVIDENCE);
    Ok(Outcome::verdict(offenders.is_empty())
        .observed(json!({ "accounts_without_password": offenders }))
        .expected(json!({ "accounts_without_password": [] }))
        .with_evidence(evidence))
}

/// Values that occur more than once, with the sources of every occurrence.
fn duplicates<'a, K: Ord + std::fmt::Display>(
    items: impl Iterator<Item = (K, &'a str, &'a str)>,
) -> BTreeMap<K, Vec<(&'a str, &'a str)>> {
    let mut by_key: BTreeMap<K, Vec<(&str, &str)>> = BTreeMap::new();
    for (k, name, source) in items {
        by_key.entry(k).or_default().push((name, source));
    }
    by_key.retain(|_, v| v.len() > 1);
    by_key
}

fn duplicate_outcome<K: Ord + std::fmt::Display>(
    dups: BTreeMap<K, Vec<(&str, &str)>>,
    what: &str,
    key: &str,
    file: &str,
    examined: usize,
) -> Outcome {
    let mut evidence = Vec::new();
    for (k, v) in &dups {
        for (name, source) in v {
            evidence.push(Evidence::new(*source, format!("{what} {k} used by {name}")));
        }
    }
    evidence.truncate(MAX_EVIDENCE);
    let keys: Vec<String> = dups.keys().map(|k| k.to_string()).collect();
    Outcome::verdict(dups.is_empty())
        .observed(json!({ key: keys }))
        .expected(json!({ key: [] }))
        .with_evidence(evidence)
        .evidence(file, format!("{examined} entries examined"))
}

fn duplicate_uids(facts: &Facts<'_>) -> Result<Outcome, Outcome> {
    let accounts = facts.get::<AccountsFacts>();
    let db = clean(passwd(&accounts)?)?;
    let d = duplicates(db.entries.iter().map(|e| (e.uid, e.name.as_str(), e.source.as_str())));
    Ok(duplicate_outcome(d, "uid", "duplicate_uids", PASSWD, db.entries.len()))
}

fn duplicate_user_names(facts: &Facts<'_>) -> Result<Outcome, Outcome> {
    let accounts = facts.get::<AccountsFacts>();
    let db = clean(passwd(&accounts)?)?;
    let d = duplicates(db.entries.iter().map(|e| (e.name.clone(), e.name.as_str(), e.source.as_str())));
    Ok(duplicate_outcome(d, "user name", "duplicate_user_names", PASSWD, db.entries.len()))
}

fn duplicate_gids(facts: &Facts<'_>) -> Result<Outcome, Outcome> {
    let accounts = facts.get::<AccountsFacts>();
    let db = clean(group(&accounts)?)?;
    let d = duplicates(db.entries.iter().map(|e| (e.gid, e.name.as_str(), e.source.as_str())));
    Ok(duplicate_outcome(d, "gid", "duplicate_gids", GROUP, db.entries.len()))
}

fn duplicate_group_names(facts: &Facts<'_>) -> Result<Outcome, Outcome> {
    let accounts = facts.get::<AccountsFacts>();
    let db = clean(group(&accounts)?)?;
    let d = duplicates(db.entries.iter().map(|e| (e.name.clone(), e.name.as_str(), e.source.as_str())));
    Ok(duplicate_outcome(d, "group name", "duplicate_group_names", GROUP, db.entries.len()))
}

fn legacy_plus_entries(facts: &Facts<'_>) -> Result<Outcome, Outcome> {
    let accounts = facts.get::<AccountsFacts>();
    // Legacy lines are recognised by their first character, so malformed
    // lines elsewhere in the file do not hide them: no `clean()` here.
    // Only '+' lines import accounts (as the SSG rules audit); a '-' line
    // only excludes them, so it is reported without failing.
    let plus = |l: &&crate::audit::facts::accounts::LegacyEntry| l.text.starts_with('+');
    let pw = passwd(&accounts)?;
    let mut evidence: Vec<Evidence> =
        pw.legacy.iter().filter(plus).map(|l| Evidence::new(&l.source, &l.text)).collect();
    let mut minus: Vec<Evidence> = Vec::new();
    let mut count = pw.legacy.iter().filter(plus).count();
    let mut observed = serde_json::Map::new();
    observed.insert(PASSWD.into(), json!(count));
    minus.extend(
        pw.legacy
            .iter()
            .filter(|l| !plus(l))
            .map(|l| Evidence::new(&l.source, format!("{} ('-' exclusion, not counted)", l.text))),
    );
    for (path, legacy) in [
        (
            SHADOW,
            match &accounts.shadow {
                DbState::Parsed(db) => Some(&db.legacy),
                DbState::Absent => None,
                DbState::Unreadable(e) => return Err(Outcome::error(e.to_string())),
            },
        ),
        (
            GROUP,
            match &accounts.group {
                DbState::Parsed(db) => Some(&db.legacy),
                DbState::Absent => None,
                DbState::Unreadable(e) => return Err(Outcome::error(e.to_string())),
            },
        ),
    ] {
        match legacy {
            Some(l) => {
                let n = l.iter().filter(plus).count();
                count += n;
                observed.insert(path.into(), json!(n));
                // Shadow lines are listed by position only: they may hold hashes.
                evidence.extend(l.iter().filter(plus).map(|e| {
                    let detail = if path == SHADOW { "legacy NIS '+' entry".to_string() } else { e.text.clone() };
                    Evidence::new(&e.source, detail)
                }));
                minus.extend(l.iter().filter(|e| !plus(e)).map(|e| {
                    let detail = if path == SHADOW {
                        "legacy NIS '-' exclusion, not counted".to_string()
                    } else {
                        format!("{} ('-' exclusion, not counted)", e.text)
                    };
                    Evidence::new(&e.source, detail)
                }));
            }
            None => evidence.push(Evidence::new(path, "absent")),
        }
    }
    evidence.extend(minus);
    evidence.truncate(MAX_EVIDENCE);
    Ok(Outcome::verdict(count == 0)
        .observed(serde_json::Value::Object(observed))
        .expected(json!("no lines starting with '+'"))
        .with_evidence(evidence))
}

/// The effective login.defs setting of `key`, with evidence either way.
/// `Err` when the file cannot be read.
fn login_def(facts: &Facts<'_>, key: &str) -> Result<(Option<Setting>, Vec<Evidence>), Outcome> {
    let defs = facts.get::<LoginDefsFacts>();
    match &defs.state {
        LoginDefsState::Unreadable(e) => Err(Outcome::error(e.to_string())),
        LoginDefsState::Absent => {
            Ok((None, vec![Evidence::new(LOGIN_DEFS, format!("absent: {key} has its shadow-utils built-in default"))]))
        }
        LoginDefsState::Parsed(d) => match d.get(key) {
            Some(s) => {
                let mut ev = vec![Evidence::new(&s.source, format!("{key} {}", s.value))];
                ev.extend(s.overridden.iter().map(|(o, v)| Evidence::new(o, format!("earlier {key} {v}, overridden"))));
                Ok((Some(s.clone()), ev))
            }
            None => Ok((None, vec![Evidence::new(LOGIN_DEFS, format!("{key} is not set"))])),
        },
    }
}

fn password_max_days(facts: &Facts<'_>, params: &Params) -> Result<Outcome, Outcome> {
    let max = params.int("max_days");
    let (setting, mut evidence) = login_def(facts, "PASS_MAX_DAYS")?;
    let effective = match &setting {
        Some(s) => parse_c_long(&s.value).unwrap_or_else(|| {
            evidence.push(Evidence::new(
                &s.source,
                format!("{:?} is not a number: shadow-utils ignores it and uses the default", s.value),
            ));
            DEFAULT_PASS_MAX_DAYS
        }),
        None => DEFAULT_PASS_MAX_DAYS,
    };
    if setting.is_none() || effective == DEFAULT_PASS_MAX_DAYS {
        evidence.push(Evidence::new(LOGIN_DEFS, "effective PASS_MAX_DAYS -1: passwords never expire"));
    }
    // 0 would force a change at every login and is not a policy anyone means.
    let defs_ok = (1..=max).contains(&effective);
    // CIS 5.4.1.1 also audits the accounts that exist: every account with a
    // password hash must have a maximum age between 1 and the limit, since
    // login.defs only applies to accounts created later.
    let accounts = facts.get::<AccountsFacts>();
    let mut bad_accounts = Vec::new();
    match &accounts.shadow {
        DbState::Parsed(db) => {
            for e in db.entries.iter().filter(|e| e.password.starts_with('$')) {
                let age = e.max_days.as_deref().and_then(parse_c_long);
                if !age.is_some_and(|a| (1..=max).contains(&a)) {
                    bad_accounts.push(e.name.clone());
                    if bad_accounts.len() <= MAX_EVIDENCE {
                        evidence.push(Evidence::new(
                            &e.source,
                            format!(
                                "{}: maximum password age {}",
                                e.name,
                                e.max_days.as_deref().unwrap_or("unset (never expires)")
                            ),
                        ));
                    }
                }
            }
        }
        DbState::Absent => evidence.push(Evidence::new(SHADOW, "absent: no existing account has a password hash")),
        DbState::Unreadable(e) => {
            return Err(Outcome::error(format!("existing accounts cannot be checked: {e}")).with_evidence(evidence));
        }
    }
    let ok = defs_ok && bad_accounts.is_empty();
    let mut notes = Vec::new();
    if !defs_ok {
        notes.push(format!("PASS_MAX_DAYS is {effective}, not between 1 and {max}"));
    }
    if !bad_accounts.is_empty() {
        notes.push(format!(
            "{} account(s) with a password keep a maximum age outside 1..{max} in /etc/shadow: {} (chage --maxdays {max} NAME)",
            bad_accounts.len(),
            bad_accounts.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(Outcome::verdict(ok)
        .observed(json!({ "PASS_MAX_DAYS": effective, "accounts_outside_limit": bad_accounts }))
        .expected(json!({ "PASS_MAX_DAYS": format!("between 1 and {max}"), "accounts_outside_limit": [] }))
        .with_evidence(evidence)
        .note(if notes.is_empty() {
            "PASS_MAX_DAYS and every account with a password are within the limit".to_string()
        } else {
            notes.join("; ")
        }))
}

/// Methods strong enough for password hashes (crypt(5)).
const STRONG_METHODS: [&str; 2] = ["SHA512", "YESCRYPT"];

fn password_hashing(facts: &Facts<'_>) -> Result<Outcome, Outcome> {
    let (setting, mut evidence) = login_def(facts, "ENCRYPT_METHOD")?;
    let method = setting.as_ref().map(|s| s.value.clone());
    match &method {
        None => evidence.push(Evidence::new(
            LOGIN_DEFS,
            "ENCRYPT_METHOD unset: chpasswd/newusers fall back to DES or MD5 (MD5_CRYPT_ENAB) in Debian 12's shadow-utils",
        )),
        // shadow-utils compares with strcmp: "sha512" is an invalid value.
        Some(m) if !STRONG_METHODS.contains(&m.as_str()) && STRONG_METHODS.contains(&m.to_uppercase().as_str()) => {
            evidence.push(Evidence::new(
                LOGIN_DEFS,
                format!("{m:?}: values are case-sensitive; shadow-utils rejects it and falls back to a default"),
            ))
        }
        Some(_) => {}
    }
    let ok = method.as_deref().is_some_and(|m| STRONG_METHODS.contains(&m));
    Ok(Outcome::verdict(ok)
        .observed(json!({ "ENCRYPT_METHOD": method }))
        .expected(json!({ "ENCRYPT_METHOD": STRONG_METHODS }))
        .with_evidence(evidence))
}

fn default_umask(facts: &Facts<'_>, params: &Params) -> Result<Outcome, Outcome> {
    let wanted_text = params.str("umask");
    let wanted = Some(wanted_text)
        .filter(|t| !t.is_empty() && t.len() <= 4 && t.chars().all(|c| ('0'..='7').contains(&c)))
        .and_then(|t| u32::from_str_radix(t, 8).ok())
        .filter(|v| *v <= 0o777)
        .ok_or_else(|| Outcome::error(format!("parameter umask = {wanted_text:?} is not an octal umask")))?;
    let (setting, mut evidence) = login_def(facts, "UMASK")?;
    let effective = match &setting {
        // getdef_num() accepts any int; umask(2) keeps the low nine bits.
        Some(s) => parse_c_long(&s.value)
            .filter(|v| i32::try_from(*v).is_ok())
            .and_then(|v| u32::try_from(v & 0o777).ok())
            .unwrap_or_else(|| {
                evidence.push(Evidence::new(
                    &s.source,
                    format!("{:?} is not a number: shadow-utils ignores it and uses the default 022", s.value),
                ));
                DEFAULT_UMASK
            }),
        None => DEFAULT_UMASK,
    };
    // "As strict or stricter": every bit masked by the wanted umask is masked.
    // Every UMASK line must be, as the SSG rule audits it (an overridden
    // line is one edit away from applying).
    let mut weak = Vec::new();
    if let Some(s) = &setting {
        for (source, value) in &s.overridden {
            let v = parse_c_long(value).and_then(|v| u32::try_from(v & 0o777).ok());
            if v.is_none_or(|v| v & wanted != wanted) {
                weak.push(format!("{source} (UMASK {value})"));
            }
        }
    }
    let ok = effective & wanted == wanted && weak.is_empty();
    let o = Outcome::verdict(ok)
        .observed(json!({ "UMASK": format!("{effective:03o}") }))
        .expected(json!({ "UMASK": format!("{wanted:03o} or stricter, on every UMASK line") }))
        .with_evidence(evidence);
    Ok(if effective & wanted == wanted && !weak.is_empty() {
        o.note(format!("the effective UMASK is strict enough, but earlier lines are not: {}", weak.join(", ")))
    } else {
        o
    })
}

/// All account checks.
pub fn checks() -> Vec<Check> {
    vec![
        Check::new("accounts.uid0_only_root", "Only root has user id 0", Severity::High, |f, _| {
            unwrap_outcome(uid0_only_root(f))
        })
        .rationale("Any account with uid 0 is root under another name, with none of root's monitoring or restrictions.")
        .remediation("Give the extra uid-0 accounts their own uid (usermod -u) or remove them (userdel); use sudo for delegation.")
        .refs([cis_debian("5.4.2.1"), ssg("accounts_no_uid_except_zero")]),
        Check::new("accounts.empty_passwords", "No account has an empty password", Severity::High, |f, _| {
            unwrap_outcome(empty_passwords(f))
        })
        .rationale("An empty password field lets anyone log in as that account wherever password authentication is allowed (console, su, services using PAM).")
        .remediation("Lock the account (passwd -l NAME) or set a password; never leave the password field of /etc/shadow or /etc/passwd empty.")
        .refs([cis_debian("7.2.2"), ssg("no_empty_passwords_etc_shadow")]),
        Check::new("accounts.duplicate_uids", "User ids are unique", Severity::Medium, |f, _| {
            unwrap_outcome(duplicate_uids(f))
        })
        .rationale("Accounts sharing a uid share every file and process: actions cannot be attributed and permissions cannot be separated.")
        .remediation("Give each account its own uid (usermod -u) and fix file ownership accordingly.")
        .refs([cis_debian("7.2.5"), ssg("account_unique_id")]),
        Check::new("accounts.duplicate_user_names", "User names are unique", Severity::Medium, |f, _| {
            unwrap_outcome(duplicate_user_names(f))
        })
        .rationale("With two entries of the same name, which uid a login gets depends on file order: the second entry is silently shadowed.")
        .remediation("Rename or remove the duplicate entries in /etc/passwd (use vipw).")
        .refs([cis_debian("7.2.7"), ssg("account_unique_name")]),
        Check::new("accounts.duplicate_gids", "Group ids are unique", Severity::Low, |f, _| {
            unwrap_outcome(duplicate_gids(f))
        })
        .rationale("Groups sharing a gid share group permissions: membership of one grants the other's access.")
        .remediation("Give each group its own gid (groupmod -g) and fix group ownership accordingly.")
        .refs([cis_debian("7.2.6"), ssg("group_unique_id")]),
        Check::new("accounts.duplicate_group_names", "Group names are unique", Severity::Low, |f, _| {
            unwrap_outcome(duplicate_group_names(f))
        })
        .rationale("With two groups of the same name, which gid the name means depends on file order.")
        .remediation("Rename or remove the duplicate entries in /etc/group (use vigr).")
        .refs([cis_debian("7.2.8"), ssg("group_unique_name")]),
        Check::new(
            "accounts.legacy_plus_entries",
            "No legacy NIS '+' entries in the account databases",
            Severity::Medium,
            |f, _| unwrap_outcome(legacy_plus_entries(f)),
        )
        .rationale("NIS compat entries import accounts from a network directory; with the 'compat' NSS source they can add password-less or uid-0 accounts, and with 'files' they are garbage that a later change may activate.")
        .remediation("Remove lines starting with '+' (and the '-' exclusions that go with them) from /etc/passwd, /etc/shadow and /etc/group; use sssd or another directory client if network accounts are needed.")
        .refs([
            ssg("no_legacy_plus_entries_etc_passwd"),
            ssg("no_legacy_plus_entries_etc_shadow"),
            ssg("no_legacy_plus_entries_etc_group"),
        ]),
        Check::new(
            "accounts.password_max_days",
            "Passwords expire (PASS_MAX_DAYS in /etc/login.defs and every account with a password)",
            Severity::Medium,
            |f, p| unwrap_outcome(password_max_days(f, p)),
        )
        .param(ParamSpec::int("max_days", 365, "Largest acceptable PASS_MAX_DAYS, in days"))
        .rationale("A password that never expires stays valid forever once leaked. As CIS Debian 12 5.4.1.1 audits it, both the default for new accounts (PASS_MAX_DAYS) and the maximum age of every existing account that has a password hash (/etc/shadow) must be between 1 and the limit.")
        .remediation("Set PASS_MAX_DAYS 365 (or less) in /etc/login.defs, and apply it to existing accounts with chage --maxdays 365 NAME.")
        .refs([cis_debian("5.4.1.1"), ssg("accounts_maximum_age_login_defs")]),
        Check::new(
            "accounts.password_hashing",
            "Password hashing uses SHA512 or yescrypt (ENCRYPT_METHOD in /etc/login.defs)",
            Severity::Medium,
            |f, _| unwrap_outcome(password_hashing(f)),
        )
        .rationale("Weak hash methods (DES, MD5) make stolen /etc/shadow hashes cheap to crack.")
        .remediation("Set ENCRYPT_METHOD YESCRYPT (or SHA512) in /etc/login.defs, then have users change their passwords.")
        .refs([cis_debian("5.4.1.4")]),
        Check::new(
            "accounts.default_umask",
            "The default umask in /etc/login.defs is restrictive",
            Severity::Medium,
            |f, p| unwrap_outcome(default_umask(f, p)),
        )
        .param(ParamSpec::str("umask", "027", "The umask that UMASK must be at least as strict as (octal)"))
        .rationale("UMASK sets the permissions of new home directories and, through pam_umask, of files users create: 022 makes them readable by every user. This check decides the question of SSG accounts_umask_etc_login_defs (every UMASK line in /etc/login.defs); CIS Debian 12 5.4.3.3 asks a wider one (shell profiles, bashrc, pam_umask) that this check does not cover, so it does not cite it.")
        .remediation("Set UMASK 027 (or stricter, e.g. 077) in /etc/login.defs, and remove weaker UMASK lines.")
        .refs([ssg("accounts_umask_etc_login_defs")]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::Status;
    use crate::testutil::{eval, eval_with, offline, root_with};

    const PASSWD_OK: &str = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n";
    const SHADOW_OK: &str = "root:$y$j9T$abc:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
    const GROUP_OK: &str = "root:x:0:\ndaemon:x:1:\nshadow:x:42:\n";

    fn base(extra: &[(&'static str, &'static str)]) -> tempfile::TempDir {
        let mut files = vec![("/etc/passwd", PASSWD_OK), ("/etc/shadow", SHADOW_OK), ("/etc/group", GROUP_OK)];
        for (p, t) in extra {
            files.retain(|(q, _)| q != p);
            files.push((p, t));
        }
        root_with(&files)
    }

    fn status(id: &str, d: &tempfile::TempDir) -> Status {
        eval(id, &offline(d.path())).status
    }

    #[test]
    fn clean_databases_pass() {
        let d = base(&[]);
        for id in [
            "accounts.uid0_only_root",
            "accounts.empty_passwords",
            "accounts.duplicate_uids",
            "accounts.duplicate_user_names",
            "accounts.duplicate_gids",
            "accounts.duplicate_group_names",
            "accounts.legacy_plus_entries",
        ] {
            assert_eq!(status(id, &d), Status::Pass, "{id}");
        }
    }

    #[test]
    fn missing_passwd_is_an_error_everywhere() {
        let d = root_with(&[("/etc/group", GROUP_OK)]);
        for id in ["accounts.uid0_only_root", "accounts.empty_passwords", "accounts.legacy_plus_entries"] {
            let o = eval(id, &offline(d.path()));
            assert_eq!(o.status, Status::Error, "{id}");
            assert!(o.reason.unwrap().contains("not a usable root"));
        }
        let d = root_with(&[("/etc/passwd", PASSWD_OK)]);
        assert_eq!(status("accounts.duplicate_gids", &d), Status::Error);
    }

    #[test]
    fn uid0_fails_and_malformed_line_is_an_error() {
        let d = base(&[("/etc/passwd", "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/root:/bin/sh\n")]);
        let o = eval("accounts.uid0_only_root", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/etc/passwd:2");
        let d = base(&[("/etc/passwd", "root:x:0:0::/root:/bin/sh\nsneaky:x:0:0::/root\n")]);
        let o = eval("accounts.uid0_only_root", &offline(d.path()));
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("/etc/passwd:2"));
    }

    #[test]
    fn empty_passwords_in_shadow_and_passwd() {
        let d = base(&[("/etc/shadow", "root:$y$x:19000:0:99999:7:::\ndaemon::19000:0:99999:7:::\n")]);
        let o = eval("accounts.empty_passwords", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/etc/shadow:2");
        let d = base(&[("/etc/passwd", "root:x:0:0::/root:/bin/sh\nguest::1000:1000::/home/g:/bin/sh\n")]);
        let o = eval("accounts.empty_passwords", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.observed.unwrap()["accounts_without_password"], json!(["guest"]));
        // No shadow file: passwd alone decides, and says so.
        let d = root_with(&[("/etc/passwd", PASSWD_OK)]);
        let o = eval("accounts.empty_passwords", &offline(d.path()));
        assert_eq!(o.status, Status::Pass);
        assert!(o.evidence.iter().any(|e| e.detail.contains("only the password fields")));
        let d = base(&[("/etc/shadow", "root:x:1\n")]);
        assert_eq!(status("accounts.empty_passwords", &d), Status::Error);
    }

    #[test]
    fn duplicates_fail_with_every_occurrence() {
        let d = base(&[
            (
                "/etc/passwd",
                "root:x:0:0::/:/bin/sh\na:x:1000:1000::/:/bin/sh\nb:x:1000:1000::/:/bin/sh\na:x:1001:1::/:/bin/sh\n",
            ),
            ("/etc/group", "root:x:0:\ng:x:10:\nh:x:10:\ng:x:11:\n"),
        ]);
        let o = eval("accounts.duplicate_uids", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence.len(), 3, "two occurrences plus the summary");
        assert_eq!(status("accounts.duplicate_user_names", &d), Status::Fail);
        assert_eq!(status("accounts.duplicate_gids", &d), Status::Fail);
        let o = eval("accounts.duplicate_group_names", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.observed.unwrap()["duplicate_group_names"], json!(["g"]));
    }

    #[test]
    fn legacy_entries() {
        let d = base(&[("/etc/group", "root:x:0:\n+:::\n"), ("/etc/shadow", "root:x:1:0:9:7:::\n+::::::::\n")]);
        let o = eval("accounts.legacy_plus_entries", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        let sources: Vec<&str> = o.evidence.iter().map(|e| e.source.as_str()).collect();
        assert_eq!(sources, ["/etc/shadow:2", "/etc/group:2"]);
        let d = base(&[("/etc/passwd", "root:x:0:0::/:/bin/sh\n+baduser\nbroken\n")]);
        let o = eval("accounts.legacy_plus_entries", &offline(d.path()));
        assert_eq!(o.status, Status::Fail, "malformed lines do not hide legacy entries");
        // A '-' exclusion alone is reported, not failed (the SSG rules look
        // for '+' lines).
        let d = base(&[("/etc/passwd", "root:x:0:0::/:/bin/sh\n-baduser\n")]);
        let o = eval("accounts.legacy_plus_entries", &offline(d.path()));
        assert_eq!(o.status, Status::Pass);
        assert!(o.evidence.iter().any(|e| e.detail.contains("'-' exclusion, not counted")));
        let d = root_with(&[("/etc/passwd", PASSWD_OK)]);
        let o = eval("accounts.legacy_plus_entries", &offline(d.path()));
        assert_eq!(o.status, Status::Pass);
        assert!(o.evidence.iter().any(|e| e.source == "/etc/shadow" && e.detail == "absent"));
        let d = base(&[]);
        crate::testutil::write(d.path(), "/etc/group", &[0xff]);
        assert_eq!(status("accounts.legacy_plus_entries", &d), Status::Error);
    }

    #[test]
    fn password_max_days() {
        let d = root_with(&[("/etc/login.defs", "PASS_MAX_DAYS 99999\nPASS_MAX_DAYS 365\n")]);
        let o = eval("accounts.password_max_days", &offline(d.path()));
        assert_eq!(o.status, Status::Pass);
        assert_eq!(o.evidence[0].source, "/etc/login.defs:2");
        let o = eval_with("accounts.password_max_days", &offline(d.path()), &[("max_days", json!(90))]);
        assert_eq!(o.status, Status::Fail);
        let d = root_with(&[("/etc/login.defs", "PASS_MAX_DAYS 99999\n")]);
        assert_eq!(status("accounts.password_max_days", &d), Status::Fail);
        let d = root_with(&[("/etc/login.defs", "PASS_MAX_DAYS 90 # CIS\n")]);
        let o = eval("accounts.password_max_days", &offline(d.path()));
        assert_eq!(o.status, Status::Fail, "an inline comment makes the value invalid for shadow-utils");
        assert_eq!(o.observed.unwrap()["PASS_MAX_DAYS"], json!(-1));
        let d = root_with(&[]);
        let o = eval("accounts.password_max_days", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert!(o.evidence[0].detail.contains("absent"));
        crate::testutil::write(d.path(), "/etc/login.defs", &[0xff, 0xfe]);
        assert_eq!(status("accounts.password_max_days", &d), Status::Error);
        // Existing accounts with a password hash must expire too (CIS 5.4.1.1).
        let d = root_with(&[
            ("/etc/login.defs", "PASS_MAX_DAYS 365\n"),
            (
                "/etc/shadow",
                "root:*:19000:0:99999:7:::\nalice:$y$j9T$abc:19000:0:99999:7:::\nbob:$6$x$y:19000:0:90:7:::\n",
            ),
        ]);
        let o = eval("accounts.password_max_days", &offline(d.path()));
        assert_eq!(o.status, Status::Fail, "{o:?}");
        assert!(o.reason.as_deref().unwrap().contains("alice"), "{o:?}");
        assert!(!o.reason.as_deref().unwrap().contains("bob"), "{o:?}");
        assert!(!o.reason.as_deref().unwrap().contains("root"), "a locked account has no password: {o:?}");
        crate::testutil::write(
            d.path(),
            "/etc/shadow",
            b"root:*:19000:0:99999:7:::\nalice:$y$j9T$abc:19000:0:365:7:::\n",
        );
        assert_eq!(status("accounts.password_max_days", &d), Status::Pass);
    }

    #[test]
    fn password_hashing() {
        for (text, want) in [
            ("ENCRYPT_METHOD SHA512\n", Status::Pass),
            ("ENCRYPT_METHOD YESCRYPT\n", Status::Pass),
            ("ENCRYPT_METHOD yescrypt\n", Status::Fail),
            ("ENCRYPT_METHOD MD5\n", Status::Fail),
            ("ENCRYPT_METHOD SHA512\nENCRYPT_METHOD DES\n", Status::Fail),
            ("# ENCRYPT_METHOD SHA512\n", Status::Fail),
        ] {
            let d = root_with(&[("/etc/login.defs", text)]);
            assert_eq!(status("accounts.password_hashing", &d), want, "{text}");
        }
        let d = root_with(&[]);
        assert_eq!(status("accounts.password_hashing", &d), Status::Fail);
    }

    #[test]
    fn every_umask_line_must_be_strict() {
        let d = root_with(&[("/etc/login.defs", "UMASK 022\nUMASK 027\n")]);
        let o = eval("accounts.default_umask", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("/etc/login.defs:1 (UMASK 022)"));
    }

    #[test]
    fn default_umask() {
        for (text, want) in [
            ("UMASK 027\n", Status::Pass),
            ("UMASK 077\n", Status::Pass),
            ("UMASK 022\n", Status::Fail),
            ("UMASK 007\n", Status::Fail),
            ("UMASK 27\n", Status::Fail), // decimal 27 = 033 octal: other read not masked
            ("UMASK 027 # CIS\n", Status::Fail),
        ] {
            let d = root_with(&[("/etc/login.defs", text)]);
            assert_eq!(status("accounts.default_umask", &d), want, "{text}");
        }
        let d = root_with(&[("/etc/login.defs", "UMASK 027\n")]);
        let h = offline(d.path());
        assert_eq!(eval_with("accounts.default_umask", &h, &[("umask", json!("077"))]).status, Status::Fail);
        assert_eq!(eval_with("accounts.default_umask", &h, &[("umask", json!("9z"))]).status, Status::Error);
        let d = root_with(&[]);
        let o = eval("accounts.default_umask", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.observed.unwrap()["UMASK"], json!("022"));
    }
}
