//! The chain policy of ingest, decided once for every backend: given what
//! the store holds of a node's chain and one verified envelope, whether the
//! envelope is stored as the new head, acked without being stored, or
//! refused, and which chain events that records (gap, fork, replay, spool
//! overflow, clock anomalies, revocation).
//!
//! It is a pure function. The one thing it may need from the database, the
//! hash stored at a seq at or below the head (to tell an exact re-send from
//! a conflicting body), it asks through a lookup the backend passes in, and
//! only in that case. A backend applies the judgement under its own
//! per-node serialisation: the judgement is only as good as the head it was
//! given.

use kosmos_proto::chain::{self, ChainHead, ChainStep};
use kosmos_proto::compact::{self, Baseline};
use kosmos_proto::v1::{AttestationBody, Trigger};

/// How far ahead of the collector's clock a body may have been created
/// before it is recorded as `clock_skew`.
pub const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// How far before the previous envelope's creation time a body may have
/// been created before it is recorded as `clock_backwards` (timers of one
/// second and clock slewing stay below it).
pub const CLOCK_BACKWARDS_TOLERANCE_MS: i64 = 1000;

/// The kinds of event recorded on a node. The strings are stable: they are
/// stored, exported in evidence bundles and shown in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Seqs are missing before the stored envelope.
    Gap,
    /// The chain was broken: a prev_hash that does not name the head, or a
    /// different body for a stored seq.
    Fork,
    /// An envelope at or below the head: an exact re-send, or a seq that was
    /// skipped and arrived late.
    Replay,
    /// The agent's spool dropped reports before delivery (it said so).
    SpoolOverflow,
    /// Created too far ahead of the collector's clock.
    ClockSkew,
    /// Created before the previous envelope.
    ClockBackwards,
    /// An envelope from a revoked node.
    Revoked,
    BadSignature,
    IdentityMismatch,
    SeqOutOfRange,
    MalformedEnvelope,
    MalformedReport,
    StoreFailed,
    /// A compact attestation whose claim (same findings as a stored full
    /// report) does not hold: refused.
    FalseClaim,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::Gap,
        EventKind::Fork,
        EventKind::Replay,
        EventKind::SpoolOverflow,
        EventKind::ClockSkew,
        EventKind::ClockBackwards,
        EventKind::Revoked,
        EventKind::BadSignature,
        EventKind::IdentityMismatch,
        EventKind::SeqOutOfRange,
        EventKind::MalformedEnvelope,
        EventKind::MalformedReport,
        EventKind::StoreFailed,
        EventKind::FalseClaim,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Gap => "gap",
            EventKind::Fork => "fork",
            EventKind::Replay => "replay",
            EventKind::SpoolOverflow => "spool_overflow",
            EventKind::ClockSkew => "clock_skew",
            EventKind::ClockBackwards => "clock_backwards",
            EventKind::Revoked => "revoked",
            EventKind::BadSignature => "bad_signature",
            EventKind::IdentityMismatch => "identity_mismatch",
            EventKind::SeqOutOfRange => "seq_out_of_range",
            EventKind::MalformedEnvelope => "malformed_envelope",
            EventKind::MalformedReport => "malformed_report",
            EventKind::StoreFailed => "store_failed",
            EventKind::FalseClaim => "false_claim",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the store holds of a node's chain when an envelope arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeChain {
    pub revoked: bool,
    /// The last stored link; None before the first envelope.
    pub head: Option<ChainHead>,
    /// The creation time (node's clock) of the head's body.
    pub last_created_ms: Option<i64>,
    /// What the node's compact attestations may refer to: its latest report,
    /// when that covered the whole profile, with the digest the store
    /// computed from it ([`compact::next_baseline`]).
    pub baseline: Option<Baseline>,
}

impl NodeChain {
    /// The chain after `body` (hashing to `body_sha256`) was stored as its
    /// new head; `report_digest` is the index digest the store computed
    /// from the body's report (None without one, or when it could not be
    /// read).
    pub fn advanced(self, body: &AttestationBody, body_sha256: [u8; 32], report_digest: Option<[u8; 32]>) -> NodeChain {
        NodeChain {
            revoked: self.revoked,
            head: Some(ChainHead { seq: body.seq, hash: body_sha256 }),
            last_created_ms: Some(body.created_at_unix_ms),
            baseline: compact::next_baseline(self.baseline, body, report_digest),
        }
    }

    /// The seq acked for the node: the head's, 0 before the first envelope.
    pub fn head_seq(&self) -> u64 {
        self.head.map_or(0, |h| h.seq)
    }
}

/// What happens to the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Store it as the node's new head and ack its seq.
    Store,
    /// Store nothing and ack the current head: the seq is at or below it
    /// (the agent may drop what the ack covers; the chain keeps the first
    /// body stored for a seq).
    AckHead,
    /// Refuse it; the reason goes to the agent.
    Refuse { reason: String },
    /// Refuse this envelope for good: it will never be accepted as it is
    /// (the agent sets it aside and declares the hole).
    Reject { reason: String },
}

/// One event the judgement records on the node (at the envelope's seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEvent {
    pub kind: EventKind,
    pub detail: String,
}

/// The decision on one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub admission: Admission,
    /// Recorded whatever the admission, in this order.
    pub events: Vec<ChainEvent>,
}

/// Judge a verified envelope (`body`, hashing to `body_sha256`) against the
/// node's chain at `now_ms` (the collector's clock). `stored_hash_at(seq)`
/// returns the hash of the body stored at `seq`, if any; it is called only
/// for a seq at or below the head, and its error is returned as is.
pub fn judge<E>(
    node: &NodeChain,
    body: &AttestationBody,
    body_sha256: &[u8; 32],
    now_ms: i64,
    stored_hash_at: impl FnOnce(u64) -> Result<Option<[u8; 32]>, E>,
) -> Result<Judgement, E> {
    let mut events = Vec::new();
    let mut record = |kind: EventKind, detail: String| events.push(ChainEvent { kind, detail });
    let head_seq = node.head_seq();
    if node.revoked {
        record(EventKind::Revoked, "envelope from a revoked node refused".into());
        return Ok(Judgement { admission: Admission::Refuse { reason: "node certificate is revoked".into() }, events });
    }
    match chain::classify(node.head, body) {
        ChainStep::Old => {
            match stored_hash_at(body.seq)? {
                Some(h) if &h == body_sha256 => record(
                    EventKind::Replay,
                    format!("identical envelope for seq {} already stored; ignored", body.seq),
                ),
                Some(h) => record(
                    EventKind::Fork,
                    format!(
                        "a different body for seq {} (sha256 {}) than the stored one ({}); the first is kept",
                        body.seq,
                        hex(body_sha256),
                        hex(&h)
                    ),
                ),
                None => record(
                    EventKind::Replay,
                    format!("seq {} arrived after the head {head_seq} and was never stored; ignored", body.seq),
                ),
            }
            return Ok(Judgement { admission: Admission::AckHead, events });
        }
        ChainStep::Gap { first_missing, last_missing } => {
            record(EventKind::Gap, format!("seq {first_missing}..={last_missing} missing before seq {}", body.seq))
        }
        ChainStep::Fork { expected_prev } => record(
            EventKind::Fork,
            format!(
                "prev_hash {} does not name the stored head {} (seq {head_seq}): the chain was broken",
                hex(&body.prev_hash),
                hex(&expected_prev)
            ),
        ),
        ChainStep::Next => {}
    }
    if compact::is_compact(body)
        && let Err(e) = compact::check_claim(body, node.baseline)
    {
        // The chain events above describe an envelope that is not stored:
        // only the refusal is recorded.
        events.clear();
        let detail = format!("compact attestation seq {} refused: {e}", body.seq);
        events.push(ChainEvent { kind: EventKind::FalseClaim, detail: detail.clone() });
        return Ok(Judgement { admission: Admission::Reject { reason: detail }, events });
    }
    if body.trigger == Trigger::Gap as i32 {
        let d = body.dropped.clone().unwrap_or_default();
        record(
            EventKind::SpoolOverflow,
            format!("agent dropped seq {}..={} before delivery: {}", d.first_seq, d.last_seq, d.reason),
        );
    }
    if body.created_at_unix_ms > now_ms.saturating_add(CLOCK_SKEW_MS) {
        record(
            EventKind::ClockSkew,
            format!("created {} ms ahead of the collector's clock", body.created_at_unix_ms.saturating_sub(now_ms)),
        );
    }
    if let Some(prev) = node.last_created_ms
        && body.created_at_unix_ms.saturating_add(CLOCK_BACKWARDS_TOLERANCE_MS) < prev
    {
        record(
            EventKind::ClockBackwards,
            format!("created {} ms before the previous envelope", prev.saturating_sub(body.created_at_unix_ms)),
        );
    }
    Ok(Judgement { admission: Admission::Store, events })
}

/// The batch policy of ingest, shared by every backend: an envelope that
/// failed to store (a database error on its rows, undone by its savepoint)
/// fails the later envelopes of its node in the same batch too, because the
/// chain cannot go on past it now (the agent resends them all); a seq the
/// store cannot represent is refused before anything is written; every
/// failure is recorded as a `store_failed` event once the batch is done.
#[derive(Debug, Default)]
pub struct BatchFailures {
    /// node -> why its envelope failed.
    failed: std::collections::HashMap<String, String>,
    /// (node, seq, why), in order.
    recorded: Vec<(String, u64, String)>,
}

impl BatchFailures {
    /// The result of `item` without storing it, when it must not be
    /// attempted; None when the backend should store it.
    pub fn precheck(&self, item: &crate::store::IngestItem) -> Option<crate::store::IngestResult> {
        use crate::store::IngestResult;
        if let Some(why) = self.failed.get(&item.node_id) {
            return Some(IngestResult::Failed {
                reason: format!("an earlier envelope of this node failed in the same batch: {why}"),
            });
        }
        // The service refuses these first; a store never keeps a seq other
        // than the one it acks.
        if item.body.seq > i64::MAX as u64 {
            return Some(IngestResult::Refused {
                reason: format!("seq {} cannot be stored (above {})", item.body.seq, i64::MAX),
            });
        }
        None
    }

    /// Storing `item` failed with `why`: its result.
    pub fn failed(&mut self, item: &crate::store::IngestItem, why: String) -> crate::store::IngestResult {
        tracing::error!(node = %item.node_id, seq = item.body.seq, "storing an envelope failed: {why}");
        self.failed.insert(item.node_id.clone(), why.clone());
        self.recorded.push((item.node_id.clone(), item.body.seq, why.clone()));
        crate::store::IngestResult::Failed { reason: why }
    }

    /// The `store_failed` events to record in the batch's transaction, after
    /// the failed savepoints were undone.
    pub fn events(&self, now_ms: i64) -> Vec<crate::store::NodeEvent> {
        self.recorded
            .iter()
            .map(|(node, seq, why)| crate::store::NodeEvent {
                node_id: node.clone(),
                seq: i64::try_from(*seq).ok().map(|_| *seq),
                kind: EventKind::StoreFailed.as_str().into(),
                detail: format!("storing this envelope failed, not acked (the agent will resend it): {why}"),
                at_ms: now_ms,
            })
            .collect()
    }
}

/// Lowercase hex of a hash, for event details.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::convert::Infallible;

    use kosmos_proto::v1::DroppedRange;

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn body(seq: u64, prev: [u8; 32], created: i64) -> AttestationBody {
        AttestationBody {
            node_id: "n1".into(),
            seq,
            prev_hash: prev.to_vec(),
            created_at_unix_ms: created,
            ..Default::default()
        }
    }

    fn hash_of(seq: u64) -> [u8; 32] {
        [seq as u8; 32]
    }

    /// A chain of `n` stored links with hashes `hash_of(seq)`.
    fn stored(n: u64) -> (NodeChain, HashMap<u64, [u8; 32]>) {
        let node = NodeChain {
            revoked: false,
            head: (n > 0).then(|| ChainHead { seq: n, hash: hash_of(n) }),
            last_created_ms: (n > 0).then_some(NOW - 1000),
            baseline: None,
        };
        (node, (1..=n).map(|s| (s, hash_of(s))).collect())
    }

    fn run(node: &NodeChain, store: &HashMap<u64, [u8; 32]>, b: &AttestationBody, h: [u8; 32]) -> Judgement {
        judge(node, b, &h, NOW, |seq| Ok::<_, Infallible>(store.get(&seq).copied())).unwrap()
    }

    fn kinds(j: &Judgement) -> Vec<&'static str> {
        j.events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn the_next_link_is_stored_without_events() {
        let (node, store) = stored(0);
        let j = run(&node, &store, &body(1, chain::GENESIS_PREV_HASH, NOW), hash_of(1));
        assert_eq!(j, Judgement { admission: Admission::Store, events: vec![] });
        let (node, store) = stored(3);
        let j = run(&node, &store, &body(4, hash_of(3), NOW), hash_of(4));
        assert_eq!(j.admission, Admission::Store);
        assert!(j.events.is_empty(), "{j:?}");
    }

    #[test]
    fn an_exact_resend_is_acked_as_a_replay_without_storing() {
        let (node, store) = stored(3);
        let j = run(&node, &store, &body(2, hash_of(1), NOW), hash_of(2));
        assert_eq!(j.admission, Admission::AckHead);
        assert_eq!(kinds(&j), ["replay"]);
        assert!(j.events[0].detail.contains("identical envelope for seq 2"), "{j:?}");
    }

    #[test]
    fn a_different_body_for_a_stored_seq_is_a_fork_and_the_first_is_kept() {
        let (node, store) = stored(3);
        let j = run(&node, &store, &body(2, hash_of(1), NOW), [0xee; 32]);
        assert_eq!(j.admission, Admission::AckHead);
        assert_eq!(kinds(&j), ["fork"]);
        assert!(j.events[0].detail.contains("the first is kept"), "{j:?}");
        assert!(j.events[0].detail.contains(&hex(&[0xee; 32])), "{j:?}");
    }

    #[test]
    fn a_late_seq_inside_a_recorded_gap_is_a_replay_that_stores_nothing() {
        let (node, mut store) = stored(5);
        store.remove(&3);
        let j = run(&node, &store, &body(3, hash_of(2), NOW), hash_of(3));
        assert_eq!(j.admission, Admission::AckHead);
        assert_eq!(kinds(&j), ["replay"]);
        assert!(j.events[0].detail.contains("never stored"), "{j:?}");
    }

    #[test]
    fn the_lookup_is_asked_only_for_old_seqs_and_its_error_is_returned() {
        let (node, _) = stored(3);
        let next = judge(&node, &body(4, hash_of(3), NOW), &hash_of(4), NOW, |_| Err("must not be asked"));
        assert_eq!(next.unwrap().admission, Admission::Store);
        let old = judge(&node, &body(3, hash_of(2), NOW), &hash_of(3), NOW, |_| Err("database down"));
        assert_eq!(old.unwrap_err(), "database down");
    }

    #[test]
    fn a_gap_is_recorded_and_the_envelope_becomes_the_head() {
        let (node, store) = stored(2);
        let j = run(&node, &store, &body(6, hash_of(5), NOW), hash_of(6));
        assert_eq!(j.admission, Admission::Store);
        assert_eq!(kinds(&j), ["gap"]);
        assert_eq!(j.events[0].detail, "seq 3..=5 missing before seq 6");
    }

    #[test]
    fn a_prev_hash_that_does_not_name_the_head_is_a_fork_but_stored() {
        let (node, store) = stored(2);
        let j = run(&node, &store, &body(3, [9; 32], NOW), hash_of(3));
        assert_eq!(j.admission, Admission::Store);
        assert_eq!(kinds(&j), ["fork"]);
        assert!(j.events[0].detail.contains("the chain was broken"), "{j:?}");
    }

    #[test]
    fn a_revoked_node_is_refused_whatever_the_chain_says() {
        let (mut node, store) = stored(2);
        node.revoked = true;
        for b in [body(3, hash_of(2), NOW), body(1, chain::GENESIS_PREV_HASH, NOW)] {
            let j = run(&node, &store, &b, hash_of(b.seq));
            assert_eq!(j.admission, Admission::Refuse { reason: "node certificate is revoked".into() });
            assert_eq!(kinds(&j), ["revoked"]);
        }
    }

    #[test]
    fn a_spool_overflow_is_recorded_from_what_the_agent_says() {
        let (node, store) = stored(2);
        let mut b = body(3, hash_of(2), NOW);
        b.trigger = Trigger::Gap as i32;
        b.dropped = Some(DroppedRange { first_seq: 10, last_seq: 12, reason: "spool full".into() });
        let j = run(&node, &store, &b, hash_of(3));
        assert_eq!(j.admission, Admission::Store);
        assert_eq!(kinds(&j), ["spool_overflow"]);
        assert_eq!(j.events[0].detail, "agent dropped seq 10..=12 before delivery: spool full");
    }

    #[test]
    fn clock_anomalies_are_recorded_at_their_thresholds() {
        let (node, store) = stored(2);
        // Exactly at the skew limit: fine; one ms beyond: skew.
        let at_limit = run(&node, &store, &body(3, hash_of(2), NOW + CLOCK_SKEW_MS), hash_of(3));
        assert!(at_limit.events.is_empty(), "{at_limit:?}");
        let ahead = run(&node, &store, &body(3, hash_of(2), NOW + CLOCK_SKEW_MS + 1), hash_of(3));
        assert_eq!(kinds(&ahead), ["clock_skew"]);
        // The head was created at NOW - 1000: up to a second earlier is fine.
        let slight = run(&node, &store, &body(3, hash_of(2), NOW - 2000), hash_of(3));
        assert!(slight.events.is_empty(), "{slight:?}");
        let back = run(&node, &store, &body(3, hash_of(2), NOW - 2001), hash_of(3));
        assert_eq!(kinds(&back), ["clock_backwards"]);
        assert_eq!(back.admission, Admission::Store);
        // Extreme values saturate instead of overflowing.
        let far = run(&node, &store, &body(3, hash_of(2), i64::MAX), hash_of(3));
        assert_eq!(kinds(&far), ["clock_skew"]);
        let early = run(&node, &store, &body(3, hash_of(2), i64::MIN), hash_of(3));
        assert_eq!(kinds(&early), ["clock_backwards"]);
    }

    #[test]
    fn events_come_in_a_stable_order() {
        let (node, store) = stored(2);
        let mut b = body(5, hash_of(4), NOW + CLOCK_SKEW_MS + 10);
        b.trigger = Trigger::Gap as i32;
        let j = run(&node, &store, &b, hash_of(5));
        assert_eq!(kinds(&j), ["gap", "spool_overflow", "clock_skew"]);
    }

    #[test]
    fn advancing_moves_the_head_and_the_creation_time() {
        let (node, _) = stored(2);
        let b = body(3, hash_of(2), NOW + 5);
        let next = node.advanced(&b, hash_of(3), None);
        assert_eq!(next.head, Some(ChainHead { seq: 3, hash: hash_of(3) }));
        assert_eq!(next.last_created_ms, Some(NOW + 5));
        assert_eq!(next.head_seq(), 3);
        assert_eq!(NodeChain::default().head_seq(), 0);
    }

    fn compact_body(seq: u64, prev: [u8; 32], same_as: u64, digest: [u8; 32]) -> AttestationBody {
        AttestationBody {
            same_as_seq: same_as,
            report_index_sha256: digest.to_vec(),
            trigger: Trigger::Schedule as i32,
            ..body(seq, prev, NOW)
        }
    }

    #[test]
    fn a_compact_attestation_is_stored_only_when_its_claim_holds() {
        let (mut node, store) = stored(2);
        node.baseline = Some(Baseline { seq: 2, digest: [5; 32] });
        let ok = run(&node, &store, &compact_body(3, hash_of(2), 2, [5; 32]), hash_of(3));
        assert_eq!(ok.admission, Admission::Store);
        assert!(ok.events.is_empty(), "{ok:?}");
        // Another digest, another seq, no baseline: refused for good, recorded.
        for (b, baseline) in [
            (compact_body(3, hash_of(2), 2, [6; 32]), node.baseline),
            (compact_body(3, hash_of(2), 1, [5; 32]), node.baseline),
            (compact_body(3, hash_of(2), 2, [5; 32]), None),
        ] {
            let n = NodeChain { baseline, ..node };
            let j = run(&n, &store, &b, hash_of(3));
            assert!(matches!(j.admission, Admission::Reject { .. }), "{j:?}");
            assert_eq!(kinds(&j), ["false_claim"]);
        }
        // A gap before a false claim is not recorded: nothing is stored.
        let j = run(&node, &store, &compact_body(6, hash_of(5), 2, [6; 32]), hash_of(6));
        assert_eq!(kinds(&j), ["false_claim"]);
        // A re-sent compact attestation is a replay like any other.
        let j = run(&node, &store, &compact_body(2, hash_of(1), 1, [6; 32]), hash_of(2));
        assert_eq!(j.admission, Admission::AckHead);
    }

    #[test]
    fn the_baseline_moves_with_full_reports_and_stays_with_compact_ones() {
        let (node, _) = stored(2);
        let mut full = body(3, hash_of(2), NOW);
        full.report_json = b"r".to_vec().into();
        let after_full = node.advanced(&full, hash_of(3), Some([7; 32]));
        assert_eq!(after_full.baseline, Some(Baseline { seq: 3, digest: [7; 32] }));
        let after_compact = after_full.advanced(&compact_body(4, hash_of(3), 3, [7; 32]), hash_of(4), None);
        assert_eq!(after_compact.baseline, after_full.baseline);
        let unreadable = after_compact.advanced(&AttestationBody { seq: 5, ..full }, hash_of(5), None);
        assert_eq!(unreadable.baseline, None);
    }

    #[test]
    fn event_kinds_round_trip_their_stored_names() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(k.to_string(), k.as_str());
        }
        assert_eq!(EventKind::parse("Gap"), None);
    }
}
