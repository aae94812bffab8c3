"""`memstack bench service`: bad options end in one line and exit 2 before anything starts; the
ratios of a run are the service's CPU per request over the reference floor variant's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from memstack import bench

sys.path.insert(0, str(bench.BENCHMARKS))
import service_efficiency

MEMSTACK = str(Path(sys.executable).parent / "memstack")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--floor", "nginx"), "--floor 'nginx'"),
        (("--duration", "soon"), "--duration"),
        (("--pairs", "0"), "--pairs"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], needle: str):
    result = subprocess.run(
        [MEMSTACK, "bench", "service", *args, "--results", str(tmp_path / "r")],
        env={**os.environ, "MEMSTACK_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()  # refused before anything ran


def _run(target: str, profile: str, cpu: dict[str, float], variant: str | None = None) -> dict:
    return {"target": target, "variant": variant, "profile": profile, "cpu_us_per_request": cpu}


def test_ratios_are_to_the_reference_floor_and_to_redis():
    runs = [
        _run("floor", "working", {"floor": 200.0, "redis": 20.0}, "uvicorn"),
        _run("floor", "working", {"floor": 300.0, "redis": 25.0}, "h11"),
        _run("service", "working", {"service": 260.0, "redis": 26.0}),
        _run("service", "mixed", {"service": 500.0, "redis": 25.0}),
    ]
    ratios = service_efficiency.ratios(runs, "uvicorn")
    assert ratios["service_to_floor_working"] == pytest.approx(1.3)
    assert ratios["floor_h11_to_floor_uvicorn"] == pytest.approx(1.5)
    assert ratios["service_to_redis_working"] == pytest.approx(10.0)
    assert ratios["service_to_redis_mixed"] == pytest.approx(20.0)
    assert ratios["floor[uvicorn]_to_redis_working"] == pytest.approx(10.0)
    # Against another reference the same runs give another ratio.
    assert service_efficiency.ratios(runs, "h11")["service_to_floor_working"] == pytest.approx(260 / 300)


@pytest.mark.parametrize(
    ("achieved_rps", "lag_p99_ms", "behind"),
    [(1000.0, 4.0, False), (975.0, 60.0, False), (946.0, 4.0, True), (1002.0, 943.0, True), (None, None, True)],
)
def test_a_run_behind_its_offered_rate_is_saturated(achieved_rps, lag_p99_ms, behind):
    assert service_efficiency.saturated(1000.0, achieved_rps, lag_p99_ms) is behind


def test_the_run_removes_its_own_keys_and_no_others(stack):
    """The run's working-memory keys (its prefix) are removed after it; keys of another prefix,
    or of a prefix that merely starts like it, stay."""
    import redis

    prefix = service_efficiency.run_prefix()
    client = redis.Redis.from_url(stack.redis_url)
    theirs = [f"mc:{{t|u|c}}:ctx-{prefix}", f"{prefix}x:floor:t:/p", f"other-{prefix}:a"]
    ours = [f"{prefix}:{{t|u|c}}:ctx", f"{prefix}:floor:t:/v1/p"] + [f"{prefix}:k{i}" for i in range(2500)]
    try:
        for key in theirs + ours:
            client.set(key, b"1")
        found = service_efficiency.keys_under(stack.redis_url, prefix)
        assert found["prefix_keys"] == len(ours) and found["database_keys"] >= len(ours) + len(theirs)
        assert service_efficiency.keys_under(stack.redis_url, prefix, remove=True)["prefix_keys"] == len(ours)
        assert client.exists(*ours) == 0
        assert client.exists(*theirs) == len(theirs)
        assert service_efficiency.keys_under(stack.redis_url, prefix)["prefix_keys"] == 0
    finally:
        client.delete(*theirs)
        client.close()


def test_with_pairs_the_ratio_is_the_median_of_each_pairs_own():
    # The host's speed drifts between pairs (the floor's CPU per request here: 150, 200, 160 us),
    # so each service run is compared with the floor run beside it, not with one floor run.
    cpu = [(150.0, 165.0), (200.0, 230.0), (160.0, 240.0)]
    runs = []
    for pair, (floor, service) in enumerate(cpu):
        runs.append({**_run("floor", "working", {"floor": floor, "redis": 20.0}, "uvicorn"), "pair": pair})
        runs.append({**_run("service", "working", {"service": service, "redis": 20.0}), "pair": pair})
    runs.append(_run("service", "mixed", {"service": 400.0, "redis": 20.0}))
    ratios = service_efficiency.ratios(runs, "uvicorn")
    assert [ratios[f"service_to_floor_working_pair_{i}"] for i in (1, 2, 3)] == pytest.approx([1.1, 1.15, 1.5])
    assert ratios["service_to_floor_working"] == pytest.approx(1.15)
