"""The consolidation worker with its probe endpoints (/health, /ready, /metrics) on their own port.

The probe server is a few lines of asyncio rather than a second uvicorn: uvicorn's signal
capture would re-raise SIGTERM once the probe server stopped, killing the worker mid-job.
Worker readiness needs Redis and Postgres; Neo4j being down only delays outbox replay.
"""
from __future__ import annotations

import asyncio
import json
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import metrics
from ..clients import MemoryClients
from ..settings import Settings
from .health import check_stores, readiness
from .runtime import pool_usage

log = logging.getLogger(__name__)
WORKER_REQUIRES = ("redis", "postgres")
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def _answer(clients: MemoryClients, path: str, timeout: float) -> tuple[int, str, bytes]:
    if path == "/health":
        return 200, "application/json", b'{"status":"ok"}'
    if path == "/ready":
        status, body = readiness(await check_stores(clients, timeout), WORKER_REQUIRES)
        return status, "application/json", json.dumps(body).encode()
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, generate_latest(metrics.REGISTRY)
    return 404, "application/json", b'{"detail":"not found"}'


def probe_handler(clients: MemoryClients, timeout: float = 1.0):
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
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    return handle


async def serve_worker(settings: Settings, host: str, port: int) -> None:
    from ..worker import Worker

    async with await MemoryClients.connect(settings) as clients:
        server = await asyncio.start_server(probe_handler(clients), host, port)
        log.info("worker probes on %s:%d", host, port)
        worker = Worker(clients)
        worker.install_signal_handlers()

        def source():
            return pool_usage(clients)

        metrics.pool_collector.sources.append(source)
        try:
            await worker.run()
        finally:
            metrics.pool_collector.sources.remove(source)
            server.close()
            await server.wait_closed()
