#!/usr/bin/env bash
# Build (once) a real Debian 12 root whose apt lists hold security updates
# newer than its installed packages, for the patch-level comparison test and
# the benchmark (bench/patch.py).
#
#   tests/debootstrap-root.sh CACHE_DIR      -> prints the root's path
#
# The root is a minbase bookworm from deb.debian.org, then bookworm-security
# is added to its sources and `apt-get update` is run inside it (chroot), so
# its lists are newer than what debootstrap installed. The finished root is
# kept in CACHE_DIR/bookworm-root and marked ready with a stamp file; later
# calls reuse it. Needs root, debootstrap and network access to deb.debian.org.
set -euo pipefail

cache=${1:?usage: $0 CACHE_DIR}
mirror=${KNA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${KNA_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
root="$cache/bookworm-root"
stamp="$root/.kna-ready"

if [ -f "$stamp" ]; then
    echo "$root"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "debootstrap-root.sh: must run as root" >&2
    exit 2
fi
command -v debootstrap >/dev/null || { echo "debootstrap-root.sh: debootstrap is not installed" >&2; exit 2; }

mkdir -p "$cache"
# Serialize concurrent test processes building the same cache.
exec 9>"$cache/.lock"
flock 9
if [ -f "$stamp" ]; then
    echo "$root"
    exit 0
fi
rm -rf "$root"
debootstrap --variant=minbase bookworm "$root" "$mirror" >&2

cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $security bookworm-security main
SOURCES
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
chroot "$root" apt-get update -q >&2
chroot "$root" apt-get clean
date -u +%FT%TZ >"$stamp"
echo "$root"
