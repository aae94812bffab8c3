"""A store that hangs (its processes stopped with SIGSTOP: connections stay open, nothing
answers) gives a 503 naming it, bounded by that store's timeout rather than left to the
request deadline; an inline-projected write whose Postgres commit succeeded is acknowledged
although Neo4j hangs, and its rows reach the graph once Neo4j answers again."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from memory_core.service.config import ServiceSettings
from memory_core.worker.jobs import replay_outbox

pytestmark = pytest.mark.slow
W = "/v1/working/user-1/conv-1"


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Postgres serves each connection from a child of the postmaster)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return tree


@contextmanager
def hung(stack, service: str) -> Iterator[None]:
    """`service` stopped (SIGSTOP) for the block, continued afterwards whatever happens."""
    if stack.backend.name != "process":
        pytest.skip("pausing a store's processes needs the process backend")
    (pid,) = [s.pid for s in stack.backend.status() if s.name == service and s.pid]
    stopped = []
    try:
        for member in _process_tree(pid):
            os.kill(member, signal.SIGSTOP)
            stopped.append(member)
        yield
    finally:
        for member in stopped:
            os.kill(member, signal.SIGCONT)


async def ready_again(api, within_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while (r := await api.client.get("/ready")).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, r.text
        await asyncio.sleep(0.5)


async def test_a_hung_redis_gives_503_naming_redis(api, stack):
    assert (await api.call("PUT", f"{W}/context/k", json={"value": 1})).status_code == 204
    with hung(stack, "redis"):
        for method, url, body in (("GET", f"{W}/context/k", None), ("PUT", f"{W}/context/k", {"value": 2})):
            r = await api.call(method, url, json=body)
            assert r.status_code == 503, (url, r.text)
            detail = r.json()["detail"]
            # the Redis client's own timeout, not the request deadline (which says "timed out")
            assert detail.startswith("redis is unavailable") and "Timeout" in detail, detail
    await ready_again(api)
    r = await api.call("GET", f"{W}/context/k")
    assert r.status_code == 200 and r.json() == {"value": 1}


async def test_a_hung_postgres_gives_503_naming_postgres(api, stack):
    # A stopped server still has its kernel acknowledge the bytes, so no TCP timeout fires here
    # (tcp_user_timeout bounds a network cut); the request deadline ends the wait.
    with hung(stack, "postgres"):
        r = await api.call("GET", "/v1/goals/user-1")
        assert r.status_code == 503, r.text
        assert r.json()["detail"].startswith("postgres is unavailable"), r.text
    await ready_again(api)
    assert (await api.call("GET", "/v1/goals/user-1")).status_code == 200


class TestInlineProjection:
    @pytest.fixture
    def service_settings(self) -> ServiceSettings:
        return ServiceSettings(graph_projection="inline")

    async def test_a_write_is_acknowledged_while_neo4j_hangs_and_projected_after(self, api, stack):
        with hung(stack, "neo4j"):
            r = await api.call(
                "POST", "/v1/episodic/user-1/conv-1/turns", json={"role": "user", "content": "while the graph hangs"}
            )
            assert r.status_code == 201, r.text
            turn_id = r.json()["id"]
            assert api.clients.graph_circuit.is_open  # the hang tripped it: later writes skip Neo4j
        api.clients.graph_circuit.reset()
        await replay_outbox(api.clients)
        records, _, _ = await api.clients.neo4j.execute_query(
            "MATCH (t:Turn {id: $id}) RETURN t.content_preview", id=turn_id
        )
        assert [r[0] for r in records] == ["while the graph hangs"]
