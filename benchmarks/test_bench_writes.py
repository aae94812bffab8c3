"""Write-path latency: `store_turn` (Postgres row + outbox in one statement, inline Neo4j
projection, working-memory push) and `learn_fact`, with the graph projection inline and left to
the worker's outbox replay (MEMSTACK_GRAPH_PROJECTION=worker). Informational: writes have no
latency target.

    .venv/bin/python -m pytest benchmarks/test_bench_writes.py --benchmark-only -s
"""

from __future__ import annotations

import itertools
import uuid

import pytest
from latency import record, run_timed

from memory_core import AgentMemory

PROJECTION = pytest.mark.parametrize("projection", ["inline", "worker"])


@pytest.fixture
def bench_clients(bench, projection):
    loop, clients = bench
    clients.project_inline = projection == "inline"
    try:
        yield loop, clients
    finally:
        clients.project_inline = True


@PROJECTION
def test_store_turn(benchmark, bench_clients, projection):
    loop, clients = bench_clients
    memory = AgentMemory(f"bench-writes-{uuid.uuid4().hex[:8]}", "user", "conversation", clients=clients)
    counter = itertools.count()
    stats = run_timed(
        benchmark,
        loop,
        lambda: memory.store_turn("user", f"benchmark turn {next(counter)} about postgres"),
        rounds=300,
        warmup=20,
    )
    record("writes", "store_turn" if projection == "inline" else "store_turn, worker projection", stats)


@PROJECTION
def test_learn_fact(benchmark, bench_clients, projection):
    loop, clients = bench_clients
    memory = AgentMemory(f"bench-writes-{uuid.uuid4().hex[:8]}", "user", "conversation", clients=clients)
    counter = itertools.count()
    stats = run_timed(
        benchmark, loop, lambda: memory.learn_fact(f"benchmark fact number {next(counter)}"), rounds=300, warmup=20
    )
    record("writes", "learn_fact" if projection == "inline" else "learn_fact, worker projection", stats)
