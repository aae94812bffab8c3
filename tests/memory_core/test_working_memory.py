import asyncio

import pytest
from redis.crc import key_slot

from memory_core import AgentMemory, WorkingMemoryFull


async def test_set_get_delete_round_trip(memory):
    await memory.set_working_context("plan", {"steps": ["a", "b"], "n": 2})
    assert await memory.get_working_context("plan") == {"steps": ["a", "b"], "n": 2}
    assert await memory.delete_working_context("plan") is True
    assert await memory.get_working_context("plan") is None
    assert await memory.delete_working_context("plan") is False


async def test_values_expire_and_are_not_returned(memory):
    await memory.set_working_context("short", 1, ttl_seconds=0.05)
    await memory.set_working_context("long", 2, ttl_seconds=60)
    await asyncio.sleep(0.2)
    assert await memory.get_working_context("short") is None
    snapshot = await memory.get_working_context()
    assert snapshot["context"] == {"long": 2}


async def test_cap_evicts_lowest_priority_and_refuses_when_all_outrank(clients, tenant_id):
    settings = clients.settings.model_copy(update={"working_max_context_keys": 3})
    clients.settings, original = settings, clients.settings
    try:
        m = AgentMemory(tenant_id, "u", "c", clients=clients)
        await m.set_working_context("a", 1, priority=5)
        await m.set_working_context("b", 2, priority=1)
        await m.set_working_context("c", 3, priority=5)
        await m.set_working_context("d", 4, priority=3)  # evicts b, the lowest priority
        assert (await m.get_working_context())["context"] == {"a": 1, "c": 3, "d": 4}
        with pytest.raises(WorkingMemoryFull):
            await m.set_working_context("e", 5, priority=0)
        await m.set_working_context("a", 10, priority=0)  # overwriting an existing key is always allowed
        assert await m.get_working_context("a") == 10
    finally:
        clients.settings = original


async def test_turns_and_thoughts_are_capped_newest_first(memory, clients):
    for i in range(clients.settings.working_max_thoughts + 5):
        await memory.push_thought(f"thought {i}")
    thoughts = await memory.get_thoughts(limit=1000)
    assert len(thoughts) == clients.settings.working_max_thoughts
    assert thoughts[0]["thought"] == f"thought {clients.settings.working_max_thoughts + 4}"
    for i in range(3):
        await memory.store_turn("user", f"turn {i}")
    recent = (await memory.get_working_context())["recent_turns"]
    assert [t["content"] for t in recent[:3]] == ["turn 2", "turn 1", "turn 0"]


async def test_every_key_has_a_ttl_and_one_hash_slot(memory, clients):
    await memory.set_working_context("k", "v", ttl_seconds=30)
    await memory.push_thought("t")
    await memory.store_turn("user", "hello")
    w = await memory.working()
    keys = [w.ctx_key, w.turns_key, w.thoughts_key]
    for key in keys:
        ttl = await clients.redis.pttl(key)
        assert 0 < ttl <= clients.settings.working_max_ttl_s * 1000, key
    assert len({key_slot(k.encode()) for k in keys}) == 1


async def test_ttl_is_capped(memory, clients):
    await memory.set_working_context("k", "v", ttl_seconds=10**9)
    assert await clients.redis.pttl((await memory.working()).ctx_key) <= clients.settings.working_max_ttl_s * 1000


async def test_conversations_and_tenants_do_not_share_working_memory(clients, tenant_id):
    a = AgentMemory(tenant_id, "u", "c1", clients=clients)
    b = AgentMemory(tenant_id, "u", "c2", clients=clients)
    other_tenant = AgentMemory(tenant_id + "-other", "u", "c1", clients=clients)
    await a.set_working_context("k", "a")
    assert await b.get_working_context("k") is None
    assert await other_tenant.get_working_context("k") is None


async def test_ids_cannot_break_out_of_the_key_layout(clients, tenant_id):
    tricky = AgentMemory(tenant_id, "u}:{x", "c|d", clients=clients)
    plain = AgentMemory(tenant_id, "u", "x", clients=clients)
    await tricky.set_working_context("k", "tricky")
    assert await plain.get_working_context("k") is None
    w = await tricky.working()
    assert w.ctx_key.count("{") == 1 and w.ctx_key.count("}") == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"x": object()}])
async def test_unserialisable_values_are_rejected(memory, value):
    with pytest.raises(ValueError):
        await memory.set_working_context("k", value)


async def test_oversized_value_is_rejected(memory, clients):
    with pytest.raises(ValueError):
        await memory.set_working_context("k", "x" * (clients.settings.working_max_value_bytes + 1))


async def test_close_can_clear_the_conversation(memory):
    await memory.set_working_context("k", "v")
    await memory.close(clear_working=True)
    assert await memory.get_working_context() == {"context": {}, "recent_turns": [], "thoughts": []}
