//! `iptables-save` / `ip6tables-save` format (also `/etc/iptables/rules.v4`)
//! to the model.
//!
//! Built-in chains get the hook and priority the kernel gives them (raw
//! -300, mangle -150, filter 0, security 50; nat chains are typed `nat` and
//! not evaluated as filters). Matches and targets we do not model become
//! unknown statements carrying the original words.

use std::collections::BTreeMap;

use super::model::{
    Backend, Chain, Elem, Hook, Key, L3, NamedSet, Proto, Rhs, Rule, Ruleset, Stmt, Table, TableFamily, Verdict,
    parse_cidr,
};

const MAX_LINES: usize = 200_000;

/// Split an iptables-save line into words, honouring double quotes and
/// backslash escapes as iptables-save writes them.
pub fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => return Err("line ends with a backslash".into()),
                }
            }
            '"' => {
                in_word = true;
                quoted = !quoted;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if quoted {
        return Err("unbalanced double quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn builtin_hook(table: &str, chain: &str) -> Option<(&'static str, &'static str, i64)> {
    Some(match (table, chain) {
        ("raw", "PREROUTING") => ("prerouting", "filter", -300),
        ("mangle", "PREROUTING") => ("prerouting", "filter", -150),
        ("mangle", "INPUT") => ("input", "filter", -150),
        ("nat", "PREROUTING") => ("prerouting", "nat", -100),
        ("nat", "INPUT") => ("input", "nat", 100),
        ("filter", "INPUT") => ("input", "filter", 0),
        ("security", "INPUT") => ("input", "filter", 50),
        (_, "FORWARD") => ("forward", "filter", 0),
        (_, "OUTPUT") => ("output", "filter", 0),
        (_, "POSTROUTING") => ("postrouting", "filter", 0),
        _ => return None,
    })
}

/// Parse iptables-save output. `source` names the file or command in rule
/// locations (`source:line`).
pub fn parse(text: &str, l3: L3, backend: Backend, source: &str) -> Result<Ruleset, String> {
    let mut tables: Vec<Table> = Vec::new();
    let mut current: Option<Table> = None;
    for (i, raw) in text.lines().enumerate() {
        if i >= MAX_LINES {
            return Err(format!("{source}: more than {MAX_LINES} lines"));
        }
        let lineno = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{source}:{lineno}");
        if let Some(name) = line.strip_prefix('*') {
            if current.is_some() {
                return Err(format!("{}: table {name} starts before COMMIT", at()));
            }
            current = Some(Table {
                family: if l3 == L3::Ipv4 { TableFamily::Ip } else { TableFamily::Ip6 },
                name: name.trim().to_string(),
                backend: backend.clone(),
                chains: Vec::new(),
                sets: BTreeMap::new(),
            });
            continue;
        }
        if line == "COMMIT" {
            match current.take() {
                Some(t) => tables.push(t),
                None => return Err(format!("{}: COMMIT outside a table", at())),
            }
            continue;
        }
        let Some(table) = current.as_mut() else {
            return Err(format!("{}: {:?} outside a table", at(), truncate(line)));
        };
        if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let (Some(name), Some(policy)) = (parts.next(), parts.next()) else {
                return Err(format!("{}: malformed chain declaration", at()));
            };
            let hook = match builtin_hook(&table.name, name) {
                Some((hook, kind, priority)) => {
                    let accept = match policy {
                        "ACCEPT" => true,
                        "DROP" => false,
                        other => return Err(format!("{}: unknown policy {other}", at())),
                    };
                    Some(Hook { hook: hook.into(), kind: kind.into(), priority, accept })
                }
                None => None,
            };
            table.chains.push(Chain { name: name.to_string(), hook, rules: Vec::new() });
            continue;
        }
        let words = tokenize(line).map_err(|e| format!("{}: {e}", at()))?;
        let mut words: Vec<String> = words;
        // `iptables-save -c` prefixes rules with [packets:bytes].
        if words.first().is_some_and(|w| w.starts_with('[')) {
            words.remove(0);
        }
        let (Some(op), Some(chain)) = (words.first(), words.get(1)) else {
            return Err(format!("{}: {:?} is not a rule", at(), truncate(line)));
        };
        if op != "-A" {
            return Err(format!("{}: unexpected {op:?}", at()));
        }
        let chain = chain.clone();
        let stmts = parse_rule_words(words.get(2..).unwrap_or_default(), l3);
        let rule = Rule { stmts, text: line.to_string(), location: at() };
        match table.chains.iter_mut().find(|c| c.name == chain) {
            Some(c) => c.rules.push(rule),
            None => return Err(format!("{}: rule for undeclared chain {chain}", at())),
        }
    }
    if let Some(t) = current {
        return Err(format!("{source}: table {} has no COMMIT (truncated?)", t.name));
    }
    Ok(Ruleset { tables })
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn ports(v: &str) -> Option<Vec<Elem>> {
    v.split(',')
        .map(|p| {
            let (a, b) = p.split_once(':').unwrap_or((p, p));
            let lo: u64 = if a.is_empty() { 0 } else { port_number(a)? };
            let hi: u64 = if b.is_empty() { 65535 } else { port_number(b)? };
            (lo <= hi).then_some(Elem::Int(lo, hi))
        })
        .collect()
}

fn port_number(s: &str) -> Option<u64> {
    match s {
        "ssh" => Some(22),
        "http" => Some(80),
        "https" => Some(443),
        _ => s.parse::<u16>().ok().map(u64::from),
    }
}

fn proto_elem(v: &str) -> Option<Elem> {
    let n = match v.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "esp" => 50,
        "gre" => 47,
        other => other.parse::<u8>().ok()?.into(),
    };
    Some(Elem::Int(n, n))
}

fn addrs(v: &str, l3: L3) -> Option<Vec<Elem>> {
    v.split(',')
        .map(|a| {
            let (lo, hi) = parse_cidr(a)?;
            (L3::of(&lo) == l3).then_some(Elem::Addr(lo, hi))
        })
        .collect()
}

fn states(v: &str) -> Vec<Elem> {
    v.split(',').map(|s| Elem::Name(s.to_ascii_lowercase())).collect()
}

/// Words of one rule after `-A CHAIN`.
fn parse_rule_words(words: &[String], l3: L3) -> Vec<Stmt> {
    let mut stmts = Vec::new();
    let mut proto: Option<Proto> = None;
    let mut module: Option<String> = None;
    let mut negate = false;
    let mut i = 0usize;
    let arg = |i: usize| words.get(i + 1).map(String::as_str);
    let unknown = |what: &str| Stmt::Unknown(what.to_string());
    while let Some(w) = words.get(i) {
        let w = w.as_str();
        if w == "!" {
            negate = true;
            i += 1;
            continue;
        }
        let neg = std::mem::take(&mut negate);
        let matcher = |key: Key, elems: Option<Vec<Elem>>, what: &str| match elems {
            Some(e) => Stmt::Match { key, negate: neg, rhs: Rhs::Elems(e) },
            None => Stmt::Unknown(format!("{what} value not understood")),
        };
        let mut consumed = 2usize;
        match w {
            "-s" | "--source" => stmts.push(matcher(Key::Saddr(l3), arg(i).and_then(|v| addrs(v, l3)), w)),
            "-d" | "--destination" => stmts.push(matcher(Key::Daddr(l3), arg(i).and_then(|v| addrs(v, l3)), w)),
            "-p" | "--protocol" => {
                let v = arg(i).unwrap_or("");
                proto = match v {
                    "tcp" | "6" if !neg => Some(Proto::Tcp),
                    "udp" | "17" if !neg => Some(Proto::Udp),
                    _ => None,
                };
                if v != "all" && v != "0" {
                    stmts.push(matcher(Key::L4Proto(None), proto_elem(v).map(|e| vec![e]), w));
                }
            }
            "-i" | "--in-interface" => {
                stmts.push(matcher(Key::Iifname, arg(i).map(|v| vec![Elem::Name(v.to_string())]), w));
            }
            "-m" | "--match" => module = arg(i).map(str::to_string),
            "-j" | "--jump" | "-g" | "--goto" => {
                let target = arg(i).unwrap_or("");
                let rest = words.get(i + 2..).unwrap_or_default();
                stmts.push(target_stmt(target, w.starts_with("-g") || w == "--goto", rest));
                return stmts;
            }
            "-c" | "--set-counters" => consumed = 3,
            "--dport" | "--destination-port" => {
                stmts.push(matcher(Key::Dport(proto), arg(i).and_then(ports), w));
            }
            "--sport" | "--source-port" => stmts.push(matcher(Key::Sport(proto), arg(i).and_then(ports), w)),
            "--dports" | "--destination-ports" => stmts.push(matcher(Key::Dport(proto), arg(i).and_then(ports), w)),
            "--sports" | "--source-ports" => stmts.push(matcher(Key::Sport(proto), arg(i).and_then(ports), w)),
            "--syn" => {
                consumed = 1;
                stmts.push(Stmt::Match {
                    key: Key::TcpFlags { mask: 0x17 },
                    negate: neg,
                    rhs: Rhs::Elems(vec![Elem::Int(2, 2)]),
                });
            }
            "--tcp-flags" => {
                consumed = 3;
                let flags = |v: Option<&str>| -> Option<u64> {
                    v?.split(',').try_fold(0u64, |acc, f| {
                        let b = match f {
                            "FIN" => 0x01,
                            "SYN" => 0x02,
                            "RST" => 0x04,
                            "PSH" => 0x08,
                            "ACK" => 0x10,
                            "URG" => 0x20,
                            "ALL" => 0x3f,
                            "NONE" => 0,
                            _ => return None,
                        };
                        Some(acc | b)
                    })
                };
                match (flags(arg(i)), flags(words.get(i + 2).map(String::as_str))) {
                    (Some(mask), Some(comp)) => stmts.push(Stmt::Match {
                        key: Key::TcpFlags { mask },
                        negate: neg,
                        rhs: Rhs::Elems(vec![Elem::Int(comp, comp)]),
                    }),
                    _ => stmts.push(unknown("--tcp-flags value not understood")),
                }
            }
            "--ctstate" | "--state" => stmts.push(matcher(Key::CtState, arg(i).map(states), w)),
            "--comment" => stmts.push(Stmt::Nop),
            "--icmp-type" | "--icmpv6-type" => {
                let n = if w == "--icmp-type" { 1 } else { 58 };
                stmts.push(Stmt::Match {
                    key: Key::L4Proto(None),
                    negate: false,
                    rhs: Rhs::Elems(vec![Elem::Int(n, n)]),
                });
            }
            "--pkt-type" => stmts.push(matcher(Key::Pkttype, arg(i).map(|v| vec![Elem::Name(v.to_string())]), w)),
            "--src-range" => {
                let r = arg(i).and_then(|v| v.split_once('-')).and_then(|(a, b)| {
                    let (lo, _) = parse_cidr(a)?;
                    let (_, hi) = parse_cidr(b)?;
                    (L3::of(&lo) == l3 && L3::of(&hi) == l3).then_some(vec![Elem::Addr(lo, hi)])
                });
                stmts.push(matcher(Key::Saddr(l3), r, w));
            }
            "--match-set" => {
                consumed = 3;
                let name = arg(i).unwrap_or("");
                let dir = words.get(i + 2).map(String::as_str).unwrap_or("");
                if dir == "src" {
                    stmts.push(Stmt::Match {
                        key: Key::Saddr(l3),
                        negate: neg,
                        rhs: Rhs::Set(format!("ipset:{name}")),
                    });
                } else {
                    stmts.push(unknown(&format!("-m set --match-set {name} {dir}")));
                }
            }
            "--limit" | "--hashlimit-upto" | "--connlimit-upto" => {
                stmts.push(Stmt::RateLimit(format!("{w} {}", arg(i).unwrap_or(""))))
            }
            "--hashlimit-above" | "--connlimit-above" => stmts.push(if neg {
                Stmt::RateLimit(format!("! {w}"))
            } else {
                Stmt::LimitCheck(format!("{w} {}", arg(i).unwrap_or("")))
            }),
            "--rcheck" | "--update" => {
                consumed = 1;
                stmts.push(if neg { unknown(&format!("! {w}")) } else { Stmt::LimitCheck(format!("recent {w}")) });
            }
            "--set" | "--remove" | "--rsource" | "--rdest" | "--reap" | "--rttl" => consumed = 1,
            // Options of modules handled above that do not change the verdict
            // for a first packet.
            "--limit-burst"
            | "--seconds"
            | "--hitcount"
            | "--name"
            | "--mask"
            | "--hashlimit-burst"
            | "--hashlimit-mode"
            | "--hashlimit-name"
            | "--hashlimit-htable-expire"
            | "--hashlimit-srcmask"
            | "--connlimit-mask"
            | "--connlimit-saddr" => {}
            _ => {
                let m = module.as_deref().unwrap_or("-");
                stmts.push(unknown(&format!("-m {m} {w} {}", arg(i).unwrap_or(""))));
            }
        }
        i += consumed;
    }
    // A rule without -j: matching packets just continue.
    stmts.push(Stmt::Verdict(Verdict::Continue));
    stmts
}

fn target_stmt(target: &str, goto: bool, rest: &[String]) -> Stmt {
    let v = match target {
        "ACCEPT" => Verdict::Accept,
        "DROP" => Verdict::Drop,
        "REJECT" => Verdict::Reject,
        "RETURN" => Verdict::Return,
        "NOTRACK" => return Stmt::NoTrack,
        "CT" if rest.iter().any(|w| w == "--notrack") => return Stmt::NoTrack,
        "LOG" | "NFLOG" | "ULOG" | "MARK" | "CONNMARK" | "TCPMSS" | "CLASSIFY" | "DSCP" | "TOS" | "TTL" | "HL"
        | "AUDIT" | "CHECKSUM" | "TRACE" | "SECMARK" | "CONNSECMARK" | "CT" => Verdict::Continue,
        "" => Verdict::Unknown("empty target".into()),
        // Extension targets we do not model (DNAT, QUEUE, TPROXY...) are
        // taken as chain names: the walk then reports the missing chain.
        t if goto => Verdict::Goto(t.to_string()),
        t => Verdict::Jump(t.to_string()),
    };
    Stmt::Verdict(v)
}

/// ipsets are kernel objects outside iptables-save: their contents are
/// unknown to us. Register every referenced ipset as such, so the message
/// says so.
pub fn mark_ipsets(rs: &mut Ruleset) {
    for t in &mut rs.tables {
        let mut names = Vec::new();
        for c in &t.chains {
            for r in &c.rules {
                for s in &r.stmts {
                    if let Stmt::Match { rhs: Rhs::Set(n), .. } = s {
                        names.push(n.clone());
                    }
                }
            }
        }
        for n in names {
            t.sets.entry(n).or_insert(NamedSet {
                elems: None,
                unknown: Some("ipset contents are not part of iptables-save output".into()),
            });
        }
    }
}

/// Parse and register ipsets in one go.
pub fn parse_save(text: &str, l3: L3, backend: Backend, source: &str) -> Result<Ruleset, String> {
    let mut rs = parse(text, l3, backend, source)?;
    mark_ipsets(&mut rs);
    Ok(rs)
}

/// True when a parsed ruleset does something: any rule, or a drop policy.
pub fn has_effect(rs: &Ruleset) -> bool {
    rs.tables.iter().any(|t| t.rule_count() > 0 || t.chains.iter().any(|c| c.hook.as_ref().is_some_and(|h| !h.accept)))
}

#[cfg(test)]
mod tests {
    use super::super::model::{Decision, Packet};
    use super::*;

    const SAVE: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables) on Sun Nov 22 10:59:03 2026
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:SSH - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 10.4.0.0/16 -p tcp -m tcp --dport 10250 -m comment --comment "kubelet \"from\" cp" -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,443,1000:2000 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -m recent --update --seconds 60 --hitcount 4 --name ssh --mask 255.255.255.255 --rsource -j DROP
-A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -j SSH
-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m tcp --dport 7 -j ACCEPT
-A INPUT -m addrtype --dst-type LOCAL -p udp --dport 53 -j ACCEPT
-A INPUT -p udp -m udp --dport 51820 -j ACCEPT
-A INPUT ! -s 1.2.3.4/32 -p tcp -m tcp --dport 5 -j REJECT --reject-with icmp-port-unreachable
-A INPUT -m set --match-set allowed src -p tcp --dport 6 -j ACCEPT
-A SSH -m limit --limit 3/min -j ACCEPT
-A SSH -j RETURN
COMMIT
"#;

    fn p(proto: Proto, src: &str, port: u16) -> Packet {
        Packet { proto, src: src.parse().unwrap(), dport: port, iif: Some("eth0".into()) }
    }

    #[test]
    fn tokenizer_handles_quotes() {
        assert_eq!(tokenize(r#"-A X -m comment --comment "a \"b\" c" -j Y"#).unwrap()[5], r#"a "b" c"#);
        assert_eq!(tokenize(r#"a "" b"#).unwrap(), ["a", "", "b"]);
        assert!(tokenize(r#"-m comment --comment "open"#).is_err());
        assert!(tokenize("x \\").is_err());
    }

    #[test]
    fn evaluates_save_output() {
        let rs = parse_save(SAVE, L3::Ipv4, Backend::IptablesNft, "iptables-save").unwrap();
        assert!(rs.evaluate(&p(Proto::Tcp, "10.4.1.1", 10250)).is_accept());
        assert!(rs.evaluate(&p(Proto::Tcp, "203.0.113.10", 10250)).is_drop());
        assert!(rs.evaluate(&p(Proto::Tcp, "203.0.113.10", 1500)).is_accept());
        let d = rs.evaluate(&p(Proto::Tcp, "203.0.113.10", 22));
        assert!(matches!(d, Decision::Accept { rate_limited: true, .. }), "{d:?}");
        assert!(rs.evaluate(&p(Proto::Tcp, "203.0.113.10", 7)).is_accept());
        assert!(rs.evaluate(&p(Proto::Udp, "203.0.113.10", 7)).is_drop());
        assert!(rs.evaluate(&p(Proto::Udp, "203.0.113.10", 51820)).is_accept());
        assert!(rs.evaluate(&p(Proto::Tcp, "203.0.113.10", 5)).is_drop());
        assert!(rs.evaluate(&p(Proto::Tcp, "1.2.3.4", 5)).is_drop());
        match rs.evaluate(&p(Proto::Udp, "203.0.113.10", 53)) {
            Decision::Unknown { rule, why } => {
                assert!(rule.contains("iptables-save:14") && why.contains("addrtype"), "{rule} {why}");
            }
            d => panic!("{d:?}"),
        }
        match rs.evaluate(&p(Proto::Tcp, "203.0.113.10", 6)) {
            Decision::Unknown { why, .. } => assert!(why.contains("ipset"), "{why}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(parse("*filter\n:INPUT DROP [0:0]\n", L3::Ipv4, Backend::IptablesLegacy, "f").is_err());
        assert!(parse("-A INPUT -j ACCEPT\n", L3::Ipv4, Backend::IptablesLegacy, "f").is_err());
        assert!(parse("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n", L3::Ipv4, Backend::IptablesLegacy, "f").is_err());
        assert!(parse("*filter\n:INPUT MAYBE [0:0]\nCOMMIT\n", L3::Ipv4, Backend::IptablesLegacy, "f").is_err());
        let e = parse(
            "*filter\n:INPUT DROP [0:0]\n-A INPUT -m comment --comment \"x -j ACCEPT\nCOMMIT\n",
            L3::Ipv4,
            Backend::IptablesLegacy,
            "f",
        )
        .unwrap_err();
        assert!(e.contains("f:3") && e.contains("quote"), "{e}");
        let empty = parse("", L3::Ipv6, Backend::IptablesLegacy, "f").unwrap();
        assert!(!has_effect(&empty));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_save(&s, L3::Ipv4, Backend::IptablesLegacy, "f");
        }

        #[test]
        fn rule_parser_never_panics(words in proptest::collection::vec("(-[a-z]|--[a-z-]{1,10}|!|[0-9a-z.:,/-]{0,12})", 0..12)) {
            let text = format!("*filter\n:INPUT DROP [0:0]\n-A INPUT {}\nCOMMIT\n", words.join(" "));
            if let Ok(rs) = parse_save(&text, L3::Ipv4, Backend::IptablesLegacy, "f") {
                let _ = rs.evaluate(&p(Proto::Tcp, "203.0.113.10", 22));
            }
        }
    }
}
