//! kosmos-proto: the `kosmos.attest.v1` protocol shared by the agent and the
//! collector, and the cryptographic helpers both sides must agree on exactly:
//! envelope signing and verification, the hash chain, node identity
//! carried in certificates, the report's encoding and index digest, and the
//! report vocabulary (statuses, severities, what is blocking).

pub mod chain;
pub mod codec;
pub mod compact;
pub mod exchange;
pub mod identity;
pub mod report;
pub mod verdict;

/// The protocol definition itself, shipped in evidence bundles so that an
/// auditor can decode bodies with `protoc --decode` and nothing of ours.
pub const ATTEST_PROTO: &str = include_str!("../kosmos/attest/v1/attest.proto");

/// Generated protobuf and gRPC code for `kosmos.attest.v1`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("kosmos.attest.v1");
}
