# kosmos-collector %post ($1: 1 first install, 2 upgrade).
# First install: enable the unit, without starting it (review collector.toml
# first). `systemctl enable` works without a running systemd. The restart on
# upgrade is in %postun, once the old files are gone. (The data directory,
# owned by the kosmos-collector user of %pre, is in the package:
# kosmos-collector.spec.)
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload enable kosmos-collector.service >/dev/null 2>&1 || :
fi
