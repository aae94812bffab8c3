"""The local stack: one data tier (Redis, Postgres + pgvector, Neo4j, optional Prometheus)
behind one interface, run as local processes, as containers, or reached as external servers."""
from memstack.local.backend import BACKENDS, CORE_SERVICES, SERVICES, Backend, Endpoints, ServiceStatus, get_backend

__all__ = ["BACKENDS", "CORE_SERVICES", "SERVICES", "Backend", "Endpoints", "ServiceStatus", "get_backend"]
