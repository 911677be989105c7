//! `nft -j list ruleset` (libnftables JSON, schema version 1) to the model.
//!
//! Objects and fields we do not need are ignored; an *expression* we do not
//! understand becomes [`Stmt::Unknown`] with its JSON text, so the evaluator
//! can name the rule instead of guessing.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use super::model::{
    Backend, Chain, Elem, Hook, Key, L3, NamedSet, Proto, Rhs, Rule, Ruleset, Stmt, Table, TableFamily, Verdict,
};

/// More rules than this is not a host firewall: refuse rather than spin.
const MAX_RULES: usize = 100_000;

/// Parse the JSON document. Errors name what is wrong.
pub fn parse(text: &str) -> Result<Ruleset, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let items =
        doc.get("nftables").and_then(Value::as_array).ok_or_else(|| "no top-level \"nftables\" array".to_string())?;
    let mut tables: Vec<Table> = Vec::new();
    let mut rules = 0usize;
    let find = |tables: &mut Vec<Table>, fam: &str, name: &str| -> Option<usize> {
        tables.iter().position(|t| t.family.as_str() == fam && t.name == name)
    };
    for item in items {
        let Some(obj) = item.as_object() else { return Err("an element of \"nftables\" is not an object".into()) };
        if let Some(t) = obj.get("table") {
            let (fam, name) = (str_field(t, "family")?, str_field(t, "name")?);
            if find(&mut tables, fam, name).is_none() {
                tables.push(Table {
                    family: TableFamily::parse(fam),
                    name: name.to_string(),
                    backend: Backend::Nftables,
                    chains: Vec::new(),
                    sets: BTreeMap::new(),
                });
            }
        } else if let Some(c) = obj.get("chain") {
            let idx = table_of(&mut tables, c)?;
            let hook = c.get("hook").and_then(Value::as_str).map(|h| Hook {
                hook: h.to_string(),
                kind: c.get("type").and_then(Value::as_str).unwrap_or("filter").to_string(),
                priority: c.get("prio").and_then(Value::as_i64).unwrap_or(0),
                accept: c.get("policy").and_then(Value::as_str) != Some("drop"),
            });
            if let Some(t) = tables.get_mut(idx) {
                t.chains.push(Chain { name: str_field(c, "name")?.to_string(), hook, rules: Vec::new() });
            }
        } else if let Some(s) = obj.get("set").or_else(|| obj.get("map")) {
            let idx = table_of(&mut tables, s)?;
            let name = str_field(s, "name")?.to_string();
            let set = parse_named_set(s);
            if let Some(t) = tables.get_mut(idx) {
                t.sets.insert(name, set);
            }
        } else if let Some(r) = obj.get("rule") {
            rules += 1;
            if rules > MAX_RULES {
                return Err(format!("more than {MAX_RULES} rules"));
            }
            let idx = table_of(&mut tables, r)?;
            let chain = str_field(r, "chain")?;
            let rule = parse_rule(r);
            let Some(t) = tables.get_mut(idx) else { continue };
            match t.chains.iter_mut().find(|c| c.name == chain) {
                Some(c) => c.rules.push(rule),
                None => return Err(format!("rule for undeclared chain {chain} in table {}", t.name)),
            }
        }
        // metainfo, flowtable, counter, quota, ct helper...: no effect on
        // what a rule matches, ignored.
    }
    Ok(Ruleset { tables })
}

fn str_field<'a>(v: &'a Value, f: &str) -> Result<&'a str, String> {
    v.get(f).and_then(Value::as_str).ok_or_else(|| format!("object without \"{f}\": {}", short(v)))
}

fn table_of(tables: &mut Vec<Table>, v: &Value) -> Result<usize, String> {
    let fam = str_field(v, "family")?;
    let name = str_field(v, "table")?;
    if let Some(i) = tables.iter().position(|t| t.family.as_str() == fam && t.name == name) {
        return Ok(i);
    }
    tables.push(Table {
        family: TableFamily::parse(fam),
        name: name.to_string(),
        backend: Backend::Nftables,
        chains: Vec::new(),
        sets: BTreeMap::new(),
    });
    Ok(tables.len() - 1)
}

/// A short rendering of a JSON value for messages.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 160 { s } else { format!("{}…", s.chars().take(160).collect::<String>()) }
}

fn parse_named_set(s: &Value) -> NamedSet {
    if s.get("map").is_some() || s.get("type").is_some_and(|t| t.is_array()) {
        return NamedSet { elems: None, unknown: Some("maps and concatenated set types are not evaluated".into()) };
    }
    let Some(elems) = s.get("elem") else { return NamedSet { elems: Some(Vec::new()), unknown: None } };
    let list: Vec<&Value> = match elems.as_array() {
        Some(a) => a.iter().collect(),
        None => vec![elems],
    };
    let mut out = Vec::new();
    for e in list {
        // Elements with options (timeout, counter) are wrapped in {"elem": {"val": ...}}.
        let e = e.get("elem").and_then(|x| x.get("val")).unwrap_or(e);
        match value_elem(e) {
            Ok(x) => out.extend(x),
            Err(why) => return NamedSet { elems: None, unknown: Some(why) },
        }
    }
    NamedSet { elems: Some(out), unknown: None }
}

/// Elements of a right-hand side value (literal, prefix, range, set).
fn value_elem(v: &Value) -> Result<Vec<Elem>, String> {
    match v {
        Value::Number(n) => n.as_u64().map(|x| vec![Elem::Int(x, x)]).ok_or_else(|| format!("number {n}")),
        Value::String(s) => Ok(vec![string_elem(s)]),
        Value::Array(a) => {
            let mut out = Vec::new();
            for x in a {
                out.extend(value_elem(x)?);
            }
            Ok(out)
        }
        Value::Object(o) => {
            if let Some(set) = o.get("set") {
                return value_elem(set);
            }
            if let Some(p) = o.get("prefix") {
                let addr: IpAddr = p
                    .get("addr")
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| format!("prefix {}", short(v)))?;
                let len = p.get("len").and_then(Value::as_u64).and_then(|l| u8::try_from(l).ok());
                return len
                    .and_then(|l| Elem::prefix(addr, l))
                    .map(|e| vec![e])
                    .ok_or_else(|| format!("prefix {}", short(v)));
            }
            if let Some(Value::Array(r)) = o.get("range")
                && let [lo, hi] = r.as_slice()
            {
                return match (value_elem(lo)?.as_slice(), value_elem(hi)?.as_slice()) {
                    ([Elem::Int(a, _)], [Elem::Int(b, _)]) => Ok(vec![Elem::Int(*a, *b)]),
                    ([Elem::Addr(a, _)], [Elem::Addr(_, b)]) if a.is_ipv4() == b.is_ipv4() => {
                        Ok(vec![Elem::Addr(*a, *b)])
                    }
                    _ => Err(format!("range {}", short(v))),
                };
            }
            Err(format!("value {}", short(v)))
        }
        _ => Err(format!("value {}", short(v))),
    }
}

/// Strings are addresses, well-known protocol or service names, or names
/// (interfaces, states).
fn string_elem(s: &str) -> Elem {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Elem::Addr(a, a);
    }
    let known = match s {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "icmpv6" | "ipv6-icmp" => Some(58),
        "sctp" => Some(132),
        "ssh" => Some(22),
        "http" => Some(80),
        "https" => Some(443),
        "syn" => Some(0x02),
        _ => None,
    };
    match known {
        Some(n) => Elem::Int(n, n),
        None => Elem::Name(s.to_string()),
    }
}

fn tcp_flag_mask(v: &Value) -> Option<u64> {
    let bit = |s: &str| match s {
        "fin" => Some(0x01),
        "syn" => Some(0x02),
        "rst" => Some(0x04),
        "psh" => Some(0x08),
        "ack" => Some(0x10),
        "urg" => Some(0x20),
        "ecn" => Some(0x40),
        "cwr" => Some(0x80),
        _ => None,
    };
    match v {
        Value::String(s) => bit(s),
        Value::Number(n) => n.as_u64(),
        Value::Array(a) => a.iter().try_fold(0u64, |acc, x| tcp_flag_mask(x).map(|b| acc | b)),
        _ => None,
    }
}

fn tcp_flags_value(v: &Value) -> Option<Vec<Elem>> {
    match v {
        Value::Array(a) if a.iter().all(Value::is_array) => {
            a.iter().map(|x| tcp_flag_mask(x).map(|b| Elem::Int(b, b))).collect()
        }
        Value::Object(o) => o.get("set").and_then(tcp_flags_value),
        _ => tcp_flag_mask(v).map(|b| vec![Elem::Int(b, b)]),
    }
}

/// The packet field a left-hand side reads.
fn key_of(left: &Value) -> Result<Key, String> {
    if let Some(m) = left.get("meta") {
        return match m.get("key").and_then(Value::as_str) {
            Some("iifname" | "iif") => Ok(Key::Iifname),
            Some("l4proto") => Ok(Key::L4Proto(None)),
            Some("nfproto") => Ok(Key::NfProto),
            Some("pkttype") => Ok(Key::Pkttype),
            _ => Err(format!("meta {}", short(m))),
        };
    }
    if let Some(c) = left.get("ct") {
        return match (c.get("key").and_then(Value::as_str), c.get("dir")) {
            (Some("state"), None) => Ok(Key::CtState),
            _ => Err(format!("ct {}", short(c))),
        };
    }
    if let Some(p) = left.get("payload") {
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("");
        let field = p.get("field").and_then(Value::as_str).unwrap_or("");
        return match (proto, field) {
            ("ip", "saddr") => Ok(Key::Saddr(L3::Ipv4)),
            ("ip6", "saddr") => Ok(Key::Saddr(L3::Ipv6)),
            ("ip", "daddr") => Ok(Key::Daddr(L3::Ipv4)),
            ("ip6", "daddr") => Ok(Key::Daddr(L3::Ipv6)),
            ("ip", "protocol") => Ok(Key::L4Proto(Some(L3::Ipv4))),
            ("ip6", "nexthdr") => Ok(Key::L4Proto(Some(L3::Ipv6))),
            ("tcp", "dport") => Ok(Key::Dport(Some(Proto::Tcp))),
            ("udp", "dport") => Ok(Key::Dport(Some(Proto::Udp))),
            ("th", "dport") => Ok(Key::Dport(None)),
            ("tcp", "sport") => Ok(Key::Sport(Some(Proto::Tcp))),
            ("udp", "sport") => Ok(Key::Sport(Some(Proto::Udp))),
            ("th", "sport") => Ok(Key::Sport(None)),
            _ => Err(format!("payload {}", short(p))),
        };
    }
    if let Some(Value::Array(and)) = left.get("&")
        && let [lhs, mask] = and.as_slice()
        && lhs.get("payload").is_some_and(|p| {
            p.get("protocol").and_then(Value::as_str) == Some("tcp")
                && p.get("field").and_then(Value::as_str) == Some("flags")
        })
        && let Some(mask) = tcp_flag_mask(mask)
    {
        return Ok(Key::TcpFlags { mask });
    }
    Err(short(left))
}

fn parse_match(m: &Value) -> Stmt {
    let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
    let negate = match op {
        "==" | "in" => false,
        "!=" => true,
        other => return Stmt::Unknown(format!("comparison {other} in {}", short(m))),
    };
    let (Some(left), Some(right)) = (m.get("left"), m.get("right")) else {
        return Stmt::Unknown(format!("match {}", short(m)));
    };
    let key = match key_of(left) {
        Ok(k) => k,
        Err(w) => return Stmt::Unknown(w),
    };
    if let Some(name) = right.as_str().and_then(|s| s.strip_prefix('@')) {
        return Stmt::Match { key, negate, rhs: Rhs::Set(name.to_string()) };
    }
    let elems = match &key {
        Key::TcpFlags { .. } => tcp_flags_value(right).ok_or_else(|| format!("tcp flags {}", short(right))),
        _ => value_elem(right),
    };
    match elems {
        Ok(e) => Stmt::Match { key, negate, rhs: Rhs::Elems(e) },
        Err(w) => Stmt::Unknown(w),
    }
}

fn parse_verdict(k: &str, v: &Value) -> Option<Verdict> {
    let target = || v.get("target").and_then(Value::as_str).unwrap_or("").to_string();
    Some(match k {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "reject" => Verdict::Reject,
        "return" => Verdict::Return,
        "continue" => Verdict::Continue,
        "jump" => Verdict::Jump(target()),
        "goto" => Verdict::Goto(target()),
        "queue" => Verdict::Unknown("queue to user space".into()),
        _ => return None,
    })
}

fn parse_stmt(e: &Value) -> Stmt {
    let Some(obj) = e.as_object() else { return Stmt::Unknown(short(e)) };
    let Some((k, v)) = obj.iter().next().filter(|_| obj.len() == 1) else { return Stmt::Unknown(short(e)) };
    if let Some(verdict) = parse_verdict(k, v) {
        return Stmt::Verdict(verdict);
    }
    match k.as_str() {
        "match" => parse_match(v),
        "counter" | "log" | "mangle" | "comment" | "quota" => Stmt::Nop,
        "limit" => Stmt::RateLimit(short(v)),
        "meter" if v.get("stmt").is_some_and(|s| s.get("limit").is_some()) => Stmt::RateLimit(short(v)),
        "notrack" => Stmt::NoTrack,
        "vmap" => {
            let Some(key) = v.get("key").map(key_of) else { return Stmt::Unknown(short(e)) };
            let key = match key {
                Ok(k) => k,
                Err(w) => return Stmt::Unknown(format!("vmap key {w}")),
            };
            let Some(entries) = v.get("data").and_then(|d| d.get("set")).and_then(Value::as_array) else {
                return Stmt::Unknown(format!("vmap {}", short(v)));
            };
            let mut map = Vec::new();
            for entry in entries {
                let Some([kv, vv]) = entry.as_array().map(Vec::as_slice) else {
                    return Stmt::Unknown(format!("vmap entry {}", short(entry)));
                };
                let verdict = vv.as_object().and_then(|o| o.iter().next()).and_then(|(k, v)| parse_verdict(k, v));
                match (value_elem(kv), verdict) {
                    (Ok(es), Some(vd)) => map.extend(es.into_iter().map(|x| (x, vd.clone()))),
                    _ => return Stmt::Unknown(format!("vmap entry {}", short(entry))),
                }
            }
            Stmt::Vmap { key, map }
        }
        "xt" => Stmt::Unknown(format!(
            "iptables-nft compat extension {} {} (list it with iptables-nft-save)",
            v.get("type").and_then(Value::as_str).unwrap_or("?"),
            v.get("name").and_then(Value::as_str).unwrap_or("?")
        )),
        _ => Stmt::Unknown(short(e)),
    }
}

fn parse_rule(r: &Value) -> Rule {
    let stmts: Vec<Stmt> = match r.get("expr").and_then(Value::as_array) {
        Some(a) => a.iter().map(parse_stmt).collect(),
        None => vec![Stmt::Unknown("rule without expressions".into())],
    };
    let handle = r.get("handle").and_then(Value::as_u64);
    let text = r.get("expr").map(render_exprs).unwrap_or_default();
    Rule { stmts, text, location: handle.map_or_else(|| "rule".to_string(), |h| format!("handle {h}")) }
}

/// A compact, stable rendering of a rule's expressions (for findings and drift).
fn render_exprs(v: &Value) -> String {
    let Some(a) = v.as_array() else { return short(v) };
    let parts: Vec<String> = a
        .iter()
        .filter(|e| e.get("counter").is_none())
        .map(|e| {
            if let Some(m) = e.get("match") {
                let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
                let l = m.get("left").map(render_value).unwrap_or_default();
                let r = m.get("right").map(render_value).unwrap_or_default();
                if op == "==" || op == "in" { format!("{l} {r}") } else { format!("{l} {op} {r}") }
            } else if let Some((k, v)) = e.as_object().and_then(|o| o.iter().next()) {
                match v {
                    Value::Null => k.clone(),
                    Value::Object(o) if o.contains_key("target") => format!("{k} {}", render_value(&o["target"])),
                    _ => format!("{k} {}", render_value(v)),
                }
            } else {
                short(e)
            }
        })
        .collect();
    parts.join(" ")
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("{{ {} }}", a.iter().map(render_value).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => {
            if let Some(p) = o.get("payload") {
                return format!("{} {}", render_value(&p["protocol"]), render_value(&p["field"]));
            }
            if let Some(m) = o.get("meta").or_else(|| o.get("ct")) {
                let pre = if o.contains_key("ct") { "ct " } else { "" };
                return format!("{pre}{}", render_value(&m["key"]));
            }
            if let Some(p) = o.get("prefix") {
                return format!("{}/{}", render_value(&p["addr"]), render_value(&p["len"]));
            }
            if let Some(Value::Array(r)) = o.get("range")
                && let [a, b] = r.as_slice()
            {
                return format!("{}-{}", render_value(a), render_value(b));
            }
            if let Some(s) = o.get("set") {
                return render_value(s);
            }
            short(v)
        }
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{Decision, Packet};
    use super::*;

    const SAMPLE: &str = r#"{"nftables": [
{"metainfo": {"version": "1.0.6", "json_schema_version": 1, "future_field": [1,2]}},
{"table": {"family": "inet", "name": "filter", "handle": 1}},
{"set": {"family": "inet", "name": "allowed", "table": "filter", "type": "ipv4_addr", "handle": 3, "flags": ["interval"], "elem": ["1.2.3.4", {"prefix": {"addr": "10.0.0.0", "len": 8}}, {"range": ["192.0.2.1", "192.0.2.9"]}]}},
{"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
{"chain": {"family": "inet", "table": "filter", "name": "foo", "handle": 2}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 5, "expr": [{"vmap": {"key": {"ct": {"key": "state"}}, "data": {"set": [["invalid", {"drop": null}], ["established", {"accept": null}], ["related", {"accept": null}]]}}}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 6, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 9, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [22, {"range": [80, 90]}]}}}, {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"limit": {"rate": 3, "burst": 5, "per": "minute"}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 10, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@allowed"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 10250}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 12, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"prefix": {"addr": "fe80::", "len": 10}}}}, {"jump": {"target": "foo"}}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 13, "expr": [{"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["fin", "syn", "rst", "ack"]]}, "right": "syn"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 7}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 16, "expr": [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "foo", "handle": 21, "expr": [{"accept": null}]}}
]}"#;

    fn p(proto: Proto, src: &str, port: u16) -> Packet {
        Packet { proto, src: src.parse().unwrap(), dport: port, iif: Some("eth0".into()) }
    }

    #[test]
    fn parses_and_evaluates_sample() {
        let rs = parse(SAMPLE).unwrap();
        assert_eq!(rs.tables.len(), 1);
        let d = rs.evaluate(&p(Proto::Tcp, "203.0.113.10", 22));
        assert!(matches!(d, Decision::Accept { rate_limited: true, .. }), "{d:?}");
        assert!(rs.evaluate(&p(Proto::Tcp, "203.0.113.10", 85)).is_accept());
        assert!(rs.evaluate(&p(Proto::Tcp, "203.0.113.10", 91)).is_drop());
        assert!(rs.evaluate(&p(Proto::Tcp, "10.9.9.9", 10250)).is_accept());
        assert!(rs.evaluate(&p(Proto::Tcp, "192.0.2.5", 10250)).is_accept());
        assert!(rs.evaluate(&p(Proto::Tcp, "192.0.2.10", 10250)).is_drop());
        assert!(rs.evaluate(&p(Proto::Tcp, "fe80::1", 10250)).is_accept());
        assert!(rs.evaluate(&p(Proto::Tcp, "2001:db8::1", 10250)).is_drop());
        assert!(rs.evaluate(&p(Proto::Tcp, "2001:db8::1", 7)).is_accept());
        assert!(rs.evaluate(&p(Proto::Udp, "2001:db8::1", 7)).is_drop());
        match rs.evaluate(&p(Proto::Udp, "203.0.113.10", 53)) {
            Decision::Unknown { rule, .. } => assert!(rule.contains("handle 16"), "{rule}"),
            d => panic!("{d:?}"),
        }
        assert_eq!(rs.unknown_rules().len(), 1);
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(parse("").is_err());
        assert!(parse("[]").is_err());
        assert!(parse(r#"{"nftables": [1]}"#).is_err());
        assert!(
            parse(r#"{"nftables": [{"rule": {"family": "ip", "table": "t", "chain": "x", "expr": []}}]}"#).is_err()
        );
        assert!(parse(&"[".repeat(100_000)).is_err());
        let ok = parse(r#"{"nftables": [{"future": {"x": 1}}]}"#).unwrap();
        assert!(ok.tables.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse(&s);
        }

        #[test]
        fn parser_never_panics_on_structured_input(port in 0u64..70000, addr in "[0-9a-f:.]{0,20}", len in 0u64..300) {
            let doc = format!(r#"{{"nftables": [{{"table": {{"family": "inet", "name": "t"}}}},
              {{"chain": {{"family": "inet", "table": "t", "name": "c", "hook": "input", "prio": 0, "type": "filter"}}}},
              {{"rule": {{"family": "inet", "table": "t", "chain": "c", "expr": [
                {{"match": {{"op": "==", "left": {{"payload": {{"protocol": "ip", "field": "saddr"}}}}, "right": {{"prefix": {{"addr": "{addr}", "len": {len}}}}}}}}},
                {{"match": {{"op": "==", "left": {{"payload": {{"protocol": "tcp", "field": "dport"}}}}, "right": {port}}}}},
                {{"accept": null}}]}}}}]}}"#);
            if let Ok(rs) = parse(&doc) {
                let _ = rs.evaluate(&p(Proto::Tcp, "10.0.0.1", 22));
            }
        }
    }
}
