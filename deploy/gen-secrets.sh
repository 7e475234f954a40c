#!/bin/sh
# Generates sotto's two shared secrets and puts each where it belongs (docs/deploy.md, "Secrets"):
#
#   TURN secret          one fresh value replaces @TURN_SECRET@ in BOTH the server's TOML
#                        (`[turn] secret`) and coturn's config (`static-auth-secret`)
#   relay token secret   a file the server (`[[relays]] secret_file`) and the relay
#                        (SOTTO_RELAY_TOKEN_SECRET_FILE) both read; created if missing
#
# Usage (as root, after installing the configs):
#   deploy/gen-secrets.sh [--server-toml PATH] [--coturn-conf PATH] [--relay-secret PATH]
# Defaults: /etc/sotto/sotto-server.toml, /etc/turnserver.conf, /etc/sotto/relay-token.secret.
#
# Nothing is overwritten: a config without the placeholder keeps its secret, an existing secret
# file is kept. To rotate, see docs/deploy.md. Secrets are 32 random bytes, base64 (44 chars).
set -eu

server_toml=/etc/sotto/sotto-server.toml
coturn_conf=/etc/turnserver.conf
relay_secret=/etc/sotto/relay-token.secret
while [ $# -gt 0 ]; do
    case "$1" in
        --server-toml) server_toml=$2; shift 2 ;;
        --coturn-conf) coturn_conf=$2; shift 2 ;;
        --relay-secret) relay_secret=$2; shift 2 ;;
        *) echo "usage: $0 [--server-toml PATH] [--coturn-conf PATH] [--relay-secret PATH]" >&2; exit 2 ;;
    esac
done

# 32 random bytes as one line of base64 (A-Z a-z 0-9 + / =: safe in TOML strings, coturn's
# config and sed with | as delimiter)
secret() {
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -base64 32
    else
        head -c 32 /dev/urandom | base64
    fi | tr -d '\n'
}

# owner root, group $2 if that group exists, mode 0640
protect() {
    chmod 0640 "$1"
    if getent group "$2" >/dev/null 2>&1; then chgrp "$2" "$1"; fi
}

umask 077
placeholder=@TURN_SECRET@
for f in "$server_toml" "$coturn_conf"; do
    [ -f "$f" ] || { echo "$0: $f: no such file (install it first)" >&2; exit 1; }
done
in_toml=$(grep -c "$placeholder" "$server_toml" || true)
in_coturn=$(grep -c "$placeholder" "$coturn_conf" || true)
if [ "$in_toml" -gt 0 ] && [ "$in_coturn" -gt 0 ]; then
    turn=$(secret)
    for f in "$server_toml" "$coturn_conf"; do
        tmp="$f.tmp.$$"
        sed "s|$placeholder|$turn|g" "$f" > "$tmp"
        mv "$tmp" "$f"
    done
    unset turn
    echo "TURN secret: generated, written to $server_toml and $coturn_conf"
elif [ "$in_toml" -gt 0 ] || [ "$in_coturn" -gt 0 ]; then
    echo "$0: only one of $server_toml and $coturn_conf still has $placeholder;" >&2
    echo "  both need the same secret: copy the other file's value over the placeholder" >&2
    exit 1
else
    echo "TURN secret: already set in both files, kept"
fi
protect "$server_toml" sotto
protect "$coturn_conf" turnserver

if [ -s "$relay_secret" ]; then
    echo "relay token secret: $relay_secret exists, kept"
else
    mkdir -p "$(dirname "$relay_secret")"
    secret > "$relay_secret"
    echo "relay token secret: generated in $relay_secret"
fi
protect "$relay_secret" sotto

echo "now: systemctl restart coturn sotto-server sotto-relay (secrets are read at start)"
