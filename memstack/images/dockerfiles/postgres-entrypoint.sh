#!/bin/sh
# First start: initdb with the admin password from the environment (through a 0600 file, never
# the command line), and password logins from the container network. Then Postgres in the foreground.
set -eu
PGDATA=/var/lib/postgresql/data/pgdata
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
    umask 077
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --auth=scram-sha-256 --pwfile="$pwfile" \
        --encoding=UTF8 --locale=C --wal-segsize=1 >/dev/null
    rm -f "$pwfile"
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi
# Memory and planner settings come from the command (memstack's server_settings).
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories= "$@"
