"""What memory_core raises when it refuses an operation or cannot reach a store.

Every refusal is one of these classes, so a caller (the HTTP service among them) can tell the
caller's mistakes from store outages, and both from bugs: anything else that escapes
memory_core is a bug. `InvalidInput` is also a `ValueError` and `Forbidden` a `PermissionError`,
so code written against the builtin exceptions keeps working.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg_pool
from neo4j.exceptions import ClientError as Neo4jClientError
from neo4j.exceptions import Neo4jError, ServiceUnavailable, SessionExpired
from redis.exceptions import RedisError

# Postgres SQLSTATEs meaning the schema is missing or older than the code: an undefined
# table, column, function or object (the vector type before the extension exists).
_UNMIGRATED_SQLSTATES = frozenset({"42P01", "42703", "42883", "42704"})


class MemoryCoreError(Exception):
    """Base class of every refusal memory_core raises on purpose."""


class InvalidInput(MemoryCoreError, ValueError):
    """The caller's input is not acceptable; the message names the field."""


class NotFound(MemoryCoreError, LookupError):
    """An id the caller named does not exist for this tenant and user."""


class Forbidden(MemoryCoreError, PermissionError):
    """The caller is known but may not do this (another user's conversation, a space without a grant)."""


class Conflict(MemoryCoreError):
    """The operation contradicts the current state (a full working context, a taken name)."""


class StoreUnavailable(MemoryCoreError):
    """A store is down, overloaded or too slow; retrying later may succeed."""

    def __init__(self, store: str, reason: str):
        super().__init__(f"{store} is unavailable: {reason}")
        self.store = store
        self.reason = reason


class SchemaNotMigrated(MemoryCoreError):
    """The database has no schema, or an older one than this code needs."""

    def __init__(self, reason: str):
        super().__init__(f"schema not migrated: run `memstack migrate` ({reason})")
        self.reason = reason


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def from_store_exception(exc: BaseException, store: str, operation: str = "operation") -> MemoryCoreError | None:
    """The memory_core error a driver exception stands for, or None when it is not a store's.
    `store` names the store of the operation, for failures that do not say which they are."""
    if isinstance(exc, MemoryCoreError):
        return exc
    if isinstance(exc, RedisError):
        return StoreUnavailable("redis", _reason(exc))
    if isinstance(exc, (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed)):
        return StoreUnavailable("postgres", _reason(exc))
    if isinstance(exc, psycopg.Error):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if sqlstate in _UNMIGRATED_SQLSTATES:
            return SchemaNotMigrated(_reason(exc))
        # Class 22 (data exception) and 54 (program limit exceeded): what the caller sent.
        if isinstance(exc, psycopg.DataError) or sqlstate.startswith("54"):
            return InvalidInput(f"invalid value: {_reason(exc)}")
        if isinstance(exc, psycopg.IntegrityError):
            return Conflict(f"conflict: {_reason(exc)}")
        # Class 42 (syntax error or access rule violation, row-level security included): a bug
        # in a query, not the store's state.
        if sqlstate.startswith("42"):
            return None
        return StoreUnavailable("postgres", _reason(exc))
    if isinstance(exc, (ServiceUnavailable, SessionExpired)):
        return StoreUnavailable("neo4j", _reason(exc))
    if isinstance(exc, Neo4jClientError):
        return InvalidInput(f"invalid value: {_reason(exc)}")
    if isinstance(exc, Neo4jError):
        return StoreUnavailable("neo4j", _reason(exc))
    if isinstance(exc, TimeoutError):
        return StoreUnavailable(store, f"{operation} timed out")
    # Not every OSError: a PermissionError or FileNotFoundError from our own code is a bug.
    if isinstance(exc, ConnectionError):
        return StoreUnavailable(store, _reason(exc))
    return None


# The exceptions each store's driver raises. Only these are translated inside `store_errors`,
# so a failure of another store in the same block keeps its own type.
DRIVER_ERRORS: dict[str, tuple[type[BaseException], ...]] = {
    "postgres": (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed),
    "redis": (RedisError,),
    "neo4j": (Neo4jError, ServiceUnavailable, SessionExpired),
}


@contextmanager
def store_errors(store: str) -> Iterator[None]:
    """Re-raise an exception of `store`'s driver from the block as the memory_core error it stands for."""
    try:
        yield
    except DRIVER_ERRORS[store] as exc:
        mapped = from_store_exception(exc, store)
        if mapped is None:
            raise
        raise mapped from exc
