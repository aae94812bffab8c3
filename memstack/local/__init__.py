"""The local stack: one data tier (Redis, Postgres + pgvector, Neo4j, optional Prometheus with
the store exporters, optional Jaeger) behind one interface, run as local processes, as
containers, or reached as external servers. The backends are registered here, so that
`backend` (the interface) never imports them."""

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
from memstack.local.containers import ContainersBackend
from memstack.local.external import ExternalBackend
from memstack.local.process import ProcessBackend
from memstack.local.state import recorded_backend

register_backend("process", ProcessBackend)
register_backend("containers", ContainersBackend)
register_backend("external", ExternalBackend, runs_services=False)
register_recorded_backend(recorded_backend)

__all__ = ["BACKENDS", "CORE_SERVICES", "SERVICES", "Backend", "Endpoints", "ServiceStatus", "get_backend"]
