"""Readiness: one cheap round trip per store, each under a short timeout, run concurrently.
Shared by the service's /ready and the worker's probe server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

from pydantic import BaseModel, Field

from ..clients import MemoryClients

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


async def _redis(clients: MemoryClients) -> None:
    await clients.redis.ping()


async def _postgres(clients: MemoryClients, timeout: float) -> None:
    async with clients.pg_pool.connection(timeout=timeout) as conn:
        await conn.execute("SELECT 1")


async def _neo4j(clients: MemoryClients) -> None:
    await clients.neo4j.verify_connectivity()


async def check_stores(clients: MemoryClients, timeout: float) -> dict[str, str]:
    """{store: "ok" | "down: <reason>"} for Redis, Postgres and Neo4j."""
    probes = {
        "redis": _redis(clients),
        "postgres": _postgres(clients, timeout),
        "neo4j": _neo4j(clients),
    }

    async def run(name: str, probe: Awaitable[None]) -> tuple[str, str]:
        try:
            await asyncio.wait_for(probe, timeout)
            return name, "ok"
        except Exception as exc:  # a probe reports every failure as "down", whatever its kind
            reason = str(exc).splitlines()[0] if str(exc) else ""
            return name, f"down: {type(exc).__name__}" + (f": {reason[:200]}" if reason else "")

    return dict(await asyncio.gather(*(run(n, p) for n, p in probes.items())))


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
