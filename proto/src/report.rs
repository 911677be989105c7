//! The report carried in an attestation body: its wire encoding (gzip or
//! plain JSON) and the index digest both sides compute the same way.
//!
//! The collector indexes a few parts of every report (the findings, the
//! node's description, the agent version and the profile). A healthy node
//! sends the same parts again and again, so the agent signs a digest of them
//! ([`IndexedReport::digest`]) and the collector skips decoding a report
//! whose digest equals the one it last computed itself for that node. Both
//! sides parse with this module, so they cannot disagree on the framing.

use std::borrow::Cow;
use std::io::Read;

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::v1::{AttestationBody, ReportEncoding};

/// Largest decoded report accepted. A profile of a few hundred findings is
/// about 200 KiB of JSON; the bound stops a small gzip member from expanding
/// into gigabytes.
pub const MAX_REPORT_BYTES: usize = 32 * 1024 * 1024;

/// Domain separation for the index digest, so it cannot collide with any
/// other SHA-256 the protocol uses.
const INDEX_DIGEST_DOMAIN: &[u8] = b"kosmos.report-index/v1\0";

/// Why a body's report cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("report_encoding {0} is not one this build knows")]
    UnknownEncoding(i32),
    #[error("the gzip-encoded report cannot be decoded: {0}")]
    Gzip(String),
    #[error("the decoded report exceeds {MAX_REPORT_BYTES} bytes")]
    TooLarge,
    #[error("the report is not a kosmos.report/v1 document: {0}")]
    Json(String),
}

/// The report JSON of a body, decoded (borrowed when it was sent plain).
pub fn decode(body: &AttestationBody) -> Result<Cow<'_, [u8]>, ReportError> {
    match ReportEncoding::try_from(body.report_encoding) {
        Ok(ReportEncoding::Identity) => {
            if body.report_json.len() > MAX_REPORT_BYTES {
                return Err(ReportError::TooLarge);
            }
            Ok(Cow::Borrowed(&body.report_json))
        }
        Ok(ReportEncoding::Gzip) => {
            let mut out = Vec::with_capacity(body.report_json.len().saturating_mul(10).min(MAX_REPORT_BYTES));
            let limit = u64::try_from(MAX_REPORT_BYTES).unwrap_or(u64::MAX) + 1;
            flate2::read::GzDecoder::new(&body.report_json[..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| ReportError::Gzip(e.to_string()))?;
            if out.len() > MAX_REPORT_BYTES {
                return Err(ReportError::TooLarge);
            }
            Ok(Cow::Owned(out))
        }
        Err(_) => Err(ReportError::UnknownEncoding(body.report_encoding)),
    }
}

/// gzip a report for the wire (level 6: reports are produced once per
/// interval, so ratio matters more than speed).
pub fn encode_gzip(json: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 6), flate2::Compression::new(6));
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(json);
    enc.finish().unwrap_or_default()
}

/// The parts of a report the collector indexes, as raw JSON text exactly as
/// the agent serialized it.
#[derive(Debug, Deserialize)]
pub struct IndexedReport<'a> {
    #[serde(borrow)]
    pub results: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    pub agent_version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub node: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub profile: Option<&'a RawValue>,
}

impl<'a> IndexedReport<'a> {
    /// Parse the indexed parts of a decoded report.
    pub fn parse(json: &'a [u8]) -> Result<Self, ReportError> {
        serde_json::from_slice(json).map_err(|e| ReportError::Json(e.to_string()))
    }

    /// SHA-256 over the domain tag, then `agent_version`, `node` and
    /// `profile` (each as an 8-byte big-endian length and the raw JSON text,
    /// or the length `u64::MAX` when absent), then the number of results and
    /// each result the same way. Volatile parts of a report (start time,
    /// duration, summary, which follows from the results) are not covered.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(INDEX_DIGEST_DOMAIN);
        for part in [self.agent_version, self.node, self.profile] {
            match part {
                Some(raw) => frame(&mut h, raw.get().as_bytes()),
                None => h.update(u64::MAX.to_be_bytes()),
            }
        }
        h.update(u64::try_from(self.results.len()).unwrap_or(u64::MAX).to_be_bytes());
        for raw in &self.results {
            frame(&mut h, raw.get().as_bytes());
        }
        h.finalize().into()
    }
}

fn frame(h: &mut Sha256, bytes: &[u8]) {
    h.update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
    h.update(bytes);
}

/// A report ready for a body: gzip-encoded, with its index digest (None
/// when the JSON does not parse as a report, which the agent never
/// produces; the collector then indexes what it can and says why).
#[derive(Debug, Clone)]
pub struct PackedReport {
    pub bytes: Vec<u8>,
    pub encoding: ReportEncoding,
    pub index_sha256: Option<[u8; 32]>,
}

/// Encode a report JSON for a body.
pub fn pack(json: &[u8]) -> PackedReport {
    let index_sha256 = IndexedReport::parse(json).ok().map(|r| r.digest());
    PackedReport { bytes: encode_gzip(json), encoding: ReportEncoding::Gzip, index_sha256 }
}

impl PackedReport {
    /// Put the report into a body.
    pub fn into_body(self, body: &mut AttestationBody) {
        body.report_json = self.bytes.into();
        body.report_encoding = self.encoding as i32;
        body.report_index_sha256 = self.index_sha256.map(|d| d.to_vec()).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"schema":"kosmos.report/v1","agent_version":"0.1.0","node":{"hostname":"a"},
        "profile":{"name":"p","version":"1"},"started_at":"2026-01-01T00:00:00Z","duration_ms":3,
        "results":[{"id":"x","status":"pass"},{"id":"y","status":"fail","observed":"1"}]}"#;

    fn body_with(json: &[u8]) -> AttestationBody {
        let mut b = AttestationBody::default();
        pack(json).into_body(&mut b);
        b
    }

    #[test]
    fn gzip_round_trip_and_digest_present() {
        let b = body_with(REPORT.as_bytes());
        assert_eq!(b.report_encoding, ReportEncoding::Gzip as i32);
        assert_eq!(decode(&b).unwrap().as_ref(), REPORT.as_bytes());
        let d = IndexedReport::parse(REPORT.as_bytes()).unwrap().digest();
        assert_eq!(b.report_index_sha256, d.to_vec());
    }

    #[test]
    fn digest_ignores_volatile_parts_and_sees_findings_and_node() {
        let d = |s: &str| IndexedReport::parse(s.as_bytes()).unwrap().digest();
        let base = d(REPORT);
        assert_eq!(base, d(&REPORT.replace("\"duration_ms\":3", "\"duration_ms\":9")));
        assert_eq!(base, d(&REPORT.replace("2026-01-01", "2027-02-02")));
        assert_ne!(base, d(&REPORT.replace("\"observed\":\"1\"", "\"observed\":\"2\"")));
        assert_ne!(base, d(&REPORT.replace("\"hostname\":\"a\"", "\"hostname\":\"b\"")));
        assert_ne!(base, d(&REPORT.replace("\"version\":\"1\"", "\"version\":\"2\"")));
        // Moving text between two findings changes the framing, so the digest.
        assert_ne!(d(r#"{"results":[{"a":"bc"},{"d":1}]}"#), d(r#"{"results":[{"a":"b"},{"cd":1}]}"#));
        // An absent part is not the same as an empty one.
        assert_ne!(d(r#"{"results":[]}"#), d(r#"{"results":[],"node":{}}"#));
    }

    #[test]
    fn plain_reports_are_still_read() {
        let b = AttestationBody { report_json: REPORT.as_bytes().to_vec().into(), ..Default::default() };
        assert!(matches!(decode(&b).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn bad_encodings_are_errors_not_panics() {
        let mut b = AttestationBody { report_json: b"not gzip".to_vec().into(), ..Default::default() };
        b.report_encoding = ReportEncoding::Gzip as i32;
        assert!(matches!(decode(&b), Err(ReportError::Gzip(_))));
        b.report_encoding = 77;
        assert_eq!(decode(&b).unwrap_err(), ReportError::UnknownEncoding(77));
        // A truncated member is an error too.
        let mut t = body_with(REPORT.as_bytes());
        t.report_json.truncate(t.report_json.len() / 2);
        assert!(matches!(decode(&t), Err(ReportError::Gzip(_))));
        assert!(matches!(IndexedReport::parse(b"{\"results\":7}"), Err(ReportError::Json(_))));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_bound() {
        let zeros = vec![b' '; MAX_REPORT_BYTES + 10];
        let b = body_with(&zeros);
        assert!(b.report_json.len() < 200_000, "compresses well: {}", b.report_json.len());
        assert_eq!(decode(&b).unwrap_err(), ReportError::TooLarge);
    }
}
