"""MEMORY_GRAPH_LINGER_S: how long background projection waits for more writes' rows before one
Neo4j transaction applies them. Callers read Postgres, so only the graph waits."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import ValidationError

from memory_core import AgentMemory, MemoryClients
from memory_core.settings import Settings, settings_error
from memory_core.stores.graph import background_projector, set_projection


def test_the_linger_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEMORY_GRAPH_LINGER_S", "0.5")
    assert Settings().graph_linger_s == 0.5


@pytest.mark.parametrize("value", ["-1", "61", "soon"])
def test_a_bad_linger_is_refused_by_its_name(value, monkeypatch):
    monkeypatch.setenv("MEMORY_GRAPH_LINGER_S", value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert settings_error(refused.value).startswith("MEMORY_GRAPH_LINGER_S: ")


async def test_rows_wait_in_the_linger_while_the_caller_reads_its_write(settings, tenant_id, graph_count):
    clients = await MemoryClients.connect(settings.model_copy(update={"graph_linger_s": 60.0}))
    try:
        set_projection(clients, "background")
        memory = AgentMemory(tenant_id, "u", f"c-{uuid.uuid4().hex[:8]}", clients=clients)
        turn = await memory.store_turn("user", "the linger holds this turn's projection")
        await asyncio.sleep(0.5)  # longer than the linger before the setting existed (0.2 s)
        assert [t.id for t in await memory.get_conversation()] == [turn.id]
        assert await graph_count("MATCH (t:Turn {id: $id}) RETURN count(t)", id=turn.id) == 0
        await background_projector(clients).flush()  # ends the linger at once
        assert await graph_count("MATCH (t:Turn {id: $id}) RETURN count(t)", id=turn.id) == 1
    finally:
        await clients.close()
