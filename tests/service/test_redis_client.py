"""The service's Redis client (memory_core.clients.make_redis) checks connections out and in
without redis-py's lock and bookkeeping: every connection comes back, a refused command and a
cancelled one leave no connection behind nor an answer for the next caller."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.exceptions import ResponseError

from memory_core.clients import RedisPool, make_redis


@pytest.fixture
async def redis(settings):
    client = make_redis(settings)
    key = f"test-redis-client:{uuid.uuid4().hex}"
    yield client, key
    await client.delete(key, key + ":s")
    await client.aclose()


def _in_use(client) -> int:
    pool = client.connection_pool
    assert isinstance(pool, RedisPool)
    return len(pool._in_use_connections)


async def test_concurrent_commands_all_return_their_connections(redis):
    client, key = redis
    await client.hset(key, mapping={f"f{i}": str(i) for i in range(60)})
    answers = await asyncio.gather(*(client.hget(key, f"f{i}") for i in range(60)))
    assert answers == [str(i).encode() for i in range(60)]
    assert _in_use(client) == 0
    # The connections opened for the burst are kept for the next one.
    assert 1 < len(client.connection_pool._available_connections) <= 60


async def test_a_refused_command_raises_and_releases_its_connection(redis):
    client, key = redis
    await client.set(key + ":s", b"text")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await client.hget(key + ":s", "f")
    assert _in_use(client) == 0
    assert await client.get(key + ":s") == b"text"


async def test_a_cancelled_command_leaves_no_answer_for_the_next(redis):
    client, key = redis
    await client.hset(key, mapping={"a": b"first", "b": b"second"})
    for _ in range(20):
        # Cancelled after it was sent and before its answer was read (the request deadline's cancel).
        task = asyncio.create_task(client.hget(key, "a"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _in_use(client) == 0
        assert await client.hget(key, "b") == b"second"


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "a" * 40, 1, "mc:{t|u|c}:ctx", "k", '{"v":"é"}', 600000, -3, 64),
        ("CONFIG GET", "maxmemory"),
        (b"HSET", b"k", b"f", b"\x00\r\n" * 5000, 0.1, 1e20, 3.0),
        ("SET", "k", memoryview(b"abc")),
    ],
)
def test_commands_are_packed_as_redis_py_packs_them(args):
    from redis.asyncio.connection import Connection

    from memory_core.clients import RedisConnection

    assert b"".join(RedisConnection().pack_command(*args)) == b"".join(Connection().pack_command(*args))


@pytest.mark.parametrize("bad", [None, True, object()])
def test_an_argument_redis_cannot_take_is_a_data_error(bad):
    from redis.exceptions import DataError

    from memory_core.clients import RedisConnection

    with pytest.raises(DataError):
        RedisConnection().pack_command("SET", "k", bad)
