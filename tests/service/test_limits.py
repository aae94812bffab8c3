"""Input limits: 413 for bodies over the limit (declared or streamed), 422 naming the field,
400 for malformed JSON, and never a 5xx whatever the input."""

from __future__ import annotations

import json
import re

import pytest

from memory_core.service.routes import router

W = "/v1/working/user-1/conv-1"


async def test_declared_oversize_body_is_413(api, service_settings):
    r = await api.call(
        "PUT",
        f"{W}/context/k",
        content=b"x" * (service_settings.max_body_bytes + 1),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and str(service_settings.max_body_bytes) in r.json()["detail"]


async def test_streamed_oversize_body_without_length_is_413(api, service_settings):
    chunk = b" " * 65536

    async def body():
        yield b'{"value": "'
        for _ in range(service_settings.max_body_bytes // len(chunk) + 2):
            yield chunk
        yield b'"}'

    r = await api.call("PUT", f"{W}/context/k", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert (await api.call("GET", f"{W}/context/k")).status_code == 404


async def test_a_value_at_the_value_limit_is_accepted_and_one_byte_more_refused(api, settings):
    # Stored as JSON: a string of n characters takes n + 2 bytes with its quotes.
    at_limit = "v" * (settings.working_max_value_bytes - 2)
    r = await api.call("PUT", f"{W}/context/k", json={"value": at_limit})
    assert r.status_code == 204, r.text
    assert (await api.call("GET", f"{W}/context/k")).json() == {"value": at_limit}
    r = await api.call("PUT", f"{W}/context/k2", json={"value": at_limit + "v"})
    assert r.status_code == 422 and "exceeds" in r.json()["detail"]
    assert (await api.call("GET", f"{W}/context/k2")).status_code == 404


async def test_malformed_json_is_400(api):
    r = await api.call("PUT", f"{W}/context/k", content=b'{"value": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]


async def test_a_path_that_is_not_utf8_is_400_and_names_no_one(api):
    for path in ("/v1/working/user-%ff/conv-1/context/k", f"{W}/context/k%fe"):
        r = await api.call("PUT", path, json={"value": 1})
        assert r.status_code == 400 and "UTF-8" in r.json()["detail"], r.text
    # The replacement character itself, sent as valid UTF-8, is an ordinary character.
    assert (await api.call("PUT", f"{W}/context/k%EF%BF%BD", json={"value": 1})).status_code == 204
    assert (await api.call("GET", f"{W}/context/k\ufffd")).json() == {"value": 1}


async def test_invalid_utf8_is_400(api):
    r = await api.call(
        "PUT", f"{W}/context/k", content=b'{"value": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


@pytest.mark.parametrize(
    "method,url,body,field",
    [
        ("PUT", f"{W}/context/" + "k" * 257, {"value": 1}, "key"),
        ("PUT", f"{W}/context/k", {"value": 1, "ttl_seconds": 8 * 86400}, "ttl_seconds"),
        ("PUT", f"{W}/context/k", {"value": 1, "ttl_seconds": -1}, "ttl_seconds"),
        ("PUT", f"{W}/context/k", {"value": 1, "priority": 10**6}, "priority"),
        ("PUT", f"{W}/context/k", {"value": None}, "value"),
        ("PUT", f"{W}/context/k", {"ttl_seconds": 5}, "value"),
        ("PUT", f"{W}/context/k", {"value": 1, "extra": 2}, "extra"),
        ("POST", f"{W}/turns", {"role": "user", "content": "c" * 20_000}, "content"),
        ("POST", f"{W}/turns", {"role": "robot", "content": "hi"}, "role"),
        ("GET", f"{W}/turns?limit=0", None, "limit"),
        ("GET", f"{W}/turns?limit=100000", None, "limit"),
        ("POST", "/v1/remember/user-1", {"query": "q", "top_k": 5000}, "top_k"),
        ("POST", "/v1/remember/user-1", {"query": "q", "top_k": 500}, "top_k"),
        ("POST", "/v1/remember/user-1", {"query": ""}, "query"),
        ("GET", "/v1/procedural/user-1/strategies?task=x&top_k=101", None, "top_k"),
        ("POST", "/v1/semantic/user-1/entities", {"name": "n" * 1001}, "name"),
        ("POST", "/v1/semantic/user-1/entities", {"name": "x", "type": "Bad Type!"}, "type"),
        ("POST", "/v1/semantic/user-1/facts", {"claim": "c", "confidence": 2}, "confidence"),
        ("POST", "/v1/semantic/user-1/facts", {"claim": "c", "entity_ids": ["not-an-id"]}, "id"),
        (
            "POST",
            "/v1/episodic/user-1/conv-1/turns",
            {"role": "user", "content": "x", "ttl_seconds": 10**12},
            "ttl_seconds",
        ),
        ("POST", "/v1/goals/user-1", {"description": "d", "priority": 5000}, "priority"),
        ("PUT", "/v1/working/" + "u" * 201 + "/c/context/k", {"value": 1}, "user_id"),
    ],
)
async def test_limits_give_422_naming_the_field(api, method, url, body, field):
    r = await api.call(method, url, json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "\ud800",
    "x" * 5000,
    "{}",
    "../../etc/passwd",
    "'; DROP TABLE x; --",
    "MATCH (n) DETACH DELETE n",
    "\u202e\u0000",
    "%00",
    "{tenant}|x",
]
HOSTILE_VALUES = [None, True, -1, 2**64, 1e308, [], {}, [[[[[]]]]], {"a": {"b": None}}, "\x00", "\ud800"]


def _routes_with_body():
    for route in router.routes:
        for method in route.methods:
            yield method, re.sub(r"\{[^}]+\}", "x", route.path)


@pytest.mark.parametrize("method,url", sorted(set(_routes_with_body())))
async def test_hostile_bodies_never_give_5xx(api, method, url):
    for value in HOSTILE_VALUES + HOSTILE_STRINGS:
        for body in (
            value,
            {
                "value": value,
                "content": value,
                "role": value,
                "query": value,
                "name": value,
                "claim": value,
                "description": value,
                "ttl_seconds": value,
                "top_k": value,
            },
        ):
            # ensure_ascii keeps lone surrogates as \ud800 escapes, as a hostile client would send them
            r = await api.call(
                method, url, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
            )
            assert r.status_code < 500, (method, url, body, r.text)
    for raw in (b"", b"null", b"[", b"\xff", b'{"value": 1e999}', b'{"value": NaN}', b'{"a":' * 1000):
        r = await api.call(method, url, content=raw, headers={"content-type": "application/json"})
        assert r.status_code < 500, (method, url, raw, r.text)


@pytest.mark.parametrize("segment", ["%00", "%ff", "%ed%a0%80", "%20padded", "a%2Fb", "%0a", "x" * 300])
async def test_hostile_path_segments_never_give_5xx(api, segment):
    for url in (
        f"/v1/working/{segment}/c/context/k",
        f"/v1/working/u/{segment}/context/k",
        f"/v1/working/u/c/context/{segment}",
        f"/v1/goals/u/{segment}",
        f"/v1/procedural/u/strategies/{segment}/outcomes",
        f"/v1/spaces/u/{segment}",
    ):
        for method in ("GET", "PUT", "POST", "PATCH", "DELETE"):
            r = await api.call(method, url, json={"value": 1, "success": True})
            assert r.status_code < 500, (method, url, r.text)
