//! Identity of the audited node: hostname, machine id, OS release and kernel,
//! as recorded in every report's `node` object.

use serde::Serialize;

use crate::audit::host::Host;

/// `/etc/os-release` fields the report carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct OsRelease {
    pub id: String,
    pub version_id: String,
    pub pretty_name: String,
    /// `ID_LIKE`, split on whitespace (e.g. `["debian"]` on Ubuntu).
    #[serde(skip)]
    pub id_like: Vec<String>,
    #[serde(skip)]
    pub version_codename: Option<String>,
}

/// The report's `node` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub hostname: String,
    pub machine_id: Option<String>,
    pub os: OsRelease,
    pub kernel: Option<String>,
}

/// Parse os-release(5): `KEY=value` with optional shell-style quoting.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = unquote(v.trim());
        match k.trim() {
            "ID" => os.id = v,
            "VERSION_ID" => os.version_id = v,
            "PRETTY_NAME" => os.pretty_name = v,
            "ID_LIKE" => os.id_like = v.split_whitespace().map(str::to_string).collect(),
            "VERSION_CODENAME" => os.version_codename = Some(v).filter(|s| !s.is_empty()),
            _ => {}
        }
    }
    os
}

fn unquote(v: &str) -> String {
    let stripped =
        if v.len() >= 2 && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\''))) {
            &v[1..v.len() - 1]
        } else {
            v
        };
    let mut out = String::with_capacity(stripped.len());
    let mut chars = stripped.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Read the OS release, trying `/etc/os-release` then `/usr/lib/os-release`.
pub fn os_release(host: &Host) -> Option<OsRelease> {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| host.read_text_limited(p, 64 * 1024).ok())
        .map(|t| parse_os_release(&t))
}

fn first_line(host: &Host, path: &str) -> Option<String> {
    host.read_text_limited(path, 64 * 1024)
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
        .filter(|s| !s.is_empty())
}

/// Gather the node identity. Nothing here can fail the run: unknown values
/// are reported as such.
pub fn node_info(host: &Host) -> NodeInfo {
    let hostname = if host.is_live() { first_line(host, "/proc/sys/kernel/hostname") } else { None }
        .or_else(|| first_line(host, "/etc/hostname"))
        .unwrap_or_else(|| "unknown".to_string());
    let os = os_release(host).unwrap_or_else(|| OsRelease {
        id: "unknown".into(),
        version_id: String::new(),
        pretty_name: "unknown (no os-release)".into(),
        ..OsRelease::default()
    });
    let kernel = if host.is_live() { first_line(host, "/proc/sys/kernel/osrelease") } else { None };
    NodeInfo { hostname, machine_id: first_line(host, "/etc/machine-id"), os, kernel }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_os_release() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nID_LIKE='rhel fedora'\nbroken\n",
        );
        assert_eq!(os.id, "debian");
        assert_eq!(os.version_id, "12");
        assert_eq!(os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os.id_like, ["rhel", "fedora"]);
    }
}
