#!/usr/bin/env bash
# Build the release agent with the `fault-injection` feature into
# target/fault-injection/ for tests/tests/fault_injection.rs. It is built
# with the release profile (the one packages use), then the normal release
# agent is rebuilt so that nothing else in target/release carries the
# feature.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p kosmos-node-agent --features fault-injection
mkdir -p target/fault-injection
cp target/release/kosmos-node-agent target/fault-injection/kosmos-node-agent
cargo build --release --locked -p kosmos-node-agent
