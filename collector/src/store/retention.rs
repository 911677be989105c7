//! Retention: what the store keeps as it ages, applied by the serving
//! collector in the background and by `kosmos-collector prune`.
//!
//! The policy (`[retention]` in collector.toml) has two horizons:
//! - `keep_all`: every envelope is kept this long. Past it, compact
//!   attestations are removed; full reports (every change, and the daily
//!   checkpoint) stay, so each day's findings remain provable.
//! - `max_age` (optional): nothing older is kept. A node's chain is cut at
//!   its first full report inside the horizon, so no compact attestation
//!   kept ever refers to a removed report; the drift timeline, the daily
//!   standings and the events older than the horizon go too.
//!
//! Every removal is recorded as a [`PrunedRange`] (with the hash the first
//! removed body chained on and the hash of the last one), so an evidence
//! bundle shows a retention gap where envelopes were removed, never a
//! broken chain, and the chain across the gap can still be checked against
//! what was there. Each run that removed anything is a row of
//! `prune_runs`.
//!
//! This module owns the policy and the per-node planning (which runs of
//! seqs go, with which hashes), as pure functions; the backends delete.

use std::time::Duration;

use kosmos_proto::chain::body_hash;
use kosmos_proto::v1::AttestationBody;
use prost::Message;

use super::{PrunedRange, Store, StoreError};

/// The retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Every envelope is kept this long.
    pub keep_all: Duration,
    /// Nothing older is kept (None: kept for good).
    pub max_age: Option<Duration>,
    /// How often the serving collector applies the policy.
    pub interval: Duration,
}

impl Policy {
    /// The policy as one line (stored with each run).
    pub fn describe(&self) -> String {
        let max = self.max_age.map_or("forever".to_string(), |d| humantime::format_duration(d).to_string());
        format!("keep_all={} max_age={max}", humantime::format_duration(self.keep_all))
    }

    /// The creation times (ms) before which envelopes are removed, as of
    /// `now_ms`.
    pub fn cutoffs(&self, now_ms: i64) -> Cutoffs {
        let before = |d: Duration| now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Cutoffs { compact_before_ms: before(self.keep_all), expired_before_ms: self.max_age.map(before) }
    }
}

/// A policy's horizons at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Compact attestations created before this are removed.
    pub compact_before_ms: i64,
    /// Everything created before this is removed.
    pub expired_before_ms: Option<i64>,
}

/// What one run of the policy removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneSummary {
    /// Full envelopes (reports and gap markers) removed as expired.
    pub envelopes: u64,
    pub compact_envelopes: u64,
    pub finding_changes: u64,
    pub node_days: u64,
    pub events: u64,
    /// Ranges recorded.
    pub ranges: u64,
    pub nodes: u64,
}

impl PruneSummary {
    pub fn is_empty(&self) -> bool {
        self.envelopes + self.compact_envelopes + self.finding_changes + self.node_days + self.events == 0
    }

    pub fn add(&mut self, other: &PruneSummary) {
        self.envelopes += other.envelopes;
        self.compact_envelopes += other.compact_envelopes;
        self.finding_changes += other.finding_changes;
        self.node_days += other.node_days;
        self.events += other.events;
        self.ranges += other.ranges;
        self.nodes += other.nodes;
    }
}

/// A stored body as retention reads it: (seq, body).
pub type AgedBody = (u64, Vec<u8>);

/// The ranges that removing `bodies` (one node's, in seq order, all to be
/// removed) leaves in the chain: runs of consecutive seqs, each with the
/// prev_hash its first body names and the hash of its last body. A body
/// that does not decode (none the collector stored) records no prev hash.
pub fn ranges_of(bodies: &[AgedBody], reason: &str, now_ms: i64) -> Vec<PrunedRange> {
    let mut out: Vec<PrunedRange> = Vec::new();
    for (seq, body) in bodies {
        let hash = body_hash(body);
        match out.last_mut() {
            Some(r) if r.last_seq.checked_add(1) == Some(*seq) => {
                r.last_seq = *seq;
                r.count += 1;
                r.last_sha256 = Some(hash);
            }
            _ => out.push(PrunedRange {
                first_seq: *seq,
                last_seq: *seq,
                count: 1,
                reason: reason.to_string(),
                prev_sha256: AttestationBody::decode(body.as_slice())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b.prev_hash.as_slice()).ok()),
                last_sha256: Some(hash),
                pruned_ms: now_ms,
            }),
        }
    }
    out
}

/// One expired range covering every seq from `first_seq` to `last_seq`
/// (stored or not), for the bodies removed there.
pub fn expired_range(first: &AgedBody, last: &AgedBody, count: u64, now_ms: i64) -> PrunedRange {
    PrunedRange {
        first_seq: first.0,
        last_seq: last.0,
        count,
        reason: "expired".into(),
        prev_sha256: AttestationBody::decode(first.1.as_slice())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.prev_hash.as_slice()).ok()),
        last_sha256: Some(body_hash(&last.1)),
        pruned_ms: now_ms,
    }
}

/// Compact attestations a node removes per store call: bounds the time the
/// writer is held (the serving collector's ingest waits meanwhile).
pub const NODE_BATCH: usize = 5000;

/// Runs store operations for [`apply`]: directly on an open store (the
/// CLI), or on the serving collector's writer thread, between ingest
/// batches.
pub trait StoreRunner {
    fn run<R, F>(&mut self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<R, StoreError> + Send + 'static;
}

impl StoreRunner for &mut dyn Store {
    fn run<R, F>(&mut self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<R, StoreError> + Send + 'static,
    {
        f(&mut **self)
    }
}

/// Apply `policy` to every node as of `now_ms`, one node (and at most
/// [`NODE_BATCH`] compact attestations) per store operation. Records the
/// run when it removed anything.
pub fn apply(policy: &Policy, now_ms: i64, runner: &mut impl StoreRunner) -> Result<PruneSummary, StoreError> {
    let cut = policy.cutoffs(now_ms);
    let ids: Vec<String> = runner.run(|s| Ok(s.nodes()?.into_iter().map(|n| n.id).collect()))?;
    let mut total = PruneSummary::default();
    for id in ids {
        let mut touched = false;
        loop {
            let node = id.clone();
            let done = runner.run(move |s| s.prune_node(&node, &cut, now_ms, NODE_BATCH))?;
            let more = done.compact_envelopes >= NODE_BATCH as u64;
            touched |= !done.is_empty();
            total.add(&done);
            if !more {
                break;
            }
        }
        total.nodes += u64::from(touched);
    }
    if let Some(before) = cut.expired_before_ms {
        let history = runner.run(move |s| s.prune_history(before))?;
        total.add(&history);
    }
    if !total.is_empty() {
        let run = total.clone();
        let described = policy.describe();
        runner.run(move |s| s.record_prune_run(now_ms, &described, &run))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use kosmos_proto::chain::{GENESIS_PREV_HASH, seal};

    fn chain(n: u64) -> Vec<AgedBody> {
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut prev = GENESIS_PREV_HASH;
        (1..=n)
            .map(|seq| {
                let env = seal(&key, &AttestationBody { seq, prev_hash: prev.to_vec(), ..Default::default() });
                prev = body_hash(&env.body);
                (seq, env.body.to_vec())
            })
            .collect()
    }

    #[test]
    fn runs_of_consecutive_seqs_carry_the_hashes_around_them() {
        let all = chain(8);
        let removed: Vec<AgedBody> = all.iter().filter(|(s, _)| ![4, 5].contains(s)).cloned().collect();
        let ranges = ranges_of(&removed[1..], "compact", 9);
        assert_eq!(
            ranges.iter().map(|r| (r.first_seq, r.last_seq, r.count)).collect::<Vec<_>>(),
            [(2, 3, 2), (6, 8, 3)]
        );
        // The first removed body chained on seq 1, the next kept one (4)
        // chains on the last removed (3).
        assert_eq!(ranges[0].prev_sha256, Some(body_hash(&all[0].1)));
        assert_eq!(ranges[0].last_sha256, Some(body_hash(&all[2].1)));
        assert_eq!(ranges[1].prev_sha256, Some(body_hash(&all[4].1)));
        assert!(ranges.iter().all(|r| r.reason == "compact" && r.pruned_ms == 9));
        assert!(ranges_of(&[], "compact", 9).is_empty());
    }

    #[test]
    fn cutoffs_follow_the_policy_and_saturate() {
        let p = Policy {
            keep_all: Duration::from_secs(10),
            max_age: Some(Duration::from_secs(100)),
            interval: Duration::from_secs(1),
        };
        assert_eq!(p.cutoffs(1_000_000), Cutoffs { compact_before_ms: 990_000, expired_before_ms: Some(900_000) });
        let forever = Policy { max_age: None, keep_all: Duration::MAX, ..p };
        assert_eq!(forever.cutoffs(5).expired_before_ms, None);
        assert!(forever.cutoffs(5).compact_before_ms < 0);
        assert_eq!(p.describe(), "keep_all=10s max_age=1m 40s");
    }
}
