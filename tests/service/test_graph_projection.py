"""MEMSTACK_GRAPH_PROJECTION=worker: durable writes answer without touching Neo4j, the caller
reads its own writes at once (every route reads Postgres), and the worker's outbox replay
brings the graph up to date."""

from __future__ import annotations

import pytest

from memory_core.service.config import ServiceSettings
from memory_core.worker.jobs import replay_outbox


@pytest.fixture
def service_settings() -> ServiceSettings:
    return ServiceSettings(graph_projection="worker")


async def _outbox_rows(api) -> int:
    async with api.clients.tenant_transaction(api.tenant_id) as conn:
        cur = await conn.execute("SELECT count(*) FROM graph_outbox WHERE tenant_id = %s", (api.tenant_id,))
        return (await cur.fetchone())[0]


async def _graph_turns(api, turn_id: str) -> int:
    records, _, _ = await api.clients.neo4j.execute_query("MATCH (t:Turn {id: $id}) RETURN count(t)", id=turn_id)
    return records[0][0]


async def test_writes_project_through_the_outbox_and_read_back_at_once(api):
    r = await api.call("POST", "/v1/episodic/u1/c1/turns", json={"role": "user", "content": "the cat is grey"})
    assert r.status_code == 201, r.text
    turn = r.json()
    r = await api.call("POST", "/v1/semantic/u1/facts", json={"claim": "the cat is grey"})
    assert r.status_code == 201, r.text

    # Read-your-writes: the turn is listed and recalled before any projection ran.
    listed = (await api.call("GET", "/v1/episodic/u1/c1/turns")).json()["turns"]
    assert [t["id"] for t in listed] == [turn["id"]]
    recalled = (await api.call("POST", "/v1/remember/u1", json={"query": "grey cat"})).json()
    assert turn["id"] in {t["id"] for t in recalled["relevant_turns"]}

    assert await _outbox_rows(api) >= 2
    assert await _graph_turns(api, turn["id"]) == 0
    await replay_outbox(api.clients)
    assert await _outbox_rows(api) == 0
    assert await _graph_turns(api, turn["id"]) == 1


async def test_inline_is_the_default(migrated):
    assert ServiceSettings().graph_projection == "inline"
