"""Working-memory operations next to a raw redis-py GET/SET floor, measured in the same run.
Target: each operation's p99 <= 2x the floor's p99. The floor is measured once per module run
by the `floor` fixture, so that every comparison has one, whichever tests run.

    .venv/bin/python -m pytest benchmarks/test_bench_working_memory.py --benchmark-only -s
"""

from __future__ import annotations

import uuid

import pytest
from latency import record, run_timed, time_rounds

from memory_core import AgentMemory

ROUNDS = 3000
MAX_OVER_FLOOR = 2.0
FLOOR_VALUE = b'{"step":1}' + b"x" * 200


@pytest.fixture(scope="module")
def memory(bench):
    loop, clients = bench
    m = AgentMemory(f"bench-wm-{uuid.uuid4().hex[:8]}", "user", "conversation", clients=clients)
    loop.run_until_complete(m.set_working_context("plan", {"step": 1, "notes": "x" * 200}))
    yield m
    loop.run_until_complete(m.close(clear_working=True))


@pytest.fixture(scope="module")
def floor_key(bench):
    loop, clients = bench
    key = f"bench:floor:{uuid.uuid4().hex}"
    loop.run_until_complete(clients.redis.set(key, FLOOR_VALUE, px=600_000))
    yield key
    loop.run_until_complete(clients.redis.delete(key))


@pytest.fixture(scope="module")
def floor(bench, floor_key) -> dict[str, float]:
    """p99 (ms) of a raw redis-py GET and SET on the same connection pool."""
    loop, clients = bench
    return {
        "get": time_rounds(loop, lambda: clients.redis.get(floor_key), ROUNDS)["p99_ms"],
        "set": time_rounds(loop, lambda: clients.redis.set(floor_key, FLOOR_VALUE, px=600_000), ROUNDS)["p99_ms"],
    }


def test_floor_raw_get(benchmark, bench, floor_key):
    loop, clients = bench
    record("working_memory", "floor_raw_get", run_timed(benchmark, loop, lambda: clients.redis.get(floor_key), ROUNDS))


def test_floor_raw_set(benchmark, bench, floor_key):
    loop, clients = bench
    record(
        "working_memory",
        "floor_raw_set",
        run_timed(benchmark, loop, lambda: clients.redis.set(floor_key, FLOOR_VALUE, px=600_000), ROUNDS),
    )


def _compare(name: str, stats: dict, floor_p99_ms: float) -> None:
    stats = {**stats, "floor_p99_ms": floor_p99_ms, "p99_over_floor": stats["p99_ms"] / floor_p99_ms}
    record(
        "working_memory",
        name,
        stats,
        target=f"p99 <= {MAX_OVER_FLOOR:g}x the raw redis-py p99",
        passed=stats["p99_over_floor"] <= MAX_OVER_FLOOR,
    )


def test_get_context_value(benchmark, bench, memory, floor):
    loop, _ = bench
    _compare(
        "get_working_context_key",
        run_timed(benchmark, loop, lambda: memory.get_working_context("plan"), ROUNDS),
        floor["get"],
    )


def test_set_context_value(benchmark, bench, memory, floor):
    loop, _ = bench
    value = {"step": 2, "notes": "y" * 200}
    _compare(
        "set_working_context",
        run_timed(benchmark, loop, lambda: memory.set_working_context("plan", value), ROUNDS),
        floor["set"],
    )


def test_push_thought(benchmark, bench, memory, floor):
    loop, _ = bench
    _compare(
        "push_thought",
        run_timed(benchmark, loop, lambda: memory.push_thought("considering the next step"), ROUNDS),
        floor["set"],
    )


def test_add_turn_to_working_memory(benchmark, bench, memory, floor):
    loop, _ = bench
    w = loop.run_until_complete(memory.working())
    turn = {
        "id": str(uuid.uuid4()),
        "index": 1,
        "role": "user",
        "content": "hello " * 30,
        "timestamp": "2026-01-01T00:00:00Z",
    }
    _compare("working_add_turn", run_timed(benchmark, loop, lambda: w.add_turn(turn), ROUNDS), floor["set"])


def test_snapshot(benchmark, bench, memory, floor):
    loop, _ = bench
    _compare(
        "get_working_context_all",
        run_timed(benchmark, loop, lambda: memory.get_working_context(), ROUNDS),
        floor["get"],
    )
