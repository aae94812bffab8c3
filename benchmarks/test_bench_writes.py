"""Write-path latency: `store_turn` (Postgres row + outbox in one statement, inline Neo4j
projection, working-memory push) and `learn_fact`. Informational: writes have no latency target.

    .venv/bin/python -m pytest benchmarks/test_bench_writes.py --benchmark-only -s
"""

from __future__ import annotations

import itertools
import uuid

from latency import record, run_timed

from memory_core import AgentMemory


def test_store_turn(benchmark, bench):
    loop, clients = bench
    memory = AgentMemory(f"bench-writes-{uuid.uuid4().hex[:8]}", "user", "conversation", clients=clients)
    counter = itertools.count()
    stats = run_timed(
        benchmark,
        loop,
        lambda: memory.store_turn("user", f"benchmark turn {next(counter)} about postgres"),
        rounds=300,
        warmup=20,
    )
    record("writes", "store_turn", stats)


def test_learn_fact(benchmark, bench):
    loop, clients = bench
    memory = AgentMemory(f"bench-writes-{uuid.uuid4().hex[:8]}", "user", "conversation", clients=clients)
    counter = itertools.count()
    stats = run_timed(
        benchmark, loop, lambda: memory.learn_fact(f"benchmark fact number {next(counter)}"), rounds=300, warmup=20
    )
    record("writes", "learn_fact", stats)
