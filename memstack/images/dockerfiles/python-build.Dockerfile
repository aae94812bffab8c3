# The build stage's base: the runtime base plus the CA bundle the host trusts, so pip reaches
# the package index through the same TLS chain as on the host. Never used as a runtime base.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
COPY ca-certificates.crt /usr/local/share/memstack-build/ca-certificates.crt
ENV PIP_CERT=/usr/local/share/memstack-build/ca-certificates.crt \
    PIP_DEFAULT_TIMEOUT=180
