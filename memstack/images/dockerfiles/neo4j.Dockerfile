# Neo4j 5.26 community: the embedded launcher of tools/neo4j-local on Debian's JRE. Same
# contract as the official image: NEO4J_AUTH=neo4j/PASSWORD, data in /data, Bolt on 7687.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless socat \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system neo4j && useradd --system --gid neo4j --home-dir /data --shell /usr/sbin/nologin neo4j \
    && mkdir -p /data && chown neo4j:neo4j /data
COPY neo4j-local /opt/neo4j-local
COPY neo4j-entrypoint.sh /usr/local/bin/neo4j-entrypoint
USER neo4j
WORKDIR /data
EXPOSE 7687
ENTRYPOINT ["neo4j-entrypoint"]
