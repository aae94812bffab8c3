"""Helpers shared by the Postgres-backed stores."""
from __future__ import annotations

from typing import Any

from pgvector import Vector

# Rows a read may return: not archived and not past their TTL. An expired item is never
# returned, whether or not the worker has purged it yet, so a TTL is exact to the read.
LIVE = "NOT archived AND (expires_at IS NULL OR expires_at > now())"


def vector(values: list[float]) -> Vector:
    return Vector(values)


async def fetch_dicts(cur) -> list[dict[str, Any]]:
    rows = await cur.fetchall()  # first: in pipeline mode the description arrives with the rows
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in rows]
