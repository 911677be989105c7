//! The daemon's live status: what systemd shows (`STATUS=` via sd_notify)
//! and what the logs summarise. A std Mutex is fine here: it is never held
//! across an `.await`.

use std::sync::Mutex;

use chrono::{DateTime, Local};

#[derive(Debug, Default, Clone)]
struct State {
    last_report: Option<DateTime<Local>>,
    spooled: usize,
    connected: bool,
    last_error: Option<String>,
    acked_seq: u64,
    quarantined: usize,
    /// Envelopes the collector refused for good, and the last reason.
    refused: usize,
    last_refusal: Option<String>,
    phase: Option<&'static str>,
}

/// Shared status, updated by the producer and the sender.
#[derive(Debug, Default)]
pub struct StatusBoard {
    state: Mutex<State>,
    /// Whether to forward changes to systemd.
    notify_systemd: bool,
}

impl StatusBoard {
    pub fn new(notify_systemd: bool) -> Self {
        Self { state: Mutex::new(State::default()), notify_systemd }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let text = match self.state.lock() {
            Ok(mut s) => {
                f(&mut s);
                render(&s)
            }
            Err(_) => return,
        };
        if self.notify_systemd {
            super::systemd::status(&text);
        }
    }

    pub fn report_made(&self, spooled: usize, quarantined: usize) {
        self.update(|s| {
            s.last_report = Some(Local::now());
            s.spooled = spooled;
            s.quarantined = quarantined;
        });
    }

    pub fn spooled(&self, spooled: usize, quarantined: usize) {
        self.update(|s| {
            s.spooled = spooled;
            s.quarantined = quarantined;
        });
    }

    pub fn connected(&self) {
        self.update(|s| {
            s.connected = true;
            s.last_error = None;
        });
    }

    pub fn disconnected(&self, why: &str) {
        self.update(|s| {
            s.connected = false;
            s.last_error = Some(why.to_string());
        });
    }

    pub fn acked(&self, seq: u64, spooled: usize) {
        self.update(|s| {
            s.acked_seq = s.acked_seq.max(seq);
            s.spooled = spooled;
        });
    }

    /// The collector refused envelope `seq` for good; it was set aside.
    pub fn refused(&self, seq: u64, reason: &str) {
        self.update(|s| {
            s.refused += 1;
            s.last_refusal = Some(format!("seq {seq}: {reason}"));
        });
    }

    pub fn phase(&self, phase: &'static str) {
        self.update(|s| s.phase = Some(phase));
    }

    /// Highest seq the collector acknowledged in this process.
    pub fn acked_seq(&self) -> u64 {
        self.state.lock().map(|s| s.acked_seq).unwrap_or(0)
    }

    /// The status line.
    pub fn text(&self) -> String {
        self.state.lock().map(|s| render(&s)).unwrap_or_default()
    }
}

fn render(s: &State) -> String {
    let mut parts = Vec::new();
    if let Some(p) = s.phase {
        parts.push(p.to_string());
    }
    parts.push(match s.last_report {
        Some(t) => format!("last report {}", t.format("%H:%M:%S")),
        None => "no report yet".to_string(),
    });
    parts.push(format!("{} spooled", s.spooled));
    if s.quarantined > 0 {
        parts.push(format!("{} quarantined", s.quarantined));
    }
    if let Some(last) = &s.last_refusal {
        parts.push(format!("{} refused by the collector (last {last})", s.refused));
    }
    parts.push(match (&s.connected, &s.last_error) {
        (true, _) => "connected".to_string(),
        (false, Some(e)) => format!("disconnected ({e})"),
        (false, None) => "connecting".to_string(),
    });
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line() {
        let b = StatusBoard::new(false);
        assert_eq!(b.text(), "no report yet, 0 spooled, connecting");
        b.report_made(3, 1);
        b.disconnected("connection refused");
        let t = b.text();
        assert!(t.starts_with("last report "), "{t}");
        assert!(t.ends_with("3 spooled, 1 quarantined, disconnected (connection refused)"), "{t}");
        b.connected();
        b.acked(7, 0);
        assert!(b.text().ends_with("0 spooled, 1 quarantined, connected"));
        assert_eq!(b.acked_seq(), 7);
    }
}
