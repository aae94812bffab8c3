"""Write-path latency, sequential, in process: `store_turn` (Postgres row + outbox in one
statement, the graph projection, working-memory push) and `learn_fact`, with each graph
projection (MEMSTACK_GRAPH_PROJECTION): inline in the call, in the background after it (its
work shares the event loop with the next call, as in the service), or left to the worker's
outbox replay. Target: p50 <= 3 ms where the projection leaves the call.

Beside each, interleaved with it round by round (so both see the same load), the floor of any
acknowledged write on this server: one INSERT of a turn row like store_turn's (its embedding
into the HNSW index included), committed by itself, with raw psycopg: one round trip and one WAL
flush (synchronous_commit stays on). `floor_p50_ms` and `p50_over_floor` are recorded with it.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid

import psycopg
import pytest
from latency import record, run_timed_against
from pgvector.psycopg import register_vector_async

from memory_core import AgentMemory, metrics
from memory_core.stores.graph import background_projector, set_projection
from memory_core.stores.sql import vector

PROJECTION = pytest.mark.parametrize("projection", ["inline", "background", "worker"])
P50_TARGET_MS = 3.0
ROUNDS, WARMUP = 300, 20
_FLOOR_INSERT = """
INSERT INTO conversation_logs (tenant_id, user_id, conversation_id, turn_index, turn_id, role, content, content_hash,
                               metadata, embedding)
VALUES (%s, 'user', 'conversation', %s, %s, 'user', %s, %s, '{}', %s)
"""


@pytest.fixture
def bench_clients(bench, projection):
    loop, clients = bench
    set_projection(clients, projection)
    try:
        yield loop, clients
    finally:
        loop.run_until_complete(background_projector(clients).flush())
        set_projection(clients, "inline")


def _lag_buckets(path: str) -> dict[float, float]:
    """Cumulative counts of the projection-lag histogram of `path`, by upper bound (s)."""
    return {
        float(s.labels["le"]): s.value
        for family in metrics.REGISTRY.collect()
        if family.name == metrics.GRAPH_PROJECTION_LAG
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels["path"] == path
    }


def _lag_ms(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """p50 and p99 of the rows projected in between, as the upper bounds of their buckets (ms)."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts[float("inf")]
    if not total:
        return {}
    return {
        f"graph_lag_{name}_ms": next(b for b, c in counts.items() if c >= q * total) * 1000
        for name, q in (("p50", 0.5), ("p99", 0.99))
    }


@pytest.fixture(scope="module")
def floor(bench):
    """One raw INSERT + COMMIT of a turn row per call, on its own connection."""
    loop, clients = bench
    tenant = f"bench-floor-{uuid.uuid4().hex[:8]}"

    async def connect() -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(clients.settings.postgres_url.get_secret_value(), autocommit=True)
        await register_vector_async(conn)
        await conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))  # row-level security
        return conn

    conn = loop.run_until_complete(connect())
    counter = itertools.count()

    async def insert() -> None:
        i = next(counter)
        content = f"benchmark turn {i} about postgres"
        (embedding,) = await clients.embedder.embed([content])  # as store_turn embeds its content
        content_hash = hashlib.sha256(content.encode()).hexdigest()
        await conn.execute(_FLOOR_INSERT, (tenant, i, uuid.uuid4(), content, content_hash, vector(embedding)))

    yield insert
    loop.run_until_complete(conn.close())


def _timed(benchmark, loop, clients, projection: str, call, floor) -> dict:
    """Latency percentiles of `call`, the floor's measured between its rounds (untimed by the
    benchmark), and how long its rows took to reach the graph."""
    before = _lag_buckets(projection)
    stats, floor_stats = run_timed_against(benchmark, loop, call, floor, ROUNDS, WARMUP)
    floor_p50 = floor_stats["p50_ms"]
    loop.run_until_complete(background_projector(clients).flush())
    return {
        **stats,
        "floor_p50_ms": floor_p50,
        "p50_over_floor": stats["p50_ms"] / floor_p50,
        **_lag_ms(before, _lag_buckets(projection)),
    }


def _record(name: str, projection: str, stats: dict) -> None:
    if projection == "inline":  # informational: a Neo4j transaction inside the call
        record("writes", name, stats)
    else:
        target = f"p50 <= {P50_TARGET_MS:g} ms"
        record("writes", f"{name}, {projection} projection", stats, target, stats["p50_ms"] <= P50_TARGET_MS)


@PROJECTION
def test_store_turn(benchmark, bench_clients, projection, floor):
    loop, clients = bench_clients
    memory = AgentMemory(f"bench-writes-{uuid.uuid4().hex[:8]}", "user", "conversation", clients=clients)
    counter = itertools.count()
    stats = _timed(
        benchmark,
        loop,
        clients,
        projection,
        lambda: memory.store_turn("user", f"benchmark turn {next(counter)} about postgres"),
        floor,
    )
    _record("store_turn", projection, stats)


@PROJECTION
def test_learn_fact(benchmark, bench_clients, projection, floor):
    loop, clients = bench_clients
    memory = AgentMemory(f"bench-writes-{uuid.uuid4().hex[:8]}", "user", "conversation", clients=clients)
    counter = itertools.count()
    stats = _timed(
        benchmark, loop, clients, projection, lambda: memory.learn_fact(f"benchmark fact number {next(counter)}"), floor
    )
    _record("learn_fact", projection, stats)
