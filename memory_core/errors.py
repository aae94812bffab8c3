"""What memory_core raises when it refuses an operation or cannot reach a store.

Every refusal is one of these classes, so a caller (the HTTP service among them) can tell the
caller's mistakes from store outages, and both from bugs: anything else that escapes
memory_core is a bug. `InvalidInput` is also a `ValueError` and `Forbidden` a `PermissionError`,
so code written against the builtin exceptions keeps working.
"""

from __future__ import annotations

from types import TracebackType

import psycopg
import psycopg_pool
from neo4j.exceptions import AuthError as Neo4jAuthError
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


# The top-level package of each store's driver.
_DRIVER_STORES = {"redis": "redis", "psycopg": "postgres", "psycopg_pool": "postgres", "neo4j": "neo4j"}


def awaited_store(exc: BaseException) -> str | None:
    """The store an operation was waiting on when its deadline expired: the innermost frame of a
    store's driver where the cancellation (the timeout's cause) was thrown in. An operation that
    touches several stores (a durable write then its working-memory copy or graph projection)
    may hang in any of them, and the answer must name the one that hung."""
    cancelled = exc.__cause__ or exc.__context__
    tb = cancelled.__traceback__ if cancelled is not None else None
    found = None
    while tb is not None:
        package = str(tb.tb_frame.f_globals.get("__name__", "")).partition(".")[0]
        found = _DRIVER_STORES.get(package, found)
        tb = tb.tb_next
    return found


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
    # Security errors (a rejected password, the lock-out after several, a missing permission) are
    # ClientErrors, but they concern the service's own Neo4j user: the deployment's, not the caller's.
    if isinstance(exc, (ServiceUnavailable, SessionExpired, Neo4jAuthError)) or (
        isinstance(exc, Neo4jClientError) and (exc.code or "").startswith("Neo.ClientError.Security.")
    ):
        return StoreUnavailable("neo4j", _reason(exc))
    if isinstance(exc, Neo4jClientError):
        return InvalidInput(f"invalid value: {_reason(exc)}")
    if isinstance(exc, Neo4jError):
        return StoreUnavailable("neo4j", _reason(exc))
    if isinstance(exc, TimeoutError):
        return StoreUnavailable(awaited_store(exc) or store, f"{operation} timed out")
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


class store_errors:
    """Re-raise an exception of `store`'s driver from the block as the memory_core error it stands for.

    A class rather than a `@contextmanager` generator: it wraps every working-memory operation,
    and entering and leaving a generator-based one costs several times more."""

    __slots__ = ("_drivers", "_store")

    def __init__(self, store: str):
        self._store = store
        self._drivers = DRIVER_ERRORS[store]

    def __enter__(self) -> None:
        return None

    # Returns None, never swallowing the block's exception (which also tells type checkers so).
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None and isinstance(exc, self._drivers):
            mapped = from_store_exception(exc, self._store)
            if mapped is not None:
                raise mapped from exc
