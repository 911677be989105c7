#!/usr/bin/env bash
# Build the release agent with the `fault-injection` feature into
# <target>/fault-injection/ for tests/tests/fault_injection.rs (<target>:
# CARGO_TARGET_DIR, default target). It is built with the release profile
# (the one packages use), then the normal release agent is built again so
# that the agent in <target>/release never carries the feature (cargo keeps
# both builds, so the second one costs nothing when it is up to date).
# The collector is built alongside both times, as packaging/build.sh builds
# the two: the same set of packages means the same dependency features, so
# the release dependencies are compiled once for the fault agent, the
# packaged binaries and this script's second build.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p kosmos-node-agent -p kosmos-collector --features kosmos-node-agent/fault-injection
mkdir -p "$target/fault-injection"
cp "$target/release/kosmos-node-agent" "$target/fault-injection/kosmos-node-agent"
cargo build --release --locked -p kosmos-node-agent -p kosmos-collector
