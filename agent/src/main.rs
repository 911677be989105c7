//! `kosmos-node-agent`: the agent program ([`cli::main`]) with every check
//! of the registry.

use std::process::ExitCode;

use kosmos_node_agent::audit::checks::registry;
use kosmos_node_agent::cli;

fn main() -> ExitCode {
    cli::main(registry)
}
