//! The Kilo WireGuard interface as `wg show <iface> dump` reports it:
//! listen port and, per peer, the time of the latest handshake. Live only.

use super::{FactError, Facts, Gather};

/// The interface Kilo creates.
pub const KILO_IFACE: &str = "kilo0";

/// One peer line of the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: String,
    /// Unix time of the latest handshake; `None` when there never was one.
    pub latest_handshake: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgInterface {
    pub listen_port: Option<u16>,
    pub peers: Vec<Peer>,
}

/// What `wg show kilo0 dump` said.
#[derive(Debug, Clone)]
pub enum WgState {
    Offline,
    /// The interface does not exist (wg reports "No such device").
    Missing(String),
    Present(WgInterface),
    Failed(FactError),
}

#[derive(Debug, Clone)]
pub struct WireguardFacts {
    pub command: String,
    pub state: WgState,
}

/// Parse the tab-separated dump: the interface line, then one line per peer.
pub fn parse_dump(text: &str) -> Result<WgInterface, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().ok_or("empty output")?;
    let f: Vec<&str> = first.split('\t').collect();
    if f.len() != 4 {
        return Err(format!("interface line has {} fields, expected 4", f.len()));
    }
    let listen_port = match f.get(2).copied() {
        Some("0") | Some("off") | None => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| format!("listen port {p:?} is not a port"))?),
    };
    let mut peers = Vec::new();
    for (i, l) in lines.enumerate() {
        let f: Vec<&str> = l.split('\t').collect();
        let (Some(key), Some(endpoint), Some(ips), Some(hs)) = (f.first(), f.get(2), f.get(3), f.get(4)) else {
            return Err(format!("peer line {} has {} fields, expected 8", i + 1, f.len()));
        };
        if f.len() != 8 {
            return Err(format!("peer line {} has {} fields, expected 8", i + 1, f.len()));
        }
        let hs: u64 = hs.parse().map_err(|_| format!("peer line {}: handshake time {hs:?} is not a number", i + 1))?;
        peers.push(Peer {
            public_key: key.to_string(),
            endpoint: (*endpoint != "(none)").then(|| endpoint.to_string()),
            allowed_ips: ips.to_string(),
            latest_handshake: (hs != 0).then_some(hs),
        });
        if peers.len() > 10_000 {
            return Err("more than 10000 peers".into());
        }
    }
    Ok(WgInterface { listen_port, peers })
}

impl Gather for WireguardFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        let host = facts.host();
        let command = format!("wg show {KILO_IFACE} dump");
        if !host.is_live() {
            return WireguardFacts { command, state: WgState::Offline };
        }
        let state = match host.run("wg", &["show", KILO_IFACE, "dump"]) {
            Ok(out) if out.success() => match out.stdout_text(&command) {
                Ok(t) => match parse_dump(t) {
                    Ok(i) => WgState::Present(i),
                    Err(e) => WgState::Failed(FactError::new(format!("{command}: {e}"))),
                },
                Err(e) => WgState::Failed(e.into()),
            },
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr).trim().chars().take(300).collect::<String>();
                if err.contains("No such device") {
                    WgState::Missing(err)
                } else {
                    WgState::Failed(FactError::new(format!("{command}: exit status {:?}: {err}", out.status)))
                }
            }
            // Without wg the interface may still be known to the kernel.
            Err(e) if e.is_unavailable() && !host.exists(&format!("/sys/class/net/{KILO_IFACE}")) => {
                WgState::Missing(format!("{e}; /sys/class/net/{KILO_IFACE} does not exist"))
            }
            Err(e) => WgState::Failed(e.into()),
        };
        WireguardFacts { command, state }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const DUMP: &str = "cHJpdmF0ZQ==\tcHVibGlj\t51820\toff\npeerA=\t(none)\t198.51.100.7:51820\t10.4.0.1/32,100.64.0.0/24\t1763805000\t1000\t2000\toff\npeerB=\t(none)\t(none)\t10.4.0.2/32\t0\t0\t0\t25\n";

    #[test]
    fn parses_dump() {
        let i = parse_dump(DUMP).unwrap();
        assert_eq!(i.listen_port, Some(51820));
        assert_eq!(i.peers.len(), 2);
        assert_eq!(i.peers[0].latest_handshake, Some(1763805000));
        assert_eq!(i.peers[0].endpoint.as_deref(), Some("198.51.100.7:51820"));
        assert_eq!(i.peers[1].latest_handshake, None);
        assert!(parse_dump("").is_err());
        assert!(parse_dump("a\tb\tx\toff\n").is_err());
        assert!(parse_dump("a\tb\t1\toff\np\tq\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_dump(&s);
        }
    }
}
