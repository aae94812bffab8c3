"""Bearer tokens: no token or a wrong one is 401 on every /v1 route; the tenant comes only
from the token, so another tenant's data is unreachable."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from memory_core.service.auth import TokenFileError, TokenTable, hash_line, new_token, token_hash
from memory_core.service.routes import caller, router

V1_ROUTES = [(method, route.path) for route in router.routes for method in sorted(route.methods)]


def _url(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template)


def test_every_agent_memory_route_is_listed(api):
    """The parametrized tests below cover V1_ROUTES: it must be every /v1 operation the app serves."""
    schema = api.client._transport.app.openapi()  # type: ignore[attr-defined]
    served = sorted(
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    )
    assert sorted(V1_ROUTES) == served
    assert len(V1_ROUTES) == 30


@pytest.mark.parametrize("method,template", V1_ROUTES)
async def test_no_token_is_401(api, method, template):
    r = await api.call(method, _url(template), auth={}, json={})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Bearer mst_wrong", "Bearer ", "Basic dXNlcjpwYXNz", "mst_no_scheme"])
async def test_wrong_token_is_401(api, header):
    r = await api.call("GET", "/v1/working/u/c/context/k", auth={"Authorization": header})
    assert r.status_code == 401


async def test_a_hash_is_not_a_token(api):
    r = await api.call("GET", "/v1/working/u/c/context/k", auth={"Authorization": f"Bearer {token_hash(api.token)}"})
    assert r.status_code == 401


async def test_other_tenant_sees_nothing_on_the_same_paths(api):
    W = "/v1/working/user-1/conv-1"
    await api.call("PUT", f"{W}/context/secret", json={"value": "alpha"})
    await api.call("POST", f"{W}/turns", json={"role": "user", "content": "alpha turn"})
    await api.call("POST", "/v1/episodic/user-1/conv-1/turns", json={"role": "user", "content": "alpha secret zebra"})
    goal = (await api.call("POST", "/v1/goals/user-1", json={"description": "alpha goal"})).json()

    other = api.other_auth
    assert (await api.call("GET", f"{W}/context/secret", auth=other)).status_code == 404
    assert (await api.call("GET", f"{W}/context", auth=other)).json() == {
        "context": {},
        "recent_turns": [],
        "thoughts": [],
    }
    assert (await api.call("GET", f"{W}/turns", auth=other)).json() == {"turns": []}
    assert (await api.call("GET", "/v1/episodic/user-1/conv-1/turns", auth=other)).json() == {
        "turns": [],
        "next_after_index": None,
    }
    bundle = (await api.call("POST", "/v1/remember/user-1", json={"query": "alpha secret zebra"}, auth=other)).json()
    assert bundle["relevant_turns"] == [] and bundle["active_goals"] == []
    r = await api.call("PATCH", f"/v1/goals/user-1/{goal['id']}", json={"status": "abandoned"}, auth=other)
    assert r.status_code in (403, 404, 422)
    assert (await api.call("DELETE", f"{W}/context/secret", auth=other)).status_code == 404
    # and the owner's data is untouched
    assert (await api.call("GET", f"{W}/context/secret")).json() == {"value": "alpha"}
    assert (await api.call("GET", "/v1/goals/user-1")).json()["goals"][0]["status"] == "active"


def test_token_file_stores_hashes_only(tmp_path):
    token = new_token()
    line = hash_line("acme", token)
    assert token not in line
    table = TokenTable.parse(f"# comment\n\n{line}\n", "tokens")
    assert table.tenant_for(token) == "acme" and table.tenant_for(token + "x") is None


@pytest.mark.parametrize(
    "text", ["acme mst_plain_token", "sha256:abc acme", f"sha256:{'0' * 64} ", f"sha256:{'0' * 64}  padded "]
)
def test_malformed_token_lines_name_the_line(text):
    with pytest.raises(TokenFileError, match=r"^tokens:2: "):
        TokenTable.parse(f"# header\n{text}\n", "tokens")


async def test_tokens_file_changes_are_picked_up_and_bad_files_ignored(tmp_path, caplog):
    import asyncio

    from memory_core.service.auth import watch_tokens_file
    from memory_core.service.config import ServiceSettings

    first, second = new_token(), new_token()
    path = tmp_path / "tokens"
    path.write_text(hash_line("acme", first) + "\n")
    settings = ServiceSettings(tokens_file=path)
    table = TokenTable.load(settings)
    watcher = asyncio.create_task(watch_tokens_file(table, settings, interval_s=0.02))
    try:
        path.write_text(path.read_text() + hash_line("globex", second) + "\n")
        for _ in range(100):
            if table.tenant_for(second):
                break
            await asyncio.sleep(0.02)
        assert table.tenant_for(second) == "globex" and table.tenant_for(first) == "acme"
        path.write_text("garbage that does not parse\n")
        # Wait until the watcher has read the garbage: it says so when it keeps the old tokens.
        for _ in range(250):
            if any("keeping the previous tokens" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        assert any(f"{path}:1:" in r.getMessage() for r in caplog.records), "the watcher never read the file"
        assert table.tenant_for(second) == "globex" and table.tenant_for(first) == "acme"
    finally:
        watcher.cancel()


@pytest.mark.parametrize(
    "header,detail",
    [
        (None, "missing bearer token"),
        ("Basic dXNlcjpwYXNz", "missing bearer token"),
        ("Bearer ", "missing bearer token"),
        ("Bearer mst_wrong", "invalid bearer token"),
    ],
)
async def test_401_says_whether_the_token_was_missing_or_unknown(api, header, detail):
    # A route FastAPI answers (the fast path leaves a bad token to it as well).
    r = await api.call("GET", "/v1/goals/u", auth={} if header is None else {"Authorization": header})
    assert r.status_code == 401 and r.json()["detail"] == detail


async def test_every_route_shares_the_header_cache(tenant_id):
    # FastAPI's routes read the raw Authorization header as the fast path does: a header one
    # of them accepted is a dict lookup for every later request.
    token = new_token()
    tokens = TokenTable.parse(hash_line(tenant_id, token), "test")
    app = SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(tokens=tokens)))
    header = f"Bearer {token}".encode()
    assert (
        await caller(Request({"type": "http", "headers": [(b"authorization", header)], "app": app}))
    ).tenant == tenant_id
    assert tokens._recent_headers == {header: tenant_id}
