"""Every other AgentMemory operation over HTTP: episodic, retrieval, semantic, goals,
procedural, user model, reflections and shared spaces."""

from __future__ import annotations

import uuid

U = "user-1"


async def test_episodic_turns_are_durable_and_listed(api):
    r = await api.call(
        "POST",
        f"/v1/episodic/{U}/conv-1/turns",
        json={"role": "user", "content": "I like hiking in the Alps", "metadata": {"lang": "en"}},
    )
    assert r.status_code == 201, r.text
    turn = r.json()
    assert turn["content"] == "I like hiking in the Alps" and turn["metadata"] == {"lang": "en"}
    listed = (await api.call("GET", f"/v1/episodic/{U}/conv-1/turns")).json()["turns"]
    assert [t["id"] for t in listed] == [turn["id"]]
    # store_turn also feeds working memory
    recent = (await api.call("GET", f"/v1/working/{U}/conv-1/turns")).json()["turns"]
    assert [t["id"] for t in recent] == [turn["id"]]


async def test_remember_finds_stored_memories(api):
    await api.call("POST", f"/v1/episodic/{U}/conv-1/turns", json={"role": "user", "content": "my dog is called Rex"})
    r = await api.call("POST", f"/v1/remember/{U}", json={"query": "my dog is called Rex", "top_k": 5})
    assert r.status_code == 200
    bundle = r.json()
    assert any("Rex" in t["content"] for t in bundle["relevant_turns"])


async def test_entities_facts_relations(api):
    alice = (
        await api.call(
            "POST", f"/v1/semantic/{U}/entities", json={"name": "Alice", "type": "Person", "aliases": ["Al"]}
        )
    ).json()
    acme = await api.call("POST", f"/v1/semantic/{U}/entities", json={"name": "Acme", "type": "Organization"})
    assert acme.status_code == 201 and alice["aliases"] == ["Al"]
    r = await api.call(
        "POST",
        f"/v1/semantic/{U}/relations",
        json={"source_id": alice["id"], "target_id": acme.json()["id"], "rel_type": "WORKS_FOR"},
    )
    assert r.status_code == 204
    fact = await api.call(
        "POST",
        f"/v1/semantic/{U}/facts",
        json={"claim": "Alice works for Acme", "entity_ids": [alice["id"]], "confidence": 0.9},
    )
    assert fact.status_code == 201 and fact.json()["entity_ids"] == [alice["id"]]
    r = await api.call(
        "POST",
        f"/v1/semantic/{U}/relations",
        json={"source_id": alice["id"], "target_id": acme.json()["id"], "rel_type": "DROP_ALL"},
    )
    assert r.status_code == 422 and "relationship type" in r.json()["detail"]


async def test_a_relation_weight_is_between_0_and_1(api):
    a, b = [
        (await api.call("POST", f"/v1/semantic/{U}/entities", json={"name": name, "type": "Person"})).json()["id"]
        for name in ("Ann", "Bob")
    ]
    for weight in (0, 0.5, 1):
        r = await api.call(
            "POST", f"/v1/semantic/{U}/relations", json={"source_id": a, "target_id": b, "weight": weight}
        )
        assert r.status_code == 204, (weight, r.text)
    for weight in (-0.1, 1.5, 1e308):
        r = await api.call(
            "POST", f"/v1/semantic/{U}/relations", json={"source_id": a, "target_id": b, "weight": weight}
        )
        assert r.status_code == 422 and "weight" in r.json()["detail"], (weight, r.text)
    schema = (await api.client.get("/openapi.json")).json()["components"]["schemas"]["RelationIn"]
    assert {k: schema["properties"]["weight"].get(k) for k in ("minimum", "maximum")} == {"minimum": 0, "maximum": 1}


async def test_goals_add_list_update(api):
    goal = (await api.call("POST", f"/v1/goals/{U}", json={"description": "ship the release", "priority": 2})).json()
    listed = (await api.call("GET", f"/v1/goals/{U}")).json()["goals"]
    assert [g["id"] for g in listed] == [goal["id"]]
    r = await api.call("PATCH", f"/v1/goals/{U}/{goal['id']}", json={"status": "completed"})
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert (await api.call("GET", f"/v1/goals/{U}")).json()["goals"] == []
    r = await api.call("PATCH", f"/v1/goals/{U}/{uuid.uuid4()}", json={"status": "completed"})
    assert r.status_code == 404 and "unknown goal" in r.json()["detail"]


async def test_tools_and_strategies(api):
    r = await api.call(
        "POST",
        f"/v1/procedural/{U}/tool-invocations",
        json={"tool_name": "search", "tool_input": {"q": "x"}, "tool_output": [1], "success": True, "latency_ms": 12},
    )
    assert r.status_code == 204
    stats = (await api.call("GET", f"/v1/procedural/{U}/tool-stats")).json()["tools"]
    assert [(s["name"], s["usage_count"]) for s in stats] == [("search", 1)]
    strategy = (
        await api.call(
            "POST",
            f"/v1/procedural/{U}/strategies",
            json={"description": "search then summarise", "tool_sequence": ["search"]},
        )
    ).json()
    r = await api.call("POST", f"/v1/procedural/{U}/strategies/{strategy['id']}/outcomes", json={"success": False})
    assert r.status_code == 200 and r.json()["failure_count"] == 1
    found = (await api.call("GET", f"/v1/procedural/{U}/strategies", params={"task": "search then summarise"})).json()
    assert [s["id"] for s in found["strategies"]] == [strategy["id"]]


async def test_user_model(api):
    assert (
        await api.call("PATCH", f"/v1/users/{U}/preferences", json={"preferences": {"tone": "brief"}})
    ).status_code == 204
    assert (await api.call("PUT", f"/v1/users/{U}/expertise", json={"areas": ["rust", "k8s"]})).status_code == 204
    context = (await api.call("GET", f"/v1/users/{U}/context")).json()
    assert context["preferences"] == {"tone": "brief"}
    assert sorted(context["expertise"]) == ["k8s", "rust"]


async def test_reflection_is_queued_for_the_worker(api, settings):
    r = await api.call(
        "POST",
        f"/v1/reflections/{U}",
        json={"conversation_id": "conv-1", "success": True, "summary": "went well", "tools": ["search"]},
    )
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    entries = await api.clients.redis.xrevrange(settings.reflection_stream, count=200)
    assert any(
        fields[b"job_id"].decode() == job_id and fields[b"tenant_id"].decode() == api.tenant_id for _, fields in entries
    )


async def test_a_reflection_on_an_unknown_strategy_is_refused_not_queued(api, settings):
    before = await api.clients.redis.xlen(settings.reflection_stream)
    for strategy_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        r = await api.call(
            "POST", f"/v1/reflections/{U}", json={"conversation_id": "c", "success": True, "strategy_id": strategy_id}
        )
        assert r.status_code in (404, 422) and "strategy" in r.json()["detail"], r.text
    assert await api.clients.redis.xlen(settings.reflection_stream) == before
    learned = await api.call(
        "POST",
        f"/v1/procedural/{U}/strategies",
        json={"description": "search, then summarise", "tool_sequence": ["search"]},
    )
    assert learned.status_code == 201, learned.text
    r = await api.call(
        "POST",
        f"/v1/reflections/{U}",
        json={"conversation_id": "c", "success": True, "strategy_id": learned.json()["id"]},
    )
    assert r.status_code == 202, r.text


async def test_shared_spaces_need_an_agent_and_its_ownership(api):
    space = f"/v1/spaces/{U}/team"
    r = await api.call("PUT", space)
    assert r.status_code == 403 and "agent_id" in r.json()["detail"]
    assert (await api.call("PUT", space, headers={"X-Agent-Id": "owner"})).status_code == 204
    r = await api.call(
        "PUT", f"{space}/grants/helper", json={"read": True, "write": True}, headers={"X-Agent-Id": "owner"}
    )
    assert r.status_code == 204
    fact = await api.call(
        "POST", f"/v1/semantic/{U}/facts", json={"claim": "shared", "space": "team"}, headers={"X-Agent-Id": "helper"}
    )
    assert fact.status_code == 201 and fact.json()["space"] == "team"
    r = await api.call("PUT", f"{space}/grants/other", json={"read": True}, headers={"X-Agent-Id": "helper"})
    assert r.status_code == 403
    assert (await api.call("DELETE", f"{space}/grants/helper", headers={"X-Agent-Id": "owner"})).status_code == 204
    fact = await api.call(
        "POST",
        f"/v1/semantic/{U}/facts",
        json={"claim": "no longer", "space": "team"},
        headers={"X-Agent-Id": "helper"},
    )
    assert fact.status_code == 403
