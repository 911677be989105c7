#!/usr/bin/env bash
# What the collector's store grows by, per node and day, with and without
# compact attestations, and what a prune leaves (release build, SQLite).
#   1. a simulated week of a fleet (NODES, default 1,000) at the 5-minute
#      interval, time-compressed: 2,016 rounds per node dated 5 minutes
#      apart and ending now, every round the hardened fixture's report as
#      the daemon sends it to this collector (compact when unchanged, full
#      on a change and every 288 rounds), CHANGED % of rounds changing a
#      finding (default 0.35: about one change per node a day);
#   2. the same rounds as full reports (what agents sent before compact
#      attestations), for BEFORE_NODES nodes (default 100) over one
#      simulated day: the store grows linearly, and a week of 1,000 nodes of
#      16 KB reports would need 45 GB of disk here;
#   3. `kosmos-collector prune --vacuum` of the week with keep_all = "1d":
#      compact attestations older than a day removed, full reports kept.
# Sizes are of the database file once the collector stopped (WAL
# checkpointed). Usage: bash bench/storage.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-1000}
before_nodes=${BEFORE_NODES:-100}
changed=${CHANGED:-0.35}
cargo build --release -q -p kosmos-collector -p kosmos-node-agent -p kosmos-e2e --bins
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/kna-storage-XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
$bin/kosmos-node-agent check --root tests/fixtures/hardened --output json --fail-on none > "$work/report.json"
size() { stat -c %s "$1/collector.db"; }
fleet() { # name nodes rounds extra-loadgen-args...
  local dir="$work/$1" n=$2 rounds=$3; shift 3
  mkdir -p "$dir"; : > "$dir/collector.toml"
  KOSMOS_COLLECTOR_LOG=warn $bin/kosmos-collector --config "$dir/collector.toml" --data-dir "$dir" serve \
    --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 > "$dir/out" &
  local pid=$!
  for _ in $(seq 100); do [ -s "$dir/grpc.addr" ] && break; sleep 0.1; done
  local t0=$SECONDS
  $bin/kosmos-loadgen --data-dir "$dir" --url "https://$(cat "$dir/grpc.addr")" --nodes "$n" --rounds "$rounds" \
    --sim-interval-ms 300000 --changed "$changed" --report "$work/report.json" --pid "$pid" "$@" | tr ' ' '\n' \
    | grep -E '^(acked|errors|ingest)=' | tr '\n' ' '
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "($(( SECONDS - t0 ))s)"
}
echo "== a week of $nodes nodes, compact attestations"
fleet week "$nodes" 2016 --compact
week=$(size "$work/week")
echo "== a day of $before_nodes nodes, full reports every round"
fleet before "$before_nodes" 288
day_full=$(size "$work/before")
printf '[retention]\nkeep_all = "1d"\n' > "$work/week/collector.toml"
KOSMOS_COLLECTOR_LOG=warn $bin/kosmos-collector --config "$work/week/collector.toml" --data-dir "$work/week" prune --vacuum
pruned=$(size "$work/week")
per() { python3 -c "print(f'{$1 / $2 / 1024:.1f} KiB')"; }
echo "full reports every round: $(per "$day_full" "$before_nodes") per node per day ($day_full bytes for $before_nodes nodes x 1 day)"
echo "compact attestations:     $(per "$week" "$nodes * 7") per node per day ($week bytes for $nodes nodes x 7 days)"
echo "after prune (keep_all 1d): $(per "$pruned" "$nodes * 7") per node per day over the week ($pruned bytes)"
