"""A store that is down: /ready answers 503 naming it, routes that need it answer a clear 503
naming it, and routes that do not need it keep working. Never a 500."""

from __future__ import annotations

import asyncio

import pytest

from memory_core.service.config import ServiceSettings
from memstack.local.state import load

pytestmark = pytest.mark.slow
W = "/v1/working/user-1/conv-1"


async def ready_again(api, within_s: float = 90.0) -> None:
    """After a restart the pools reconnect with backoff (psycopg's grows to tens of seconds)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while (r := await api.client.get("/ready")).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, r.text
        await asyncio.sleep(0.5)


@pytest.fixture
def service_settings() -> ServiceSettings:
    # Postgres down means waiting for a pool connection; answer 503 after 3 s rather than 10.
    return ServiceSettings(request_timeout_s=3.0, ready_timeout_s=1.0)


async def test_redis_down_gives_503_naming_redis(api, stack):
    stack.kill("redis")
    try:
        r = await api.client.get("/ready")
        assert r.status_code == 503 and "redis" in r.json()["detail"]
        assert r.json()["checks"]["postgres"] == "ok"
        for method, url, body in (
            ("GET", f"{W}/context/k", None),
            ("PUT", f"{W}/context/k", {"value": 1}),
            ("GET", f"{W}/turns", None),
            ("POST", "/v1/reflections/user-1", {}),
        ):
            r = await api.call(method, url, json=body)
            assert r.status_code == 503, (url, r.text)
            assert r.json()["detail"].startswith("redis is unavailable") and r.headers["retry-after"] == "1"
        # durable memory does not need Redis
        r = await api.call("POST", "/v1/goals/user-1", json={"description": "still possible"})
        assert r.status_code == 201, r.text
    finally:
        stack.start("redis")
    assert (await api.call("GET", f"{W}/context/k")).status_code == 404
    await ready_again(api)


async def test_requests_after_a_redis_restart_do_not_fail(api, stack):
    """Connections pooled before the restart are dead; drawing one must not cost a request a 503.
    With appendfsync always, no acknowledged write is lost to the kill either."""
    # With everysec a kill may lose up to LOSS_WINDOW_S of writes (Redis postpones the write
    # while a slow background fsync runs), so the policy that loses nothing is set for this run;
    # the restarted Redis reads its config file again, so the stack is back on its own policy after.
    await api.clients.redis.config_set("appendfsync", "always")
    written = await asyncio.gather(*(api.call("PUT", f"{W}/context/k{i}", json={"value": i}) for i in range(8)))
    assert {r.status_code for r in written} == {204}
    assert len(api.clients.redis.connection_pool._available_connections) > 1  # several pooled, now stale
    stack.kill("redis")
    stack.start("redis")
    answers = await asyncio.gather(*(api.call("GET", f"{W}/context/k{i}") for i in range(8)))
    assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers]
    assert [r.json()["value"] for r in answers] == list(range(8))
    assert (await api.clients.redis.config_get("appendfsync")) == {"appendfsync": load(stack.home).appendfsync}


async def test_requests_after_a_postgres_restart_do_not_fail(api, stack):
    # Four connections out at once (none is returned before all are out), so four are pooled.
    all_out = asyncio.Barrier(4)

    async def hold():
        async with api.clients.pg_pool.connection():
            await all_out.wait()

    await asyncio.wait_for(asyncio.gather(*(hold() for _ in range(4))), timeout=30)
    assert api.clients.pg_pool.get_stats()["pool_available"] >= 4  # several pooled, soon stale
    stack.kill("postgres")
    stack.start("postgres")
    answers = await asyncio.gather(*(api.call("GET", "/v1/goals/user-1") for _ in range(6)))
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers]


async def test_postgres_down_gives_503_naming_postgres(api, stack):
    await api.call("PUT", f"{W}/context/k", json={"value": 1})
    stack.kill("postgres")
    try:
        r = await api.client.get("/ready")
        assert r.status_code == 503 and "postgres" in r.json()["detail"]
        for method, url, body in (
            ("POST", "/v1/episodic/user-1/conv-1/turns", {"role": "user", "content": "x"}),
            ("GET", "/v1/goals/user-1", None),
            ("POST", "/v1/remember/user-1", {"query": "x"}),
        ):
            r = await api.call(method, url, json=body)
            assert r.status_code == 503, (url, r.text)
            assert r.json()["detail"].startswith("postgres is unavailable")
        assert (await api.call("GET", f"{W}/context/k")).json() == {"value": 1}
    finally:
        stack.start("postgres")
    await ready_again(api)
    assert (await api.call("GET", "/v1/goals/user-1")).status_code == 200


# Last: Neo4j's first writes after a restart can be slow, which the tests above would see as timeouts.
async def test_neo4j_down_keeps_working_memory_and_episodic_writes(api, stack):
    stack.kill("neo4j")
    try:
        r = await api.client.get("/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["checks"]["neo4j"].startswith("down") and body["checks"]["redis"] == "ok"
        assert "neo4j" in body["detail"] and "working memory" in body["still_working"]
        assert (await api.call("PUT", f"{W}/context/k", json={"value": 1})).status_code == 204
        assert (await api.call("GET", f"{W}/context/k")).json() == {"value": 1}
        r = await api.call(
            "POST", "/v1/episodic/user-1/conv-1/turns", json={"role": "user", "content": "while the graph is down"}
        )
        assert r.status_code == 201, r.text
        r = await api.call("POST", "/v1/remember/user-1", json={"query": "while the graph is down"})
        assert r.status_code == 200 and any("down" in t["content"] for t in r.json()["relevant_turns"])
    finally:
        stack.start("neo4j")
    await ready_again(api)
