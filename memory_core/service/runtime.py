"""What the routes share per process: the clients, the token table, the tracer, the limits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from contextlib import nullcontext
from functools import lru_cache
from time import perf_counter
from typing import TypeVar

from fastapi import HTTPException
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Histogram

from .. import metrics
from ..clients import MemoryClients
from ..errors import (
    MemoryCoreError,
    SchemaNotMigrated,
    StoreUnavailable,
    from_store_exception,
)
from ..memory import AgentMemory
from .auth import TokenTable
from .config import ServiceSettings

T = TypeVar("T")


# Tracer providers that record nothing: OpenTelemetry's default before one is configured.
_NO_TRACING = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
# What a request that records no spans gets instead: skips a no-op span's context switch.
_NO_SPAN = nullcontext(trace.INVALID_SPAN)


def tracing(provider: trace.TracerProvider | None) -> bool:
    """Whether spans are recorded: a provider was handed in, or a global one was configured."""
    return provider is not None or not isinstance(trace.get_tracer_provider(), _NO_TRACING)


@lru_cache(maxsize=4096)
def _backend_duration(store: str, operation: str, outcome: str) -> Histogram:
    # One histogram child per label set, looked up once: `labels()` takes a lock on every call.
    return metrics.backend_operation_duration.labels(store, operation, outcome)


class Runtime:
    def __init__(
        self,
        clients: MemoryClients,
        tokens: TokenTable,
        tracer: trace.Tracer,
        settings: ServiceSettings,
        tracer_provider: trace.TracerProvider | None = None,
    ):
        self.clients = clients
        self.tokens = tokens
        self.tracer = tracer
        self.settings = settings
        self.tracer_provider = tracer_provider

    def memory(
        self, tenant_id: str, user_id: str, conversation_id: str | None = None, agent_id: str | None = None
    ) -> AgentMemory:
        return AgentMemory(tenant_id, user_id, conversation_id, agent_id=agent_id, clients=self.clients)

    async def run(self, store: str, operation: str, call: Awaitable[T]) -> T:
        """Await one memory operation: its span, its duration by store, and a store failure or a
        timeout as `StoreUnavailable` (memory_core's refusals pass through to their handlers)."""
        start = perf_counter()
        outcome = "error"
        spans = (
            self.tracer.start_as_current_span(
                f"{store} {operation}", kind=SpanKind.CLIENT, record_exception=False, set_status_on_exception=False
            )
            if tracing(self.tracer_provider)
            else _NO_SPAN
        )
        with spans as span:
            try:
                async with asyncio.timeout(self.settings.request_timeout_s):
                    result = await call
                outcome = "ok"
                return result
            except (StoreUnavailable, SchemaNotMigrated) as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            except (MemoryCoreError, HTTPException):
                outcome = "rejected"
                raise
            except Exception as exc:
                mapped = from_store_exception(exc, store, operation)
                if mapped is None:
                    raise
                if isinstance(mapped, (StoreUnavailable, SchemaNotMigrated)):
                    span.set_status(Status(StatusCode.ERROR, str(mapped)))
                else:
                    outcome = "rejected"
                raise mapped from exc
            finally:
                _backend_duration(store, operation, outcome).observe(perf_counter() - start)
                if span.is_recording():
                    span.set_attribute("db.system", store)
                    span.set_attribute("memory.operation", operation)
                    span.set_attribute("memory.outcome", outcome)


def pool_usage(clients: MemoryClients) -> Iterator[tuple[str, str, float]]:
    """(store, state, value) for the pool collector in memory_core.metrics; read at scrape time."""
    stats = clients.pg_pool.get_stats()
    size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
    yield "postgres", "in_use", size - idle
    yield "postgres", "idle", idle
    yield "postgres", "max", stats.get("pool_max", clients.pg_pool.max_size)
    yield "postgres", "waiting", stats.get("requests_waiting", 0)
    pool = clients.redis.connection_pool
    # redis-py keeps no public counters; these attributes have been stable since 4.x.
    in_use = len(getattr(pool, "_in_use_connections", ()))
    yield "redis", "in_use", in_use
    yield "redis", "idle", len(getattr(pool, "_available_connections", ()))
    yield "redis", "max", getattr(pool, "max_connections", 0) or 0
