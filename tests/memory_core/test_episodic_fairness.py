"""Vector search of turns is exact for a small tenant that shares the HNSW index with bigger
ones. pgvector 0.6 filters by tenant after the index scan, so a plan that uses the shared index
returns, of the tenant's turns, only those among the whole index's nearest candidates.

Each test builds the worst case in its own schema: the bigger tenants' turns all lie nearer to
the query than any of the small tenant's, and sorting is disabled so that the planner takes the
shared index whenever a query lets it (the test checks that it does)."""

from __future__ import annotations

import random
import uuid

import numpy as np
import psycopg
import pytest
import pytest_asyncio
from pydantic import SecretStr

from memory_core import MemoryClients
from memory_core.migrations import migrate_postgres
from memory_core.stores import episodic
from memory_core.stores.sql import LIVE, vector
from memory_core.worker import jobs

BIG_TENANTS = 20
BIG_TENANT_TURNS = 50
SMALL_TENANT_TURNS = 40
K = 10
USER = "user-1"


# One dataset for the module: building it is most of the time these tests take.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared_index(settings):
    """(clients on a fresh migrated schema, the query, {tenant: {turn id: vector}}): 1,000 turns of
    20 tenants close to the query, and 40 turns of `small` farther from it, at distinct distances."""
    schema = f"mc_fair_{uuid.uuid4().hex[:12]}"
    url = settings.postgres_url.get_secret_value()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    scoped = settings.model_copy(
        update={"postgres_url": SecretStr(f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema},public")}
    )
    clients = await MemoryClients.connect(scoped)
    try:
        await migrate_postgres(scoped.postgres_url.get_secret_value(), scoped)
        rng = np.random.default_rng(14)
        dim = settings.embedding_dim
        query = np.zeros(dim)
        query[0] = 1.0
        turns: dict[str, dict[str, np.ndarray]] = {}
        for b in range(BIG_TENANTS):
            near = query + 0.2 * rng.standard_normal((BIG_TENANT_TURNS, dim)) / np.sqrt(dim)
            turns[f"big-{b}"] = {str(uuid.uuid4()): v for v in near}
        # Cosine similarity to the query from 0.5 down, every one distinct; the big tenants' are about 0.98.
        far = rng.standard_normal((SMALL_TENANT_TURNS, dim))
        far[:, 0] = 0.0
        far /= np.linalg.norm(far, axis=1, keepdims=True)
        angles = np.linspace(np.arccos(0.5), np.arccos(0.05), SMALL_TENANT_TURNS)
        random.Random(14).shuffle(angles)
        turns["small"] = {str(uuid.uuid4()): np.cos(a) * query + np.sin(a) * f for a, f in zip(angles, far)}
        async with clients.maintenance_transaction() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO conversation_logs (tenant_id, user_id, conversation_id, turn_index, turn_id, role,"
                " content, content_hash, embedding) VALUES (%s, %s, 'c', %s, %s, 'user', 't', 'h', %s)",
                [
                    (tenant, USER, i, turn_id, vector(v.tolist()))
                    for tenant, by_id in turns.items()
                    for i, (turn_id, v) in enumerate(by_id.items())
                ],
            )
            await conn.execute("ANALYZE conversation_logs")
        yield clients, query.tolist(), turns
    finally:
        await clients.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def nearest(query: list[float], by_id: dict[str, np.ndarray], k: int) -> list[str]:
    q = np.asarray(query)
    similarity = {i: float(v @ q / np.linalg.norm(v)) for i, v in by_id.items()}
    return sorted(similarity, key=similarity.__getitem__, reverse=True)[:k]


async def nearest_turns_plan(conn, tenant: str, query: list[float]) -> str:
    """The plan of an index-ordered nearest-turns scan of `tenant` (sorting off, as the search
    sets it), with the tenant as a literal, as a partial index's predicate needs to match."""
    await conn.execute("SET LOCAL enable_sort = off")
    plan = await conn.execute(
        f"EXPLAIN SELECT turn_id FROM conversation_logs WHERE tenant_id = '{tenant}' AND user_id = %s AND {LIVE}"
        " ORDER BY embedding <=> %s LIMIT %s",
        (USER, vector(query), K),
    )
    return "\n".join(r[0] for r in await plan.fetchall())


async def search_small_tenant(clients, query: list[float]) -> tuple[list[str], list[str]]:
    """(`search_turns`' ids, the shared index's post-filtered ids) for the small tenant."""
    async with clients.tenant_transaction("small") as conn:
        assert "conversation_logs_embedding" in await nearest_turns_plan(conn, "small", query), (
            "the planner does not take the shared index here: the test would not exercise post-filtering"
        )
        cur = await conn.execute(
            f"SELECT turn_id::text FROM conversation_logs WHERE tenant_id = 'small' AND user_id = %s AND {LIVE}"
            " ORDER BY embedding <=> %s LIMIT %s",
            (USER, vector(query), K),
        )
        post_filtered = [r[0] for r in await cur.fetchall()]
        found = await episodic.search_turns(conn, tenant_id="small", user_id=USER, embedding=query, limit=K)
    return [t["id"] for t in found], post_filtered


async def test_a_small_tenant_in_a_shared_index_gets_its_k_nearest_turns(shared_index):
    clients, query, turns = shared_index
    found, post_filtered = await search_small_tenant(clients, query)
    assert found == nearest(query, turns["small"], K)
    # What the index alone gives this tenant: the scenario is the one that needs the fix.
    assert len(post_filtered) < K


async def test_a_tenant_above_the_exact_search_size_whose_turns_the_index_misses_gets_its_k_nearest(
    shared_index, monkeypatch
):
    clients, query, turns = shared_index
    # The small tenant counts as big here: its search goes through the index, which finds none
    # of its turns among its candidates, widens them, and then falls back to exact search.
    monkeypatch.setattr(episodic, "EXACT_SEARCH_BELOW", SMALL_TENANT_TURNS // 2)
    found, _ = await search_small_tenant(clients, query)
    assert found == nearest(query, turns["small"], K)


async def test_a_big_tenant_is_searched_through_the_index(shared_index):
    clients, query, turns = shared_index
    async with clients.tenant_transaction("big-0") as conn:
        found = await episodic.search_turns(conn, tenant_id="big-0", user_id=USER, embedding=query, limit=K)
    expected = nearest(query, turns["big-0"], K)
    assert len(found) == K
    assert len({t["id"] for t in found} & set(expected)) >= K - 1  # approximate, but close


async def test_a_large_tenant_gets_an_index_of_its_own_which_its_search_takes(shared_index, monkeypatch):
    clients, query, turns = shared_index
    monkeypatch.setattr(episodic, "TENANT_INDEX_MIN_TURNS", BIG_TENANT_TURNS)
    async with clients.pg_pool.connection() as conn:
        assert {t for t, _ in await episodic.tenants_without_index(conn)} == {f"big-{b}" for b in range(BIG_TENANTS)}
        assert sorted(await episodic.index_large_tenants(conn)) == sorted(f"big-{b}" for b in range(BIG_TENANTS))
        assert await episodic.tenants_without_index(conn) == []
    async with clients.tenant_transaction("big-3") as conn:
        assert episodic.tenant_index_name("big-3") in await nearest_turns_plan(conn, "big-3", query)
        found = await episodic.search_turns(conn, tenant_id="big-3", user_id=USER, embedding=query, limit=K)
    # Its own index holds only its 50 turns: every candidate is the tenant's.
    assert [t["id"] for t in found] == nearest(query, turns["big-3"], K)


async def test_the_worker_job_builds_a_missing_tenant_index_one_per_run(shared_index, monkeypatch):
    clients, _, _ = shared_index
    monkeypatch.setattr(episodic, "TENANT_INDEX_MIN_TURNS", BIG_TENANT_TURNS)
    async with clients.pg_pool.connection() as conn:
        await episodic.index_large_tenants(conn)  # every big tenant's, if an earlier test did not
        for tenant in ("big-1", "big-2"):
            await conn.execute(f'DROP INDEX "{episodic.tenant_index_name(tenant)}"')
    assert await jobs.index_large_tenants(clients, "big-2") == ["big-2"]
    assert await jobs.index_large_tenants(clients) == ["big-1"]
    assert await jobs.index_large_tenants(clients) == []
