# PostgreSQL 16 + pgvector from the binaries of the pgserver wheel (those the process backend
# runs). Same contract as the official image: POSTGRES_USER / POSTGRES_PASSWORD, data under
# /var/lib/postgresql/data, runs as the postgres user.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN groupadd --system postgres && useradd --system --gid postgres --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres \
    && mkdir -p /var/lib/postgresql/data && chown -R postgres:postgres /var/lib/postgresql
COPY pgserver /opt/pgserver/pgserver
COPY pgserver.libs /opt/pgserver/pgserver.libs
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/opt/pgserver/pgserver/pginstall/bin:$PATH
USER postgres
EXPOSE 5432
ENTRYPOINT ["postgres-entrypoint"]
