//! The syntax of one sshd_config line, as servconf.c reads it: a
//! case-insensitive keyword, `Keyword value` or `Keyword=value`, arguments
//! split like argv (quotes, backslash escapes), `#` comments.

use super::keywords::canonical_keyword;

/// One line of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Blank or comment.
    Empty,
    /// A keyword (lowercase, canonical) with its arguments.
    Directive { keyword: String, args: Vec<String> },
    /// A line sshd rejects, with the reason.
    Bad(String),
}

/// Split one line like servconf.c: keyword up to whitespace or `=`, then
/// arguments split like argv_split(3) (quotes, backslash escapes, `#`
/// comments at the start of an argument).
pub fn parse_line(raw: &str) -> Line {
    let line = raw.trim_end_matches([' ', '\t', '\r', '\n', '\x0c']).trim_start_matches([' ', '\t']);
    if line.is_empty() || line.starts_with('#') {
        return Line::Empty;
    }
    let end = line.find([' ', '\t', '=', '"', '\'']).unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    if keyword.is_empty() {
        // sshd ignores a line whose keyword is empty (e.g. "=x").
        return Line::Empty;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start_matches([' ', '\t']);
    if rest.is_empty() {
        return Line::Bad(format!("no argument after keyword \"{keyword}\""));
    }
    match split_args(rest) {
        Ok(args) if args.is_empty() => Line::Bad(format!("{keyword}: missing argument")),
        Ok(args) => Line::Directive { keyword: canonical_keyword(keyword), args },
        Err(e) => Line::Bad(e),
    }
}

/// argv_split with comment termination (OpenSSH misc.c).
fn split_args(s: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut args = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars.get(i).copied().unwrap_or(' ');
        if c == ' ' || c == '\t' {
            i += 1;
            continue;
        }
        if c == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.get(i) {
            if c == '\\' {
                match chars.get(i + 1) {
                    Some(&n) if n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ') => {
                        arg.push(n);
                        i += 2;
                    }
                    _ => {
                        arg.push(c);
                        i += 1;
                    }
                }
                continue;
            }
            match quote {
                None if c == ' ' || c == '\t' => break,
                None if c == '"' || c == '\'' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ => arg.push(c),
            }
            i += 1;
        }
        if quote.is_some() {
            return Err("invalid quotes (unterminated quoted argument)".to_string());
        }
        args.push(arg);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_syntax() {
        let d = |k: &str, a: &[&str]| Line::Directive {
            keyword: k.to_string(),
            args: a.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(parse_line("  PermitRootLogin no  # c"), d("permitrootlogin", &["no"]));
        assert_eq!(parse_line("PermitRootLogin=no"), d("permitrootlogin", &["no"]));
        assert_eq!(parse_line("PermitRootLogin = no\r"), d("permitrootlogin", &["no"]));
        assert_eq!(parse_line("\tMaxAuthTries\t3"), d("maxauthtries", &["3"]));
        assert_eq!(parse_line("Banner \"/etc/my banner\""), d("banner", &["/etc/my banner"]));
        assert_eq!(parse_line("AcceptEnv 'LANG LC_*' X\\ Y"), d("acceptenv", &["LANG LC_*", "X Y"]));
        assert_eq!(parse_line("ChallengeResponseAuthentication no"), d("kbdinteractiveauthentication", &["no"]));
        assert_eq!(parse_line("# PermitRootLogin yes"), Line::Empty);
        assert_eq!(parse_line("   "), Line::Empty);
        assert!(matches!(parse_line("PermitRootLogin"), Line::Bad(_)));
        assert!(matches!(parse_line("PermitRootLogin #no"), Line::Bad(_)));
        assert!(matches!(parse_line("Banner \"/etc/x"), Line::Bad(_)));
    }
}
