//! kosmos-node-agent: continuous hardening and compliance attestation for
//! Scaleway Kosmos external nodes.
//!
//! Data flows one way: the [`host::Host`] (files, /proc, commands) feeds
//! [`facts`], which pure [`checks`] evaluate into findings; the [`engine`]
//! applies a [`profile`] and assembles a [`report::Report`].

pub mod check;
pub mod checks;
pub mod cli;
pub mod engine;
pub mod facts;
pub mod host;
pub mod model;
pub mod profile;
pub mod report;
pub mod state;

#[cfg(test)]
pub(crate) mod testutil;
