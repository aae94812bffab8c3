"""Fixtures for memory_core tests. The stack, settings and tenant_id fixtures come from
tests/conftest.py (the shared local stack); everything here is function-scoped because no
session event loop is guaranteed."""

from __future__ import annotations

import pytest_asyncio

from memory_core import AgentMemory, MemoryClients, migrate

_migrated: set[int] = set()


@pytest_asyncio.fixture
async def clients(settings):
    c = await MemoryClients.connect(settings)
    if settings.embedding_dim not in _migrated:
        await migrate(settings, c.neo4j)
        _migrated.add(settings.embedding_dim)
    try:
        yield c
    finally:
        await c.close()


@pytest_asyncio.fixture
async def memory(clients, tenant_id):
    return AgentMemory(tenant_id, "user-1", "conv-1", clients=clients)


@pytest_asyncio.fixture
async def graph_count(clients):
    """`await graph_count(cypher, **params)`: the first column of the first row."""

    async def count(query: str, **params) -> int:
        records, _, _ = await clients.neo4j.execute_query(query, **params)
        return records[0][0]

    return count
