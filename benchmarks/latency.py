"""Latency percentiles of the benchmarks, from pytest-benchmark's raw per-round timings,
written to `.benchmarks/memory_core.json` (and printed)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / ".benchmarks" / "memory_core.json"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summarize(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {"n": len(ms), "mean_ms": statistics.fmean(ms), "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99), "max_ms": max(ms)}


def record(section: str, name: str, values: dict) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.setdefault(section, {})[name] = values
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"\n[{section}] {name}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in values.items()))


def run_timed(benchmark, loop, make_coro, rounds: int, warmup: int = 100) -> dict[str, float]:
    """Benchmark one awaited call per round and return its latency percentiles."""
    benchmark.pedantic(lambda: loop.run_until_complete(make_coro()), rounds=rounds, iterations=1,
                       warmup_rounds=warmup)
    return summarize(benchmark.stats.stats.data)
