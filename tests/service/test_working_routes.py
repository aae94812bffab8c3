"""The working-memory routes, exactly as clients and the load test use them."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.responses import Response

from memory_core.clients import RedisConnection
from memory_core.memory import AgentMemory
from memory_core.service.routes import JsonText

W = "/v1/working/user-1/conv-1"


async def test_put_then_get_a_key(api):
    r = await api.call("PUT", f"{W}/context/plan", json={"value": {"steps": [1, 2]}, "ttl_seconds": 60})
    assert r.status_code == 204
    r = await api.call("GET", f"{W}/context/plan")
    assert r.status_code == 200 and r.json() == {"value": {"steps": [1, 2]}}


async def test_missing_key_is_404(api):
    r = await api.call("GET", f"{W}/context/nothing")
    assert r.status_code == 404 and "nothing" in r.json()["detail"]


async def test_delete_a_key(api):
    await api.call("PUT", f"{W}/context/k", json={"value": "v"})
    assert (await api.call("DELETE", f"{W}/context/k")).status_code == 204
    assert (await api.call("GET", f"{W}/context/k")).status_code == 404
    assert (await api.call("DELETE", f"{W}/context/k")).status_code == 404


async def test_get_and_clear_all_context(api):
    await api.call("PUT", f"{W}/context/a", json={"value": 1})
    await api.call("PUT", f"{W}/context/b", json={"value": [True, None]})
    await api.call("POST", f"{W}/turns", json={"role": "user", "content": "hi"})
    await api.call("POST", f"{W}/thoughts", json={"thought": "think"})
    snapshot = (await api.call("GET", f"{W}/context")).json()
    assert snapshot["context"] == {"a": 1, "b": [True, None]}
    assert [t["content"] for t in snapshot["recent_turns"]] == ["hi"]
    assert [t["thought"] for t in snapshot["thoughts"]] == ["think"]
    assert (await api.call("DELETE", f"{W}/context")).status_code == 204
    assert (await api.call("GET", f"{W}/context")).json() == {"context": {}, "recent_turns": [], "thoughts": []}


async def test_turns_newest_first_with_limit(api):
    for i in range(5):
        r = await api.call(
            "POST", f"{W}/turns", json={"role": "assistant" if i % 2 else "user", "content": f"turn {i}"}
        )
        assert r.status_code == 201 and r.json()["turn"]["content"] == f"turn {i}"
    r = await api.call("GET", f"{W}/turns", params={"limit": 3})
    assert [t["content"] for t in r.json()["turns"]] == ["turn 4", "turn 3", "turn 2"]
    assert len((await api.call("GET", f"{W}/turns")).json()["turns"]) == 5


async def test_thoughts_newest_first(api):
    for text in ("first", "second"):
        assert (await api.call("POST", f"{W}/thoughts", json={"thought": text})).status_code == 204
    r = await api.call("GET", f"{W}/thoughts", params={"limit": 1})
    assert [t["thought"] for t in r.json()["thoughts"]] == ["second"]


async def test_conversations_and_users_are_separate(api):
    await api.call("PUT", f"{W}/context/k", json={"value": "conv-1"})
    assert (await api.call("GET", "/v1/working/user-1/conv-2/context/k")).status_code == 404
    assert (await api.call("GET", "/v1/working/user-2/conv-1/context/k")).status_code == 404


async def test_priority_and_full_context_is_409(api, settings):
    cap = settings.working_max_context_keys
    for i in range(cap):
        r = await api.call("PUT", f"{W}/context/k{i}", json={"value": i, "priority": 10})
        assert r.status_code == 204
    r = await api.call("PUT", f"{W}/context/low", json={"value": 0, "priority": 1})
    assert r.status_code == 409 and "cap" in r.json()["detail"]


async def test_scripts_unknown_to_redis_are_loaded_again(api):
    """After a restart on empty data or a SCRIPT FLUSH, Redis knows none of the Lua scripts."""
    await api.call("PUT", f"{W}/context/kept", json={"value": 1})
    await api.clients.redis.script_flush()
    assert (await api.clients.redis.script_exists(api.clients.working_scripts.get.sha)) == [False]
    r = await api.call("GET", f"{W}/context/kept")
    assert r.status_code == 200 and r.json() == {"value": 1}
    assert (await api.call("PUT", f"{W}/context/more", json={"value": 2})).status_code == 204
    assert (await api.call("GET", f"{W}/context")).json()["context"]["more"] == 2


async def test_a_command_larger_than_the_socket_buffer_is_sent_whole(api):
    """The client's connection writes a command at once when the socket takes it; one the kernel
    cannot take at once is awaited until it drained (both paths, same client)."""
    redis = api.clients.redis
    assert redis.connection_pool.connection_class is RedisConnection
    big = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than a loopback socket buffer holds
    await redis.set("test:big-command", big, px=60_000)
    assert await redis.get("test:big-command") == big
    assert await redis.strlen("test:big-command") == len(big)
    await redis.delete("test:big-command")


async def test_read_bodies_are_the_compact_json_of_the_stored_values(api):
    """Reads embed the stored JSON text; the body is what encoding the parsed value gives."""
    value = {"é": "naïve ☃", "n": [1, -2.5, 1e-07, 12345678901234567890], "t": True, "z": None, "q": 'a"b\\c'}
    await api.call("PUT", f"{W}/context/shape", json={"value": value})
    r = await api.call("GET", f"{W}/context/shape")
    assert r.content == json.dumps({"value": value}, separators=(",", ":")).encode()
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == str(len(r.content))
    for content in ("first ☃", 'second "quoted"'):
        await api.call("POST", f"{W}/turns", json={"role": "user", "content": content})
    r = await api.call("GET", f"{W}/turns", params={"limit": 2})
    turns = r.json()["turns"]
    assert [t["content"] for t in turns] == ['second "quoted"', "first ☃"]
    assert r.content == json.dumps({"turns": turns}, separators=(",", ":")).encode()
    await api.call("POST", f"{W}/thoughts", json={"thought": "plan ☃"})
    r = await api.call("GET", f"{W}/thoughts")
    assert r.content == json.dumps({"thoughts": r.json()["thoughts"]}, separators=(",", ":")).encode()
    assert r.json()["thoughts"][0]["thought"] == "plan ☃"
    r = await api.call("GET", f"{W}/thoughts", params={"limit": 1})
    assert len(r.json()["thoughts"]) == 1


async def test_whole_context_body_is_the_compact_json_of_the_snapshot(api):
    w = "/v1/working/user-snap/conv-snap"
    r = await api.call("GET", f"{w}/context")
    assert r.content == b'{"context":{},"recent_turns":[],"thoughts":[]}'
    await api.call("PUT", f"{w}/context/plan ☃", json={"value": {"steps": [1, 2.5], "q": 'a"b'}})
    assert (await api.call("PUT", f"{w}/context/n", json={"value": 0})).status_code == 204
    await api.call("POST", f"{w}/turns", json={"role": "user", "content": "hi ☃"})
    await api.call("POST", f"{w}/thoughts", json={"thought": "think"})
    r = await api.call("GET", f"{w}/context")
    snapshot = r.json()
    assert snapshot["context"] == {"plan ☃": {"steps": [1, 2.5], "q": 'a"b'}, "n": 0}
    assert [t["content"] for t in snapshot["recent_turns"]] == ["hi ☃"]
    assert [t["thought"] for t in snapshot["thoughts"]] == ["think"]
    assert r.content == json.dumps(snapshot, separators=(",", ":")).encode()
    stored = await AgentMemory(api.tenant_id, "user-snap", "conv-snap", clients=api.clients).get_working_context()
    assert r.content == json.dumps(stored, separators=(",", ":")).encode()


async def test_a_read_cuts_the_stored_text_at_its_separators_and_drops_an_expired_value(api):
    """Stored fields are `<expires_ms>|<priority>|<json>`: a value with `|` in it and a negative
    priority reads back whole; an expired one is not returned and its field is gone."""
    value = {"pipe": "a|b||c", "n": -1}
    r = await api.call("PUT", f"{W}/context/piped", json={"value": value, "priority": -7, "ttl_seconds": 60})
    assert r.status_code == 204
    assert (await api.call("GET", f"{W}/context/piped")).json() == {"value": value}
    assert (await api.call("PUT", f"{W}/context/brief", json={"value": 1, "ttl_seconds": 0.05})).status_code == 204
    m = AgentMemory(api.tenant_id, "user-1", "conv-1", clients=api.clients)
    ctx_key = (await m.working()).ctx_key
    assert await api.clients.redis.hexists(ctx_key, "brief")
    await asyncio.sleep(0.2)
    assert (await api.call("GET", f"{W}/context/brief")).status_code == 404
    assert not await api.clients.redis.hexists(ctx_key, "brief")


@pytest.mark.parametrize("status", [200, 201])
def test_json_text_is_the_response_starlette_would_make(status):
    body = b'{"value":"caf\\u00e9"}'
    made, starlettes = JsonText(body, status), Response(body, status_code=status, media_type="application/json")
    assert (made.status_code, made.raw_headers, made.body, made.background) == (
        starlettes.status_code,
        starlettes.raw_headers,
        starlettes.body,
        starlettes.background,
    )
    assert made.headers == starlettes.headers
