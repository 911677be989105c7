//! The firewall model both front ends (nft JSON, iptables-save) translate to,
//! and the evaluator that answers "what happens to a new inbound packet?".
//!
//! The evaluator walks the filter base chains of the input path (prerouting,
//! then input, each in priority order) of every table whose family sees the
//! packet. An accept ends one base chain only, the packet still meets the
//! next base chain; a drop or reject is final. Jumps, gotos and returns
//! follow netfilter semantics, and a chain's policy applies when a base chain
//! runs off its end. Every condition is three-valued: when a rule that the
//! packet reaches uses something the model does not understand, and no other
//! condition of that rule already excludes the packet, the answer is
//! [`Decision::Unknown`] naming that rule. The evaluator never guesses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Layer-3 family of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L3 {
    Ipv4,
    Ipv6,
}

impl L3 {
    pub fn as_str(self) -> &'static str {
        match self {
            L3::Ipv4 => "IPv4",
            L3::Ipv6 => "IPv6",
        }
    }
    pub fn of(addr: &IpAddr) -> L3 {
        if addr.is_ipv4() { L3::Ipv4 } else { L3::Ipv6 }
    }
}

/// Transport protocol of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u64 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// The question: a new inbound packet (first packet of a connection: a TCP
/// SYN, or a UDP datagram with no conntrack entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub proto: Proto,
    pub src: IpAddr,
    pub dport: u16,
    /// Input interface name; `None` when unknown (then only a match on `lo`
    /// can be decided: internet traffic never arrives on loopback).
    pub iif: Option<String>,
}

impl Packet {
    pub fn l3(&self) -> L3 {
        L3::of(&self.src)
    }
    pub fn describe(&self) -> String {
        let iif = self.iif.as_deref().unwrap_or("?");
        format!("new {} {} from {} to port {} via {iif}", self.l3().as_str(), self.proto.as_str(), self.src, self.dport)
    }
}

/// Table family, as nftables names it (iptables tables map to ip / ip6).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFamily {
    Ip,
    Ip6,
    Inet,
    /// arp, bridge, netdev: not on the IP input path we evaluate.
    Other(String),
}

impl TableFamily {
    pub fn parse(s: &str) -> TableFamily {
        match s {
            "ip" => TableFamily::Ip,
            "ip6" => TableFamily::Ip6,
            "inet" => TableFamily::Inet,
            o => TableFamily::Other(o.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            TableFamily::Ip => "ip",
            TableFamily::Ip6 => "ip6",
            TableFamily::Inet => "inet",
            TableFamily::Other(s) => s,
        }
    }
    pub fn sees(&self, l3: L3) -> bool {
        matches!((self, l3), (TableFamily::Ip, L3::Ipv4) | (TableFamily::Ip6, L3::Ipv6) | (TableFamily::Inet, _))
    }
}

/// Where a table came from. Legacy iptables lives in the kernel's x_tables,
/// apart from nftables: both are traversed by every packet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Nftables,
    IptablesNft,
    IptablesLegacy,
}

impl Backend {
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::IptablesNft => "iptables-nft",
            Backend::IptablesLegacy => "iptables-legacy",
        }
    }
}

/// What a packet field is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// Source address; the family is the header it is read from (`ip saddr`
    /// does not match an IPv6 packet).
    Saddr(L3),
    /// Destination address (the node's own address on the input path).
    Daddr(L3),
    /// Destination port. `Some(p)` means `tcp dport` / `udp dport` (which
    /// also requires that protocol); `None` means any transport header (`th`).
    Dport(Option<Proto>),
    /// Source port (always unknown for our packet, but the protocol
    /// dependency still decides a mismatch).
    Sport(Option<Proto>),
    /// Layer-4 protocol number (`meta l4proto`, `ip protocol`, `-p`).
    L4Proto(Option<L3>),
    /// `meta nfproto`.
    NfProto,
    Iifname,
    CtState,
    /// `tcp flags & mask`; compared with the SYN-only flags of a new packet.
    TcpFlags {
        mask: u64,
    },
    Pkttype,
}

impl Key {
    pub fn describe(&self) -> String {
        match self {
            Key::Saddr(l3) => format!("{} saddr", if *l3 == L3::Ipv4 { "ip" } else { "ip6" }),
            Key::Daddr(l3) => format!("{} daddr", if *l3 == L3::Ipv4 { "ip" } else { "ip6" }),
            Key::Dport(p) => format!("{} dport", p.map_or("th", Proto::as_str)),
            Key::Sport(p) => format!("{} sport", p.map_or("th", Proto::as_str)),
            Key::L4Proto(_) => "l4proto".into(),
            Key::NfProto => "meta nfproto".into(),
            Key::Iifname => "iifname".into(),
            Key::CtState => "ct state".into(),
            Key::TcpFlags { .. } => "tcp flags".into(),
            Key::Pkttype => "pkttype".into(),
        }
    }
}

/// One element of a value set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elem {
    /// Ports, protocol numbers, flag words (inclusive range).
    Int(u64, u64),
    /// Addresses (inclusive range; prefixes are converted to ranges).
    Addr(IpAddr, IpAddr),
    /// Interface names (a trailing `*` or `+` is a prefix wildcard), state
    /// names, nfproto and pkttype names.
    Name(String),
}

impl Elem {
    /// The inclusive range of an integer element.
    pub fn int_range(&self) -> Option<(u64, u64)> {
        match self {
            Elem::Int(a, b) => Some((*a, *b)),
            _ => None,
        }
    }

    pub fn prefix(addr: IpAddr, len: u8) -> Option<Elem> {
        let (lo, hi) = prefix_range(addr, len)?;
        Some(Elem::Addr(lo, hi))
    }
}

/// A value set on the right of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rhs {
    Elems(Vec<Elem>),
    /// A named set of the same table (`@name`, iptables `-m set`).
    Set(String),
}

/// One statement of a rule, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// The packet field `key` is (or with `negate`, is not) in `rhs`.
    Match {
        key: Key,
        negate: bool,
        rhs: Rhs,
    },
    /// A rate limit: the first packet of a connection passes, but the rule
    /// limits how many do. Recorded so SSH exposure can tell.
    RateLimit(String),
    /// A stateful match that never matches the first packet from a new
    /// source (iptables `recent --rcheck/--update`, `connlimit-above`) but
    /// shows that the flow is rate limited.
    LimitCheck(String),
    /// Disables connection tracking: `ct state` is then `untracked`.
    NoTrack,
    /// Counters, logs, comments, marks: no effect on the verdict.
    Nop,
    Verdict(Verdict),
    /// A verdict map: the verdict of the element the key falls in.
    Vmap {
        key: Key,
        map: Vec<(Elem, Verdict)>,
    },
    /// Something the evaluator does not understand (named in the text).
    Unknown(String),
}

/// A rule's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
    Jump(String),
    Goto(String),
    Return,
    /// `continue` in nft, or an iptables target with no verdict (LOG, MARK).
    Continue,
    /// A verdict we cannot follow (queue, DNAT in a filter chain, ...).
    Unknown(String),
}

/// One rule with a readable rendering used in findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub stmts: Vec<Stmt>,
    /// Human-readable rule text (`iptables-save` line or nft rendering).
    pub text: String,
    /// Location: nft handle or `file:line`.
    pub location: String,
}

/// Base chain hook data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub hook: String,
    /// nft chain type (`filter`, `nat`, `route`).
    pub kind: String,
    pub priority: i64,
    /// Policy: `true` = accept (the default), `false` = drop.
    pub accept: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

/// A named set (or the contents of an ipset we cannot see: `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSet {
    pub elems: Option<Vec<Elem>>,
    /// Why the contents are unknown.
    pub unknown: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: TableFamily,
    pub name: String,
    pub backend: Backend,
    pub chains: Vec<Chain>,
    pub sets: BTreeMap<String, NamedSet>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
    pub fn label(&self) -> String {
        format!("{} table {} {}", self.backend.as_str(), self.family.as_str(), self.name)
    }
}

/// All tables that apply to packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub tables: Vec<Table>,
}

/// What the input path does with a packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Decision {
    Accept {
        /// The rules and policies that decided, in order.
        path: Vec<String>,
        /// A rate limit was on the accepting path.
        rate_limited: bool,
    },
    Drop {
        path: Vec<String>,
    },
    Unknown {
        /// The rule the evaluator could not decide.
        rule: String,
        why: String,
    },
}

impl Decision {
    pub fn is_accept(&self) -> bool {
        matches!(self, Decision::Accept { .. })
    }
    pub fn is_drop(&self) -> bool {
        matches!(self, Decision::Drop { .. })
    }
    pub fn describe(&self) -> String {
        match self {
            Decision::Accept { path, rate_limited } => format!(
                "accepted{} ({})",
                if *rate_limited { " with a rate limit" } else { "" },
                if path.is_empty() { "no firewall rules".to_string() } else { path.join(" -> ") }
            ),
            Decision::Drop { path } => format!("dropped ({})", path.join(" -> ")),
            Decision::Unknown { rule, why } => format!("unknown: {why} at {rule}"),
        }
    }
}

/// Three-valued condition result.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown(String),
}

/// A chain's result when evaluated for one packet.
enum ChainEnd {
    Accept,
    Drop,
    /// Fell off the end of a regular chain or hit `return`.
    Return,
    Unknown {
        rule: String,
        why: String,
    },
}

/// Mutable evaluation state for one packet in one base chain.
struct Walk<'a> {
    table: &'a Table,
    packet: &'a Packet,
    untracked: bool,
    rate_limited: bool,
    path: Vec<String>,
    steps: usize,
}

/// Jump nesting limit (the kernel's is 16 for nft; iptables allows more).
const MAX_DEPTH: usize = 64;
/// Total rule visits per packet, so a hostile ruleset cannot make us spin.
const MAX_STEPS: usize = 200_000;

/// Hooks of the input path, in the order a packet meets them.
const INPUT_PATH_HOOKS: [&str; 2] = ["prerouting", "input"];

impl Ruleset {
    /// Every integer range the ruleset names as ports: in a destination
    /// port match, a destination port verdict map, or any named set.
    pub fn port_ranges(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for t in &self.tables {
            for c in &t.chains {
                for r in &c.rules {
                    for s in &r.stmts {
                        let elems: Vec<&Elem> = match s {
                            Stmt::Match { key: Key::Dport(_), rhs: Rhs::Elems(e), .. } => e.iter().collect(),
                            Stmt::Vmap { key: Key::Dport(_), map } => map.iter().map(|(e, _)| e).collect(),
                            _ => Vec::new(),
                        };
                        out.extend(elems.into_iter().filter_map(Elem::int_range));
                    }
                }
            }
            out.extend(t.sets.values().flat_map(|s| s.elems.iter().flatten()).filter_map(Elem::int_range));
        }
        out
    }

    /// Base chains of the input path for a family, in traversal order.
    pub fn input_path(&self, l3: L3) -> Vec<(&Table, &Chain)> {
        let mut out = Vec::new();
        for hook in INPUT_PATH_HOOKS {
            let mut chains: Vec<(&Table, &Chain, i64)> = Vec::new();
            for t in self.tables.iter().filter(|t| t.family.sees(l3)) {
                for c in &t.chains {
                    if let Some(h) = &c.hook
                        && h.hook == hook
                        && h.kind == "filter"
                    {
                        chains.push((t, c, h.priority));
                    }
                }
            }
            chains.sort_by_key(|(_, _, p)| *p);
            out.extend(chains.into_iter().map(|(t, c, _)| (t, c)));
        }
        out
    }

    /// What happens to `packet` on the input path.
    pub fn evaluate(&self, packet: &Packet) -> Decision {
        let l3 = packet.l3();
        let mut untracked = false;
        let mut rate_limited = false;
        let mut path = Vec::new();
        for (table, chain) in self.input_path(l3) {
            let mut w = Walk { table, packet, untracked, rate_limited, path: Vec::new(), steps: 0 };
            let end = w.run(chain, 0);
            untracked = w.untracked;
            rate_limited = w.rate_limited;
            let policy_accept = chain.hook.as_ref().is_none_or(|h| h.accept);
            let label = format!("{} chain {}", table.label(), chain.name);
            path.append(&mut w.path);
            match end {
                ChainEnd::Accept => {}
                ChainEnd::Drop => return Decision::Drop { path },
                ChainEnd::Return => {
                    if policy_accept {
                        path.push(format!("{label} policy accept"));
                    } else {
                        path.push(format!("{label} policy drop"));
                        return Decision::Drop { path };
                    }
                }
                ChainEnd::Unknown { rule, why } => return Decision::Unknown { rule, why },
            }
        }
        Decision::Accept { path, rate_limited }
    }

    /// Every rule location that the evaluator cannot understand.
    pub fn unknown_rules(&self) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.tables {
            for c in &t.chains {
                for r in &c.rules {
                    for s in &r.stmts {
                        let why = match s {
                            Stmt::Unknown(w) => Some(w.clone()),
                            Stmt::Verdict(Verdict::Unknown(w)) => Some(w.clone()),
                            _ => None,
                        };
                        if let Some(w) = why {
                            out.push(format!("{} chain {} {}: {} ({w})", t.label(), c.name, r.location, r.text));
                        }
                    }
                }
            }
        }
        out
    }

    /// Address boundaries used anywhere in the ruleset for one family: the
    /// verdict is constant between two consecutive boundaries, so evaluating
    /// one address per interval answers for the whole address space.
    pub fn address_boundaries(&self, l3: L3) -> Vec<IpAddr> {
        let mut points: Vec<u128> = vec![0];
        let mut add = |e: &Elem| {
            if let Elem::Addr(lo, hi) = e
                && L3::of(lo) == l3
            {
                points.push(addr_to_u128(lo));
                let h = addr_to_u128(hi);
                let max = if l3 == L3::Ipv4 { u128::from(u32::MAX) } else { u128::MAX };
                if h < max {
                    points.push(h + 1);
                }
            }
        };
        for t in &self.tables {
            for s in t.sets.values() {
                s.elems.iter().flatten().for_each(&mut add);
            }
            for c in &t.chains {
                for r in &c.rules {
                    for s in &r.stmts {
                        match s {
                            Stmt::Match { rhs: Rhs::Elems(es), .. } => es.iter().for_each(&mut add),
                            Stmt::Vmap { map, .. } => map.iter().for_each(|(e, _)| add(e)),
                            _ => {}
                        }
                    }
                }
            }
        }
        points.sort_unstable();
        points.dedup();
        points.into_iter().map(|p| u128_to_addr(p, l3)).collect()
    }

    /// The source address ranges from which a packet (other fields fixed)
    /// is accepted, or the first unknown decision. At most `limit`
    /// intervals are evaluated.
    pub fn accepted_sources(&self, template: &Packet, l3: L3, limit: usize) -> Result<Vec<(IpAddr, IpAddr)>, Decision> {
        let bounds = self.address_boundaries(l3);
        if bounds.len() > limit {
            return Err(Decision::Unknown {
                rule: "ruleset".into(),
                why: format!("{} distinct address ranges: more than the {limit} this analysis evaluates", bounds.len()),
            });
        }
        let max = if l3 == L3::Ipv4 { u128::from(u32::MAX) } else { u128::MAX };
        let mut out: Vec<(IpAddr, IpAddr)> = Vec::new();
        for (i, lo) in bounds.iter().enumerate() {
            let hi = bounds.get(i + 1).map_or(max, |n| addr_to_u128(n).saturating_sub(1));
            let p = Packet { src: *lo, ..template.clone() };
            match self.evaluate(&p) {
                Decision::Accept { .. } => {
                    let hi_addr = u128_to_addr(hi, l3);
                    match out.last_mut() {
                        Some(last) if addr_to_u128(&last.1).checked_add(1) == Some(addr_to_u128(lo)) => {
                            last.1 = hi_addr;
                        }
                        _ => out.push((*lo, hi_addr)),
                    }
                }
                Decision::Drop { .. } => {}
                u @ Decision::Unknown { .. } => return Err(u),
            }
        }
        Ok(out)
    }
}

impl Walk<'_> {
    fn rule_label(&self, chain: &Chain, rule: &Rule) -> String {
        format!("{} chain {} {}: {}", self.table.label(), chain.name, rule.location, rule.text)
    }

    fn run(&mut self, chain: &Chain, depth: usize) -> ChainEnd {
        if depth > MAX_DEPTH {
            return ChainEnd::Unknown {
                rule: format!("{} chain {}", self.table.label(), chain.name),
                why: format!("jumps nested deeper than {MAX_DEPTH} (a loop?)"),
            };
        }
        for rule in &chain.rules {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return ChainEnd::Unknown {
                    rule: self.rule_label(chain, rule),
                    why: format!("more than {MAX_STEPS} rule visits for one packet"),
                };
            }
            let verdict = match self.apply(rule) {
                Ok(None) => continue,
                Ok(Some(v)) => v,
                Err(why) => return ChainEnd::Unknown { rule: self.rule_label(chain, rule), why },
            };
            let label = self.rule_label(chain, rule);
            match verdict {
                Verdict::Accept => {
                    self.path.push(label);
                    return ChainEnd::Accept;
                }
                Verdict::Drop | Verdict::Reject => {
                    self.path.push(label);
                    return ChainEnd::Drop;
                }
                Verdict::Return => return ChainEnd::Return,
                Verdict::Continue => continue,
                Verdict::Jump(target) | Verdict::Goto(target) if self.table.chain(&target).is_none() => {
                    return ChainEnd::Unknown { rule: label, why: format!("jump to missing chain {target}") };
                }
                Verdict::Jump(target) => {
                    let Some(next) = self.table.chain(&target) else { continue };
                    match self.run(next, depth + 1) {
                        ChainEnd::Return => continue,
                        other => return other,
                    }
                }
                Verdict::Goto(target) => {
                    let Some(next) = self.table.chain(&target) else { continue };
                    return self.run(next, depth + 1);
                }
                Verdict::Unknown(why) => return ChainEnd::Unknown { rule: label, why },
            }
        }
        ChainEnd::Return
    }

    /// Apply a rule: `Ok(None)` when it does not match (or has no verdict),
    /// `Ok(Some(verdict))` when it matches, `Err(why)` when undecidable.
    fn apply(&mut self, rule: &Rule) -> Result<Option<Verdict>, String> {
        // A condition that is false anywhere in the rule excludes the packet
        // even if another condition is unknown, so scan for that first.
        let mut unknown: Option<String> = None;
        for s in &rule.stmts {
            let r = match s {
                Stmt::Match { key, negate, rhs } => self.cond(key, *negate, rhs),
                Stmt::LimitCheck(_) => Tri::False,
                Stmt::Unknown(w) => Tri::Unknown(format!("expression not understood: {w}")),
                _ => Tri::True,
            };
            match r {
                Tri::False => return Ok(None),
                Tri::Unknown(w) => {
                    unknown.get_or_insert(w);
                }
                Tri::True => {}
            }
        }
        if let Some(w) = unknown {
            return Err(w);
        }
        let mut limited = false;
        for s in &rule.stmts {
            match s {
                Stmt::RateLimit(_) => limited = true,
                Stmt::NoTrack => self.untracked = true,
                Stmt::Verdict(v) => {
                    if limited && *v == Verdict::Accept {
                        self.rate_limited = true;
                    }
                    return Ok(Some(v.clone()));
                }
                Stmt::Vmap { key, map } => {
                    for (e, v) in map {
                        match self.cond(key, false, &Rhs::Elems(vec![e.clone()])) {
                            Tri::True => return Ok(Some(v.clone())),
                            Tri::False => {}
                            Tri::Unknown(w) => return Err(w),
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    fn cond(&self, key: &Key, negate: bool, rhs: &Rhs) -> Tri {
        let resolved: Vec<Elem>;
        let elems: &[Elem] = match rhs {
            Rhs::Elems(e) => e,
            Rhs::Set(name) => match self.table.sets.get(name) {
                Some(NamedSet { elems: Some(e), .. }) => {
                    resolved = e.clone();
                    &resolved
                }
                Some(NamedSet { unknown, .. }) => {
                    return Tri::Unknown(format!(
                        "contents of set {name} unknown ({})",
                        unknown.as_deref().unwrap_or("not listed")
                    ));
                }
                None => return Tri::Unknown(format!("set {name} does not exist")),
            },
        };
        let r = self.member(key, elems);
        match (r, negate) {
            (Tri::True, true) => Tri::False,
            (Tri::False, true) => Tri::True,
            (r, _) => r,
        }
    }

    /// Is the packet's value for `key` in `elems`?
    fn member(&self, key: &Key, elems: &[Elem]) -> Tri {
        let p = self.packet;
        let ints = |v: u64| {
            let mut unknown = None;
            for e in elems {
                match e {
                    Elem::Int(lo, hi) if *lo <= v && v <= *hi => return Tri::True,
                    Elem::Int(..) => {}
                    other => unknown = Some(format!("{other:?} compared with {}", key.describe())),
                }
            }
            unknown.map_or(Tri::False, Tri::Unknown)
        };
        match key {
            Key::Saddr(l3) => {
                if *l3 != p.l3() {
                    return Tri::False;
                }
                let v = addr_to_u128(&p.src);
                let mut unknown = None;
                for e in elems {
                    match e {
                        Elem::Addr(lo, hi) if L3::of(lo) == *l3 => {
                            if addr_to_u128(lo) <= v && v <= addr_to_u128(hi) {
                                return Tri::True;
                            }
                        }
                        Elem::Addr(..) => {}
                        other => unknown = Some(format!("{other:?} compared with an address")),
                    }
                }
                unknown.map_or(Tri::False, Tri::Unknown)
            }
            Key::Daddr(l3) => {
                if *l3 != p.l3() {
                    return Tri::False;
                }
                // Internet traffic is never addressed to loopback (the kernel
                // drops such martians); any other destination depends on the
                // node's own addresses, which the question leaves open.
                let loopback = |a: &IpAddr| a.is_loopback();
                if elems.iter().all(|e| matches!(e, Elem::Addr(lo, hi) if loopback(lo) && loopback(hi))) {
                    Tri::False
                } else {
                    Tri::Unknown("destination address of the node".into())
                }
            }
            Key::Dport(proto) => {
                if proto.is_some_and(|x| x != p.proto) {
                    return Tri::False;
                }
                ints(u64::from(p.dport))
            }
            Key::Sport(proto) => {
                if proto.is_some_and(|x| x != p.proto) {
                    return Tri::False;
                }
                Tri::Unknown("source port of an arbitrary client".into())
            }
            Key::L4Proto(l3) => {
                if l3.is_some_and(|x| x != p.l3()) {
                    return Tri::False;
                }
                ints(p.proto.number())
            }
            Key::NfProto => {
                let name = if p.l3() == L3::Ipv4 { "ipv4" } else { "ipv6" };
                names(elems, |n| n == name)
            }
            Key::Iifname => match &p.iif {
                Some(i) => names(elems, |n| iface_match(n, i)),
                None => {
                    // Internet traffic never arrives on loopback; any other
                    // name needs the real interface.
                    if elems.iter().all(|e| matches!(e, Elem::Name(n) if n == "lo")) {
                        Tri::False
                    } else {
                        Tri::Unknown("interface of internet traffic unknown (no default route)".into())
                    }
                }
            },
            Key::CtState => {
                let state = if self.untracked { "untracked" } else { "new" };
                names(elems, |n| n == state)
            }
            Key::TcpFlags { mask } => {
                if p.proto != Proto::Tcp {
                    return Tri::False;
                }
                // A new TCP connection starts with a SYN (0x02) alone.
                ints(0x02 & mask)
            }
            Key::Pkttype => names(elems, |n| n == "host" || n == "unicast"),
        }
    }
}

fn names(elems: &[Elem], f: impl Fn(&str) -> bool) -> Tri {
    let mut unknown = None;
    for e in elems {
        match e {
            Elem::Name(n) if f(n) => return Tri::True,
            Elem::Name(_) => {}
            other => unknown = Some(format!("{other:?} compared with a name")),
        }
    }
    unknown.map_or(Tri::False, Tri::Unknown)
}

/// Interface name match with iptables `+` and nft `*` prefix wildcards.
pub fn iface_match(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*').or_else(|| pattern.strip_suffix('+')) {
        Some(prefix) if !pattern.ends_with("\\*") => name.starts_with(prefix),
        _ => pattern == name,
    }
}

pub fn addr_to_u128(a: &IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(*v)),
        IpAddr::V6(v) => u128::from(*v),
    }
}

pub fn u128_to_addr(v: u128, l3: L3) -> IpAddr {
    match l3 {
        L3::Ipv4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX))),
        L3::Ipv6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The inclusive address range of a prefix, or `None` for an invalid length.
pub fn prefix_range(addr: IpAddr, len: u8) -> Option<(IpAddr, IpAddr)> {
    let l3 = L3::of(&addr);
    let bits: u32 = if l3 == L3::Ipv4 { 32 } else { 128 };
    let len = u32::from(len);
    if len > bits {
        return None;
    }
    let host_bits = bits - len;
    let v = addr_to_u128(&addr);
    let host_mask: u128 = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    let lo = v & !host_mask;
    let hi = lo | host_mask;
    Some((u128_to_addr(lo, l3), u128_to_addr(hi, l3)))
}

/// Parse `addr` or `addr/len` into an address range.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, IpAddr)> {
    match s.split_once('/') {
        Some((a, l)) => {
            let addr: IpAddr = a.parse().ok()?;
            // iptables-save may print a dotted netmask.
            if let Ok(mask) = l.parse::<Ipv4Addr>() {
                let m = u32::from(mask);
                if m.leading_ones() + m.trailing_zeros() != 32 || !addr.is_ipv4() {
                    return None;
                }
                return prefix_range(addr, u8::try_from(m.leading_ones()).ok()?);
            }
            prefix_range(addr, l.parse().ok()?)
        }
        None => {
            let a: IpAddr = s.parse().ok()?;
            Some((a, a))
        }
    }
}

/// Render an address range compactly (`a/len` when it is a prefix).
pub fn range_to_string(lo: &IpAddr, hi: &IpAddr) -> String {
    let (l, h) = (addr_to_u128(lo), addr_to_u128(hi));
    let bits = if lo.is_ipv4() { 32 } else { 128 };
    let span = h.wrapping_sub(l).wrapping_add(1);
    if l == h {
        return lo.to_string();
    }
    if span == 0 && bits == 128 {
        return format!("{lo}/0");
    }
    if span.is_power_of_two() && l % span == 0 {
        let len = bits - span.trailing_zeros();
        return format!("{lo}/{len}");
    }
    format!("{lo}-{hi}")
}

/// Subtract allowed ranges from accepted ranges (both inclusive).
pub fn subtract_ranges(accepted: &[(IpAddr, IpAddr)], allowed: &[(IpAddr, IpAddr)]) -> Vec<(IpAddr, IpAddr)> {
    let mut out = Vec::new();
    for (lo, hi) in accepted {
        let l3 = L3::of(lo);
        let mut pieces = vec![(addr_to_u128(lo), addr_to_u128(hi))];
        for (alo, ahi) in allowed.iter().filter(|(a, _)| L3::of(a) == l3) {
            let (al, ah) = (addr_to_u128(alo), addr_to_u128(ahi));
            let mut next = Vec::new();
            for (pl, ph) in pieces {
                if ah < pl || al > ph {
                    next.push((pl, ph));
                    continue;
                }
                if al > pl {
                    next.push((pl, al - 1));
                }
                if ah < ph {
                    next.push((ah + 1, ph));
                }
            }
            pieces = next;
        }
        out.extend(pieces.into_iter().map(|(a, b)| (u128_to_addr(a, l3), u128_to_addr(b, l3))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(stmts: Vec<Stmt>, text: &str) -> Rule {
        Rule { stmts, text: text.into(), location: "handle 1".into() }
    }
    fn m(key: Key, elems: Vec<Elem>) -> Stmt {
        Stmt::Match { key, negate: false, rhs: Rhs::Elems(elems) }
    }
    fn base(name: &str, accept: bool, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            hook: Some(Hook { hook: "input".into(), kind: "filter".into(), priority: 0, accept }),
            rules,
        }
    }
    fn table(chains: Vec<Chain>) -> Table {
        Table { family: TableFamily::Inet, name: "t".into(), backend: Backend::Nftables, chains, sets: BTreeMap::new() }
    }
    fn pkt(src: &str, port: u16) -> Packet {
        Packet { proto: Proto::Tcp, src: src.parse().unwrap(), dport: port, iif: Some("eth0".into()) }
    }

    #[test]
    fn default_drop_with_hole_and_jump() {
        let user = Chain {
            name: "ssh".into(),
            hook: None,
            rules: vec![rule(
                vec![
                    m(Key::Saddr(L3::Ipv4), vec![Elem::prefix("10.0.0.0".parse().unwrap(), 8).unwrap()]),
                    Stmt::Verdict(Verdict::Accept),
                ],
                "ip saddr 10.0.0.0/8 accept",
            )],
        };
        let rs = Ruleset {
            tables: vec![table(vec![
                base(
                    "input",
                    false,
                    vec![rule(
                        vec![
                            m(Key::Dport(Some(Proto::Tcp)), vec![Elem::Int(22, 22)]),
                            Stmt::Verdict(Verdict::Jump("ssh".into())),
                        ],
                        "tcp dport 22 jump ssh",
                    )],
                ),
                user,
            ])],
        };
        assert!(rs.evaluate(&pkt("10.1.2.3", 22)).is_accept());
        assert!(rs.evaluate(&pkt("203.0.113.10", 22)).is_drop());
        assert!(rs.evaluate(&pkt("10.1.2.3", 23)).is_drop());
        let acc = rs.accepted_sources(&pkt("0.0.0.0", 22), L3::Ipv4, 100).unwrap();
        assert_eq!(acc.len(), 1);
        assert_eq!(range_to_string(&acc[0].0, &acc[0].1), "10.0.0.0/8");
        // IPv6 packets are not matched by `ip saddr` and fall to the policy.
        assert!(rs.evaluate(&pkt("2001:db8::1", 22)).is_drop());
    }

    #[test]
    fn accept_in_one_base_chain_still_meets_the_next() {
        let mut late = base("late", true, vec![rule(vec![Stmt::Verdict(Verdict::Drop)], "drop")]);
        if let Some(h) = late.hook.as_mut() {
            h.priority = 10;
        }
        let early = base("early", true, vec![rule(vec![Stmt::Verdict(Verdict::Accept)], "accept")]);
        let rs = Ruleset { tables: vec![table(vec![late, early])] };
        let d = rs.evaluate(&pkt("203.0.113.10", 80));
        assert!(d.is_drop(), "{d:?}");
    }

    #[test]
    fn unknown_only_when_reached_and_not_excluded() {
        let rs = Ruleset {
            tables: vec![table(vec![base(
                "input",
                true,
                vec![rule(
                    vec![
                        m(Key::Dport(Some(Proto::Tcp)), vec![Elem::Int(22, 22)]),
                        Stmt::Unknown("fib daddr type".into()),
                        Stmt::Verdict(Verdict::Drop),
                    ],
                    "tcp dport 22 fib daddr type local drop",
                )],
            )])],
        };
        assert!(rs.evaluate(&pkt("203.0.113.10", 80)).is_accept());
        match rs.evaluate(&pkt("203.0.113.10", 22)) {
            Decision::Unknown { rule, .. } => assert!(rule.contains("fib daddr"), "{rule}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn ct_state_vmap_and_notrack() {
        let vmap = Stmt::Vmap {
            key: Key::CtState,
            map: vec![
                (Elem::Name("established".into()), Verdict::Accept),
                (Elem::Name("invalid".into()), Verdict::Drop),
            ],
        };
        let rs = Ruleset { tables: vec![table(vec![base("input", false, vec![rule(vec![vmap], "ct state vmap")])])] };
        assert!(rs.evaluate(&pkt("203.0.113.10", 80)).is_drop());
        let new_ok = Stmt::Match { key: Key::CtState, negate: false, rhs: Rhs::Elems(vec![Elem::Name("new".into())]) };
        let rs = Ruleset {
            tables: vec![table(vec![base(
                "input",
                false,
                vec![rule(vec![new_ok, Stmt::Verdict(Verdict::Accept)], "ct state new accept")],
            )])],
        };
        assert!(rs.evaluate(&pkt("203.0.113.10", 80)).is_accept());
    }

    #[test]
    fn ranges_and_subtraction() {
        let (lo, hi) = parse_cidr("10.4.0.0/16").unwrap();
        assert_eq!(range_to_string(&lo, &hi), "10.4.0.0/16");
        assert_eq!(parse_cidr("10.0.0.0/255.255.0.0").unwrap().1.to_string(), "10.0.255.255");
        assert!(parse_cidr("10.0.0.0/33").is_none());
        let all = vec![parse_cidr("0.0.0.0/0").unwrap()];
        let rest = subtract_ranges(&all, &[(lo, hi)]);
        assert_eq!(rest.len(), 2);
        assert_eq!(range_to_string(&rest[0].0, &rest[0].1), "0.0.0.0-10.3.255.255");
        assert_eq!(range_to_string(&parse_cidr("::/0").unwrap().0, &parse_cidr("::/0").unwrap().1), "::/0");
        assert!(iface_match("eth+", "eth0") && iface_match("eth*", "eth1") && !iface_match("eth0", "eth1"));
    }
}
