# kosmos-node-agent %preun ($1: 0 erase, 1 upgrade).
# Erase: stop the service (when systemd runs) and disable the unit.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop kosmos-node-agent.service >/dev/null 2>&1 || :
    fi
    if command -v systemctl >/dev/null 2>&1; then
        systemctl --no-reload disable kosmos-node-agent.service >/dev/null 2>&1 || :
    fi
fi
