"""The consolidation worker loop: reflection jobs from a Redis Stream consumer group (ack,
retry of stale pending entries, dead-letter stream after N deliveries), outbox replay, and
periodic jobs each guarded by a lease so replicas never run one concurrently or twice within
its interval. SIGTERM/SIGINT set `stopping`: the current job finishes, then the loop exits."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from opentelemetry import trace
from redis.exceptions import ResponseError

from .. import metrics
from ..clients import MemoryClients
from ..errors import SchemaNotMigrated, StoreUnavailable, from_store_exception
from ..stores.graph import GRAPH_UNAVAILABLE
from . import jobs
from .lease import Lease

log = logging.getLogger(__name__)

PERIODIC_JOBS: dict[str, Callable[[MemoryClients, str | None], Awaitable[object]]] = {
    "decay": jobs.decay_salience,
    "archive": jobs.archive_old_conversations,
    "cleanup": jobs.cleanup,
    "tenant_indexes": jobs.index_large_tenants,
}


_tracer = trace.get_tracer("memory_core.worker")
# A Redis Stream entry as redis-py returns it: (id, {field: value}).
StreamEntry = tuple[bytes, dict[bytes, bytes]]


# The worker's wait after a failed iteration doubles from the first to the last, so an outage
# of several minutes costs a few log lines, and the worker resumes within RETRY_MAX_S once it ends.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0


def retry_delay(failures: int) -> float:
    """Seconds to wait after `failures` consecutive failed iterations (1, 2, 4, ... capped)."""
    return min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** min(failures - 1, 16))


def store_outage(exc: BaseException) -> StoreUnavailable | SchemaNotMigrated | None:
    """The store outage (or missing schema) `exc` stands for, or None for anything else (a bug)."""
    # An OSError the graph driver raises (it wraps few of its socket errors) means Neo4j.
    mapped = from_store_exception(exc, "neo4j" if isinstance(exc, GRAPH_UNAVAILABLE) else "a store")
    return mapped if isinstance(mapped, (StoreUnavailable, SchemaNotMigrated)) else None


@contextmanager
def timed(task: str) -> Iterator[None]:
    """One run of `task`: a span (exported when tracing is configured, else a no-op) and an
    observation in the job-duration histogram, with its outcome."""
    started = time.perf_counter()
    outcome = "error"
    with _tracer.start_as_current_span(f"worker {task}") as span:
        try:
            yield
            outcome = "ok"
        finally:
            span.set_attribute("memory.outcome", outcome)
            metrics.worker_job_duration.labels(task=task, outcome=outcome).observe(time.perf_counter() - started)


class Worker:
    def __init__(
        self,
        clients: MemoryClients,
        consumer_name: str | None = None,
        *,
        only_tenant: str | None = None,
        poll_s: float = 0.2,
    ):
        self.clients = clients
        # The longest an idle loop waits for a reflection job before replaying the outbox again:
        # with graph projection left to the worker, the graph lags by about this much.
        self.poll_s = poll_s
        self.only_tenant = only_tenant  # confine the periodic jobs to one tenant (tests)
        self.settings = clients.settings
        self.consumer = consumer_name or f"{socket.gethostname()}-{os.getpid()}"
        self.stopping = asyncio.Event()
        self.dead_letter_stream = self.settings.reflection_stream + ":dead"

    async def ensure_group(self) -> None:
        try:
            await self.clients.redis.xgroup_create(
                self.settings.reflection_stream, self.settings.reflection_group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def process_reflections(self, block_ms: int | None = None) -> int:
        """Retry stale pending jobs, then read new ones; returns how many were handled. The read
        blocks for `block_ms` (default: half the Redis socket timeout, which a longer block would trip)."""
        s, redis = self.settings, self.clients.redis
        if block_ms is None:
            block_ms = max(1, int(s.redis_timeout_s * 500))
        handled = 0
        stale = await redis.xpending_range(
            s.reflection_stream, s.reflection_group, min="-", max="+", count=50, idle=s.job_claim_idle_ms
        )
        retry: list[bytes | str | int | memoryview] = []
        for entry in stale:
            message_id = cast(bytes, entry["message_id"])
            if int(entry["times_delivered"]) >= s.reflection_max_deliveries:
                await self._dead_letter(message_id)
            else:
                retry.append(message_id)
        messages: list[StreamEntry] = []
        if retry:
            claimed = await redis.xclaim(
                s.reflection_stream, s.reflection_group, self.consumer, s.job_claim_idle_ms, retry
            )
            messages += cast(list[StreamEntry], claimed)
        if not self.stopping.is_set():
            read = await redis.xreadgroup(
                s.reflection_group, self.consumer, {s.reflection_stream: ">"}, count=10, block=block_ms
            )
            for _, entries in cast(list[tuple[bytes, list[StreamEntry]]], read or []):
                messages += entries
        for message_id, raw in messages:
            if not raw:  # deleted from the stream (trimmed) while pending
                await redis.xack(s.reflection_stream, s.reflection_group, message_id)
                continue
            try:
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                with timed("reflection"):
                    await jobs.process_reflection(self.clients, fields)
            except Exception:
                log.exception("reflection job %s failed; it will be retried", message_id)
                continue
            await redis.xack(s.reflection_stream, s.reflection_group, message_id)
            handled += 1
        return handled

    async def _dead_letter(self, message_id: bytes) -> None:
        s, redis = self.settings, self.clients.redis
        entries = cast(list[StreamEntry], await redis.xrange(s.reflection_stream, min=message_id, max=message_id))
        fields: dict[Any, Any] = dict(entries[0][1]) if entries else {}
        fields[b"original_id"] = message_id
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letter_stream, fields, maxlen=s.reflection_stream_maxlen, approximate=True)
            pipe.xack(s.reflection_stream, s.reflection_group, message_id)
            await pipe.execute()
        log.error("reflection job %s moved to %s", message_id, self.dead_letter_stream)

    async def run_periodic(self, force: bool = False) -> dict[str, object]:
        """Run each periodic job that is due and whose lease this worker wins."""
        results = {}
        redis = self.clients.redis
        interval_ms = int(self.settings.periodic_interval_s * 1000)
        for name, job in PERIODIC_JOBS.items():
            if self.stopping.is_set():
                break
            done_key = f"{self.settings.working_key_prefix}:job:{name}:done"
            if not force and await redis.exists(done_key):
                continue
            lease = Lease(redis, f"{self.settings.working_key_prefix}:job:{name}:lease", ttl_ms=15 * 60 * 1000)
            if not await lease.acquire():
                continue
            try:
                if not force and await redis.exists(done_key):
                    continue
                with timed(name):
                    results[name] = await job(self.clients, self.only_tenant)
                await redis.set(done_key, "1", px=interval_ms)
                log.info("periodic job %s: %s", name, results[name])
            finally:
                await lease.release()
        return results

    async def run(self) -> None:
        log.info("worker %s started", self.consumer)
        group_ready = False
        failures = 0
        while not self.stopping.is_set():
            try:
                # Inside the loop: a worker started while Redis is down waits for it.
                if not group_ready:
                    await self.ensure_group()
                    group_ready = True
                await self.process_reflections(block_ms=max(1, int(self.poll_s * 1000)))
                if not self.stopping.is_set():
                    with timed("outbox_replay"):
                        await jobs.replay_outbox(self.clients, stop=self.stopping)
                if not self.stopping.is_set():
                    await self.run_periodic()
                failures = 0
            except Exception as exc:
                failures += 1
                delay = retry_delay(failures)
                outage = store_outage(exc)
                if outage is None:
                    log.exception("worker iteration failed, retrying in %.0f s", delay)
                else:
                    # A known outage: one line per attempt, no traceback (it says nothing new).
                    log.warning("%s; retrying in %.0f s", outage, delay)
                await self._sleep(delay)
        try:
            await self.leave_group()
        except Exception as exc:
            outage = store_outage(exc)
            if outage is None:
                log.exception("worker %s could not leave the consumer group", self.consumer)
            else:
                log.warning("worker %s could not leave the consumer group: %s", self.consumer, outage)
        log.info("worker %s stopped", self.consumer)

    async def leave_group(self) -> None:
        """Drop this consumer from the group, unless it still holds pending jobs (they would go
        with it). Consumer names are per process, so each restart would otherwise add one."""
        s, redis = self.settings, self.clients.redis
        if not await redis.xpending_range(
            s.reflection_stream, s.reflection_group, "-", "+", 1, consumername=self.consumer
        ):
            await redis.xgroup_delconsumer(s.reflection_stream, s.reflection_group, self.consumer)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
