//! Fault injection (family `fault`), compiled only with the
//! `fault-injection` cargo feature, which no package enables
//! (`packaging/test.sh` checks that the packaged binaries list no `fault.*`
//! check).
//!
//! It exists to prove, on a release build of the real binary, that a bug in
//! one check becomes an `error` finding naming the check while the rest of
//! the audit and the daemon carry on: the engine isolates every evaluation
//! with `catch_unwind`, which only works because the release profile unwinds.

use crate::audit::check::Check;
use crate::audit::model::{Outcome, Reference, Severity};

/// The build profile this binary was compiled with, said in the check's
/// title so that a test can tell a release build from a debug one.
const BUILD: &str = if cfg!(debug_assertions) { "debug build" } else { "release build" };

/// Fault injection checks.
pub fn checks() -> Vec<Check> {
    vec![
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
        .remediation("None: this check exists only in builds with the fault-injection feature.")
        .refs(std::iter::empty::<Reference>()),
    ]
}
