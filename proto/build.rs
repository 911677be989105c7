//! Generates the kosmos.attest.v1 code with protox (pure Rust), so no system
//! protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=kosmos/attest/v1/attest.proto");
    let fds = protox::compile(["kosmos/attest/v1/attest.proto"], ["."])?;
    // LeanCodec: prost with small initial buffers (see src/codec.rs).
    // The two large bytes fields are `bytes::Bytes`: decoded as slices of
    // the received buffer instead of copies, so an envelope in flight holds
    // its body once (not three times) and an idle stream keeps no buffer
    // the size of its last envelope.
    tonic_prost_build::configure()
        .codec_path("crate::codec::LeanCodec")
        .bytes(".kosmos.attest.v1.AttestationEnvelope.body")
        .bytes(".kosmos.attest.v1.AttestationBody.report_json")
        .compile_fds(fds)?;
    Ok(())
}
