# PostgreSQL from Debian's package on the local debian:bookworm-slim, with
# the official postgres image's conventions (postgres-entrypoint.sh): data
# volume /var/lib/postgresql/data, POSTGRES_USER / POSTGRES_DB /
# POSTGRES_PASSWORD_FILE, pg_isready for health checks. Context: deploy/docker.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/lib/postgresql/*/bin/pg_isready /usr/lib/postgresql/*/bin/postgres \
          /usr/lib/postgresql/*/bin/initdb /usr/local/bin/ \
 && mkdir -p /var/lib/postgresql/data /run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
ENV PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
