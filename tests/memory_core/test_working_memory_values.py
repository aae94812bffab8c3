"""Working-memory values read back as `json.loads` reads what `json.dumps` stored, by key, in
the whole context and as turns, including what the faster parser refuses and leaves to
`json.loads`: a lone surrogate (written as its escape) and nesting deeper than 200."""

from __future__ import annotations

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
