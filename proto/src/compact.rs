//! Compact attestations: the signed, chained statement that an audit round
//! found exactly what the node's latest full report found, without carrying
//! the report again. The rules are here so that the agent (which makes
//! them), the collector (which confirms them before acking) and the
//! evidence verifier (which confirms them offline) cannot disagree.
//!
//! A healthy node's reports are identical round after round in everything
//! the collector indexes; what an auditor needs from those rounds is proof
//! that each happened and what it found. A compact body proves both: it is
//! signed and chained like any body, and it names the digest of its round's
//! findings and the seq of the full report with the same digest.

use crate::v1::{AttestationBody, Trigger};

/// The Attest stream's response header in which a collector lists the
/// protocol features it accepts (comma-separated).
pub const FEATURES_HEADER: &str = "kosmos-attest-features";

/// The feature of accepting compact attestations.
pub const COMPACT_V1: &str = "compact-v1";

/// Whether a `kosmos-attest-features` header value announces compact
/// attestations.
pub fn announces_compact(features: &str) -> bool {
    features.split(',').any(|f| f.trim() == COMPACT_V1)
}

/// Whether a body is a compact attestation.
pub fn is_compact(body: &AttestationBody) -> bool {
    body.same_as_seq != 0
}

/// The report a node's compact attestations may refer to: its latest body
/// that carried a report, when that report covered the whole profile, and
/// the index digest of that report (computed from the report itself, never
/// taken from a signed claim alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Baseline {
    pub seq: u64,
    pub digest: [u8; 32],
}

/// Why a compact attestation's claim does not hold.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    #[error("a compact attestation must not carry a report ({0} bytes of report_json)")]
    CarriesReport(usize),
    #[error("a compact attestation must cover the whole profile, not families {0:?}")]
    Partial(Vec<String>),
    #[error("a gap marker cannot be a compact attestation")]
    GapMarker,
    #[error("same_as_seq {same_as} is not before the attestation's own seq {seq}")]
    NotEarlier { same_as: u64, seq: u64 },
    #[error("report_index_sha256 is {0} bytes, not 32")]
    BadDigest(usize),
    #[error("claims to equal the report at seq {same_as}, but the node has no full report to refer to")]
    NoBaseline { same_as: u64 },
    #[error("claims to equal the report at seq {same_as}, but the node's latest full report is seq {baseline}")]
    NotLatest { same_as: u64, baseline: u64 },
    #[error("claims findings digest {claimed} for seq {same_as}, whose report has digest {actual}")]
    DigestMismatch { same_as: u64, claimed: String, actual: String },
}

/// The shape every compact body must have, whatever it refers to.
pub fn check_shape(body: &AttestationBody) -> Result<[u8; 32], ClaimError> {
    if !body.report_json.is_empty() {
        return Err(ClaimError::CarriesReport(body.report_json.len()));
    }
    if !body.families.is_empty() {
        return Err(ClaimError::Partial(body.families.clone()));
    }
    if body.trigger == Trigger::Gap as i32 {
        return Err(ClaimError::GapMarker);
    }
    if body.same_as_seq >= body.seq {
        return Err(ClaimError::NotEarlier { same_as: body.same_as_seq, seq: body.seq });
    }
    <[u8; 32]>::try_from(body.report_index_sha256.as_slice())
        .map_err(|_| ClaimError::BadDigest(body.report_index_sha256.len()))
}

/// Check a compact body's claim against the node's baseline (as the
/// collector holds it, or as an auditor rebuilds it from a bundle).
pub fn check_claim(body: &AttestationBody, baseline: Option<Baseline>) -> Result<(), ClaimError> {
    let claimed = check_shape(body)?;
    let same_as = body.same_as_seq;
    let Some(b) = baseline else {
        return Err(ClaimError::NoBaseline { same_as });
    };
    if b.seq != same_as {
        return Err(ClaimError::NotLatest { same_as, baseline: b.seq });
    }
    if b.digest != claimed {
        return Err(ClaimError::DigestMismatch { same_as, claimed: hex(&claimed), actual: hex(&b.digest) });
    }
    Ok(())
}

/// The baseline a body leaves behind, given the one before it and, for a
/// body carrying a report, the digest computed from that report (None when
/// the report could not be read). Gap markers and compact bodies change
/// nothing; a report of some families only ends the baseline (the node's
/// index then holds more than one report).
pub fn next_baseline(before: Option<Baseline>, body: &AttestationBody, digest: Option<[u8; 32]>) -> Option<Baseline> {
    if is_compact(body) || body.report_json.is_empty() {
        return before;
    }
    if !body.families.is_empty() {
        return None;
    }
    digest.map(|digest| Baseline { seq: body.seq, digest })
}

/// A compact body for a round whose findings digest equals `baseline`'s:
/// the identity and round fields of `round` (node, time, trigger), none of
/// its report.
pub fn compact_of(round: &AttestationBody, baseline: Baseline) -> AttestationBody {
    AttestationBody {
        node_id: round.node_id.clone(),
        created_at_unix_ms: round.created_at_unix_ms,
        trigger: round.trigger,
        report_index_sha256: baseline.digest.to_vec(),
        same_as_seq: baseline.seq,
        ..Default::default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(seq: u64) -> AttestationBody {
        AttestationBody {
            seq,
            report_json: b"x".to_vec().into(),
            report_index_sha256: vec![1; 32],
            ..Default::default()
        }
    }

    #[test]
    fn features_header_lists_compact() {
        assert!(announces_compact("compact-v1"));
        assert!(announces_compact("other, compact-v1"));
        assert!(!announces_compact("compact-v2"));
        assert!(!announces_compact(""));
    }

    #[test]
    fn a_claim_holds_only_against_the_latest_full_report_with_its_digest() {
        let base = Baseline { seq: 4, digest: [1; 32] };
        let mut c = compact_of(&AttestationBody { node_id: "n".into(), ..Default::default() }, base);
        c.seq = 9;
        assert_eq!(check_claim(&c, Some(base)), Ok(()));
        assert_eq!(check_claim(&c, None), Err(ClaimError::NoBaseline { same_as: 4 }));
        assert_eq!(
            check_claim(&c, Some(Baseline { seq: 5, digest: [1; 32] })),
            Err(ClaimError::NotLatest { same_as: 4, baseline: 5 })
        );
        assert!(matches!(
            check_claim(&c, Some(Baseline { seq: 4, digest: [2; 32] })),
            Err(ClaimError::DigestMismatch { .. })
        ));
        let mut forward = c.clone();
        forward.same_as_seq = 9;
        assert_eq!(check_shape(&forward), Err(ClaimError::NotEarlier { same_as: 9, seq: 9 }));
        let mut with_report = c.clone();
        with_report.report_json = b"{}".to_vec().into();
        assert_eq!(check_shape(&with_report), Err(ClaimError::CarriesReport(2)));
        let mut partial = c.clone();
        partial.families = vec!["ssh".into()];
        assert!(matches!(check_shape(&partial), Err(ClaimError::Partial(_))));
        let mut gap = c.clone();
        gap.trigger = Trigger::Gap as i32;
        assert_eq!(check_shape(&gap), Err(ClaimError::GapMarker));
        let mut short = c;
        short.report_index_sha256 = vec![1; 31];
        assert_eq!(check_shape(&short), Err(ClaimError::BadDigest(31)));
    }

    #[test]
    fn the_baseline_follows_full_reports_only() {
        let b4 = Some(Baseline { seq: 4, digest: [1; 32] });
        assert_eq!(next_baseline(None, &full(4), Some([1; 32])), b4);
        // A gap marker or a compact body leaves it.
        assert_eq!(next_baseline(b4, &AttestationBody { seq: 5, ..Default::default() }, None), b4);
        let c = AttestationBody { seq: 6, same_as_seq: 4, ..Default::default() };
        assert_eq!(next_baseline(b4, &c, None), b4);
        // An unreadable report or a partial one ends it.
        assert_eq!(next_baseline(b4, &full(7), None), None);
        let mut partial = full(7);
        partial.families = vec!["ssh".into()];
        assert_eq!(next_baseline(b4, &partial, Some([1; 32])), None);
    }
}
