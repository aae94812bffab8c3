#!/bin/sh
# The launcher binds Bolt to 127.0.0.1 only; socat carries the container's port 7687 to it.
# Java stays PID 1, so `docker stop` shuts the DBMS down cleanly.
set -eu
: "${NEO4J_AUTH:?NEO4J_AUTH=neo4j/PASSWORD is required}"
: "${NEO4J_JVM_OPTIONS:?NEO4J_JVM_OPTIONS (heap, GC, JIT) is required}"
NEO4J_PASSWORD=${NEO4J_AUTH#*/}
export NEO4J_PASSWORD
socat TCP-LISTEN:7687,fork,reuseaddr TCP:127.0.0.1:7688 &
# Word splitting of the options is intended.
# shellcheck disable=SC2086
exec java $NEO4J_JVM_OPTIONS \
    -jar /opt/neo4j-local/neo4j-local.jar --home /data --bolt-port 7688 --log /data/neo4j-debug.log
