"""`RedisClient.multi_exec`, the transaction working memory's reads and appends run in: the
replies in order, an error reply raised, and neither a failed nor a cancelled transaction
leaves a connection behind or an answer for the next caller."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.exceptions import ResponseError


@pytest.fixture
async def redis(clients):
    """The clients' Redis client (the one working memory runs on) and a key of this test."""
    key = f"test-multi-exec:{uuid.uuid4().hex}"
    yield clients.redis, key
    await clients.redis.delete(key, key + ":l")


def _in_use(client) -> int:
    return len(client.connection_pool._in_use_connections)


async def test_replies_in_order(redis):
    client, key = redis
    replies = await client.multi_exec(("SET", key, "v"), ("RPUSH", key + ":l", "a", "b"), ("LRANGE", key + ":l", 0, -1))
    assert replies == [b"OK", 2, [b"a", b"b"]]
    assert _in_use(client) == 0


async def test_a_command_error_is_raised_after_the_transaction_ran(redis):
    client, key = redis
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await client.multi_exec(("SET", key, "v"), ("HGET", key, "f"), ("RPUSH", key + ":l", "a"))
    assert _in_use(client) == 0
    # The other commands ran (a transaction does not roll back); every reply was read.
    assert await client.get(key) == b"v"
    assert await client.multi_exec(("LRANGE", key + ":l", 0, -1)) == [[b"a"]]


async def test_a_refused_transaction_raises_and_leaves_nothing_to_read(redis):
    client, key = redis
    with pytest.raises(ResponseError, match="unknown command"):
        await client.multi_exec(("SET", key, "v"), ("NOSUCHCOMMAND", key))
    assert _in_use(client) == 0
    # EXEC was aborted: nothing ran, and the next command reads its own answer.
    assert await client.get(key) is None
    assert await client.multi_exec(("SET", key, "w"), ("GET", key)) == [b"OK", b"w"]


async def test_a_cancelled_transaction_leaves_no_answer_for_the_next(redis):
    client, key = redis
    await client.rpush(key + ":l", "x")
    await client.set(key, "second")
    for _ in range(20):
        # Cancelled after it was sent and before its answers were read (a request's deadline).
        task = asyncio.create_task(client.multi_exec(("LRANGE", key + ":l", 0, -1), ("LLEN", key + ":l")))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _in_use(client) == 0
        assert await client.get(key) == b"second"
        assert await client.multi_exec(("GET", key)) == [b"second"]
