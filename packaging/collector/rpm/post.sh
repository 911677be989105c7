# kosmos-collector %post ($1: 1 first install, 2 upgrade).
# The data directory holds the attestation store and the CA key: the
# kosmos-collector user only (created in %pre). (Created here rather than
# listed in the package: cargo-generate-rpm cannot package a directory.)
install -d -m 0700 -o kosmos-collector -g kosmos-collector /var/lib/kosmos-collector
# First install: enable the unit, without starting it (review collector.toml
# first). `systemctl enable` works without a running systemd. The restart on
# upgrade is in %postun, once the old files are gone.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload enable kosmos-collector.service >/dev/null 2>&1 || :
fi
