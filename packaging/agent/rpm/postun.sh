# kosmos-node-agent %postun ($1: 0 erased, 1 upgraded).
# Upgrade: try-restart, so that a running agent runs the new version and a
# stopped one stays stopped.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart kosmos-node-agent.service >/dev/null 2>&1 || :
    fi
fi
# Erase: RPM has no purge, so the state (node key, spool) is kept when there
# is any; delete /var/lib/kosmos-node-agent by hand to forget the node's
# identity. Empty directories the package created go.
if [ "$1" -eq 0 ]; then
    rmdir /var/lib/kosmos-node-agent /etc/kosmos-node-agent 2>/dev/null || :
fi
