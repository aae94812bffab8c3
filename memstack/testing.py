"""A pytest plugin that points a suite at a real data tier.

Options (as redis-py's conftest does for its server):
  --backend process|containers|external   default $MEMSTACK_BACKEND or process
  --memstack-home DIR                      where the process backend keeps state (default $MEMSTACK_HOME or ./.memstack)
  --keep-stack                             leave a stack this session started running afterwards

Fixtures:
  stack      (session)  the running stack: URLs, env(), kill(service), start(service)
  settings   (session)  memory_core.Settings for it
  tenant_id  (function) a fresh tenant id, so tests sharing the stack never see each other's data
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from memory_core.settings import Settings
from memstack.errors import MemstackError
from memstack.local.backend import CORE_SERVICES, SERVICES, Backend, Endpoints, get_backend, runs_anything


@dataclass
class Stack:
    backend: Backend
    endpoints: Endpoints
    home: Path | None

    def __getattr__(self, name: str):
        # redis_url, postgres_url, neo4j_uri, neo4j_user, neo4j_password, prometheus_url
        if name.startswith("_") or name == "endpoints":
            raise AttributeError(name)
        return getattr(self.endpoints, name)

    def env(self) -> dict[str, str]:
        return self.endpoints.env()

    def kill(self, service: str) -> None:
        self.backend.kill(service)

    def start(self, service: str) -> None:
        self.backend.start(service)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("memstack")
    group.addoption(
        "--backend", default=None, help="process | containers | external (default $MEMSTACK_BACKEND or process)"
    )
    group.addoption("--memstack-home", default=None, help="state directory of the process/containers backend")
    group.addoption("--keep-stack", action="store_true", help="leave a stack this session started running")


def start_stack(backend_name: str | None, home: Path | None) -> tuple[Stack, bool]:
    """The stack of `backend_name` up (data tier and metrics), and whether it was running before.
    MemstackError when it cannot be had (no engine, a missing binary)."""
    backend = get_backend(backend_name, home=home)
    already_running = runs_anything(backend)
    # Prometheus too where we run the stack ourselves: its smoke test and later metric tests need it.
    backend.up(CORE_SERVICES if backend.name == "external" else SERVICES)
    return Stack(backend=backend, endpoints=backend.endpoints(), home=getattr(backend, "home", None)), already_running


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Stack:
    home_opt = request.config.getoption("--memstack-home")
    home = Path(home_opt).resolve() if home_opt else None
    try:
        running, already_running = start_stack(request.config.getoption("--backend"), home)
    except MemstackError as exc:
        pytest.exit(f"memstack: {exc}", returncode=2)
    if not already_running and not request.config.getoption("--keep-stack"):
        request.addfinalizer(running.backend.down)
    return running


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return stack.endpoints.settings()


@pytest.fixture
def tenant_id() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"
