# Every target installs what it needs; running one twice does no work the second time.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NEO4J_LAUNCHER := tools/neo4j-local
NEO4J_STAMP := $(NEO4J_LAUNCHER)/target/.built
# Batch mode, no download progress. Maven 3.8's Jansi still writes colour resets ("[0m[0m") as it
# starts and exits, batch mode or not, unless told not to (a system property the launcher's JVM
# must have before Maven's own -D options are read). memstack/local/neo4j_server.py builds it the same way.
MVN := MAVEN_OPTS="$$MAVEN_OPTS -Djansi.noreset=true" mvn -q -B -ntp
PYTEST_ARGS ?=

.PHONY: setup system-deps python-deps lock lint neo4j-launcher checkov jaeger containers test chaos bench demo down clean

setup: system-deps python-deps neo4j-launcher

# Redis, Prometheus and Chromium (the capacity report's screenshot test) from Debian; Java and
# Maven must already be there (the launcher checks).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-redis-exporter >/dev/null || missing="$$missing prometheus-redis-exporter"; \
	command -v prometheus-postgres-exporter >/dev/null || missing="$$missing prometheus-postgres-exporter"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing from Debian"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing; install them with: sudo apt-get install$$missing" >&2; exit 2; \
	  fi; \
	fi
	@command -v java >/dev/null || { echo "missing: java (JDK 17 or 21); install openjdk-17-jdk-headless" >&2; exit 2; }
	@command -v mvn >/dev/null || { echo "missing: mvn (Maven 3.8+); install maven" >&2; exit 2; }

python-deps: $(VENV)/.installed

# Exact versions from requirements.lock (uv installs them; the project itself adds nothing), so
# every checkout tests against the same packages. `uv pip check` fails when the lock lacks a
# dependency pyproject.toml declares: run `make lock` after changing them.
$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip "$$(grep '^uv==' requirements.lock)"
	@$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	@$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@$(BIN)/uv pip check -q --python $(BIN)/python
	@touch $@

# Re-resolve the `dev` extra (everything the suite needs) to the newest versions pyproject.toml allows.
lock: $(BIN)/python
	@test -x $(BIN)/uv || $(BIN)/pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -q -o requirements.lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Lint, format and strict types on memory_core; part of `make test`.
lint: python-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# checkov (the Kubernetes manifest scan of tests/infra) in its own virtualenv: its pins
# (packaging<24 among them) cannot share one with pulumi's. Version: pyproject's `checkov` extra.
CHECKOV_VENV := .venv-checkov
checkov: $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/.installed: pyproject.toml
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	@$(CHECKOV_VENV)/bin/pip install -q "$$($(BIN)/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["checkov"][0])')"
	@touch $@

neo4j-launcher: $(NEO4J_STAMP)

$(NEO4J_STAMP): $(NEO4J_LAUNCHER)/pom.xml $(shell find $(NEO4J_LAUNCHER)/src -name '*.java' 2>/dev/null)
	@echo "building the Neo4j launcher (first run downloads Neo4j from Maven Central)"
	@$(MVN) -f $(NEO4J_LAUNCHER)/pom.xml -DskipTests package
	@touch $@

# Jaeger v2 for `memstack up --with jaeger`, built from the Go module proxy (a cold build takes
# about 8 minutes on 2 cores; Go caches the modules and the build, and the binary is kept).
JAEGER_DIR := tools/jaeger
JAEGER_BIN := $(JAEGER_DIR)/bin/jaeger
jaeger: $(JAEGER_BIN)

$(JAEGER_BIN): $(JAEGER_DIR)/go.mod $(JAEGER_DIR)/go.sum
	@command -v go >/dev/null || { echo "missing: go (1.24+) to build Jaeger; install it from https://go.dev/dl" >&2; exit 2; }
	@echo "building Jaeger v2 from the Go module proxy (first run: several minutes)"
	@cd $(JAEGER_DIR) && go build -o bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

# The Docker engine and the local images for the container suites (tests/memstack, tests/recovery):
# dockerd from Debian is installed and started when none answers and we are root; the images are
# built from a debootstrap'd Debian (no registry needed) and cached in the engine. Without an
# engine this says why and the container tests skip with that reason.
MEMSTACK_IMAGES ?= local
export MEMSTACK_IMAGES
containers: python-deps neo4j-launcher
	@$(BIN)/memstack images engine
	@if $(BIN)/python -c 'import sys; from memstack.images.engine import answers; sys.exit(not answers())'; then \
	  $(BIN)/memstack images build; fi

# pytest exits 5 when it collects nothing: that is a failure here, never a pass.
# Jaeger only for the tests (the trace test): `make demo` runs without Go.
test: setup checkov lint containers jaeger
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The service image under load, and one fault at a time in each store (tests/recovery, marker
# chaos; `make test` runs them too): just these, on their own; needs Docker.
chaos: setup containers
	$(BIN)/python -m pytest tests/recovery/test_container_recovery.py -m chaos $(PYTEST_ARGS)

# The benchmarks of benchmarks/ on the local stack; a missed target fails the run.
# BENCH_SCALE=quick (default: 10k turns) or full (100k turns; the first run loads them for minutes).
BENCH_SCALE ?= quick
bench: setup
	BENCH_SCALE=$(BENCH_SCALE) $(BIN)/python -m pytest benchmarks --benchmark-only -q -s $(PYTEST_ARGS)

# The main job: local stack with Prometheus, the memory service and its worker under a 30 s load;
# latency per route group against the SLO, then what Prometheus recorded of the run.
demo: setup
	$(BIN)/memstack demo

down:
	@test -x $(BIN)/memstack && $(BIN)/memstack down || true

clean: down
	rm -rf .memstack $(NEO4J_LAUNCHER)/target $(JAEGER_DIR)/bin
