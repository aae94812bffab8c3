"""The one interface to a data tier, whichever way it runs: local processes, containers, or
servers that already exist. The CLI and the test fixtures both go through it.

This module imports none of the backends: each is registered with `register_backend` by the
package (`memstack/local/__init__.py`), so the interface sits below its implementations."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from memstack.errors import MemstackError

if TYPE_CHECKING:
    from memory_core.settings import Settings

BACKEND_ENV = "MEMSTACK_BACKEND"
# OpenTelemetry's own variable names (the SDK reads them; memory_core.telemetry checks them).
OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_PROTOCOL_ENV = "OTEL_EXPORTER_OTLP_PROTOCOL"
BACKENDS = ("process", "containers", "external")
CORE_SERVICES = ("redis", "postgres", "neo4j")
# What `--with` adds. Prometheus brings the store exporters along (COMPANIONS).
OPTIONAL_SERVICES = ("prometheus", "jaeger")
COMPANIONS = {"prometheus": ("redis-exporter", "postgres-exporter")}
# The data tier with its metrics: what the test fixture brings up.
SERVICES = CORE_SERVICES + COMPANIONS["prometheus"] + ("prometheus",)
# Every service a stack may run, in start order (stopped in reverse).
ALL_SERVICES = SERVICES + ("jaeger",)


def with_companions(services: tuple[str, ...], *, local_processes: bool = True) -> tuple[str, ...]:
    """`services` in start order, each optional one preceded by the companions it brings. The
    companions run as local processes only: other runtimes leave them out."""
    companions = {c for cs in COMPANIONS.values() for c in cs}
    out: list[str] = []
    for name in services:
        if local_processes:
            out += [c for c in COMPANIONS.get(name, ()) if c not in out]
        if name not in out and (local_processes or name not in companions):
            out.append(name)
    return tuple(out)


@dataclass(frozen=True)
class Endpoints:
    """How to reach a running stack. Field names are `memory_core.Settings` field names."""

    redis_url: str
    postgres_url: str
    neo4j_uri: str
    neo4j_user: str
    neo4j_password: str
    prometheus_url: str | None = None
    # Where the service and the worker send traces (OTLP over HTTP), when Jaeger runs.
    otlp_endpoint: str | None = None

    def env(self) -> dict[str, str]:
        """The environment variables that configure memory_core, named as Settings reads them,
        plus OpenTelemetry's standard exporter variables when there is somewhere to send traces."""
        # Imported here: memory_core brings its store drivers, which the CLI's start (--help) does without.
        from memory_core.settings import Settings

        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and f.name != "otlp_endpoint":
                out[Settings.model_fields[f.name].validation_alias] = value
        if self.otlp_endpoint:
            out |= {OTLP_ENDPOINT_ENV: self.otlp_endpoint, OTLP_PROTOCOL_ENV: "http/protobuf"}
        return out

    def settings(self) -> Settings:
        from memory_core.settings import Settings

        return Settings(**self.env())


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    healthy: bool
    url: str
    pid: int | None = None
    detail: str = ""


class Backend(Protocol):
    name: str

    def up(self, services: tuple[str, ...] = CORE_SERVICES) -> None:
        """Start what is not running and wait until every service answers. Idempotent."""

    def down(self) -> None:
        """Stop every service. Data is kept."""

    def endpoints(self) -> Endpoints:
        """Endpoints of the running stack; MemstackError if none runs."""

    def status(self) -> list[ServiceStatus]:
        """One row per known service; MemstackError if nothing runs."""

    def kill(self, service: str) -> None:
        """SIGKILL one service, as a crash would."""

    def start(self, service: str) -> bool:
        """Restart one service on its existing data and wait until it answers; False when it was
        already running (left as it is). A suspended one (a paused container) is resumed: True."""


def check_service(service: str, allowed: tuple[str, ...] = ALL_SERVICES) -> str:
    if service not in allowed:
        raise MemstackError(f"unknown service {service!r}: choose one of {', '.join(allowed)}")
    return service


@dataclass(frozen=True)
class _Registered:
    factory: Callable[..., Backend]
    runs_services: bool  # False: it only connects, so home, appendfsync and ports do not apply


_BACKENDS: dict[str, _Registered] = {}


def register_backend(name: str, factory: Callable[..., Backend], *, runs_services: bool = True) -> None:
    _BACKENDS[name] = _Registered(factory, runs_services)


def _no_recorded_backend(home: Path | None) -> str | None:
    return None


# The backend whose stack a home holds, as its state file records it. Registered by the package
# (`memstack.local`), which may import the state module: this interface imports no part of it.
_recorded_backend: Callable[[Path | None], str | None] = _no_recorded_backend


def register_recorded_backend(lookup: Callable[[Path | None], str | None]) -> None:
    global _recorded_backend
    _recorded_backend = lookup


def get_backend(
    name: str | None = None,
    *,
    home: Path | None = None,
    appendfsync: str | None = None,
    ports: dict[str, int] | None = None,
) -> Backend:
    """The backend named by `name`, else $MEMSTACK_BACKEND, else the one whose stack the home
    holds, else `process`."""
    chosen = name or os.environ.get(BACKEND_ENV) or _recorded_backend(home) or "process"
    entry = _BACKENDS.get(chosen)
    if entry is None:
        raise MemstackError(f"unknown backend {chosen!r}: choose one of {', '.join(BACKENDS)}")
    if not entry.runs_services:
        if appendfsync or ports:
            raise MemstackError(f"--appendfsync and --port do not apply to the {chosen} backend: it only connects")
        return entry.factory()
    return entry.factory(home, appendfsync=appendfsync, ports=ports)


def runs_anything(backend: Backend) -> bool:
    """Whether any service of `backend`'s stack runs: a stack of which anything runs is
    someone's to keep, so a command or a test session that brings it up leaves all of it running
    afterwards. An external backend's servers count as running; a stack whose status cannot be
    had (no engine) runs nothing."""
    try:
        return any(row.running for row in backend.status())
    except MemstackError:
        return False


@contextmanager
def stack_for_run(backend: Backend, services: tuple[str, ...], say: Callable[[str], None]) -> Iterator[None]:
    """`services` of `backend` up for the run of one command, and the stack stopped again after
    it when that command started it (`runs_anything`). `say` gets the one line that tells the
    operator the stack was stopped."""
    started = not runs_anything(backend)
    try:
        backend.up(services)
        yield
    finally:
        if started:
            backend.down()
            where = getattr(backend, "home", None)
            say(f"started the {backend.name} stack{f' in {where}' if where else ''} for this run; stopped it")
