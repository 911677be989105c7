#!/usr/bin/env bash
# Collector ingest benchmark (release build): N enrolled agents over mTLS on
# loopback, each envelope carrying a real report of the hardened fixture, as
# the daemon sends it (compact JSON, gzip, signed index digest; 5 % of the
# envelopes change a finding, see kosmos-loadgen --changed).
#   1. maximum sustained ingest into SQLite (200 streams, as fast as acks allow)
#   2. ack latency at a steady rate (STEADY_RATE, default 1,000 envelopes/s) from 1,000 concurrent streams,
#      and the collector's peak RSS with those 1,000 streams open.
# Each node's first report (indexed in full) is stored before the clock starts,
# and the load generator signs its envelopes beforehand (nodes sign on their
# own CPUs); it still shares this machine's cores with the collector, so the
# collector's own CPU time per envelope is printed too.
# Usage: bash bench/ingest.sh [seconds per phase, default 15]
#   FINDINGS=100  envelopes with the report's first 100 findings (default: all 146)
#   CHANGED=5  percentage of envelopes that change a finding (default 5)
#   PHASES=max | PHASES=steady  one phase only
#   COMPACT=1  unchanged rounds as compact attestations (as the daemon sends them to
#     this collector); with CHANGED=0 every envelope after a node's first is one
#   MAX_PER_NODE=60  envelopes each node pre-signs per second of the max phase
#   STORE_TOML='store_url = "postgres://…"…'  collector.toml lines for another store
#     (the database must be empty: each phase enrolls its own nodes)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
cargo build --release -q -p kosmos-collector -p kosmos-node-agent -p kosmos-e2e --bins
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/kna-ingest-XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
$bin/kosmos-node-agent check --root tests/fixtures/hardened --output json --fail-on none > "$work/report.json"

phase() { # name nodes rate
  local dir="$work/$1"; mkdir -p "$dir"; printf '%s\n' "${STORE_TOML:-}" > "$dir/collector.toml"
  KOSMOS_COLLECTOR_LOG=warn $bin/kosmos-collector --config "$dir/collector.toml" --data-dir "$dir" serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 > "$dir/out" &
  local pid=$!
  for _ in $(seq 100); do [ -s "$dir/grpc.addr" ] && break; sleep 0.1; done
  local addr; addr=$(cat "$dir/grpc.addr")
  echo "== $1: $2 streams, rate ${3/#0/max}, ${secs}s"
  $bin/kosmos-loadgen --data-dir "$dir" --url "https://$addr" --nodes "$2" --seconds "$secs" --rate "$3" \
    --report "$work/report.json" --pid "$pid" ${FINDINGS:+--findings "$FINDINGS"} ${CHANGED:+--changed "$CHANGED"} \
    ${COMPACT:+--compact} ${MAX_PER_NODE:+--max-per-node-per-sec "$MAX_PER_NODE"}
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
# PHASES=max or PHASES=steady runs one of them.
case "${PHASES:-max steady}" in *max*) phase max-throughput 200 0 ;; esac
case "${PHASES:-max steady}" in *steady*) phase steady-1000 1000 "${STEADY_RATE:-1000}" ;; esac
