//! kosmos-node-agent: continuous hardening and compliance attestation for
//! Scaleway Kosmos external nodes.
//!
//! Data flows one way: the [`host::Host`] (files, /proc, commands) feeds
//! [`facts`], which pure [`checks`] evaluate into findings; the [`engine`]
//! applies a [`profile`] and assembles a [`report::Report`].

pub mod check;
pub mod checks;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod durable;
pub mod engine;
pub mod enroll;
pub mod facts;
pub mod first_seen;
pub mod host;
pub mod model;
pub mod profile;
pub mod report;
pub mod sender;
pub mod spool;
pub mod state;
pub mod status;
pub mod watch;

#[cfg(test)]
pub(crate) mod testpki;
#[cfg(test)]
pub(crate) mod testutil;
