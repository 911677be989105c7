#!/usr/bin/env bash
# Fleet-scale benchmark (release build): NODES simulated agents (default
# 10,000) against one real collector on loopback, each with its own mTLS
# connection and node certificate, one envelope every INTERVAL seconds
# (default 300) carrying the hardened fixture's report, streams ending after
# LINGER seconds with nothing to send (the agent's stream_linger_secs,
# default 30). See tests/src/bin/kosmos-fleetsim.rs.
#   1. steady: ack latency p50/p99, collector RSS, RSS per connected agent
#      over the RSS with no agent, collector CPU;
#   2. storm: the collector is killed (SIGKILL) and restarted after DOWN
#      seconds (default 10); time until every node is back and caught up,
#      envelopes refused, peak RSS during the storm.
# Needs an open-files limit of NODES + a few hundred for the collector and
# for the simulator (this script raises its own soft limit).
# Usage: bash bench/fleet-scale.sh [seconds of steady phase, default 120]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
cargo build --release -q -p kosmos-collector -p kosmos-node-agent -p kosmos-e2e --bins
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/kna-fleetsim-XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
$bin/kosmos-node-agent check --root tests/fixtures/hardened --output json --fail-on none > "$work/report.json"
mkdir -p "$work/collector"
$bin/kosmos-fleetsim --collector $bin/kosmos-collector --data-dir "$work/collector" \
  --nodes "${NODES:-10000}" --interval-secs "${INTERVAL:-300}" --linger-secs "${LINGER:-30}" \
  --seconds "$secs" --report "$work/report.json" --storm --down-secs "${DOWN:-10}"
