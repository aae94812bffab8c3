"""Hostile strings are stored verbatim or rejected with InvalidInput; never executed."""

import math
from datetime import UTC, datetime

import pytest

from memory_core import AgentMemory, InvalidInput

HOSTILE = [
    "Robert'); DROP TABLE conversation_logs; --",
    "' OR '1'='1",
    '"; MATCH (n) DETACH DELETE n; //',
    "}) MATCH (n) DETACH DELETE n WITH 1 AS x MATCH (y {id: '",
    "$tenant_id {{embedding_dim}} %(tenant_id)s %s {0}",
    "multi\nline\ttabs and emoji 🦓 and RTL \u202e",
    "\\x00 not a real nul, backslashes \\\\",
]


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_text_is_stored_verbatim(memory, clients, text, graph_count, tenant_id):
    async def memory_graph(tenant: str):
        return await clients.neo4j.execute_query(
            "MATCH (n {tenant_id: $t}) RETURN labels(n) AS labels, count(*) AS n", t=tenant
        )

    turn = await memory.store_turn("user", text, metadata={"note": text})
    entity = await memory.upsert_entity(text, "Concept", aliases=[text + "!"], description=text)
    fact = await memory.learn_fact(text, entity_ids=[entity.id])
    goal = await memory.add_goal(text)
    await memory.set_working_context(text, text)
    stored = await memory.get_conversation()
    assert stored[-1].content == text and stored[-1].metadata == {"note": text}
    assert entity.name == text and fact.claim == text and goal.description == text
    assert await memory.get_working_context(text) == text
    assert (
        await graph_count("MATCH (e:Entity {id: $id}) WHERE e.name = $text RETURN count(e)", id=entity.id, text=text)
        == 1
    )
    assert (
        await graph_count(
            "MATCH (t:Turn {id: $id}) WHERE t.content_preview = $text RETURN count(t)", id=turn.id, text=text
        )
        == 1
    )
    # The graph holds exactly this tenant's nodes: nothing was deleted or injected.
    records, _, _ = await memory_graph(tenant_id)
    assert sorted((sorted(r["labels"]), r["n"]) for r in records) == [
        (["Concept", "Entity"], 1),
        (["Conversation"], 1),
        (["Fact"], 1),
        (["Goal"], 1),
        (["Turn"], 1),
        (["User"], 1),
    ]
    bundle = await memory.remember(text)
    assert any(f["claim"] == text for f in bundle.facts)


async def test_one_megabyte_text_round_trips(memory):
    text = "lorem ipsum " * (1_048_576 // 12)
    turn = await memory.store_turn("user", text)
    assert (await memory.get_conversation())[-1].content == text
    assert turn.content == text
    fact = await memory.learn_fact(text)
    assert fact.claim == text


async def test_text_over_the_limit_is_rejected(memory, clients):
    with pytest.raises(InvalidInput, match="limit"):
        await memory.store_turn("user", "x" * (clients.settings.max_text_chars + 1))


@pytest.mark.parametrize("bad", ["nul \x00 byte", "lone surrogate \udc80", b"\xff\xfe invalid utf-8"])
async def test_unstorable_text_is_invalid_input(memory, bad):
    with pytest.raises(InvalidInput):
        await memory.store_turn("user", bad)
    with pytest.raises(InvalidInput):
        await memory.learn_fact(bad)
    with pytest.raises(InvalidInput):
        await memory.upsert_entity(bad)
    with pytest.raises(InvalidInput):
        await memory.remember(bad)
    assert await memory.get_conversation() == []


async def test_valid_utf8_bytes_are_accepted(memory):
    await memory.store_turn("user", "zèbre".encode())
    assert (await memory.get_conversation())[0].content == "zèbre"


@pytest.mark.parametrize(
    "vector", [[math.nan] * 384, [math.inf] + [0.1] * 383, [0.1] * 383, [0.1] * 385, [0.0] * 384, ["a"] * 384]
)
async def test_bad_embeddings_are_rejected(memory, vector):
    with pytest.raises(InvalidInput):
        await memory.store_turn("user", "hello", embedding=vector)


@pytest.mark.parametrize("bad_id", ["", " padded ", "new\nline", "x" * 201, "tab\there", "nul\x00"])
def test_bad_identifiers_are_rejected(clients, bad_id):
    with pytest.raises(InvalidInput):
        AgentMemory(bad_id, "u", clients=clients)
    with pytest.raises(InvalidInput):
        AgentMemory("t", bad_id, clients=clients)
    with pytest.raises(InvalidInput):
        AgentMemory("t", "u", bad_id, clients=clients)


async def test_relationship_types_come_only_from_the_whitelist(memory):
    a = await memory.upsert_entity("A")
    b = await memory.upsert_entity("B")
    for rel in ["KNOWS]->(x) DETACH DELETE x //", "knows", "HAS_TURN", ""]:
        with pytest.raises(InvalidInput):
            await memory.relate(a.id, b.id, rel)


async def test_entity_types_are_identifiers(memory):
    with pytest.raises(InvalidInput):
        await memory.upsert_entity("x", "Person:Admin")


async def test_nan_confidence_and_metadata_are_rejected(memory):
    with pytest.raises(InvalidInput):
        await memory.learn_fact("x", confidence=math.nan)
    with pytest.raises(InvalidInput):
        await memory.store_turn("user", "x", metadata={"v": math.nan})
    with pytest.raises(InvalidInput):
        await memory.store_turn("user", "x", metadata={"v": "nul\x00"})
    with pytest.raises(InvalidInput, match="metadata contains a lone surrogate"):
        await memory.store_turn("user", "x", metadata={"v": "lone \ud800"})
    # A character outside the BMP is escaped as a surrogate pair, which jsonb stores.
    turn = await memory.store_turn("user", "x", metadata={"v": "\U0001f600"})
    assert turn is not None


async def test_malformed_ids_and_numbers_are_typed_errors_not_driver_errors(memory):
    goal = await memory.add_goal("a goal")
    for bad in ("not-a-uuid", "'; DROP TABLE memory_timeline; --"):
        with pytest.raises(InvalidInput):
            await memory.update_goal(bad, status="completed")
        with pytest.raises(InvalidInput):
            await memory.reinforce_strategy(bad, True)
    for priority in (2**40, "high", 1.5):
        with pytest.raises(InvalidInput):
            await memory.upsert_entity("x", priority=priority)
        with pytest.raises(InvalidInput):
            await memory.learn_fact("x", priority=priority)
    with pytest.raises(InvalidInput):
        await memory.record_tool_usage("t", {}, None, True, 1, turn_index=2**40)
    for limit in (0, -1, "5"):
        with pytest.raises(InvalidInput):
            await memory.what_worked_for("x", top_k=limit)
        with pytest.raises(InvalidInput):
            await memory.get_active_goals(limit=limit)
    assert [g.id for g in await memory.get_active_goals()] == [goal.id]


@pytest.mark.parametrize("value", ["nul \x00 byte", math.nan, object(), "lone \ud800 surrogate", {"\udc80": 1}])
async def test_unstorable_preferences_are_invalid_input(memory, value):
    # Refused by name before Postgres sees it (jsonb's own error named no field).
    with pytest.raises(InvalidInput, match=r"^preferences"):
        await memory.set_preferences(note=value)
    assert (await memory.get_user_context())["preferences"] == {}


@pytest.mark.parametrize("outcome", [{"summary": "nul \x00"}, {"summary": math.nan}, ["not", "a", "dict"]])
async def test_unprocessable_reflections_are_refused_when_queued(memory, outcome):
    with pytest.raises(InvalidInput):
        await memory.reflect(outcome)


async def test_a_remember_window_must_be_aware_and_in_order(memory):
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    with pytest.raises(InvalidInput, match=r"since .* is after until"):
        await memory.remember("anything", since=late, until=early)
    with pytest.raises(InvalidInput, match="since"):
        await memory.remember("anything", since=datetime(2026, 1, 1), time_window_hours=1)
    assert (await memory.remember("anything", since=early, until=late)).relevant_turns == []


async def test_out_of_range_token_count_is_invalid_input(memory):
    with pytest.raises(InvalidInput):
        await memory.store_turn("user", "x", token_count=2**40)
    assert await memory.get_conversation() == []
