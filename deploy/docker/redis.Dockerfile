# Redis from Debian's package on the local debian:bookworm-slim, with the
# official redis image's conventions (redis-entrypoint.sh): data volume
# /data, runs as redis; plus an ACL user whose password is the file
# REDIS_PASSWORD_FILE (the default user off). Context: deploy/docker.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
VOLUME /data
WORKDIR /data
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
