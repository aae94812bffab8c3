"""What the routes share per process: the clients, the token table, the tracer, the limits."""

from __future__ import annotations

import asyncio
import math
from asyncio import get_running_loop
from collections.abc import Awaitable
from functools import lru_cache
from time import monotonic, perf_counter
from typing import TypeVar

from fastapi import HTTPException
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import Histogram

from .. import metrics
from ..clients import MemoryClients
from ..errors import (
    MemoryCoreError,
    SchemaNotMigrated,
    StoreUnavailable,
    from_store_exception,
)
from ..memory import AgentMemory
from ..stores.graph import set_projection
from .auth import TokenTable
from .config import ServiceSettings

T = TypeVar("T")
# How late a request's deadline (`request_timeout_s`) may trip.
DEADLINE_TICK_S = 0.05


# Tracer providers that record nothing: OpenTelemetry's default before one is configured.
_NO_TRACING = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


class _GlobalTracing:
    """Whether a global tracer provider records spans. Asking OpenTelemetry costs, while none is
    configured, an environment lookup that raises KeyError (5% of the samples of a working-memory
    request under load); a global provider once set stays set, so a yes is kept and a no is asked
    again at most once a second."""

    configured = False
    checked_at = -math.inf


def tracing(provider: trace.TracerProvider | None) -> bool:
    """Whether spans are recorded: a provider was handed in, or a global one was configured."""
    if provider is not None or _GlobalTracing.configured:
        return True
    now = monotonic()
    if now - _GlobalTracing.checked_at < 1.0:
        return False
    _GlobalTracing.checked_at = now
    _GlobalTracing.configured = not isinstance(trace.get_tracer_provider(), _NO_TRACING)
    return _GlobalTracing.configured


@lru_cache(maxsize=4096)
def _backend_duration(store: str, operation: str, outcome: str) -> Histogram:
    # One histogram child per label set, looked up once: `labels()` takes a lock on every call.
    return metrics.backend_operation_duration.labels(store, operation, outcome)


class _Deadline:
    __slots__ = ("at", "cancelling", "expired", "task")

    def __init__(self, task: asyncio.Task[object], at: float):
        self.task = task
        self.at = at
        self.cancelling = task.cancelling()
        self.expired = False


class Deadlines:
    """Cancels an operation's task once its deadline passed, as `asyncio.timeout` does, but with
    one timer for every operation in flight: the timer checks them every `tick_s`, so a deadline
    trips up to `tick_s` late. `asyncio.timeout` schedules and cancels a timer per operation,
    which costs a working-memory request more than its own code (about 5 us each)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick_s: float):
        self.loop = loop
        self.tick_s = tick_s
        self._running: set[_Deadline] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, timeout_s: float) -> _Deadline:
        task = asyncio.current_task(self.loop)
        if task is None:
            raise RuntimeError("a deadline needs to run in a task")
        deadline = _Deadline(task, self.loop.time() + timeout_s)
        self._running.add(deadline)
        if self._timer is None:
            self._timer = self.loop.call_later(self.tick_s, self._check)
        return deadline

    def finish(self, deadline: _Deadline) -> None:
        self._running.discard(deadline)

    @staticmethod
    def tripped(deadline: _Deadline) -> bool:
        """Whether the deadline caused the task's cancellation, which is then taken back (called
        once, on a CancelledError); not when something else cancelled the task too."""
        return deadline.expired and deadline.task.uncancel() <= deadline.cancelling

    def _check(self) -> None:
        now = self.loop.time()
        for deadline in self._running:
            if not deadline.expired and deadline.at <= now:
                deadline.expired = True
                deadline.task.cancel()
        self._timer = self.loop.call_later(self.tick_s, self._check) if self._running else None


class Runtime:
    def __init__(
        self,
        clients: MemoryClients,
        tokens: TokenTable,
        tracer: trace.Tracer,
        settings: ServiceSettings,
        tracer_provider: trace.TracerProvider | None = None,
    ):
        self.clients = clients
        self.tokens = tokens
        self.tracer = tracer
        self.settings = settings
        self.tracer_provider = tracer_provider
        self._deadlines: Deadlines | None = None
        set_projection(clients, settings.graph_projection)

    def memory(
        self, tenant_id: str, user_id: str, conversation_id: str | None = None, agent_id: str | None = None
    ) -> AgentMemory:
        return AgentMemory(tenant_id, user_id, conversation_id, agent_id=agent_id, clients=self.clients)

    async def run(self, store: str, operation: str, call: Awaitable[T]) -> T:
        """Await one memory operation: its span, its duration by store, and a store failure or a
        timeout as `StoreUnavailable` (memory_core's refusals pass through to their handlers)."""
        start = perf_counter()
        outcome = "error"
        loop = get_running_loop()
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self._deadlines = Deadlines(loop, DEADLINE_TICK_S)
        deadline = deadlines.start(self.settings.request_timeout_s)
        # The span is started and made current by hand, as `start_as_current_span` would (with
        # neither exception recording nor status from exceptions), so that a request that
        # records no spans pays for no context manager at all; after the deadline, which can
        # raise, right before the block that ends it.
        span: Span | None = None
        if tracing(self.tracer_provider):
            span = self.tracer.start_span(f"{store} {operation}", kind=SpanKind.CLIENT)
            attached = otel_context.attach(trace.set_span_in_context(span))
        try:
            try:
                result = await call
            except asyncio.CancelledError as cancelled:
                if deadlines.tripped(deadline):
                    raise TimeoutError(f"{operation} exceeded {self.settings.request_timeout_s} s") from cancelled
                raise
            finally:
                deadlines.finish(deadline)
            outcome = "ok"
            return result
        except (StoreUnavailable, SchemaNotMigrated) as exc:
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
        except (MemoryCoreError, HTTPException):
            outcome = "rejected"
            raise
        except Exception as exc:
            mapped = from_store_exception(exc, store, operation)
            if mapped is None:
                raise
            if isinstance(mapped, (StoreUnavailable, SchemaNotMigrated)):
                if span is not None:
                    span.set_status(Status(StatusCode.ERROR, str(mapped)))
            else:
                outcome = "rejected"
            raise mapped from exc
        finally:
            _backend_duration(store, operation, outcome).observe(perf_counter() - start)
            if span is not None:
                if span.is_recording():
                    span.set_attribute("db.system", store)
                    span.set_attribute("memory.operation", operation)
                    span.set_attribute("memory.outcome", outcome)
                otel_context.detach(attached)
                span.end()
