"""The working-memory routes, exactly as clients and the load test use them."""

from __future__ import annotations

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
