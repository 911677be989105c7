//! kosmos-node-agent: continuous hardening and compliance attestation for
//! Scaleway Kosmos external nodes.
//!
//! The crate has three wings and one door between them:
//!
//! - [`audit`]: the audit library. The [`audit::host::Host`] (the audited
//!   system: live, or an offline root) feeds [`audit::facts`], which the pure
//!   [`audit::checks`] evaluate; the [`audit::engine`] applies a
//!   [`audit::profile`] and builds the [`audit::report::Report`]. It never
//!   writes anything and knows nothing of the other wings.
//! - [`state`]: the agent's own memory on the auditing machine (default
//!   [`state::DEFAULT_STATE_DIR`]): kubelet and firewall drift snapshots,
//!   first-seen times of pending updates, and the one durable-write
//!   primitive every file the agent keeps goes through. It feeds the audit
//!   through run hooks and persists what the run computed.
//! - [`daemon`]: `kosmos-node-agent run` and `enroll`: configuration, the
//!   node identity on disk, the TLS client, the spool of signed envelopes,
//!   the sender, file watches and the systemd status line.
//! - [`audit_run`]: the one audit entry. `check` and the daemon both run
//!   their audits through it, so they apply the same state hooks and the
//!   same rules for "is this the live host" ([`audit::host::Host::at`]) and
//!   for which state directory applies ([`state::dir_for`]).
//!
//! [`cli`] parses the command line and calls into the wings; `main` only
//! calls [`cli::main`] with the [`audit::checks::registry`].

pub mod audit;
pub mod audit_run;
pub mod cli;
pub mod daemon;
pub mod state;

#[cfg(test)]
pub(crate) mod testpki;
#[cfg(test)]
pub(crate) mod testutil;
