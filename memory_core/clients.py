"""Connections shared by every AgentMemory in a process.

Create one `MemoryClients` per process (a service holds it for all tenants) and pass it to
`AgentMemory(..., clients=clients)`; constructing an AgentMemory is then free of I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import hiredis
import psycopg
import redis.asyncio as aioredis
from neo4j import AsyncDriver, AsyncGraphDatabase
from pgvector.psycopg import register_vector_async
from psycopg_pool import AsyncConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .embeddings import Embedder, make_embedder
from .errors import SchemaNotMigrated, store_errors
from .settings import Settings
from .stores.working import WorkingScripts

log = logging.getLogger(__name__)


def _pack(args: tuple[Any, ...]) -> bytes:
    """A command in RESP, packed by hiredis (`RedisConnection.pack_command`)."""
    name = args[0]
    if isinstance(name, str):
        args = (*name.encode().split(), *args[1:])
    elif isinstance(name, bytes) and b" " in name:
        args = (*name.split(), *args[1:])
    try:
        packed: bytes = hiredis.pack_command(args)
    except TypeError as exc:
        raise DataError(str(exc)) from None
    return packed


@dataclass(frozen=True, slots=True)
class Transaction:
    """Commands packed as MULTI, the commands, EXEC (RESP) by `RedisClient.pack_transaction`:
    one that runs again and again is packed once."""

    packed: bytes
    count: int


class RedisConnection(aioredis.Connection):
    """redis-py's connection, except that a command the socket takes whole is not awaited under
    `asyncio.wait_for`, which on Python 3.11 makes a task and a timer per command (measured:
    36 -> 30 us of client CPU per HGET). Only a write the kernel could not take at
    once (its buffer full: a slow or hung server) is awaited as redis-py does, bounded by the
    socket timeout."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command in RESP, packed by hiredis in C as redis-py's synchronous client does (its
        asyncio client packs in Python: an encoder call and several type checks per argument).
        The same bytes; an argument of another type (None, a bool) is the same DataError."""
        return [_pack(args)]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        writer = self._writer
        if (
            writer is not None
            and type(command) is list
            and not self.health_check_interval
            and writer.transport.get_write_buffer_size() == 0
            and not writer.transport.is_closing()
        ):
            try:
                writer.writelines(command)
            except OSError as exc:
                await self.disconnect(nowait=True)
                raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
            if writer.transport.get_write_buffer_size() == 0:
                return
            command, check_health = [], False  # the rest is buffered: wait for it to drain
        await super().send_packed_command(command, check_health)


class RedisPool(aioredis.ConnectionPool):
    """redis-py's pool, checking a connection out and in without the lock and the observability
    bookkeeping around it (three OpenTelemetry counter updates, a pool name built twice and a
    release event per command, each a no-op here: redis-py's metrics are not configured and no
    credential provider listens to releases). Taking a connection from the free list and putting
    it back involve no await: one event loop needs no lock around them. A connection is still
    connected, and checked for unread data, as redis-py's own checkout does."""

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> aioredis.Connection:
        connection: aioredis.Connection = self.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            # What `ensure_connection` finds for a healthy pooled connection (connected, nothing
            # unread), checked without its connect() call through the retry helper.
            if not connection.is_connected or await connection.can_read():
                await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: aioredis.Connection) -> None:  # type: ignore[override]
        self._in_use_connections.remove(connection)
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        self._available_connections.append(connection)


# MULTI and EXEC in RESP, as every connection packs them.
_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"


class RedisClient(aioredis.Redis):
    """redis-py's client, running a command of a pooled connection as redis-py does (retries
    with the same policy, the connection closed before each retry) without the per-command
    OpenTelemetry recording and the HIMPORT check that this service never needs."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        pool = self.connection_pool
        if self.single_connection_client or not isinstance(pool, RedisPool):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        command_name = args[0]
        conn = await pool.get_connection()
        start = time.monotonic()

        async def send() -> Any:
            await conn.send_command(*args)
            return await self.parse_response(conn, command_name, **options)

        def failed(error: Exception, failures: int) -> Awaitable[None]:
            return self._close_connection(conn, error, failures, start, command_name)

        try:
            return await conn.retry.call_with_retry(send, failed, with_failure_count=True)
        finally:
            await pool.release(conn)

    @staticmethod
    def pack_transaction(*commands: tuple[Any, ...]) -> Transaction:
        """`commands` packed for `run_transaction`, which runs them as `multi_exec` does."""
        return Transaction(b"".join([_MULTI, *(_pack(command) for command in commands), _EXEC]), len(commands))

    async def multi_exec(self, *commands: tuple[Any, ...]) -> list[Any]:
        """The replies of `commands` run as one MULTI/EXEC transaction on a pooled connection,
        sent in one write and read in one batch, with `execute_command`'s retries. The replies
        are raw (no response callbacks). An error reply is raised, once every reply was read:
        a command's own (WRONGTYPE: the others ran, as in any transaction), or one while
        queueing (an unknown command: the server then aborted EXEC and ran none).

        Not redis-py's transaction pipeline, which costs the client several times one command."""
        return await self.run_transaction(self.pack_transaction(*commands))

    async def run_transaction(self, transaction: Transaction) -> list[Any]:
        """`multi_exec` of the commands `transaction` holds packed."""
        if self.single_connection_client:
            raise TypeError("a transaction runs on a pooled connection, not a single-connection client")
        pool = self.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        start = time.monotonic()
        # RESP is RESP: hiredis's bytes are redis-py's (a TLS connection packs in Python).
        packed = [transaction.packed]

        async def send() -> list[Any]:
            await conn.send_packed_command(packed)
            *queued, replies = await _read_replies(conn, transaction.count + 2)
            # +OK for MULTI and +QUEUED for each command, then EXEC's replies.
            for reply in (*queued, *(replies if isinstance(replies, list) else [replies])):
                if isinstance(reply, ResponseError):
                    raise reply
            return cast(list[Any], replies)

        def failed(error: Exception, failures: int) -> Awaitable[None]:
            return self._close_connection(conn, error, failures, start, "EXEC")

        try:
            replies: list[Any] = await conn.retry.call_with_retry(send, failed, with_failure_count=True)
            return replies
        finally:
            await pool.release(conn)


async def _read_replies(conn: aioredis.Connection, count: int) -> list[Any]:
    """The next `count` replies, read as redis-py's `read_response` reads one (within the socket
    timeout, the connection closed on any failure), under one timeout for the batch: a
    timeout costs a timer and a context, and a pipeline's replies arrive together."""
    host_error = conn._host_error()
    try:
        async with asyncio.timeout(conn.socket_timeout):
            return [await conn._parser.read_response() for _ in range(count)]  # type: ignore[attr-defined]
    except TimeoutError:
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError(f"Timeout reading from {host_error}") from None
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while reading from {host_error} : {exc.args}") from None
    except BaseException:
        await conn.disconnect(nowait=True)
        raise


def make_redis(settings: Settings) -> RedisClient:
    """The Redis client of a process: a pool of `RedisConnection`s with hiredis's parser
    (a rediss:// or unix:// URL gets redis-py's TLS or Unix socket connection instead)."""
    # Pooled connections outlive a Redis restart and fail once each on first use; without a
    # retry, every request that draws one answers 503 although Redis is back. (from_url does
    # not apply the client's default retry to the pool's connections.) At-least-once: a
    # command whose answer was lost to a dropped connection may run twice; working-memory
    # writes are idempotent except appending a turn or thought.
    pool = RedisPool.from_url(
        settings.redis_url.get_secret_value(),
        decode_responses=False,
        retry=Retry(ExponentialWithJitterBackoff(base=0.005, cap=0.05), retries=2),
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        connection_class=RedisConnection,
    )
    return cast(RedisClient, RedisClient.from_pool(pool))


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


def postgres_connect_kwargs(settings: Settings) -> dict[str, Any]:
    """libpq parameters that bound a network cut: unacknowledged data fails the connection after
    tcp_user_timeout and idle ones are probed by keepalives, instead of TCP retransmitting for
    many seconds while a request waits."""
    timeout_s = settings.postgres_connect_timeout_s
    return {
        "connect_timeout": timeout_s,
        "tcp_user_timeout": timeout_s * 1000,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 1,
        "keepalives_count": 3,
    }


async def _register_vector(conn: psycopg.AsyncConnection[Any]) -> None:
    """Teach the connection pgvector's type. Before migrations created it there is none: skip,
    so that the first query reports the missing schema (`SchemaNotMigrated`) instead of every
    checkout failing until the pool times out."""
    try:
        await register_vector_async(conn)
    except psycopg.ProgrammingError:
        log.warning("no vector type in the database yet: the schema is not migrated")


class _HungServerSafeConnection(psycopg.AsyncConnection[Any]):
    """A statement interrupted by its caller (a request's deadline, the check's bound below)
    asks the server to cancel it for at most `CANCEL_TIMEOUT_S`, then closes the connection.
    psycopg waits up to 5 s for that answer and 5 s more for the statement to end: a paused or
    hung server, whose kernel still acknowledges every packet, answers neither."""

    CANCEL_TIMEOUT_S = 0.5

    async def _try_cancel(self, *, timeout: float = 5.0) -> None:
        try:
            await self.cancel_safe(timeout=min(timeout, self.CANCEL_TIMEOUT_S))
        except Exception as exc:
            log.warning("postgres did not take the cancel request (%s): closing the connection", exc)
            self.pgconn.finish()


def _connection_check(timeout_s: float) -> Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]:
    """The check at checkout, bounded: a connection whose server does not answer an empty query
    within `timeout_s` is discarded (the pool then opens another, bounded by connect_timeout),
    so a hung server fails the checkout quickly instead of holding the request."""

    async def check(conn: psycopg.AsyncConnection[Any]) -> None:
        async with asyncio.timeout(timeout_s):
            await AsyncConnectionPool.check_connection(conn)
        if conn.adapters.types.get("vector") is None:  # opened before the schema was migrated
            await _register_vector(conn)

    return check


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
        redis: RedisClient,
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
        redis = make_redis(settings)

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.postgres_url.get_secret_value(),
            min_size=settings.postgres_pool_min,
            max_size=settings.postgres_pool_max,
            kwargs={"autocommit": True, **postgres_connect_kwargs(settings)},
            connection_class=_HungServerSafeConnection,
            configure=_register_vector,
            # The same after a Postgres restart or failover: a stale connection is replaced at
            # checkout instead of failing its request. Measured cost: 85 us per checkout.
            check=_connection_check(settings.postgres_connect_timeout_s / 2),
            # A checkout that finds no healthy connection in this time (a hung server: its
            # checks give up after half of it, new connections after all of it) fails: a 503.
            timeout=settings.postgres_connect_timeout_s,
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
    async def tenant_transaction(
        self, tenant_id: str, *, pipeline: bool = False
    ) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction with `app.tenant_id` set, so the row-level security policies confine it
        to `tenant_id` even if a query forgot its filter.

        Plans are always custom: psycopg prepares a statement after a few executions, and the
        generic plan Postgres then settles on cannot see which memory types, tenant or user a
        vector search filters on; it picked HNSW scans that discard almost every row (measured
        8 ms instead of 0.1 ms for a strategy search).

        A Postgres failure leaves as the memory_core error it stands for: `StoreUnavailable`,
        or `SchemaNotMigrated` when the tables this code needs are not there.

        With `pipeline`, the transaction runs in psycopg's pipeline mode from its BEGIN: the
        BEGIN, the settings above and the caller's first statements share one round trip."""
        with store_errors("postgres"):
            async with (
                self.pg_pool.connection() as conn,
                conn.pipeline() if pipeline else contextlib.nullcontext(),
                conn.transaction(),
            ):
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
