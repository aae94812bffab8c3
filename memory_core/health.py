"""Store health as every memory process reports it: one timed round trip per store, readiness
from those results, and the connection pools' usage.

The service's /ready and the worker's probe server both build on this module, so the two
answer the same way for the same store failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel, Field

from . import metrics
from .clients import MemoryClients

# What keeps working when exactly this store is down (the degraded-mode contract).
STILL_WORKS = {
    "neo4j": "working memory (Redis) and episodic writes (Postgres; the outbox replays them to the graph) "
    "keep working; remember() answers without graph expansion",
    "redis": "episodic, semantic, procedural and goal operations keep working; working memory does not",
    "postgres": "working memory keeps working; every durable write and recall fails",
}


class Readiness(BaseModel):
    """The body of /ready."""

    status: str = Field(description="ready | degraded (an optional store is down) | unavailable")
    checks: dict[str, str] = Field(description='Per store: "ok" or "down: <reason>"')
    detail: str | None = Field(None, description="The required stores that are down")
    still_working: str | None = Field(None, description="What keeps working while exactly one store is down")


async def _redis(clients: MemoryClients, timeout: float) -> None:
    await clients.redis.ping()


async def _postgres(clients: MemoryClients, timeout: float) -> None:
    async with clients.pg_pool.connection(timeout=timeout) as conn:
        await conn.execute("SELECT 1")


async def _neo4j(clients: MemoryClients, timeout: float) -> None:
    await clients.neo4j.verify_connectivity()


_PINGS: dict[str, Callable[[MemoryClients, float], Awaitable[None]]] = {
    "redis": _redis,
    "postgres": _postgres,
    "neo4j": _neo4j,
}


async def check_stores(clients: MemoryClients, timeout: float) -> dict[str, str]:
    """{store: "ok" | "down: <reason>"} for Redis, Postgres and Neo4j, checked concurrently.

    Each round trip is observed as backend operation `ping` of its store: Neo4j Community has no
    metrics endpoint, so these timings (with the requests' own) are what the dashboards show of it.
    """

    async def check(store: str) -> tuple[str, str]:
        started, outcome, result = time.perf_counter(), "error", "ok"
        try:
            await asyncio.wait_for(_PINGS[store](clients, timeout), timeout)
            outcome = "ok"
        except Exception as exc:  # a probe reports every failure as "down", whatever its kind
            reason = str(exc).splitlines()[0] if str(exc) else ""
            result = f"down: {type(exc).__name__}" + (f": {reason[:200]}" if reason else "")
        metrics.backend_operation_duration.labels(store, "ping", outcome).observe(time.perf_counter() - started)
        return store, result

    return dict(await asyncio.gather(*(check(store) for store in _PINGS)))


def readiness(checks: dict[str, str], required: Iterable[str]) -> tuple[int, dict[str, Any]]:
    """The /ready status code and body for these check results."""
    down = [name for name, result in checks.items() if result != "ok"]
    failing = [name for name in down if name in set(required)]
    body: dict[str, Any] = {"status": "unavailable" if failing else ("degraded" if down else "ready"), "checks": checks}
    if failing:
        body["detail"] = "not ready: " + ", ".join(f"{n} {checks[n]}" for n in failing)
    if len(down) == 1:
        body["still_working"] = STILL_WORKS[down[0]]
    return (503 if failing else 200), body


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
