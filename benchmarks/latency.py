"""Latency percentiles of the benchmarks, from pytest-benchmark's raw per-round timings,
written to memstack.load.benchmark_results_file() ($MEMSTACK_HOME/benchmarks/memory_core.json,
default ./.memstack/...) and printed. A benchmark with a stated target
records it and its verdict (`target`, `passed`); the session fails when one is missed (see
conftest.py)."""

from __future__ import annotations

import json
import os
import statistics
import time

from memstack.load import benchmark_results_file

RESULTS = benchmark_results_file()
# quick (default) or full: the dataset sizes of the benchmarks that load one.
SCALE = os.environ.get("BENCH_SCALE", "quick")
if SCALE not in ("quick", "full"):
    raise SystemExit(f"BENCH_SCALE must be quick or full, not {SCALE!r}")
# A round slower than this many times its floor's p50 counts as slow (`run_timed_against`).
SLOW_OVER_FLOOR_P50 = 5
# `run_timed_against` also gives the p99 ratio per block of consecutive rounds, this many blocks.
BLOCKS = 6
# Verdicts recorded in this session: (section, name, target, passed).
VERDICTS: list[tuple[str, str, str, bool]] = []


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summarize(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "mean_ms": statistics.fmean(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


def record(section: str, name: str, values: dict, target: str | None = None, passed: bool | None = None) -> None:
    """Write one benchmark's values, with its target and verdict when it states one."""
    values = {**values, "scale": SCALE}
    if target is not None:
        values.update(target=target, passed=bool(passed))
        VERDICTS.append((section, name, target, bool(passed)))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.setdefault(section, {})[name] = values
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(
        f"\n[{section}] {name}: "
        + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    )


def run_timed(benchmark, loop, make_coro, rounds: int, warmup: int = 100) -> dict[str, float]:
    """Benchmark one awaited call per round and return its latency percentiles."""
    benchmark.pedantic(lambda: loop.run_until_complete(make_coro()), rounds=rounds, iterations=1, warmup_rounds=warmup)
    return summarize(benchmark.stats.stats.data)


def run_timed_against(benchmark, loop, make_coro, make_floor, rounds: int, warmup: int = 100) -> tuple[dict, dict]:
    """`run_timed`, with a floor call timed just before each of its rounds (untimed by the
    benchmark: pytest-benchmark's setup hook): the percentiles of the call and of its floor.
    The two alternate, so both see the same moments of the machine's load; a floor timed once,
    before or after, meets other moments, and on a shared machine a p99 is mostly the other
    processes' doing."""
    floor: list[float] = []

    def time_floor() -> None:
        start = time.perf_counter()
        loop.run_until_complete(make_floor())
        floor.append(time.perf_counter() - start)

    benchmark.pedantic(
        lambda: loop.run_until_complete(make_coro()),
        setup=time_floor,
        rounds=rounds,
        iterations=1,
        warmup_rounds=warmup,
    )
    samples, floor = list(benchmark.stats.stats.data), floor[-rounds:]
    stats, floor_stats = summarize(samples), summarize(floor)
    # The share of rounds of each that took over SLOW_OVER_FLOOR_P50 times the floor's p50: on a
    # loaded machine, the rounds another process preempted. When both shares are near 1%, each
    # p99 falls on either side of that gap, and their ratio says which side, not what a call costs.
    slow = SLOW_OVER_FLOOR_P50 * floor_stats["p50_ms"] / 1000
    stats["slow_share"] = sum(s > slow for s in samples) / len(samples)
    floor_stats["slow_share"] = sum(s > slow for s in floor) / len(floor)
    stats["block_p99_over_floor"] = block_p99_ratios(samples, floor)
    return stats, floor_stats


def block_p99_ratios(samples: list[float], floor: list[float], blocks: int = BLOCKS) -> list[float]:
    """The p99 of the call over the p99 of its floor, per block of consecutive rounds (the two
    alternate, so a block's pair saw the same moments). Their median is the p99 ratio a few
    preempted rounds cannot decide: one block hit by them moves one ratio of six, where the
    whole run's p99 ratio lands on whichever side of the gap those rounds fall."""
    size = len(samples) // blocks
    return [
        round(percentile(samples[i * size : (i + 1) * size], 99) / percentile(floor[i * size : (i + 1) * size], 99), 3)
        for i in range(blocks)
    ]
