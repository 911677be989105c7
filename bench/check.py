#!/usr/bin/env python3
"""Benchmark `kosmos-node-agent check` (release build): wall time and peak RSS.

Runs the full profile on the live host and on each fixture root (copied and
prepared like the integration tests do), N times each, and prints the median
and worst wall time and the peak RSS (from wait4's rusage, so it measures the
agent process itself, not this script).

    python3 bench/check.py [--runs 30] [--profile kosmos-external] [--bin PATH]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(REPO, "tests", "fixtures")


def prepare(name, into):
    root = os.path.join(into, name)
    shutil.copytree(os.path.join(FIX, name), root, symlinks=True)
    setup = os.path.join(FIX, name + ".setup")
    if os.path.exists(setup):
        for line in open(setup):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            target = os.path.join(root, parts[1].lstrip("/"))
            if parts[0] == "mode":
                os.chmod(target, int(parts[2], 8))
            elif parts[0] == "owner":
                os.chown(target, int(parts[2]), int(parts[3]))
            elif parts[0] == "sparse":
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as f:
                    f.truncate(int(parts[2]))
            elif parts[0] == "fifo":
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if os.path.lexists(target):
                    os.remove(target)
                os.mkfifo(target)
    return root


def measure(cmd, runs):
    """Median and worst wall time (ms) and peak RSS (MiB) of `cmd`.

    RSS comes from GNU time (%M) around the agent itself: a child forked from
    this Python process would inherit Python's RSS in its own ru_maxrss.
    """
    walls, rss = [], []
    with tempfile.NamedTemporaryFile(mode="r") as out:
        for _ in range(runs):
            t0 = time.perf_counter()
            p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name] + cmd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls.append((time.perf_counter() - t0) * 1000)
            if p.returncode not in (0, 1):
                sys.exit(f"{' '.join(cmd)} exited {p.returncode}")
            out.seek(0)
            rss.append(int(out.read().split()[-1]) / 1024)  # KiB -> MiB
    return statistics.median(walls), max(walls), max(rss)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--profile", default="kosmos-external")
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "kosmos-node-agent"))
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        subprocess.run(["cargo", "build", "--release", "-p", "kosmos-node-agent", "--bin", "kosmos-node-agent"],
                       cwd=REPO, check=True)
    count = subprocess.run([args.bin, "checks", "--profile", args.profile], capture_output=True, text=True)
    n = count.stdout.strip().splitlines()[-1] if count.stdout else "?"
    print(f"kosmos-node-agent check, profile {args.profile} ({n}), {args.runs} runs each, release build")
    print(f"{'target':<12} {'median ms':>10} {'max ms':>8} {'peak RSS MiB':>13}")
    with tempfile.TemporaryDirectory(prefix="kna-bench-") as tmp:
        targets = [("live", None)] + [(n, prepare(n, tmp)) for n in ("hardened", "weak", "minimal", "hostile")]
        # The same profile without the two world-writable checks: their
        # filesystem walk dominates on a live host (it costs what
        # `find / -xdev -perm -0002` costs), so it is shown separately.
        nowalk = os.path.join(tmp, "nowalk.toml")
        with open(nowalk, "w") as f:
            f.write(f'[profile]\nname = "{args.profile}-nowalk"\nversion = "1"\nextends = "{args.profile}"\n'
                    '[checks]\nexclude = ["files.world_writable_*"]\n')
        targets.insert(1, ("live-nowalk", None))
        for name, root in targets:
            profile = nowalk if name == "live-nowalk" else args.profile
            cmd = [args.bin, "check", "--profile", profile, "--output", "json", "--fail-on", "none"]
            if root:
                cmd += ["--root", root]
            med, worst, rss = measure(cmd, args.runs)
            print(f"{name:<12} {med:>10.1f} {worst:>8.1f} {rss:>13.1f}")


if __name__ == "__main__":
    main()
