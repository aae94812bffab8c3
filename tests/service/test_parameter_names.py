"""A refused query, header or path parameter is named as the client sent it, not by the name
memory_core's argument has (`task`, not `task_description`; X-Agent-Id, not `agent_id`)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "field", "internal"),
    [
        ("GET", "/v1/procedural/u1/strategies?task=a%00b", {}, "query.task", "task_description"),
        ("GET", "/v1/procedural/u1/strategies?task=%00", {}, "query.task", "task_description"),
        ("GET", "/v1/goals/u1", {"headers": {"X-Agent-Id": "a\x01b"}}, "header.X-Agent-Id", "agent_id"),
        ("GET", "/v1/goals/u1", {"headers": {"X-Agent-Id": " a"}}, "header.X-Agent-Id", "agent_id"),
        (
            "PUT",
            "/v1/spaces/u1/s1/grants/a%00b",
            {"headers": {"X-Agent-Id": "a1"}, "json": {}},
            "path.grantee",
            "agent_id",
        ),
        (
            "DELETE",
            "/v1/spaces/u1/s1/grants/%20b",
            {"headers": {"X-Agent-Id": "a1"}},
            "path.grantee",
            "agent_id",
        ),
    ],
)
async def test_a_refused_parameter_is_named_as_sent(api, method, url, kwargs, field, internal):
    r = await api.call(method, url, **kwargs)
    assert r.status_code == 422, r.text
    body = r.json()
    assert [e["field"] for e in body["errors"]] == [field], body
    assert internal not in r.text, body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"success": true, "summary": "\\ud800"}', "summary"),
        ('{"success": true, "summary": "a\\u0000b"}', "summary"),
        ('{"success": true, "summary": "' + "x" * 10_001 + '"}', "summary"),
        ('{"success": true, "task_type": "a\\u0000b"}', "task_type"),
    ],
)
async def test_a_refused_reflection_field_is_named(api, body, field):
    # Sent as text: a lone surrogate cannot be encoded by httpx's JSON encoder, only escaped.
    r = await api.call(
        "POST", "/v1/reflections/u1", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(field), r.text
    assert "outcome" not in r.text, r.text


async def test_a_valid_task_still_finds_strategies(api):
    r = await api.call("POST", "/v1/procedural/u1/strategies", json={"description": "retry with backoff"})
    assert r.status_code == 201, r.text
    r = await api.call("GET", "/v1/procedural/u1/strategies?task=retry")
    assert r.status_code == 200 and r.json()["strategies"], r.text
