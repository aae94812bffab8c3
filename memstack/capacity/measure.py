"""`memstack capacity measure`: stepped load on one service process, per profile, to its knee.

The load is loadtests/locustfile.py with the LoadTestShape of loadtests/steps.py, run by
Locust (in its own process, as `memstack load` runs it). Per profile the steps land in
`<results>/<profile>/steps.json` and `steps.csv`; `<results>/measure.json` holds every profile
with its USL fit and the per-pod throughput at the SLO.
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from memstack import load as load_runner
from memstack.capacity.usl import fit
from memstack.errors import MemstackError

STEPS_LOCUSTFILE = load_runner.REPO_ROOT / "loadtests" / "steps.py"
STEP_BY = ("users", "rate")
# Fine steps at the start: on 2 cores shared with the generator, one service process reached
# its knee at 2-4 closed-loop users; larger machines go on to the coarser steps.
DEFAULT_USER_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64)
DEFAULT_RATE_STEPS = (100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500)
STORES = ("redis", "postgres", "neo4j")
CSV_COLUMNS = (
    "step",
    "users",
    "concurrency",
    "offered_rps",
    "achieved_rps",
    "in_flight",
    "requests",
    "working_p50_ms",
    "working_p95_ms",
    "working_p99_ms",
    "send_lag_p99_ms",
    "failure_ratio",
    "cpu_service_s_per_req",
    "cpu_redis_s_per_req",
    "cpu_postgres_s_per_req",
    "cpu_neo4j_s_per_req",
    "passed",
)


@dataclass
class MeasureOptions:
    load: load_runner.LoadOptions = field(default_factory=load_runner.LoadOptions)
    profiles: tuple[str, ...] = ("working", "mixed")
    step_by: str = "users"
    steps: tuple[float, ...] = ()
    step_s: float = 20.0
    step_warmup_s: float = 5.0
    service_pid: int | None = None
    steps_past_knee: int = 2


def check(options: MeasureOptions) -> None:
    if options.step_by not in STEP_BY:
        raise MemstackError(f"--step-by must be one of {', '.join(STEP_BY)}, not {options.step_by!r}")
    for profile in options.profiles:
        if profile not in load_runner.PROFILES:
            raise MemstackError(f"--profile must be one of {', '.join(load_runner.PROFILES)}, not {profile!r}")
    if not options.steps:
        options.steps = DEFAULT_USER_STEPS if options.step_by == "users" else DEFAULT_RATE_STEPS
    if any(not math.isfinite(v) or v <= 0 for v in options.steps) or list(options.steps) != sorted(options.steps):
        raise MemstackError("--steps must be rising numbers above 0, e.g. 1,2,4,8")
    if options.step_by == "users" and any(v != int(v) for v in options.steps):
        raise MemstackError("--steps of users must be whole numbers")
    most = load_runner.MAX_USERS if options.step_by == "users" else load_runner.MAX_RATE
    if options.steps[-1] > most:
        raise MemstackError(f"--steps of {options.step_by} must be at most {most:g}, not {options.steps[-1]:g}")
    load_runner.require_finite(step_s=options.step_s, step_warmup_s=options.step_warmup_s)
    if options.step_s > load_runner.MAX_RUN_S:
        raise MemstackError(f"--step-s must be at most {load_runner.MAX_RUN_S}, not {options.step_s:g}")
    if options.step_s <= options.step_warmup_s or options.step_warmup_s < 0:
        raise MemstackError("--step-s must be longer than --step-warmup-s, which must be 0 or more")
    load_runner.check_options(options.load)


def store_processes(backend) -> dict[str, dict]:
    """Pid and data directory of each store of a local stack (from its state file); empty for a
    stack this machine does not run (`external`)."""
    from memstack.local import state as stack_state

    home = getattr(backend, "home", None)
    loaded = stack_state.load(home) if home is not None else None
    if loaded is None:
        return {}
    return {
        name: {"pid": s.pid, "data_dir": s.data_dir} for name, s in loaded.services.items() if name in STORES and s.pid
    }


def _row(step: dict) -> dict:
    cpu = step["cpu_s_per_request"]
    return {
        "step": step["step"],
        "users": step["users"],
        "concurrency": step["concurrency"],
        "offered_rps": step["offered_rps"],
        "achieved_rps": step["achieved_rps"],
        "in_flight": step["in_flight"],
        "requests": step["requests"],
        "working_p50_ms": step["working"]["p50_ms"],
        "working_p95_ms": step["working"]["p95_ms"],
        "working_p99_ms": step["working"]["p99_ms"],
        "send_lag_p99_ms": step["send_lag_p99_ms"],
        "failure_ratio": step["total"]["failure_ratio"],
        **{f"cpu_{name}_s_per_req": cpu.get(name) for name in ("service", *STORES)},
        "passed": step["passed"],
    }


def analyse(steps: list[dict], step_by: str) -> dict:
    """Per-pod figures of one profile: the fastest step that held the SLO, its CPU per request,
    and the USL fit over every step (when there are enough)."""
    for step in steps:
        # Closed loop: the users are the concurrency. Open model: Little's law, requests in flight.
        step["concurrency"] = step["users"] if step_by == "users" else step["in_flight"]
    # Steps past the first miss may pass again by chance; the SLO throughput comes from before it.
    first_miss = next((i for i, s in enumerate(steps) if not s["passed"]), len(steps))
    passing = [s for s in steps[:first_miss] if s["passed"]]
    best = max(passing, key=lambda s: s["achieved_rps"], default=None)
    result: dict = {
        "steps": len(steps),
        "knee_reached": first_miss < len(steps),
        "knee_step": steps[first_miss]["step"] if first_miss < len(steps) else None,
        "throughput_at_slo_rps": best["achieved_rps"] if best else None,
        "throughput_at_slo_source": f"step {best['step']} (highest achieved req/s with the SLO held)"
        if best
        else "no step held the SLO",
        "cpu_s_per_request": best["cpu_s_per_request"] if best else None,
        "fit": None,
    }
    usable = [s for s in steps if s["concurrency"] and s["concurrency"] > 0]
    try:
        model = fit([s["concurrency"] for s in usable], [s["achieved_rps"] for s in usable])
        result["fit"] = model.as_dict()
    except MemstackError as exc:
        result["fit_skipped"] = str(exc)
    return result


def _run_profile(
    options: MeasureOptions,
    profile: str,
    url: str,
    tokens: Path,
    pids: dict[str, int],
    results: Path,
    progress: Progress,
) -> list[dict]:
    directory = results / profile
    directory.mkdir(parents=True, exist_ok=True)
    load = load_runner.LoadOptions(**{**asdict(options.load), "profile": profile, "results": directory})
    steps_file = directory / "steps.json"
    command = load_runner.locust_command(load, url, tokens, [load.locustfile, STEPS_LOCUSTFILE]) + [
        "--step-by",
        options.step_by,
        "--steps",
        ",".join(f"{v:g}" for v in options.steps),
        "--step-s",
        str(options.step_s),
        "--step-warmup-s",
        str(options.step_warmup_s),
        "--steps-file",
        str(steps_file),
        "--steps-past-knee",
        str(options.steps_past_knee),
        "--cpu-pids",
        ",".join(f"{k}={v}" for k, v in pids.items()),
    ]
    task = progress.add_task(f"{profile}: step 1/{len(options.steps)}", total=len(options.steps))
    with open(directory / "locust.log", "w") as log, load_runner.running_locust(command, log, directory) as process:
        while process.poll() is None:
            time.sleep(1)
            steps = json.loads(steps_file.read_text()) if steps_file.exists() else []
            if steps:
                progress.update(task, **step_progress(profile, steps, options, running=True))
    if not steps_file.exists():
        tail = (directory / "locust.log").read_text().strip().splitlines()[-1:]
        raise MemstackError(
            f"locust exited with {process.returncode} and measured no step: {' '.join(tail) or 'no output'}"
        )
    steps = json.loads(steps_file.read_text())
    progress.update(task, **step_progress(profile, steps, options, running=False))
    return steps


def step_progress(profile: str, steps: list[dict], options: MeasureOptions, running: bool) -> dict:
    """The progress bar of a profile with `steps` measured: total, completed and description.
    Once a step misses the SLO the run ends `steps_past_knee` steps later, so the steps it will
    run are fewer than those asked for."""
    first_miss = next((i for i, s in enumerate(steps) if not s["passed"]), None)
    planned = (
        len(options.steps) if first_miss is None else min(len(options.steps), first_miss + 1 + options.steps_past_knee)
    )
    if not running:
        planned = len(steps)
    last = steps[-1]
    p99 = last["working"]["p99_ms"]
    figures = f"last {last['achieved_rps']:.0f} req/s, working p99 {'-' if p99 is None else f'{p99:.0f}'} ms"
    if running and len(steps) < planned:
        where = f"step {len(steps) + 1}/{planned}"
    else:
        where = f"{len(steps)} of {len(options.steps)} steps run"
        if len(steps) < len(options.steps) and first_miss is not None:
            where += f" (step {first_miss + 1} missed the SLO; --steps-past-knee {options.steps_past_knee})"
    return {"total": planned, "completed": len(steps), "description": f"{profile}: {where}, {figures}"}


def write_csv(path: Path, steps: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for step in steps:
            writer.writerow(_row(step))


def measure(options: MeasureOptions, results: Path, console: Console | None = None) -> dict:
    check(options)
    results = load_runner.output_dir(results, "--results")
    options.load.results = results
    report: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "step_by": options.step_by,
        "steps": list(options.steps),
        "step_s": options.step_s,
        "step_warmup_s": options.step_warmup_s,
        "slo": {"working_p99_ms": options.load.wm_p99_ms, "max_failure_ratio": options.load.max_failure_ratio},
        "workers": options.load.workers,
        "profiles": {},
    }
    with ExitStack() as stack:
        if options.load.url:
            url, tokens = options.load.url.rstrip("/"), options.load.tokens_file
            load_runner.wait_ready(url, None, None, timeout_s=10)
            pids = {"service": options.service_pid} if options.service_pid else {}
            stores: dict = {}
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memstack-capacity-")))
            service = stack.enter_context(load_runner.local_service(options.load, workdir))
            url, tokens = service.url, service.tokens
            stores = store_processes(service.backend)
            pids = {"service": service.pid, **{name: s["pid"] for name, s in stores.items()}}
        report["cpu_processes"] = sorted(pids)
        report["stores"] = stores
        progress = stack.enter_context(
            Progress(
                TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=False
            )
        )
        for profile in options.profiles:
            steps = _run_profile(options, profile, url, tokens, pids, results, progress)
            analysis = analyse(steps, options.step_by)
            (results / profile / "steps.json").write_text(json.dumps(steps, indent=2))
            write_csv(results / profile / "steps.csv", steps)
            report["profiles"][profile] = {**analysis, "step_results": steps}
    (results / "measure.json").write_text(json.dumps(report, indent=2))
    return report
