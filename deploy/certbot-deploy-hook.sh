#!/bin/sh
# Installs a renewed certificate for sotto-server, sotto relay and coturn, then makes each
# re-read it without dropping a call (docs/deploy.md, "Certificates").
#
#   certbot:  certbot certonly ... --deploy-hook /usr/local/sbin/sotto-cert-hook
#             (certbot sets RENEWED_LINEAGE=/etc/letsencrypt/live/NAME)
#   lego:     lego ... renew --renew-hook /usr/local/sbin/sotto-cert-hook
#             (lego sets LEGO_CERT_PATH and LEGO_CERT_KEY_PATH)
#   acme.sh:  acme.sh --install-cert -d NAME --fullchain-file F --key-file K \
#                 --reloadcmd "/usr/local/sbin/sotto-cert-hook F K"
#   any:      sotto-cert-hook FULLCHAIN.pem PRIVKEY.pem
#
# Copies (the ACME client's key files are root-only) go to /etc/sotto/tls (group sotto) and
# /etc/coturn/tls (group turnserver), mode 0640. Then: sotto-server and sotto relay get SIGHUP
# (`systemctl reload`), coturn SIGUSR2 (its unit's ExecReload). A file that does not load is
# logged by the servers and the old certificate stays in use.
set -eu

if [ $# -eq 2 ]; then
    chain=$1; key=$2
elif [ -n "${RENEWED_LINEAGE:-}" ]; then
    chain=$RENEWED_LINEAGE/fullchain.pem; key=$RENEWED_LINEAGE/privkey.pem
elif [ -n "${LEGO_CERT_PATH:-}" ] && [ -n "${LEGO_CERT_KEY_PATH:-}" ]; then
    chain=$LEGO_CERT_PATH; key=$LEGO_CERT_KEY_PATH
else
    echo "usage: $0 FULLCHAIN.pem PRIVKEY.pem (or run from certbot/lego, see the header)" >&2
    exit 2
fi

install_pair() { # DIR GROUP
    install -d -m 0750 -o root -g "$2" "$1"
    install -m 0640 -o root -g "$2" "$chain" "$1/fullchain.pem.new"
    install -m 0640 -o root -g "$2" "$key" "$1/privkey.pem.new"
    # each file is replaced in one step; a reload between the two renames sees a mismatched
    # pair, refuses it and keeps the old certificate, and the reload below comes after both
    mv "$1/fullchain.pem.new" "$1/fullchain.pem"
    mv "$1/privkey.pem.new" "$1/privkey.pem"
}

install_pair /etc/sotto/tls sotto
if getent group turnserver >/dev/null 2>&1; then
    install_pair /etc/coturn/tls turnserver
fi

for unit in sotto-server sotto-relay coturn; do
    if systemctl is-active --quiet "$unit"; then
        systemctl reload "$unit" || echo "$0: reloading $unit failed" >&2
    fi
done
