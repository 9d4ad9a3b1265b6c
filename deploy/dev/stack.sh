#!/usr/bin/env bash
# stack.sh — the local Switchboard stack: PostgreSQL, Redis, a TLS cert, the
# config file and nine processes (router1, router2, sm1, sm2, c2s1, c2s2, bosh1,
# s2s1, muc1),
# all under var/ so nothing touches the system's own services.
#
#   stack.sh [-p run|test] COMMAND
#     run          set everything up (idempotent) and start it; prints how to connect
#     stop         stop the processes, Redis and PostgreSQL (data is kept)
#     status       what is running
#     test         fresh test profile (var/test), pytest tests/integration, stop
#     deps         check the Debian packages (install them when root)
#     setup        everything `run` does except starting the five processes
#     infra        only TLS, PostgreSQL, Redis and the config (no binary needed)
#     start-proc NAME | stop-proc NAME | kill-proc NAME   one process of the profile
#     wait-ready   wait until every process is registered and listening
#     pg-stop | pg-start | redis-stop | redis-start   one store of the profile
#                  (outage tests; redis-stop saves first, like a persistent Redis)
#     redis-crash  stop Redis without saving: it comes back empty
#     env          print the profile as shell variables
#
# Two profiles with their own ports and var dirs, so `make test` can run while
# `make run` is up: `run` (var/) and `test` (var/test/). SB_STACK_PROFILE
# selects one too (the tests use it to stop and start single processes).
# Federation tests start more, smaller stacks as profiles test2…test9
# (var/testN/, test ports + 100·N, router1 sm1 c2s1 s2s1, s2s listening on
# 127.0.0.N): SB_STACK_DOMAIN names the domain they serve (anon.DOMAIN comes
# with it), SB_STACK_EXTRA_DOMAINS adds more ("a.example b.example"), and
# their s2s resolves through a DNS server on 127.0.0.1:$SB_DNS_PORT that the
# tests start.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PKG_LIST="$ROOT/deploy/dev/packages.txt"
PROCS=(router1 router2 sm1 sm2 c2s1 c2s2 bosh1 s2s1 muc1)
COMPONENTS=(sm1 sm2 c2s1 c2s2 bosh1 s2s1 muc1)   # the ones that register with the routers
ROUTERS=(router1 router2)                   # router N listens on ROUTER_PORT + N - 1
READY_TIMEOUT=${SB_READY_TIMEOUT:-30}
DOMAIN=${SB_STACK_DOMAIN:-localhost}
EXTRA_DOMAINS=${SB_STACK_EXTRA_DOMAINS:-}
DEMO_USERS=(alice bob support)
ANON_DOMAIN=anon.$DOMAIN      # SASL ANONYMOUS visitors (web chat support)
COMP_DOMAIN=gw.$DOMAIN        # an external component (XEP-0114) it accepts
TLS_DOMAIN=""                 # test profile: a domain with a certificate of its own

say() { printf '%s\n' "$*"; }
die() { printf 'stack.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- profiles
profile_set() {
    PROFILE=$1
    case "$PROFILE" in
    run)  VAR="$ROOT/var";      PG_PORT=15432; REDIS_PORT=16379; ROUTER_PORT=15555
          C2S1_PORT=5222;  C2S1_TLS=5223;  C2S2_PORT=5242;  C2S2_TLS=5243
          BOSH_PORT=5280;  BOSH_TLS=5281
          S2S_LISTEN=127.0.0.1; S2S_PORT=5269; S2S_TLS=5270; DNS_PORT=""; COMP_PORT=5347
          METRICS_BASE=15990 ;;
    test|test[2-9])
          # SB_TEST_PORT_OFFSET shifts every test port (parallel checkouts);
          # testN stacks sit 100·N above the test ports.
          local o=${SB_TEST_PORT_OFFSET:-0} n=${PROFILE#test}
          S2S_LISTEN=127.0.0.1; DNS_PORT=""
          if [ -n "$n" ]; then
              o=$((o + 100 * n)); S2S_LISTEN=127.0.0.$n
              DNS_PORT=$((25353 + ${SB_TEST_PORT_OFFSET:-0}))
              PROCS=(router1 sm1 c2s1 s2s1); COMPONENTS=(sm1 c2s1 s2s1); ROUTERS=(router1)
          fi
          [ -n "$n" ] || TLS_DOMAIN=tls2.$DOMAIN
          VAR="$ROOT/var/$PROFILE"; PG_PORT=$((25432+o)); REDIS_PORT=$((26379+o)); ROUTER_PORT=$((25555+o))
          C2S1_PORT=$((25222+o)); C2S1_TLS=$((25223+o)); C2S2_PORT=$((25242+o)); C2S2_TLS=$((25243+o))
          BOSH_PORT=$((25280+o)); BOSH_TLS=$((25281+o)); S2S_PORT=$((25269+o)); S2S_TLS=$((25270+o))
          COMP_PORT=$((25347+o)); METRICS_BASE=$((25990+o)) ;;
    bench) # `make bench` (tests/bench/bench.py): same layout, its own ports;
          # SB_BENCH_PORT_OFFSET shifts them.
          local o=${SB_BENCH_PORT_OFFSET:-0}
          VAR="$ROOT/var/bench"; PG_PORT=$((17432+o)); REDIS_PORT=$((18379+o)); ROUTER_PORT=$((17555+o))
          C2S1_PORT=$((6222+o)); C2S1_TLS=$((6223+o)); C2S2_PORT=$((6242+o)); C2S2_TLS=$((6243+o))
          BOSH_PORT=$((6280+o)); BOSH_TLS=$((6281+o))
          S2S_LISTEN=127.0.0.1; S2S_PORT=$((6269+o)); S2S_TLS=$((6270+o)); DNS_PORT=""
          COMP_PORT=$((6347+o)); METRICS_BASE=$((17990+o)) ;;
    *) die "unknown profile '$PROFILE' (run, test, test2…test9 or bench)" ;;
    esac
    INI="$VAR/switchboard.ini"
    LOG="$VAR/log"; PID="$VAR/pid"; TLS="$VAR/tls"
    PGDATA="$VAR/pg"; PGSOCK="$VAR/pgsock"; REDIS_DIR="$VAR/redis"
    PASSWORDS="$VAR/demo-passwords"
    PREBIND_SECRET_FILE="$VAR/prebind-secret"
    REDIS_PASSWORD_FILE="$VAR/redis-password"
    PG_PASSWORD_FILE="$VAR/pg-password"
}

# Every process of a profile serves /metrics on a loopback port of its
# own: METRICS_BASE + its place below. The bases sit at column 90 of a
# hundred, which no other port of any profile uses (their ports are at
# 22, 23, 32, 42, 43, 47, 53, 55, 56, 69, 70, 79, 80, 81 of theirs), so the
# testN stacks (+100·N) never meet them. Names not listed (spares that
# tests start) get no `metrics` key.
metrics_port() {
    case "$1" in
    router1) printf '%s' $((METRICS_BASE + 0)) ;;
    router2) printf '%s' $((METRICS_BASE + 1)) ;;
    sm1)     printf '%s' $((METRICS_BASE + 2)) ;;
    sm2)     printf '%s' $((METRICS_BASE + 3)) ;;
    c2s1)    printf '%s' $((METRICS_BASE + 4)) ;;
    c2s2)    printf '%s' $((METRICS_BASE + 5)) ;;
    bosh1)   printf '%s' $((METRICS_BASE + 6)) ;;
    s2s1)    printf '%s' $((METRICS_BASE + 7)) ;;
    muc1)    printf '%s' $((METRICS_BASE + 8)) ;;
    esac
}

# [KIND.NAME] metrics = 127.0.0.1:PORT for every process of the profile.
metrics_sets() {
    local n
    for n in "${PROCS[@]}"; do
        printf '%s.%s\tmetrics\t127.0.0.1:%s\n' "$(printf '%s' "$n" | sed 's/[0-9]*$//')" "$n" \
            "$(metrics_port "$n")"
    done
}

metrics_env() {
    local n
    for n in "${PROCS[@]}"; do
        printf 'SB_%s_METRICS_PORT=%s\n' "$(printf '%s' "$n" | tr '[:lower:]' '[:upper:]')" "$(metrics_port "$n")"
    done
    printf 'SB_METRICS_PROCS="%s"\n' "${PROCS[*]}"
}

print_env() {
    metrics_env
    cat <<EOF
SB_STACK_PROFILE=$PROFILE
SB_ROOT=$ROOT
SB_VAR=$VAR
SB_INI=$INI
SB_BIN=$ROOT/bin
SB_STACK=$ROOT/deploy/dev/stack.sh
SB_DOMAIN=$DOMAIN
SB_PG_PORT=$PG_PORT
SB_REDIS_PORT=$REDIS_PORT
SB_REDIS_USER=switchboard
SB_REDIS_PASSWORD_FILE=$REDIS_PASSWORD_FILE
SB_PG_PASSWORD_FILE=$PG_PASSWORD_FILE
SB_ROUTER_PORT=$ROUTER_PORT
SB_ROUTERS="${ROUTERS[*]}"
SB_C2S1_PORT=$C2S1_PORT
SB_C2S1_TLS_PORT=$C2S1_TLS
SB_C2S2_PORT=$C2S2_PORT
SB_C2S2_TLS_PORT=$C2S2_TLS
SB_BOSH_PORT=$BOSH_PORT
SB_BOSH_TLS_PORT=$BOSH_TLS
SB_S2S1_LISTEN=$S2S_LISTEN
SB_S2S1_PORT=$S2S_PORT
SB_S2S1_TLS_PORT=$S2S_TLS
SB_S2S1_COMPONENT_PORT=$COMP_PORT
SB_COMPONENT_DOMAIN=$COMP_DOMAIN
SB_COMPONENT_SECRET_FILE=$VAR/component-secret
SB_DNS_PORT=$DNS_PORT
SB_ANON_DOMAIN=$ANON_DOMAIN
SB_TLS_DOMAIN=$TLS_DOMAIN
SB_CERT_DIR=$TLS/domains
SB_PREBIND_SECRET=$(cat "$PREBIND_SECRET_FILE" 2>/dev/null || true)
EOF
}

is_root() { [ "$(id -u)" = 0 ]; }

# ---------------------------------------------------------------- (a) deps
packages() { grep -Ev '^[[:space:]]*(#|$)' "$PKG_LIST"; }

missing_packages() {
    local p st
    for p in $(packages); do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [ "$st" = installed ] || printf '%s\n' "$p"
    done
}

cmd_deps() {
    local missing
    missing=$(missing_packages | paste -sd' ' -)
    [ -z "$missing" ] && return 0
    if is_root; then
        say "installing missing packages: $missing"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        # Servers in the list (prosody, ejabberd, slapd) only run in tests with private
        # configs: policy-rc.d keeps their system services from starting.
        local guard=""
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
        fi
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing || { [ -z "$guard" ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
        [ -z "$guard" ] || rm -f /usr/sbin/policy-rc.d
    else
        say "missing Debian packages: $missing" >&2
        say "install them with:" >&2
        say "  sudo apt-get update && sudo apt-get install -y $missing" >&2
        exit 1
    fi
}

# ---------------------------------------------------------------- (b) build
check_binaries() {
    local b
    for b in sb-router sb-c2s sb-bosh sb-sm sb-s2s sbctl; do
        [ -x "$ROOT/bin/$b" ] || die "bin/$b is missing: run 'make all' first (see the build errors above)"
    done
}

# ---------------------------------------------------------------- (c) TLS
setup_tls() {
    mkdir -p "$TLS"
    [ -s "$TLS/cert.pem" ] && [ -s "$TLS/key.pem" ] && return 0
    say "creating a self-signed certificate for $DOMAIN in $TLS"
    cat > "$TLS/template.cfg" <<EOF
organization = "Switchboard dev stack"
cn = "$DOMAIN"
dns_name = "$DOMAIN"
dns_name = "anon.$DOMAIN"
ip_address = "127.0.0.1"
expiration_days = 3650
tls_www_server
signing_key
encryption_key
EOF
    (umask 077; certtool --generate-privkey --key-type=ecdsa --curve=secp256r1 \
        --outfile "$TLS/key.pem" >/dev/null 2>&1) || die "certtool could not create a key"
    certtool --generate-self-signed --load-privkey "$TLS/key.pem" \
        --template "$TLS/template.cfg" --outfile "$TLS/cert.pem" >/dev/null 2>&1 \
        || die "certtool could not create the certificate"
}

# Certificates of their own for some domains: cert_dir ($TLS/domains) holds
# NAME.pem (chain, then key). The test profile's second domain has one, so
# tests can tell the default certificate and a domain's own apart.
setup_domain_certs() {
    mkdir -p "$TLS/domains"
    [ -n "$TLS_DOMAIN" ] || return 0
    local pem="$TLS/domains/$TLS_DOMAIN.pem" tpl="$TLS/domains/$TLS_DOMAIN.cfg"
    [ -s "$pem" ] && return 0
    printf 'organization = "Switchboard dev stack"\ncn = "%s"\ndns_name = "%s"\nexpiration_days = 3650\ntls_www_server\nsigning_key\nencryption_key\n' \
        "$TLS_DOMAIN" "$TLS_DOMAIN" > "$tpl"
    (umask 077
     certtool --generate-privkey --key-type=ecdsa --curve=secp256r1 --outfile "$pem.key" >/dev/null 2>&1 \
         && certtool --generate-self-signed --load-privkey "$pem.key" --template "$tpl" \
                     --outfile "$pem.crt" >/dev/null 2>&1 \
         && cat "$pem.crt" "$pem.key" > "$pem") || die "certtool could not create the certificate of $TLS_DOMAIN"
    rm -f "$pem.crt" "$pem.key" "$tpl"
}

# ---------------------------------------------------------------- (d) PostgreSQL
pg_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/pg_ctl" ] && { printf '%s' "$d"; return 0; }
    done
    die "PostgreSQL server binaries not found (package postgresql)"
}

# PostgreSQL refuses to run as root: as root we run it as the `postgres`
# system user (created by the Debian package); otherwise as ourselves.
as_pg() {
    if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# The postgres user must be able to reach var/; open the search (x) bit on
# the directories above it that lack it, and say so.
pg_path_access() {
    is_root || return 0
    local d=$VAR
    while [ "$d" != / ]; do
        if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
            say "note: chmod o+x $d so the postgres user can reach $VAR"
            chmod o+x "$d"
        fi
        d=$(dirname "$d")
    done
}

pg_running() { [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

pg_init() {
    [ -f "$PGDATA/PG_VERSION" ] && return 0
    say "initialising PostgreSQL in $PGDATA"
    mkdir -p "$PGDATA" "$PGSOCK"
    chmod 700 "$PGDATA"
    if is_root; then chown postgres: "$PGDATA" "$PGSOCK"; fi
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=trust >"$LOG/initdb.log" 2>&1 \
        || { tail -n 20 "$LOG/initdb.log" >&2; die "initdb failed (log: $LOG/initdb.log)"; }
    # initdb's host lines are 127.0.0.1/32 and ::1/128 only: trust stays on loopback.
    local extra="$LOG/pg-extra.conf"
    cat > "$extra" <<EOF

# --- added by deploy/dev/stack.sh ($PROFILE profile)
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGSOCK'
max_connections = 200
EOF
    case "$PROFILE" in test*) printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n' >> "$extra" ;; esac
    cat "$extra" >> "$PGDATA/postgresql.conf"
    rm -f "$extra"
}

pg_start() {
    local sockpath="$PGSOCK/.s.PGSQL.$PG_PORT"
    [ ${#sockpath} -lt 100 ] || die "path too long for a unix socket: $sockpath (move the checkout to a shorter path)"
    mkdir -p "$PGSOCK"
    touch "$LOG/postgres.log"
    if is_root; then chown postgres: "$PGSOCK" "$LOG/postgres.log"; fi
    if pg_running; then return 0; fi
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$LOG/postgres.log" -w -t 30 start >/dev/null \
        || { tail -n 20 "$LOG/postgres.log" >&2; die "PostgreSQL did not start (log: $LOG/postgres.log)"; }
}

psql_q() { "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "$1"; }

# The application role logs in with a generated password (SCRAM over TCP,
# made once per profile in $VAR/pg-password and given to the processes as
# postgres_password_file); only the postgres superuser keeps loopback trust
# for this script's own administration.
pg_password() {
    if [ ! -s "$PG_PASSWORD_FILE" ]; then
        (umask 077; head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 \
            > "$PG_PASSWORD_FILE")
    fi
    cat "$PG_PASSWORD_FILE"
}

pg_require_password() {
    local hba="$PGDATA/pg_hba.conf"
    as_pg grep -q '^host all switchboard 127.0.0.1/32 scram-sha-256' "$hba" && return 0
    as_pg sh -c "{ printf '%s\n' '# added by deploy/dev/stack.sh: the application role needs its password' \
        'host all switchboard 127.0.0.1/32 scram-sha-256' 'host all switchboard ::1/128 scram-sha-256'; \
        cat '$hba'; } > '$hba.new' && mv '$hba.new' '$hba'"
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" reload >/dev/null
}

pg_db() {
    if [ "$(psql_q "SELECT 1 FROM pg_roles WHERE rolname='switchboard'")" != 1 ]; then
        psql_q "CREATE ROLE switchboard LOGIN" >/dev/null
    fi
    psql_q "ALTER ROLE switchboard PASSWORD '$(pg_password)'" >/dev/null
    pg_require_password
    if [ "$(psql_q "SELECT 1 FROM pg_database WHERE datname='switchboard'")" != 1 ]; then
        psql_q "CREATE DATABASE switchboard OWNER switchboard ENCODING 'UTF8'" >/dev/null
    fi
}

setup_pg() {
    PGBIN=$(pg_bin)
    pg_path_access
    pg_init
    pg_start
    pg_db
}

pg_stop() {
    PGBIN=$(pg_bin)
    [ -f "$PGDATA/PG_VERSION" ] || return 0
    if pg_running; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop >/dev/null && say "stopped: postgresql"
    fi
}

# ---------------------------------------------------------------- (e) Redis
# The private Redis requires a password: ACL user `switchboard` with a
# generated password (made once per profile, in $VAR/redis-password); the
# default user is off, so an unauthenticated client gets NOAUTH.
redis_password() {
    if [ ! -s "$REDIS_PASSWORD_FILE" ]; then
        mkdir -p "$VAR"
        (umask 077; head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 \
            > "$REDIS_PASSWORD_FILE")
    fi
    cat "$REDIS_PASSWORD_FILE"
}
redis_cli() {
    REDISCLI_AUTH="$(cat "$REDIS_PASSWORD_FILE" 2>/dev/null)" \
        redis-cli --user switchboard -h 127.0.0.1 -p "$REDIS_PORT" "$@"
}
redis_running() { [ "$(redis_cli ping 2>/dev/null)" = PONG ]; }

setup_redis() {
    mkdir -p "$REDIS_DIR"
    local pw
    pw=$(redis_password)
    local save='save 3600 1 300 100'
    [ "$PROFILE" = run ] || save='save ""'
    cat > "$VAR/redis.conf" <<EOF
# written by deploy/dev/stack.sh ($PROFILE profile)
bind 127.0.0.1
protected-mode yes
port $REDIS_PORT
dir $REDIS_DIR
daemonize yes
pidfile $PID/redis.pid
logfile $LOG/redis.log
appendonly no
$save
user default off
user switchboard on >$pw ~* &* +@all
EOF
    chmod 600 "$VAR/redis.conf"
    redis_running && return 0
    redis-server "$VAR/redis.conf" || die "redis-server did not start (log: $LOG/redis.log)"
    local end=$((SECONDS + 10))
    until redis_running; do
        [ $SECONDS -lt $end ] || { tail -n 20 "$LOG/redis.log" >&2; die "Redis not answering on $REDIS_PORT"; }
        sleep 0.1
    done
}

redis_stop() {
    redis_running || return 0
    redis_cli shutdown >/dev/null 2>&1 || true
    local end=$((SECONDS + 10))
    while redis_running && [ $SECONDS -lt $end ]; do sleep 0.1; done
    say "stopped: redis"
}

# ---------------------------------------------------------------- (f) config
# Keys only the bench profile sets: load generators log in without TLS
# (loopback only) and the servers log warnings only, as the peers do. The
# generators open thousands of sessions from 127.0.0.1, so the per-address
# limits (c2s/limits.c) are off for them, explicitly, here only.
ini_profile_extra() {
    [ "$PROFILE" = bench ] || return 0
    printf 'cluster\tlog_level\twarn\nc2s\tallow_plain_without_tls\t1\n'
    local k
    for k in max_conns_per_addr max_unauth_per_addr login_failures_per_addr; do
        printf 'c2s\t%s\t0\nbosh\t%s\t0\n' "$k" "$k"
    done
}

# Copy the example, setting the profile's values key by key in their
# sections (keys the example lacks are added at the end of the section).
# The pre-bind secret: made once per profile, kept in var/.
prebind_secret() {
    if [ ! -s "$PREBIND_SECRET_FILE" ]; then
        (umask 077; head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 \
            > "$PREBIND_SECRET_FILE")
    fi
    cat "$PREBIND_SECRET_FILE"
}

# Settings only the test profile has: short BOSH inactivity and WebSocket
# pings, so the tests that wait for them stay fast; a SCRAM iteration count
# other than the default.
test_sets() {
    [ "$PROFILE" = test ] || return 0
    printf 'bosh\tinactivity\t6\nbosh\tws_ping\t2\n'
    printf 'sm\tpush_throttle\t2\n'          # tests/integration/test_push.py
    # not the default, so a test sees fake SCRAM credentials follow it
    printf 'cluster\tscram_iterations\t5000\n'
    printf 'sm\tpep_max_item_bytes\t16384\n'  # tests/integration/test_pep.py
    printf 'upload\tmax_file_size\t1048576\nupload\tquota\t3145728\n'   # test_upload.py
    # slots on sb-bosh's HTTPS listener, as in production (test_browser.py's upload)
    printf 'upload\turl\thttps://localhost:%s/upload\n' "$BOSH_TLS"
    # Every test logs in from 127.0.0.1 and dozens fail on purpose (wrong
    # passwords, bad tokens, spent FAST tokens): c2s1 saw 76 in one minute
    # when the login, token, SASL2 and web tests ran back to back. The
    # default bucket (30 a minute, c2s/limits.c) would answer later tests
    # temporary-auth-failure; 300 leaves room. Only this budget is raised; the
    # other address and account limits keep their defaults, and
    # test_limits_addr.py checks the default 30 on a front-end of its own.
    printf 'c2s\tlogin_failures_per_addr\t300\nbosh\tlogin_failures_per_addr\t300\n'
}

# Router N of the profile listens on ROUTER_PORT + N - 1; every component
# is given all of them.
router_endpoints() {
    local i out=""
    for ((i = 0; i < ${#ROUTERS[@]}; i++)); do
        out+="${out:+,}tcp://127.0.0.1:$((ROUTER_PORT + i))"
    done
    printf '%s' "$out"
}

router_binds() {
    local i
    for ((i = 0; i < ${#ROUTERS[@]}; i++)); do
        printf 'router.%s\tbind\ttcp://127.0.0.1:%s\n' "${ROUTERS[i]}" "$((ROUTER_PORT + i))"
    done
}

# ---- bus CURVE keys (common/curve.c) ----------------------------------------
# Every process name of the profile, sbctl, and spare names (a third router,
# more front-ends: what the tests and a by-hand scale-out start later) are
# bus members; keys are made once per profile under $VAR/keys. A name
# without a key is refused by every bus socket.
SPARE_MEMBERS=(router3 sm3 sm4 c2s3 c2s4 c2s5 c2s6 c2s7 c2s8 c2s9 bosh2 bosh3 bosh7 s2s2 s2s3 muc2 muc3)
curve_sets() {
    printf 'cluster\tcurve_dir\t%s\n' "$VAR/keys"
}
setup_keys() {
    "$ROOT/bin/sbctl" keys generate --dir "$VAR/keys" "${PROCS[@]}" "${SPARE_MEMBERS[@]}" \
        sbctl >/dev/null
}
# ---- end bus CURVE keys -----------------------------------------------------

write_ini() {
    local example="$ROOT/deploy/switchboard.ini.example"
    [ -f "$example" ] || die "missing $example"
    local tmp="$INI.tmp" secret dbsecret
    mkdir -p "$VAR"
    secret=$(prebind_secret)
    # The dialback secret (XEP-0185) is the stack's own, made once.
    if [ ! -s "$VAR/dialback-secret" ]; then
        (umask 077; random_password > "$VAR/dialback-secret"; random_password >> "$VAR/dialback-secret")
    fi
    dbsecret=$(tr -d '\n' < "$VAR/dialback-secret")
    # An external component (XEP-0114) the stack accepts: gw.DOMAIN
    [ -s "$VAR/component-secret" ] || (umask 077; random_password > "$VAR/component-secret")
    # The key of the fake SCRAM salts for unknown users (auth/), one per stack.
    if [ ! -s "$VAR/sasl-secret" ]; then
        (umask 077; random_password > "$VAR/sasl-secret")
    fi
    # XEP-0363 uploads: the slot signing secret and the files' directory
    [ -s "$VAR/upload-secret" ] || (umask 077; random_password > "$VAR/upload-secret")
    mkdir -p "$VAR/upload"
    awk -v sets="$(cat <<EOF
cluster	routers	$(router_endpoints)
cluster	dialback_secret	$dbsecret
cluster	sasl_secret_file	$VAR/sasl-secret
cluster	redis_host	127.0.0.1
cluster	redis_port	$REDIS_PORT
cluster	redis_user	switchboard
cluster	redis_password_file	$REDIS_PASSWORD_FILE
cluster	postgres_password_file	$PG_PASSWORD_FILE
cluster	postgres	host=127.0.0.1 port=$PG_PORT dbname=switchboard user=switchboard
cluster	cert_dir	$TLS/domains
$(router_binds)
c2s	listen	127.0.0.1
c2s	port	$C2S1_PORT
c2s	tls_port	$C2S1_TLS
c2s	cert	$TLS/cert.pem
c2s	key	$TLS/key.pem
c2s.c2s2	port	$C2S2_PORT
c2s.c2s2	tls_port	$C2S2_TLS
c2s.c2s1	drain_redirect	localhost:$C2S2_PORT
c2s.c2s2	drain_redirect	localhost:$C2S1_PORT
bosh	listen	127.0.0.1
bosh	port	$BOSH_PORT
bosh	tls_port	$BOSH_TLS
bosh	cert	$TLS/cert.pem
bosh	key	$TLS/key.pem
bosh	prebind_secret	$secret
s2s	listen	$S2S_LISTEN
s2s	port	$S2S_PORT
s2s	tls_port	$S2S_TLS
s2s	cert	$TLS/cert.pem
s2s	key	$TLS/key.pem
s2s	resolver	${DNS_PORT:+127.0.0.1:$DNS_PORT}
s2s.s2s1	component_port	$COMP_PORT
component.$COMP_DOMAIN	secret_file	$VAR/component-secret
upload	url	http://localhost:$BOSH_PORT/upload
upload	dir	$VAR/upload
upload	secret_file	$VAR/upload-secret
$(test_sets)
$(metrics_sets)
$(ini_profile_extra)
$(curve_sets)
EOF
)" '
    BEGIN {
        n = split(sets, L, "\n")
        for (i = 1; i <= n; i++) {
            if (L[i] == "") continue
            split(L[i], f, "\t"); val[f[1] SUBSEP f[2]] = f[3]
            order[++cnt] = f[1] SUBSEP f[2]
        }
        sect = ""
    }
    function flush(s,   i, k, p) {
        for (i = 1; i <= cnt; i++) {
            k = order[i]; split(k, p, SUBSEP)
            if (p[1] == s && !(k in done)) { print p[2] " = " val[k]; done[k] = 1 }
        }
    }
    /^[ \t]*\[.*\][ \t]*$/ {
        flush(sect)
        s = $0; gsub(/^[ \t]*\[|\][ \t]*$/, "", s); sect = s; seen[s] = 1
        print; next
    }
    /^[ \t]*[A-Za-z0-9_]+[ \t]*=/ {
        key = $0; sub(/^[ \t]*/, "", key); sub(/[ \t]*=.*/, "", key)
        k = sect SUBSEP key
        if (k in val) { print key " = " val[k]; done[k] = 1; next }
    }
    { print }
    END {
        flush(sect)
        for (i = 1; i <= cnt; i++) {
            split(order[i], p, SUBSEP)
            if (!(p[1] in seen) && !(p[1] in hdr)) { print ""; print "[" p[1] "]"; hdr[p[1]] = 1; flush(p[1]) }
        }
    }' "$example" > "$tmp"
    { printf '# Generated by deploy/dev/stack.sh from deploy/switchboard.ini.example\n'
      printf '# (%s profile). It is rewritten when the example changes; for local\n' "$PROFILE"
      printf '# overrides prefer SB_<SECTION>_<KEY> environment variables.\n\n'
      cat "$tmp"; } > "$tmp.2"
    rm -f "$tmp"
    if [ -f "$INI" ] && cmp -s "$tmp.2" "$INI"; then rm -f "$tmp.2"; else mv "$tmp.2" "$INI"; fi
}

# ---------------------------------------------------------------- (g) schema, domain, users
sbctl() { (cd "$ROOT" && "$ROOT/bin/sbctl" -c "$INI" "$@"); }

# Run an sbctl command that may fail only because the thing already exists.
sbctl_idem() {
    local out
    if out=$(sbctl "$@" 2>&1); then return 0; fi
    if printf '%s' "$out" | grep -qiE 'exist|duplicate'; then return 0; fi
    printf '%s\n' "$out" >&2
    die "'sbctl $*' failed"
}

random_password() { head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 16; }

setup_data() {
    local out
    out=$(sbctl db migrate 2>&1) || { printf '%s\n' "$out" >&2; die "'sbctl db migrate' failed"; }
    sbctl_idem domain add "$DOMAIN"
    sbctl_idem domain add "$ANON_DOMAIN" --anonymous
    local d
    for d in $EXTRA_DOMAINS $TLS_DOMAIN; do sbctl_idem domain add "$d"; done
    local u
    (umask 077; touch "$PASSWORDS"
     for u in "${DEMO_USERS[@]}"; do
         grep -q "^$u@$DOMAIN " "$PASSWORDS" || printf '%s@%s %s\n' "$u" "$DOMAIN" "$(random_password)" >> "$PASSWORDS"
     done)
    local jid pw
    while read -r jid pw; do
        [ -n "$jid" ] || continue
        sbctl_idem user add "$jid" "$pw"
    done < "$PASSWORDS"
}

# ---------------------------------------------------------------- (h) processes
proc_bin() {
    case "$1" in
    router*) printf '%s' "$ROOT/bin/sb-router" ;;
    sm*)     printf '%s' "$ROOT/bin/sb-sm" ;;
    c2s*)    printf '%s' "$ROOT/bin/sb-c2s" ;;
    bosh*)   printf '%s' "$ROOT/bin/sb-bosh" ;;
    s2s*)    printf '%s' "$ROOT/bin/sb-s2s" ;;
    muc*)    printf '%s' "$ROOT/bin/sb-muc" ;;
    *) die "unknown process '$1' (router1, smN, c2sN, boshN, s2sN, mucN)" ;;
    esac
}

# Pid of a live process NAME started by us (checks the binary, so a reused
# pid is never mistaken for ours), or nothing.
proc_pid() {
    local f="$PID/$1.pid" pid exe
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    [ -d "/proc/$pid" ] || return 0
    exe=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)
    case "$exe" in *"$(basename "$(proc_bin "$1")")"*"-n $1"*) printf '%s' "$pid" ;; esac
}

cmd_start_proc() {
    local name=$1 bin pid
    bin=$(proc_bin "$name")
    [ -x "$bin" ] || die "$bin is missing: run 'make all' first"
    pid=$(proc_pid "$name")
    if [ -n "$pid" ]; then say "already running: $name (pid $pid)"; return 0; fi
    mkdir -p "$LOG" "$PID"
    printf '\n=== %s start %s\n' "$(date -u +%FT%TZ)" "$name" >> "$LOG/$name.log"
    # setsid: its own session, so it outlives `make` and the terminal.
    (cd "$ROOT" && exec setsid "$bin" -c "$INI" -n "$name" </dev/null >>"$LOG/$name.log" 2>&1) &
    local child=$!
    disown "$child" 2>/dev/null || true   # no "Killed" job notice when a test kills it
    printf '%s\n' "$child" > "$PID/$name.pid"
    say "started: $name (pid $child, log $LOG/$name.log)"
}

stop_pid() {   # NAME PID: SIGTERM, wait up to 5 s, then SIGKILL
    local name=$1 pid=$2 end
    kill -TERM "$pid" 2>/dev/null || true
    end=$((SECONDS + 5))
    while [ -d "/proc/$pid" ] && [ $SECONDS -lt $end ]; do
        # a zombie child of ours counts as gone
        grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && break
        sleep 0.1
    done
    if [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        say "killed: $name (pid $pid did not stop on SIGTERM)"
    else
        say "stopped: $name"
    fi
}

cmd_stop_proc() {
    local name=$1 pid
    proc_bin "$name" >/dev/null
    pid=$(proc_pid "$name")
    [ -n "$pid" ] && stop_pid "$name" "$pid"
    rm -f "$PID/$name.pid"
}

# SIGKILL, no clean-up: what a crash looks like to the rest of the cluster.
cmd_kill_proc() {
    local name=$1 pid
    pid=$(proc_pid "$name")
    [ -n "$pid" ] || die "$name is not running"
    kill -KILL "$pid"
    local end=$((SECONDS + 5))
    while [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null \
          && [ $SECONDS -lt $end ]; do sleep 0.05; done
    rm -f "$PID/$name.pid"
    say "killed: $name (pid $pid)"
}

# ---------------------------------------------------------------- (i) readiness
port_open() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

registered() {   # status output, name → is NAME listed?
    printf '%s\n' "$1" | grep -qE "(^|[^A-Za-z0-9_.-])$2([^A-Za-z0-9_.-]|\$)"
}

show_logs() {
    local n
    for n in "${PROCS[@]}"; do
        [ -f "$LOG/$n.log" ] || continue
        printf -- '----- tail of %s\n' "$LOG/$n.log" >&2
        tail -n 15 "$LOG/$n.log" >&2
    done
}

cmd_wait_ready() {
    local end=$((SECONDS + READY_TIMEOUT)) st="" missing n p
    while :; do
        missing=""
        for n in "${PROCS[@]}"; do
            [ -n "$(proc_pid "$n")" ] || { show_logs; die "$n exited during start-up (log: $LOG/$n.log)"; }
        done
        st=$(timeout 5 "$ROOT/bin/sbctl" -c "$INI" status 2>/dev/null || true)
        for n in "${COMPONENTS[@]}"; do registered "$st" "$n" || missing+=" $n"; done
        for n in "${COMPONENTS[@]}"; do
            case "$n" in
            c2s1) for p in "$C2S1_PORT" "$C2S1_TLS"; do port_open "$p" || missing+=" port:$p"; done ;;
            c2s2) for p in "$C2S2_PORT" "$C2S2_TLS"; do port_open "$p" || missing+=" port:$p"; done ;;
            bosh1) for p in "$BOSH_PORT" "$BOSH_TLS"; do port_open "$p" || missing+=" port:$p"; done ;;
            s2s1) port_open "$S2S_PORT" "$S2S_LISTEN" || missing+=" port:$S2S_LISTEN:$S2S_PORT" ;;
            esac
        done
        [ -z "$missing" ] && return 0
        if [ $SECONDS -ge $end ]; then
            say "not ready after ${READY_TIMEOUT}s, still waiting for:$missing" >&2
            say "last 'sbctl status':" >&2; printf '%s\n' "$st" >&2
            show_logs
            die "the stack did not become ready"
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- commands
# Everything that needs no Switchboard binary.
cmd_infra() {
    cmd_deps
    mkdir -p "$VAR" "$LOG" "$PID"
    setup_tls
    setup_domain_certs
    setup_pg
    setup_redis
    write_ini
}

cmd_setup() {
    check_binaries
    cmd_infra
    setup_keys
    setup_data
}

start_all() {
    local n
    for n in "${PROCS[@]}"; do
        cmd_start_proc "$n"
        # the routers first, so components find them at once
        case "$n" in router*) sleep 0.1 ;; esac
    done
    cmd_wait_ready
}

cmd_run() {
    cmd_setup
    start_all
    local jid pw
    say ""
    say "Switchboard is running (profile $PROFILE). Logs: $LOG/"
    say "  c2s1: 127.0.0.1:$C2S1_PORT (STARTTLS), 127.0.0.1:$C2S1_TLS (direct TLS)"
    say "  c2s2: 127.0.0.1:$C2S2_PORT (STARTTLS), 127.0.0.1:$C2S2_TLS (direct TLS)"
    say "  s2s1: $S2S_LISTEN:$S2S_PORT (STARTTLS), $S2S_LISTEN:$S2S_TLS (direct TLS), components (XEP-0114) on 127.0.0.1:$COMP_PORT ($COMP_DOMAIN, secret in $VAR/component-secret)"
    say "  bosh1: http://127.0.0.1:$BOSH_PORT/http-bind (BOSH), ws://127.0.0.1:$BOSH_PORT/xmpp-websocket,"
    say "         https://127.0.0.1:$BOSH_TLS/... (same paths), pre-bind POST /http-pre-bind"
    say "         (secret in $PREBIND_SECRET_FILE); anonymous domain: $ANON_DOMAIN"
    say "Demo accounts (from $PASSWORDS):"
    while read -r jid pw; do say "  $jid  password: $pw"; done < "$PASSWORDS"
    read -r jid pw < "$PASSWORDS"
    say ""
    local bjid bpw
    { read -r _ _; read -r bjid bpw; } < "$PASSWORDS"
    say "Connect with go-sendxmpp (apt-get install go-sendxmpp); -n accepts the self-signed"
    say "certificate. In one terminal, bob listens on c2s2:"
    say "  go-sendxmpp -u $bjid -p '$bpw' -j 127.0.0.1:$C2S2_PORT -n -l"
    say "in another, alice sends to bob through c2s1:"
    say "  echo 'hello bob' | go-sendxmpp -u $jid -p '$pw' -j 127.0.0.1:$C2S1_PORT -n $bjid"
    say "Any XMPP client works too: account $jid, server 127.0.0.1, port $C2S1_PORT (STARTTLS)"
    say "or $C2S1_TLS (direct TLS), and accept the self-signed certificate."
    say "Status: make status    Stop: make stop"
}

cmd_stop() {
    local i n pid
    for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do
        n=${PROCS[i]}
        pid=$(proc_pid "$n")
        [ -n "$pid" ] && stop_pid "$n" "$pid"
        rm -f "$PID/$n.pid"
    done
    redis_stop
    pg_stop
}

cmd_status() {
    local n pid
    say "profile $PROFILE ($VAR)"
    for n in "${PROCS[@]}"; do
        pid=$(proc_pid "$n")
        if [ -n "$pid" ]; then say "  $n: running (pid $pid)"; else say "  $n: stopped"; fi
    done
    if redis_running; then say "  redis: running (port $REDIS_PORT)"; else say "  redis: stopped"; fi
    PGBIN=$(pg_bin)
    if pg_running; then say "  postgresql: running (port $PG_PORT)"; else say "  postgresql: stopped"; fi
    if { [ -n "$(proc_pid router1)" ] || [ -n "$(proc_pid router2)" ]; } && [ -x "$ROOT/bin/sbctl" ]; then
        say "cluster (sbctl status):"
        timeout 5 "$ROOT/bin/sbctl" -c "$INI" status 2>&1 | sed 's/^/  /' || true
    fi
}

cmd_test() {
    # One `make test` at a time per checkout (they share var/test and its ports).
    mkdir -p "$ROOT/var"
    exec 9>"$ROOT/var/.test.lock"
    if ! flock -n 9; then
        say "another 'make test' is using var/test; waiting for it (up to 10 min)"
        flock -w 600 9 || die "var/test is still in use"
    fi
    # Always a fresh profile: stop whatever an earlier run left, wipe, set up.
    cmd_stop >/dev/null 2>&1 || true
    rm -rf "$VAR"
    local rc=0
    trap 'cmd_stop >/dev/null 2>&1 || true' EXIT
    cmd_setup
    start_all
    set -a
    eval "$(print_env)"
    set +a
    (cd "$ROOT" && /usr/bin/python3 -m pytest -v tests/integration "$@") || rc=$?
    if [ $rc -ne 0 ]; then
        say "integration tests failed (exit $rc); logs kept in $LOG/" >&2
    fi
    cmd_stop || true
    trap - EXIT
    exit $rc
}

main() {
    local prof=${SB_STACK_PROFILE:-}
    if [ "${1:-}" = -p ]; then prof=$2; shift 2; fi
    local cmd=${1:-}
    [ -n "$cmd" ] || { sed -n '2,20p' "$0"; exit 2; }
    shift
    if [ -z "$prof" ]; then
        if [ "$cmd" = test ]; then prof=test; else prof=run; fi
    fi
    profile_set "$prof"
    case "$cmd" in
    run) cmd_run ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    test) cmd_test "$@" ;;
    deps) cmd_deps ;;
    setup) cmd_setup ;;
    infra) cmd_infra ;;
    start-proc) [ $# -eq 1 ] || die "usage: start-proc NAME"; cmd_start_proc "$1" ;;
    stop-proc) [ $# -eq 1 ] || die "usage: stop-proc NAME"; cmd_stop_proc "$1" ;;
    kill-proc) [ $# -eq 1 ] || die "usage: kill-proc NAME"; cmd_kill_proc "$1" ;;
    wait-ready) cmd_wait_ready ;;
    pg-stop) pg_stop ;;
    pg-start) PGBIN=$(pg_bin); pg_start; say "started: postgresql" ;;
    redis-stop) redis_running && redis_cli shutdown save >/dev/null 2>&1 || true
                local end=$((SECONDS + 10))
                while redis_running && [ $SECONDS -lt $end ]; do sleep 0.1; done
                redis_running && die "redis still running"
                say "stopped: redis" ;;
    redis-start) setup_redis; say "started: redis" ;;
    redis-crash) redis_running && redis_cli shutdown nosave >/dev/null 2>&1 || true
                 local end=$((SECONDS + 10))
                 while redis_running && [ $SECONDS -lt $end ]; do sleep 0.1; done
                 rm -f "$REDIS_DIR/dump.rdb"
                 redis_running && die "redis still running"
                 say "crashed: redis (data lost)" ;;
    env) print_env ;;
    *) die "unknown command '$cmd'" ;;
    esac
}

main "$@"
