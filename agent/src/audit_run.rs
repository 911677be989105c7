//! The one audit entry: a host, a profile, the agent's state, a selection
//! and a date in; a report out. `check` and the daemon both audit through
//! [`audit`], so they agree on which state directory applies
//! ([`crate::state::dir_for`], which `baseline pin` uses too) and get the
//! same state hooks (kubelet and firewall drift, first-seen times of
//! updates). Which host is live is decided by [`Host::at`] for all three.

use std::path::Path;

use chrono::NaiveDate;

use crate::audit::check::Check;
use crate::audit::engine::{self, RunOptions};
use crate::audit::host::Host;
use crate::audit::profile::Profile;
use crate::audit::report::Report;
use crate::state::{self, StateHooks};

/// What to audit, and with which memory.
#[derive(Debug)]
pub struct AuditRequest<'a> {
    pub host: &'a Host,
    pub profile: &'a Profile,
    /// Explicit check ids; when set, they replace the profile's selection.
    pub only: Option<&'a [String]>,
    /// The date waivers and end-of-life dates are judged against.
    pub today: NaiveDate,
    /// The state directory given by the user or the configuration; when
    /// absent, [`state::dir_for`] decides.
    pub state_dir: Option<&'a Path>,
}

/// Run the audit: the state layer feeds the checks before the run and
/// persists what they computed after it.
pub fn audit(registry: &[Check], req: &AuditRequest<'_>) -> Report {
    let dir = state::dir_for(req.host, req.state_dir);
    let hooks = StateHooks::new(dir.as_deref().map_err(Clone::clone), req.profile);
    let opts = RunOptions { profile: req.profile, only: req.only, today: req.today };
    engine::run(req.host, registry, &opts, &hooks.hooks())
}
