"""Neo4j down: turns are still stored, and the worker's outbox replay projects each exactly once."""

import time

import pytest

from memory_core import AgentMemory
from memory_core.clients import make_neo4j_driver
from memory_core.stores.graph import record
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

    assert (
        await graph_count(
            "MATCH (c:Conversation {tenant_id: $t, id: 'conv-down'})-[:HAS_TURN]->(t:Turn) RETURN count(t)", t=tenant_id
        )
        == 100
    )
    assert await graph_count("MATCH (t:Turn {tenant_id: $t}) RETURN count(DISTINCT t.index)", t=tenant_id) == 100
    assert (
        await graph_count(
            "MATCH (a:Turn {tenant_id: $t})-[r:FOLLOWED_BY]->(b:Turn) WHERE b.index = a.index + 1 RETURN count(r)",
            t=tenant_id,
        )
        == 99
    )
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
        except Exception as exc:
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


async def test_an_older_relation_row_replayed_late_does_not_overwrite_a_newer_weight(
    memory, clients, tenant_id, graph_count
):
    a = await memory.upsert_entity("Older")
    b = await memory.upsert_entity("Newer")
    # relate(weight=1) whose projection failed (left in the outbox), then relate(weight=2) projected inline.
    async with clients.tenant_transaction(tenant_id) as conn:
        await conn.execute(
            "INSERT INTO graph_outbox (tenant_id, event, payload) SELECT %s, 'relation', jsonb_build_object("
            "'source_id', %s::text, 'target_id', %s::text, 'rel_type', 'KNOWS', 'weight', 1.0)",
            (tenant_id, a.id, b.id),
        )
        await conn.execute(
            "INSERT INTO entity_relations (tenant_id, source_id, target_id, rel_type, weight)"
            " VALUES (%s, %s, %s, 'KNOWS', 1.0)",
            (tenant_id, a.id, b.id),
        )
    await memory.relate(a.id, b.id, "KNOWS", weight=2.0)
    await replay_outbox(clients)
    assert (
        await graph_count(
            "MATCH (:Entity {id: $a})-[r:KNOWS]->(:Entity {id: $b}) WHERE r.weight = 2.0 RETURN count(r)",
            a=a.id,
            b=b.id,
        )
        == 1
    )


async def test_an_older_turn_row_replayed_late_does_not_overwrite_a_rewritten_turn(
    memory, clients, tenant_id, graph_count
):
    first = await memory.store_turn("user", "first draft", turn_index=0)
    # The row of an earlier write of this turn, left in the outbox, replayed after the rewrite below.
    async with clients.tenant_transaction(tenant_id) as conn:
        await conn.execute(
            "INSERT INTO graph_outbox (tenant_id, event, payload) SELECT %s, 'turn', jsonb_build_object("
            "'user_id', %s::text, 'conversation_id', %s::text, 'turn_id', %s::text, 'index', 0, 'role', 'user',"
            " 'timestamp', now(), 'content', 'first draft')",
            (tenant_id, memory.user_id, memory.conversation_id, first.id),
        )
    rewritten = await memory.store_turn("user", "final text", turn_index=0)
    assert rewritten.id == first.id
    await replay_outbox(clients)
    assert await graph_count("MATCH (t:Turn {id: $id}) RETURN t.content_preview = 'final text'", id=first.id)


async def test_a_saturated_graph_pool_defers_projection_instead_of_failing_a_committed_write(
    memory, clients, tenant_id, graph_count
):
    from neo4j import AsyncGraphDatabase

    s = clients.settings
    saturated = AsyncGraphDatabase.driver(
        s.neo4j_uri,
        auth=(s.neo4j_user, s.neo4j_password.get_secret_value()),
        max_connection_pool_size=1,
        connection_acquisition_timeout=0.5,
    )
    original, clients.neo4j = clients.neo4j, saturated
    try:
        async with saturated.session() as holder:
            tx = await holder.begin_transaction()  # takes the pool's only connection
            fact = await memory.learn_fact("written while the graph pool was exhausted")
            await tx.rollback()
        async with clients.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute("SELECT count(*) FROM graph_outbox WHERE payload->>'id' = %s", (fact.id,))
            assert (await cur.fetchone())[0] == 1
    finally:
        clients.neo4j = original
        clients.graph_circuit.reset()
        await saturated.close()
    await replay_outbox(clients)
    assert await graph_count("MATCH (f:Fact {id: $id}) RETURN count(f)", id=fact.id) == 1


async def test_a_row_that_cannot_be_applied_does_not_wedge_the_outbox(memory, clients, tenant_id, graph_count):
    # A row this version cannot apply at all (an unknown relationship type: from another version,
    # or a bug) fails with a non-driver error; it must be counted, not stop every later row.
    async with clients.tenant_transaction(tenant_id) as conn:
        bad = await record(
            conn, tenant_id, "relation", {"source_id": "a", "target_id": "b", "rel_type": "BOGUS", "weight": 1.0}
        )
        good = await record(
            conn,
            tenant_id,
            "reflection",
            {
                "id": f"r-{tenant_id}",
                "created_at": "2024-01-01T00:00:00Z",
                "content": "x",
                "type": "t",
                "conversation_id": None,
            },
        )
    await replay_outbox(clients)
    assert (
        await graph_count(
            "MATCH (r:Reflection {id: $id, tenant_id: $t}) RETURN count(r)", id=f"r-{tenant_id}", t=tenant_id
        )
        == 1
    )
    async with clients.tenant_transaction(tenant_id) as conn:
        cur = await conn.execute(
            "SELECT id, attempts, last_error FROM graph_outbox WHERE id = ANY(%s)", ([bad.id, good.id],)
        )
        rows = await cur.fetchall()
    assert [(r[0], r[1]) for r in rows] == [(bad.id, 1)] and "BOGUS" in rows[0][2]
    async with clients.tenant_transaction(tenant_id) as conn:
        await conn.execute("DELETE FROM graph_outbox WHERE id = %s", (bad.id,))


async def _pending(clients, tenant_id: str) -> int:
    async with clients.tenant_transaction(tenant_id) as conn:
        cur = await conn.execute("SELECT count(*) FROM graph_outbox WHERE tenant_id = %s", (tenant_id,))
        return (await cur.fetchone())[0]


async def test_background_projection_batches_tenants_and_leaves_its_overflow_to_the_outbox(clients, graph_count):
    import uuid

    from memory_core.stores.graph import BackgroundProjector

    def reflection(i: int) -> dict:
        return {
            "id": str(uuid.uuid4()),
            "created_at": "2026-01-01T00:00:00+00:00",
            "content": f"r{i}",
            "type": "success_pattern",
            "conversation_id": None,
        }

    tenants = [f"t-bg-{i}-{time.time_ns()}" for i in range(2)]
    rows = []
    for tenant in tenants:
        async with clients.tenant_transaction(tenant) as conn:
            rows += [await record(conn, tenant, "reflection", reflection(i)) for i in range(3)]
    projector = BackgroundProjector(clients)
    projector.submit(rows)  # two tenants' rows in one batch: one Neo4j transaction, one delete by id
    await projector.flush()
    for tenant in tenants:
        assert await _pending(clients, tenant) == 0
        assert await graph_count("MATCH (r:Reflection {tenant_id: $t}) RETURN count(r)", t=tenant) == 3

    # A projector that may hold one pending row keeps one; the other stays in the outbox alone.
    tenant = f"t-bg-full-{time.time_ns()}"
    async with clients.tenant_transaction(tenant) as conn:
        rows = [await record(conn, tenant, "reflection", reflection(i)) for i in range(2)]
    small = BackgroundProjector(clients, max_pending=1)
    small.submit(rows[:1])
    small.submit(rows[1:])
    await small.flush()
    assert await _pending(clients, tenant) == 1
    assert await graph_count("MATCH (r:Reflection {tenant_id: $t}) RETURN count(r)", t=tenant) == 1
    await replay_outbox(clients)
    assert await _pending(clients, tenant) == 0
    assert await graph_count("MATCH (r:Reflection {tenant_id: $t}) RETURN count(r)", t=tenant) == 2


@pytest.mark.parametrize("retry", [True, False])
async def test_a_batch_of_mixed_events_is_one_statement_applied_row_by_row_in_id_order(
    clients, tenant_id, graph_count, retry
):
    """Rows of several events in one batch: each row sees the rows before it and none after."""
    import uuid

    from memory_core.stores.graph import OutboxRow, apply_rows, batch_statement

    ids = iter(range(time.time_ns() // 1000, time.time_ns() // 1000 + 100))
    gone, kept, entity = (str(uuid.uuid4()) for _ in range(3))

    def row(event: str, **payload) -> OutboxRow:
        return OutboxRow(next(ids), tenant_id, event, payload)

    def fact(fact_id: str) -> OutboxRow:
        return row(
            "fact",
            id=fact_id,
            claim="c",
            confidence=0.5,
            source="user",
            scope="u:u",
            source_turn_id=None,
            entity_ids=[],
            created_at="2026-01-01T00:00:00+00:00",
        )

    def turn(index: int) -> OutboxRow:
        return row(
            "turn",
            user_id="u",
            conversation_id="c",
            turn_id=str(uuid.uuid4()),
            index=index,
            role="user",
            timestamp="2026-01-01T00:00:00+00:00",
            content=f"turn {index}",
        )

    rows = [
        turn(0),
        fact(gone),
        row("forget", ids=[gone, kept]),  # forgets the fact before it; the one after is new
        fact(kept),
        turn(1),
        row(
            "entity",
            id=entity,
            name="Ada",
            type="Person",
            aliases=[],
            description="",
            salience=0.5,
            scope="u:u",
            properties={},
            embedding=None,
        ),
    ]
    statement, _ = batch_statement(rows[::-1])  # the statement orders rows by id itself
    assert statement.count("UNWIND") == 1
    await apply_rows(clients.neo4j, rows[::-1], retry=retry)

    count = "MATCH (f:Fact {id: $id}) RETURN count(f)"
    assert (await graph_count(count, id=gone), await graph_count(count, id=kept)) == (0, 1)
    assert await graph_count("MATCH (:Turn {tenant_id: $t})-[r:FOLLOWED_BY]->(:Turn) RETURN count(r)", t=tenant_id) == 1
    assert await graph_count("MATCH (e:Entity:Person {id: $id}) RETURN count(e)", id=entity) == 1
