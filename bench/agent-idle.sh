#!/usr/bin/env bash
# Agent daemon idle memory (release build): enroll a real agent with a local
# collector over mTLS, run `kosmos-node-agent run` on the live host (root: /,
# with the file watcher on, as the unit runs it), let it deliver its start-up
# report, then sample its RSS while it waits for the next interval.
# Prints the RSS after the first report was acked, the idle RSS at the end
# and the peak (VmHWM, which includes the audit itself).
# Usage: bash bench/agent-idle.sh [idle seconds, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
cargo build --release -q -p kosmos-collector -p kosmos-node-agent
bin=$(realpath -m "${CARGO_TARGET_DIR:-target}")/release
work=$(mktemp -d /tmp/kna-idle-XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/c"; : > "$work/c/collector.toml"
KOSMOS_COLLECTOR_LOG=warn $bin/kosmos-collector --config "$work/c/collector.toml" --data-dir "$work/c" \
  serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 > "$work/c/out" &
for _ in $(seq 100); do [ -s "$work/c/grpc.addr" ] && break; sleep 0.1; done
url="https://$(cat "$work/c/grpc.addr")"
c() { $bin/kosmos-collector --config "$work/c/collector.toml" --data-dir "$work/c" "$@"; }
token=$(c token create --ttl 10m | head -1)
fp=$(c ca fingerprint)
KOSMOS_AGENT_LOG=warn $bin/kosmos-node-agent enroll --collector "$url" --token "$token" --ca-fingerprint "$fp" \
  --state-dir "$work/state" > /dev/null
printf 'collector_url = "%s"\nstate_dir = "%s"\ninterval_secs = 3600\n' "$url" "$work/state" > "$work/agent.toml"
KOSMOS_AGENT_LOG=warn $bin/kosmos-node-agent run --config "$work/agent.toml" &
pid=$!
rss() { awk -v f="$1" '$1 == f { print $2 }' "/proc/$pid/status"; }
# Delivered: the collector holds seq 1 for the node.
for _ in $(seq 300); do
  c node list 2>/dev/null | grep -q 'head_seq=[1-9]' && break
  sleep 0.2
done
after_report=$(rss VmRSS:)
sleep "$secs"
printf 'agent after first report: %.1f MiB, idle after %ss: %.1f MiB, peak (VmHWM): %.1f MiB\n' \
  "$(echo "$after_report/1024" | bc -l)" "$secs" "$(echo "$(rss VmRSS:)/1024" | bc -l)" "$(echo "$(rss VmHWM:)/1024" | bc -l)"
c node list
