# kosmos-collector %postun ($1: 0 erased, 1 upgraded).
# Upgrade: try-restart, so that a running collector runs the new version and
# a stopped one stays stopped.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart kosmos-collector.service >/dev/null 2>&1 || :
    fi
fi
# Erase: RPM has no purge. rpm itself removes /etc/kosmos-collector and
# /var/lib/kosmos-collector (both in the package) when they are empty, and
# keeps them otherwise: the data directory (attestation store, CA) survives,
# and so does the kosmos-collector user.
