"""`memstack demo`, what `make demo` runs: the local stack with Prometheus and the store exporters,
the memory service and its consolidation worker under a short load, then the latency per route
group against the SLO, the stack's endpoints and health, and what Prometheus recorded of the run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from memory_core import metrics
from memstack.errors import MemstackError
from memstack.observability import SERVICE_JOB, WORKER_JOB

# What a figure means when Prometheus has no sample for it: the process was not scraped.
NO_DATA = "no data"


@contextlib.contextmanager
def running_worker(env: dict[str, str], log: Path) -> Iterator[str]:
    """`memstack worker` on a free port (Prometheus scrapes it while it runs); yields its URL."""
    from memstack.load import _RUN_CLI, free_port, stop, wait_ready

    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-c", _RUN_CLI, "worker", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **env, "OTEL_SERVICE_NAME": "memstack-worker"},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url
    finally:
        stop(process)


def live_figures(window_s: int) -> list[tuple[str, str, str]]:
    """(label, PromQL, format) of the figures the demo reads back; each covers the last `window_s`."""
    window = f"[{window_s}s]"
    http, jobs = metrics.HTTP_REQUEST_DURATION, metrics.WORKER_JOB_DURATION
    working = 'route=~"/v1/working/.*"'
    return [
        ("requests served (service)", f"sum(increase({http}_count{window}))", "{:,.0f}"),
        (
            "working-memory p99 (service, ms)",
            f"1000 * histogram_quantile(0.99, sum by (le) (rate({http}_bucket{{{working}}}{window})))",
            "{:,.1f}",
        ),
        ("worker jobs run", f"sum(increase({jobs}_count{window}))", "{:,.0f}"),
        (
            "outbox rows pending, at most (worker)",
            f"max(max_over_time({metrics.OUTBOX_ROWS}{{state='pending'}}{window}))",
            "{:,.0f}",
        ),
        (
            "reflection stream length, at most (worker)",
            f"max(max_over_time({metrics.REFLECTION_STREAM_LENGTH}{window}))",
            "{:,.0f}",
        ),
    ]


def _instant(prometheus_url: str, query: str) -> float | None:
    from memstack.observability import prometheus_get

    answer = prometheus_get(prometheus_url, "/api/v1/query", {"query": query})
    if answer.get("status") != "success":
        raise MemstackError(f"Prometheus refused `{query}`: {answer.get('error')}")
    values = [float(series["value"][1]) for series in answer["data"]["result"]]
    finite = [v for v in values if v == v]  # NaN: a quantile over no requests
    return finite[0] if finite else None


def scraped_jobs(prometheus_url: str, window_s: int) -> dict[str, bool]:
    """{job: scraped successfully at least once} over the last `window_s`."""
    from memstack.observability import prometheus_get

    answer = prometheus_get(
        prometheus_url, "/api/v1/query", {"query": f"max by (job) (max_over_time(up[{window_s}s]))"}
    )
    return {s["metric"].get("job", "?"): float(s["value"][1]) == 1 for s in answer.get("data", {}).get("result", [])}


def report_live_data(prometheus_url: str, window_s: int) -> list[str]:
    """What Prometheus recorded of the run: the jobs it scraped, then each figure."""
    jobs = scraped_jobs(prometheus_url, window_s)
    lines = [f"live data from Prometheus at {prometheus_url} (graph: {prometheus_url}/graph), last {window_s} s:"]
    lines.append("  scraped: " + ", ".join(f"{job} {'up' if up else 'down'}" for job, up in sorted(jobs.items())))
    for job in (SERVICE_JOB, WORKER_JOB):
        if not jobs.get(job):
            lines.append(f"  {job} was not scraped: its figures below say {NO_DATA}")
    for label, query, shown in live_figures(window_s):
        value = _instant(prometheus_url, query)
        lines.append(f"  {label}: {NO_DATA if value is None else shown.format(value)}")
    lines.append("  dashboards as pictures: `memstack dashboards snapshot` (PNG per dashboard, last 15 min)")
    return lines


@contextlib.contextmanager
def demo_stack(backend_name: str | None, results: Path) -> Iterator[Callable[[], list[str]]]:
    """The stack with Prometheus (the external backend: if PROMETHEUS_URL names one), migrated, and
    the worker running; yields the function that reads back what Prometheus recorded so far."""
    from memstack.local.backend import CORE_SERVICES, get_backend
    from memstack.local.prometheus_server import SCRAPE_INTERVAL
    from memstack.service import migrate

    backend = get_backend(backend_name)
    with_prometheus = backend.name != "external" or bool(os.environ.get("PROMETHEUS_URL"))
    services = CORE_SERVICES + (("prometheus",) if with_prometheus else ())
    # Starting Neo4j and Prometheus takes a minute or more on a first run: say what is happening.
    print(f"starting the {backend.name} stack ({', '.join(services)}) and the consolidation worker", flush=True)
    backend.up(services)
    endpoints = backend.endpoints()
    migrate(endpoints.settings())
    started = time.monotonic()
    with running_worker(endpoints.env(), results / "worker.log"):

        def report() -> list[str]:
            prometheus = endpoints.prometheus_url
            if prometheus is None:
                return [
                    "live metrics: none, this stack has no Prometheus (external backend: set PROMETHEUS_URL); "
                    "`memstack dashboards snapshot --prometheus-url URL` draws the dashboards from one"
                ]
            # One more scrape, so the figures include the end of the run.
            time.sleep(float(SCRAPE_INTERVAL.removesuffix("s")) + 1)
            return report_live_data(prometheus.rstrip("/"), int(time.monotonic() - started) + 5)

        yield report
