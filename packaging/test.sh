#!/usr/bin/env bash
# Packaging checks, run by .ci/run after the cargo tests (as root, on Debian,
# where PID 1 need not be systemd):
#   1. the units: exposure scores (`systemd-analyze security --offline=true`)
#      against their targets;
#   2. lintian on the .debs (no error, no unoverridden warning) and rpmlint
#      on the .rpms (no error, no unfiltered warning); the .debs' control
#      fields and maintainer scripts;
#   3. the agent .deb for real: install, files and modes, conffile, enabled
#      but not started, `check` works, `systemd-analyze verify` is clean, an
#      upgrade keeps the edited configuration (also when the packaged default
#      changed), remove stops and disables, purge leaves nothing behind;
#   4. the collector .deb: system user, data directory, verify, remove, purge;
#   5. the .rpms: header tags, %changelog, contents, config flags,
#      directories and scriptlets, then install, upgrade and erase in a
#      throwaway --root where the scriptlets run against a recording
#      systemctl.
#
#   packaging/test.sh [DIST]     (DIST: where build.sh put the packages; dist)
#
# The upgrade tests package the same release binaries again with
# `build.sh --no-build --revision 2`: build them first (build.sh does).
#
# Any broken expectation stops the script with "FAIL: ..." and exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
dist=$(cd "${1:-dist}" && pwd)

AGENT=kosmos-node-agent
COLLECTOR=kosmos-collector
AGENT_TARGET=4.0
COLLECTOR_TARGET=2.0

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# Each step says when it started (seconds into the script), so a slow one
# shows in every CI log.
step() { echo "== [${SECONDS}s] $*"; }
ok() { echo "   ok: $*"; }

[ "$(id -u)" -eq 0 ] || fail "run as root (it installs and purges the packages)"
command -v dpkg >/dev/null || fail "needs a Debian system (dpkg)"
for p in $AGENT $COLLECTOR; do
  if dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qv '^not-installed$'; then
    fail "$p is already installed here: refusing to test over it"
  fi
done

work=$(mktemp -d /tmp/kosmos-pkgtest.XXXXXX)
installed=()
# `kosmos-node-agent check` run as root without the package (the cargo tests
# do) leaves state in /var/lib/kosmos-node-agent: such directories are set
# aside for the test and put back afterwards.
aside=()
for d in /etc/$AGENT /etc/$COLLECTOR /var/lib/$AGENT /var/lib/$COLLECTOR; do
  if [ -e "$d" ]; then
    mkdir -p "$work/aside$(dirname "$d")"
    mv "$d" "$work/aside$d"
    aside+=("$d")
    echo "   (set aside until the end: $d)"
  fi
done
cleanup() {
  for p in "${installed[@]}"; do dpkg -P "$p" >/dev/null 2>&1 || true; done
  for d in "${aside[@]}"; do
    rm -rf "$d"
    mv "$work/aside$d" "$d"
  done
  rm -rf "$work"
}
trap cleanup EXIT

one() { # the single file matching a glob
  local m
  m=$(compgen -G "$1" || true)
  if [ -z "$m" ] || [ "$(printf '%s\n' "$m" | wc -l)" -ne 1 ]; then fail "expected exactly one $1, found: ${m:-none}"; fi
  printf '%s\n' "$m"
}
agent_deb=$(one "$dist/${AGENT}_*-1_*.deb")
collector_deb=$(one "$dist/${COLLECTOR}_*-1_*.deb")
agent_rpm=$(one "$dist/${AGENT}-*-1.*.rpm")
collector_rpm=$(one "$dist/${COLLECTOR}-*-1.*.rpm")
version=$(dpkg-deb -f "$agent_deb" Version)
upstream=${version%-*}

expect_stat() { # PATH MODE OWNER:GROUP
  [ -e "$1" ] || fail "$1 is missing"
  local got
  got=$(stat -c '%a %U:%G' "$1")
  [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
expect_absent() { if [ -e "$1" ] || [ -L "$1" ]; then fail "$1 is still there"; fi; }
expect_grep() { # PATTERN FILE WHAT
  grep -qE -- "$1" "$2" || { cat "$2" >&2; fail "$3"; }
}
expect_no_grep() {
  if grep -qE -- "$1" "$2"; then cat "$2" >&2; fail "$3"; fi
}
# Every file, directory and link named after the project in system paths.
kosmos_paths() {
  # (man-db's cache of formatted pages is not the package's: man fills it
  # when systemd-analyze verify looks up the units' man pages.)
  find /etc /usr /var /opt /srv -xdev -name '*kosmos*' -not -path '/var/tmp/*' -not -path '/var/cache/man/*' 2>/dev/null | sort
}
systemd_state() {
  find /etc/systemd /var/lib/systemd -xdev 2>/dev/null | sort
}

# ---------------------------------------------------------------------------
step "unit hardening: systemd-analyze security --offline=true"
exposure() { # UNIT_FILE TARGET
  local out score
  out=$(systemd-analyze security --offline=true --no-pager "$1" 2>&1) || true
  score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  [ -n "$score" ] || { printf '%s\n' "$out" >&2; fail "no exposure score for $1"; }
  printf '%s\n' "$out" | grep '✗' | sed 's/^/     /' || true
  awk -v s="$score" -v t="$2" 'BEGIN { exit !(s <= t) }' || fail "$1: exposure $score above the target $2"
  ok "$(basename "$1"): exposure $score (target <= $2)"
}
exposure "$PWD/systemd/$AGENT.service" $AGENT_TARGET
exposure "$PWD/systemd/$COLLECTOR.service" $COLLECTOR_TARGET

# ---------------------------------------------------------------------------
step "lintian"
for deb in "$agent_deb" "$collector_deb"; do
  # Shown: every tag, info and overridden ones included (with the reasons).
  lintian --fail-on none --display-info --show-overrides --tag-display-limit 0 "$deb" 2>&1 |
    grep -v '^running with root privileges' | sed 's/^/     /'
  # The gate: no error, no warning that is not overridden.
  lintian --fail-on error,warning "$deb" >"$work/lintian.log" 2>&1 ||
    { cat "$work/lintian.log" >&2; fail "lintian: $(basename "$deb")"; }
  ok "$(basename "$deb"): no error, every warning overridden"
done

step ".deb: control fields and maintainer scripts"
for deb in "$agent_deb" "$collector_deb"; do
  name=$(dpkg-deb -f "$deb" Package)
  dpkg-deb -f "$deb" >"$work/control"
  for field in "Version: $version" "Architecture: $(dpkg --print-architecture)" "Section: admin" \
    "Priority: optional" "Maintainer: kosmos-node-agent developers <maintainers@kosmos-node-agent.invalid>" \
    "Homepage: https://github.com/kosmos-node-agent/kosmos-node-agent"; do
    grep -qxF "$field" "$work/control" || { cat "$work/control" >&2; fail "$name: no \"$field\" in control"; }
  done
  expect_grep '^Installed-Size: [1-9][0-9]{3,}$' "$work/control" "$name: Installed-Size"
  # Depends from the binary's shared libraries (dpkg-shlibdeps).
  expect_grep '^Depends: (.*, )?libc6 \(>= [0-9.]+\)(,|$)' "$work/control" "$name: Depends lacks libc6"
  # Summary and an extended description.
  [ "$(sed -n '/^Description:/,$p' "$work/control" | grep -c '^ ')" -ge 3 ] ||
    { cat "$work/control" >&2; fail "$name: no extended description"; }
  # The maintainer scripts are complete shell scripts: nothing left to fill in.
  for script in postinst prerm postrm; do
    dpkg-deb -I "$deb" "$script" >"$work/$script" || fail "$name: no $script"
    sh -n "$work/$script" || fail "$name: $script is not valid sh"
    expect_no_grep '#[A-Z_]+#' "$work/$script" "$name: $script has an unfilled template token"
  done
  ok "$name: control fields, Depends ($(sed -n 's/^Depends: //p' "$work/control")), maintainer scripts"
done
dpkg-deb -f "$collector_deb" Depends | grep -q ', systemd | systemd-standalone-sysusers$' ||
  fail "$COLLECTOR: Depends lacks systemd | systemd-standalone-sysusers (for systemd-sysusers)"

step "rpmlint"
for rpm in "$agent_rpm" "$collector_rpm"; do
  rpmlint -c packaging/rpmlint.toml "$rpm" >"$work/rpmlint.log" 2>&1 || true
  sed 's/^/     /' "$work/rpmlint.log"
  expect_grep ' 0 errors, 0 warnings' "$work/rpmlint.log" "rpmlint: errors or warnings in $(basename "$rpm")"
  ok "$(basename "$rpm"): no error, no warning"
done

# ---------------------------------------------------------------------------
step "agent .deb: contents"
dpkg-deb -c "$agent_deb" >"$work/contents"
for f in ./usr/bin/$AGENT ./usr/lib/systemd/system/$AGENT.service ./etc/$AGENT/agent.toml \
  ./usr/share/man/man1/$AGENT.1.gz ./usr/share/man/man1/$AGENT-run.1.gz ./usr/share/man/man1/$AGENT-check.1.gz \
  ./usr/share/bash-completion/completions/$AGENT ./usr/share/zsh/vendor-completions/_$AGENT \
  ./usr/share/fish/vendor_completions.d/$AGENT.fish ./usr/share/doc/$AGENT/copyright \
  ./usr/share/doc/$AGENT/changelog.Debian.gz; do
  grep -q " $f\$" "$work/contents" || fail "$f is not in $(basename "$agent_deb")"
done
ok "binary, unit, config, man pages, completions, copyright, changelog"

step "agent .deb: first install (dpkg -i)"
kosmos_paths >"$work/kosmos.before"
[ ! -s "$work/kosmos.before" ] || fail "leftovers of an earlier install: $(cat "$work/kosmos.before")"
systemd_state >"$work/systemd.before"
dpkg -i "$agent_deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i $agent_deb"; }
installed+=("$AGENT")
dpkg-query -L $AGENT >"$work/agent.files"
expect_stat /usr/bin/$AGENT 755 root:root
expect_stat /usr/lib/systemd/system/$AGENT.service 644 root:root
expect_stat /etc/$AGENT/agent.toml 644 root:root
expect_stat /var/lib/$AGENT 700 root:root
dpkg-query -W -f='${Conffiles}\n' $AGENT >"$work/conffiles"
expect_grep "^ /etc/$AGENT/agent.toml [0-9a-f]{32}$" "$work/conffiles" "agent.toml is not a conffile"
dpkg --verify $AGENT >"$work/verify" 2>&1 || true
[ ! -s "$work/verify" ] || { cat "$work/verify" >&2; fail "dpkg --verify $AGENT"; }
grep -q "^/usr/bin/$AGENT\$" <(dpkg-deb -I "$agent_deb" md5sums | awk '{print "/" $2}') || fail "no md5sum for the binary"
ok "files and modes; /etc/$AGENT/agent.toml is a conffile; dpkg --verify clean"
[ "$(systemctl --root=/ is-enabled $AGENT.service 2>&1)" = enabled ] || fail "$AGENT.service is not enabled"
[ -L /etc/systemd/system/multi-user.target.wants/$AGENT.service ] || fail "no multi-user.target.wants link"
if pgrep -f "^/usr/bin/$AGENT( |\$)" >/dev/null; then fail "$AGENT was started on first install"; fi
ok "enabled, not started"

/usr/bin/$AGENT --version | grep -qx "$AGENT $upstream" || fail "--version is not $upstream"
# No test-only code ships: the packaged agent is not kosmos-fault-agent (the
# agent plus a check that panics on purpose, tests/tests/fault_injection.rs).
if /usr/bin/$AGENT checks | grep -q '^fault\.'; then fail "the packaged agent carries the fault-injection check"; fi
rc=0
/usr/bin/$AGENT check --output json --fail-on none >"$work/check.json" 2>"$work/check.err" || rc=$?
[ $rc -eq 0 ] || { cat "$work/check.err" >&2; fail "$AGENT check exited $rc"; }
python3 - "$work/check.json" <<'EOF' || fail "check --output json is not a report"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["schema"] == "kosmos.report/v1", r.get("schema")
assert len(r["results"]) > 100 and sum(r["summary"].values()) == len(r["results"])
print("   ok: /usr/bin/kosmos-node-agent check: %d results, %s" % (len(r["results"]), r["summary"]))
EOF
# Not enrolled and no collector_url: the daemon refuses with exit 2 (the
# unit's RestartPreventExitStatus=2) and the shipped agent.toml parses.
rc=0
/usr/bin/$AGENT run --once >"$work/run.out" 2>&1 || rc=$?
[ $rc -eq 2 ] || { cat "$work/run.out" >&2; fail "run before enrollment exited $rc, expected 2"; }
expect_grep "collector_url: required" "$work/run.out" "run before configuration does not name collector_url"
ok "run before enrollment: exit 2, $(grep -o 'collector_url: required[^)]*)\?' "$work/run.out" | head -1)"

verify() { # UNIT
  local err
  err=$(systemd-analyze verify "$1" 2>&1 >/dev/null) || fail "systemd-analyze verify $1: $err"
  [ -z "$err" ] || fail "systemd-analyze verify $1 is not clean: $err"
  ok "systemd-analyze verify $1: clean"
}
verify $AGENT.service

step "agent .deb: upgrade keeps the edited configuration"
bash packaging/build.sh --no-build --revision 2 --out "$work/v2" >"$work/build-v2.log" 2>&1 ||
  { tail -30 "$work/build-v2.log" >&2; fail "build.sh --no-build --revision 2"; }
agent_deb2=$(one "$work/v2/${AGENT}_*-2_*.deb")
# Revision 3: the same package with a changed default agent.toml, so that
# dpkg meets an edited conffile whose packaged version changed too.
dpkg-deb -R "$agent_deb2" "$work/v3"
sed -i "s/^Version: .*/Version: $upstream-3/" "$work/v3/DEBIAN/control"
echo "# a default added in revision 3" >>"$work/v3/etc/$AGENT/agent.toml"
(cd "$work/v3" && find usr -type f -exec md5sum {} + | sort -k2 >DEBIAN/md5sums) # conffiles excluded
dpkg-deb --root-owner-group -b "$work/v3" "$work/${AGENT}_$upstream-3.deb" >/dev/null

echo "interval_secs = 120 # edited by packaging/test.sh" >>/etc/$AGENT/agent.toml
echo marker >/var/lib/$AGENT/test-marker
dpkg -i "$agent_deb2" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "upgrade to revision 2"; }
[ "$(dpkg-query -W -f='${Version}' $AGENT)" = "$upstream-2" ] || fail "not upgraded to $upstream-2"
expect_grep '^interval_secs = 120 # edited' /etc/$AGENT/agent.toml "the edited agent.toml did not survive the upgrade"
expect_absent /etc/$AGENT/agent.toml.dpkg-dist
expect_stat /var/lib/$AGENT/test-marker 644 root:root
[ "$(systemctl --root=/ is-enabled $AGENT.service 2>&1)" = enabled ] || fail "not enabled after the upgrade"
ok "revision 2: edit kept, state kept, still enabled"
dpkg -i --force-confold "$work/${AGENT}_$upstream-3.deb" >"$work/dpkg.log" 2>&1 ||
  { cat "$work/dpkg.log" >&2; fail "upgrade to revision 3"; }
expect_grep '^interval_secs = 120 # edited' /etc/$AGENT/agent.toml "the edited agent.toml did not survive a changed default"
expect_grep '^# a default added in revision 3' /etc/$AGENT/agent.toml.dpkg-dist "the new default is not in agent.toml.dpkg-dist"
ok "revision 3 (changed default, --force-confold): edit kept, new default in agent.toml.dpkg-dist"

step "agent .deb: remove, then purge"
dpkg -r $AGENT >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -r"; }
[ "$(dpkg-query -W -f='${db:Status-Status}' $AGENT)" = config-files ] || fail "not in config-files state after remove"
expect_absent /usr/bin/$AGENT
expect_absent /usr/lib/systemd/system/$AGENT.service
expect_absent /etc/systemd/system/multi-user.target.wants/$AGENT.service
expect_stat /etc/$AGENT/agent.toml 644 root:root
expect_stat /var/lib/$AGENT/test-marker 644 root:root
ok "binary and unit gone, unit disabled; configuration and state kept"
dpkg -P $AGENT >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -P"; }
installed=()
dpkg-query -W -f='${db:Status-Status}' $AGENT 2>/dev/null | grep -qv '^not-installed$' && fail "still known to dpkg after purge"
expect_absent /etc/$AGENT
expect_absent /var/lib/$AGENT
while read -r f; do
  # Shared directories (/usr, /usr/share/man/man1, ...) existed before.
  [ -d "$f" ] && [ ! -L "$f" ] && continue
  expect_absent "$f"
done <"$work/agent.files"
kosmos_paths >"$work/kosmos.after"
diff -u "$work/kosmos.before" "$work/kosmos.after" >&2 || fail "files named kosmos left after purge"
systemd_state >"$work/systemd.after"
diff -u "$work/systemd.before" "$work/systemd.after" >&2 || fail "systemd state changed after purge"
ok "nothing left: every packaged file, /etc/$AGENT, /var/lib/$AGENT, enablement and mask state"

# ---------------------------------------------------------------------------
step "collector .deb: install, system user, data directory"
systemd_state >"$work/systemd.before"
dpkg -i "$collector_deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i $collector_deb"; }
installed+=("$COLLECTOR")
user=$(getent passwd $COLLECTOR) || fail "no $COLLECTOR user"
uid=$(echo "$user" | cut -d: -f3)
[ "$uid" -lt 1000 ] || fail "$COLLECTOR is not a system user (uid $uid)"
case "$user" in *:/var/lib/$COLLECTOR:*/nologin) ;; *) fail "unexpected passwd entry: $user" ;; esac
expect_stat /usr/bin/$COLLECTOR 755 root:root
expect_stat /etc/$COLLECTOR/collector.toml 644 root:root
expect_stat /var/lib/$COLLECTOR 700 $COLLECTOR:$COLLECTOR
expect_stat /usr/lib/sysusers.d/$COLLECTOR.conf 644 root:root
for f in kosmos-fleet.json kosmos-alerts.rules.yml kosmos-alerts.test.yml prometheus.yml cockpit-agent.yml; do
  expect_stat /usr/share/$COLLECTOR/monitoring/$f 644 root:root
done
expect_stat /usr/share/doc/$COLLECTOR/notification.v1.schema.json 644 root:root
dpkg-query -W -f='${Conffiles}\n' $COLLECTOR | grep -q "^ /etc/$COLLECTOR/collector.toml " || fail "collector.toml is not a conffile"
[ "$(systemctl --root=/ is-enabled $COLLECTOR.service 2>&1)" = enabled ] || fail "$COLLECTOR.service is not enabled"
if pgrep -f "^/usr/bin/$COLLECTOR( |\$)" >/dev/null; then fail "$COLLECTOR was started on first install"; fi
ok "system user uid $uid, data dir 0700 $COLLECTOR, conffile, enabled, not started"
# The shipped configuration loads, and the CA is created by and for the user.
runuser -u $COLLECTOR -- /usr/bin/$COLLECTOR ca fingerprint >"$work/fp" 2>&1 || { cat "$work/fp" >&2; fail "ca fingerprint"; }
expect_grep '^SHA256:' "$work/fp" "no CA fingerprint"
[ -z "$(find /var/lib/$COLLECTOR -not -user $COLLECTOR)" ] || fail "files in /var/lib/$COLLECTOR not owned by $COLLECTOR"
ok "ca fingerprint as $COLLECTOR with the shipped collector.toml: $(cat "$work/fp")"
verify $COLLECTOR.service
dpkg -r $COLLECTOR >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -r $COLLECTOR"; }
expect_absent /etc/systemd/system/multi-user.target.wants/$COLLECTOR.service
[ -d /var/lib/$COLLECTOR ] || fail "remove deleted the data directory"
dpkg -P $COLLECTOR >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -P $COLLECTOR"; }
installed=()
expect_absent /etc/$COLLECTOR
expect_absent /var/lib/$COLLECTOR
kosmos_paths >"$work/kosmos.after"
diff -u "$work/kosmos.before" "$work/kosmos.after" >&2 || fail "files named kosmos left after purging $COLLECTOR"
systemd_state >"$work/systemd.after"
diff -u "$work/systemd.before" "$work/systemd.after" >&2 || fail "systemd state changed after purging $COLLECTOR"
getent passwd $COLLECTOR >/dev/null || fail "purge removed the system user (Debian keeps system users)"
ok "remove keeps the data, purge deletes it and /etc/$COLLECTOR; the system user stays"

# ---------------------------------------------------------------------------
step ".rpm: header, changelog, contents, config flags, directories, scriptlets"
rpmq() { rpm -qp --nosignature "$@" 2>/dev/null; }
# %changelog is written from the Debian changelog: its latest entry.
changelog_version=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' packaging/debian/changelog)
for rpm in "$agent_rpm" "$collector_rpm"; do
  name=$(rpmq --qf '%{NAME}' "$rpm")
  rpmq -i "$rpm" >"$work/qpi"
  expect_grep "^Version *: $upstream\$" "$work/qpi" "$name: version"
  expect_grep '^License *: Apache-2.0$' "$work/qpi" "$name: license"
  expect_grep '^Packager *: kosmos-node-agent developers <maintainers@kosmos-node-agent.invalid>$' "$work/qpi" "$name: Packager"
  expect_grep '^Group *: System Environment/Daemons$' "$work/qpi" "$name: Group"
  expect_grep '^Build Host *: [^ (]' "$work/qpi" "$name: BuildHost"
  rpmq --changelog "$rpm" | head -1 >"$work/changelog"
  expect_grep "^\\* [A-Z][a-z]{2} [A-Z][a-z]{2} [0-9]{2} [0-9]{4} .+ <.+> - $changelog_version\$" "$work/changelog" \
    "$name: the latest %changelog entry is not packaging/debian/changelog's ($changelog_version)"
  # Reproducible: no file time after the build time (both SOURCE_DATE_EPOCH).
  latest=$(rpmq --qf '[%{FILEMTIMES}\n]' "$rpm" | sort -n | tail -1)
  [ "$latest" -le "$(rpmq --qf '%{BUILDTIME}' "$rpm")" ] || fail "$name: file times after the build time (not clamped to SOURCE_DATE_EPOCH)"
  rpmq --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" >"$work/qpl"
  conf=collector.toml; [ "$name" = $AGENT ] && conf=agent.toml
  expect_grep "^-rwxr-xr-x root:root  /usr/bin/$name\$" "$work/qpl" "$name: binary"
  expect_grep "^-rw-r--r-- root:root cn /etc/$name/$conf\$" "$work/qpl" "$name: $conf is not %config(noreplace)"
  expect_grep "^-rw-r--r-- root:root  /usr/lib/systemd/system/$name.service\$" "$work/qpl" "$name: unit"
  expect_grep "^-rw-r--r-- root:root d /usr/share/man/man1/$name.1.gz\$" "$work/qpl" "$name: man page"
  expect_grep " /usr/share/bash-completion/completions/$name\$" "$work/qpl" "$name: bash completion"
  expect_grep " /usr/share/zsh/site-functions/_$name\$" "$work/qpl" "$name: zsh completion"
  expect_grep " /usr/share/fish/vendor_completions.d/$name.fish\$" "$work/qpl" "$name: fish completion"
  # The directories of the package, the state directory with its mode and
  # owner (rpm removes them on erase when empty, and keeps them otherwise).
  owner=$COLLECTOR:$COLLECTOR; [ "$name" = $AGENT ] && owner=root:root
  expect_grep "^drwx------ $owner  /var/lib/$name\$" "$work/qpl" "$name: /var/lib/$name is not a 0700 $owner directory of the package"
  expect_grep "^drwxr-xr-x root:root  /etc/$name\$" "$work/qpl" "$name: /etc/$name is not a directory of the package"
  expect_grep "^drwxr-xr-x root:root  /usr/share/doc/$name\$" "$work/qpl" "$name: /usr/share/doc/$name is not a directory of the package"
  rpmq --scripts "$rpm" >"$work/scripts"
  for s in postinstall preuninstall postuninstall; do
    expect_grep "^$s scriptlet" "$work/scripts" "$name: no %$s scriptlet"
  done
  ok "$name: version, license, Packager, Group, BuildHost, %changelog, modes, %config(noreplace), unit, directories, docs, completions, scriptlets"
done
rpmq --scripts "$collector_rpm" >"$work/scripts"
expect_grep '^preinstall scriptlet' "$work/scripts" "$COLLECTOR: no %pre (system user)"
# The %pre user entry and the sysusers.d file must agree.
sysusers_line=$(grep -v '^#' packaging/collector/$COLLECTOR.sysusers)
grep -qF "'$sysusers_line'" "$work/scripts" || fail "rpm %pre and $COLLECTOR.sysusers disagree"
# ... and so must the user(NAME) it provides (the base64 of that line, as rpm
# >= 4.19 writes it), with group(NAME).
rpmq --provides "$collector_rpm" >"$work/provides"
grep -qxF "user($COLLECTOR) = $(printf '%s' "$sysusers_line" | base64 -w0)" "$work/provides" ||
  { cat "$work/provides" >&2; fail "$COLLECTOR: provides no user($COLLECTOR) of sysusers.d"; }
expect_grep "^group\($COLLECTOR\)\$" "$work/provides" "$COLLECTOR: provides no group($COLLECTOR)"
ok "%pre creates the user of sysusers.d, which owns the data directory of the package; user() and group() provided"

step ".rpm: install, upgrade, erase in a throwaway --root"
# The root gets just enough to run the scriptlets: a shell, and recording
# stand-ins for systemctl and systemd-sysusers.
make_root() {
  local r=$1 lib
  mkdir -p "$r"/{bin,usr/bin,etc,dev,tmp,var/tmp,var/lib/rpm}
  mknod -m 666 "$r/dev/null" c 1 3
  # The shell the scriptlets run in, with its libraries: besides shell
  # builtins, they call only systemctl and systemd-sysusers (below).
  cp -L /bin/sh "$r/bin/sh"
  for lib in $(ldd /bin/sh | grep -o '/[^ ]*'); do
    mkdir -p "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib"
  done
  echo "root:x:0:0:root:/root:/bin/sh" >"$r/etc/passwd"
  echo "root:x:0:" >"$r/etc/group"
  cat >"$r/usr/bin/systemctl" <<'EOF'
#!/bin/sh
echo "systemctl $*" >>/calls.log
EOF
  cat >"$r/usr/bin/systemd-sysusers" <<'EOF'
#!/bin/sh
echo "systemd-sysusers $*" >>/calls.log
while IFS= read -r line; do
  echo "  stdin: $line" >>/calls.log
  set -- $line
  [ "$1" = u ] && echo "$2:x:990:990::/var/lib/$2:/sbin/nologin" >>/etc/passwd && echo "$2:x:990:" >>/etc/group
done
EOF
  chmod 755 "$r/usr/bin/systemctl" "$r/usr/bin/systemd-sysusers"
  rpm --root "$r" --initdb
}
rpm_in() { # ROOT ARGS...
  local r=$1
  shift
  : >"$r/calls.log"
  rpm --root "$r" --force-debian --nodeps --nosignature "$@" >"$work/rpm.log" 2>&1 ||
    { cat "$work/rpm.log" >&2; fail "rpm $*"; }
  # Any warning (a failed scriptlet, an unknown user) fails, except the
  # expected note that an edited configuration file was kept as .rpmsave.
  if grep -i 'scriptlet failed\|warning' "$work/rpm.log" | grep -qv 'saved as .*\.rpmsave$'; then
    cat "$work/rpm.log" >&2
    fail "rpm $*: warnings"
  fi
}
agent_rpm2=$(one "$work/v2/${AGENT}-*-2.*.rpm")
collector_rpm2=$(one "$work/v2/${COLLECTOR}-*-2.*.rpm")

# The agent on a host where systemd runs (/run/systemd/system exists).
r=$work/rpmroot-agent
make_root "$r"
mkdir -p "$r/run/systemd/system"
rpm_in "$r" -i "$agent_rpm"
expect_grep "^systemctl --no-reload enable $AGENT.service\$" "$r/calls.log" "%post did not enable the unit"
expect_no_grep "(^| )(start|restart|try-restart) " "$r/calls.log" "%post started the service on first install"
expect_stat "$r/usr/bin/$AGENT" 755 root:root
expect_stat "$r/etc/$AGENT/agent.toml" 644 root:root
expect_stat "$r/var/lib/$AGENT" 700 root:root
ok "install: files, modes; enabled, not started"
echo "interval_secs = 120 # edited" >>"$r/etc/$AGENT/agent.toml"
echo marker >"$r/var/lib/$AGENT/test-marker"
rpm_in "$r" -U "$agent_rpm2"
expect_grep "^systemctl try-restart $AGENT.service\$" "$r/calls.log" "upgrade did not try-restart"
expect_no_grep " (enable|disable|stop|start) " "$r/calls.log" "upgrade changed enablement or stopped the service"
expect_grep '^interval_secs = 120 # edited' "$r/etc/$AGENT/agent.toml" "rpm upgrade lost the edited agent.toml"
expect_absent "$r/etc/$AGENT/agent.toml.rpmnew"
ok "upgrade: try-restart only, edited agent.toml kept"
rpm_in "$r" -e $AGENT
expect_grep "^systemctl stop $AGENT.service\$" "$r/calls.log" "erase did not stop the service"
expect_grep "^systemctl --no-reload disable $AGENT.service\$" "$r/calls.log" "erase did not disable the unit"
expect_no_grep "try-restart" "$r/calls.log" "erase restarted the service"
expect_absent "$r/usr/bin/$AGENT"
expect_grep '^interval_secs = 120 # edited' "$r/etc/$AGENT/agent.toml.rpmsave" "the edited agent.toml was not saved as .rpmsave"
expect_stat "$r/var/lib/$AGENT/test-marker" 644 root:root
ok "erase: stopped, disabled, files gone; edited config in .rpmsave, state kept (RPM has no purge)"

# The collector on a host without a running systemd.
r=$work/rpmroot-collector
make_root "$r"
rpm_in "$r" -i "$collector_rpm"
expect_grep "^systemd-sysusers --replace=/usr/lib/sysusers.d/$COLLECTOR.conf -\$" "$r/calls.log" "%pre did not create the user"
expect_grep "^systemctl --no-reload enable $COLLECTOR.service\$" "$r/calls.log" "%post did not enable the unit"
expect_no_grep "daemon-reload|start" "$r/calls.log" "scriptlets talked to a systemd that is not running"
# (Numeric: the user exists in the throwaway root, not on this machine.)
[ "$(stat -c '%a %u:%g' "$r/var/lib/$COLLECTOR")" = "700 990:990" ] ||
  fail "data dir in the rpm root is $(stat -c '%a %u:%g' "$r/var/lib/$COLLECTOR"), expected 700 990:990"
expect_stat "$r/usr/lib/sysusers.d/$COLLECTOR.conf" 644 root:root
ok "install: user created before its files, data dir 0700 owned by it, enabled, nothing started"
rpm_in "$r" -U "$collector_rpm2"
expect_no_grep "start|enable|disable" "$r/calls.log" "offline upgrade touched the service"
rpm_in "$r" -e $COLLECTOR
expect_grep "^systemctl --no-reload disable $COLLECTOR.service\$" "$r/calls.log" "erase did not disable the unit"
expect_no_grep "stop|restart" "$r/calls.log" "offline erase tried to stop or restart"
expect_absent "$r/usr/bin/$COLLECTOR"
# Nothing was written to them: rpm removes the package's directories.
expect_absent "$r/var/lib/$COLLECTOR"
expect_absent "$r/etc/$COLLECTOR"
ok "upgrade and erase without systemd: disabled, nothing started or stopped; empty directories gone"

echo "packaging: all checks passed"
