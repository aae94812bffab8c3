from datetime import UTC, datetime, timedelta, timezone

import pytest

from memory_core import AgentMemory
from memory_core.errors import Conflict
from memory_core.validation import MAX_TURN_INDEX


async def test_turns_get_consecutive_indexes_and_are_projected(memory, graph_count, tenant_id):
    turns = [await memory.store_turn(role, f"message {i}") for i, role in enumerate(["user", "assistant", "user"])]
    assert [t.index for t in turns] == [0, 1, 2]
    stored = await memory.get_conversation()
    assert [(t.index, t.role.value, t.content) for t in stored] == [
        (0, "user", "message 0"),
        (1, "assistant", "message 1"),
        (2, "user", "message 2"),
    ]
    assert (
        await graph_count(
            "MATCH (c:Conversation {tenant_id: $t, id: 'conv-1'})-[:HAS_TURN]->(t:Turn) RETURN count(t)", t=tenant_id
        )
        == 3
    )
    assert (
        await graph_count(
            "MATCH (a:Turn {tenant_id: $t})-[:FOLLOWED_BY]->(b:Turn) WHERE b.index = a.index + 1 RETURN count(*)",
            t=tenant_id,
        )
        == 2
    )


async def test_explicit_index_is_idempotent(memory, clients, graph_count, tenant_id):
    first = await memory.store_turn("user", "hello", turn_index=7)
    again = await memory.store_turn("user", "hello", turn_index=7)
    assert again.id == first.id
    assert len(await memory.get_conversation()) == 1
    assert await graph_count("MATCH (t:Turn {tenant_id: $t}) RETURN count(t)", t=tenant_id) == 1
    nxt = await memory.store_turn("assistant", "hi")
    assert nxt.index == 8


async def test_an_explicit_index_replaces_the_turn_there_and_keeps_its_id(memory, graph_count, tenant_id):
    first = await memory.store_turn("user", "hello", turn_index=3)
    edited = await memory.store_turn("user", "hello, edited", turn_index=3)
    assert edited.id == first.id  # the answer says a turn was replaced, not added
    turns = await memory.get_conversation()
    assert [(t.id, t.index, t.content) for t in turns] == [(first.id, 3, "hello, edited")]
    assert await graph_count("MATCH (t:Turn {tenant_id: $t}) RETURN count(t)", t=tenant_id) == 1
    with pytest.raises(ValueError, match="turn_index"):
        await memory.store_turn("user", "x", turn_index=2**31 - 1)  # its successor would overflow


async def test_a_conversation_at_the_last_index_refuses_appends_and_keeps_its_turns(memory):
    last = await memory.store_turn("user", "the last index", turn_index=MAX_TURN_INDEX)
    for _ in range(2):
        with pytest.raises(Conflict, match="every turn index"):
            await memory.store_turn("user", "one more")
    # Replacing a turn by its index still works, and nothing was overwritten by the refusals.
    await memory.store_turn("user", "an earlier one", turn_index=5)
    turns = await memory.get_conversation()
    assert [(t.index, t.content) for t in turns] == [(5, "an earlier one"), (MAX_TURN_INDEX, "the last index")]
    assert turns[1].id == last.id


async def test_a_timestamp_needs_an_offset_a_zone_can_have(memory):
    for bad in (datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-20)))):
        with pytest.raises(ValueError, match="timestamp"):
            await memory.store_turn("user", "x", timestamp=bad)
    with pytest.raises(ValueError, match="deadline"):
        await memory.add_goal("g", deadline=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=19))))
    assert await memory.get_conversation() == []


async def test_a_conversation_belongs_to_one_user(clients, tenant_id):
    await AgentMemory(tenant_id, "alice", "shared-conv", clients=clients).store_turn("user", "mine")
    with pytest.raises(PermissionError):
        await AgentMemory(tenant_id, "bob", "shared-conv", clients=clients).store_turn("user", "intrusion")
    with pytest.raises(PermissionError):
        await AgentMemory(tenant_id, "bob", "shared-conv", clients=clients).store_turn("user", "x", turn_index=0)
    turns = await AgentMemory(tenant_id, "alice", "shared-conv", clients=clients).get_conversation()
    assert [t.content for t in turns] == ["mine"]


async def test_store_turn_needs_a_conversation(clients, tenant_id):
    with pytest.raises(ValueError):
        await AgentMemory(tenant_id, "u", clients=clients).store_turn("user", "x")


async def test_invalid_role_is_rejected(memory):
    with pytest.raises(ValueError):
        await memory.store_turn("admin'); DROP TABLE conversation_logs; --", "x")


async def test_remember_finds_similar_turns_and_honours_time_window(memory):
    await memory.store_turn("user", "my favourite database is postgres with pgvector")
    await memory.store_turn("user", "the weather in paris is rainy today")
    bundle = await memory.remember("which database do I like, postgres?", top_k=1)
    assert bundle.relevant_turns[0]["content"] == "my favourite database is postgres with pgvector"
    from datetime import datetime, timedelta

    future = datetime.now(UTC) + timedelta(hours=1)
    assert (await memory.remember("postgres", since=future)).relevant_turns == []


async def test_expired_turns_are_never_returned(memory):
    import asyncio

    await memory.store_turn("user", "ephemeral secret about kangaroos", ttl_seconds=0.05)
    await asyncio.sleep(0.2)
    assert await memory.get_conversation() == []
    assert (await memory.remember("kangaroos")).relevant_turns == []


async def test_remember_caps_turns_per_conversation_and_deduplicates(clients, tenant_id):
    for conv in ("c1", "c2"):
        m = AgentMemory(tenant_id, "u", conv, clients=clients)
        for i in range(6):
            await m.store_turn("user", f"rust borrow checker question {i}")
        await m.store_turn("user", "identical rust borrow checker text")
    bundle = await AgentMemory(tenant_id, "u", clients=clients).remember("rust borrow checker", top_k=10)
    per_conv = {}
    for t in bundle.relevant_turns:
        per_conv[t["conversation_id"]] = per_conv.get(t["conversation_id"], 0) + 1
    assert max(per_conv.values()) <= clients.settings.max_turns_per_conversation
    contents = [t["content"] for t in bundle.relevant_turns]
    assert len(contents) == len(set(contents))
    assert len(bundle.relevant_turns) <= 10
