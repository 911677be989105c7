#!/usr/bin/env bash
# Build the .deb and .rpm packages of kosmos-node-agent and kosmos-collector
# into dist/ (or --out DIR).
#
#   packaging/build.sh [--out DIR] [--revision N] [--no-build]
#
# Steps: the release binaries (`cargo build --release`, once for both package
# formats; --no-build packages those already in
# ${CARGO_TARGET_DIR:-target}/release instead); the man pages and shell
# completions, generated from the clap definitions by kosmos-gen-docs (the
# one KOSMOS_GEN_DOCS names, else a debug build of it); then
# for each package a .deb with dpkg-deb and an .rpm with rpmbuild. The version
# is the crate's (Cargo.toml); --revision sets the Debian revision and the RPM
# release (default 1): packaging/test.sh uses it to build an upgrade.
#
# What goes into the packages is in packaging/, DIR being packaging/agent or
# packaging/collector; no compiled packaging tool is needed:
#   .deb  DIR/debian/control (with the variables of write_control below),
#         DIR/debian/{postinst,prerm,postrm}, DIR/lintian-overrides,
#         packaging/debian/{changelog,copyright}; the files: stage_deb below
#   .rpm  DIR/NAME.spec (files, %config, directories; scriptlets from
#         DIR/rpm/*.sh), with %changelog written from packaging/debian/changelog
#
# Needs, besides cargo: dpkg-dev (dpkg-shlibdeps, for Depends), binutils
# (objdump, which dpkg-shlibdeps runs), rpm (rpmbuild), python3 (reads
# `cargo metadata`), and git for SOURCE_DATE_EPOCH unless it is set:
#   apt-get install dpkg-dev binutils rpm python3 git
# Reproducible: with the same inputs and SOURCE_DATE_EPOCH (default: the time
# of the last commit), the packages are the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
umask 022

out=dist
revision=1
build=1
usage() { echo "usage: packaging/build.sh [--out DIR] [--revision N] [--no-build]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    --revision) [ $# -ge 2 ] || usage; revision=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    *) usage ;;
  esac
done
case "$revision" in
  '' | *[!0-9]*) echo "build.sh: --revision must be a number" >&2; exit 2 ;;
esac

missing=()
for tool in cargo python3 gzip dpkg dpkg-deb dpkg-shlibdeps objdump rpmbuild; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "build.sh: missing ${missing[*]}: apt-get install dpkg-dev binutils rpm python3" >&2
  exit 2
fi

# Reproducible archives: file times, the .deb's ar members and the RPM build
# time from the last commit.
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && command -v git >/dev/null && git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct)
  export SOURCE_DATE_EPOCH
fi

# The crates' versions, and where cargo puts its builds (CARGO_TARGET_DIR or
# build.target-dir when set, else target/): one `cargo metadata`.
metadata=$(cargo metadata --no-deps --format-version 1 --locked)
{
  read -r target_dir
  read -r agent_version
  read -r collector_version
} < <(python3 -c '
import json, sys
m = json.load(sys.stdin)
versions = {p["name"]: p["version"] for p in m["packages"]}
print(m["target_directory"])
print(versions["kosmos-node-agent"])
print(versions["kosmos-collector"])
' <<<"$metadata")
release_dir=$target_dir/release

if [ "$build" = 1 ]; then
  echo "== release binaries"
  cargo build --release --locked -p kosmos-node-agent -p kosmos-collector
else
  echo "== release binaries: those in $release_dir (--no-build)"
fi
# A binary built from another version of the sources would be packaged under
# this version's name: refuse it.
for pair in "kosmos-node-agent:$agent_version" "kosmos-collector:$collector_version"; do
  crate=${pair%%:*} version=${pair#*:}
  [ -x "$release_dir/$crate" ] || { echo "build.sh: no $release_dir/$crate (build it, or drop --no-build)" >&2; exit 1; }
  got=$("$release_dir/$crate" --version)
  [ "$got" = "$crate $version" ] ||
    { echo "build.sh: $release_dir/$crate --version says \"$got\", the crate is $version: stale build?" >&2; exit 1; }
done

work=$(mktemp -d /tmp/kosmos-build.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== man pages and completions"
generated=$work/generated
# The generator: KOSMOS_GEN_DOCS names one already built (.ci/run passes the
# one its test build made: building it here alone would resolve other
# dependency features and recompile half of the dependencies); otherwise a
# debug build of it.
if [ -n "${KOSMOS_GEN_DOCS:-}" ]; then
  gen_docs=$KOSMOS_GEN_DOCS
else
  cargo build --quiet --locked -p kosmos-gen-docs
  gen_docs=$target_dir/debug/kosmos-gen-docs
fi
"$gen_docs" "$generated"
# Debian wants man pages compressed, without a name or time stamp.
gzip -9n "$generated"/man/man1/*.1

mkdir -p "$out"
out=$(cd "$out" && pwd)

# ---------------------------------------------------------------------------
# .deb
deb_arch=$(dpkg --print-architecture)
# dpkg-shlibdeps looks for debian/control in its working directory, and for
# the binaries under debian/PACKAGE/.
mkdir -p "$work/debian"
: >"$work/debian/control"
gzip -9n <packaging/debian/changelog >"$work/changelog.Debian.gz"

# The files of PACKAGE (from packaging/DIR) into the tree TREE.
stage_deb() {
  local pkg=$1 dir=$2 tree=$3 conf=$4
  install -D -m 0755 "$release_dir/$pkg" "$tree/usr/bin/$pkg"
  install -D -m 0644 "systemd/$pkg.service" "$tree/usr/lib/systemd/system/$pkg.service"
  install -D -m 0644 "packaging/$dir/$conf" "$tree/etc/$pkg/$conf"
  if [ -f "packaging/$dir/$pkg.sysusers" ]; then
    install -D -m 0644 "packaging/$dir/$pkg.sysusers" "$tree/usr/lib/sysusers.d/$pkg.conf"
  fi
  install -d -m 0755 "$tree/usr/share/man/man1"
  install -m 0644 "$generated/man/man1/$pkg"*.1.gz "$tree/usr/share/man/man1/"
  install -D -m 0644 "$generated/completions/bash/$pkg" "$tree/usr/share/bash-completion/completions/$pkg"
  install -D -m 0644 "$generated/completions/zsh/_$pkg" "$tree/usr/share/zsh/vendor-completions/_$pkg"
  install -D -m 0644 "$generated/completions/fish/$pkg.fish" "$tree/usr/share/fish/vendor_completions.d/$pkg.fish"
  install -D -m 0644 README.md "$tree/usr/share/doc/$pkg/README.md"
  install -m 0644 packaging/debian/copyright "$tree/usr/share/doc/$pkg/copyright"
  install -m 0644 "$work/changelog.Debian.gz" "$tree/usr/share/doc/$pkg/changelog.Debian.gz"
  install -D -m 0644 "packaging/$dir/lintian-overrides" "$tree/usr/share/lintian/overrides/$pkg"
  if [ "$pkg" = kosmos-collector ]; then
    # The Grafana dashboard, Prometheus alerting rules (and their unit
    # tests), a scrape configuration and the Cockpit remote-write one.
    install -d -m 0755 "$tree/usr/share/$pkg/monitoring"
    install -m 0644 packaging/grafana/kosmos-fleet.json packaging/prometheus/*.yml "$tree/usr/share/$pkg/monitoring/"
    # What a webhook receiver validates notification bodies against.
    install -m 0644 schemas/notification.v1.schema.json "$tree/usr/share/doc/$pkg/"
  fi

  install -d -m 0755 "$tree/DEBIAN"
  local script
  for script in postinst prerm postrm; do
    install -m 0755 "packaging/$dir/debian/$script" "$tree/DEBIAN/$script"
  done
  echo "/etc/$pkg/$conf" >"$tree/DEBIAN/conffiles"
  chmod 0644 "$tree/DEBIAN/conffiles"
}

# DEBIAN/control from packaging/DIR/debian/control, whose variables are
#   ${Version}         VERSION-REVISION
#   ${Architecture}    this machine's (the binaries')
#   ${Installed-Size}  KiB, counted as dpkg-gencontrol does
#   ${shlibs:Depends}  the packages of the shared libraries the binary needs,
#                      from dpkg-shlibdeps (libgcc-s1 left out: libc6
#                      depends on it)
write_control() {
  local pkg=$1 dir=$2 tree=$3 version=$4 shlibs size control
  shlibs=$(cd "$work" && dpkg-shlibdeps -O -xlibgcc-s1 -xlibgcc1 "debian/$pkg/usr/bin/$pkg" |
    sed -n 's/^shlibs:Depends=//p')
  size=$(cd "$tree" && find . -path ./DEBIAN -prune -o -printf '%y %s\n' |
    awk '$1 == "f" || $1 == "l" { kib += int(($2 + 1023) / 1024); next } { kib += 1 } END { print kib }')
  control=$(<"packaging/$dir/debian/control")
  control=${control//'${Version}'/$version}
  control=${control//'${Architecture}'/$deb_arch}
  control=${control//'${Installed-Size}'/$size}
  control=${control//'${shlibs:Depends}'/$shlibs}
  # Without shared libraries (a static binary), no dangling comma.
  control=$(printf '%s\n' "$control" | sed -e 's/^Depends: , /Depends: /' -e '/^Depends: *$/d')
  if printf '%s\n' "$control" | grep -q '\${'; then
    echo "build.sh: packaging/$dir/debian/control: unknown variable: $(printf '%s\n' "$control" | grep '\${')" >&2
    exit 1
  fi
  printf '%s\n' "$control" >"$tree/DEBIAN/control"
  chmod 0644 "$tree/DEBIAN/control"
}

# DEBIAN/md5sums: every file but the conffiles, as dh_md5sums writes it
# (dpkg keeps the conffiles' sums itself), so that `dpkg --verify` can check
# the installed files.
write_md5sums() {
  local tree=$1
  (
    cd "$tree"
    find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
      grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles) |
      tr '\n' '\0' | xargs -0r md5sum >DEBIAN/md5sums
  )
  chmod 0644 "$tree/DEBIAN/md5sums"
}

build_deb() {
  local pkg=$1 dir=$2 conf=$3 upstream=$4 version tree deb
  version=$upstream-$revision
  tree=$work/debian/$pkg
  stage_deb "$pkg" "$dir" "$tree" "$conf"
  write_control "$pkg" "$dir" "$tree" "$version"
  write_md5sums "$tree"
  deb=$out/${pkg}_${version}_$deb_arch.deb
  # dpkg-deb sorts the entries and clamps their times to SOURCE_DATE_EPOCH.
  dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb" >/dev/null
  echo "$deb"
}

# ---------------------------------------------------------------------------
# .rpm
# %changelog from packaging/debian/changelog, so that both formats carry the
# same history.
python3 - packaging/debian/changelog >"$work/rpm-changelog" <<'EOF'
import email.utils, re, sys

entries, version, lines = [], None, []
with open(sys.argv[1], encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
        line = line.rstrip("\n")
        header = re.match(r"^\S+ \(([^)]+)\) ", line)
        trailer = re.match(r"^ -- (.+?)  (.+)$", line)
        if header:
            version, lines = header.group(1), []
        elif trailer and version:
            date = email.utils.parsedate_to_datetime(trailer.group(2))
            entries.append("* %s %s - %s" % (date.strftime("%a %b %d %Y"), trailer.group(1), version))
            entries.extend(lines)
            entries.append("")
            version = None
        elif line.startswith("  * ") and version:
            lines.append("- " + line[4:])
        elif line.startswith("    ") and version:
            lines.append("  " + line[4:])
        elif line.strip():
            sys.exit("%s:%d: not understood: %s" % (sys.argv[1], n, line))
if not entries:
    sys.exit("%s: no entry" % sys.argv[1])
# rpmbuild expands macros in %changelog: a literal % is written %%.
print("\n".join(entries).replace("%", "%%"))
EOF

rpmbuild_defines=(
  --define "_topdir $work/rpmbuild"
  --define "_tmppath $work/tmp"
  --define "_rpmdir $out"
  --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm"
  # Files go in as built: the binaries are stripped by cargo
  # (profile.release strip = "symbols"), the man pages compressed above. No
  # brp-strip or brp-compress, no debuginfo package, no /usr/lib/.build-id
  # links: the .rpm holds the same files as the .deb.
  --define "__os_install_post %{nil}"
  --define "debug_package %{nil}"
  --define "_build_id_links none"
  # Reproducible: BuildTime and file times from SOURCE_DATE_EPOCH, and a fixed
  # BuildHost rather than this machine's name.
  --define "use_source_date_epoch_as_buildtime 1"
  --define "clamp_mtime_to_source_date_epoch 1"
  --define "_buildhost reproducible"
  --define "_binary_payload w19.zstdio"
  --define "kosmos_release $revision"
  --define "kosmos_src $root"
  --define "kosmos_bin $release_dir"
  --define "kosmos_gen $generated"
  --define "kosmos_changelog $work/rpm-changelog"
)
mkdir -p "$work/tmp"

build_rpm() {
  local pkg=$1 dir=$2 upstream=$3
  rpmbuild -bb --quiet "${rpmbuild_defines[@]}" --define "kosmos_version $upstream" "packaging/$dir/$pkg.spec"
  ls "$out/$pkg-$upstream-$revision".*.rpm
}

for pkg in kosmos-node-agent kosmos-collector; do
  case "$pkg" in
    kosmos-node-agent) dir=agent conf=agent.toml upstream=$agent_version ;;
    kosmos-collector) dir=collector conf=collector.toml upstream=$collector_version ;;
  esac
  # Neither format takes a "-" in the upstream version: a Cargo pre-release
  # 1.0.0-rc.1 becomes 1.0.0~rc.1, which both sort before 1.0.0.
  upstream=${upstream//-/\~}
  echo "== $pkg: deb"
  build_deb "$pkg" "$dir" "$conf" "$upstream"
  echo "== $pkg: rpm"
  build_rpm "$pkg" "$dir" "$upstream"
done

echo "== built"
ls -l "$out"
