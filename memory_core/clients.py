"""Connections shared by every AgentMemory in a process.

Create one `MemoryClients` per process (a service holds it for all tenants) and pass it to
`AgentMemory(..., clients=clients)`; constructing an AgentMemory is then free of I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import redis.asyncio as aioredis
from neo4j import AsyncDriver, AsyncGraphDatabase
from pgvector.psycopg import register_vector_async
from psycopg_pool import AsyncConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from .embeddings import Embedder, make_embedder
from .errors import SchemaNotMigrated, store_errors
from .settings import Settings
from .stores.working import WorkingScripts

log = logging.getLogger(__name__)


def make_neo4j_driver(settings: Settings) -> AsyncDriver:
    return AsyncGraphDatabase.driver(
        settings.neo4j_uri,
        auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value()),
        connection_timeout=settings.neo4j_connect_timeout_s,
        connection_acquisition_timeout=settings.neo4j_connect_timeout_s * 2,
        max_transaction_retry_time=settings.neo4j_connect_timeout_s * 2,
        # Queries name every whitelisted relationship type, including ones not created yet,
        # which the server reports as a warning on every call.
        notifications_min_severity="OFF",
    )


async def _register_vector(conn: psycopg.AsyncConnection[Any]) -> None:
    """Teach the connection pgvector's type. Before migrations created it there is none: skip,
    so that the first query reports the missing schema (`SchemaNotMigrated`) instead of every
    checkout failing until the pool times out."""
    try:
        await register_vector_async(conn)
    except psycopg.ProgrammingError:
        log.warning("no vector type in the database yet: the schema is not migrated")


async def _check_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    await AsyncConnectionPool.check_connection(conn)
    if conn.adapters.types.get("vector") is None:  # opened before the schema was migrated
        await _register_vector(conn)


class GraphCircuit:
    """After a Neo4j failure, inline projection is skipped for `retry_after_s`; the outbox and
    the worker carry the writes meanwhile, so requests do not wait on a dead graph."""

    def __init__(self, retry_after_s: float):
        self.retry_after_s = retry_after_s
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self) -> None:
        self._open_until = time.monotonic() + self.retry_after_s

    def reset(self) -> None:
        self._open_until = 0.0


class MemoryClients:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        pg_pool: AsyncConnectionPool,
        neo4j: AsyncDriver,
        embedder: Embedder,
    ):
        self.settings = settings
        self.redis = redis
        self.pg_pool = pg_pool
        self.neo4j = neo4j
        self.embedder = embedder
        self.graph_circuit = GraphCircuit(settings.neo4j_retry_after_s)
        # False: durable writes leave their graph projection to the worker's outbox replay.
        self.project_inline = True
        self.working_scripts = WorkingScripts(redis)

    @classmethod
    async def connect(cls, settings: Settings | None = None, *, embedder: Embedder | None = None) -> MemoryClients:
        settings = settings or Settings()
        # Pooled connections outlive a Redis restart and fail once each on first use; without a
        # retry, every request that draws one answers 503 although Redis is back. (from_url
        # does not apply the client's default retry to the pool's connections.) At-least-once:
        # a command whose answer was lost to a dropped connection may run twice; working-memory
        # writes are idempotent except appending a turn or thought.
        redis = aioredis.Redis.from_url(
            settings.redis_url.get_secret_value(),
            decode_responses=False,
            retry=Retry(ExponentialWithJitterBackoff(base=0.005, cap=0.05), retries=2),
        )

        pool = AsyncConnectionPool(
            settings.postgres_url.get_secret_value(),
            min_size=settings.postgres_pool_min,
            max_size=settings.postgres_pool_max,
            kwargs={"autocommit": True},
            configure=_register_vector,
            # The same after a Postgres restart or failover: a stale connection is replaced at
            # checkout instead of failing its request. Measured cost: 85 us per checkout.
            check=_check_connection,
            open=False,
        )
        await pool.open(wait=settings.postgres_pool_min > 0, timeout=30)
        embedder = embedder or make_embedder(settings)
        if embedder.dim != settings.embedding_dim:
            raise ValueError(f"embedder produces {embedder.dim} dimensions; embedding_dim is {settings.embedding_dim}")
        return cls(settings, redis, pool, make_neo4j_driver(settings), embedder)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.pg_pool.close()
        await self.neo4j.close()
        aclose = getattr(self.embedder, "aclose", None)  # providers holding connections (HTTP) have one
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> MemoryClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def tenant_transaction(self, tenant_id: str) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction with `app.tenant_id` set, so the row-level security policies confine it
        to `tenant_id` even if a query forgot its filter.

        Plans are always custom: psycopg prepares a statement after a few executions, and the
        generic plan Postgres then settles on cannot see which memory types, tenant or user a
        vector search filters on; it picked HNSW scans that discard almost every row (measured
        8 ms instead of 0.1 ms for a strategy search).

        A Postgres failure leaves as the memory_core error it stands for: `StoreUnavailable`,
        or `SchemaNotMigrated` when the tables this code needs are not there."""
        with store_errors("postgres"):
            async with self.pg_pool.connection() as conn, conn.transaction():
                if conn.adapters.types.get("vector") is None:
                    raise SchemaNotMigrated("the database has no vector type")
                await conn.execute(
                    "SELECT set_config('app.tenant_id', %s, true), set_config('hnsw.ef_search', %s, true),"
                    " set_config('plan_cache_mode', 'force_custom_plan', true)",
                    (tenant_id, str(self.settings.hnsw_ef_search)),
                )
                yield conn

    @asynccontextmanager
    async def maintenance_transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A cross-tenant transaction, for the worker's jobs only."""
        async with self.pg_pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.maintenance', 'cross-tenant', true)")
                yield conn
