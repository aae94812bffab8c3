# Prometheus and the two store exporters, from Debian's packages. The backend runs them on the
# host's network, bound to 127.0.0.1, with the same arguments as the process backend.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus prometheus-redis-exporter prometheus-postgres-exporter \
    && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["prometheus"]
