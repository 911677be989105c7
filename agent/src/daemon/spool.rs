//! The on-disk spool of signed envelopes waiting for the collector's ack,
//! and the node's chain state (next seq, hash of the last body).
//!
//! Layout under the state directory:
//! - `spool/<seq, 20 digits>.env`: one envelope per file, 0600. A 48-byte
//!   header (magic `KSPL`, format version, payload length, SHA-256 of the
//!   payload) precedes the protobuf `AttestationEnvelope`. Each file is
//!   written under a temporary name, fsynced, renamed, and the directory is
//!   fsynced, so after a crash a file is either whole or absent.
//! - `spool/quarantine/`: files that failed validation (torn, corrupt,
//!   foreign); they are kept for inspection and never sent.
//! - `chain.json`: `{ "next_seq", "last_hash" }`, replaced atomically after
//!   each spool write.
//!
//! The spool owns sequencing: [`Spool::push`] assigns the seq and prev_hash,
//! seals and stores, so a seq is never reused even across crashes: at open
//! the chain state is recovered as the maximum of `chain.json` and the
//! highest envelope on disk (a crash can fall between the two writes).
//!
//! The spool is bounded by `max_bytes`. When a new envelope does not fit, the
//! oldest envelopes are deleted, acked or not, and a `TRIGGER_GAP` envelope
//! naming the dropped range is written first, so the collector records the
//! loss instead of it passing silently. Files are otherwise deleted only by
//! [`Spool::ack`].

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File};
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use kosmos_proto::chain::{GENESIS_PREV_HASH, MAX_BODY_BYTES, body_hash, seal};
use kosmos_proto::compact::{self, Baseline};
use kosmos_proto::v1::{AttestationBody, AttestationEnvelope, DroppedRange, Trigger};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::state::durable::{self, TMP_PREFIX};

const MAGIC: &[u8; 4] = b"KSPL";
const FORMAT_VERSION: u32 = 1;
/// magic (4) + version (4) + payload length (8) + SHA-256 (32).
pub const HEADER_LEN: usize = 48;
/// Largest payload accepted when reading back: a maximal body plus the
/// envelope framing and signature.
const MAX_PAYLOAD: u64 = MAX_BODY_BYTES as u64 + 1024;
/// Room kept free for the gap marker written after an eviction.
const GAP_RESERVE: u64 = 1024;
const SUFFIX: &str = ".env";

/// Errors that stop the spool from working (disk, permissions). Corrupt
/// files are not errors: they are quarantined.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "chain state {path} is unreadable ({why}); refusing to guess the next seq (a reused seq would fork the chain)"
    )]
    ChainState { path: String, why: String },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io { action, path: path.display().to_string(), source }
}

/// What [`Spool::push`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// Seq of the report envelope, or None when the report alone was larger
    /// than the spool and was dropped (a gap names it).
    pub report_seq: Option<u64>,
    /// The gap marker written before the report, if any.
    pub gap: Option<DroppedRange>,
    pub gap_seq: Option<u64>,
    /// Whether the report went as a compact attestation.
    pub compact: bool,
}

/// When a round may be attested compactly (see [`Spool::push_round`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactPolicy {
    /// The collector accepts compact attestations and the configuration
    /// allows them.
    pub allowed: bool,
    /// A full report is due when the baseline is this old (ms).
    pub checkpoint_ms: i64,
}

/// The full report compact attestations refer to: its seq and findings
/// digest, and when it was made (for the checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpoolBaseline {
    baseline: Baseline,
    created_ms: i64,
}

/// The spool and chain state.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    quarantine_dir: PathBuf,
    chain_path: PathBuf,
    max_bytes: u64,
    /// seq -> file size, for every valid spooled envelope.
    index: BTreeMap<u64, u64>,
    total_bytes: u64,
    next_seq: u64,
    last_hash: [u8; 32],
    quarantined: Vec<String>,
    /// The latest full report this process spooled, while compact
    /// attestations may refer to it: forgotten when it is dropped from the
    /// spool before delivery or when the collector refuses anything (the
    /// next round then sends a full report). Not persisted: a restarted
    /// agent starts with a full report.
    baseline: Option<SpoolBaseline>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ChainFile {
    next_seq: u64,
    last_hash: String,
}

impl Spool {
    /// Open (creating if needed) the spool under `state_dir`, quarantine
    /// anything invalid, and recover the chain state.
    pub fn open(state_dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let dir = state_dir.join("spool");
        let quarantine_dir = dir.join("quarantine");
        for d in [state_dir, &dir, &quarantine_dir] {
            DirBuilder::new().recursive(true).mode(0o700).create(d).map_err(io("cannot create", d))?;
        }
        let mut spool = Spool {
            chain_path: state_dir.join("chain.json"),
            dir,
            quarantine_dir,
            max_bytes,
            index: BTreeMap::new(),
            total_bytes: 0,
            next_seq: 1,
            last_hash: GENESIS_PREV_HASH,
            quarantined: Vec::new(),
            baseline: None,
        };
        spool.read_chain_state()?;
        spool.scan()?;
        Ok(spool)
    }

    fn read_chain_state(&mut self) -> Result<(), SpoolError> {
        let text = match fs::read_to_string(&self.chain_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("cannot read", &self.chain_path)(e)),
        };
        let bad = |why: String| SpoolError::ChainState { path: self.chain_path.display().to_string(), why };
        let state: ChainFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let hash = hex_decode(&state.last_hash)
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| bad("last_hash is not 64 hex digits".into()))?;
        if state.next_seq == 0 {
            return Err(bad("next_seq is 0".into()));
        }
        self.next_seq = state.next_seq;
        self.last_hash = hash;
        Ok(())
    }

    fn scan(&mut self) -> Result<(), SpoolError> {
        let entries = fs::read_dir(&self.dir).map_err(io("cannot list", &self.dir))?;
        let mut names: Vec<String> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("cannot list", &self.dir))?;
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            match entry.file_name().into_string() {
                Ok(n) => names.push(n),
                Err(n) => {
                    let shown = n.to_string_lossy().into_owned();
                    self.quarantine(&shown, &entry.path(), "file name is not UTF-8")?;
                }
            }
        }
        names.sort();
        let mut highest_quarantined = 0;
        for name in names {
            let path = self.dir.join(&name);
            if name.starts_with(TMP_PREFIX) {
                // Never renamed into place, so never durable and never sent.
                fs::remove_file(&path).map_err(io("cannot remove", &path))?;
                continue;
            }
            let Some(seq) = parse_name(&name) else {
                self.quarantine(&name, &path, "not a spool file name")?;
                continue;
            };
            match read_frame(&path, seq) {
                Ok((env, _)) => {
                    let size = HEADER_LEN as u64 + env.encoded_len() as u64;
                    if seq >= self.next_seq {
                        // Written, but the crash came before chain.json.
                        self.next_seq = seq + 1;
                        self.last_hash = body_hash(&env.body);
                    }
                    self.index.insert(seq, size);
                    self.total_bytes += size;
                }
                Err(why) => {
                    highest_quarantined = highest_quarantined.max(seq);
                    self.quarantine(&name, &path, &why)?;
                }
            }
        }
        if highest_quarantined >= self.next_seq {
            // Its body is lost, so the hash is unknown; skipping its seq makes
            // the collector record a gap rather than a fork.
            tracing::warn!(seq = highest_quarantined, "chain continues after a quarantined envelope");
            self.next_seq = highest_quarantined + 1;
        }
        self.write_chain_state()
    }

    fn quarantine(&mut self, name: &str, path: &Path, why: &str) -> Result<(), SpoolError> {
        let mut target = self.quarantine_dir.join(name);
        let mut n = 1;
        while target.exists() {
            target = self.quarantine_dir.join(format!("{name}.{n}"));
            n += 1;
        }
        fs::rename(path, &target).map_err(io("cannot quarantine", path))?;
        sync_dir(&self.dir)?;
        let note = format!("{name}: {why}");
        tracing::warn!(file = %path.display(), reason = why, "quarantined a spool file");
        self.quarantined.push(note);
        Ok(())
    }

    /// Assign the next seq and prev_hash to `template`, seal it with `key`
    /// and store it durably; evicts the oldest envelopes (and records a gap)
    /// when the spool would exceed its bound.
    pub fn push(&mut self, key: &SigningKey, template: AttestationBody) -> Result<Pushed, SpoolError> {
        let mut pushed = Pushed { report_seq: None, gap: None, gap_seq: None, compact: false };
        let report_len = self.seal_at(key, &template, self.next_seq, self.last_hash).1.len() as u64;
        let oversized = report_len + GAP_RESERVE > self.max_bytes;
        let need = if oversized { GAP_RESERVE } else { report_len };
        let mut evicted: Option<(u64, u64)> = None;
        while self.total_bytes + need > self.max_bytes {
            let Some((&seq, _)) = self.index.iter().next() else { break };
            self.evict(seq)?;
            evicted = Some(evicted.map_or((seq, seq), |(first, _)| (first, seq)));
        }
        if evicted.is_some() {
            // Leave room for the gap marker itself too.
            while self.total_bytes + need + GAP_RESERVE > self.max_bytes {
                let Some((&seq, _)) = self.index.iter().next() else { break };
                self.evict(seq)?;
                evicted = evicted.map(|(first, _)| (first, seq));
            }
            sync_dir(&self.dir)?;
        }
        let mut dropped = evicted.map(|(first, last)| DroppedRange {
            first_seq: first,
            last_seq: last,
            reason: "spool overflow".to_string(),
        });
        if oversized {
            // The report can never fit: consume its seq and declare it lost.
            let seq = self.next_seq;
            let (env, _) = self.seal_at(key, &template, seq, self.last_hash);
            self.next_seq = seq + 1;
            self.last_hash = body_hash(&env.body);
            let why = format!("report of {report_len} bytes exceeds spool_max_bytes ({})", self.max_bytes);
            tracing::warn!(seq, "{why}");
            dropped = Some(match dropped {
                Some(d) => {
                    DroppedRange { first_seq: d.first_seq, last_seq: seq, reason: format!("spool overflow; {why}") }
                }
                None => DroppedRange { first_seq: seq, last_seq: seq, reason: why },
            });
        }
        if let Some(range) = dropped {
            tracing::warn!(first = range.first_seq, last = range.last_seq, reason = %range.reason, "dropped envelopes");
            let gap = gap_marker(&template, range.clone());
            pushed.gap_seq = Some(self.store_next(key, &gap)?);
            pushed.gap = Some(range);
        }
        if !oversized {
            let seq = self.store_next(key, &template)?;
            pushed.report_seq = Some(seq);
            // A report becomes what compact rounds refer to (when it covers
            // the whole profile and carries its digest).
            if !compact::is_compact(&template) && !template.report_json.is_empty() {
                let digest = <[u8; 32]>::try_from(template.report_index_sha256.as_slice()).ok();
                let created_ms = template.created_at_unix_ms;
                let body = AttestationBody { seq, ..template };
                self.baseline =
                    compact::next_baseline(None, &body, digest).map(|baseline| SpoolBaseline { baseline, created_ms });
            }
        } else {
            self.write_chain_state()?;
        }
        Ok(pushed)
    }

    fn seal_at(
        &self,
        key: &SigningKey,
        template: &AttestationBody,
        seq: u64,
        prev: [u8; 32],
    ) -> (AttestationEnvelope, Vec<u8>) {
        let body = AttestationBody { seq, prev_hash: prev.to_vec(), ..template.clone() };
        let env = seal(key, &body);
        let frame = encode_frame(&env);
        (env, frame)
    }

    fn store_next(&mut self, key: &SigningKey, template: &AttestationBody) -> Result<u64, SpoolError> {
        let seq = self.next_seq;
        let (env, frame) = self.seal_at(key, template, seq, self.last_hash);
        let path = self.dir.join(file_name(seq));
        durable::replace(&path, &frame, 0o600).map_err(io("cannot write", &path))?;
        self.index.insert(seq, frame.len() as u64);
        self.total_bytes += frame.len() as u64;
        self.next_seq = seq + 1;
        self.last_hash = body_hash(&env.body);
        self.write_chain_state()?;
        Ok(seq)
    }

    fn write_chain_state(&self) -> Result<(), SpoolError> {
        let state = ChainFile { next_seq: self.next_seq, last_hash: hex_encode(&self.last_hash) };
        let text = serde_json::to_string(&state).unwrap_or_default() + "\n";
        durable::replace(&self.chain_path, text.as_bytes(), 0o600).map_err(io("cannot write", &self.chain_path))
    }

    /// Drop `seq` before delivery (spool overflow): compact rounds can no
    /// longer refer to it.
    fn evict(&mut self, seq: u64) -> Result<(), SpoolError> {
        if self.baseline.is_some_and(|b| b.baseline.seq == seq) {
            self.baseline = None;
        }
        self.remove(seq)
    }

    /// Spool one audit round: a compact attestation when `policy` allows
    /// one and `full`'s findings digest equals the baseline's (made within
    /// the checkpoint period), the full report otherwise. A compact round
    /// that would need room in the spool is sent full instead, because the
    /// room could be made by dropping the very report it refers to.
    pub fn push_round(
        &mut self,
        key: &SigningKey,
        full: AttestationBody,
        policy: CompactPolicy,
    ) -> Result<Pushed, SpoolError> {
        let compact = self.baseline.filter(|b| {
            policy.allowed
                && full.families.is_empty()
                && !full.report_json.is_empty()
                && full.report_index_sha256.as_slice() == b.baseline.digest
                && full.created_at_unix_ms.saturating_sub(b.created_ms) < policy.checkpoint_ms
        });
        if let Some(b) = compact {
            let template = compact::compact_of(&full, b.baseline);
            let len = self.seal_at(key, &template, self.next_seq, self.last_hash).1.len() as u64;
            if self.total_bytes + len + GAP_RESERVE <= self.max_bytes {
                let mut pushed = self.push(key, template)?;
                pushed.compact = true;
                return Ok(pushed);
            }
        }
        self.push(key, full)
    }

    fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        let path = self.dir.join(file_name(seq));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", &path)(e)),
        }
        if let Some(size) = self.index.remove(&seq) {
            self.total_bytes = self.total_bytes.saturating_sub(size);
        }
        Ok(())
    }

    /// The collector refused envelope `seq` for good (it will never accept it
    /// as it is): move it to the quarantine (kept for inspection, never sent
    /// again) and declare the hole with a signed `TRIGGER_GAP` envelope that
    /// names the reason, so the chain carries on and the collector records
    /// why. `template` gives the marker's node id, version and time. Returns
    /// the marker's seq, or None when `seq` is not spooled (already acked or
    /// set aside).
    pub fn set_aside(
        &mut self,
        key: &SigningKey,
        seq: u64,
        template: &AttestationBody,
        reason: &str,
    ) -> Result<Option<u64>, SpoolError> {
        // Whatever was refused, the next round sends a full report: a
        // refused compact round means the collector does not hold what it
        // refers to, and a refused report cannot be referred to.
        self.baseline = None;
        if !self.index.contains_key(&seq) {
            return Ok(None);
        }
        let name = file_name(seq);
        let path = self.dir.join(&name);
        if let Some(size) = self.index.remove(&seq) {
            self.total_bytes = self.total_bytes.saturating_sub(size);
        }
        let why = format!("refused by the collector: {reason}");
        if path.exists() {
            self.quarantine(&name, &path, &why)?;
        }
        let gap = gap_marker(template, DroppedRange { first_seq: seq, last_seq: seq, reason: why });
        Ok(Some(self.store_next(key, &gap)?))
    }

    /// The collector durably holds everything up to `acked_seq`: delete it.
    /// Returns how many envelopes were deleted.
    pub fn ack(&mut self, acked_seq: u64) -> Result<usize, SpoolError> {
        let done: Vec<u64> = self.index.range(..=acked_seq).map(|(&s, _)| s).collect();
        for &seq in &done {
            self.remove(seq)?;
        }
        if !done.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(done.len())
    }

    /// The first spooled seq above `after`.
    pub fn next_after(&self, after: u64) -> Option<u64> {
        self.index.range(after.saturating_add(1)..).next().map(|(&s, _)| s)
    }

    /// Read a spooled envelope back, validating it. A file that no longer
    /// validates is quarantined and `None` is returned: a corrupt envelope is
    /// never sent.
    pub fn read(&mut self, seq: u64) -> Result<Option<AttestationEnvelope>, SpoolError> {
        if !self.index.contains_key(&seq) {
            return Ok(None);
        }
        let name = file_name(seq);
        let path = self.dir.join(&name);
        match read_frame(&path, seq) {
            Ok((env, _)) => Ok(Some(env)),
            Err(why) => {
                if let Some(size) = self.index.remove(&seq) {
                    self.total_bytes = self.total_bytes.saturating_sub(size);
                }
                if path.exists() {
                    self.quarantine(&name, &path, &why)?;
                } else {
                    self.quarantined.push(format!("{name}: {why}"));
                }
                Ok(None)
            }
        }
    }

    /// Number of spooled (unacked) envelopes.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes on disk used by spooled envelopes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The seq the next envelope will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Hash of the last body sealed.
    pub fn last_hash(&self) -> [u8; 32] {
        self.last_hash
    }

    /// Files quarantined since open, as "name: why".
    pub fn quarantined(&self) -> &[String] {
        &self.quarantined
    }

    /// Spooled seqs, lowest first.
    pub fn seqs(&self) -> Vec<u64> {
        self.index.keys().copied().collect()
    }
}

/// A signed gap marker declaring `range` missing, with the identity fields
/// of the round it stands in for.
fn gap_marker(template: &AttestationBody, range: DroppedRange) -> AttestationBody {
    AttestationBody {
        node_id: template.node_id.clone(),
        created_at_unix_ms: template.created_at_unix_ms,
        agent_version: template.agent_version.clone(),
        profile_name: template.profile_name.clone(),
        profile_version: template.profile_version.clone(),
        trigger: Trigger::Gap as i32,
        dropped: Some(range),
        ..Default::default()
    }
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&s| s > 0)
}

/// Header + payload for one envelope.
pub fn encode_frame(env: &AttestationEnvelope) -> Vec<u8> {
    let payload = env.encode_to_vec();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    out
}

/// Validate a frame: header, length, checksum, envelope and body decode, and
/// the body's seq equals the file's.
pub fn decode_frame(bytes: &[u8], expected_seq: u64) -> Result<(AttestationEnvelope, AttestationBody), String> {
    let (header, payload) =
        bytes.split_at_checked(HEADER_LEN).ok_or_else(|| format!("truncated header ({} bytes)", bytes.len()))?;
    let (magic, rest) = header.split_at(4);
    if magic != MAGIC {
        return Err("bad magic".into());
    }
    let (version, rest) = rest.split_at(4);
    let (len, sum) = rest.split_at(8);
    let version = u32::from_le_bytes(version.try_into().map_err(|_| "bad header")?);
    if version != FORMAT_VERSION {
        return Err(format!("unknown format version {version}"));
    }
    let len = u64::from_le_bytes(len.try_into().map_err(|_| "bad header")?);
    if len > MAX_PAYLOAD {
        return Err(format!("payload length {len} exceeds the limit"));
    }
    if payload.len() as u64 != len {
        return Err(format!("torn: header says {len} payload bytes, file has {}", payload.len()));
    }
    if Sha256::digest(payload).as_slice() != sum {
        return Err("checksum mismatch".into());
    }
    let env = AttestationEnvelope::decode(payload).map_err(|e| format!("envelope does not decode: {e}"))?;
    let body = AttestationBody::decode(env.body.clone()).map_err(|e| format!("body does not decode: {e}"))?;
    if body.seq != expected_seq {
        return Err(format!("body seq {} does not match the file name", body.seq));
    }
    Ok((env, body))
}

fn read_frame(path: &Path, seq: u64) -> Result<(AttestationEnvelope, AttestationBody), String> {
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_PAYLOAD + HEADER_LEN as u64 + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    decode_frame(&bytes, seq)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    durable::sync_dir(dir).map_err(io("cannot fsync directory", dir))
}

pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kosmos_proto::chain::open as open_envelope;
    use std::os::unix::fs::PermissionsExt;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3u8; 32])
    }

    fn report(n: usize) -> AttestationBody {
        AttestationBody {
            node_id: "node-1".into(),
            created_at_unix_ms: 1_700_000_000_000,
            agent_version: "0.1.0".into(),
            profile_name: "kosmos-external".into(),
            profile_version: "1".into(),
            trigger: Trigger::Schedule as i32,
            report_json: vec![b'x'; n].into(),
            ..Default::default()
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn push_read_ack_delete() {
        let t = tempfile::tempdir().unwrap();
        let mut s = Spool::open(t.path(), 1 << 20).unwrap();
        for _ in 0..3 {
            s.push(&key(), report(100)).unwrap();
        }
        assert_eq!(s.seqs(), vec![1, 2, 3]);
        assert_eq!(mode(&t.path().join("spool/00000000000000000002.env")), 0o600);
        assert_eq!(mode(&t.path().join("chain.json")), 0o600);
        assert_eq!(mode(&t.path().join("spool")), 0o700);
        // The chain links: each prev_hash is the previous body's hash.
        let e1 = s.read(1).unwrap().unwrap();
        let e2 = s.read(2).unwrap().unwrap();
        let b1 = open_envelope(&e1, &key().verifying_key()).unwrap();
        let b2 = open_envelope(&e2, &key().verifying_key()).unwrap();
        assert_eq!(b1.prev_hash, GENESIS_PREV_HASH.to_vec());
        assert_eq!(b2.prev_hash, body_hash(&e1.body).to_vec());
        assert_eq!(s.next_after(1), Some(2));
        assert_eq!(s.ack(2).unwrap(), 2);
        assert_eq!(s.seqs(), vec![3]);
        assert!(!t.path().join("spool/00000000000000000001.env").exists());
        // Reopen: the state survives, the next seq continues.
        drop(s);
        let mut s = Spool::open(t.path(), 1 << 20).unwrap();
        assert_eq!(s.seqs(), vec![3]);
        assert_eq!(s.next_seq(), 4);
        assert_eq!(s.push(&key(), report(10)).unwrap().report_seq, Some(4));
        let e3 = s.read(3).unwrap().unwrap();
        let b4 = open_envelope(&s.read(4).unwrap().unwrap(), &key().verifying_key()).unwrap();
        assert_eq!(b4.prev_hash, body_hash(&e3.body).to_vec());
    }

    #[test]
    fn torn_and_garbage_files_are_quarantined() {
        let t = tempfile::tempdir().unwrap();
        let mut s = Spool::open(t.path(), 1 << 20).unwrap();
        for _ in 0..3 {
            s.push(&key(), report(100)).unwrap();
        }
        drop(s);
        let spool = t.path().join("spool");
        // Truncated (torn) file, a garbage file, a flipped byte, a leftover temp file.
        let p2 = spool.join(file_name(2));
        let bytes = fs::read(&p2).unwrap();
        fs::write(&p2, &bytes[..bytes.len() - 7]).unwrap();
        fs::write(spool.join(file_name(7)), b"garbage that is not a spool frame at all.......").unwrap();
        let p3 = spool.join(file_name(3));
        let mut bytes = fs::read(&p3).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&p3, bytes).unwrap();
        fs::write(spool.join(".tmp-00000000000000000009"), b"half").unwrap();
        fs::write(spool.join("notes.txt"), b"hello").unwrap();

        let mut s = Spool::open(t.path(), 1 << 20).unwrap();
        assert_eq!(s.seqs(), vec![1]);
        let q = s.quarantined().join("\n");
        assert!(q.contains("00000000000000000002.env: torn"), "{q}");
        assert!(q.contains("00000000000000000003.env: checksum mismatch"), "{q}");
        assert!(q.contains("00000000000000000007.env"), "{q}");
        assert!(q.contains("notes.txt"), "{q}");
        assert!(spool.join("quarantine").join(file_name(2)).exists());
        assert!(!spool.join(".tmp-00000000000000000009").exists());
        // A quarantined seq above the chain state is never reused.
        assert_eq!(s.next_seq(), 8);
        // A file corrupted after open is caught at read time and not returned.
        fs::write(spool.join(file_name(1)), b"KSPL").unwrap();
        assert!(s.read(1).unwrap().is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn overflow_drops_oldest_and_writes_a_gap_marker() {
        let t = tempfile::tempdir().unwrap();
        let frame = encode_frame(&seal(&key(), &AttestationBody { seq: 1, prev_hash: vec![0; 32], ..report(1000) }));
        // Room for four reports and a half.
        let max = 4 * frame.len() as u64 + frame.len() as u64 / 2;
        let mut s = Spool::open(t.path(), max).unwrap();
        for _ in 0..4 {
            let p = s.push(&key(), report(1000)).unwrap();
            assert!(p.gap.is_none());
        }
        let p = s.push(&key(), report(1000)).unwrap();
        let gap = p.gap.clone().unwrap();
        assert_eq!(gap.first_seq, 1);
        assert!(gap.last_seq >= 1 && gap.last_seq < 4, "{gap:?}");
        assert_eq!(gap.reason, "spool overflow");
        assert_eq!(p.gap_seq, Some(5));
        assert_eq!(p.report_seq, Some(6));
        assert!(s.total_bytes() <= max);
        let g = open_envelope(&s.read(5).unwrap().unwrap(), &key().verifying_key()).unwrap();
        assert_eq!(g.trigger, Trigger::Gap as i32);
        assert_eq!(g.dropped, Some(gap.clone()));
        assert!(g.report_json.is_empty());
        assert_eq!(s.seqs().first().copied(), Some(gap.last_seq + 1));
        assert_eq!(s.seqs().last().copied(), Some(6));
        // The chain stays linked through the gap marker.
        let e5 = s.read(5).unwrap().unwrap();
        let b6 = open_envelope(&s.read(6).unwrap().unwrap(), &key().verifying_key()).unwrap();
        assert_eq!(b6.prev_hash, body_hash(&e5.body).to_vec());
    }

    #[test]
    fn a_report_larger_than_the_spool_is_declared_lost() {
        let t = tempfile::tempdir().unwrap();
        let mut s = Spool::open(t.path(), 4096).unwrap();
        s.push(&key(), report(100)).unwrap();
        let p = s.push(&key(), report(10_000)).unwrap();
        assert_eq!(p.report_seq, None);
        let gap = p.gap.unwrap();
        assert_eq!(gap.last_seq, 2);
        assert!(gap.reason.contains("exceeds spool_max_bytes"), "{gap:?}");
        assert_eq!(p.gap_seq, Some(3));
        assert_eq!(s.next_seq(), 4);
    }

    #[test]
    fn crash_between_spool_write_and_state_write_never_reuses_a_seq() {
        let t = tempfile::tempdir().unwrap();
        let mut s = Spool::open(t.path(), 1 << 20).unwrap();
        s.push(&key(), report(10)).unwrap();
        let stale_state = fs::read(t.path().join("chain.json")).unwrap();
        s.push(&key(), report(10)).unwrap();
        let e2 = s.read(2).unwrap().unwrap();
        drop(s);
        // Simulate the crash: chain.json still says next_seq = 2.
        fs::write(t.path().join("chain.json"), stale_state).unwrap();
        let s = Spool::open(t.path(), 1 << 20).unwrap();
        assert_eq!(s.next_seq(), 3);
        assert_eq!(s.last_hash(), body_hash(&e2.body));
        // And after acks deleted everything, chain.json alone carries on.
        let mut s = s;
        s.ack(2).unwrap();
        drop(s);
        let s = Spool::open(t.path(), 1 << 20).unwrap();
        assert_eq!(s.next_seq(), 3);
    }

    #[test]
    fn corrupt_chain_state_is_refused() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("chain.json"), "{\"next_seq\": 5, \"last_hash\": \"zz\"}").unwrap();
        let err = Spool::open(t.path(), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("chain state"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256), seq in 0u64..10) {
            let _ = decode_frame(&bytes, seq);
            let mut framed = encode_frame(&AttestationEnvelope { body: bytes.clone().into(), signature: vec![] });
            let _ = decode_frame(&framed, seq);
            framed.truncate(bytes.len() / 2);
            let _ = decode_frame(&framed, seq);
        }
    }
}
