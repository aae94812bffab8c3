"""Shared pieces of the memory_core benchmarks.

Benchmarks are plain (sync) tests driving their own event loop, so pytest-benchmark times
exactly one awaited operation per round. Percentiles are computed from pytest-benchmark's raw
per-round timings and written to `$MEMSTACK_HOME/benchmarks/memory_core.json` (and printed). A missed target
fails the session (exit 1) after every benchmark has run and been recorded."""

from __future__ import annotations

import asyncio

import pytest
from latency import VERDICTS

from memory_core import MemoryClients, migrate


def pytest_terminal_summary(terminalreporter):
    if VERDICTS:
        terminalreporter.section("benchmark targets")
        for section, name, target, passed in VERDICTS:
            terminalreporter.write_line(f"{'pass' if passed else 'FAIL'}  {section}/{name}: {target}")


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0 and any(not passed for *_, passed in VERDICTS):
        session.exitstatus = 1


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
