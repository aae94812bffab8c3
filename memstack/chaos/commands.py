"""`memstack chaos --fault F [--duration S]`: one fault under load, and its table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memstack.chaos.faults import FAULTS
from memstack.load import PROFILES

# The run module needs the load and test tooling (httpx, Locust), which the service image lacks:
# imported when a chaos run starts, so that the CLI itself loads everywhere.


def table(results: list) -> Table:
    from memstack.chaos.run import BEFORE_FACTOR, WM_P99_AFTER_MS

    out = Table(title="memstack chaos: one fault under load")
    for column in (
        "fault",
        "profile",
        "outage s",
        "failed",
        "statuses",
        "not 503 naming the store",
        "recovery s",
        "slowest during s",
        "wm p99 before ms",
        "wm p99 after ms",
        f"bound: max({WM_P99_AFTER_MS:g}, {BEFORE_FACTOR:g} x before)",
        "lost pg / neo4j / redis",
        "verdict",
    ):
        out.add_column(column, overflow="fold")
    for r in results:
        row = r.row()
        out.add_row(
            r.fault,
            r.profile,
            str(row["outage_s"]),
            f"{r.failed} of {r.requests}",
            " ".join(f"{k}x{v}" for k, v in row["statuses"].items()) or "-",
            str(r.failures_not_naming_store),
            "-" if r.recovery_s is None else f"{r.recovery_s:.2f}",
            "-" if r.slowest_during_s is None else f"{r.slowest_during_s:.2f}",
            "-" if r.wm_p99_before_ms is None else f"{r.wm_p99_before_ms:.1f}",
            "-" if r.wm_p99_after_ms is None else f"{r.wm_p99_after_ms:.1f}",
            f"{r.wm_p99_bound_ms:.1f}",
            " / ".join(f"{r.lost.get(s, '-')} of {r.acknowledged.get(s, '-')}" for s in ("postgres", "neo4j", "redis")),
            "FAIL" if r.violations else "pass",
        )
    return out


def chaos(
    fault: Annotated[str, typer.Option(help=f"One of {', '.join(FAULTS)}")],
    duration: Annotated[
        float | None, typer.Option(help="Seconds the fault lasts (default: kill 0, pause 2, netcut 5)")
    ] = None,
    profile: Annotated[str, typer.Option(help=f"Load profile: {', '.join(PROFILES)}")] = "working",
    rate: Annotated[float, typer.Option(help="Locust's target requests/s, 1 or more")] = 100.0,
    results: Annotated[
        Path | None,
        typer.Option(
            help="Directory for requests.csv, chaos.json and Locust's files (default $MEMSTACK_HOME/chaos/<time>)"
        ),
    ] = None,
) -> None:
    """Inject one fault into a store of the containers stack while the service image runs under load;
    print failures (status codes), time to recover, working-memory p99 after, writes lost, and the
    verdict against the chaos suite's bounds: exit 1 when one is broken."""
    from memstack.chaos.faults import Fault
    from memstack.chaos.run import ChaosOptions, fault_duration, run
    from memstack.errors import MemstackError
    from memstack.load import new_results_dir, output_dir, require_finite
    from memstack.local.backend import get_backend

    fault_duration(Fault.parse(fault), duration)
    require_finite(rate=rate)
    if rate < 1:
        raise MemstackError(f"--rate must be 1 or more, not {rate:g}")
    if profile not in PROFILES:
        raise MemstackError(f"--profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    results = output_dir(results or new_results_dir("chaos"), "--results")
    backend = get_backend("containers")
    result = run(backend, ChaosOptions(fault=fault, duration_s=duration, profile=profile, rate=rate, results=results))
    Console(width=160).print(table([result]))
    print(f"results: {results}")
    for violation in result.violations:
        print(f"memstack: chaos {result.fault}: {violation}", file=sys.stderr)
    if result.violations:
        raise typer.Exit(1)
