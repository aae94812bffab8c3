"""Shared pieces of the memory_core benchmarks.

Benchmarks are plain (sync) tests driving their own event loop, so pytest-benchmark times
exactly one awaited operation per round. Percentiles are computed from pytest-benchmark's raw
per-round timings and written to `.benchmarks/memory_core.json` (and printed)."""
from __future__ import annotations

import asyncio

import pytest

from memory_core import MemoryClients, migrate

@pytest.fixture(scope="module")
def bench(settings):
    """(loop, clients): one event loop and one set of clients for a benchmark module."""
    loop = asyncio.new_event_loop()
    clients = loop.run_until_complete(MemoryClients.connect(settings))
    loop.run_until_complete(migrate(settings, clients.neo4j))
    try:
        yield loop, clients
    finally:
        loop.run_until_complete(clients.close())
        loop.close()
