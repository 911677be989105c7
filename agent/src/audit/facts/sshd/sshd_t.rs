//! The live path: the `sshd -T -C …` command line for
//! [`AUDITED_CONNECTION`] and the parsing of what it prints, which is exact
//! for the installed version and its compiled-in defaults.

use super::connection::AUDITED_CONNECTION;
use super::keywords::canonical_keyword;
use super::{Setting, Settings, truncate};
use crate::audit::host::runner::display_command;

/// Cap on `sshd -T` output we accept (it prints about 4 KiB).
pub(super) const SSHD_T_LIMIT: usize = 1024 * 1024;

/// The arguments of the `sshd -T` run for [`AUDITED_CONNECTION`].
pub fn sshd_t_args() -> Vec<String> {
    vec!["-T".to_string(), "-C".to_string(), AUDITED_CONNECTION.spec()]
}

/// The printable `sshd -T` command line, used as evidence source.
pub fn sshd_t_command() -> String {
    let args = sshd_t_args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    display_command("sshd", &refs)
}

/// Parse `sshd -T` output: one `keyword value` line per setting, keywords in
/// lowercase; repeated keywords (hostkey, port…) are kept in order.
pub fn parse_sshd_t(text: &str, source: &str) -> Result<Settings, String> {
    let mut settings = Settings::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let (kw, value) = match line.split_once([' ', '\t']) {
            Some((k, v)) => (k, v.trim()),
            None => (line, ""),
        };
        if !kw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(format!("line {}: not a `keyword value` line: {}", i + 1, truncate(line, 80)));
        }
        settings
            .entry(canonical_keyword(kw))
            .or_default()
            .push(Setting { value: value.to_string(), source: source.to_string() });
    }
    if settings.is_empty() {
        return Err("no settings printed".to_string());
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_t_output() {
        let s = parse_sshd_t(
            "port 22\nport 2222\npermitrootlogin without-password\nchallengeresponseauthentication no\nciphers a,b\n\nsubsystem sftp /usr/lib/openssh/sftp-server\n",
            "sshd -T",
        )
        .unwrap();
        assert_eq!(s["port"].len(), 2);
        assert_eq!(s["permitrootlogin"][0].value, "without-password");
        assert_eq!(s["kbdinteractiveauthentication"][0].value, "no");
        assert_eq!(s["subsystem"][0].value, "sftp /usr/lib/openssh/sftp-server");
        assert!(parse_sshd_t("", "x").is_err());
        assert!(parse_sshd_t("Bad Line\n", "x").is_err());
    }
}
