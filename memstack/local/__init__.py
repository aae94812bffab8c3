"""The local stack: one data tier (Redis, Postgres + pgvector, Neo4j, optional Prometheus with
the store exporters, optional Jaeger) behind one interface, run as local processes, as
containers, or reached as external servers. The backends are registered here, so that
`backend` (the interface) never imports them; each backend's module is imported when one is
first made, since they bring the stores' drivers and memory_core, which the CLI's start
(`memstack --help`) does without."""

from importlib import import_module
from typing import Any

from memstack.local.backend import (
    BACKENDS,
    CORE_SERVICES,
    SERVICES,
    Backend,
    Endpoints,
    ServiceStatus,
    get_backend,
    register_backend,
    register_recorded_backend,
)
from memstack.local.state import recorded_backend


def _imported(module: str, cls: str) -> Any:
    def make(*args: Any, **kwargs: Any) -> Backend:
        return getattr(import_module(f"memstack.local.{module}"), cls)(*args, **kwargs)

    return make


register_backend("process", _imported("process", "ProcessBackend"))
register_backend("containers", _imported("containers", "ContainersBackend"))
register_backend("external", _imported("external", "ExternalBackend"), runs_services=False)
register_recorded_backend(recorded_backend)

__all__ = ["BACKENDS", "CORE_SERVICES", "SERVICES", "Backend", "Endpoints", "ServiceStatus", "get_backend"]
