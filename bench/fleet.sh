#!/usr/bin/env bash
# Fleet report benchmark (release build) on a synthetic store of
# NODES x CHECKS x DAYS (default 10,000 x 150 x 30, cached under target/):
#   - `kosmos-collector report` in every format (the exchange formats sarif,
#     ocsf, oscal included): wall time and peak RSS (/usr/bin/time);
#   - the dashboard: time to first snapshot, then the fleet page and /metrics
#     (curl's total time, median of 20 requests each) with the collector serving.
# Usage: bash bench/fleet.sh
#   STORE_URL=postgres://USER@HOST/DB  the same on PostgreSQL: the cached SQLite
#     store is first copied into that (empty) database with `store migrate`
#     (timed; --no-evidence-check, as the synthetic store has no envelopes)
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-10000}; CHECKS=${CHECKS:-150}; DAYS=${DAYS:-30}
cargo build --release -q -p kosmos-collector -p kosmos-e2e --bins
bin=$(realpath -m "${CARGO_TARGET_DIR:-target}")/release
store=$PWD/target/bench-fleet-$NODES-$CHECKS-$DAYS
if [ ! -s "$store/collector.db" ]; then
  rm -rf "$store"; mkdir -p "$store"
  $bin/kosmos-fleetgen --db "$store/collector.db" --nodes "$NODES" --checks "$CHECKS" --days "$DAYS"
fi
: > "$store/collector.toml"
echo "store: $(du -h "$store/collector.db" | cut -f1) ($NODES nodes x $CHECKS checks x $DAYS days)"
out=$(mktemp -d /tmp/kna-fleet-XXXX)
config=$store/collector.toml
if [ -n "${STORE_URL:-}" ]; then
  /usr/bin/time -f "%e %M" -o "$out/time" $bin/kosmos-collector --config "$config" --data-dir "$store" \
    store migrate --to "$STORE_URL" --no-evidence-check > "$out/migrate.out" 2> "$out/migrate.err" \
    || { cat "$out/migrate.err"; exit 1; }
  read -r wall rss < "$out/time"
  echo "store migrate to PostgreSQL: ${wall} s wall, $((rss / 1024)) MiB peak RSS"
  config=$store/collector-pg.toml
  printf 'store_url = "%s"\n' "$STORE_URL" > "$config"
fi
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
# The exchange formats name the collector CA in their evidence description:
# give the synthetic store one.
$bin/kosmos-collector --config "$config" --data-dir "$store" ca fingerprint > /dev/null
for fmt in html json csv md junit sarif ocsf oscal; do
  for run in 1 2 3; do
    /usr/bin/time -f "%e %M" -o "$out/time" $bin/kosmos-collector --config "$config" --data-dir "$store" \
      report --format $fmt --out "$out/report.$fmt"
    read -r wall rss < "$out/time"
    echo "report --format $fmt run $run: ${wall} s wall, $((rss / 1024)) MiB peak RSS, $(du -h "$out/report.$fmt" | cut -f1) written"
  done
done
$bin/kosmos-collector --config "$config" --data-dir "$store" serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 > "$out/serve.log" 2> "$out/serve.err" &
pid=$!
t0=$(date +%s.%N)
for _ in $(seq 600); do [ -s "$store/http.addr" ] && grep -q dashboard "$out/serve.log" && break; sleep 0.05; done
t1=$(date +%s.%N)
http=$(cat "$store/http.addr")
echo "serve: listening (first snapshot built) after $(echo "$t1 - $t0" | bc) s"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for path in / /metrics "/?severity=critical" /api/report.json; do
  curl -s -o /dev/null "http://$http$path"
  m=$(for _ in $(seq 20); do curl -s -o "$out/page" -w '%{time_total}\n' "http://$http$path"; done | median)
  echo "GET $path: median ${m} s over 20 requests, $(du -h "$out/page" | cut -f1)"
done
echo "collector peak RSS while serving: $(awk '/VmHWM/ {print int($2/1024) " MiB"}' /proc/$pid/status)"
kill $pid; wait $pid 2>/dev/null || true
rm -f "$store/grpc.addr" "$store/http.addr"
