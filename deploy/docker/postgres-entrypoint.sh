#!/bin/sh
# docker-entrypoint.sh of the postgres stage (deploy/docker/Dockerfile):
# Debian's PostgreSQL with the official image's conventions. Data in
# $PGDATA (/var/lib/postgresql/data, a volume); on first start (empty
# directory) initdb, then POSTGRES_USER (default postgres) with the password
# of POSTGRES_PASSWORD or, better, the file POSTGRES_PASSWORD_FILE, and the
# database POSTGRES_DB (default: the user's name). Clients log in with
# scram-sha-256 from anywhere; only the local socket is trusted. Started as
# root only to fix ownership, then runs as postgres.
set -eu
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
export PATH="$PGBIN:$PATH"
: "${PGDATA:=/var/lib/postgresql/data}"

if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /run/postgresql
    chown -R postgres:postgres "$PGDATA" /run/postgresql
    chmod 700 "$PGDATA"
    # the secret file may be readable by root only: hand initdb a copy
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
        install -o postgres -g postgres -m 600 "$POSTGRES_PASSWORD_FILE" /run/postgresql/.pw
        export POSTGRES_PASSWORD_FILE=/run/postgresql/.pw
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ]; then
    shift
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        user=${POSTGRES_USER:-postgres}
        pw=${POSTGRES_PASSWORD:-}
        if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then pw=$(cat "$POSTGRES_PASSWORD_FILE"); fi
        [ -n "$pw" ] || { echo "postgres: set POSTGRES_PASSWORD_FILE (or POSTGRES_PASSWORD)" >&2; exit 1; }
        db=${POSTGRES_DB:-$user}
        pwfile=$(mktemp)
        printf '%s\n' "$pw" > "$pwfile"
        initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host=scram-sha-256 >/dev/null
        rm -f "$pwfile" /run/postgresql/.pw
        printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
        printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
        if [ "$db" != postgres ]; then
            postgres --single -j -D "$PGDATA" postgres >/dev/null <<SQL
CREATE DATABASE "$db" OWNER "$user" ENCODING 'UTF8';
SQL
        fi
        echo "postgres: initialised $PGDATA (user $user, database $db)"
    fi
    exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
