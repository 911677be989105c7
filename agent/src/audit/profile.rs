//! Profiles: which checks run, with which parameters, and which findings are
//! waived until when.
//!
//! A profile is TOML. It may extend a built-in profile, include and exclude
//! checks by id or glob (`ssh.*`), override check parameters and declare
//! waivers. Everything is validated once at load time against the registry,
//! and every problem is reported at once, naming the file and the key.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;

use crate::audit::check::Check;

/// Built-in profiles, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("linux-baseline", include_str!("../../profiles/linux-baseline.toml")),
    ("kosmos-external", include_str!("../../profiles/kosmos-external.toml")),
    ("cis-k8s-worker", include_str!("../../profiles/cis-k8s-worker.toml")),
    ("hds", include_str!("../../profiles/hds.toml")),
];

/// The profile used when none is given.
pub const DEFAULT_PROFILE: &str = "kosmos-external";

/// Profile files larger than this are refused.
const PROFILE_LIMIT: u64 = 1024 * 1024;

/// Errors loading a profile. Each names the profile and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown profile {name:?}: built-in profiles are {known}; a file path must exist")]
    Unknown { name: String, known: String },
    #[error("cannot read profile {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("profile {path} is larger than {PROFILE_LIMIT} bytes")]
    TooLarge { path: String },
    #[error("profile {origin}: {source}")]
    Parse {
        origin: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("profile {origin} is invalid:\n  - {}", problems.join("\n  - "))]
    Invalid { origin: String, problems: Vec<String> },
    #[error("profile {origin}: extends chain is too deep or circular (at {name:?})")]
    ExtendsLoop { origin: String, name: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    profile: RawHeader,
    #[serde(default)]
    checks: RawChecks,
    #[serde(default)]
    params: BTreeMap<String, BTreeMap<String, toml::Value>>,
    #[serde(default, rename = "waiver")]
    waivers: Vec<RawWaiver>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    version: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    extends: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChecks {
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWaiver {
    check: String,
    reason: String,
    expires: String,
}

/// A waiver: a known failure accepted until a date, with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiver {
    pub check: String,
    pub reason: String,
    pub expires: NaiveDate,
}

impl Waiver {
    /// A waiver applies up to and including its expiry date.
    pub fn is_active(&self, today: NaiveDate) -> bool {
        today <= self.expires
    }
}

/// A loaded, validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    /// Parameter overrides by check id.
    pub params: BTreeMap<String, BTreeMap<String, Value>>,
    pub waivers: Vec<Waiver>,
}

impl Profile {
    /// Load a built-in profile by name, or a profile file by path.
    pub fn load(name_or_path: &str, registry: &[Check]) -> Result<Profile, ProfileError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::from_toml(text, &format!("built-in {name_or_path}"), registry, 0);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(ProfileError::Unknown {
                name: name_or_path.to_string(),
                known: BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            });
        }
        let meta =
            std::fs::metadata(path).map_err(|e| ProfileError::Read { path: name_or_path.to_string(), source: e })?;
        if meta.len() > PROFILE_LIMIT || !meta.is_file() {
            return Err(ProfileError::TooLarge { path: name_or_path.to_string() });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ProfileError::Read { path: name_or_path.to_string(), source: e })?;
        Self::from_toml(&text, name_or_path, registry, 0)
    }

    /// Parse and validate profile text. `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str, registry: &[Check], depth: usize) -> Result<Profile, ProfileError> {
        let raw: RawProfile = toml::from_str(text)
            .map_err(|e| ProfileError::Parse { origin: origin.to_string(), source: Box::new(e) })?;
        let mut base = match &raw.profile.extends {
            None => None,
            Some(name) => {
                let Some((_, t)) = BUILTIN.iter().find(|(n, _)| n == name) else {
                    return Err(ProfileError::Invalid {
                        origin: origin.to_string(),
                        problems: vec![format!("profile.extends = {name:?} is not a built-in profile")],
                    });
                };
                if depth > 4 {
                    return Err(ProfileError::ExtendsLoop { origin: origin.to_string(), name: name.clone() });
                }
                Some(Self::from_toml(t, &format!("built-in {name}"), registry, depth + 1)?)
            }
        };
        let mut problems = Vec::new();
        for pat in raw.checks.include.iter().chain(&raw.checks.exclude) {
            match glob::Pattern::new(pat) {
                Ok(p) if registry.iter().any(|c| p.matches(&c.id)) => {}
                Ok(_) => problems.push(format!("checks: {pat:?} matches no known check")),
                Err(e) => problems.push(format!("checks: {pat:?} is not a valid pattern: {e}")),
            }
        }
        let mut params: BTreeMap<String, BTreeMap<String, Value>> =
            base.as_ref().map(|b| b.params.clone()).unwrap_or_default();
        for (id, values) in &raw.params {
            let Some(check) = registry.iter().find(|c| &c.id == id) else {
                problems.push(format!("params.{id:?}: no such check"));
                continue;
            };
            for (k, v) in values {
                let Some(spec) = check.params.iter().find(|s| s.name == k) else {
                    let known: Vec<_> = check.params.iter().map(|s| s.name).collect();
                    problems.push(format!(
                        "params.{id:?}.{k}: no such parameter (known: {})",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ));
                    continue;
                };
                let json = toml_to_json(v);
                if !spec.kind.accepts(&json) {
                    problems.push(format!("params.{id:?}.{k}: must be {}", spec.kind.describe()));
                    continue;
                }
                params.entry(id.clone()).or_default().insert(k.clone(), json);
            }
        }
        let mut waivers = base.as_ref().map(|b| b.waivers.clone()).unwrap_or_default();
        for (i, w) in raw.waivers.iter().enumerate() {
            if !registry.iter().any(|c| c.id == w.check) {
                problems.push(format!("waiver[{i}].check = {:?}: no such check", w.check));
            }
            if w.reason.trim().is_empty() {
                problems.push(format!("waiver[{i}] ({}): a reason is required", w.check));
            }
            match NaiveDate::parse_from_str(&w.expires, "%Y-%m-%d") {
                Ok(expires) => waivers.push(Waiver { check: w.check.clone(), reason: w.reason.clone(), expires }),
                Err(_) => problems
                    .push(format!("waiver[{i}] ({}): expires = {:?} is not a date (YYYY-MM-DD)", w.check, w.expires)),
            }
        }
        if !problems.is_empty() {
            return Err(ProfileError::Invalid { origin: origin.to_string(), problems });
        }
        let (mut include, mut exclude) = match base.take() {
            Some(b) => (b.include, b.exclude),
            None => (Vec::new(), Vec::new()),
        };
        include.extend(raw.checks.include);
        exclude.extend(raw.checks.exclude);
        Ok(Profile {
            name: raw.profile.name,
            version: raw.profile.version,
            description: raw.profile.description,
            include,
            exclude,
            params,
            waivers,
        })
    }

    /// Whether the profile selects a check id.
    pub fn selects(&self, id: &str) -> bool {
        let m = |pats: &[String]| pats.iter().any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(id)));
        m(&self.include) && !m(&self.exclude)
    }

    /// The newest waiver for a check (last declared wins).
    pub fn waiver_for(&self, id: &str) -> Option<&Waiver> {
        self.waivers.iter().rev().find(|w| w.check == id)
    }
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::from(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::from(*b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(a) => Value::from(a.iter().map(toml_to_json).collect::<Vec<_>>()),
        toml::Value::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checks::registry;

    #[test]
    fn builtins_load() {
        let reg = registry();
        for (name, _) in BUILTIN {
            let p = Profile::load(name, &reg).unwrap();
            assert_eq!(&p.name, name);
            assert!(reg.iter().any(|c| p.selects(&c.id)), "{name} selects nothing");
        }
    }

    #[test]
    fn user_profile_extends_and_validates() {
        let reg = registry();
        let p = Profile::from_toml(
            r#"
            [profile]
            name = "mine"
            version = "3"
            extends = "linux-baseline"
            [checks]
            exclude = ["sysctl.dmesg_*"]
            [params."sysctl.ip_forward"]
            kubernetes_node = false
            [[waiver]]
            check = "sysctl.kptr_restrict"
            reason = "vendor kernel, ticket SEC-1"
            expires = "2027-01-31"
            "#,
            "mine.toml",
            &reg,
            0,
        )
        .unwrap();
        assert!(p.selects("sysctl.kptr_restrict"));
        assert!(!p.selects("sysctl.dmesg_restrict"));
        assert_eq!(p.params["sysctl.ip_forward"]["kubernetes_node"], Value::Bool(false));
        let w = p.waiver_for("sysctl.kptr_restrict").unwrap();
        assert!(w.is_active(NaiveDate::from_ymd_opt(2027, 1, 31).unwrap()));
        assert!(!w.is_active(NaiveDate::from_ymd_opt(2027, 2, 1).unwrap()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let reg = registry();
        let err = Profile::from_toml(
            r#"
            [profile]
            name = "bad"
            version = "1"
            [checks]
            include = ["nosuch.*"]
            [params."sysctl.ip_forward"]
            kubernetes_node = "yes"
            typo = 1
            [[waiver]]
            check = "sysctl.nope"
            reason = ""
            expires = "next week"
            "#,
            "bad.toml",
            &reg,
            0,
        )
        .unwrap_err();
        let msg = err.to_string();
        for needle in ["nosuch.*", "must be a boolean", "typo", "sysctl.nope", "reason is required", "not a date"] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
    }

    #[test]
    fn unknown_fields_and_garbage_are_rejected() {
        let reg = registry();
        assert!(Profile::from_toml("[profile]\nname='x'\nversion='1'\ncolour='red'\n", "x", &reg, 0).is_err());
        assert!(Profile::from_toml("\u{0}\u{1}garbage", "x", &reg, 0).is_err());
        assert!(Profile::load("no-such-profile", &reg).is_err());
    }
}
