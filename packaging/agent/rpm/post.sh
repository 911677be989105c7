# kosmos-node-agent %post ($1: 1 first install, 2 upgrade).
# The state directory holds the node key: root only. (Created here rather
# than listed in the package: cargo-generate-rpm cannot package a directory.)
install -d -m 0700 -o root -g root /var/lib/kosmos-node-agent
# First install: enable the unit, without starting it (the node must be
# enrolled first). `systemctl enable` works without a running systemd. The
# restart on upgrade is in %postun, once the old files are gone.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload enable kosmos-node-agent.service >/dev/null 2>&1 || :
fi
