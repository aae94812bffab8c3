# Python 3.11 on the local Debian base: what the memory service's image runs on.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
