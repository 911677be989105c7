#!/usr/bin/env bash
# Quickstart: from a fresh clone to a fleet report of this machine.
#
#   ./quickstart.sh          build, start a collector on loopback, enroll this
#                            machine's agent, deliver one report, write
#                            quickstart/fleet-report.html
#   ./quickstart.sh stop     stop the quickstart collector
#
# Everything lives in ./quickstart/ (git-ignored): the collector's data
# directory (embedded SQLite store, a CA of its own), the agent's
# configuration and state, the logs and the report. Nothing is written to
# /etc or /var/lib, nothing listens beyond 127.0.0.1. Run it again at will:
# a running quickstart collector and an existing enrollment are reused.
# `rm -rf quickstart` (after `./quickstart.sh stop`) starts from scratch.
#
# Run it as root for a complete audit (some checks read /etc/shadow or run
# `sshd -T` and `nft`); as another user those checks report `error`.
set -euo pipefail
cd "$(dirname "$0")"
repo=$PWD
q=$repo/quickstart
pidfile=$q/collector.pid

say() { printf '%s\n' "$*"; }
die() {
  printf 'quickstart: %s\n' "$*" >&2
  exit 1
}

# The PID of the running quickstart collector, if there is one (a stale
# pidfile, or a PID reused by another program, does not count).
running_pid() {
  local pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kosmos-collector .*$q/collector" || return 1
  printf '%s\n' "$pid"
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    say "no quickstart collector is running"
    rm -f "$pidfile"
    return 0
  fi
  kill "$pid"
  for _ in $(seq 50); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
  [ ! -d "/proc/$pid" ] || die "collector $pid did not stop on SIGTERM"
  rm -f "$pidfile"
  say "stopped the quickstart collector (pid $pid)"
}

case "${1:-}" in
  "") ;;
  stop) stop; exit 0 ;;
  *) say "usage: ./quickstart.sh [stop]" >&2; exit 2 ;;
esac

command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs"

say "== building the release binaries (the first build takes a few minutes)"
cargo build --release --locked -p kosmos-node-agent -p kosmos-collector
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
collector_bin=$target/release/kosmos-collector
agent_bin=$target/release/kosmos-node-agent
if [ ! -x "$collector_bin" ] || [ ! -x "$agent_bin" ]; then die "binaries not found in $target/release"; fi

mkdir -p "$q/agent"
data=$q/collector
# An explicit configuration file, so that a packaged collector's
# /etc/kosmos-collector/collector.toml on this machine is not read.
collector=("$collector_bin" --config "$q/collector.toml" --data-dir "$data")
if [ ! -f "$q/collector.toml" ]; then
  cat >"$q/collector.toml" <<'EOF'
# The quickstart collector: every setting is at its default (see
# packaging/collector/collector.toml); the listen address is given on the
# command line (127.0.0.1, a free port).
EOF
fi

if pid=$(running_pid); then
  say "== reusing the quickstart collector (pid $pid)"
else
  say "== starting a collector on 127.0.0.1 (data: $data)"
  mkdir -p "$data"
  rm -f "$data/grpc.addr" "$data/http.addr"
  # Free loopback ports for gRPC and for the dashboard/metrics (http.addr).
  nohup "${collector[@]}" serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 >>"$q/collector.log" 2>&1 &
  pid=$!
  echo "$pid" >"$pidfile"
  # First start creates the CA and server certificate, then binds.
  for _ in $(seq 300); do
    [ -s "$data/grpc.addr" ] && break
    [ -d "/proc/$pid" ] || { tail -20 "$q/collector.log" >&2; die "the collector exited (log: $q/collector.log)"; }
    sleep 0.1
  done
  [ -s "$data/grpc.addr" ] || die "the collector did not start listening within 30 s (log: $q/collector.log)"
fi
addr=$(cat "$data/grpc.addr")
url=https://$addr

# The agent's own configuration and state: never /etc/kosmos-node-agent or
# /var/lib/kosmos-node-agent. It audits this machine (root = "/").
state=$q/agent/state
cat >"$q/agent/agent.toml" <<EOF
# Written by quickstart.sh (the collector's port changes when it restarts).
collector_url = "$url"
state_dir = "$state"
watch = false
EOF

node=$(cat "$state/node_id" 2>/dev/null || true)
if [ -n "$node" ] && "${collector[@]}" node list 2>/dev/null |
  awk -F'\t' -v n="$node" '$1 == n && $3 == "active" { found = 1 } END { exit !found }'; then
  say "== this machine is already enrolled as $node"
else
  say "== enrolling this machine's agent"
  token=$("${collector[@]}" token create --ttl 10m | head -1)
  fingerprint=$("${collector[@]}" ca fingerprint)
  # --force: a state directory left from an earlier collector is replaced.
  KOSMOS_AGENT_LOG=warn "$agent_bin" enroll --collector "$url" --token "$token" \
    --ca-fingerprint "$fingerprint" --state-dir "$state" --force
  node=$(cat "$state/node_id")
fi

say "== one audit round: report, sign, deliver, wait for the collector's ack"
KOSMOS_AGENT_LOG=info "$agent_bin" run --once --timeout 120 --config "$q/agent/agent.toml" 2>>"$q/agent.log" ||
  die "the report was not delivered (log: $q/agent.log)"

say "== fleet report"
"${collector[@]}" report --format html --out "$q/fleet-report.html"

cat <<EOF

Done. This machine ($node) was audited and its signed report stored.

  fleet report     $q/fleet-report.html
  dashboard        http://$(cat "$data/http.addr")/  (and /metrics for Prometheus)
  collector        pid $(cat "$pidfile"), gRPC $url (mTLS), log $q/collector.log
  collector data   $data (SQLite store collector.db, CA ca.pem)
  agent            config $q/agent/agent.toml, state $state, log $q/agent.log
  CA fingerprint   $("${collector[@]}" ca fingerprint)

Audit again and refresh the report:  ./quickstart.sh
Other formats:  $collector_bin --config $q/collector.toml --data-dir $data report --format json|csv|md|junit --out FILE
Stop the collector:  ./quickstart.sh stop   (or: kill $(cat "$pidfile"))
EOF
