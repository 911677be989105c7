//! Listening sockets of the live host, with the process that owns each, and
//! the interfaces internet traffic arrives on (the default routes).
//!
//! Sockets come from `/proc/net/{tcp,tcp6,udp,udp6}` (TCP in state LISTEN,
//! UDP bound and unconnected). Owners are found by matching socket inodes
//! with the `socket:[inode]` links under `/proc/<pid>/fd`, with a bound on
//! the number of links examined so a host with millions of descriptors
//! cannot stall the run. Runtime state only: offline roots have none.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::firewall::model::{L3, Proto};
use super::{FactError, Facts, Gather};
use crate::audit::host::Host;

/// `/proc/net/*` tables are a few hundred bytes per socket.
const PROC_NET_LIMIT: u64 = 64 * 1024 * 1024;
/// Descriptor links examined while looking for socket owners.
const MAX_FD_LINKS: usize = 500_000;

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub proto: Proto,
    pub addr: IpAddr,
    pub port: u16,
    pub inode: u64,
    /// `comm` of an owning process, with its pid.
    pub owner: Option<(u32, String)>,
}

impl Listener {
    pub fn l3(&self) -> L3 {
        L3::of(&self.addr)
    }
    /// Loopback-only sockets cannot be reached from the network.
    pub fn is_loopback(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => a.is_loopback(),
            IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
        }
    }
    pub fn describe(&self) -> String {
        let owner = self.owner.as_ref().map_or_else(|| "owner unknown".to_string(), |(p, c)| format!("{c} pid {p}"));
        let addr = if self.addr.is_ipv6() { format!("[{}]", self.addr) } else { self.addr.to_string() };
        format!("{} {addr}:{} ({owner})", self.proto.as_str(), self.port)
    }
}

/// Listening sockets and default-route interfaces of the live host.
#[derive(Debug, Clone)]
pub struct SocketFacts {
    pub listeners: Result<Vec<Listener>, FactError>,
    /// Interface of the default route per family (internet traffic arrives there).
    pub default_iface: BTreeMap<L3, String>,
    /// Owner lookup stopped early (too many descriptors) or was partial.
    pub owner_note: Option<String>,
    pub live: bool,
}

impl Gather for SocketFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        let host = facts.host();
        if !host.is_live() {
            return SocketFacts {
                listeners: Err(FactError::new("offline root: listening sockets exist only on a running system")),
                default_iface: BTreeMap::new(),
                owner_note: None,
                live: false,
            };
        }
        let mut listeners = Vec::new();
        for (path, proto) in [
            ("/proc/net/tcp", Proto::Tcp),
            ("/proc/net/tcp6", Proto::Tcp),
            ("/proc/net/udp", Proto::Udp),
            ("/proc/net/udp6", Proto::Udp),
        ] {
            match host.read_text_limited(path, PROC_NET_LIMIT) {
                Ok(text) => match parse_proc_net(&text, proto) {
                    Ok(mut l) => listeners.append(&mut l),
                    Err(e) => {
                        return SocketFacts {
                            listeners: Err(FactError::new(format!("{path}: {e}"))),
                            default_iface: BTreeMap::new(),
                            owner_note: None,
                            live: true,
                        };
                    }
                },
                // IPv6 disabled: no tcp6/udp6 table.
                Err(e) if e.is_not_found() && path.ends_with('6') => {}
                Err(e) => {
                    return SocketFacts {
                        listeners: Err(e.into()),
                        default_iface: BTreeMap::new(),
                        owner_note: None,
                        live: true,
                    };
                }
            }
        }
        let owner_note = attach_owners(host, &mut listeners);
        SocketFacts { listeners: Ok(listeners), default_iface: default_ifaces(host), owner_note, live: true }
    }
}

/// Parse one `/proc/net/{tcp,udp}[6]` table, keeping listening sockets.
pub fn parse_proc_net(text: &str, proto: Proto) -> Result<Vec<Listener>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(state), Some(inode)) = (f.get(1), f.get(2), f.get(3), f.get(9)) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("line {}: too few fields", i + 1));
        };
        let listening = match proto {
            Proto::Tcp => *state == "0A",
            // Bound, unconnected UDP sockets (state CLOSE, remote port 0).
            Proto::Udp => *state == "07" && remote.ends_with(":0000"),
        };
        if !listening {
            continue;
        }
        let (addr, port) = parse_endpoint(local).ok_or_else(|| format!("line {}: bad address {local}", i + 1))?;
        let inode = inode.parse().map_err(|_| format!("line {}: bad inode {inode}", i + 1))?;
        out.push(Listener { proto, addr, port, inode, owner: None });
    }
    Ok(out)
}

/// `0100007F:0CEA` (IPv4) or 32 hex digits (IPv6), in the kernel's host
/// byte order per 32-bit word, then the port in hex.
fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(|w| w.to_le_bytes());
    let addr = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(a)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(a.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((addr, port))
}

fn attach_owners(host: &Host, listeners: &mut [Listener]) -> Option<String> {
    let wanted: std::collections::HashSet<u64> = listeners.iter().map(|l| l.inode).collect();
    let mut owners: BTreeMap<u64, (u32, String)> = BTreeMap::new();
    let mut links = 0usize;
    let procs = match host.read_dir("/proc") {
        Ok(p) => p,
        Err(e) => return Some(format!("owners unknown: {e}")),
    };
    for p in procs {
        let Ok(pid) = p.name.parse::<u32>() else { continue };
        // Processes exit while we look: a vanished directory is normal.
        let Ok(fds) = host.read_dir(&format!("/proc/{pid}/fd")) else { continue };
        for fd in fds {
            links += 1;
            if links > MAX_FD_LINKS {
                return Some(format!("owner lookup stopped after {MAX_FD_LINKS} descriptors"));
            }
            let Ok(target) = host.read_link(&fd.path) else { continue };
            let Some(inode) = target.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) else { continue };
            let Ok(inode) = inode.parse::<u64>() else { continue };
            if wanted.contains(&inode) && !owners.contains_key(&inode) {
                let comm = host
                    .read_text_limited(&format!("/proc/{pid}/comm"), 4096)
                    .map(|c| c.trim().to_string())
                    .unwrap_or_else(|_| "?".into());
                owners.insert(inode, (pid, comm));
            }
        }
    }
    for l in listeners.iter_mut() {
        l.owner = owners.get(&l.inode).cloned();
    }
    None
}

/// Parse `/proc/net/route`: the interface of the IPv4 default route.
pub fn default_route_v4(text: &str) -> Option<String> {
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000")).then(|| f.first().map(|s| s.to_string()))?
    })
}

/// Parse `/proc/net/ipv6_route`: the interface of the IPv6 default route.
pub fn default_route_v6(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let default =
            f.first().is_some_and(|d| d.len() == 32 && d.chars().all(|c| c == '0')) && f.get(1) == Some(&"00");
        let iface = f.get(9).filter(|i| **i != "lo")?;
        default.then(|| iface.to_string())
    })
}

fn default_ifaces(host: &Host) -> BTreeMap<L3, String> {
    let mut out = BTreeMap::new();
    if let Some(i) =
        host.read_text_limited("/proc/net/route", 4 * 1024 * 1024).ok().as_deref().and_then(default_route_v4)
    {
        out.insert(L3::Ipv4, i);
    }
    if let Some(i) =
        host.read_text_limited("/proc/net/ipv6_route", 4 * 1024 * 1024).ok().as_deref().and_then(default_route_v6)
    {
        out.insert(L3::Ipv6, i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{live_like, root_with};

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   112        0 21916 1 0000000000000000 100 0 0 10 0\n   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n   2: 0F02000A:0016 0A02000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 555 1\n";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000000000000:280A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1\n   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 778 1\n";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  1: 00000000:CA6C 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 999 2 0 0\n";

    #[test]
    fn parses_proc_net_tables() {
        let l = parse_proc_net(TCP, Proto::Tcp).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].addr.to_string(), "127.0.0.1");
        assert_eq!(l[0].port, 3306);
        assert!(l[0].is_loopback());
        assert_eq!(l[1].port, 22);
        let l6 = parse_proc_net(TCP6, Proto::Tcp).unwrap();
        assert_eq!(l6[0].addr.to_string(), "::");
        assert_eq!(l6[0].port, 10250);
        assert_eq!(l6[1].addr.to_string(), "::1");
        assert!(l6[1].is_loopback());
        let u = parse_proc_net(UDP, Proto::Udp).unwrap();
        assert_eq!(u[0].port, 51820);
        assert!(parse_proc_net("h\n 0: zz:zz 0:0 0A a b c d e f\n", Proto::Tcp).is_err());
    }

    #[test]
    fn gathers_with_owners_and_routes() {
        let d = root_with(&[
            ("/proc/net/tcp", TCP),
            ("/proc/net/udp", UDP),
            ("/proc/42/comm", "sshd\n"),
            (
                "/proc/net/route",
                "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\nens3\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n",
            ),
        ]);
        std::fs::create_dir_all(d.path().join("proc/42/fd")).unwrap();
        std::os::unix::fs::symlink("socket:[4242]", d.path().join("proc/42/fd/3")).unwrap();
        let host = live_like(d.path());
        let f = Facts::new(&host);
        let s = f.get::<SocketFacts>();
        let l = s.listeners.as_ref().unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[1].owner, Some((42, "sshd".into())));
        assert_eq!(s.default_iface.get(&L3::Ipv4).map(String::as_str), Some("ens3"));
        let off = crate::testutil::offline(d.path());
        assert!(Facts::new(&off).get::<SocketFacts>().listeners.is_err());
    }

    #[test]
    fn ipv6_default_route() {
        let t = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n";
        assert_eq!(default_route_v6(t).as_deref(), Some("eth0"));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_proc_net(&s, Proto::Tcp);
            let _ = parse_proc_net(&s, Proto::Udp);
            let _ = default_route_v4(&s);
            let _ = default_route_v6(&s);
        }
    }
}
