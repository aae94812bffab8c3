"""Every Prometheus metric of the memory service and the worker, defined once.

Dashboards, alert rules and tests import the names from here (`ALL_METRICS` lists them).
The objects live in a dedicated registry, so importing this module twice in tests or
running several apps in one process never registers a name twice.

Labels are bounded: `route` is the route template (never the raw path), `status` the
numeric code, `store` one of STORES, `operation` an AgentMemory method name.
"""
from __future__ import annotations

import platform
from importlib import metadata
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

STORES = ("redis", "postgres", "neo4j")

HTTP_REQUEST_DURATION = "memstack_http_request_duration_seconds"
HTTP_REQUESTS_IN_FLIGHT = "memstack_http_requests_in_flight"
BACKEND_OPERATION_DURATION = "memstack_backend_operation_duration_seconds"
POOL_CONNECTIONS = "memstack_pool_connections"
BUILD_INFO = "memstack_build_info"

# Fine at the low end so a 1 ms p99 is readable (the SLO is 10 ms; the aim is far below it).
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

http_request_duration = Histogram(
    HTTP_REQUEST_DURATION, "HTTP request duration by route template, method and status",
    ("method", "route", "status"), buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
http_requests_in_flight = Gauge(
    HTTP_REQUESTS_IN_FLIGHT, "HTTP requests being served", registry=REGISTRY,
)
backend_operation_duration = Histogram(
    BACKEND_OPERATION_DURATION, "Duration of memory operations by the store they run on, and outcome",
    ("store", "operation", "outcome"), buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
build_info = Gauge(
    BUILD_INFO, "Always 1; the labels name the running build", ("version", "python"), registry=REGISTRY,
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

    def describe(self):
        return [GaugeMetricFamily(POOL_CONNECTIONS, "Connections of each client pool, by state", labels=("store", "state"))]

    def collect(self):
        family = GaugeMetricFamily(POOL_CONNECTIONS, "Connections of each client pool, by state", labels=("store", "state"))
        for source in list(self.sources):
            for store, state, value in source():
                family.add_metric((store, state), value)
        yield family


pool_collector = PoolCollector()
REGISTRY.register(pool_collector)

ALL_METRICS: tuple[str, ...] = (
    HTTP_REQUEST_DURATION,
    HTTP_REQUESTS_IN_FLIGHT,
    BACKEND_OPERATION_DURATION,
    POOL_CONNECTIONS,
    BUILD_INFO,
)
