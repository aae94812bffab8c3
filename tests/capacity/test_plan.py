"""The plan's arithmetic on given measurements: pods, requests, the storage projection and the
date a volume fills, against numbers worked out by hand."""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import pytest

from memstack.capacity import plan as planner
from memstack.errors import MemstackError

ROOT = Path(__file__).resolve().parents[2]


def _measurement(throughput=400.0, cpu=0.0005, rss=100 * 2**20, knee_reached=True):
    step = {
        "step": 3,
        "passed": True,
        "achieved_rps": throughput,
        "service_rss_bytes": rss,
        "cpu_s_per_request": {"service": cpu, "redis": 0.0001, "postgres": 0.0002, "neo4j": 0.0},
    }
    return {
        "profiles": {
            "mixed": {
                "throughput_at_slo_rps": throughput,
                "throughput_at_slo_source": "step 3",
                "knee_reached": knee_reached,
                "cpu_s_per_request": step["cpu_s_per_request"],
                "step_results": [step],
            }
        }
    }


def _storage(pg_turn=1000.0, dim=384):
    def rows(bytes_per_row):
        return {"bytes": 0, "rows": 10, "bytes_per_row": bytes_per_row}

    return {
        "embedding_dim": dim,
        "working_max_turns": 50,
        "source": "by hand",
        "inserted": {"turns": 100, "facts": 100},
        "redis": {
            "ctx": {"keys": 1, "items": 4, "bytes_per_key": 1000.0, "bytes_per_item": 250.0},
            "turns": {"keys": 1, "items": 50, "bytes_per_key": 10000.0, "bytes_per_item": 200.0},
            "thoughts": {"keys": 1, "items": 10, "bytes_per_key": 2000.0, "bytes_per_item": 200.0},
        },
        "postgres": {
            "conversation_logs": rows(pg_turn),
            "memory_timeline": rows(2000.0),
            "conversation_logs_embedding": rows(300.0),
            "memory_timeline_embedding": rows(300.0),
        },
        "neo4j": {"nodes": 100, "relationships": 150, "bytes_per_node": 100.0, "bytes_per_relationship": 60.0},
    }


def _local():
    return planner.read_stack(ROOT / "Pulumi.local.yaml")


def test_pods_hpa_and_requests():
    inputs = planner.PlanInputs(peak_rps=1000, target_utilisation=0.5, burst=2.0)
    result = planner.plan(inputs, _measurement(), None, _local())
    figures = {f["name"]: f["value"] for f in result["figures"]}
    # 1000 / (400 x 0.5) = 5 pods, + 2; at twice the peak 10 + 2.
    assert figures["pods (N+2)"] == 7 and figures["HPA maxReplicas"] == 12
    # 0.5 ms x 400 req/s = 0.2 cores; 100 Mi x 1.25 = 125 Mi, rounded up to 128 Mi.
    assert figures["CPU request per pod"] == "200m" and figures["memory request per pod"] == "128Mi"
    assert result["proposed"]["memoryService.autoscaling.cpuUtilization"] == 50
    assert figures["postgres CPU at the peak"] == pytest.approx(0.2)


def test_storage_projection_and_the_day_a_volume_fills():
    inputs = planner.PlanInputs(
        peak_rps=100,
        users=1000,
        turns_per_user_day=10,
        facts_per_user_day=0,
        retention_days=100,
        growth_pct_month=0,
        active_share=0.5,
        start=date(2027, 1, 1),
    )
    result = planner.plan(inputs, _measurement(), _storage(pg_turn=1000.0), _local())
    pg = result["stores"]["postgres"]
    # 10,000 turns a day of 1,000 bytes: day d holds d + 1 days of them, until retention caps it at 100.
    assert pg["disk_day0"] == pytest.approx(10_000 * 1000)
    assert pg["disk_day90"] == pytest.approx(91 * 10_000 * 1000)
    assert pg["disk_day365"] == pytest.approx(100 * 10_000 * 1000)
    assert pg["ram_day0"] == pytest.approx(10_000 * 300)  # the HNSW index per turn
    # Retention holds it at 1e9 bytes, below the 1 Gi volume: it never fills.
    assert pg["volume"] == 2**30 and pg["volume_runs_out"] == "not within 10 years"
    redis = result["stores"]["redis"]
    # 500 active users x (1000 + 50 x 200 + 2000) bytes; disk twice that.
    assert redis["ram_day0"] == pytest.approx(500 * 13_000) and redis["disk_day0"] == pytest.approx(2 * 500 * 13_000)
    # Neo4j: 100 nodes x 100 bytes + 150 relationships x 60 bytes over 200 items: 95 bytes a turn.
    assert result["stores"]["neo4j"]["disk_day0"] == pytest.approx(10_000 * 95)


def test_a_volume_fills_on_the_day_its_size_is_passed():
    inputs = planner.PlanInputs(
        peak_rps=100,
        users=1000,
        turns_per_user_day=10,
        facts_per_user_day=0,
        retention_days=1000,
        growth_pct_month=0,
        start=date(2027, 1, 1),
    )
    result = planner.plan(inputs, _measurement(), _storage(pg_turn=1000.0), _local())
    # 1e7 bytes a day: day d holds (d + 1) x 1e7, first above 2**30 on d = 107.
    day = math.floor(2**30 / 1e7)
    assert day == 107
    assert result["stores"]["postgres"]["volume_runs_out"] == (date(2027, 1, 1) + timedelta(days=day)).isoformat()
    # Sized for day 365 (366 days of turns) with 1.3 headroom: 4.43 GiB, rounded up.
    assert result["proposed"]["postgres.storageSize"] == "5Gi"


def test_a_larger_embedding_adds_four_bytes_a_dimension_to_row_and_index():
    values, _ = planner.per_item_bytes(_storage(pg_turn=1000.0, dim=384), 768)
    assert values["pg_turn"] == 1000 + 2 * 4 * 384 and values["pg_turn_hnsw"] == 300 + 4 * 384


def test_no_passing_step_and_bad_inputs_are_refused():
    measurement = _measurement()
    measurement["profiles"]["mixed"]["throughput_at_slo_rps"] = None
    with pytest.raises(MemstackError, match="no step of the mixed profile held the SLO"):
        planner.plan(planner.PlanInputs(peak_rps=100), measurement, None, _local())
    with pytest.raises(MemstackError, match="no 'working' profile"):
        planner.plan(planner.PlanInputs(peak_rps=100, profile="working"), _measurement(), None, _local())
    with pytest.raises(MemstackError, match="--target-utilisation"):
        planner.PlanInputs(peak_rps=100, target_utilisation=1.5).check()


def test_a_section_the_plan_uses_is_checked_by_the_stack_model(tmp_path):
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text("config:\n  memstack:redis:\n    maxMemory: lots\n")
    with pytest.raises(MemstackError, match=r"memstack:redis\.maxMemory: .*not a Kubernetes quantity"):
        planner.plan(planner.PlanInputs(peak_rps=100), _measurement(), None, planner.read_stack(path))
    text = path.read_text()
    with pytest.raises(MemstackError):
        planner.write_stack(path, {"redis.storageSize": "2Gi"})
    assert path.read_text() == text


def test_plan_inputs_and_stack_names_are_checked():
    with pytest.raises(MemstackError, match="--peak-rps must be above 0"):
        planner.PlanInputs(peak_rps=-5).check()
    with pytest.raises(MemstackError, match=r"unknown stack 'nowhere': no Pulumi\.nowhere\.yaml"):
        planner.stack_file("nowhere")


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"peak_rps": math.inf}, "--peak-rps must be a finite number, not inf"),
        ({"peak_rps": 100, "active_share": math.nan}, "--active-share must be a finite number, not nan"),
        ({"peak_rps": 100, "burst": 0.5}, "--burst must be at least 1, got 0.5"),
        ({"peak_rps": 100, "users": -10}, "--users must be above 0, got -10"),
        ({"peak_rps": 100, "retention_days": 0}, "--retention-days must be above 0, got 0"),
        ({"peak_rps": 100, "growth_pct_month": -100}, "--growth-pct-month must be above -100, got -100"),
    ],
)
def test_each_bad_plan_input_is_named_alone(inputs, message):
    with pytest.raises(MemstackError) as refused:
        planner.PlanInputs(**inputs).check()
    assert str(refused.value) == message


def test_a_plan_beyond_the_stack_pod_quota_is_refused(tmp_path):
    path = tmp_path / "Pulumi.small.yaml"
    path.write_text("config:\n  memstack:quota:\n    pods: 12\n")
    document = planner.read_stack(path)
    planner.plan(planner.PlanInputs(peak_rps=1000), _measurement(), None, document)
    with pytest.raises(MemstackError, match=r"needs \d+ memory-service pods .* pod quota \(memstack:quota.pods = 12\)"):
        planner.plan(planner.PlanInputs(peak_rps=1e12), _measurement(), None, document)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod", "local"])
def test_every_stack_file_reads_and_writes_back_unchanged(stack):
    path = ROOT / f"Pulumi.{stack}.yaml"
    text = path.read_text()
    assert planner.dump(planner.read_stack(path), text) == text


def test_both_sequence_layouts_round_trip():
    for text in (
        "config:\n  memstack:x:\n    items:\n      - {a: 1}\n      - b\n",
        "config:\n  memstack:x:\n    items:\n    - {a: 1}\n    - b\n",
    ):
        document = planner._yaml(planner.sequence_offset(text)).load(text)
        assert planner.dump(document, text) == text


@pytest.mark.parametrize(
    "args, option",
    [
        (["--growth-pct-month", "1e6"], "--growth-pct-month must be at most 1000"),
        (["--turns-per-user-day", "1e300"], "--turns-per-user-day must be from 0 to 86,400"),
        (["--facts-per-user-day", "1e308"], "--facts-per-user-day must be from 0 to 86,400"),
        (["--embedding-dim", "100000"], "--embedding-dim must be at most 2,000 (pgvector's HNSW index limit"),
        (["--users", "1" + "0" * 38], "--users must be at most 10,000,000,000"),
        (["--retention-days", "99999999"], "--retention-days must be at most 36,500"),
        # Within every bound, twice this peak is no longer a float: the guard names the inputs.
        (["--peak-rps", "1e308"], "the plan overflows at --peak-rps 1e+308"),
    ],
)
def test_plan_inputs_out_of_range_are_one_line_naming_the_option(tmp_path, args, option):
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "measure.json").write_text(json.dumps(_measurement()))
    command = [str(Path(sys.executable).parent / "memstack"), "capacity", "plan", "--peak-rps", "100"]
    result = subprocess.run(
        [*command, "--stack", "local", "--measurement", str(tmp_path), *args],
        env={**os.environ, "MEMSTACK_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memstack: ") and option in lines[0], result.stderr


def test_a_measurement_that_never_reached_the_knee_is_marked_a_lower_bound():
    reached = planner.plan(planner.PlanInputs(peak_rps=100), _measurement(), None, _local())
    assert reached["knee_reached"] and not reached["per_pod_lower_bound"]
    short = planner.plan(planner.PlanInputs(peak_rps=100), _measurement(knee_reached=False), None, _local())
    assert short["per_pod_lower_bound"] and not short["knee_reached"]
    per_pod = next(f for f in short["figures"] if f["name"] == "per-pod throughput at the SLO")
    assert "LOWER BOUND" in per_pod["source"]


def test_plan_warns_of_a_lower_bound_and_writes_it_only_when_allowed(tmp_path):
    import json
    import os
    import shutil
    import subprocess
    import sys

    def run(*args):
        return subprocess.run(
            [str(Path(sys.executable).parent / "memstack"), *args],
            env={**os.environ, "MEMSTACK_HOME": str(tmp_path / "home")},
            capture_output=True,
            text=True,
            timeout=120,
        )

    (tmp_path / "measure.json").write_text(json.dumps(_measurement(knee_reached=False)))
    stack = tmp_path / "Pulumi.local.yaml"
    shutil.copy(ROOT / "Pulumi.local.yaml", stack)
    before = stack.read_text()
    args = ["capacity", "plan", "--peak-rps", "1000", "--stack", "local", "--stack-file", str(stack)]
    args += ["--measurement", str(tmp_path)]
    shown = run(*args)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.strip().splitlines() == [
        f"memstack: warning: the per-pod throughput is {planner.LOWER_BOUND_NOTE}"
    ]
    assert json.loads((tmp_path / "plan.json").read_text())["per_pod_lower_bound"] is True
    refused = run(*args, "--write")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"memstack: not writing Pulumi.local.yaml: the mixed profile's per-pod throughput is "
        f"{planner.LOWER_BOUND_NOTE}, or pass --allow-lower-bound"
    ]
    assert stack.read_text() == before
    written = run(*args, "--write", "--allow-lower-bound")
    assert written.returncode == 0, written.stderr
    assert stack.read_text() != before
