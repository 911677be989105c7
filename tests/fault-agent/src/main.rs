//! `kosmos-fault-agent`: the real agent program ([`cli::main`], the same
//! library, built with the same profile) whose registry has one more check,
//! `fault.panic`, which panics.
//!
//! It exists to prove, on a release build, that a bug in one check becomes
//! an `error` finding naming the check while the rest of the audit and the
//! daemon carry on: the engine isolates every evaluation with
//! `catch_unwind`, which only works because the release profile unwinds
//! (tests/tests/fault_injection.rs). It is a separate binary, not a feature
//! of the agent, so that nothing test-only is compiled into the agent the
//! packages ship, and so that building it next to the agent costs one small
//! link instead of a second compilation of the agent's library.

use std::process::ExitCode;

use kosmos_node_agent::audit::check::Check;
use kosmos_node_agent::audit::checks::registry;
use kosmos_node_agent::audit::model::{Outcome, Reference, Severity};
use kosmos_node_agent::cli;

/// The build profile this binary was compiled with, said in the check's
/// title so that a test can tell a release build from a debug one.
const BUILD: &str = if cfg!(debug_assertions) { "debug build" } else { "release build" };

/// The agent's checks and `fault.panic`.
fn with_fault() -> Vec<Check> {
    let mut all = registry();
    all.push(
        Check::new("fault.panic", format!("Fault injection: this check panics ({BUILD})"), Severity::Info, |_f, _p| {
            // Deliberate: the point of this check is to panic.
            #[allow(clippy::panic)]
            {
                panic!("injected fault")
            }
            #[allow(unreachable_code)]
            Outcome::pass()
        })
        .rationale("Proves that a panicking check is isolated by the engine (test builds only).")
        .remediation("None: this check exists only in the kosmos-fault-agent test binary.")
        .refs(std::iter::empty::<Reference>()),
    );
    all
}

fn main() -> ExitCode {
    cli::main(with_fault)
}
