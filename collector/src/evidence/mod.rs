//! Evidence bundles for auditors: `kosmos-collector evidence export` writes
//! the raw signed envelopes of some nodes over a time range, with the node
//! certificates, the CA certificate and a manifest, into one file;
//! `kosmos-collector evidence verify` checks such a file fully offline, with
//! nothing but the file (and, optionally, the CA fingerprint the auditor
//! expects), and prints a verdict per node.
//!
//! # The bundle, format `kosmos.evidence/v1`
//!
//! A gzip-compressed tar of plain ustar entries: regular files only, paths
//! of at most 100 bytes made of `[A-Za-z0-9._-]` components, no links, no
//! long-name or pax extension headers. Entries, in this order:
//!
//! | path | content |
//! |---|---|
//! | `attest.proto` | the `kosmos.attest.v1` protocol, to decode bodies with `protoc --decode` |
//! | `ca.pem` | the collector CA certificate (PEM), the anchor of every node certificate |
//! | `nodes/<id>/cert.pem` | the node's client certificate as issued at enrollment (PEM): its URI SAN `urn:kosmos:node:<id>` names the node, its Ed25519 key signs the node's envelopes |
//! | `nodes/<id>/<seq, 20 digits>.body` | a serialized `AttestationBody`, byte for byte as the node signed it and the collector stored it; its SHA-256 is the `prev_hash` of the next seq |
//! | `nodes/<id>/<seq, 20 digits>.sig` | the 64-byte Ed25519 signature of that body |
//! | `manifest.json` | last: what was exported and the SHA-256 of every other file |
//!
//! The manifest ([`Manifest`]) records the format id, when and by which
//! collector (CA fingerprint) the bundle was made, the export's parameters,
//! and per node: hostname, enrollment and revocation times, the certificate
//! path, the envelope count, seq and creation-time ranges, the *anchor* (the
//! SHA-256 of the body just before the first exported seq, as stored by the
//! collector; 32 zero bytes before seq 1), and the chain events the collector
//! recorded in range (gaps, forks, replays, spool overflows, clock anomalies).
//! It is written last so that the exporter streams envelopes from the store
//! without holding them.
//!
//! # What verification proves, and what it does not
//!
//! The authentic parts are the envelopes (signed by the node key) and the
//! node certificates (signed by the CA; pin the CA with `--ca-fingerprint`
//! or it is trusted as found). Verification checks every file against the
//! manifest, every certificate path, every signature over the exact body
//! bytes, and the hash chain: consecutive seqs must link, the first one to
//! the manifest's anchor. A break is a failure unless the bundle explains it:
//! a gap the collector recorded or the node itself declared in a signed gap
//! marker, or a fork the collector recorded. Explained breaks are still
//! printed, as known gaps or forks.
//!
//! The manifest itself is not signed: the collector's word (hostname, events,
//! anchor, which envelopes were in range) is only as good as the channel the
//! bundle came through. Removing whole envelopes from either end of a range
//! and rewriting the manifest to match is not detectable from the bundle
//! alone; `verify` prints the manifest's SHA-256, the same as `export` did,
//! so that the two can be compared out of band.

mod archive;
mod export;
mod verify;

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::store::{EvidenceRead, StoreError};

pub use export::{ExportRequest, ExportSummary, export};
pub use verify::{KnownBreak, NodeVerdict, Problem, VerifyReport, verify_bundle};

/// The format id in `manifest.json`.
pub const FORMAT: &str = "kosmos.evidence/v1";
pub const MANIFEST_PATH: &str = "manifest.json";
pub const CA_PATH: &str = "ca.pem";
pub const PROTO_PATH: &str = "attest.proto";

/// Entries in a bundle (two per envelope), at most.
const MAX_ENTRIES: u64 = 4_000_000;
/// Uncompressed bytes read from a bundle, at most (a gzip bomb stops here).
const MAX_TOTAL_BYTES: u64 = 64 << 30;
/// `manifest.json`, at most.
const MAX_MANIFEST_BYTES: u64 = 512 << 20;
/// A certificate, `attest.proto` or any other small file, at most.
const MAX_SMALL_FILE_BYTES: u64 = 1 << 20;
/// A signature file, at most (a valid one is 64 bytes).
const MAX_SIG_BYTES: u64 = 1024;

/// Errors of the evidence commands. Problems found *in* a bundle are not
/// errors but the verification's findings; these are the cases where no
/// verdict can be given (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no such node {0}")]
    UnknownNode(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The bundle cannot be read as an evidence bundle at all.
    #[error("{path}: {problem}")]
    Unreadable { path: String, problem: String },
    #[error("{0}")]
    Usage(String),
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> EvidenceError + '_ {
    move |source| EvidenceError::Io { path: path.display().to_string(), source }
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// RFC 3339, when the export ran.
    pub created_at: String,
    pub collector: CollectorInfo,
    pub export: ExportParams,
    pub nodes: Vec<ManifestNode>,
    /// Every file of the bundle but the manifest, sorted by path.
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CollectorInfo {
    /// kosmos-collector version that wrote the bundle.
    pub version: String,
    /// `SHA256:<hex>` of the DER of `ca.pem`, as agents pin it.
    pub ca_fingerprint: String,
}

/// What was asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportParams {
    /// Every enrolled node (`--all`), or the nodes named with `--node`.
    pub all: bool,
    pub nodes: Vec<String>,
    /// Inclusive bounds on the bodies' creation times (RFC 3339); absent
    /// means unbounded.
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestNode {
    pub id: String,
    pub hostname: String,
    pub machine_id: String,
    pub enrolled_at: String,
    pub revoked_at: Option<String>,
    /// `nodes/<id>/cert.pem`.
    pub certificate: String,
    pub envelope_count: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Earliest and latest creation time of the exported bodies (RFC 3339).
    pub first_created_at: Option<String>,
    pub last_created_at: Option<String>,
    /// The link the first exported envelope chains on; absent when no
    /// envelope was exported.
    pub anchor: Option<Anchor>,
    /// Events the collector recorded on the node for the exported seqs or
    /// within the time range, in the order recorded.
    pub events: Vec<ManifestEvent>,
    /// What retention removed inside the exported range or just before it
    /// (bundles from before retention have none).
    #[serde(default)]
    pub pruned: Vec<ManifestPruned>,
}

/// A run of seqs retention removed: a hole in the chain that is a
/// *retention gap*, not a break.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestPruned {
    pub first_seq: u64,
    pub last_seq: u64,
    /// Stored envelopes the run held.
    pub count: u64,
    /// `compact` (compact attestations past `keep_all_days`) or `expired`
    /// (everything past `max_days`).
    pub reason: String,
    /// Hex `prev_hash` of the first removed body, when it was stored.
    pub prev_sha256: Option<String>,
    /// Hex SHA-256 of the last removed body: what the next body chains on.
    pub last_sha256: Option<String>,
    /// RFC 3339, when it was pruned.
    pub pruned_at: String,
}

/// The body before the first exported one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Anchor {
    /// `first_seq - 1` (0 before the first envelope a node ever sent).
    pub seq: u64,
    /// Hex SHA-256 of that body as the collector stored it (64 zeros for
    /// seq 0); absent when the collector never stored that seq.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestEvent {
    /// `gap`, `fork`, `replay`, `spool_overflow`, `clock_skew`, ...
    pub kind: String,
    /// The seq of the envelope that caused it, when there was one.
    pub seq: Option<u64>,
    pub detail: String,
    /// RFC 3339, when the collector recorded it.
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    pub bytes: u64,
}

/// `nodes/<id>/cert.pem`.
pub fn cert_path(node: &str) -> String {
    format!("nodes/{node}/cert.pem")
}

/// `nodes/<id>/<seq>.body`.
pub fn body_path(node: &str, seq: u64) -> String {
    format!("nodes/{node}/{seq:020}.body")
}

/// `nodes/<id>/<seq>.sig`.
pub fn sig_path(node: &str, seq: u64) -> String {
    format!("nodes/{node}/{seq:020}.sig")
}

/// What a (valid) path in a bundle holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role<'a> {
    Manifest,
    Ca,
    Proto,
    Cert(&'a str),
    Body(&'a str, u64),
    Sig(&'a str, u64),
    /// Anything else: not part of the format.
    Unknown,
}

impl Role<'_> {
    fn of(path: &str) -> Role<'_> {
        match path {
            MANIFEST_PATH => return Role::Manifest,
            CA_PATH => return Role::Ca,
            PROTO_PATH => return Role::Proto,
            _ => {}
        }
        let mut parts = path.split('/');
        let (Some("nodes"), Some(node), Some(file), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Role::Unknown;
        };
        if !kosmos_proto::identity::is_valid_node_id(node) {
            return Role::Unknown;
        }
        if file == "cert.pem" {
            return Role::Cert(node);
        }
        let seq_of = |digits: &str| {
            (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u64>().ok())
                .flatten()
        };
        match file.split_once('.') {
            Some((digits, "body")) => seq_of(digits).map_or(Role::Unknown, |s| Role::Body(node, s)),
            Some((digits, "sig")) => seq_of(digits).map_or(Role::Unknown, |s| Role::Sig(node, s)),
            _ => Role::Unknown,
        }
    }

    /// The largest content accepted for this kind of file.
    fn limit(self) -> u64 {
        match self {
            Role::Manifest => MAX_MANIFEST_BYTES,
            Role::Body(..) => kosmos_proto::chain::MAX_BODY_BYTES as u64,
            Role::Sig(..) => MAX_SIG_BYTES,
            Role::Ca | Role::Proto | Role::Cert(_) | Role::Unknown => MAX_SMALL_FILE_BYTES,
        }
    }

    /// The node and seq a file belongs to, for naming it in a problem.
    fn owner(self) -> (Option<String>, Option<u64>) {
        match self {
            Role::Cert(n) => (Some(n.to_string()), None),
            Role::Body(n, s) | Role::Sig(n, s) => (Some(n.to_string()), Some(s)),
            _ => (None, None),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// RFC 3339 UTC with milliseconds, from Unix milliseconds.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| format!("@{ms}ms"), |d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A `--from`/`--to` bound: RFC 3339, or a bare `YYYY-MM-DD` (UTC), which
/// means the start of that day for `--from` and its last millisecond for
/// `--to`, so that both days are included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeBound {
    pub ms: i64,
}

impl TimeBound {
    fn parse(s: &str, end_of_day: bool) -> Result<TimeBound, String> {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(TimeBound { ms: t.timestamp_millis() });
        }
        let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
        let start = day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp_millis();
        Ok(TimeBound { ms: if end_of_day { start + 86_400_000 - 1 } else { start } })
    }

    /// Parser of `--from`.
    pub fn parse_from(s: &str) -> Result<TimeBound, String> {
        Self::parse(s, false)
    }

    /// Parser of `--to`.
    pub fn parse_to(s: &str) -> Result<TimeBound, String> {
        Self::parse(s, true)
    }
}

/// `SHA256:<64 hex>`, normalised to lower case.
fn parse_fingerprint(s: &str) -> Result<String, String> {
    let hex = s.strip_prefix("SHA256:").or_else(|| s.strip_prefix("sha256:")).unwrap_or(s);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("SHA256:{}", hex.to_ascii_lowercase()))
    } else {
        Err(format!("{s:?} is not a SHA256:<64 hex digits> fingerprint"))
    }
}

/// `kosmos-collector evidence ...`
#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Write the raw signed envelopes of nodes over a time range, their
    /// certificates, the CA certificate and a manifest to a .tar.gz bundle.
    Export(ExportArgs),
    /// Verify a bundle fully offline (file hashes, certificate paths,
    /// signatures, hash chains); prints a verdict per node. Exit 0 when all
    /// verified, 1 when anything failed.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["nodes", "all"])))]
pub struct ExportArgs {
    /// A node to export (repeatable).
    #[arg(long = "node", value_name = "ID")]
    pub nodes: Vec<String>,
    /// Every enrolled node, revoked ones included.
    #[arg(long)]
    pub all: bool,
    /// Bodies created at or after this time: RFC 3339, or YYYY-MM-DD (UTC,
    /// from the start of the day). Default: from the first.
    #[arg(long, value_name = "DATE", value_parser = TimeBound::parse_from)]
    pub from: Option<TimeBound>,
    /// Bodies created at or before this time: RFC 3339, or YYYY-MM-DD (UTC,
    /// to the end of the day). Default: to the last.
    #[arg(long, value_name = "DATE", value_parser = TimeBound::parse_to)]
    pub to: Option<TimeBound>,
    /// The bundle to write (replaced atomically, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle (.tar.gz) written by `evidence export`.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// The CA the auditor expects (SHA256:<hex>, as `kosmos-collector ca
    /// fingerprint` prints it). Without it the bundle's own CA is trusted.
    #[arg(long, value_name = "SHA256:HEX", value_parser = parse_fingerprint)]
    pub ca_fingerprint: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

fn print(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// `evidence export`: returns the exit code.
pub fn run_export(store: &mut dyn EvidenceRead, ca_pem: &str, args: &ExportArgs) -> Result<u8, EvidenceError> {
    if let (Some(f), Some(t)) = (&args.from, &args.to)
        && f.ms > t.ms
    {
        return Err(EvidenceError::Usage(format!("--from {} is after --to {}", rfc3339(f.ms), rfc3339(t.ms))));
    }
    let request = ExportRequest {
        nodes: args.nodes.clone(),
        all: args.all,
        from_ms: args.from.as_ref().map(|b| b.ms),
        to_ms: args.to.as_ref().map(|b| b.ms),
        out: args.out.clone(),
    };
    let s = export(store, ca_pem, &request, crate::store::now_ms())?;
    print(&format!(
        "wrote {}: {} node(s), {} envelope(s), {} bytes\nmanifest sha256 {}\n",
        s.path.display(),
        s.nodes,
        s.envelopes,
        s.bytes,
        s.manifest_sha256
    ));
    Ok(0)
}

/// `evidence verify`: returns the exit code (0 verified, 1 failed).
pub fn run_verify(args: &VerifyArgs) -> Result<u8, EvidenceError> {
    let report = verify_bundle(&args.bundle, args.ca_fingerprint.as_deref())?;
    match args.output {
        OutputFormat::Text => print(&report.to_text()),
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&report)
                .map_err(|e| EvidenceError::Usage(format!("cannot render the report: {e}")))?;
            print(&format!("{json}\n"));
        }
    }
    Ok(if report.verified { 0 } else { 1 })
}

#[cfg(test)]
mod tests;
