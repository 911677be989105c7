//! `Match` criteria: OpenSSH's pattern lists (match.c) and address lists
//! (addrmatch.c), and the evaluation of a `Match` line for the audited
//! connection (servconf.c match_cfg_line), including `Match Group` through
//! `/etc/passwd` and `/etc/group`.

use std::net::IpAddr;

use ipnet::IpNet;

use super::connection::Connection;
use crate::audit::facts::FactError;
use crate::audit::host::Host;
use crate::audit::model::Evidence;

/// Cap on `/etc/passwd` and `/etc/group` (read only for `Match Group`).
const ACCOUNT_FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// OpenSSH match_pattern: `*` any sequence, `?` any one character.
pub fn wildcard_match(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut si, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&pc) if pc == '?' || Some(&pc) == s.get(si) => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// OpenSSH match_pattern_list: 1 when a positive pattern matches, -1 when a
/// negated (`!`) one does (negation wins), 0 otherwise.
pub fn match_pattern_list(s: &str, list: &str, lowercase: bool) -> i32 {
    let mut positive = 0;
    for sub in list.split(',') {
        let (negated, pat) = match sub.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, sub),
        };
        let pat = if lowercase { pat.to_ascii_lowercase() } else { pat.to_string() };
        if wildcard_match(s, &pat) {
            if negated {
                return -1;
            }
            positive = 1;
        }
    }
    positive
}

/// OpenSSH addr_match_list: entries are CIDR blocks or wildcard patterns,
/// `!` negates. `Err` for a CIDR block with host bits set, which sshd
/// rejects ("inconsistent mask length").
pub fn addr_match_list(addr: &str, list: &str) -> Result<i32, String> {
    let ip: Option<IpAddr> = addr.parse().ok();
    let mut result = 0;
    for entry in list.split(',') {
        let (negated, pat) = match entry.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, entry),
        };
        let net: Option<IpNet> =
            if pat.contains('/') { pat.parse::<IpNet>().ok() } else { pat.parse::<IpAddr>().ok().map(IpNet::from) };
        let hit = match net {
            Some(n) => {
                if n.trunc() != n {
                    return Err(format!("inconsistent mask length for network \"{pat}\""));
                }
                ip.is_some_and(|ip| n.contains(&ip))
            }
            None => wildcard_match(addr, pat),
        };
        if hit {
            if negated {
                return Ok(-1);
            }
            result = 1;
        }
    }
    Ok(result)
}

/// Evaluates `Match` lines for one connection. The groups of its user are
/// read once, at the first `Match Group`.
pub(super) struct Matcher<'a> {
    host: &'a Host,
    conn: &'a Connection,
    root_groups: Option<Result<Vec<String>, String>>,
}

impl<'a> Matcher<'a> {
    pub(super) fn new(host: &'a Host, conn: &'a Connection) -> Self {
        Matcher { host, conn, root_groups: None }
    }

    /// Evaluate a `Match` line: (active in the global pass, matches the
    /// audited connection). `Err` for lines sshd rejects.
    pub(super) fn match_line(
        &mut self,
        args: &[String],
        source: &str,
        notes: &mut Vec<Evidence>,
    ) -> Result<(bool, bool), FactError> {
        let bad = |why: String| FactError::new(format!("{source}: Match: {why} (sshd refuses this configuration)"));
        if args.is_empty() {
            return Err(bad("one or more criteria required".into()));
        }
        let mut result = true;
        let mut it = args.iter();
        let mut count = 0;
        while let Some(attr) = it.next() {
            count += 1;
            // Newer OpenSSH also accepts `criterion=pattern`.
            let (attr, inline) = match attr.split_once('=') {
                Some((a, v)) => (a, Some(v)),
                None => (attr.as_str(), None),
            };
            let attr_lc = attr.to_ascii_lowercase();
            if attr_lc == "all" {
                if count > 1 || inline.is_some() || it.next().is_some() {
                    return Err(bad("'all' cannot be combined with other criteria".into()));
                }
                return Ok((true, true));
            }
            let Some(arg) = inline.or_else(|| it.next().map(String::as_str)) else {
                return Err(bad(format!("missing argument for criterion {attr}")));
            };
            let c = self.conn;
            let hit = match attr_lc.as_str() {
                "user" => match_pattern_list(c.user, arg, false) == 1,
                "group" => self.match_group(arg, source, notes),
                "host" => match_pattern_list(&c.host.to_ascii_lowercase(), arg, true) == 1,
                "address" => addr_match_list(c.addr, arg).map_err(bad)? == 1,
                "localaddress" => addr_match_list(c.laddr, arg).map_err(bad)? == 1,
                "localport" => {
                    let port: u16 =
                        arg.parse().ok().filter(|p| *p > 0).ok_or_else(|| bad(format!("invalid LocalPort {arg}")))?;
                    port == c.lport
                }
                // The audited user exists.
                "invalid-user" => false,
                // The audited connection has no routing domain, as with
                // `sshd -T -C` without rdomain=: the criterion does not match.
                "rdomain" => false,
                _ => return Err(bad(format!("unsupported criterion {attr}"))),
            };
            result &= hit;
        }
        Ok((false, result))
    }

    /// `Match Group`: the groups of the audited user from /etc/passwd and
    /// /etc/group, as sshd's ga_match_pattern_list (a negated hit wins).
    fn match_group(&mut self, list: &str, source: &str, notes: &mut Vec<Evidence>) -> bool {
        if self.root_groups.is_none() {
            self.root_groups = Some(user_groups(self.host, self.conn.user));
        }
        match &self.root_groups {
            Some(Ok(groups)) => {
                let mut found = false;
                for g in groups {
                    match match_pattern_list(g, list, false) {
                        -1 => return false,
                        1 => found = true,
                        _ => {}
                    }
                }
                found
            }
            Some(Err(why)) => {
                let why = why.clone();
                notes.push(Evidence::new(
                    source,
                    format!(
                        "Match Group {list} treated as not matching: the groups of {} are unknown ({why})",
                        self.conn.user
                    ),
                ));
                false
            }
            None => false,
        }
    }
}

/// The group names of `user`: its primary group and every group listing it.
fn user_groups(host: &Host, user: &str) -> Result<Vec<String>, String> {
    let passwd = host.read_text_limited("/etc/passwd", ACCOUNT_FILE_LIMIT).map_err(|e| e.to_string())?;
    let gid = passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(user)).then(|| f.nth(2)).flatten()
        })
        .next()
        .ok_or_else(|| format!("/etc/passwd: no entry for {user}"))?
        .to_string();
    let group = host.read_text_limited("/etc/group", ACCOUNT_FILE_LIMIT).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        let (Some(name), Some(g), Some(members)) = (f.first(), f.get(2), f.get(3)) else { continue };
        if *g == gid || members.split(',').any(|m| m.trim() == user) {
            out.push((*name).to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::facts::sshd::SSHD_CONFIG;
    use crate::audit::facts::sshd::test_support::{parse, src, val};

    #[test]
    fn match_blocks_for_the_audited_connection() {
        let p = parse(&[(
            SSHD_CONFIG,
            "PasswordAuthentication no\nX11Forwarding no\nMaxAuthTries 3\nPermitRootLogin no\n\
             Match Address 10.0.0.0/8,192.168.0.0/16\n  PasswordAuthentication yes\n\
             Match User alice\n  X11Forwarding yes\n\
             Match User root Address 203.0.113.0/24\n  MaxAuthTries 10\n  MaxAuthTries 11\n\
             Match User !root,*\n  PermitRootLogin yes\n\
             Match Host *.invalid LocalPort 22\n  AllowTcpForwarding no\n",
        )])
        .unwrap();
        assert_eq!(val(&p, "passwordauthentication").as_deref(), Some("no"));
        assert_eq!(val(&p, "x11forwarding").as_deref(), Some("no"));
        // A matching block overrides the global value, first value wins in it.
        assert_eq!(val(&p, "maxauthtries").as_deref(), Some("10"));
        assert_eq!(src(&p, "maxauthtries").as_deref(), Some("/etc/ssh/sshd_config:10"));
        // Negation wins over the wildcard.
        assert_eq!(val(&p, "permitrootlogin").as_deref(), Some("no"));
        assert_eq!(val(&p, "allowtcpforwarding").as_deref(), Some("no"));
    }

    #[test]
    fn match_criterion_equals_form_and_invalid_user() {
        let p =
            parse(&[(SSHD_CONFIG, "Match User=root\nMaxAuthTries 2\nMatch Invalid-User *\nMaxAuthTries 9\n")]).unwrap();
        assert_eq!(val(&p, "maxauthtries").as_deref(), Some("2"));
        assert!(parse(&[(SSHD_CONFIG, "Match All=x\n")]).is_err());
        assert!(parse(&[(SSHD_CONFIG, "Match User\n")]).is_err());
        assert!(parse(&[(SSHD_CONFIG, "Match LocalPort 0\n")]).is_err());
    }

    #[test]
    fn match_group_uses_account_files_or_notes() {
        let files = [
            (SSHD_CONFIG, "Match Group wheel\nX11Forwarding yes\nMatch Group sudo,!adm\nMaxAuthTries 9\n"),
            ("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
            ("/etc/group", "root:x:0:\nwheel:x:10:alice,root\nadm:x:4:root\nsudo:x:27:root\n"),
        ];
        let p = parse(&files).unwrap();
        assert_eq!(val(&p, "x11forwarding").as_deref(), Some("yes"));
        assert_eq!(val(&p, "maxauthtries"), None, "negated adm membership wins");
        let p = parse(&files[..1]).unwrap();
        assert_eq!(val(&p, "x11forwarding"), None);
        assert!(p.notes.iter().any(|n| n.detail.contains("treated as not matching")));
    }

    #[test]
    fn patterns_and_addresses() {
        assert!(wildcard_match("root", "r*t"));
        assert!(wildcard_match("root", "*"));
        assert!(wildcard_match("root", "r??t"));
        assert!(!wildcard_match("root", "r?t"));
        assert!(wildcard_match("aes128-cbc", "*-cbc"));
        assert!(!wildcard_match("aes128-cbcx", "*-cbc"));
        assert_eq!(match_pattern_list("root", "alice,ro*", false), 1);
        assert_eq!(match_pattern_list("root", "*,!root", false), -1);
        assert_eq!(match_pattern_list("root", "!alice", false), 0);
        assert_eq!(match_pattern_list("kosmos.invalid", "*.INVALID", true), 1);
        assert_eq!(addr_match_list("203.0.113.10", "0.0.0.0/0"), Ok(1));
        assert_eq!(addr_match_list("203.0.113.10", "10.0.0.0/8,203.0.113.*"), Ok(1));
        assert_eq!(addr_match_list("203.0.113.10", "*,!203.0.113.0/24"), Ok(-1));
        assert_eq!(addr_match_list("203.0.113.10", "::/0"), Ok(0));
        assert_eq!(addr_match_list("203.0.113.10", "203.0.113.10"), Ok(1));
        assert!(addr_match_list("203.0.113.10", "203.0.113.10/8").is_err());
    }

    proptest::proptest! {
        #[test]
        fn wildcard_star_matches_everything(s in "\\PC{0,40}") {
            proptest::prop_assert!(wildcard_match(&s, "*"));
            proptest::prop_assert!(wildcard_match(&s, &s));
        }
    }
}
