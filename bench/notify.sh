#!/usr/bin/env bash
# Notification latency: the delay from the ack of an envelope that changes
# a finding to the arrival of its webhook message at a receiver on loopback,
# over the real (release) collector, for the default poll_interval (500 ms),
# 1 s and 200 ms, 15 changes each, one at a time. Then a backlog of 1,000
# messages, enqueued while the receiver was down, drained when it comes back
# (first to last arrival). SQLite store (set the KOSMOS_E2E_PG_* variables
# of `kosmos-e2e-pg` to measure on PostgreSQL).
# Usage: bash bench/notify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --workspace
cargo test --release -q -p kosmos-e2e --test notifications -- --ignored --nocapture --test-threads=1 notification_latency backlog_drain 2>&1 |
  grep -oE '(poll_interval|backlog of) .*'
