//! kosmos-collector: receives, verifies and stores the signed attestations of
//! kosmos-node-agent, and enrolls nodes.
//!
//! `main` parses the command line and calls [`cli::run`]; the server itself
//! ([`server::run`]) takes its listener and shutdown signal from the caller.

pub mod cli;
pub mod config;
pub mod dashboard;
pub mod evidence;
pub mod fleet;
pub mod metrics;
pub mod notify;
pub mod pki;
pub mod server;
pub mod service;
pub mod store;
pub mod systemd;
pub mod untrusted;
