//! `patch.automatic_updates`: unattended-upgrades (Debian, Ubuntu) or
//! dnf-automatic (RPM family) installs security updates without a human.
//!
//! apt's configuration is read from `/etc/apt/apt.conf` and
//! `/etc/apt/apt.conf.d/*` in apt's order (later files override scalar
//! values; list scopes such as `Unattended-Upgrade::Origins-Pattern { … };`
//! accumulate), with both the `A::B "v";` and the nested `A { B "v"; };`
//! syntax, `//`, `#` and `/* */` comments.

use std::collections::BTreeMap;

use serde_json::json;

use crate::audit::check::{Check, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::packages::{PackageFacts, PackageFormat};
use crate::audit::host::Host;
use crate::audit::model::{Evidence, Outcome, Severity};

const APT_CONF: &str = "/etc/apt/apt.conf";
const APT_CONF_D: &str = "/etc/apt/apt.conf.d";
const CONF_LIMIT: u64 = 1024 * 1024;

/// A flattened apt configuration: lower-cased `a::b::c` → values (a scalar
/// has one value, a list scope several), with the source of the last write.
#[derive(Debug, Default, Clone)]
pub struct AptConf {
    pub values: BTreeMap<String, (Vec<String>, String)>,
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Semi,
    Open,
    Close,
}

fn tokenize(text: &str) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                    }
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            '"' => {
                let mut s = String::new();
                for n in chars.by_ref() {
                    if n == '"' {
                        break;
                    }
                    if n == '\n' {
                        line += 1;
                    }
                    s.push(n);
                }
                out.push((Tok::Str(s), line));
            }
            ';' => out.push((Tok::Semi, line)),
            '{' => out.push((Tok::Open, line)),
            '}' => out.push((Tok::Close, line)),
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, ';' | '{' | '}' | '"') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push((Tok::Word(s), line));
            }
        }
    }
    out
}

impl AptConf {
    /// Apply one file. Unparsable constructs are skipped: this only needs a
    /// few well-known keys, and apt itself would refuse a broken file.
    pub fn apply(&mut self, path: &str, text: &str) {
        let toks = tokenize(text);
        let mut scope: Vec<String> = Vec::new();
        let mut i = 0usize;
        while let Some((t, line)) = toks.get(i) {
            let src = format!("{path}:{line}");
            match t {
                Tok::Word(w) => {
                    let key = if scope.is_empty() {
                        w.to_lowercase()
                    } else {
                        format!("{}::{}", scope.join("::"), w.to_lowercase())
                    };
                    match toks.get(i + 1).map(|(t, _)| t) {
                        Some(Tok::Str(v)) => {
                            self.values.insert(key, (vec![v.clone()], src));
                            i += 2;
                        }
                        Some(Tok::Open) => {
                            scope.push(w.to_lowercase());
                            i += 2;
                            continue;
                        }
                        _ => i += 1,
                    }
                }
                Tok::Str(v) => {
                    let key = scope.join("::");
                    let entry = self.values.entry(key).or_insert_with(|| (Vec::new(), src.clone()));
                    entry.0.push(v.clone());
                    entry.1 = src;
                    i += 1;
                }
                Tok::Close => {
                    scope.pop();
                    i += 1;
                }
                Tok::Open | Tok::Semi => i += 1,
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&(Vec<String>, String)> {
        self.values.get(&key.to_lowercase())
    }

    pub fn load(host: &Host) -> Result<(AptConf, Vec<String>), String> {
        let mut conf = AptConf::default();
        let mut files = Vec::new();
        let mut paths = Vec::new();
        for e in host.read_dir_optional(APT_CONF_D).map_err(|e| e.to_string())? {
            // apt reads files whose names are alphanumerics, '-', '_' and '.', without an extension other than .conf.
            let ok = e.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && e.name.rsplit_once('.').is_none_or(|(_, ext)| ext == "conf");
            if ok {
                paths.push(e.path);
            }
        }
        if host.exists(APT_CONF) {
            paths.push(APT_CONF.to_string());
        }
        for p in paths {
            let text = host.read_text_limited(&p, CONF_LIMIT).map_err(|e| e.to_string())?;
            conf.apply(&p, &text);
            files.push(p);
        }
        Ok((conf, files))
    }
}

/// Non-zero interval (days) or "true" enables an APT::Periodic job.
fn periodic_enabled(v: &str) -> bool {
    let v = v.trim();
    v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("always") || v.parse::<i64>().is_ok_and(|n| n > 0)
}

fn apt_automatic(facts: &Facts<'_>, installed: bool) -> Outcome {
    let (conf, files) = match AptConf::load(facts.host()) {
        Ok(v) => v,
        Err(e) => return Outcome::error(e),
    };
    let mut ev = vec![Evidence::new(
        "/var/lib/dpkg/status",
        if installed { "unattended-upgrades is installed" } else { "unattended-upgrades is not installed" },
    )];
    let mut problems = Vec::new();
    if !installed {
        problems.push("the unattended-upgrades package is not installed".to_string());
    }
    let uu = conf.get("APT::Periodic::Unattended-Upgrade");
    match uu {
        Some((v, src)) => {
            ev.push(Evidence::new(src, format!("APT::Periodic::Unattended-Upgrade \"{}\"", v.join(""))));
            if !v.first().is_some_and(|v| periodic_enabled(v)) {
                problems.push("APT::Periodic::Unattended-Upgrade is not enabled".into());
            }
        }
        None => problems.push(format!("APT::Periodic::Unattended-Upgrade is not set in {APT_CONF_D}")),
    }
    if let Some((v, src)) = conf.get("APT::Periodic::Update-Package-Lists") {
        ev.push(Evidence::new(src, format!("APT::Periodic::Update-Package-Lists \"{}\"", v.join(""))));
    }
    let mut origins = Vec::new();
    for key in ["Unattended-Upgrade::Origins-Pattern", "Unattended-Upgrade::Allowed-Origins"] {
        if let Some((v, src)) = conf.get(key) {
            ev.push(Evidence::new(src, format!("{key}: {}", v.join("; "))));
            origins.extend(v.iter().cloned());
        }
    }
    let covers_security = origins.iter().any(|o| o.to_lowercase().contains("security"));
    if !covers_security {
        problems.push("the origins unattended-upgrades may install from do not include a security suite".into());
    }
    let o = Outcome::verdict(problems.is_empty())
        .observed(json!({"installed": installed, "origins": origins, "config_files": files}))
        .expected(json!("unattended-upgrades installed, enabled, covering the security suite"))
        .with_evidence(ev);
    if problems.is_empty() { o } else { o.note(problems.join("; ")) }
}

fn dnf_automatic(facts: &Facts<'_>) -> Outcome {
    let host = facts.host();
    let wants = "/etc/systemd/system/timers.target.wants";
    let mut ev = Vec::new();
    let enabled: Vec<String> = match host.read_dir_optional(wants) {
        Ok(v) => v.into_iter().filter(|e| e.name.starts_with("dnf-automatic")).map(|e| e.name).collect(),
        Err(e) => return Outcome::error(e.to_string()),
    };
    ev.push(Evidence::new(
        wants,
        if enabled.is_empty() { "no dnf-automatic timer enabled".into() } else { enabled.join(", ") },
    ));
    let installs = if enabled.iter().any(|t| t.starts_with("dnf-automatic-install")) {
        true
    } else if enabled.iter().any(|t| t == "dnf-automatic.timer") {
        // The generic timer installs only when automatic.conf says so.
        match host.read_optional("/etc/dnf/automatic.conf") {
            Ok(Some(t)) => {
                let apply = t.lines().map(str::trim).filter_map(|l| l.split_once('=')).any(|(k, v)| {
                    k.trim() == "apply_updates"
                        && matches!(v.trim().to_lowercase().as_str(), "yes" | "true" | "1" | "on")
                });
                ev.push(Evidence::new(
                    "/etc/dnf/automatic.conf",
                    format!("apply_updates {}", if apply { "enabled" } else { "not enabled" }),
                ));
                apply
            }
            Ok(None) => false,
            Err(e) => return Outcome::error(e.to_string()),
        }
    } else {
        false
    };
    let o = Outcome::verdict(installs)
        .observed(json!({"timers": enabled}))
        .expected(json!("dnf-automatic installing updates"))
        .with_evidence(ev);
    if installs { o } else { o.note("dnf-automatic is not set up to install updates") }
}

fn automatic_updates(facts: &Facts<'_>, _p: &Params) -> Outcome {
    let pf = facts.get::<PackageFacts>();
    let db = match &pf.0 {
        Ok(db) => db,
        Err(e) => return Outcome::error(e.to_string()),
    };
    match db.format {
        PackageFormat::Dpkg => apt_automatic(facts, db.installed("unattended-upgrades").is_some()),
        PackageFormat::Rpm => dnf_automatic(facts),
    }
}

pub fn check() -> Check {
    Check::new("patch.automatic_updates", "Security updates are installed automatically", Severity::Medium, automatic_updates)
        .rationale("Security fixes that wait for a human wait too long: automatic installation of at least the security suite closes the window between the fix and its installation.")
        .remediation("Debian/Ubuntu: `apt-get install unattended-upgrades` and `dpkg-reconfigure -plow unattended-upgrades` (sets APT::Periodic::Unattended-Upgrade \"1\"; keep the security origin in 50unattended-upgrades). RPM: `dnf install dnf-automatic` and `systemctl enable --now dnf-automatic-install.timer`.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::Status;
    use crate::testutil::{eval, offline, root_with};

    const STATUS: &str =
        "Package: unattended-upgrades\nStatus: install ok installed\nArchitecture: all\nVersion: 2.9.1+nmu3\n";
    const UU: &str = "// comment\nUnattended-Upgrade::Origins-Pattern {\n  \"origin=Debian,codename=${distro_codename},label=Debian-Security\";\n};\n/* block\n */\n";

    #[test]
    fn apt_conf_flat_and_nested() {
        let mut c = AptConf::default();
        c.apply(
            "/a",
            "APT { Periodic { Unattended-Upgrade \"1\"; }; };\n# x\nAPT::Periodic::Update-Package-Lists \"1\";\n",
        );
        assert_eq!(c.get("apt::periodic::unattended-upgrade").unwrap().0, ["1"]);
        c.apply("/b", "APT::Periodic::Unattended-Upgrade \"0\";");
        assert_eq!(c.get("APT::Periodic::Unattended-Upgrade").unwrap(), &(vec!["0".to_string()], "/b:1".to_string()));
    }

    #[test]
    fn unattended_upgrades_paths() {
        let enabled = "APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\";\n";
        let d = root_with(&[
            ("/var/lib/dpkg/status", STATUS),
            ("/etc/apt/apt.conf.d/20auto-upgrades", enabled),
            ("/etc/apt/apt.conf.d/50unattended-upgrades", UU),
        ]);
        assert_eq!(eval("patch.automatic_updates", &offline(d.path())).status, Status::Pass);
        let d = root_with(&[
            ("/var/lib/dpkg/status", STATUS),
            ("/etc/apt/apt.conf.d/20auto-upgrades", enabled),
            (
                "/etc/apt/apt.conf.d/50unattended-upgrades",
                "Unattended-Upgrade::Origins-Pattern { \"o=Debian,a=stable\"; };",
            ),
        ]);
        let o = eval("patch.automatic_updates", &offline(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("security"));
        let d = root_with(&[
            ("/var/lib/dpkg/status", STATUS),
            ("/etc/apt/apt.conf.d/20auto-upgrades", "APT::Periodic::Unattended-Upgrade \"0\";"),
            ("/etc/apt/apt.conf.d/50unattended-upgrades", UU),
        ]);
        assert_eq!(eval("patch.automatic_updates", &offline(d.path())).status, Status::Fail);
        let d = root_with(&[("/var/lib/dpkg/status", "Package: dpkg\nStatus: install ok installed\nVersion: 1\n")]);
        assert_eq!(eval("patch.automatic_updates", &offline(d.path())).status, Status::Fail);
        let d = root_with(&[("/etc/os-release", "ID=debian\n")]);
        assert_eq!(eval("patch.automatic_updates", &offline(d.path())).status, Status::Error);
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            AptConf::default().apply("/f", &s);
        }
    }
}
