"""Working-memory values read back as `json.loads` reads what `json.dumps` stored, by key, in
the whole context and as turns, including what the faster parser refuses and leaves to
`json.loads`: a lone surrogate (written as its escape) and nesting deeper than 200."""

from __future__ import annotations

import asyncio
import json

import pytest


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


VALUES = [
    pytest.param({"f": [0.1, 1e-300, 1.7976931348623157e308, -0.0], "i": [2**100, -(2**64)]}, id="numbers"),
    pytest.param({"text": 'é€𝄞 "quoted" \\ / \n\t\x00', "empty": ""}, id="escapes"),
    pytest.param({"lone": "\ud800 and \udfff"}, id="lone-surrogates"),
    pytest.param(_nested(500), id="nested-500"),
]


@pytest.mark.parametrize("value", VALUES)
async def test_a_value_reads_back_as_json_loads_reads_it(memory, value):
    expected = json.loads(json.dumps(value))
    await memory.set_working_context("v", value)
    assert await memory.get_working_context("v") == expected
    assert (await memory.get_working_context())["context"] == {"v": expected}


async def test_a_turn_with_a_lone_surrogate_reads_back(memory):
    entry = await memory.add_working_turn("user", "fine")
    w = await memory.working()
    odd = {**entry, "content": "half \udc80 pair"}
    await w.add_turn(odd)
    assert await memory.recent_working_turns() == [odd, entry]
    assert (await memory.get_working_context())["recent_turns"] == [odd, entry]


async def test_the_whole_context_read_drops_the_expired_values_it_finds(memory, clients):
    await memory.set_working_context("short", 1, ttl_seconds=0.05)
    await memory.set_working_context("other", 3, ttl_seconds=0.05)
    await memory.set_working_context("long", 2, ttl_seconds=60)
    await asyncio.sleep(0.2)
    ctx_key = (await memory.working()).ctx_key
    assert sorted(await clients.redis.hkeys(ctx_key)) == [b"long", b"other", b"short"]
    assert (await memory.get_working_context())["context"] == {"long": 2}
    assert await clients.redis.hkeys(ctx_key) == [b"long"]


async def test_a_value_set_again_after_the_read_found_it_expired_is_kept(memory, clients):
    # The read drops the fields it found expired by a script that drops only those still
    # expired: one set again in between (here: never expired) stays.
    await memory.set_working_context("renewed", 1, ttl_seconds=60)
    w = await memory.working()
    await clients.working_scripts.drop_expired(keys=[w.ctx_key], args=["renewed", "absent"])
    assert await memory.get_working_context("renewed") == 1


async def test_the_whole_context_read_takes_each_call_s_limits(memory):
    # The read's transaction is packed once for the limits it last ran with: others repack it.
    w = await memory.working()
    for i in range(4):
        await memory.add_working_turn("user", f"turn {i}")
        await memory.push_thought(f"thought {i}")
    for turns, thoughts in ((10, 10), (2, 0), (2, 0), (0, 3), (10, 10)):
        snapshot = await w.snapshot(turns, thoughts)
        assert [t["content"] for t in snapshot["recent_turns"]] == [f"turn {i}" for i in (3, 2, 1, 0)][:turns]
        assert [t["thought"] for t in snapshot["thoughts"]] == [f"thought {i}" for i in (3, 2, 1, 0)][:thoughts]
