//! Envelope signing and verification, and the per-node hash chain.
//!
//! The chain is what makes the history tamper-evident: every body names the
//! SHA-256 of the previous body, and sequence numbers increase by one. The
//! collector classifies every arriving body with [`classify`] and records
//! anything but the next link as an event on the node — gaps, forks and
//! replays are never dropped silently.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::v1::{AttestationBody, AttestationEnvelope};

/// `prev_hash` of the first envelope of a node.
pub const GENESIS_PREV_HASH: [u8; 32] = [0; 32];

/// Largest body accepted (a report with a few hundred findings is ~200 KiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// SHA-256 of a body, as chained by the next envelope.
pub fn body_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Serialize and sign a body.
pub fn seal(key: &SigningKey, body: &AttestationBody) -> AttestationEnvelope {
    let bytes = body.encode_to_vec();
    let signature = key.sign(&bytes).to_bytes().to_vec();
    AttestationEnvelope { body: bytes.into(), signature }
}

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("body is {0} bytes, more than the {MAX_BODY_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("signature is {0} bytes, not 64")]
    BadSignatureLength(usize),
    #[error("signature does not verify with the node key")]
    BadSignature,
    #[error("body is not a valid AttestationBody: {0}")]
    Malformed(String),
    #[error("prev_hash is {0} bytes, not 32")]
    BadPrevHash(usize),
    #[error("seq must start at 1")]
    ZeroSeq,
}

/// Verify the signature over the exact body bytes, then decode the body.
/// The signature is checked first so that nothing unauthenticated is parsed.
pub fn open(env: &AttestationEnvelope, key: &VerifyingKey) -> Result<AttestationBody, VerifyError> {
    if env.body.len() > MAX_BODY_BYTES {
        return Err(VerifyError::TooLarge(env.body.len()));
    }
    let sig: [u8; 64] =
        env.signature.as_slice().try_into().map_err(|_| VerifyError::BadSignatureLength(env.signature.len()))?;
    // verify_strict also rejects weak keys and malleable signatures.
    key.verify_strict(&env.body, &Signature::from_bytes(&sig)).map_err(|_| VerifyError::BadSignature)?;
    // From the Bytes itself: report_json is then a slice of the body, not a copy.
    let body = AttestationBody::decode(env.body.clone()).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if body.prev_hash.len() != 32 {
        return Err(VerifyError::BadPrevHash(body.prev_hash.len()));
    }
    if body.seq == 0 {
        return Err(VerifyError::ZeroSeq);
    }
    Ok(body)
}

/// The last link the collector holds for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// Where an arriving body fits in the node's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStep {
    /// The next link: seq = head + 1 and prev_hash = head hash (or genesis).
    Next,
    /// Sequence numbers head+1 ..= seq-1 are missing; the body is accepted as
    /// the new head, and the hole is recorded.
    Gap { first_missing: u64, last_missing: u64 },
    /// seq = head + 1 but prev_hash does not name the head: the history was
    /// rewritten or two agents share one identity.
    Fork { expected_prev: [u8; 32] },
    /// A seq at or below the head: either an exact re-send (same hash as
    /// stored) or a conflicting body for an existing seq.
    Old,
}

/// Classify a verified body against the current head.
pub fn classify(head: Option<ChainHead>, body: &AttestationBody) -> ChainStep {
    let (head_seq, head_hash) = match head {
        Some(h) => (h.seq, h.hash),
        None => (0, GENESIS_PREV_HASH),
    };
    if body.seq <= head_seq {
        return ChainStep::Old;
    }
    if body.seq > head_seq + 1 {
        return ChainStep::Gap { first_missing: head_seq + 1, last_missing: body.seq - 1 };
    }
    if body.prev_hash.as_slice() != head_hash {
        return ChainStep::Fork { expected_prev: head_hash };
    }
    ChainStep::Next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn body(seq: u64, prev: [u8; 32]) -> AttestationBody {
        AttestationBody { node_id: "node-a".into(), seq, prev_hash: prev.to_vec(), ..Default::default() }
    }

    #[test]
    fn seal_and_open_round_trip() {
        let k = key();
        let env = seal(&k, &body(1, GENESIS_PREV_HASH));
        let opened = open(&env, &k.verifying_key()).unwrap();
        assert_eq!(opened.seq, 1);
    }

    #[test]
    fn tampering_is_detected() {
        let k = key();
        let mut env = seal(&k, &body(1, GENESIS_PREV_HASH));
        let mut tampered = env.body.to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        env.body = tampered.into();
        assert_eq!(open(&env, &k.verifying_key()), Err(VerifyError::BadSignature));
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let env = seal(&other, &body(1, GENESIS_PREV_HASH));
        assert_eq!(open(&env, &k.verifying_key()), Err(VerifyError::BadSignature));
        let mut env = seal(&k, &body(1, GENESIS_PREV_HASH));
        env.signature.pop();
        assert_eq!(open(&env, &k.verifying_key()), Err(VerifyError::BadSignatureLength(63)));
    }

    #[test]
    fn chain_classification() {
        let b1 = seal(&key(), &body(1, GENESIS_PREV_HASH)).body;
        let h1 = body_hash(&b1);
        assert_eq!(classify(None, &body(1, GENESIS_PREV_HASH)), ChainStep::Next);
        let head = Some(ChainHead { seq: 1, hash: h1 });
        assert_eq!(classify(head, &body(2, h1)), ChainStep::Next);
        assert_eq!(classify(head, &body(2, [9; 32])), ChainStep::Fork { expected_prev: h1 });
        assert_eq!(classify(head, &body(5, [9; 32])), ChainStep::Gap { first_missing: 2, last_missing: 4 });
        assert_eq!(classify(head, &body(1, GENESIS_PREV_HASH)), ChainStep::Old);
        assert_eq!(classify(None, &body(3, GENESIS_PREV_HASH)), ChainStep::Gap { first_missing: 1, last_missing: 2 });
    }

    proptest::proptest! {
        #[test]
        fn open_never_panics_on_garbage(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                                        sig in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = open(&AttestationEnvelope { body: body.into(), signature: sig }, &key().verifying_key());
        }
    }
}
