# kosmos-node-agent %postun ($1: 0 erased, 1 upgraded).
# Upgrade: try-restart, so that a running agent runs the new version and a
# stopped one stays stopped.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart kosmos-node-agent.service >/dev/null 2>&1 || :
    fi
fi
# Erase: RPM has no purge. rpm itself removes /etc/kosmos-node-agent and
# /var/lib/kosmos-node-agent (both in the package) when they are empty, and
# keeps them otherwise: the state (node key, spool) survives; delete
# /var/lib/kosmos-node-agent by hand to forget the node's identity.
