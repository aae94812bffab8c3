"""Helpers shared by the Postgres-backed stores."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import psycopg
from pgvector import Vector

# A pooled connection, as every store function receives it (inside a tenant transaction).
Conn: TypeAlias = psycopg.AsyncConnection[Any]

# A read whose first statement is sent; awaiting it gives the rows. In pipeline mode, reads
# started one after another share the round trip the first await makes.
Pending: TypeAlias = Callable[[], Awaitable[list[dict[str, Any]]]]

# Rows a read may return: not archived and not past their TTL. An expired item is never
# returned, whether or not the worker has purged it yet, so a TTL is exact to the read.
LIVE = "NOT archived AND (expires_at IS NULL OR expires_at > now())"


def vector(values: list[float]) -> Vector:
    return Vector(values)


async def fetch_row(cur: psycopg.AsyncCursor[Any]) -> tuple[Any, ...]:
    """The one row a statement always returns (an INSERT ... RETURNING, an aggregate)."""
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError("a statement that always returns a row returned none")
    return tuple(row)


async def fetch_dicts(cur: psycopg.AsyncCursor[Any]) -> list[dict[str, Any]]:
    rows = await cur.fetchall()  # first: in pipeline mode the description arrives with the rows
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row)) for row in rows]
