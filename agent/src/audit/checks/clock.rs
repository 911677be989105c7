//! Clock checks (family `clock`): the system clock is synchronised, with a
//! bounded offset when the time source reports one. TLS certificate
//! validation and signed attestations depend on it.

use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::clock::ClockFacts;
use crate::audit::model::{Outcome, Severity};

fn synchronized(facts: &Facts<'_>, params: &Params) -> Outcome {
    let c = facts.get::<ClockFacts>();
    let s = match &*c {
        ClockFacts::Offline => {
            return Outcome::not_applicable("offline root: clock synchronisation is a property of the running system");
        }
        ClockFacts::Unknown(errs) => {
            return Outcome::error(errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
        }
        ClockFacts::NoSource(why) => {
            return Outcome::fail()
                .observed(json!({"synchronized": false}))
                .evidence("time sources", why.clone())
                .note(why.clone());
        }
        ClockFacts::Known(s) => s,
    };
    let max = params.int("max_offset_ms");
    let offset_ms = s.offset_seconds.map(|o| o * 1000.0);
    let offset_ok = offset_ms.is_none_or(|o| o.abs() <= max as f64);
    let o = Outcome::verdict(s.synchronized && offset_ok)
        .observed(json!({"synchronized": s.synchronized, "offset_ms": offset_ms}))
        .expected(json!({"synchronized": true, "max_offset_ms": max}))
        .evidence(&s.source, &s.detail);
    if !s.synchronized {
        o.note("the clock is not synchronised with a time source")
    } else if !offset_ok {
        o.note(format!("the clock is off by {:.1} ms, more than {max} ms", offset_ms.unwrap_or_default()))
    } else if offset_ms.is_none() {
        o.note("synchronised; the offset is not reported by this time source")
    } else {
        o
    }
}

pub fn checks() -> Vec<Check> {
    vec![Check::new("clock.synchronized", "System clock is synchronised", Severity::Medium, synchronized)
        .param(ParamSpec::int("max_offset_ms", 1000, "largest acceptable offset from the time source, in milliseconds"))
        .rationale("TLS handshakes with the API server, certificate rotation, log correlation and signed attestations all assume a correct clock; a drifting node fails authentication in ways that are hard to diagnose.")
        .remediation("Run one time synchronisation daemon (systemd-timesyncd or chrony), allow outbound NTP (UDP 123), and check `timedatectl` or `chronyc tracking`.")]
}

#[cfg(test)]
mod tests {
    use crate::audit::model::Status;
    use crate::testutil::{eval, eval_with, offline, root_with};
    use serde_json::json;

    use crate::testutil::live_recorded as live;

    const CHRONY: &str =
        "A29FC87B,ntp.example,3,1763805000.123,-0.0123,0.0001,0.0002,-1.2,0.001,0.01,0.02,0.03,64.5,Normal\n";

    #[test]
    fn recorded_time_sources() {
        let d = root_with(&[("/.commands/chronyc_-c_tracking", CHRONY)]);
        let h = live(d.path());
        assert_eq!(eval("clock.synchronized", &h).status, Status::Pass);
        assert_eq!(eval_with("clock.synchronized", &h, &[("max_offset_ms", json!(5))]).status, Status::Fail);
        let d = root_with(&[("/.commands/timedatectl_show", "NTPSynchronized=no\n")]);
        assert_eq!(eval("clock.synchronized", &live(d.path())).status, Status::Fail);
        let d = root_with(&[("/.commands/timedatectl_show", "NTPSynchronized=yes\n")]);
        assert_eq!(eval("clock.synchronized", &live(d.path())).status, Status::Pass);
        let d = root_with(&[("/run/systemd/timesync/synchronized", "")]);
        assert_eq!(eval("clock.synchronized", &live(d.path())).status, Status::Pass);
        let d = root_with(&[("/etc/hostname", "x")]);
        assert_eq!(eval("clock.synchronized", &live(d.path())).status, Status::Fail);
        let d = root_with(&[("/.commands/timedatectl_show", "garbage\n")]);
        assert_eq!(eval("clock.synchronized", &live(d.path())).status, Status::Error);
        let d = root_with(&[("/.commands/chronyc_-c_tracking.timeout", "")]);
        let o = eval("clock.synchronized", &live(d.path()));
        assert_eq!(o.status, Status::Error);
        assert!(o.reason.unwrap().contains("timed out"));
        assert_eq!(eval("clock.synchronized", &offline(d.path())).status, Status::NotApplicable);
    }
}
