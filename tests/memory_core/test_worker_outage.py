"""While a store is down the worker logs one line per attempt naming it, and waits longer each time."""

from __future__ import annotations

import asyncio
import logging
import socket

from pydantic import SecretStr

from memory_core import MemoryClients
from memory_core.worker.consumer import RETRY_MAX_S, Worker, retry_delay


def test_retry_delay_doubles_up_to_its_cap():
    assert [retry_delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert retry_delay(6) == RETRY_MAX_S
    assert retry_delay(10_000) == RETRY_MAX_S


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_redis_down_is_one_warning_line_naming_redis(settings, caplog):
    # Postgres and Neo4j are up; Redis' address has nobody listening (connections are refused).
    down = settings.model_copy(update={"redis_url": SecretStr(f"redis://127.0.0.1:{_closed_port()}/0")})
    clients = await MemoryClients.connect(down)
    worker = Worker(clients, "outage", poll_s=0.05)
    caplog.set_level(logging.INFO, logger="memory_core.worker")
    try:
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(3.5)  # 1 s, then 2 s: two failed attempts
        worker.stopping.set()
        await asyncio.wait_for(running, 10)
    finally:
        await clients.close()
    failures = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert failures, caplog.text
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in failures), caplog.text
    assert all(r.getMessage().startswith("redis is unavailable") for r in failures), caplog.text
    assert "\n" not in failures[0].getMessage()
    # Without the backoff, a failure a second: 4 in 3.5 s.
    assert len(failures) <= 3, caplog.text
