"""Tenant B can never read, search or modify tenant A's data through any operation.

Each test makes the same calls as tenant A too, and checks they do find or change A's data:
an empty answer for B means something only because A's own answer is not empty."""

import psycopg
import pytest

from memory_core import AgentMemory, Forbidden, NotFound


@pytest.fixture
async def tenant_a(clients, tenant_id):
    a = AgentMemory(tenant_id, "user", "conv", clients=clients, agent_id="agent")
    data = {
        "turn": await a.store_turn("user", "alpha secret about zebras"),
        "entity": await a.upsert_entity("Zebra Corp", "Organization", description="alpha secret company"),
        "goal": await a.add_goal("alpha secret goal about zebras"),
        "strategy": await a.learn_strategy("alpha secret zebra strategy", tool_sequence=["zebra_tool"]),
    }
    data["fact"] = await a.learn_fact("alpha secret zebras are striped", entity_ids=[data["entity"].id])
    await a.record_tool_usage("zebra_tool", {"q": "zebras"}, {"ok": True}, True, 5)
    await a.set_preferences(secret="alpha")
    await a.set_working_context("secret", "alpha")
    await a.create_space("team")
    await a.learn_fact("alpha shared zebra fact", space="team")
    return a, data


async def _everything_readable(memory: AgentMemory) -> dict[str, object]:
    """What each read operation answers for `memory`, reduced to comparable values."""
    bundle = await memory.remember("alpha secret zebras striped company goal strategy", top_k=50)
    return {
        "turns": [t["content"] for t in bundle.relevant_turns],
        "facts": sorted(f["claim"] for f in bundle.facts),
        "entities": [e["name"] for e in bundle.entities],
        "strategies": [s["description"] for s in bundle.strategies],
        "goals": [g["description"] for g in bundle.active_goals],
        "preferences": bundle.user_context["preferences"],
        "conversation": [t.content for t in await memory.get_conversation()],
        "active_goals": [g.description for g in await memory.get_active_goals()],
        "what_worked": [s.description for s in await memory.what_worked_for("zebra strategy")],
        "tool_stats": [t.name for t in await memory.get_tool_stats()],
        "working_value": await memory.get_working_context("secret"),
        "working_turns": [t["content"] for t in (await memory.get_working_context())["recent_turns"]],
    }


async def test_tenant_b_reads_nothing_of_tenant_a(clients, tenant_a):
    a, _ = tenant_a
    # Same user, conversation and agent ids, different tenant.
    b = AgentMemory(a.tenant_id + "-b", "user", "conv", clients=clients, agent_id="agent")
    seen_by_a = await _everything_readable(a)
    assert all(seen_by_a.values()), {k: v for k, v in seen_by_a.items() if not v}
    assert seen_by_a["preferences"] == {"secret": "alpha"} and seen_by_a["working_value"] == "alpha"
    seen_by_b = await _everything_readable(b)
    assert seen_by_b == {**{k: [] for k in seen_by_a}, "preferences": {}, "working_value": None}


async def test_tenant_b_cannot_modify_or_reference_tenant_a(clients, tenant_a):
    a, data = tenant_a
    b = AgentMemory(a.tenant_id + "-b", "user", "conv", clients=clients, agent_id="agent")
    other = await b.upsert_entity("Mine", "Concept")
    with pytest.raises(NotFound):
        await b.learn_fact("x", entity_ids=[data["entity"].id])
    with pytest.raises(NotFound):
        await b.learn_fact("x", source_turn_id=data["turn"].id)
    with pytest.raises(NotFound):
        await b.relate(other.id, data["entity"].id, "KNOWS")
    with pytest.raises(NotFound):
        await b.update_goal(data["goal"].id, status="completed")
    with pytest.raises(NotFound):
        await b.add_goal("sub", parent_goal_id=data["goal"].id)
    with pytest.raises(NotFound):
        await b.reinforce_strategy(data["strategy"].id, False)
    with pytest.raises(Forbidden):
        await b.learn_fact("into b's idea of a's space", space="team")
    with pytest.raises(Forbidden):
        await b.grant("team", "intruder", read=True)
    # A's data is unchanged.
    assert [g.id for g in await a.get_active_goals()] == [data["goal"].id]
    assert (await a.what_worked_for("zebra strategy"))[0].failure_count == 0
    assert len(await a.get_conversation()) == 1
    # The same references and changes succeed for tenant A, so B was refused for the tenant alone.
    mine = await a.upsert_entity("Mine", "Concept")
    await a.learn_fact("x", entity_ids=[data["entity"].id], source_turn_id=data["turn"].id)
    await a.relate(mine.id, data["entity"].id, "KNOWS")
    await a.add_goal("sub", parent_goal_id=data["goal"].id)
    assert (await a.reinforce_strategy(data["strategy"].id, False)).failure_count == 1
    await a.learn_fact("into a's own space", space="team")
    await a.grant("team", "intruder", read=True)
    assert (await a.update_goal(data["goal"].id, status="completed")).status == "completed"


async def test_row_level_security_confines_a_transaction_to_its_tenant(clients, tenant_a):
    a, _ = tenant_a
    other_tenant = a.tenant_id + "-b"
    tables = ("conversation_logs", "memory_timeline", "tool_invocations", "tool_stats", "user_profiles")
    async with clients.tenant_transaction(a.tenant_id) as conn:
        for table in tables:
            cur = await conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (a.tenant_id,))
            assert (await cur.fetchone())[0] > 0, f"tenant A sees none of its own rows in {table}"
    async with clients.tenant_transaction(other_tenant) as conn:
        # The policy alone must hide tenant A's rows from these queries that filter on A.
        for table in tables:
            cur = await conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (a.tenant_id,))
            assert (await cur.fetchone())[0] == 0, table
        cur = await conn.execute("UPDATE memory_timeline SET summary = 'pwned' WHERE tenant_id = %s", (a.tenant_id,))
        assert cur.rowcount == 0
    async with clients.tenant_transaction(a.tenant_id) as conn:
        cur = await conn.execute("SELECT count(*) FROM memory_timeline WHERE summary = 'pwned'")
        assert (await cur.fetchone())[0] == 0
        cur = await conn.execute("UPDATE memory_timeline SET summary = summary WHERE tenant_id = %s", (a.tenant_id,))
        assert cur.rowcount > 0, "tenant A cannot update its own rows"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        async with clients.tenant_transaction(other_tenant) as conn:
            await conn.execute("INSERT INTO user_profiles (tenant_id, user_id) VALUES (%s, 'planted')", (a.tenant_id,))
    async with clients.tenant_transaction(a.tenant_id) as conn:
        await conn.execute("INSERT INTO user_profiles (tenant_id, user_id) VALUES (%s, 'planted')", (a.tenant_id,))
    # A connection that names no tenant sees no tenant's rows at all.
    async with clients.pg_pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM conversation_logs WHERE tenant_id = %s", (a.tenant_id,))
        assert (await cur.fetchone())[0] == 0


async def test_shared_space_needs_grants(clients, tenant_a):
    a, _ = tenant_a
    reader = AgentMemory(a.tenant_id, "other-user", clients=clients, agent_id="reader")
    assert (await reader.remember("alpha shared zebra fact")).facts == []
    await a.grant("team", "reader", read=True, write=False)
    facts = (await reader.remember("alpha shared zebra fact")).facts
    assert [f["claim"] for f in facts] == ["alpha shared zebra fact"]
    with pytest.raises(Forbidden):
        await reader.learn_fact("reader writes", space="team")
    with pytest.raises(Forbidden):
        await reader.grant("team", "reader", read=True, write=True)  # only the owner grants
    await a.grant("team", "reader", read=True, write=True)
    await reader.learn_fact("reader writes", space="team")
    await a.revoke("team", "reader")
    assert (await reader.remember("alpha shared zebra fact")).facts == []
    # Private facts of A's user never reach another user through a space grant.
    assert all("striped" not in f["claim"] for f in facts)
