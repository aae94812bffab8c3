"""The request deadline (`request_timeout_s`): an operation that outlives it leaves as a 503
naming the store it waited on; a cancellation from elsewhere stays a cancellation; operations
that finish in time are not touched by deadlines of others still running. And the runtime's
cached answer to whether spans are recorded."""

from __future__ import annotations

import asyncio
import math

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

from memory_core import MemoryClients
from memory_core.errors import StoreUnavailable
from memory_core.service import runtime as runtime_module
from memory_core.service.auth import TokenTable
from memory_core.service.config import ServiceSettings
from memory_core.service.runtime import Runtime, tracing


@pytest.fixture
async def runtime(migrated):
    clients = await MemoryClients.connect(migrated)
    try:
        yield Runtime(
            clients,
            TokenTable.parse("", "t"),
            trace.get_tracer("test"),
            ServiceSettings(request_timeout_s=0.2),
        )
    finally:
        await clients.close()


async def test_an_operation_past_its_deadline_is_store_unavailable(runtime):
    async def hangs() -> None:
        # Waiting inside the Redis client: the deadline names the store the task was awaiting.
        await runtime.clients.redis.execute_command("BLPOP", "deadline-test-empty", 30)

    with pytest.raises(StoreUnavailable) as raised:
        await asyncio.wait_for(runtime.run("postgres", "blocking_read", hangs()), 10)
    assert raised.value.store == "redis"
    assert "blocking_read timed out" in str(raised.value)
    assert asyncio.current_task().cancelling() == 0  # the deadline's cancellation was taken back


async def test_a_cancellation_from_elsewhere_stays_a_cancellation(runtime):
    task = asyncio.create_task(runtime.run("redis", "sleep", asyncio.sleep(30)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_operations_in_time_are_left_alone(runtime):
    """Quick operations beside a slow one that trips: only the slow one fails."""

    async def quick(i: int) -> int:
        await asyncio.sleep(0.01)
        return i

    slow = asyncio.create_task(runtime.run("redis", "slow", asyncio.sleep(30)))
    results = await asyncio.gather(*(runtime.run("redis", "quick", quick(i)) for i in range(50)))
    assert results == list(range(50))
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(slow, 10)
    # After the slow one tripped, a new operation is not cancelled by a stale deadline.
    assert await runtime.run("redis", "quick", quick(7)) == 7


def test_a_global_tracer_provider_is_noticed_within_a_second(monkeypatch):
    """The answer to "does a global provider record spans" is cached: a yes for good (OpenTelemetry
    sets the global provider once), a no for at most a second."""
    monkeypatch.setattr(runtime_module._GlobalTracing, "configured", False)
    monkeypatch.setattr(runtime_module._GlobalTracing, "checked_at", -math.inf)
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    assert not tracing(None)
    assert tracing(SdkTracerProvider())  # one handed in always counts
    monkeypatch.setattr(trace, "get_tracer_provider", SdkTracerProvider)
    assert not tracing(None)  # asked again only a second after the last time
    monkeypatch.setattr(runtime_module._GlobalTracing, "checked_at", -math.inf)
    assert tracing(None)
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    assert tracing(None)  # kept
