//! What sshd applies to a keyword nobody set: the compiled-in defaults of
//! OpenSSH 9.2 as shipped by Debian 12, and the evidence source naming them.

/// Evidence source for values sshd compiles in.
pub const DEFAULT_SOURCE: &str = "OpenSSH default";

/// OpenSSH 9.x default `Ciphers` (sshd).
pub const DEFAULT_CIPHERS: [&str; 6] = [
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
];

/// OpenSSH 9.x default `MACs` (sshd).
pub const DEFAULT_MACS: [&str; 10] = [
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha1-etm@openssh.com",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
];

/// OpenSSH 9.2 default `KexAlgorithms` (sshd).
pub const DEFAULT_KEX: [&str; 10] = [
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
];

/// Host keys sshd loads when no `HostKey` is configured.
pub const DEFAULT_HOST_KEYS: [&str; 3] =
    ["/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ecdsa_key", "/etc/ssh/ssh_host_ed25519_key"];

/// The compiled-in default of a keyword (OpenSSH 9.2 as shipped by Debian
/// 12; Debian's packaged sshd_config changes some, e.g. `X11Forwarding yes`
/// and `KbdInteractiveAuthentication no`, but those are file settings).
pub fn openssh_default(keyword: &str) -> Option<String> {
    let v = match keyword {
        "permitrootlogin" => "prohibit-password",
        "passwordauthentication" => "yes",
        "permitemptypasswords" => "no",
        "kbdinteractiveauthentication" => "yes",
        "x11forwarding" => "no",
        "allowtcpforwarding" => "yes",
        "disableforwarding" => "no",
        "maxauthtries" => "6",
        "logingracetime" => "120",
        "clientaliveinterval" => "0",
        "clientalivecountmax" => "3",
        "hostbasedauthentication" => "no",
        "ignorerhosts" => "yes",
        "permituserenvironment" => "no",
        "pubkeyauthentication" => "yes",
        "usepam" => "no",
        "loglevel" => "INFO",
        "ciphers" => return Some(DEFAULT_CIPHERS.join(",")),
        "macs" => return Some(DEFAULT_MACS.join(",")),
        "kexalgorithms" => return Some(DEFAULT_KEX.join(",")),
        _ => return None,
    };
    Some(v.to_string())
}
