"""A short real capacity run on the local stack: `measure` (3 small steps), `storage`, `plan`
(on a copy of a stack file, diff and --write), `report`, and a headless browser screenshot of
the report."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = [1, 2, 3]
COUNTS = {"conversations": 2, "turns": 12, "facts": 15, "context_keys": 3, "thoughts": 4}


def _cli(args, env, cwd, timeout=300):
    return subprocess.run(
        [sys.executable, "-c", "from memstack.cli import main; main()", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def run_env(stack):
    # The test stack's own backend and home, so that with the process backend the stores' pids
    # (and the Neo4j data directory) are known; other backends get the service's figures only.
    if stack.home is not None:
        return {"MEMSTACK_HOME": str(stack.home), "MEMSTACK_BACKEND": stack.backend.name}
    return {**stack.env(), "MEMSTACK_BACKEND": "external"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, run_env):
    """A working directory holding a copy of a stack file and one measurement plus storage run."""
    work = tmp_path_factory.mktemp("capacity")
    shutil.copy(ROOT / "Pulumi.local.yaml", work / "Pulumi.local.yaml")
    results = work / ".memstack" / "capacity" / "run"
    # A generous SLO: this run checks the pipeline, not the machine, which other jobs share (a
    # single closed-loop user has seen a p99 of 27 ms here under a load average of 12).
    run = _cli(
        [
            "capacity",
            "measure",
            "--profile",
            "working",
            "--steps",
            ",".join(map(str, STEPS)),
            "--step-s",
            "4",
            "--step-warmup-s",
            "1",
            "--steps-past-knee",
            "3",
            "--wm-p99-ms",
            "500",
            "--results",
            str(results),
        ],
        run_env,
        work,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    run = _cli(
        [
            "capacity",
            "storage",
            *[f"--{k.replace('_', '-')}={v}" for k, v in COUNTS.items()],
            "--results",
            str(results),
        ],
        run_env,
        work,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return work, results


def test_measure_writes_three_steps_with_cpu_per_request(workdir, stack):
    _, results = workdir
    measurement = json.loads((results / "measure.json").read_text())
    steps = measurement["profiles"]["working"]["step_results"]
    assert [s["users"] for s in steps] == STEPS
    csv_lines = (results / "working" / "steps.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + len(STEPS) and csv_lines[0].startswith("step,users,concurrency")
    for step in steps:
        assert step["requests"] > 0 and step["achieved_rps"] > 0
        assert set(step["groups"]) <= {"working:read", "working:write"}
        assert step["cpu_s_per_request"]["service"] > 0
    if stack.backend.name == "process":  # the stores are processes of this machine
        assert {"redis", "postgres", "neo4j"} <= set(steps[-1]["cpu_s_per_request"])
        assert steps[-1]["cpu_s_per_request"]["redis"] > 0


def test_progress_counts_the_steps_a_run_stopped_at_the_knee_ran(run_env, tmp_path):
    """An SLO no step can hold: the first step misses it and, with --steps-past-knee 0, is the
    only one run; the progress bar must say so, not "step 2/2"."""
    args = ["capacity", "measure", "--profile", "working", "--steps", "1,2", "--step-s", "2"]
    args += ["--step-warmup-s", "0", "--steps-past-knee", "0", "--wm-p99-ms", "0.001"]
    run = _cli([*args, "--results", str(tmp_path / "run")], run_env, tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    steps = json.loads((tmp_path / "run" / "measure.json").read_text())["profiles"]["working"]["step_results"]
    assert len(steps) == 1 and not steps[0]["passed"]
    assert "step 2/2" not in run.stdout
    assert "1 of 2 steps run (step 1 missed the SLO; --steps-past-knee 0)" in run.stdout, run.stdout


def test_storage_counts_match_what_was_inserted(workdir):
    _, results = workdir
    storage = json.loads((results / "storage.json").read_text())
    conversations = COUNTS["conversations"]
    turns = conversations * COUNTS["turns"]
    assert storage["postgres"]["conversation_logs"]["rows"] == turns
    assert storage["postgres"]["conversation_logs_embedding"]["rows"] == turns
    assert storage["postgres"]["memory_timeline"]["rows"] == COUNTS["facts"]
    assert storage["postgres"]["conversations"]["rows"] == conversations
    redis = storage["redis"]
    assert (redis["ctx"]["keys"], redis["ctx"]["items"]) == (conversations, conversations * COUNTS["context_keys"])
    assert (redis["turns"]["keys"], redis["turns"]["items"]) == (conversations, turns)
    assert (redis["thoughts"]["keys"], redis["thoughts"]["items"]) == (
        conversations,
        conversations * COUNTS["thoughts"],
    )
    # Graph: a User, a node per conversation, per turn and per fact.
    assert storage["neo4j"]["nodes"] == 1 + conversations + turns + COUNTS["facts"]
    assert storage["postgres"]["conversation_logs"]["bytes_per_row"] > 0
    for kind in ("ctx", "turns", "thoughts"):
        assert redis[kind]["bytes_per_item"] > 0


def test_plan_has_finite_figures_and_a_diff(workdir, run_env):
    work, results = workdir
    before = (work / "Pulumi.local.yaml").read_text()
    run = _cli(
        [
            "capacity",
            "plan",
            "--peak-rps",
            "500",
            "--stack",
            "local",
            "--stack-file",
            "Pulumi.local.yaml",
            "--profile",
            "working",
            "--measurement",
            str(results),
        ],
        run_env,
        work,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (work / "Pulumi.local.yaml").read_text() == before  # no --write: only a diff
    assert "+++ Pulumi.local.yaml (planned)" in run.stdout
    plan = json.loads((results / "plan.json").read_text())
    figures = {f["name"]: f for f in plan["figures"]}
    per_pod = figures["per-pod throughput at the SLO"]["value"]
    assert math.isfinite(per_pod) and per_pod > 0
    assert figures["pods (N+2)"]["value"] == math.ceil(500 / (per_pod * 0.7)) + 2
    assert all(f["source"] for f in plan["figures"])
    for store in ("redis", "postgres", "neo4j"):
        for key in ("ram_day0", "disk_day90", "disk_day365"):
            assert math.isfinite(plan["stores"][store][key]) and plan["stores"][store][key] >= 0
    assert plan["stores"]["postgres"]["disk_day365"] > plan["stores"]["postgres"]["disk_day0"] > 0
    assert plan["proposed"]["memoryService.autoscaling.minReplicas"] == figures["pods (N+2)"]["value"]


def test_write_round_trip_keeps_comments_and_other_keys(workdir, run_env):
    from ruamel.yaml import YAML

    work, results = workdir
    path = work / "Pulumi.local.yaml"
    before = path.read_text()
    comments = [line for line in before.splitlines() if line.lstrip().startswith("#")]
    run = _cli(
        [
            "capacity",
            "plan",
            "--peak-rps",
            "500",
            "--stack",
            "local",
            "--stack-file",
            "Pulumi.local.yaml",
            "--profile",
            "working",
            "--measurement",
            str(results),
            "--write",
            # Three small steps under a generous SLO rarely reach the knee: the pipeline is tested.
            "--allow-lower-bound",
        ],
        run_env,
        work,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    after = path.read_text()
    assert [line for line in after.splitlines() if line.lstrip().startswith("#")] == comments
    old, new = YAML().load(before)["config"], YAML().load(after)["config"]
    plan = json.loads((results / "plan.json").read_text())
    for dotted, value in plan["proposed"].items():
        top, *rest = dotted.split(".")
        node = new[f"memstack:{top}"]
        for part in rest:
            node = node[part]
        assert node == value
    written = {f"memstack:{d.split('.')[0]}" for d in plan["proposed"]}
    assert {k: v for k, v in old.items() if k not in written} == {k: v for k, v in new.items() if k not in written}
    # What the plan did not touch inside a written section stays too.
    assert new["memstack:memoryService"]["image"] == old["memstack:memoryService"]["image"]
    # Planning again on the written file changes nothing.
    again = _cli(
        [
            "capacity",
            "plan",
            "--peak-rps",
            "500",
            "--stack",
            "local",
            "--stack-file",
            "Pulumi.local.yaml",
            "--profile",
            "working",
            "--measurement",
            str(results),
            "--write",
            # Three small steps under a generous SLO rarely reach the knee: the pipeline is tested.
            "--allow-lower-bound",
        ],
        run_env,
        work,
    )
    assert again.returncode == 0 and path.read_text() == after


def test_write_refuses_an_unparsable_stack_file_and_leaves_it_whole(workdir, run_env):
    work, results = workdir
    broken = work / "Pulumi.broken.yaml"
    text = "config:\n  memstack:environment: local\n  memstack:postgres: {storageSize: [1Gi\n"
    broken.write_text(text)
    run = _cli(
        [
            "capacity",
            "plan",
            "--peak-rps",
            "500",
            "--stack-file",
            str(broken),
            "--profile",
            "working",
            "--measurement",
            str(results),
            "--write",
            # Three small steps under a generous SLO rarely reach the knee: the pipeline is tested.
            "--allow-lower-bound",
        ],
        run_env,
        work,
    )
    assert run.returncode == 2
    [line] = run.stderr.strip().splitlines()
    assert "Pulumi.broken.yaml is not valid YAML" in line
    assert broken.read_text() == text


def test_report_page_renders_in_a_headless_browser(workdir, run_env, tmp_path):
    work, results = workdir
    benchmarks = tmp_path / "benchmarks.json"
    benchmarks.write_text(
        json.dumps(
            {
                "working_memory": {
                    "get_working_context_key": {
                        "p50_ms": 0.2,
                        "p95_ms": 0.5,
                        "p99_ms": 0.9,
                        "target": "p99 <= 2x floor",
                        "passed": True,
                    },
                    "push_thought": {
                        "p50_ms": 0.3,
                        "p95_ms": 0.8,
                        "p99_ms": 3.1,
                        "target": "p99 <= 2x floor",
                        "passed": False,
                    },
                }
            }
        )
    )
    run = _cli(["capacity", "report", "--measurement", str(results), "--benchmarks", str(benchmarks)], run_env, work)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    page = results / "report.html"
    text = page.read_text()
    assert "working profile" in text and "Proposed stack keys" in text and text.count("data:image/png;base64,") == 4
    assert re.search(r"<td>get_working_context_key</td>(<td>[^<]*</td>)*<td>pass</td></tr>", text)
    assert re.search(r"<td>push_thought</td>(<td>[^<]*</td>)*<td>FAIL</td></tr>", text)
    for name in ("throughput", "latency", "cpu", "storage"):
        assert (results / f"{name}.png").stat().st_size > 5000
    chromium = shutil.which("chromium")
    assert chromium, "chromium missing: `make setup` installs it"
    shot = results / "report-screenshot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1200, 2400)
        # Not a blank page: the plots and tables put many colours on it.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
