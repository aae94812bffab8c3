"""An identifier or working-memory key that is blank (whitespace only) is 422 naming it, on the
working-memory fast path and on the FastAPI path alike: one rule (`memory_core.validation.is_blank`)."""

from __future__ import annotations

import pytest

from memory_core.errors import InvalidInput
from memory_core.service.fast_path import WorkingFastPath
from memory_core.validation import check_id

# Percent-encoded: a space, a tab, a no-break space, an ideographic space (U+3000).
BLANKS = ["%20", "%20%20", "%09", "%C2%A0", "%E3%80%80"]
W = "/v1/working/u1/c1"


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi"])
def api_path(request, api):
    fast_path = api.client._transport.app.app  # type: ignore[attr-defined]
    assert isinstance(fast_path, WorkingFastPath)
    fast_path.enabled = request.param
    yield api
    fast_path.enabled = True


@pytest.mark.parametrize("blank", BLANKS)
@pytest.mark.parametrize(
    ("method", "body"), [("PUT", {"value": 1}), ("GET", None), ("DELETE", None)], ids=["put", "get", "delete"]
)
async def test_a_blank_context_key_is_422_naming_the_key(api_path, method, body, blank):
    r = await api_path.call(method, f"{W}/context/{blank}", json=body)
    assert r.status_code == 422, r.text
    assert "key must not be blank" in r.json()["detail"]


async def test_a_key_with_inner_or_edge_spaces_is_still_a_key(api_path):
    for key in ("a%20b", "%20a"):
        r = await api_path.call("PUT", f"{W}/context/{key}", json={"value": key})
        assert r.status_code == 204, r.text
        r = await api_path.call("GET", f"{W}/context/{key}")
        assert r.status_code == 200 and r.json() == {"value": key}


@pytest.mark.parametrize("blank", BLANKS)
@pytest.mark.parametrize(
    ("url", "field"),
    [("/v1/working/{b}/c1/context", "user_id"), ("/v1/working/u1/{b}/turns", "conversation_id")],
)
async def test_a_blank_user_or_conversation_is_422_naming_it(api_path, url, field, blank):
    r = await api_path.call("GET", url.format(b=blank))
    assert r.status_code == 422, r.text
    assert f"{field} must not be blank" in r.json()["detail"]


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "field"),
    [
        ("PUT", "/v1/spaces/u1/%20", {"headers": {"X-Agent-Id": "a1"}}, "space"),
        ("PUT", "/v1/spaces/u1/s1/grants/%09", {"headers": {"X-Agent-Id": "a1"}, "json": {}}, "grantee"),
        ("POST", "/v1/remember/u1", {"json": {"query": "q", "conversation_id": " "}}, "conversation_id"),
        ("GET", "/v1/goals/u1", {"headers": {"X-Agent-Id": "\t"}}, "X-Agent-Id"),
    ],
)
async def test_other_blank_identifiers_are_422_naming_them(api, method, url, kwargs, field):
    r = await api.call(method, url, **kwargs)
    assert r.status_code == 422, r.text
    assert f"{field} must not be blank" in r.json()["detail"]


@pytest.mark.parametrize("blank", [" ", "\u3000", "\t\n"])
def test_check_id_names_a_blank_id_as_such(blank):
    with pytest.raises(InvalidInput, match="tenant must not be blank"):
        check_id(blank, "tenant")
