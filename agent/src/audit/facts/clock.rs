//! Clock synchronisation state of the live host, from chrony
//! (`chronyc -c tracking`, which also gives the offset), systemd's
//! `timedatectl show`, or systemd-timesyncd's flag file
//! `/run/systemd/timesync/synchronized`, in that order of detail.

use super::{FactError, Facts, Gather};
use crate::audit::host::Host;

/// What a time source said.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockState {
    pub synchronized: bool,
    /// Offset of the system clock from the reference, in seconds, when known.
    pub offset_seconds: Option<f64>,
    /// The command or file that decided.
    pub source: String,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub enum ClockFacts {
    Offline,
    Known(ClockState),
    /// A source exists but could not be read; the errors of each attempt.
    Unknown(Vec<FactError>),
    /// No time synchronisation source at all: nothing keeps the clock right.
    NoSource(String),
}

/// Parse `chronyc -c tracking` (CSV; field 2 is the stratum, field 4 the
/// system time offset in seconds, the last field the leap status).
pub fn parse_chrony(text: &str) -> Result<ClockState, String> {
    let line = text.lines().next().ok_or("empty output")?;
    let f: Vec<&str> = line.split(',').collect();
    if f.len() < 14 {
        return Err(format!("{} fields, expected 14", f.len()));
    }
    let stratum: u32 = f.get(2).and_then(|s| s.parse().ok()).ok_or("stratum is not a number")?;
    let offset: f64 =
        f.get(4).and_then(|s| s.parse().ok()).filter(|o: &f64| o.is_finite()).ok_or("offset is not a number")?;
    let leap = f.last().copied().unwrap_or("").trim();
    let synchronized = leap != "Not synchronised" && stratum > 0 && stratum < 16;
    Ok(ClockState {
        synchronized,
        offset_seconds: Some(offset),
        source: "chronyc -c tracking".into(),
        detail: format!("stratum {stratum}, offset {offset:+.6} s, leap status {leap}"),
    })
}

/// Parse `timedatectl show` (`NTPSynchronized=yes`).
pub fn parse_timedatectl(text: &str) -> Result<ClockState, String> {
    let v =
        text.lines().find_map(|l| l.trim().strip_prefix("NTPSynchronized=")).ok_or("no NTPSynchronized property")?;
    let synchronized = match v.trim() {
        "yes" => true,
        "no" => false,
        o => return Err(format!("NTPSynchronized={o}")),
    };
    Ok(ClockState {
        synchronized,
        offset_seconds: None,
        source: "timedatectl show".into(),
        detail: format!("NTPSynchronized={}", v.trim()),
    })
}

fn from_command(
    host: &Host,
    program: &str,
    args: &[&str],
    parse: fn(&str) -> Result<ClockState, String>,
) -> Result<Option<ClockState>, FactError> {
    let shown = crate::audit::host::runner::display_command(program, args);
    match host.run(program, args) {
        Ok(out) if out.success() => {
            parse(out.stdout_text(&shown)?).map(Some).map_err(|e| FactError::new(format!("{shown}: {e}")))
        }
        // timedatectl without systemd as PID 1 (containers): no source.
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("not been booted with systemd") => Ok(None),
        Ok(out) => Err(FactError::new(format!(
            "{shown}: exit status {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim().chars().take(200).collect::<String>()
        ))),
        Err(e) if e.is_unavailable() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Gather for ClockFacts {
    fn gather(facts: &Facts<'_>) -> Self {
        let host = facts.host();
        if !host.is_live() {
            return ClockFacts::Offline;
        }
        let mut errors = Vec::new();
        match from_command(host, "chronyc", &["-c", "tracking"], parse_chrony) {
            Ok(Some(s)) => return ClockFacts::Known(s),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        match from_command(host, "timedatectl", &["show"], parse_timedatectl) {
            Ok(Some(s)) => return ClockFacts::Known(s),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        let flag = "/run/systemd/timesync/synchronized";
        if host.exists(flag) {
            return ClockFacts::Known(ClockState {
                synchronized: true,
                offset_seconds: None,
                source: flag.into(),
                detail: "systemd-timesyncd reports a synchronised clock".into(),
            });
        }
        if errors.is_empty() {
            return ClockFacts::NoSource(format!(
                "no time synchronisation source: chronyc and timedatectl (with systemd) are unavailable and {flag} does not exist"
            ));
        }
        ClockFacts::Unknown(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chrony_and_timedatectl() {
        let c = parse_chrony(
            "A29FC87B,ntp.example,3,1763805000.123,-0.000123,0.0001,0.0002,-1.2,0.001,0.01,0.02,0.03,64.5,Normal\n",
        )
        .unwrap();
        assert!(c.synchronized);
        assert_eq!(c.offset_seconds, Some(-0.000123));
        let c = parse_chrony("00000000,,0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,1.0,0.0,Not synchronised\n").unwrap();
        assert!(!c.synchronized);
        assert!(parse_chrony("a,b").is_err());
        assert!(parse_chrony("A,b,3,1,NaN,0,0,0,0,0,0,0,0,Normal").is_err());
        assert!(parse_timedatectl("Timezone=UTC\nNTPSynchronized=yes\n").unwrap().synchronized);
        assert!(!parse_timedatectl("NTPSynchronized=no\n").unwrap().synchronized);
        assert!(parse_timedatectl("NTP=yes\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_chrony(&s);
            let _ = parse_timedatectl(&s);
        }
    }
}
