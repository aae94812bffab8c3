"""Every failure has one body shape; memory_core's typed refusals map to their status; a bug is a
logged 500 with a request id, never blamed on the caller."""

from __future__ import annotations

import logging

import pytest

from memory_core import AgentMemory, Conflict, Forbidden, InvalidInput, NotFound, SchemaNotMigrated, StoreUnavailable
from memory_core.service.errors import ErrorBody

URL = "/v1/episodic/u/c/turns"


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (InvalidInput("content: bad"), 422),
        (NotFound("unknown turn"), 404),
        (Forbidden("not yours"), 403),
        (Conflict("full"), 409),
        (StoreUnavailable("postgres", "connection refused"), 503),
        (SchemaNotMigrated('relation "conversations" does not exist'), 503),
    ],
)
async def test_typed_refusals_map_to_their_status(api, monkeypatch, raised, status):
    async def refuse(self, **_):
        raise raised

    monkeypatch.setattr(AgentMemory, "get_conversation", refuse)
    r = await api.call("GET", URL)
    assert r.status_code == status, r.text
    assert r.json() == {"detail": str(raised)}
    assert (r.headers.get("retry-after") == "1") == (status == 503)


async def test_schema_not_migrated_names_the_fix(api, monkeypatch):
    async def refuse(self, **_):
        raise SchemaNotMigrated('relation "conversations" does not exist')

    monkeypatch.setattr(AgentMemory, "get_conversation", refuse)
    r = await api.call("GET", URL)
    assert r.status_code == 503 and "run `memstack migrate`" in r.json()["detail"]


@pytest.mark.parametrize("bug", [ValueError("a bug's ValueError"), PermissionError("a bug's"), KeyError("x")])
async def test_an_unexpected_exception_is_a_logged_500_with_a_request_id(api, monkeypatch, caplog, bug):
    async def broken(self, **_):
        raise bug

    monkeypatch.setattr(AgentMemory, "get_conversation", broken)
    with caplog.at_level(logging.ERROR, logger="memory_core.service.errors"):
        r = await api.call("GET", URL, headers={"X-Request-Id": "req-42"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error; request id req-42", "request_id": "req-42"}
    assert r.headers["x-request-id"] == "req-42"
    (record,) = [rec for rec in caplog.records if "req-42" in rec.getMessage()]
    assert record.exc_info is not None and record.exc_info[1] is bug


async def test_an_unusable_request_id_is_replaced(api, monkeypatch):
    async def broken(self, **_):
        raise RuntimeError("bug")

    monkeypatch.setattr(AgentMemory, "get_conversation", broken)
    r = await api.call("GET", URL, headers={"X-Request-Id": "forged\tlog line"})
    assert r.status_code == 500 and len(r.json()["request_id"]) == 32 and "forged" not in r.text


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status"),
    [
        ("GET", URL, {"auth": {}}, 401),
        ("GET", "/v1/nowhere", {}, 404),
        ("DELETE", URL, {}, 405),
        ("POST", URL, {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
        ("POST", URL, {"json": {"role": "robot", "content": ""}}, 422),
        ("POST", URL, {"json": {"role": "user", "content": "x", "turn_index": "1"}}, 422),
        ("PUT", "/v1/working/u/c/context/k", {"content": b"x" * 2_000_000}, 413),
    ],
)
async def test_every_error_has_the_documented_body(api, method, url, kwargs, status):
    r = await api.call(method, url, **kwargs)
    assert r.status_code == status, r.text
    body = ErrorBody.model_validate(r.json())
    assert body.detail
    if status == 422:
        assert body.errors and all(e.field and e.message for e in body.errors)
    if status == 405:
        assert r.headers["allow"] == "GET, POST"


def test_every_operation_documents_the_error_statuses(api):
    schema = api.client._transport.app.openapi()  # type: ignore[attr-defined]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            expected = {"400", "413", "500"} | (
                {"401", "403", "404", "409", "422", "503"} if path.startswith("/v1/") else set()
            )
            assert expected <= documented, (method, path, expected - documented)
            for status in expected:
                ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorBody", (method, path, status)
