//! The audit library: what the agent knows how to judge, with no knowledge
//! of daemons, networks or its own state on disk.
//!
//! Data flows one way: the [`host::Host`] (files, /proc, commands of the
//! audited system, live or an offline root) feeds [`facts`], which the pure
//! [`checks`] evaluate into findings ([`model::Outcome`]); the [`engine`]
//! applies a [`profile`] (selection, parameters, waivers) and assembles a
//! [`report::Report`], which [`report`] also renders. Facts that do not come
//! from the host (the previous drift snapshots, first-seen times) are handed
//! in by run hooks ([`engine::RunHook`]), which the agent's [`crate::state`]
//! implements.

pub mod check;
pub mod checks;
pub mod engine;
pub mod facts;
pub mod host;
pub mod model;
pub mod profile;
pub mod report;
