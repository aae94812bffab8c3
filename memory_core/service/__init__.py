"""The memory service: FastAPI over AgentMemory, with bearer-token tenancy, input limits,
Prometheus metrics and OpenTelemetry spans. `create_app()` builds it; `memstack serve` runs it."""

from .app import create_app

__all__ = ["create_app"]
