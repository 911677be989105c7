#!/usr/bin/env bash
# What one agent sends over a day, measured on its TCP connection (bytes of
# TLS records, i.e. TCP payload; IP and TCP headers excluded), through a
# counting proxy (bench/wire_proxy.py) between the real agent daemon and the
# real collector on loopback. The day is composed from three measurements,
# because a round's bytes do not depend on the interval but keepalives do:
#   1. compact rounds: ROUNDS rounds of the hardened fixture at a 2 s
#      interval, on one stream as at the default 5-minute interval (the
#      default stream_linger_secs, 360, outlasts it; LINGER=1 measures a
#      stream opened and ended every round instead);
#   2. full rounds: the same with compact = false (what a round cost before
#      compact attestations, and the daily checkpoint's cost);
#   3. idle: the connection with no round at all, for IDLE seconds, with
#      the default keepalives (not time-compressed; an upper bound, since a
#      round every 5 minutes is traffic that postpones the pings).
# A day at the default interval = 287 compact rounds + 1 full round (the
# checkpoint) + 86,400 s of idle connection.
# Usage: bash bench/wire.sh   (ROUNDS=30 IDLE=610 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-30}
idle=${IDLE:-610}
cargo build --release -q -p kosmos-collector -p kosmos-node-agent
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/kna-wire-XXXX)
# The collector runs in a function, in a background subshell: killing the
# job would leave it running, so everything started from the work directory goes.
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -f -- "$work" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/c" "$work/a"
touch "$work/c/collector.toml"
col() { KOSMOS_COLLECTOR_LOG=warn $bin/kosmos-collector --config "$work/c/collector.toml" --data-dir "$work/c" "$@"; }
col serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 > "$work/c/out" &
for _ in $(seq 100); do [ -s "$work/c/grpc.addr" ] && break; sleep 0.1; done
grpc=$(cat "$work/c/grpc.addr")
token=$(col token create --ttl 1h | head -1)
fp=$(col ca fingerprint)
KOSMOS_AGENT_LOG=warn $bin/kosmos-node-agent enroll --collector "https://$grpc" --token "$token" \
  --ca-fingerprint "$fp" --state-dir "$work/a/state" > /dev/null
proxy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 bench/wire_proxy.py "$proxy_port" 127.0.0.1 "${grpc##*:}" "$work/stats.json" &
sleep 0.5
head_seq() { col node list | awk -F'head_seq=' '{print $2}' | head -1; }
stat() { python3 -c "import json;s=json.load(open('$work/stats.json'));print(s['$1'])"; }
agent() { # extra-config
  cat > "$work/a/agent.toml" <<TOML
collector_url = "https://127.0.0.1:$proxy_port"
state_dir = "$work/a/state"
root = "$PWD/tests/fixtures/hardened"
watch = false
jitter_percent = 0
$1
TOML
  KOSMOS_AGENT_LOG=warn $bin/kosmos-node-agent run --config "$work/a/agent.toml" &
  agent_pid=$!
}
wait_head() { while [ "$(head_seq)" -lt "$1" ]; do sleep 0.2; done; }
measure_rounds() { # label extra-config -> per-round up/down bytes
  agent "interval_secs = 2
${LINGER:+stream_linger_secs = $LINGER}
$2"
  local start; start=$(( $(head_seq) + 2 ))
  wait_head "$start"; sleep 1
  local up0 down0; up0=$(stat up); down0=$(stat down)
  wait_head $(( start + rounds )); sleep 1.5
  local up1 down1; up1=$(stat up); down1=$(stat down)
  kill $agent_pid; wait $agent_pid 2>/dev/null || true
  echo "$1: $(( (up1 - up0) / rounds )) bytes up, $(( (down1 - down0) / rounds )) bytes down per round ($rounds rounds)" >&2
  echo $(( (up1 - up0) / rounds ))
}
compact_round=$(measure_rounds "compact round" "")
full_round=$(measure_rounds "full round" "compact = false")
# Idle: one startup round, then nothing for a day; measure after the stream ended.
agent "interval_secs = 86400"
target=$(( $(head_seq) + 1 )); wait_head "$target"; sleep 35
up0=$(stat up); down0=$(stat down)
sleep "$idle"
up1=$(stat up); down1=$(stat down)
kill $agent_pid; wait $agent_pid 2>/dev/null || true
idle_day=$(( (up1 - up0) * 86400 / idle ))
echo "idle connection: $(( up1 - up0 )) bytes up, $(( down1 - down0 )) down in ${idle}s: $idle_day bytes/day up" >&2
day=$(( 287 * compact_round + full_round + idle_day ))
before=$(( 288 * full_round + idle_day ))
echo "per day from the agent at the 5-minute interval: $day bytes ($(( day / 1024 )) KiB) = 287 compact rounds x $compact_round + 1 checkpoint x $full_round + keepalives $idle_day; full reports every round: $before bytes ($(( before / 1024 )) KiB)"
