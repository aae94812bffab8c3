"""Neo4j down: turns are still stored, and the worker's outbox replay projects each exactly once."""
import time

import pytest

from memory_core import AgentMemory
from memory_core.clients import make_neo4j_driver
from memory_core.worker.jobs import replay_outbox


@pytest.mark.slow
async def test_turns_stored_while_neo4j_is_down_are_replayed_exactly_once(stack, clients, tenant_id, graph_count):
    memory = AgentMemory(tenant_id, "u", "conv-down", clients=clients)
    # Close our pooled Bolt connections first so that the server port is not left in TIME_WAIT
    # by the kill (the stack refuses to restart on a port it cannot bind).
    await clients.neo4j.close()
    clients.neo4j = make_neo4j_driver(clients.settings)
    stack.kill("neo4j")
    try:
        for i in range(100):
            await memory.store_turn("user" if i % 2 == 0 else "assistant", f"turn number {i}")
        assert len(await memory.get_conversation()) == 100
    finally:
        _start_when_port_is_free(stack, "neo4j")
    async with clients.tenant_transaction(tenant_id) as conn:
        cur = await conn.execute("SELECT count(*) FROM graph_outbox WHERE tenant_id = %s", (tenant_id,))
        assert (await cur.fetchone())[0] == 100

    await replay_outbox(clients)
    await replay_outbox(clients)  # a second pass (or a crashed first one) must not duplicate

    assert await graph_count(
        "MATCH (c:Conversation {tenant_id: $t, id: 'conv-down'})-[:HAS_TURN]->(t:Turn) RETURN count(t)", t=tenant_id
    ) == 100
    assert await graph_count("MATCH (t:Turn {tenant_id: $t}) RETURN count(DISTINCT t.index)", t=tenant_id) == 100
    assert await graph_count(
        "MATCH (a:Turn {tenant_id: $t})-[r:FOLLOWED_BY]->(b:Turn) WHERE b.index = a.index + 1 RETURN count(r)",
        t=tenant_id) == 99
    async with clients.tenant_transaction(tenant_id) as conn:
        cur = await conn.execute("SELECT count(*) FROM graph_outbox WHERE tenant_id = %s", (tenant_id,))
        assert (await cur.fetchone())[0] == 0


def _start_when_port_is_free(stack, service: str, timeout_s: float = 120.0) -> None:
    # After a SIGKILL the server's side of closed Bolt connections sits in TIME_WAIT for up to
    # 60 s, and the local backend refuses to start on a port it cannot bind meanwhile.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stack.start(service)
            return
        except Exception as exc:  # noqa: BLE001 - the backend's own error type is not ours to import
            if "taken" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)


async def test_replay_of_an_already_projected_row_changes_nothing(memory, clients, tenant_id, graph_count):
    entity = await memory.upsert_entity("Ada Lovelace", "Person", description="mathematician")
    # Re-queue the same projection as a crashed worker would leave it, then replay it.
    async with clients.tenant_transaction(tenant_id) as conn:
        await conn.execute(
            "INSERT INTO graph_outbox (tenant_id, event, payload) SELECT %s, 'relation', jsonb_build_object("
            "'source_id', %s::text, 'target_id', %s::text, 'rel_type', 'KNOWS', 'weight', 1.0)",
            (tenant_id, entity.id, entity.id),
        )
    await memory.relate(entity.id, entity.id, "KNOWS")
    await replay_outbox(clients)
    assert await graph_count("MATCH (e:Entity {tenant_id: $t}) RETURN count(e)", t=tenant_id) == 1
    assert await graph_count("MATCH (:Entity {tenant_id: $t})-[r:KNOWS]->() RETURN count(r)", t=tenant_id) == 1
