#!/usr/bin/env python3
"""Benchmark the pending-update computation against apt itself.

On the debootstrap Debian 12 root of the comparison test (built and cached by
tests/debootstrap-root.sh; its apt lists hold the full bookworm main amd64
index, about 50 MB uncompressed, plus bookworm-security), time

  * ours: `kosmos-node-agent check --root ROOT --only patch.updates_pending,
    patch.security_updates_pending` (release build, whole process), and
  * apt:  `chroot ROOT apt-get -s dist-upgrade`,

N runs each, and print median/worst wall time, peak RSS (wait4 rusage of the
process itself) and the ratio. Target for ours: <= 300 ms and <= 50 MiB.
Needs root (chroot, debootstrap).

    python3 bench/patch.py [--runs 10] [--bin PATH] [--cache DIR]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(cmd, runs, ok=(0, 1)):
    walls, rss = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        _, status, usage = os.wait4(p.pid, 0)
        walls.append((time.perf_counter() - t0) * 1000)
        rss.append(usage.ru_maxrss / 1024)  # KiB -> MiB
        code = os.waitstatus_to_exitcode(status)
        if code not in ok:
            sys.exit(f"{' '.join(cmd)} exited {code}: {p.stderr.read().decode(errors='replace')}")
        p.stderr.close()
    return statistics.median(walls), max(walls), max(rss)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    ap.add_argument("--bin", default=os.path.join(target, "release", "kosmos-node-agent"))
    ap.add_argument("--cache", default=os.path.join(target, "debootstrap-cache"))
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        subprocess.run(["cargo", "build", "--release", "-p", "kosmos-node-agent", "--bin", "kosmos-node-agent"],
                       cwd=REPO, check=True)
    root = subprocess.run(["bash", os.path.join(REPO, "tests", "debootstrap-root.sh"), args.cache],
                          check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    lists = os.path.join(root, "var/lib/apt/lists")
    size = sum(os.path.getsize(os.path.join(lists, f)) for f in os.listdir(lists) if "_Packages" in f)
    print(f"root {root}: Packages lists {size / 1e6:.1f} MB, {args.runs} runs each")
    with tempfile.TemporaryDirectory(prefix="kna-bench-state-") as state:
        ours = [args.bin, "check", "--root", root, "--only", "patch.updates_pending,patch.security_updates_pending",
                "--output", "json", "--fail-on", "none", "--state-dir", state]
        apt = ["chroot", root, "apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"]
        rows = [("kosmos-node-agent", measure(ours, args.runs)), ("apt-get -s", measure(apt, args.runs, ok=(0,)))]
    print(f"{'':<18} {'median ms':>10} {'max ms':>8} {'peak RSS MiB':>13}")
    for name, (med, worst, rss) in rows:
        print(f"{name:<18} {med:>10.1f} {worst:>8.1f} {rss:>13.1f}")
    (om, _, orss), (am, _, arss) = rows[0][1], rows[1][1]
    print(f"ratio ours/apt: wall {om / am:.2f}, peak RSS {orss / arss:.2f}")
    ok = om <= 300 and orss <= 50
    print("target (<= 300 ms, <= 50 MiB):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
