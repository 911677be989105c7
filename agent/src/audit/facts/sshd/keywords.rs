//! What sshd knows about its keywords: deprecated spellings, which keywords
//! accumulate and which are refused inside `Match`, the values sshd accepts
//! for the keywords we judge, and how time values and algorithm lists read.

use super::matching::wildcard_match;

/// Keywords whose values accumulate over lines instead of first-wins.
pub(super) const ACCUMULATING: [&str; 10] = [
    "hostkey",
    "hostcertificate",
    "listenaddress",
    "port",
    "acceptenv",
    "allowusers",
    "denyusers",
    "allowgroups",
    "denygroups",
    "subsystem",
];

/// Keywords sshd refuses inside a `Match` block (only the ones relevant to
/// an audit; the full list is in sshd_config(5)).
pub(super) const GLOBAL_ONLY: [&str; 17] = [
    "addressfamily",
    "ciphers",
    "hostkey",
    "hostkeyalgorithms",
    "kexalgorithms",
    "listenaddress",
    "logingracetime",
    "macs",
    "maxstartups",
    "permituserenvironment",
    "pidfile",
    "port",
    "strictmodes",
    "subsystem",
    "syslogfacility",
    "usedns",
    "usepam",
];

/// Deprecated spellings that share an option with a current keyword, so
/// "first value wins" applies across both.
pub(super) fn canonical_keyword(keyword: &str) -> String {
    let k = keyword.to_ascii_lowercase();
    match k.as_str() {
        "challengeresponseauthentication" => "kbdinteractiveauthentication".to_string(),
        "dsaauthentication" => "pubkeyauthentication".to_string(),
        "pubkeyacceptedkeytypes" => "pubkeyacceptedalgorithms".to_string(),
        "hostbasedacceptedkeytypes" => "hostbasedacceptedalgorithms".to_string(),
        _ => k,
    }
}

/// Parse an sshd time value (`120`, `2m`, `1m30s`, `1h`) into seconds, as
/// OpenSSH's convtime: a sequence of numbers with optional s/m/h/d/w
/// qualifiers (case-insensitive), at most INT_MAX seconds.
pub fn parse_time(s: &str) -> Option<u64> {
    const INT_MAX: u64 = i32::MAX as u64;
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let (num, after) = rest.split_at(digits);
        let n: u64 = num.parse().ok().filter(|n| *n <= INT_MAX)?;
        let mut it = after.chars();
        let (mult, next) = match it.next() {
            None => (1, after),
            Some('s' | 'S') => (1, it.as_str()),
            Some('m' | 'M') => (60, it.as_str()),
            Some('h' | 'H') => (3600, it.as_str()),
            Some('d' | 'D') => (86400, it.as_str()),
            Some('w' | 'W') => (604800, it.as_str()),
            Some(_) => return None,
        };
        let secs = n.checked_mul(mult).filter(|v| *v <= INT_MAX)?;
        total = total.checked_add(secs).filter(|v| *v <= INT_MAX)?;
        rest = next;
    }
    Some(total)
}

/// Keywords that take exactly one argument and whose values we judge: sshd
/// refuses extra arguments and invalid values for them, so do we.
pub(super) fn validate(keyword: &str, args: &[String]) -> Result<(), String> {
    const YES_NO: [&str; 2] = ["yes", "no"];
    let allowed: &[&str] = match keyword {
        "passwordauthentication"
        | "permitemptypasswords"
        | "kbdinteractiveauthentication"
        | "x11forwarding"
        | "hostbasedauthentication"
        | "disableforwarding"
        | "pubkeyauthentication"
        | "usepam" => &YES_NO,
        "permitrootlogin" => &["yes", "prohibit-password", "without-password", "forced-commands-only", "no"],
        "allowtcpforwarding" => &["yes", "all", "no", "local", "remote"],
        "ignorerhosts" => &["yes", "no", "shosts-only"],
        "loglevel" => &["quiet", "fatal", "error", "info", "verbose", "debug", "debug1", "debug2", "debug3"],
        "maxauthtries"
        | "clientalivecountmax"
        | "logingracetime"
        | "clientaliveinterval"
        | "permituserenvironment"
        | "ciphers"
        | "macs"
        | "kexalgorithms"
        | "hostkey" => &[],
        _ => return Ok(()),
    };
    let [value] = args else {
        return Err(format!("{keyword} takes exactly one argument, found {}", args.len()));
    };
    let ok = match keyword {
        "maxauthtries" | "clientalivecountmax" => value.parse::<i32>().is_ok(),
        "logingracetime" | "clientaliveinterval" => parse_time(value).is_some(),
        "ciphers" | "macs" | "kexalgorithms" => {
            let list = value.strip_prefix(['+', '-', '^']).unwrap_or(value);
            !list.is_empty() && list.split(',').all(|n| !n.is_empty())
        }
        "permituserenvironment" | "hostkey" => true,
        _ => allowed.iter().any(|a| a.eq_ignore_ascii_case(value)),
    };
    if ok { Ok(()) } else { Err(format!("unsupported value \"{value}\" for {keyword}")) }
}

/// Apply a `Ciphers`/`MACs`/`KexAlgorithms` value to its default list like
/// OpenSSH's kex_assemble_names: `+` appends, `-` removes (patterns allowed),
/// `^` prepends, anything else replaces.
pub fn assemble_algorithms(value: &str, default: &[&str]) -> Vec<String> {
    let split = |s: &str| -> Vec<String> {
        s.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect()
    };
    let defaults: Vec<String> = default.iter().map(|s| s.to_string()).collect();
    let list = if let Some(rest) = value.strip_prefix('+') {
        [defaults, split(rest)].concat()
    } else if let Some(rest) = value.strip_prefix('-') {
        let remove = split(rest);
        defaults.into_iter().filter(|d| !remove.iter().any(|p| wildcard_match(d, p))).collect()
    } else if let Some(rest) = value.strip_prefix('^') {
        [split(rest), defaults].concat()
    } else {
        split(value)
    };
    let mut out: Vec<String> = Vec::new();
    for n in list {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_values() {
        assert_eq!(parse_time("120"), Some(120));
        assert_eq!(parse_time("1m30s"), Some(90));
        assert_eq!(parse_time("2M"), Some(120));
        assert_eq!(parse_time("1h"), Some(3600));
        assert_eq!(parse_time("1w1d"), Some(691200));
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time(""), None);
        assert_eq!(parse_time("1x"), None);
        assert_eq!(parse_time("m"), None);
        assert_eq!(parse_time("-5"), None);
        assert_eq!(parse_time("99999999999"), None);
        assert_eq!(parse_time("5000w"), None);
    }

    #[test]
    fn algorithm_lists() {
        let d = ["a", "b-cbc", "c"];
        assert_eq!(assemble_algorithms("+x,y", &d), ["a", "b-cbc", "c", "x", "y"]);
        assert_eq!(assemble_algorithms("-*-cbc", &d), ["a", "c"]);
        assert_eq!(assemble_algorithms("^x,a", &d), ["x", "a", "b-cbc", "c"]);
        assert_eq!(assemble_algorithms("x,y", &d), ["x", "y"]);
    }
}
