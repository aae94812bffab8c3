"""A deadline that expires while a store hangs (paused, cut off the network) answers naming the
store that hung, whichever store the operation's route is mainly about. Each driver talks to a
peer that accepts the connection and never answers: what a paused store looks like from outside."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
import redis.asyncio as aioredis
from neo4j import AsyncGraphDatabase

from memory_core.errors import StoreUnavailable, from_store_exception


@pytest.fixture
async def silent_peer():
    connections: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # held open, never answered

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in connections:
        writer.close()
    server.close()
    await server.wait_closed()


async def _redis(port: int) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        await client.get("k")
    finally:
        await client.aclose()


async def _postgres(port: int) -> None:
    await psycopg.AsyncConnection.connect(f"postgresql://u@127.0.0.1:{port}/db", connect_timeout=30)


async def _neo4j(port: int) -> None:
    async with AsyncGraphDatabase.driver(f"bolt://127.0.0.1:{port}", auth=("neo4j", "x")) as driver:
        await driver.verify_connectivity()


async def _expire(call) -> TimeoutError:
    try:
        async with asyncio.timeout(0.5):
            await call
    except TimeoutError as exc:
        return exc
    raise AssertionError("the silent peer answered")


@pytest.mark.parametrize(
    ("hung", "route_store", "call"),
    [("redis", "postgres", _redis), ("postgres", "redis", _postgres), ("neo4j", "postgres", _neo4j)],
)
async def test_a_timeout_names_the_store_that_hung(silent_peer, hung, route_store, call):
    mapped = from_store_exception(await _expire(call(silent_peer)), route_store, "store_turn")
    assert isinstance(mapped, StoreUnavailable)
    assert mapped.store == hung
    assert str(mapped) == f"{hung} is unavailable: store_turn timed out"


async def test_a_timeout_outside_any_driver_names_the_route_store():
    mapped = from_store_exception(await _expire(asyncio.sleep(5)), "postgres", "recall")
    assert isinstance(mapped, StoreUnavailable) and mapped.store == "postgres"
