"""A body whose Content-Type is not JSON is refused as such (415 naming application/json), on the
working-memory fast path and on the FastAPI path alike; JSON with parameters or as a structured
suffix is JSON."""

from __future__ import annotations

import pytest

from memory_core.service.errors import ErrorBody

# A working-memory route (the fast path serves it) and one that only FastAPI serves.
ROUTES = [
    ("PUT", "/v1/working/u1/c1/context/k", b'{"value": 1}', 204),
    ("POST", "/v1/episodic/u1/c1/turns", b'{"role": "user", "content": "hi"}', 201),
]


@pytest.mark.parametrize(("method", "url", "body", "ok"), ROUTES)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "text/json",
        None,
    ],
)
async def test_a_body_that_is_not_declared_json_is_415_naming_the_type(api, method, url, body, ok, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    r = await api.call(method, url, content=body, headers=headers)
    assert r.status_code == 415, r.text
    error = ErrorBody.model_validate(r.json())
    assert "application/json" in error.detail and error.errors is None
    assert (content_type or "no Content-Type") in error.detail


@pytest.mark.parametrize(("method", "url", "body", "ok"), ROUTES)
@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"],
)
async def test_json_with_parameters_or_a_json_suffix_is_accepted(api, method, url, body, ok, content_type):
    r = await api.call(method, url, content=body, headers={"content-type": content_type})
    assert r.status_code == ok, r.text


async def test_the_token_is_checked_before_the_content_type(api):
    r = await api.call(
        "PUT", "/v1/working/u1/c1/context/k", content=b"x", headers={"content-type": "text/plain"}, auth={}
    )
    assert r.status_code == 401, r.text


async def test_no_body_is_still_a_missing_field_not_a_content_type(api):
    r = await api.call("PUT", "/v1/working/u1/c1/context/k", content=b"")
    assert r.status_code == 422, r.text


async def test_an_operation_without_a_body_ignores_the_content_type(api):
    r = await api.call("PUT", "/v1/spaces/u1/s1", headers={"content-type": "text/plain", "X-Agent-Id": "a1"})
    assert r.status_code == 204, r.text


def test_exactly_the_operations_with_a_body_document_415(api):
    schema = api.client._transport.app.openapi()  # type: ignore[attr-defined]
    with_body = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documents_415 = "415" in operation["responses"]
            assert documents_415 == ("requestBody" in operation), (method, path)
            if documents_415:
                with_body += 1
                ref = operation["responses"]["415"]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorBody", (method, path)
    assert with_body >= 10
