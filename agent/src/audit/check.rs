//! What a check is: stable metadata plus a pure evaluation over [`Facts`].
//!
//! Checks never touch the machine themselves: they read facts (which go
//! through the [`crate::audit::host::Host`]) and return an [`Outcome`]. Parameters
//! are declared with defaults in the check's metadata and may be overridden by
//! a profile; the overrides are validated against these declarations once,
//! when the profile is loaded.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::audit::facts::Facts;
use crate::audit::model::{Outcome, Reference, Responsibility, Severity};

/// The declared type of a parameter, used to validate profile overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Bool,
    Int,
    Str,
    StrList,
}

impl ParamKind {
    pub fn describe(self) -> &'static str {
        match self {
            ParamKind::Bool => "a boolean",
            ParamKind::Int => "an integer",
            ParamKind::Str => "a string",
            ParamKind::StrList => "a list of strings",
        }
    }

    pub fn accepts(self, v: &Value) -> bool {
        match self {
            ParamKind::Bool => v.is_boolean(),
            ParamKind::Int => v.is_i64(),
            ParamKind::Str => v.is_string(),
            ParamKind::StrList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        }
    }
}

/// One tunable of a check.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub default: Value,
    pub help: &'static str,
}

impl ParamSpec {
    pub fn int(name: &'static str, default: i64, help: &'static str) -> Self {
        ParamSpec { name, kind: ParamKind::Int, default: Value::from(default), help }
    }
    pub fn bool(name: &'static str, default: bool, help: &'static str) -> Self {
        ParamSpec { name, kind: ParamKind::Bool, default: Value::from(default), help }
    }
    pub fn str(name: &'static str, default: &str, help: &'static str) -> Self {
        ParamSpec { name, kind: ParamKind::Str, default: Value::from(default), help }
    }
    pub fn list(name: &'static str, default: &[&str], help: &'static str) -> Self {
        ParamSpec {
            name,
            kind: ParamKind::StrList,
            default: Value::from(default.iter().map(|s| Value::from(*s)).collect::<Vec<_>>()),
            help,
        }
    }
}

/// The effective parameters of one check: defaults overlaid with the
/// profile's validated overrides.
///
/// Reads are checked against the declarations: a name the check never
/// declared, or a read of another type than declared, returns a neutral
/// value *and* is recorded. The engine turns any evaluation that made such a
/// read into an `error` finding ([`Params::misuse`]), so a typo in a
/// parameter name can never silently change a verdict.
#[derive(Debug, Default)]
pub struct Params {
    values: BTreeMap<String, (ParamKind, Value)>,
    misuse: RefCell<Vec<String>>,
}

impl Clone for Params {
    fn clone(&self) -> Self {
        Params { values: self.values.clone(), misuse: RefCell::new(self.misuse.borrow().clone()) }
    }
}

impl Params {
    pub fn new(specs: &[ParamSpec], overrides: Option<&BTreeMap<String, Value>>) -> Self {
        let mut values: BTreeMap<String, (ParamKind, Value)> =
            specs.iter().map(|s| (s.name.to_string(), (s.kind, s.default.clone()))).collect();
        if let Some(o) = overrides {
            for (k, v) in o {
                // Profiles are validated against the declarations when they
                // are loaded; an override of an undeclared name (possible only
                // from code) is kept out, so reading it is still a misuse.
                if let Some(slot) = values.get_mut(k) {
                    slot.1 = v.clone();
                }
            }
        }
        Params { values, misuse: RefCell::new(Vec::new()) }
    }

    fn lookup(&self, name: &str, kind: ParamKind) -> Option<&Value> {
        let problem = match self.values.get(name) {
            Some((k, v)) if *k == kind && kind.accepts(v) => return Some(v),
            Some((k, _)) if *k == kind => format!("parameter `{name}` does not hold {}", kind.describe()),
            Some((k, _)) => {
                format!("parameter `{name}` is declared as {} but read as {}", k.describe(), kind.describe())
            }
            None => format!("parameter `{name}` is not declared by the check"),
        };
        self.misuse.borrow_mut().push(problem);
        None
    }

    pub fn int(&self, name: &str) -> i64 {
        self.lookup(name, ParamKind::Int).and_then(Value::as_i64).unwrap_or_default()
    }
    pub fn bool(&self, name: &str) -> bool {
        self.lookup(name, ParamKind::Bool).and_then(Value::as_bool).unwrap_or_default()
    }
    pub fn str(&self, name: &str) -> &str {
        self.lookup(name, ParamKind::Str).and_then(Value::as_str).unwrap_or_default()
    }
    pub fn list(&self, name: &str) -> Vec<String> {
        self.lookup(name, ParamKind::StrList)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// The effective values, by name (for `explain` and evidence).
    pub fn as_map(&self) -> BTreeMap<String, Value> {
        self.values.iter().map(|(k, (_, v))| (k.clone(), v.clone())).collect()
    }

    /// What the evaluation read that it did not declare (or read with
    /// another type), if anything: a bug in the check, which makes its
    /// verdict unknown.
    pub fn misuse(&self) -> Option<String> {
        let m = self.misuse.borrow();
        (!m.is_empty()).then(|| m.join("; "))
    }
}

/// The evaluation function of a check.
pub type Evaluator = Box<dyn Fn(&Facts<'_>, &Params) -> Outcome + Send + Sync>;

/// A check: metadata plus its evaluation.
pub struct Check {
    /// Stable id `family.snake_name`; never reused for another meaning.
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub rationale: String,
    pub remediation: String,
    pub references: Vec<Reference>,
    pub responsibility: Responsibility,
    pub params: Vec<ParamSpec>,
    pub evaluate: Evaluator,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("id", &self.id).field("severity", &self.severity).finish_non_exhaustive()
    }
}

impl Check {
    /// Start a check with the defaults most checks share: customer
    /// responsibility (an external node is entirely the customer's), no
    /// references, no parameters.
    pub fn new(
        id: impl Into<String>,
        title: impl Into<String>,
        severity: Severity,
        evaluate: impl Fn(&Facts<'_>, &Params) -> Outcome + Send + Sync + 'static,
    ) -> Self {
        Check {
            id: id.into(),
            title: title.into(),
            severity,
            rationale: String::new(),
            remediation: String::new(),
            references: Vec::new(),
            responsibility: Responsibility::Customer,
            params: Vec::new(),
            evaluate: Box::new(evaluate),
        }
    }

    pub fn rationale(mut self, s: impl Into<String>) -> Self {
        self.rationale = s.into();
        self
    }
    pub fn remediation(mut self, s: impl Into<String>) -> Self {
        self.remediation = s.into();
        self
    }
    pub fn refs(mut self, r: impl IntoIterator<Item = Reference>) -> Self {
        self.references.extend(r);
        self
    }
    pub fn param(mut self, p: ParamSpec) -> Self {
        self.params.push(p);
        self
    }
    pub fn responsibility(mut self, r: Responsibility) -> Self {
        self.responsibility = r;
        self
    }

    /// The family is the part of the id before the first dot.
    pub fn family(&self) -> &str {
        self.id.split('.').next().unwrap_or(&self.id)
    }
}
