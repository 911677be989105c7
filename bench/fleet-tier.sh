#!/usr/bin/env bash
# Fleet tiers (release build), in the spirit of osquery-perf: simulated
# fleets of 1,000 and 10,000 agents (kosmos-fleetsim: real Enroll RPC, one
# mTLS connection and certificate per node, the hardened fixture's report)
# at a compressed interval (INTERVAL, default 30 s), against
#   - one collector on SQLite,
#   - one collector on PostgreSQL,
#   - two collector replicas on one PostgreSQL database (node i on replica i mod 2).
# PostgreSQL is a throwaway cluster this script starts (initdb as the
# `postgres` user, loopback, a free port) with a new database per run.
# Everything shares this machine's cores: simulator, collectors, PostgreSQL.
# Pass: every attestation produced during the steady phase verified,
# chain-checked and stored within one interval (ack p99 < INTERVAL, no
# refusal, nothing produced left unacked beyond one interval's worth).
# Usage: bash bench/fleet-tier.sh [steady seconds, default 60]
#   TIERS="1000 10000"  fleet sizes;  SHAPES="sqlite pg1 pg2"
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
interval=${INTERVAL:-30}
cargo build --release -q -p kosmos-collector -p kosmos-node-agent -p kosmos-e2e --bins
bin=$(realpath -m "${CARGO_TARGET_DIR:-target}")/release
work=$(mktemp -d /tmp/kna-tier-XXXX)
chmod 755 "$work"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
pgdata=$work/pg
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  [ -f "$pgdata/postmaster.pid" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
$bin/kosmos-node-agent check --root tests/fixtures/hardened --output json --fail-on none > "$work/report.json"

pg_up() {
  [ -n "$pgbin" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)"; exit 1; }
  mkdir -p "$pgdata"; chown postgres "$pgdata"
  runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -A trust -U postgres > /dev/null
  runuser -u postgres -- "$pgbin/pg_ctl" -w -D "$pgdata" -l "$pgdata/log" \
    -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=512MB" start > /dev/null
  runuser -u postgres -- psql -h "$pgdata" -p "$pgport" -q -c "CREATE ROLE kosmos LOGIN"
}

n_run=0
run() { # nodes shape
  local nodes=$1 shape=$2 dir replicas=1
  n_run=$((n_run + 1)); dir=$work/run-$n_run; mkdir -p "$dir"
  printf 'report_interval_secs = %s\n' "$interval" > "$dir/collector.toml"
  case $shape in
    pg1|pg2)
      [ -f "$pgdata/postmaster.pid" ] || pg_up
      runuser -u postgres -- psql -h "$pgdata" -p "$pgport" -q -c "CREATE DATABASE tier$n_run OWNER kosmos"
      printf 'store_url = "postgres://kosmos@127.0.0.1:%s/tier%s"\n' "$pgport" "$n_run" >> "$dir/collector.toml"
      [ "$shape" = pg2 ] && replicas=2 ;;
  esac
  echo "== $nodes nodes, $shape, interval ${interval}s, steady ${secs}s"
  $bin/kosmos-fleetsim --collector "$bin/kosmos-collector" --data-dir "$dir" --nodes "$nodes" \
    --interval-secs "$interval" --seconds "$secs" --report "$work/report.json" --replicas "$replicas" \
    | tee "$dir/out"
  local p99 refused behind rate
  p99=$(grep -o 'ack_p99=[0-9.NaN]*' "$dir/out" | cut -d= -f2)
  rate=$(grep -o ' rate=[0-9.]*' "$dir/out" | cut -d= -f2)
  refused=$(grep -o 'refused=[0-9]*' "$dir/out" | head -1 | cut -d= -f2)
  behind=$(grep -o 'produced_not_acked_at_end=[0-9]*' "$dir/out" | cut -d= -f2)
  # The steady phase must have carried the fleet's whole rate (nodes per
  # interval, within 10 %), every ack within one interval, nothing refused.
  if awk -v p="$p99" -v i="$interval" -v r="$refused" -v b="$behind" -v n="$nodes" -v rate="$rate" \
       'BEGIN { exit !(p ~ /^[0-9.]+$/ && p < i * 1000 && r == 0 && b <= n && rate >= 0.9 * n / i) }'; then
    echo "pass: $rate envelopes/s (the fleet's rate: $((nodes / interval))/s), p99 ${p99} ms < ${interval} s, ${refused} refused, ${behind} produced but not yet acked at the end"
  else
    echo "FAIL: $rate envelopes/s (the fleet's rate: $((nodes / interval))/s), p99 ${p99} ms, ${refused} refused, ${behind} produced but not acked at the end"
  fi
}

for nodes in ${TIERS:-1000 10000}; do
  for shape in ${SHAPES:-sqlite pg1 pg2}; do
    run "$nodes" "$shape"
  done
done
