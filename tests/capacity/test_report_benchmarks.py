"""The capacity report's benchmark tables show what the service-efficiency benchmark records:
percentiles, CPU per request by process, and the ratios to the floor app and to Redis."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from memstack.capacity.report import _cpu_table, benchmark_rows

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def efficiency(tmp_path, monkeypatch):
    """benchmarks/service_efficiency.py, recording into a results file of this test."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import latency
    import service_efficiency

    monkeypatch.setattr(latency, "RESULTS", tmp_path / "memory_core.json")
    yield service_efficiency
    sys.modules.pop("service_efficiency", None)


def _run(target: str, profile: str, cpu: dict[str, float], variant: str | None = None) -> dict:
    return {
        "target": target,
        "variant": variant,
        "profile": profile,
        "achieved_rps": 998.0,
        "cpu_us_per_request": cpu,
        "working": {"p50_ms": 1.0, "p95_ms": 3.0, "p99_ms": 7.0},
    }


def test_cpu_per_request_and_ratios_reach_the_report(efficiency, tmp_path):
    runs = [
        _run("floor", "working", {"floor": 250.0, "redis": 40.0, "postgres": None, "locust": 300.0}, "uvicorn"),
        _run("service", "working", {"service": 350.0, "redis": 50.0, "postgres": 1.0, "locust": 310.0}),
        _run("service", "mixed", {"service": 700.0, "redis": 70.0, "postgres": 200.0, "neo4j": 90.0}),
    ]
    summary = efficiency.ratios(runs, "uvicorn")
    assert summary["service_to_floor_working"] == pytest.approx(1.4)
    for run in runs:
        efficiency.record_run(run, summary)

    rows = {row["name"]: row for row in benchmark_rows(tmp_path / "memory_core.json")}
    service = rows["service working"]
    assert service["cpu_us_per_request"] == {"service": 350.0, "redis": 50.0, "postgres": 1.0, "locust": 310.0}
    assert service["ratio_to_floor"] == pytest.approx(1.4) and service["ratio_to_redis"] == pytest.approx(7.0)
    assert service["p99_ms"] == 7.0 and service["passed"] is False  # 1.4x is over the 1.3x target
    floor = rows["floor[uvicorn] working"]
    assert floor["cpu_us_per_request"] == {"floor": 250.0, "redis": 40.0, "locust": 300.0}
    assert floor["ratio_to_floor"] is None and floor["ratio_to_redis"] == pytest.approx(6.25)
    assert rows["service mixed"]["ratio_to_redis"] == pytest.approx(10.0)

    table = _cpu_table(list(rows.values()))
    # suite, benchmark, req/s, service, floor, redis, postgres, neo4j, locust, to floor, to Redis
    assert re.search(
        r"<td>service working</td><td>998</td><td>350</td><td>-</td><td>50</td><td>1</td><td>-</td>"
        r"<td>310</td><td>1.4</td><td>7</td>",
        table,
    ), table
    assert "<td>floor[uvicorn] working</td><td>998</td><td>-</td><td>250</td>" in table


def test_benchmarks_without_cpu_figures_make_no_cpu_table(tmp_path):
    results = tmp_path / "memory_core.json"
    results.write_text('{"working_memory": {"push_thought": {"p50_ms": 0.3, "p99_ms": 3.1}}}')
    [row] = benchmark_rows(results)
    assert row["cpu_us_per_request"] == {} and row["ratio_to_floor"] is None
    assert _cpu_table([row]) == ""


def test_benchmarks_write_where_the_report_reads_in_the_home_not_the_checkout(tmp_path):
    """Run from another directory with MEMSTACK_HOME set: the verdicts go to the home, where
    `capacity report` reads them by default, not to the checkout the code was loaded from."""
    import os
    import subprocess

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    script = (
        "import latency\n"
        "latency.record('writes', 'store_turn', {'p99_ms': 1.5}, target='p99 < 5 ms', passed=True)\n"
        "from memstack.capacity.report import benchmark_rows\n"
        "from memstack.load import benchmark_results_file\n"
        "print([row['name'] for row in benchmark_rows(benchmark_results_file())])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env={**os.environ, "MEMSTACK_HOME": str(home), "PYTHONPATH": str(BENCHMARKS)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "store_turn" in result.stdout.splitlines()[-1]
    assert (home / "benchmarks" / "memory_core.json").exists() and not any(cwd.iterdir())
