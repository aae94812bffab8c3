"""MEMSTACK_GRAPH_PROJECTION: where durable writes reach the Neo4j projection. Whichever is set,
the caller reads its own writes at once (every route reads Postgres); `background` (the default)
projects right after the answer, `worker` leaves it to the worker's outbox replay, `inline`
projects inside the request. Each projection is observed as backend operation `project` of
Neo4j and as lag by path."""

from __future__ import annotations

import asyncio
import uuid
from functools import partial
from types import SimpleNamespace

import httpx
import pytest

from memory_core import MemoryClients, metrics
from memory_core.service import create_app
from memory_core.service.auth import TokenTable, hash_line, new_token
from memory_core.service.config import ServiceSettings
from memory_core.stores.graph import BackgroundProjector, background_projector, record
from memory_core.worker.jobs import replay_outbox


def _sample(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def _lag_count(path: str) -> float:
    return _sample(metrics.GRAPH_PROJECTION_LAG + "_count", {"path": path})


def _project_count(outcome: str = "ok") -> float:
    return _sample(
        metrics.BACKEND_OPERATION_DURATION + "_count", {"store": "neo4j", "operation": "project", "outcome": outcome}
    )


async def _outbox_rows(api) -> int:
    async with api.clients.tenant_transaction(api.tenant_id) as conn:
        cur = await conn.execute("SELECT count(*) FROM graph_outbox WHERE tenant_id = %s", (api.tenant_id,))
        return (await cur.fetchone())[0]


async def _graph(api, turn_id: str, fact_id: str) -> tuple[int, int]:
    records, _, _ = await api.clients.neo4j.execute_query(
        "OPTIONAL MATCH (t:Turn {id: $turn}) WITH count(t) AS turns"
        " OPTIONAL MATCH (f:Fact {id: $fact}) RETURN turns, count(f)",
        turn=turn_id,
        fact=fact_id,
    )
    return records[0][0], records[0][1]


async def _write_and_read_back(api) -> tuple[str, str]:
    """A turn and a fact, each read back by the next request: listed, and recalled."""
    r = await api.call("POST", "/v1/episodic/u1/c1/turns", json={"role": "user", "content": "the cat is grey"})
    assert r.status_code == 201, r.text
    turn = r.json()
    r = await api.call("POST", "/v1/semantic/u1/facts", json={"claim": "the cat is grey", "source_turn_id": turn["id"]})
    assert r.status_code == 201, r.text
    fact = r.json()
    listed = (await api.call("GET", "/v1/episodic/u1/c1/turns")).json()["turns"]
    assert [t["id"] for t in listed] == [turn["id"]]
    recalled = (await api.call("POST", "/v1/remember/u1", json={"query": "grey cat"})).json()
    assert turn["id"] in {t["id"] for t in recalled["relevant_turns"]}
    assert fact["id"] in {f["id"] for f in recalled["facts"]}
    return turn["id"], fact["id"]


def test_background_is_the_default():
    assert ServiceSettings().graph_projection == "background"


@pytest.mark.parametrize("value", ["sometimes", ""])
def test_an_unknown_projection_is_refused(value, monkeypatch):
    monkeypatch.setenv("MEMSTACK_GRAPH_PROJECTION", value)
    with pytest.raises(ValueError, match="graph_projection"):
        ServiceSettings()


class TestBackground:
    @pytest.fixture
    def service_settings(self) -> ServiceSettings:
        return ServiceSettings(graph_projection="background")

    async def test_projects_after_the_answer_and_empties_the_outbox(self, api):
        lag, projected = _lag_count("background"), _project_count()
        turn_id, fact_id = await _write_and_read_back(api)
        await background_projector(api.clients).flush()
        assert await _graph(api, turn_id, fact_id) == (1, 1)
        assert await _outbox_rows(api) == 0
        assert _lag_count("background") >= lag + 2 and _lag_count("inline") >= 0
        assert _project_count() > projected

    async def test_a_graph_outage_leaves_the_rows_to_the_worker(self, api):
        api.clients.graph_circuit.trip()  # what a failed projection does: Neo4j is not asked again for a while
        try:
            turn_id, fact_id = await _write_and_read_back(api)
            await background_projector(api.clients).flush()
            assert await _graph(api, turn_id, fact_id) == (0, 0)
            assert await _outbox_rows(api) >= 2
        finally:
            api.clients.graph_circuit.reset()
        lag = _lag_count("worker")
        await replay_outbox(api.clients)
        assert await _graph(api, turn_id, fact_id) == (1, 1)
        assert await _outbox_rows(api) == 0
        assert _lag_count("worker") >= lag + 2

    async def test_rows_handed_over_while_it_lingers_share_one_transaction(self, api):
        async with api.clients.tenant_transaction(api.tenant_id) as conn:
            rows = [
                await record(
                    conn,
                    api.tenant_id,
                    "reflection",
                    {
                        "id": str(uuid.uuid4()),
                        "created_at": "2026-01-01T00:00:00+00:00",
                        "content": f"r{i}",
                        "type": "success_pattern",
                        "conversation_id": None,
                    },
                )
                for i in range(2)
            ]
        projector, projected = BackgroundProjector(api.clients, linger_s=60), _project_count()
        projector.submit(rows[:1])
        await asyncio.sleep(0.05)  # the projector's task has started on the first row
        projector.submit(rows[1:])
        await projector.flush()  # ends the linger at once
        assert _project_count() == projected + 1
        assert await _outbox_rows(api) == 0
        records, _, _ = await api.clients.neo4j.execute_query(
            "MATCH (r:Reflection) WHERE r.id IN $ids RETURN count(r)", ids=[r.payload["id"] for r in rows]
        )
        assert records[0][0] == 2


class TestWorker:
    @pytest.fixture
    def service_settings(self) -> ServiceSettings:
        return ServiceSettings(graph_projection="worker")

    async def test_writes_leave_the_graph_to_the_outbox_replay(self, api):
        projected = _project_count()
        turn_id, fact_id = await _write_and_read_back(api)
        await background_projector(api.clients).flush()
        assert _project_count() == projected  # the service did not touch Neo4j
        assert await _outbox_rows(api) >= 2
        assert await _graph(api, turn_id, fact_id) == (0, 0)
        await replay_outbox(api.clients)
        assert await _outbox_rows(api) == 0
        assert await _graph(api, turn_id, fact_id) == (1, 1)


class TestInline:
    @pytest.fixture
    def service_settings(self) -> ServiceSettings:
        return ServiceSettings(graph_projection="inline")

    async def test_the_graph_is_current_when_the_answer_leaves(self, api):
        lag = _lag_count("inline")
        turn_id, fact_id = await _write_and_read_back(api)
        assert await _graph(api, turn_id, fact_id) == (1, 1)
        assert await _outbox_rows(api) == 0
        assert _lag_count("inline") >= lag + 2


async def test_shutdown_projects_the_rows_still_lingering(migrated, tenant_id):
    # Rows handed to the background projector wait out MEMORY_GRAPH_LINGER_S; the lifespan's
    # end projects them before the clients close, rather than leaving them to the worker.
    token = new_token()
    tokens = TokenTable.parse(hash_line(tenant_id, token), "test")
    clients = await MemoryClients.connect(migrated.model_copy(update={"graph_linger_s": 60}))
    app = create_app(migrated, ServiceSettings(graph_projection="background"), clients=clients, tokens=tokens)
    try:
        async with app.router.lifespan_context(app.app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://memstack") as client:
                auth = {"Authorization": f"Bearer {token}"}
                api = SimpleNamespace(
                    call=partial(client.request, headers=auth), client=client, clients=clients, tenant_id=tenant_id
                )
                turn_id, fact_id = await _write_and_read_back(api)
                assert await _graph(api, turn_id, fact_id) == (0, 0)  # still lingering
        assert await _graph(api, turn_id, fact_id) == (1, 1)
        assert await _outbox_rows(api) == 0
    finally:
        await clients.close()
