#!/usr/bin/env bash
# What the collector's store grows by, per node and day, with and without
# compact attestations, and what a prune leaves (release build, SQLite).
#   0. a simulated week of NODES healthy nodes whose findings never change:
#      compact attestations and one full checkpoint a day (and the first
#      report at start);
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
# checkpointed). A node's latest findings (about 350 KB: one row per check,
# rewritten in place) are state, not history: they are printed apart and
# the per-day figures are the rest of the file. Usage: bash bench/storage.sh
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
    --sim-interval-ms 300000 --changed "${rate:-$changed}" --report "$work/report.json" --pid "$pid" "$@" | tr ' ' '\n' \
    | grep -E '^(acked|errors|ingest)=' | tr '\n' ' '
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "($(( SECONDS - t0 ))s)"
}
# What each table holds (bytes of its pages, indexes included), read from
# SQLite's dbstat table with the sqlite3 shell.
tables() {
  sqlite3 "$1/collector.db" "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8" | tr '\n' ' '
  echo
}
# The bytes that do not grow with time: each node's latest findings (one
# row per node and check, rewritten in place), the node and token rows and
# the schema. The rest of the file is history.
state() {
  sqlite3 "$1/collector.db" "SELECT SUM(pgsize) FROM dbstat WHERE name IN
    ('findings_latest', 'nodes', 'tokens', 'sqlite_schema', 'schema_migrations') OR name LIKE 'sqlite_autoindex_nodes%'
    OR name LIKE 'sqlite_autoindex_tokens%'"
}
command -v sqlite3 >/dev/null || { echo "needs the sqlite3 shell (apt-get install sqlite3)"; exit 2; }
echo "== a week of $nodes healthy nodes, compact attestations, nothing changes"
rate=0 fleet healthy "$nodes" 2016 --compact
healthy=$(size "$work/healthy"); healthy_state=$(state "$work/healthy")
tables "$work/healthy"
echo "== a week of $nodes nodes, compact attestations"
fleet week "$nodes" 2016 --compact
week=$(size "$work/week"); week_state=$(state "$work/week")
tables "$work/week"
echo "== a day of $before_nodes nodes, full reports every round"
fleet before "$before_nodes" 288
day_full=$(size "$work/before"); day_full_state=$(state "$work/before")
tables "$work/before"
printf '[retention]\nkeep_all = "1d"\n' > "$work/week/collector.toml"
KOSMOS_COLLECTOR_LOG=warn $bin/kosmos-collector --config "$work/week/collector.toml" --data-dir "$work/week" prune --vacuum
pruned=$(size "$work/week"); pruned_state=$(state "$work/week")
tables "$work/week"
per() { python3 -c "print(f'{($1) / ($2) / 1024:.1f} KiB')"; }
echo "per-node state (latest findings, node row; does not grow): $(per "$healthy_state" "$nodes") per node"
echo "history, per node per day (the file less that state):"
echo "  full reports every round:   $(per "$day_full - $day_full_state" "$before_nodes") ($day_full bytes in all for $before_nodes nodes x 1 day)"
echo "  healthy node, compact:      $(per "$healthy - $healthy_state" "$nodes * 7") ($healthy bytes in all for $nodes nodes x 7 days)"
echo "  week at CHANGED=$changed%, compact: $(per "$week - $week_state" "$nodes * 7") ($week bytes in all for $nodes nodes x 7 days)"
echo "  the week after the prune:   $(per "$pruned - $pruned_state" "$nodes * 7") ($pruned bytes in all)"
