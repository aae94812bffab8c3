"""Tenant B can never read, search or modify tenant A's data through any operation."""
import pytest
import psycopg

from memory_core import AgentMemory


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


async def test_tenant_b_reads_nothing_of_tenant_a(clients, tenant_a):
    a, _ = tenant_a
    # Same user, conversation and agent ids, different tenant.
    b = AgentMemory(a.tenant_id + "-b", "user", "conv", clients=clients, agent_id="agent")
    bundle = await b.remember("alpha secret zebras striped company goal strategy", top_k=50)
    assert bundle.relevant_turns == [] and bundle.facts == [] and bundle.entities == []
    assert bundle.strategies == [] and bundle.active_goals == []
    assert bundle.user_context["preferences"] == {}
    assert await b.get_conversation() == []
    assert await b.get_active_goals() == []
    assert await b.what_worked_for("zebra strategy") == []
    assert await b.get_tool_stats() == []
    assert await b.get_working_context("secret") is None
    assert (await b.get_working_context())["recent_turns"] == []


async def test_tenant_b_cannot_modify_or_reference_tenant_a(clients, tenant_a):
    a, data = tenant_a
    b = AgentMemory(a.tenant_id + "-b", "user", "conv", clients=clients, agent_id="agent")
    other = await b.upsert_entity("Mine", "Concept")
    with pytest.raises(ValueError):
        await b.learn_fact("x", entity_ids=[data["entity"].id])
    with pytest.raises(ValueError):
        await b.learn_fact("x", source_turn_id=data["turn"].id)
    with pytest.raises(ValueError):
        await b.relate(other.id, data["entity"].id, "KNOWS")
    with pytest.raises(ValueError):
        await b.update_goal(data["goal"].id, status="completed")
    with pytest.raises(ValueError):
        await b.add_goal("sub", parent_goal_id=data["goal"].id)
    with pytest.raises(ValueError):
        await b.reinforce_strategy(data["strategy"].id, False)
    with pytest.raises(PermissionError):
        await b.learn_fact("into a's space", space="team")
    with pytest.raises(PermissionError):
        await b.grant("team", "intruder", read=True)
    # A's data is unchanged.
    assert [g.id for g in await a.get_active_goals()] == [data["goal"].id]
    assert (await a.what_worked_for("zebra strategy"))[0].failure_count == 0
    assert len(await a.get_conversation()) == 1


async def test_row_level_security_confines_a_transaction_to_its_tenant(clients, tenant_a):
    a, _ = tenant_a
    other_tenant = a.tenant_id + "-b"
    async with clients.tenant_transaction(other_tenant) as conn:
        # No tenant filter in these queries: the policy alone must hide tenant A's rows.
        for table in ("conversation_logs", "memory_timeline", "tool_invocations", "tool_stats", "user_profiles"):
            cur = await conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (a.tenant_id,))
            assert (await cur.fetchone())[0] == 0, table
        cur = await conn.execute("UPDATE memory_timeline SET summary = 'pwned' WHERE tenant_id = %s", (a.tenant_id,))
        assert cur.rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        async with clients.tenant_transaction(other_tenant) as conn:
            await conn.execute(
                "INSERT INTO user_profiles (tenant_id, user_id) VALUES (%s, 'planted')", (a.tenant_id,))
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
    with pytest.raises(PermissionError):
        await reader.learn_fact("reader writes", space="team")
    with pytest.raises(PermissionError):
        await reader.grant("team", "reader", read=True, write=True)  # only the owner grants
    await a.grant("team", "reader", read=True, write=True)
    await reader.learn_fact("reader writes", space="team")
    await a.revoke("team", "reader")
    assert (await reader.remember("alpha shared zebra fact")).facts == []
    # Private facts of A's user never reach another user through a space grant.
    assert all("striped" not in f["claim"] for f in facts)
