"""`memstack capacity ...`: measure, fit, storage, plan, report."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memstack import load as load_runner
from memstack.errors import MemstackError

app = typer.Typer(
    help="Capacity planning: measure one pod to its knee, fit, size a Pulumi stack, report.", no_args_is_help=True
)
out = Console(width=140)
_LOAD = load_runner.LoadOptions()


def new_results_dir(results: Path | None) -> Path:
    return results or load_runner.new_results_dir("capacity")


def latest_with(name: str, given: Path | None) -> Path:
    """The results directory to read `name` from: the given one, or the newest that has it."""
    if given is not None:
        if not (given / name).exists():
            raise MemstackError(f"no {name} in {given}")
        return given
    capacity_dir = load_runner.results_home("capacity")
    candidates = sorted(p.parent for p in capacity_dir.glob(f"*/{name}"))
    if not candidates:
        raise MemstackError(
            f"no {name} under {capacity_dir}; run `memstack capacity "
            f"{'measure' if name == 'measure.json' else 'storage'}` first"
        )
    return candidates[-1]


def _numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise MemstackError(f"{option} takes comma-separated numbers, not {text!r}") from None


def _f(value, digits: int = 0) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def print_measurement(report: dict) -> None:
    for profile, result in report["profiles"].items():
        table = Table(title=f"{profile} profile, steps by {report['step_by']}")
        for column in (
            "step",
            "users",
            "N",
            "offered/s",
            "achieved/s",
            "p50",
            "p95",
            "p99 ms",
            "lag p99",
            "fail %",
            "CPU ms/req: service",
            "redis",
            "postgres",
            "neo4j",
            "SLO",
        ):
            table.add_column(column, justify="right")
        for s in result["step_results"]:
            cpu = s["cpu_s_per_request"]
            table.add_row(
                str(s["step"]),
                str(s["users"]),
                _f(s["concurrency"], 1),
                _f(s["offered_rps"]),
                _f(s["achieved_rps"]),
                _f(s["working"]["p50_ms"]),
                _f(s["working"]["p95_ms"]),
                _f(s["working"]["p99_ms"]),
                _f(s["send_lag_p99_ms"]),
                _f(100 * s["total"]["failure_ratio"], 2),
                *(
                    _f(None if cpu.get(n) is None else cpu[n] * 1000, 3)
                    for n in ("service", "redis", "postgres", "neo4j")
                ),
                "pass" if s["passed"] else "FAIL",
            )
        out.print(table)
        fit = result.get("fit")
        if fit:
            from memstack.capacity.usl import UslModel  # numpy and scipy: not in the service image

            out.print(UslModel.from_dict(fit).describe(), highlight=False)
        else:
            out.print(f"USL fit skipped: {result.get('fit_skipped')}", highlight=False)
        out.print(
            f"per pod at the SLO: {_f(result['throughput_at_slo_rps'])} req/s ({result['throughput_at_slo_source']})",
            highlight=False,
        )


@app.command()
def measure(
    profile: Annotated[list[str], typer.Option(help="working | mixed (repeatable; default both)")] = [],
    step_by: Annotated[str, typer.Option(help="users (closed loop, concurrency) | rate (open model, req/s)")] = "users",
    steps: Annotated[str | None, typer.Option(help="Comma-separated users or req/s per step")] = None,
    step_s: Annotated[float, typer.Option(help="Seconds per step, warm-up included")] = 20.0,
    step_warmup_s: Annotated[float, typer.Option(help="Unmeasured seconds at the start of each step")] = 5.0,
    steps_past_knee: Annotated[int, typer.Option(min=0, help="Steps to run after the first that misses the SLO")] = 2,
    users: Annotated[int, typer.Option(min=1, help="Locust users when stepping the rate")] = _LOAD.users,
    workers: Annotated[int, typer.Option(min=1, help="Locust worker processes (master/worker mode when > 1)")] = 1,
    url: Annotated[str | None, typer.Option(help="Service to measure; default: one started on the local stack")] = None,
    tokens_file: Annotated[Path | None, typer.Option(help="With --url: lines '<tenant> <token>'")] = None,
    service_pid: Annotated[
        int | None, typer.Option(help="With --url on this machine: the service's pid, for its CPU")
    ] = None,
    results: Annotated[
        Path | None, typer.Option(help="Results directory (default $MEMSTACK_HOME/capacity/<time>)")
    ] = None,
    wm_p99_ms: Annotated[float, typer.Option(help="SLO: working-memory p99 and send lag below this")] = _LOAD.wm_p99_ms,
    max_failure_ratio: Annotated[
        float, typer.Option(help="SLO: failures/requests at most this")
    ] = _LOAD.max_failure_ratio,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="process | containers | external")] = None,
) -> None:
    """Step the load on one service process until the SLO breaks; write per-step CSV and JSON."""
    from memstack.capacity.measure import MeasureOptions
    from memstack.capacity.measure import measure as run_measure

    options = MeasureOptions(
        load=load_runner.LoadOptions(
            url=url,
            tokens_file=tokens_file,
            users=users,
            workers=workers,
            wm_p99_ms=wm_p99_ms,
            max_failure_ratio=max_failure_ratio,
            backend=backend,
        ),
        profiles=tuple(profile) or ("working", "mixed"),
        step_by=step_by,
        steps=_numbers(steps, "--steps") if steps else (),
        step_s=step_s,
        step_warmup_s=step_warmup_s,
        service_pid=service_pid,
        steps_past_knee=steps_past_knee,
    )
    directory = new_results_dir(results)
    report = run_measure(options, directory, console=out)
    print_measurement(report)
    out.print(f"results: {directory}", highlight=False)


@app.command("fit")
def fit_command(csv: Annotated[Path, typer.Option("--csv", help="CSV with (concurrency, throughput) columns")]) -> None:
    """Fit the Universal Scalability Law to a (concurrency, throughput) CSV."""
    from memstack.capacity.usl import fit, read_csv

    model = fit(*read_csv(csv))
    print(json.dumps(model.as_dict(), indent=2))


@app.command()
def storage(
    conversations: Annotated[int, typer.Option(min=1, help="Conversations to load")] = 20,
    turns: Annotated[int, typer.Option(min=1, help="Turns per conversation")] = 50,
    facts: Annotated[int, typer.Option(min=1, help="Facts to load")] = 1000,
    context_keys: Annotated[int, typer.Option(min=1, help="Working-memory context keys per conversation")] = 16,
    thoughts: Annotated[int, typer.Option(min=1, help="Thoughts per conversation")] = 20,
    results: Annotated[Path | None, typer.Option(help="Results directory (default: the newest measurement's)")] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="process | containers | external")] = None,
) -> None:
    """Load a known number of items into a fresh tenant and measure bytes per item per store."""
    from memstack.capacity.storage import local_neo4j, run
    from memstack.local.backend import CORE_SERVICES, get_backend, stack_for_run

    chosen = get_backend(backend)
    with stack_for_run(chosen, CORE_SERVICES, load_runner.say_on_stderr):
        data_dir, flush = local_neo4j(chosen)
        result = run(
            chosen.endpoints().settings(),
            data_dir,
            flush,
            conversations=conversations,
            turns=turns,
            facts=facts,
            context_keys=context_keys,
            thoughts=thoughts,
        )
    if results is None:
        existing = sorted(p.parent for p in load_runner.results_home("capacity").glob("*/measure.json"))
        results = existing[-1] if existing else new_results_dir(None)
    results.mkdir(parents=True, exist_ok=True)
    (results / "storage.json").write_text(json.dumps(result, indent=2))
    table = Table(title=f"bytes per item (embedding dim {result['embedding_dim']})")
    for column in ("store", "what", "items", "bytes per item"):
        table.add_column(column, justify="left" if column in ("store", "what") else "right")
    for kind, row in result["redis"].items():
        table.add_row("redis", f"{kind} (MEMORY USAGE)", str(row["items"]), _f(row["bytes_per_item"]))
    for name, row in result["postgres"].items():
        table.add_row("postgres", name, str(row["rows"]), _f(row["bytes_per_row"]))
    neo = result["neo4j"]
    table.add_row("neo4j", "node", str(neo["nodes"]), _f(neo.get("bytes_per_node")))
    table.add_row("neo4j", "relationship", str(neo["relationships"]), _f(neo.get("bytes_per_relationship")))
    out.print(table)
    out.print(f"results: {results / 'storage.json'}", highlight=False)


def _plan(inputs, stack_file, measurement, storage_dir):
    from memstack.capacity import plan as planner

    inputs.check()
    path = stack_file or planner.stack_file(inputs.stack)
    measure_dir = latest_with("measure.json", measurement)
    if storage_dir is None and (measure_dir / "storage.json").exists():
        storage_dir = measure_dir  # `storage` writes beside the newest measurement by default
    storage_path = None
    try:
        storage_path = latest_with("storage.json", storage_dir) / "storage.json"
    except MemstackError:
        if storage_dir is not None:
            raise
    document = planner.read_stack(path)
    result = planner.plan(
        inputs,
        json.loads((measure_dir / "measure.json").read_text()),
        json.loads(storage_path.read_text()) if storage_path else None,
        document,
        measure_dir=str(measure_dir),
        storage_dir=str(storage_path.parent) if storage_path else "",
    )
    result["stack_file"] = str(path)
    (measure_dir / "plan.json").write_text(json.dumps(result, indent=2))
    return planner, path, document, measure_dir, result


@app.command()
def plan(
    peak_rps: Annotated[float, typer.Option(help="Planned peak requests/s over all pods")],
    stack: Annotated[str, typer.Option(help="Pulumi stack whose Pulumi.<stack>.yaml to size")] = "prod",
    stack_file: Annotated[Path | None, typer.Option(help="The stack file itself (default Pulumi.<stack>.yaml)")] = None,
    profile: Annotated[str, typer.Option(help="Measured profile to size pods from")] = "mixed",
    target_utilisation: Annotated[float, typer.Option(help="Share of the per-pod SLO throughput to plan for")] = 0.7,
    burst: Annotated[float, typer.Option(help="HPA maxReplicas covers this multiple of the peak")] = 2.0,
    users: Annotated[int, typer.Option(help="Users at day 0")] = 10_000,
    turns_per_user_day: Annotated[float, typer.Option(help="Stored turns per user per day")] = 50.0,
    facts_per_user_day: Annotated[float, typer.Option(help="Facts learned per user per day")] = 5.0,
    active_share: Annotated[float, typer.Option(help="Share of users with live working memory at once")] = 0.2,
    embedding_dim: Annotated[int | None, typer.Option(help="Embedding dimensions (default: as measured)")] = None,
    retention_days: Annotated[int, typer.Option(help="Days stored turns are kept")] = 90,
    growth_pct_month: Annotated[float, typer.Option(help="User growth per month, percent")] = 5.0,
    measurement: Annotated[Path | None, typer.Option(help="Directory with measure.json (default: newest)")] = None,
    storage_dir: Annotated[
        Path | None,
        typer.Option("--storage", help="Directory with storage.json (default: the measurement's, else newest)"),
    ] = None,
    write: Annotated[bool, typer.Option("--write", help="Update the stack file (default: print the diff)")] = False,
    allow_lower_bound: Annotated[
        bool,
        typer.Option(help="With --write: write a plan whose measurement never reached the knee (a lower bound)"),
    ] = False,
) -> None:
    """Pods (N+2), HPA, requests and per-store RAM/disk for a peak; the stack file keys as a diff or written."""
    from memstack.capacity.plan import LOWER_BOUND_NOTE, PlanInputs

    inputs = PlanInputs(**{name: value for name, value in locals().items() if name in PlanInputs.__dataclass_fields__})
    planner, path, document, measure_dir, result = _plan(inputs, stack_file, measurement, storage_dir)
    if result["per_pod_lower_bound"]:
        if write and not allow_lower_bound:
            raise MemstackError(
                f"not writing {path.name}: the {profile} profile's per-pod throughput is {LOWER_BOUND_NOTE}, "
                "or pass --allow-lower-bound"
            )
        print(f"memstack: warning: the per-pod throughput is {LOWER_BOUND_NOTE}", file=sys.stderr)
    table = Table(title=f"capacity plan for {path.name} at {peak_rps:g} req/s peak")
    for column in ("figure", "value", "unit", "source"):
        table.add_column(column, overflow="fold")
    for figure in result["figures"]:
        table.add_row(figure["name"], str(figure["value"]), figure["unit"], figure["source"])
    out.print(table)
    if result["stores"]:
        stores = Table(title="storage per store (GiB)")
        for column in (
            "store",
            "RAM d0",
            "RAM d90",
            "RAM d365",
            "disk d0",
            "disk d90",
            "disk d365",
            "volume",
            "volume full on",
        ):
            stores.add_column(column, justify="right")
        for name in ("redis", "postgres", "neo4j"):
            s = result["stores"][name]
            stores.add_row(
                name,
                *(f"{s[f'{k}_day{d}'] / 2**30:.2f}" for k in ("ram", "disk") for d in (0, 90, 365)),
                f"{s['volume'] / 2**30:g}",
                s["volume_runs_out"],
            )
        out.print(stores)
        out.print(f"redis maxMemory reached on: {result['stores']['redis']['max_memory_runs_out']}", highlight=False)
    if write:
        print(planner.write_stack(path, result["proposed"]) or "stack file already as planned")
        out.print(f"wrote {path}", highlight=False)
    else:
        before = path.read_text()
        updated = planner.dump(planner.apply(document, result["proposed"]), before)
        print(planner.diff(path, before, updated) or "stack file already as planned")
    out.print(f"plan: {measure_dir / 'plan.json'}", highlight=False)


@app.command()
def report(
    measurement: Annotated[Path | None, typer.Option(help="Directory with measure.json (default: newest)")] = None,
    benchmarks: Annotated[
        Path | None,
        typer.Option(
            help="Results of benchmarks/ (`make bench`, `memstack bench`); default "
            "$MEMSTACK_HOME/benchmarks/memory_core.json (./.memstack/... without MEMSTACK_HOME), where they write"
        ),
    ] = None,
) -> None:
    """Write report.html (self-contained) and PNGs beside the measurement."""
    from memstack.capacity import report as reporter
    from memstack.capacity.measure import analyse

    directory = latest_with("measure.json", measurement)
    measured = json.loads((directory / "measure.json").read_text())
    # Per-pod figures and the fit come from the steps by today's analysis, not a stored copy.
    for result in measured["profiles"].values():
        result.update(analyse(result["step_results"], measured["step_by"]))
    plan_path = directory / "plan.json"
    page = reporter.write(
        directory,
        measured,
        json.loads(plan_path.read_text()) if plan_path.exists() else None,
        benchmarks or load_runner.benchmark_results_file(),
    )
    out.print(f"report: {page}", highlight=False)
