"""`memstack bench`: benchmarks of the repository's benchmarks/ directory, run from the CLI.

`memstack bench service` is benchmarks/service_efficiency.py: the service's CPU per request
against a floor app, per process, at fixed rates of the Locust profiles, on the local stack.
The benchmark code stays in benchmarks/ (with the floor app it starts); this module finds it
in the checkout the CLI is installed from.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from memstack.errors import MemstackError
from memstack.load import results_home

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

app = typer.Typer(help="Benchmarks of the memory service on the local stack.", no_args_is_help=True)


def _benchmark(name: str) -> ModuleType:
    path = BENCHMARKS / f"{name}.py"
    if not path.is_file():
        raise MemstackError(f"{path} not found: `memstack bench` runs from a source checkout of memstack")
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@app.command("service")
def service(
    rate: Annotated[float, typer.Option(min=1, help="req/s of the working profile")] = 1000.0,
    mixed_rate: Annotated[float, typer.Option(min=0, help="req/s of the mixed profile; 0 skips it")] = 600.0,
    duration: Annotated[str, typer.Option(help="measured time per run, after the warm-up (20s, 2m)")] = "20s",
    warmup_s: Annotated[float, typer.Option(min=0)] = 5.0,
    users: Annotated[int, typer.Option(min=1)] = 100,
    floor: Annotated[
        list[str] | None,
        typer.Option(
            help="floor variant (repeatable; the first is the ratio's reference): " + "uvicorn, h11, "
            "asyncio-loop, python-parser, single-connection, redis-py-client"
        ),
    ] = None,
    sequential: Annotated[int, typer.Option(min=0, help="sequential GETs per target; 0 skips them")] = 5000,
    pairs: Annotated[
        int,
        typer.Option(
            min=1,
            max=20,
            help="working runs of the floor and the service, alternating; the ratio is the median of the pairs'",
        ),
    ] = 1,
    results: Annotated[
        Path | None,
        typer.Option(help="directory of the JSON and the Locust output (default $MEMSTACK_HOME/bench-service)"),
    ] = None,
    py_spy: Annotated[
        Path | None,
        typer.Option(
            "--py-spy",
            help="record each target's working run with py-spy (500 Hz, collapsed stacks) into this directory",
        ),
    ] = None,
) -> None:
    """CPU per request per process (service, floor app, Redis, Postgres, Neo4j, Locust), ratios to
    the floor app and to Redis, percentiles, sequential GET latency; writes service_efficiency.json.
    Working memory runs under a key prefix of the run's own, whose keys are removed afterwards."""
    module = _benchmark("service_efficiency")
    unknown = [name for name in floor or [] if name not in module.FLOORS]
    if unknown:
        raise MemstackError(f"--floor {unknown[0]!r}: not one of {', '.join(module.FLOORS)}")
    argv = [
        f"--rate={rate}",
        f"--mixed-rate={mixed_rate}",
        f"--duration={duration}",
        f"--warmup-s={warmup_s}",
        f"--users={users}",
        f"--sequential={sequential}",
        f"--pairs={pairs}",
        f"--results={results or results_home('bench-service')}",
        *[f"--floor={name}" for name in floor or []],
        *([f"--py-spy={py_spy}"] if py_spy is not None else []),
    ]
    raise typer.Exit(module.main(argv))
