"""Every Prometheus metric of the memory service and the worker, defined once.

Dashboards, alert rules and tests import the names from here (`ALL_METRICS` lists them).
The objects live in a dedicated registry, so importing this module twice in tests or
running several apps in one process never registers a name twice.

Labels are bounded: `route` is the route template (never the raw path), `status` the
numeric code, `store` one of STORES, `operation` an AgentMemory method name.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata

from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

STORES = ("redis", "postgres", "neo4j")

HTTP_REQUEST_DURATION = "memstack_http_request_duration_seconds"
HTTP_REQUESTS_IN_FLIGHT = "memstack_http_requests_in_flight"
BACKEND_OPERATION_DURATION = "memstack_backend_operation_duration_seconds"
POOL_CONNECTIONS = "memstack_pool_connections"
BUILD_INFO = "memstack_build_info"
# Process metrics carry the prefix, so they never mix with an exporter's `process_*` series.
PROCESS_PREFIX = "memstack"
PROCESS_CPU_SECONDS = f"{PROCESS_PREFIX}_process_cpu_seconds_total"
PROCESS_RESIDENT_MEMORY = f"{PROCESS_PREFIX}_process_resident_memory_bytes"

# The worker's: job durations observed as jobs run, the rest read at scrape time (see WorkerGauges).
WORKER_JOB_DURATION = "memstack_worker_job_duration_seconds"
OUTBOX_OLDEST_AGE = "memstack_outbox_oldest_row_age_seconds"
OUTBOX_ROWS = "memstack_outbox_rows"
REFLECTION_STREAM_LENGTH = "memstack_reflection_stream_length"
REFLECTION_PENDING = "memstack_reflection_pending_jobs"
REFLECTION_DEAD_LETTERS = "memstack_reflection_dead_letters"
STORE_UP = "memstack_store_up"
# Durable write to its Neo4j projection, by the path that projected it: inline (in the request),
# background (the service process, after answering), worker (the worker's outbox replay and jobs).
GRAPH_PROJECTION_LAG = "memstack_graph_projection_lag_seconds"
PROJECTION_PATHS = ("inline", "background", "worker")
# Values of the `task` label of WORKER_JOB_DURATION (not `job`: Prometheus owns that label).
WORKER_TASKS = ("reflection", "outbox_replay", "decay", "archive", "cleanup", "tenant_indexes")

# Fine at the low end so a 1 ms p99 is readable (the SLO is 10 ms; the aim is far below it).
LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

http_request_duration = Histogram(
    HTTP_REQUEST_DURATION,
    "HTTP request duration by route template, method and status",
    ("method", "route", "status"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
http_requests_in_flight = Gauge(
    HTTP_REQUESTS_IN_FLIGHT,
    "HTTP requests being served",
    registry=REGISTRY,
)
backend_operation_duration = Histogram(
    BACKEND_OPERATION_DURATION,
    "Duration of memory operations by the store they run on, and outcome",
    ("store", "operation", "outcome"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
# A job runs from milliseconds (an empty outbox poll) to minutes (a cleanup of a large tenant).
JOB_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
worker_job_duration = Histogram(
    WORKER_JOB_DURATION,
    "Duration of worker jobs by task and outcome (ok | error)",
    ("task", "outcome"),
    buckets=JOB_BUCKETS,
    registry=REGISTRY,
)
# From milliseconds (projected right after the write) to minutes (a backlog after a Neo4j outage).
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
graph_projection_lag = Histogram(
    GRAPH_PROJECTION_LAG,
    "Time from a durable write to its Neo4j projection, by the path that projected it",
    ("path",),
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)
for _path in PROJECTION_PATHS:  # exported from the start, so a rate over them is 0, not absent
    graph_projection_lag.labels(_path)
ProcessCollector(namespace=PROCESS_PREFIX, registry=REGISTRY)
build_info = Gauge(
    BUILD_INFO,
    "Always 1; the labels name the running build",
    ("version", "python"),
    registry=REGISTRY,
)


def build_version() -> str:
    try:
        return metadata.version("memstack")
    except metadata.PackageNotFoundError:
        return "unknown"


build_info.labels(version=build_version(), python=platform.python_version()).set(1)


class PoolCollector(Collector):
    """Pool usage read at scrape time from the live clients: no cost on the request path.

    `sources` returns (store, state, value) triples; the service registers one reading its
    MemoryClients. States: `in_use`, `idle`, `max`, `waiting`."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Iterable[tuple[str, str, float]]]] = []

    def describe(self) -> list[Metric]:
        return [
            GaugeMetricFamily(POOL_CONNECTIONS, "Connections of each client pool, by state", labels=("store", "state"))
        ]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            POOL_CONNECTIONS, "Connections of each client pool, by state", labels=("store", "state")
        )
        for source in list(self.sources):
            for store, state, value in source():
                family.add_metric((store, state), value)
        yield family


pool_collector = PoolCollector()
REGISTRY.register(pool_collector)


class WorkerGauges(Collector):
    """The worker's backlog, as its probe server last read it just before a scrape.

    The probe server awaits the reads (a few cheap queries) when /metrics is asked for, then
    renders: nothing runs on the job path, and a worker that is not scraped pays nothing.
    A value never read is not exported, rather than exported as a misleading zero."""

    _HELP = {
        OUTBOX_OLDEST_AGE: "Age of the oldest outbox row not yet projected to the graph (0 when none)",
        REFLECTION_STREAM_LENGTH: "Entries in the reflection job stream",
        REFLECTION_PENDING: "Reflection jobs delivered to a worker and not yet acknowledged",
        REFLECTION_DEAD_LETTERS: "Entries in the reflection dead-letter stream",
    }

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.outbox_rows: dict[str, float] = {}  # state (pending | failed) -> rows
        self.store_up: dict[str, float] = {}

    def describe(self) -> list[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[GaugeMetricFamily]:
        for name, help_text in self._HELP.items():
            yield GaugeMetricFamily(name, help_text)
        yield GaugeMetricFamily(
            OUTBOX_ROWS, "Outbox rows by state: pending, or failed (out of attempts)", labels=("state",)
        )
        yield GaugeMetricFamily(
            STORE_UP, "1 when the store answered the worker's last check, else 0", labels=("store",)
        )

    def collect(self) -> Iterator[Metric]:
        for family in self._families():
            if family.name == OUTBOX_ROWS:
                for state, value in self.outbox_rows.items():
                    family.add_metric((state,), value)
            elif family.name == STORE_UP:
                for store, value in self.store_up.items():
                    family.add_metric((store,), value)
            elif family.name in self.values:
                family.add_metric((), self.values[family.name])
            if family.samples:
                yield family


worker_gauges = WorkerGauges()
REGISTRY.register(worker_gauges)

ALL_METRICS: tuple[str, ...] = (
    HTTP_REQUEST_DURATION,
    HTTP_REQUESTS_IN_FLIGHT,
    BACKEND_OPERATION_DURATION,
    POOL_CONNECTIONS,
    BUILD_INFO,
    PROCESS_CPU_SECONDS,
    PROCESS_RESIDENT_MEMORY,
    WORKER_JOB_DURATION,
    OUTBOX_OLDEST_AGE,
    OUTBOX_ROWS,
    REFLECTION_STREAM_LENGTH,
    REFLECTION_PENDING,
    REFLECTION_DEAD_LETTERS,
    STORE_UP,
    GRAPH_PROJECTION_LAG,
)
