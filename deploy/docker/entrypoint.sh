#!/bin/sh
# sb-entrypoint — the command of the Switchboard image (deploy/docker/Dockerfile).
#
#   router | sm | c2s | bosh | s2s | muc   run that component (exec, so it gets the signals)
#   migrate                          sbctl db migrate, then the stack's domains
#   secrets                          create what is missing under $SB_SECRETS_DIR (as root)
#   sbctl ARGS…                      the admin CLI
#   help                             this text
#   anything else                    run as given
#
# The instance name is $SB_INSTANCE. A service that is scaled (docker compose
# --scale) cannot give each replica a name of its own, so it sets
# SB_INSTANCE_SLOTS ("c2s3 c2s4 …", each with its CURVE key among the
# container's secrets) instead: the first slot whose lock file in the shared
# volume $SB_SLOT_DIR nobody holds is taken, and held by the process for its
# whole life (flock on an inherited descriptor; a dead container frees it).
#
# Secrets the INI cannot name as files come from /run/secrets into the
# environment: dialback_secret → SB_CLUSTER_DIALBACK_SECRET, prebind_secret →
# SB_BOSH_PREBIND_SECRET, sasl_secret → SB_CLUSTER_SASL_SECRET (the official images' *_FILE convention, done here).
set -eu

die() { printf 'sb-entrypoint: %s\n' "$*" >&2; exit 1; }

secret_env() {   # VAR FILE: export VAR from FILE unless VAR is already set
    eval "_set=\${$1:-}"
    if [ -z "$_set" ] && [ -r "$2" ]; then
        export "$1=$(tr -d '\n' < "$2")"
    fi
}

claim_slot() {
    dir=${SB_SLOT_DIR:-/var/lib/switchboard/slots}
    for name in $SB_INSTANCE_SLOTS; do
        exec 9>"$dir/$name.lock" || die "cannot open $dir/$name.lock"
        if flock -n 9; then
            SB_INSTANCE=$name
            export SB_INSTANCE
            printf 'sb-entrypoint: instance %s (slot of %s)\n' "$name" "$(hostname)" >&2
            return 0
        fi
        exec 9>&-
    done
    die "every instance slot is taken ($SB_INSTANCE_SLOTS): add names to SB_INSTANCE_SLOTS and keys to the service's secrets"
}

random_secret() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32; }

# secrets: passwords, CURVE keys ($SB_MEMBERS), dialback and pre-bind
# secrets, a self-signed TLS certificate for $SB_DOMAIN. Existing files are
# kept. Files belong to the image's user (uid 10001), mode 0600.
make_secrets() {
    dir=${SB_SECRETS_DIR:-/secrets}
    domain=${SB_DOMAIN:-localhost}
    mkdir -p "$dir/keys"
    umask 077
    for f in pg_password redis_password dialback_secret prebind_secret sasl_secret; do
        if [ ! -s "$dir/$f" ]; then random_secret > "$dir/$f"; echo "created $dir/$f"; fi
    done
    # shellcheck disable=SC2086
    sbctl keys generate --dir "$dir/keys" ${SB_MEMBERS:?set SB_MEMBERS to the bus member names}
    if [ ! -s "$dir/tls_key.pem" ] || [ ! -s "$dir/tls_cert.pem" ]; then
        tpl=$(mktemp)
        printf 'organization = "Switchboard docker stack"\ncn = "%s"\ndns_name = "%s"\ndns_name = "anon.%s"\nip_address = "127.0.0.1"\nexpiration_days = 3650\ntls_www_server\nsigning_key\nencryption_key\n' \
            "$domain" "$domain" "$domain" > "$tpl"
        certtool --generate-privkey --key-type=ecdsa --curve=secp256r1 \
            --outfile "$dir/tls_key.pem" >/dev/null 2>&1 || die "certtool: no key"
        certtool --generate-self-signed --load-privkey "$dir/tls_key.pem" --template "$tpl" \
            --outfile "$dir/tls_cert.pem" >/dev/null 2>&1 || die "certtool: no certificate"
        rm -f "$tpl"
        echo "created $dir/tls_cert.pem, $dir/tls_key.pem (self-signed, $domain)"
    fi
    if [ "$(id -u)" = 0 ]; then
        chown -R 10001:10001 "$dir"
    fi
}

# sbctl, ignoring only "already exists"
sbctl_idem() {
    if out=$(sbctl "$@" 2>&1); then return 0; fi
    printf '%s' "$out" | grep -qiE 'exist|duplicate' && return 0
    printf '%s\n' "$out" >&2
    die "sbctl $* failed"
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
router|sm|c2s|bosh|s2s|muc)
    if [ -n "${SB_INSTANCE_SLOTS:-}" ]; then claim_slot; fi
    [ -n "${SB_INSTANCE:-}" ] || die "set SB_INSTANCE (or SB_INSTANCE_SLOTS)"
    secret_env SB_CLUSTER_DIALBACK_SECRET /run/secrets/dialback_secret
    secret_env SB_BOSH_PREBIND_SECRET /run/secrets/prebind_secret
    secret_env SB_CLUSTER_SASL_SECRET /run/secrets/sasl_secret
    exec "sb-$cmd" "$@" ;;
migrate)
    sbctl db migrate
    domain=${SB_DOMAIN:-localhost}
    sbctl_idem domain add "$domain"
    sbctl_idem domain add "anon.$domain" --anonymous
    echo "migrated; domains $domain, anon.$domain" ;;
secrets)
    make_secrets ;;
sbctl)
    exec sbctl "$@" ;;
help|-h|--help)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' ;;
*)
    exec "$cmd" "$@" ;;
esac
