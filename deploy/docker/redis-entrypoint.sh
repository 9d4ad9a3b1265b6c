#!/bin/sh
# docker-entrypoint.sh of the redis stage (deploy/docker/Dockerfile): Debian's
# redis-server with the official image's conventions (data in /data, a
# volume; runs as redis), plus what deploy/dev/stack.sh does: the default
# user is off and the ACL user REDIS_USER (default switchboard) logs in with
# the password in the file REDIS_PASSWORD_FILE. Snapshots as a persistent
# Redis would (save 3600 1 300 100).
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
    user=${REDIS_USER:-switchboard}
    pw=$(cat "${REDIS_PASSWORD_FILE:?set REDIS_PASSWORD_FILE}")
    conf=/tmp/redis.conf
    umask 077
    cat > "$conf" <<CONF
bind * -::*
protected-mode no
port 6379
dir /data
appendonly no
save 3600 1 300 100
user default off
user $user on >$pw ~* &* +@all
CONF
    chown redis:redis "$conf" /data 2>/dev/null || true
    if [ "$(id -u)" = 0 ]; then
        exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$conf" "$@"
    fi
    exec redis-server "$conf" "$@"
fi
exec "$@"
