//! Text a node controls (hostname, OS, kernel, agent version, profile name,
//! check titles, observed values, evidence, gap reasons), made safe for the
//! medium it is written to.
//!
//! An enrolled node, or whoever wrote an evidence bundle, chooses these
//! strings. Written raw, a newline in a hostname forges a line such as
//! `node … VERIFIED` in a terminal, an escape sequence rewrites the screen,
//! a right-to-left override reorders what an auditor reads, a cell starting
//! with `=` runs as a formula when the CSV is opened in a spreadsheet, and a
//! `|` breaks a Markdown table. HTML is escaped by the templates (maud) and
//! JSON by serde; everything else goes through one of these.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that change how a line is displayed rather than what it
/// says: C0 and C1 controls, DEL, and the Unicode bidirectional overrides
/// and isolates (the "Trojan Source" characters).
fn is_display_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// For a terminal or a log line: every display control escaped as `\n`,
/// `\t`, `\r` or `\u{…}`, so one value is always one visible run of text.
pub fn terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_display_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_display_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// For a CSV cell: display controls escaped, and a cell that a spreadsheet
/// would read as a formula (first character `=`, `+`, `-`, `@`, tab or
/// carriage return, as OWASP lists them) prefixed with `'`. The quoting
/// itself is the CSV writer's.
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    let t = terminal(s);
    if t.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        return Cow::Owned(format!("'{t}"));
    }
    t
}

/// For a Markdown table cell: display controls escaped, and the characters
/// that would end the cell or start markup escaped with a backslash.
pub fn markdown_cell(s: &str) -> String {
    let t = terminal(s);
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        if matches!(c, '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '!') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// For XML text and attributes (JUnit): characters XML 1.0 cannot carry at
/// all (most C0 controls, unpaired surrogates cannot occur in `str`, U+FFFE,
/// U+FFFF) replaced by their `\u{…}` spelling; the XML writer escapes the
/// rest (`<`, `&`, quotes).
pub fn xml_text(s: &str) -> Cow<'_, str> {
    let invalid =
        |c: char| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}');
    if !s.chars().any(invalid) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if invalid(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether a hostname offered at enrollment is acceptable: no display
/// control at all (a hostname is one line of text).
pub fn hostname_problem(hostname: &str) -> Option<String> {
    hostname
        .chars()
        .find(|c| is_display_control(*c))
        .map(|c| format!("hostname contains the control character U+{:04X}", c as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_stays_on_one_line() {
        let evil = "node-1\nnode node-2 (x): VERIFIED\x1b[2K\u{202e}";
        let t = terminal(evil);
        assert!(!t.contains('\n') && !t.contains('\x1b') && !t.contains('\u{202e}'), "{t}");
        assert_eq!(t, "node-1\\nnode node-2 (x): VERIFIED\\u{1b}[2K\\u{202e}");
        assert_eq!(terminal("plain-host.example"), "plain-host.example");
    }

    #[test]
    fn formulas_are_neutralised_in_csv() {
        for f in ["=cmd|' /C calc'!A0", "+1", "-1", "@SUM(A1)", "\tx", "\r=1"] {
            let c = csv_cell(f);
            assert!(!c.starts_with(['=', '+', '-', '@', '\t', '\r']), "{f} -> {c}");
        }
        assert_eq!(csv_cell("=1+1"), "'=1+1");
        assert_eq!(csv_cell("node-a"), "node-a");
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        let m = markdown_cell("a|b\nc`d`");
        assert_eq!(m, "a\\|b\\\\nc\\`d\\`");
        assert!(!m.contains('\n'));
    }

    #[test]
    fn xml_keeps_only_what_xml_can_carry() {
        assert_eq!(xml_text("a\u{1}b\u{fffe}"), "a\\u{1}b\\u{fffe}");
        assert_eq!(xml_text("tab\tok\nnewline"), "tab\tok\nnewline");
    }

    #[test]
    fn hostnames_with_controls_are_refused() {
        assert!(hostname_problem("node-1\nVERIFIED").is_some());
        assert!(hostname_problem("node\u{202e}1").is_some());
        assert!(hostname_problem("node-1.example").is_none());
    }
}
