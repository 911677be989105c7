# kosmos-node-agent %post ($1: 1 first install, 2 upgrade).
# First install: enable the unit, without starting it (the node must be
# enrolled first). `systemctl enable` works without a running systemd. The
# restart on upgrade is in %postun, once the old files are gone. (The state
# directory, root only, is in the package: kosmos-node-agent.spec.)
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload enable kosmos-node-agent.service >/dev/null 2>&1 || :
fi
