import pytest

from memory_core import AgentMemory, GoalStatus, InvalidInput, NotFound


async def test_entity_upsert_merges_aliases_and_labels_the_node(memory, graph_count, tenant_id):
    first = await memory.upsert_entity("Grace Hopper", "Person", aliases=["Amazing Grace"], description="admiral")
    second = await memory.upsert_entity("grace hopper", "Person", aliases=["Grandma COBOL"], salience=0.9)
    assert second.id == first.id
    assert second.aliases == ["Amazing Grace", "Grandma COBOL"]
    assert second.description == "admiral"  # kept: the second upsert gave none
    assert second.salience == 0.9
    assert await graph_count("MATCH (e:Entity:Person {tenant_id: $t}) RETURN count(e)", t=tenant_id) == 1
    assert (
        await graph_count("MATCH (e:Entity {id: $id}) WHERE 'Grandma COBOL' IN e.aliases RETURN count(e)", id=first.id)
        == 1
    )
    other_type = await memory.upsert_entity("Grace Hopper", "Concept")
    assert other_type.id != first.id


async def test_facts_link_to_entities_and_source_turns(memory, graph_count):
    turn = await memory.store_turn("user", "Ada wrote the first program")
    ada = await memory.upsert_entity("Ada Lovelace", "Person")
    fact = await memory.learn_fact(
        "Ada wrote the first program",
        entity_ids=[ada.id],
        source_turn_id=turn.id,
        source="user_stated",
        confidence=0.95,
    )
    assert fact.entity_ids == [ada.id] and fact.confidence == 0.95
    assert (
        await graph_count("MATCH (f:Fact {id: $f})-[:ABOUT]->(:Entity {id: $e}) RETURN count(*)", f=fact.id, e=ada.id)
        == 1
    )
    assert (
        await graph_count(
            "MATCH (f:Fact {id: $f})-[:DERIVED_FROM]->(:Turn {id: $t}) RETURN count(*)", f=fact.id, t=turn.id
        )
        == 1
    )
    with pytest.raises(NotFound):
        await memory.learn_fact("x", entity_ids=["00000000-0000-0000-0000-000000000000"])
    with pytest.raises(InvalidInput):
        await memory.learn_fact("x", entity_ids=["not-a-uuid"])
    with pytest.raises(ValueError):
        await memory.learn_fact("x", confidence=1.5)


async def test_remember_expands_the_graph_two_hops(memory):
    kafka = await memory.upsert_entity("Apache Kafka", "Product", description="event streaming platform")
    zk = await memory.upsert_entity("Quorum Service", "Product", description="coordination")
    jute = await memory.upsert_entity("Serialization Library", "Product", description="wire format")
    far = await memory.upsert_entity("Unrelated Thing", "Concept", description="three hops away")
    await memory.relate(kafka.id, zk.id, "REFERENCES")
    await memory.relate(zk.id, jute.id, "PART_OF")
    await memory.relate(jute.id, far.id, "RELATED_TO")
    await memory.learn_fact("quorum sessions time out after 6 seconds", entity_ids=[zk.id])
    bundle = await memory.remember("apache kafka event streaming", top_k=10)
    by_name = {e["name"]: e for e in bundle.entities}
    assert "Quorum Service" in by_name and "Serialization Library" in by_name
    graph_only = [e["name"] for e in bundle.entities if e["via_graph"]]
    assert "Unrelated Thing" not in graph_only  # three hops from the nearest seed
    assert any(f["claim"] == "quorum sessions time out after 6 seconds" for f in bundle.facts)


async def test_expired_facts_are_never_returned(memory):
    import asyncio

    await memory.learn_fact("the door code is 4711", ttl_seconds=0.05)
    await memory.learn_fact("the door code was changed", priority=5)
    await asyncio.sleep(0.2)
    claims = [f["claim"] for f in (await memory.remember("door code")).facts]
    assert claims == ["the door code was changed"]


async def test_goals_hierarchy_blockers_and_status(memory, graph_count):
    parent = await memory.add_goal("ship the release", priority=5)
    child = await memory.add_goal("write the changelog", priority=2, parent_goal_id=parent.id)
    blocker = await memory.add_goal("fix the flaky test", priority=4)
    updated = await memory.update_goal(child.id, blocked_by=[blocker.id], status=GoalStatus.BLOCKED)
    assert updated.status == GoalStatus.BLOCKED and updated.blocked_by == [blocker.id]
    assert (
        await graph_count(
            "MATCH (:Goal {id: $c})-[:SUBGOAL_OF]->(:Goal {id: $p}) RETURN count(*)", c=child.id, p=parent.id
        )
        == 1
    )
    assert (
        await graph_count(
            "MATCH (:Goal {id: $c})-[:BLOCKED_BY]->(:Goal {id: $b}) RETURN count(*)", c=child.id, b=blocker.id
        )
        == 1
    )
    active = await memory.get_active_goals()
    assert [g.description for g in active] == ["ship the release", "fix the flaky test"]  # by priority
    await memory.update_goal(blocker.id, status="completed")
    assert [g.id for g in await memory.get_active_goals()] == [parent.id]
    assert await graph_count("MATCH (g:Goal {id: $b}) WHERE g.status = 'completed' RETURN count(g)", b=blocker.id) == 1
    with pytest.raises(ValueError):
        await memory.update_goal(child.id, parent_goal_id=child.id)
    with pytest.raises(NotFound):
        await memory.update_goal("00000000-0000-0000-0000-000000000000", status="completed")
    with pytest.raises(ValueError):
        await memory.update_goal(child.id, status="exploded")


async def test_goal_cycles_are_refused(memory):
    a = await memory.add_goal("a")
    b = await memory.add_goal("b", parent_goal_id=a.id)
    c = await memory.add_goal("c", parent_goal_id=b.id)
    with pytest.raises(ValueError, match="descends from"):
        await memory.update_goal(a.id, parent_goal_id=c.id.upper())
    await memory.update_goal(a.id, blocked_by=[b.id])
    await memory.update_goal(b.id, blocked_by=[c.id])
    with pytest.raises(ValueError, match="wait on itself"):
        await memory.update_goal(c.id, blocked_by=[a.id])
    # Not cycles: a sibling as blocker, and a new parent outside the goal's descendants.
    d = await memory.add_goal("d")
    await memory.update_goal(c.id, blocked_by=[d.id], parent_goal_id=d.id)
    goals = {g.id: g for g in await memory.get_active_goals(limit=10)}
    assert goals[a.id].parent_goal_id is None and goals[c.id].parent_goal_id == d.id


async def test_tool_usage_is_audited_and_aggregated(memory, clients, graph_count, tenant_id):
    await memory.record_tool_usage("web_search", {"q": "a"}, {"hits": 3}, True, 100)
    await memory.record_tool_usage("web_search", {"q": "b"}, None, False, 300, error_message="timeout")
    await memory.record_tool_usage("calculator", {"expr": "1+1"}, 2, True, 1)
    stats = {s.name: s for s in await memory.get_tool_stats()}
    assert stats["web_search"].usage_count == 2 and stats["web_search"].success_count == 1
    assert stats["web_search"].avg_latency_ms == 200
    assert (
        await graph_count(
            "MATCH (t:Tool {tenant_id: $t, name: 'web_search'}) WHERE t.usage_count = 2 AND t.success_count = 1 "
            "RETURN count(t)",
            t=tenant_id,
        )
        == 1
    )
    async with clients.tenant_transaction(tenant_id) as conn:
        cur = await conn.execute("SELECT count(*) FROM tool_invocations WHERE tenant_id = %s", (tenant_id,))
        assert (await cur.fetchone())[0] == 3


async def test_strategies_rank_by_similarity_and_success(memory, graph_count):
    good = await memory.learn_strategy(
        "use pandas to analyse csv spreadsheets", context_pattern="csv", tool_sequence=["code_interpreter"]
    )
    bad = await memory.learn_strategy("use pandas to analyse csv files by hand", tool_sequence=["calculator"])
    for _ in range(3):
        await memory.reinforce_strategy(good.id, True)
        await memory.reinforce_strategy(bad.id, False)
    found = await memory.what_worked_for("analyse a csv spreadsheet with pandas")
    assert found[0].id == good.id and found[0].success_count == 4
    reinforced_bad = next(s for s in found if s.id == bad.id)
    assert reinforced_bad.failure_count == 3
    assert (
        await graph_count(
            "MATCH (s:Strategy {id: $id})-[:USES_TOOL]->(:Tool {name: 'code_interpreter'}) "
            "WHERE s.success_count = 4 RETURN count(*)",
            id=good.id,
        )
        == 1
    )
    never_worked = await memory.learn_strategy("use pandas to analyse csv by guessing", success=False)
    assert never_worked.id not in [s.id for s in await memory.what_worked_for("pandas csv")]
    with pytest.raises(NotFound):
        await memory.reinforce_strategy("00000000-0000-0000-0000-000000000000", True)


async def test_user_context_holds_preferences_and_expertise(memory, clients, tenant_id):
    await memory.set_preferences(verbosity="concise", language="en")
    await memory.set_preferences(verbosity="detailed")
    await memory.set_expertise(["python", "postgres"])
    ctx = await memory.get_user_context()
    assert ctx["preferences"] == {"verbosity": "detailed", "language": "en"}
    assert ctx["expertise"] == ["python", "postgres"]
    other_user = AgentMemory(tenant_id, "someone-else", clients=clients)
    assert (await other_user.get_user_context())["preferences"] == {}


async def test_bundle_context_string_respects_max_chars(memory):
    await memory.add_goal("finish the report", priority=5)
    await memory.learn_fact("the report is due friday")
    await memory.store_turn("user", "please remind me about the report " * 20)
    bundle = await memory.remember("report")
    full = bundle.to_context_string(100_000)
    assert "## Active Goals" in full and "finish the report" in full and "due friday" in full
    for limit in (0, 10, 50, 200):
        assert len(bundle.to_context_string(limit)) <= limit


async def test_own_clients_are_created_and_closed(settings, tenant_id):
    async with AgentMemory(tenant_id, "u", "c", settings=settings) as m:
        await m.set_working_context("k", 1)
        assert await m.get_working_context("k") == 1
    assert m._clients is None


async def test_neighbourhood_is_bounded_by_depth_fanout_and_visibility(memory, clients, tenant_id):
    from memory_core.stores import semantic

    seed = await memory.upsert_entity("Seed")
    hop1 = await memory.upsert_entity("First Hop")
    hop2 = await memory.upsert_entity("Second Hop")
    hop3 = await memory.upsert_entity("Third Hop")
    await memory.relate(seed.id, hop1.id, "RELATED_TO")
    await memory.relate(hop2.id, hop1.id, "PART_OF")  # walked against its direction
    await memory.relate(hop2.id, hop3.id, "KNOWS")
    for i in range(15):
        spoke = await memory.upsert_entity(f"Spoke {i}")
        await memory.relate(seed.id, spoke.id, "REFERENCES")
    other_user = AgentMemory(tenant_id, "someone-else", clients=clients)
    private = await other_user.upsert_entity("Someone Else's Secret")
    fact = await memory.learn_fact("the second hop has a fact", entity_ids=[hop2.id])
    async with clients.tenant_transaction(tenant_id) as conn:
        # A relation into another user's private entity (planted directly): it must stay hidden.
        await semantic.relate(conn, memory.caller, seed.id, private.id, "KNOWS", 1.0)
        entities, facts = await semantic.neighbourhood(conn, memory.caller, [seed.id], depth=2, fanout=100)
        hops = {e["id"]: e["hops"] for e in entities}
        assert hops[hop1.id] == 1 and hops[hop2.id] == 2
        assert hop3.id not in hops and seed.id not in hops and private.id not in hops
        assert [f["id"] for f in facts] == [fact.id]
        bounded, _ = await semantic.neighbourhood(conn, memory.caller, [seed.id], depth=1, fanout=5)
        assert len(bounded) <= 5 and all(e["hops"] == 1 for e in bounded)
