# kosmos-collector %postun ($1: 0 erased, 1 upgraded).
# Upgrade: try-restart, so that a running collector runs the new version and
# a stopped one stays stopped.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart kosmos-collector.service >/dev/null 2>&1 || :
    fi
fi
# Erase: RPM has no purge, so the data directory (attestation store, CA) is
# kept when there is anything in it, and so is the kosmos-collector user.
# Empty directories the package created go.
if [ "$1" -eq 0 ]; then
    rmdir /var/lib/kosmos-collector /etc/kosmos-collector 2>/dev/null || :
fi
