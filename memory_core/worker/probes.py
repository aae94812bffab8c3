"""The worker's probe endpoints (/health, /ready, /metrics) on their own port, and the one entry
point that runs the worker with them (`memstack worker`, `python -m memory_core.worker`).

The probe server is a few lines of asyncio rather than a second uvicorn: uvicorn's signal
capture would re-raise SIGTERM once the probe server stopped, killing the worker mid-job.
Worker readiness needs Redis and Postgres; Neo4j being down only delays outbox replay.
/metrics first reads the backlog (stream, outbox, dead letters, store checks): a few cheap
queries per scrape, none on the job path.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import metrics
from ..clients import MemoryClients
from ..health import check_stores, pool_usage, readiness
from ..settings import Settings
from .consumer import Worker

log = logging.getLogger(__name__)
WORKER_REQUIRES = ("redis", "postgres")
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def read_backlog(clients: MemoryClients, timeout: float) -> None:
    """Refresh `metrics.worker_gauges`; a store that does not answer leaves its values out."""
    s, gauges = clients.settings, metrics.worker_gauges
    answered = {store: result == "ok" for store, result in (await check_stores(clients, timeout)).items()}
    gauges.store_up = {store: float(ok) for store, ok in answered.items()}

    async def redis_backlog() -> None:
        async with clients.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(s.reflection_stream)
            pipe.xlen(s.reflection_stream + ":dead")
            stream, dead = await pipe.execute()
        pending = 0
        if stream:
            try:
                pending = (await clients.redis.xpending(s.reflection_stream, s.reflection_group))["pending"]
            except Exception:
                pending = 0
        gauges.values.update(
            {
                metrics.REFLECTION_STREAM_LENGTH: stream,
                metrics.REFLECTION_DEAD_LETTERS: dead,
                metrics.REFLECTION_PENDING: pending,
            }
        )

    async def outbox_backlog() -> None:
        async with clients.maintenance_transaction() as conn:
            cur = await conn.execute(
                "SELECT coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE attempts < %(max)s)), 0),"
                " count(*) FILTER (WHERE attempts < %(max)s), count(*) FILTER (WHERE attempts >= %(max)s)"
                " FROM graph_outbox",
                {"max": s.outbox_max_attempts},
            )
            row = await cur.fetchone()
            assert row is not None  # an aggregate always returns one row
            age, pending, failed = row
        gauges.values[metrics.OUTBOX_OLDEST_AGE] = float(age)
        gauges.outbox_rows = {"pending": pending, "failed": failed}

    for name, read in (("redis", redis_backlog), ("postgres", outbox_backlog)):
        if not answered[name]:
            continue
        try:
            await asyncio.wait_for(read(), timeout)
        except Exception as exc:
            log.warning("worker backlog from %s not read: %s", name, exc)


async def _answer(clients: MemoryClients, path: str, timeout: float) -> tuple[int, str, bytes]:
    if path == "/health":
        return 200, "application/json", b'{"status":"ok"}'
    if path == "/ready":
        status, body = readiness(await check_stores(clients, timeout), WORKER_REQUIRES)
        return status, "application/json", json.dumps(body).encode()
    if path == "/metrics":
        await read_backlog(clients, timeout)
        return 200, CONTENT_TYPE_LATEST, generate_latest(metrics.REGISTRY)
    return 404, "application/json", b'{"detail":"not found"}'


def probe_handler(
    clients: MemoryClients, timeout: float = 1.0
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            method, _, rest = request_line.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method != "GET":
                status, ctype, body = 405, "application/json", b'{"detail":"GET only"}'
            else:
                status, ctype, body = await _answer(clients, path, timeout)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    return handle


async def serve_worker(settings: Settings, host: str, port: int) -> None:
    async with await MemoryClients.connect(settings) as clients:
        server = await asyncio.start_server(probe_handler(clients), host, port)
        log.info("worker probes on %s:%d", host, port)
        worker = Worker(clients)
        worker.install_signal_handlers()

        def source() -> Iterator[tuple[str, str, float]]:
            return pool_usage(clients)

        metrics.pool_collector.sources.append(source)
        try:
            await worker.run()
        finally:
            metrics.pool_collector.sources.remove(source)
            server.close()
            await server.wait_closed()


def run_worker(
    settings: Settings | None = None, host: str = "127.0.0.1", port: int | None = None, log_level: str = "info"
) -> None:
    """The worker's one entry point: JSON logs, OTLP tracing when configured, probes, the loop.

    `port` None: the probe port of the settings (MEMORY_WORKER_PROBE_PORT, else its default).
    """
    from ..telemetry import setup_json_logging, setup_tracing

    settings = settings or Settings()
    setup_json_logging(log_level.upper())
    provider = setup_tracing("memstack-worker")
    try:
        asyncio.run(serve_worker(settings, host, settings.worker_probe_port if port is None else port))
    finally:
        if provider is not None:
            provider.shutdown()
