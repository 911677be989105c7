#!/usr/bin/env bash
# Build the .deb and .rpm packages of kosmos-node-agent and kosmos-collector
# into dist/ (or --out DIR).
#
#   packaging/build.sh [--out DIR] [--revision N]
#
# Steps: the release binaries (once, for both package formats); the man pages
# and shell completions, generated from the clap definitions by
# kosmos-gen-docs into packaging/generated/; then `cargo deb` and
# `cargo generate-rpm` for each crate, with the metadata in agent/Cargo.toml
# and collector/Cargo.toml. --revision sets the Debian revision and the RPM
# release (default 1): packaging/test.sh uses it to build an upgrade.
#
# Needs cargo-deb and cargo-generate-rpm:
#   cargo install --locked cargo-deb cargo-generate-rpm
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

out=dist
revision=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --revision) revision=$2; shift 2 ;;
    *) echo "usage: packaging/build.sh [--out DIR] [--revision N]" >&2; exit 2 ;;
  esac
done
case "$revision" in
  '' | *[!0-9]*) echo "build.sh: --revision must be a number" >&2; exit 2 ;;
esac

for tool in cargo-deb cargo-generate-rpm; do
  if ! command -v "$tool" >/dev/null; then
    echo "build.sh: $tool is missing: cargo install --locked $tool" >&2
    exit 2
  fi
done

# Reproducible archives: file times from the last commit.
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct)
  export SOURCE_DATE_EPOCH
fi

echo "== release binaries"
cargo build --release --locked -p kosmos-node-agent -p kosmos-collector

echo "== man pages and completions"
generated=$root/packaging/generated
rm -rf "$generated"
# A debug build: CI has built it already (`cargo build --workspace --bins`).
cargo run --quiet --locked -p kosmos-gen-docs -- "$generated"
# Debian wants man pages compressed, without a name or time stamp.
gzip -9n "$generated"/man/man1/*.1

# cargo-deb writes no DEBIAN/md5sums: add one (conffiles excluded, as
# dh_md5sums does; dpkg keeps their sums itself), so that `dpkg --verify`
# can check the installed files.
add_md5sums() {
  local deb=$1 tree
  tree=$(mktemp -d)
  dpkg-deb -R "$deb" "$tree"
  (
    cd "$tree"
    find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
      grep -vxF -f <(sed -n 's|^/||p' DEBIAN/conffiles 2>/dev/null) |
      tr '\n' '\0' | xargs -0r md5sum >DEBIAN/md5sums
  )
  chmod 644 "$tree/DEBIAN/md5sums"
  chmod 755 "$tree" # mktemp made it 0700: it is the archive's ./
  dpkg-deb --root-owner-group -Zxz -b "$tree" "$deb" >/dev/null
  rm -rf "$tree"
}

mkdir -p "$out"
out=$(cd "$out" && pwd)
# cargo generate-rpm -p takes the crate's directory, not its package name.
for pair in kosmos-node-agent:agent kosmos-collector:collector; do
  crate=${pair%%:*} dir=${pair#*:}
  echo "== $crate: deb"
  # --fast: the archive is compressed once, with xz, by add_md5sums.
  deb=$(cargo deb --no-build --locked --fast -p "$crate" --deb-revision "$revision" -o "$out")
  add_md5sums "$deb"
  echo "$deb"
  echo "== $crate: rpm"
  cargo generate-rpm -p "$dir" --set-metadata "release = \"$revision\"" -o "$out"
done

echo "== built"
ls -l "$out"
