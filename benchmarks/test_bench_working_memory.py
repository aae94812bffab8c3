"""Working-memory operations next to a raw redis-py GET/SET floor, measured in the same run.
Target: each operation within 2x the floor: its p50, and the median of its p99s over six blocks
of consecutive rounds, each over the floor's in the same block. The floor is timed in
alternation with the operation, one floor call before each of its rounds (`run_timed_against`),
so that both come from the same moments of the machine's load; the floor tests record it alone
too. The whole run's p99 ratio is recorded beside them: on a shared machine about 1% of rounds
are preempted, and that p99 then lands on either side of the gap (0.7-2.55x for one operation
within an hour), which says where those rounds fell, not what a call costs.

    .venv/bin/python -m pytest benchmarks/test_bench_working_memory.py --benchmark-only -s
"""

from __future__ import annotations

import statistics
import uuid

import pytest
from latency import BLOCKS, record, run_timed, run_timed_against

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


def test_floor_raw_get(benchmark, bench, floor_key):
    loop, clients = bench
    record("working_memory", "floor_raw_get", run_timed(benchmark, loop, _get(clients, floor_key), ROUNDS))


def test_floor_raw_set(benchmark, bench, floor_key):
    loop, clients = bench
    record(
        "working_memory",
        "floor_raw_set",
        run_timed(benchmark, loop, _set(clients, floor_key), ROUNDS),
    )


def _compare(benchmark, loop, name: str, make_coro, make_floor) -> None:
    stats, floor = run_timed_against(benchmark, loop, make_coro, make_floor, ROUNDS)
    stats = {
        **stats,
        "floor_p50_ms": floor["p50_ms"],
        "floor_p99_ms": floor["p99_ms"],
        # The p50 ratio is the one a noisy machine cannot move much: the cost of the operation.
        "p50_over_floor": stats["p50_ms"] / floor["p50_ms"],
        "p99_over_floor": stats["p99_ms"] / floor["p99_ms"],
        "median_block_p99_over_floor": statistics.median(stats["block_p99_over_floor"]),
        "floor_slow_share": floor["slow_share"],
    }
    record(
        "working_memory",
        name,
        stats,
        target=f"p50 and the median of {BLOCKS} block p99s <= {MAX_OVER_FLOOR:g}x the raw redis-py floor's",
        passed=stats["p50_over_floor"] <= MAX_OVER_FLOOR and stats["median_block_p99_over_floor"] <= MAX_OVER_FLOOR,
    )


def _get(clients, key):
    return lambda: clients.redis.get(key)


def _set(clients, key):
    return lambda: clients.redis.set(key, FLOOR_VALUE, px=600_000)


def test_get_context_value(benchmark, bench, memory, floor_key):
    loop, clients = bench
    _compare(
        benchmark,
        loop,
        "get_working_context_key",
        lambda: memory.get_working_context("plan"),
        _get(clients, floor_key),
    )


def test_set_context_value(benchmark, bench, memory, floor_key):
    loop, clients = bench
    value = {"step": 2, "notes": "y" * 200}
    _compare(
        benchmark,
        loop,
        "set_working_context",
        lambda: memory.set_working_context("plan", value),
        _set(clients, floor_key),
    )


def test_push_thought(benchmark, bench, memory, floor_key):
    loop, clients = bench
    _compare(
        benchmark,
        loop,
        "push_thought",
        lambda: memory.push_thought("considering the next step"),
        _set(clients, floor_key),
    )


def test_add_turn_to_working_memory(benchmark, bench, memory, floor_key):
    loop, clients = bench
    w = loop.run_until_complete(memory.working())
    turn = {
        "id": str(uuid.uuid4()),
        "index": 1,
        "role": "user",
        "content": "hello " * 30,
        "timestamp": "2026-01-01T00:00:00Z",
    }
    _compare(benchmark, loop, "working_add_turn", lambda: w.add_turn(turn), _set(clients, floor_key))


def test_snapshot(benchmark, bench, memory, floor_key):
    loop, clients = bench
    _compare(
        benchmark,
        loop,
        "get_working_context_all",
        lambda: memory.get_working_context(),
        _get(clients, floor_key),
    )
