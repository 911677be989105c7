//! Generates the kosmos.attest.v1 code with protox (pure Rust), so no system
//! protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=kosmos/attest/v1/attest.proto");
    let fds = protox::compile(["kosmos/attest/v1/attest.proto"], ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
