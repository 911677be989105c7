# kosmos-collector %pre: create the system user before the files it owns
# are installed. The entry is the one in
# /usr/lib/sysusers.d/kosmos-collector.conf (packaging/test.sh checks that).
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u kosmos-collector - "kosmos-collector attestation collector" /var/lib/kosmos-collector' |
        systemd-sysusers --replace=/usr/lib/sysusers.d/kosmos-collector.conf -
else
    getent group kosmos-collector >/dev/null || groupadd -r kosmos-collector
    getent passwd kosmos-collector >/dev/null ||
        useradd -r -g kosmos-collector -d /var/lib/kosmos-collector -s /sbin/nologin \
            -c "kosmos-collector attestation collector" kosmos-collector
fi
