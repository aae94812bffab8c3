"""Episodic memory: conversation turns in Postgres (the source of truth) with a graph outbox row
written by the same statement. Search is exact or HNSW cosine over `conversation_logs.embedding`,
always filtered by tenant and user."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from ..errors import Forbidden
from .graph import OutboxRow
from .sql import LIVE, Conn, fetch_dicts, vector

# One statement: allocate the turn index (or honour the caller's), upsert the turn idempotently
# on (tenant, conversation, turn_index), and queue its projection.
_STORE_TURN = """
WITH conv AS (
    INSERT INTO conversations AS c (tenant_id, conversation_id, user_id, next_turn_index)
    VALUES (%(tenant_id)s, %(conversation_id)s, %(user_id)s, coalesce(%(turn_index)s::int, 0) + 1)
    ON CONFLICT (tenant_id, conversation_id) DO UPDATE
        SET next_turn_index = greatest(c.next_turn_index, coalesce(%(turn_index)s::int, c.next_turn_index) + 1),
            last_turn_at = now(), archived = false  -- a new turn reopens it; the archival job can archive it again
        WHERE c.user_id = %(user_id)s
    RETURNING coalesce(%(turn_index)s::int, next_turn_index - 1) AS turn_index
), turn AS (
    INSERT INTO conversation_logs AS l
        (tenant_id, user_id, conversation_id, turn_index, turn_id, "timestamp", role, content, content_hash,
         token_count, metadata, embedding, expires_at)
    SELECT %(tenant_id)s, %(user_id)s, %(conversation_id)s, conv.turn_index, %(turn_id)s,
           coalesce(%(timestamp)s::timestamptz, now()), %(role)s, %(content)s, %(content_hash)s,
           %(token_count)s, %(metadata)s, %(embedding)s, now() + %(ttl_seconds)s::float8 * interval '1 second'
    FROM conv
    ON CONFLICT (tenant_id, conversation_id, turn_index) DO UPDATE
        SET role = EXCLUDED.role, content = EXCLUDED.content, content_hash = EXCLUDED.content_hash,
            token_count = EXCLUDED.token_count, metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding,
            expires_at = EXCLUDED.expires_at
        WHERE l.user_id = EXCLUDED.user_id
    RETURNING turn_id, turn_index, "timestamp"
), outbox AS (
    INSERT INTO graph_outbox (tenant_id, event, payload)
    SELECT %(tenant_id)s, 'turn', jsonb_build_object(
        'user_id', %(user_id)s::text, 'conversation_id', %(conversation_id)s::text, 'turn_id', turn.turn_id,
        'index', turn.turn_index, 'role', %(role)s::text, 'timestamp', turn."timestamp", 'content', %(content)s::text)
    FROM turn
    RETURNING id, payload
)
SELECT turn.turn_id, turn.turn_index, turn."timestamp", outbox.id, outbox.payload FROM turn, outbox
"""

_TURN_COLUMNS = """turn_id::text AS id, conversation_id, turn_index AS index, role, content, "timestamp",
                   token_count, metadata"""


async def store_turn(
    conn: Conn,
    *,
    tenant_id: str,
    user_id: str,
    conversation_id: str,
    role: str,
    content: str,
    embedding: list[float],
    turn_index: int | None,
    token_count: int | None,
    metadata: dict[str, Any],
    ttl_seconds: float | None,
    timestamp: datetime | None,
) -> tuple[dict[str, Any], OutboxRow]:
    cur = await conn.execute(
        _STORE_TURN,
        {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "conversation_id": conversation_id,
            "turn_index": turn_index,
            "turn_id": uuid.uuid4(),
            "timestamp": timestamp,
            "role": role,
            "content": content,
            "content_hash": hashlib.sha256(content.encode()).hexdigest(),
            "token_count": token_count,
            "metadata": json.dumps(metadata),
            "embedding": vector(embedding),
            "ttl_seconds": ttl_seconds,
        },
    )
    row = await cur.fetchone()
    if row is None:
        raise Forbidden(f"conversation {conversation_id!r} belongs to another user of this tenant")
    turn_id, index, ts, outbox_id, payload = row
    turn = {
        "id": str(turn_id),
        "conversation_id": conversation_id,
        "index": index,
        "role": role,
        "content": content,
        "timestamp": ts,
        "token_count": token_count,
        "metadata": metadata,
    }
    return turn, OutboxRow(outbox_id, tenant_id, "turn", payload)


def time_filter(since: datetime | None, until: datetime | None) -> tuple[str, dict[str, Any]]:
    return (
        ' AND (%(since)s::timestamptz IS NULL OR "timestamp" >= %(since)s) '
        'AND (%(until)s::timestamptz IS NULL OR "timestamp" < %(until)s)',
        {"since": since, "until": until},
    )


async def search_turns(
    conn: Conn,
    *,
    tenant_id: str,
    user_id: str,
    embedding: list[float],
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    where, params = time_filter(since, until)
    cur = await conn.execute(
        f"SELECT {_TURN_COLUMNS}, 1 - (embedding <=> %(q)s) AS similarity FROM conversation_logs"
        f" WHERE tenant_id = %(tenant_id)s AND user_id = %(user_id)s AND {LIVE}{where}"
        " ORDER BY embedding <=> %(q)s LIMIT %(limit)s",
        {"tenant_id": tenant_id, "user_id": user_id, "q": vector(embedding), "limit": limit, **params},
    )
    return await fetch_dicts(cur)


async def recent_turns(
    conn: Conn,
    *,
    tenant_id: str,
    user_id: str,
    limit: int,
    conversation_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    embedding: list[float] | None = None,
) -> list[dict[str, Any]]:
    """Newest first; with `embedding`, each row also carries its `similarity` to it."""
    where, params = time_filter(since, until)
    similarity = ", 1 - (embedding <=> %(q)s) AS similarity" if embedding is not None else ""
    cur = await conn.execute(
        f"SELECT {_TURN_COLUMNS}{similarity} FROM conversation_logs"
        f" WHERE tenant_id = %(tenant_id)s AND user_id = %(user_id)s AND {LIVE}{where}"
        " AND (%(conversation_id)s::text IS NULL OR conversation_id = %(conversation_id)s)"
        ' ORDER BY "timestamp" DESC LIMIT %(limit)s',
        {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "conversation_id": conversation_id,
            "limit": limit,
            "q": vector(embedding) if embedding is not None else None,
            **params,
        },
    )
    return await fetch_dicts(cur)


async def conversation_turns(conn: Conn, *, tenant_id: str, user_id: str, conversation_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {_TURN_COLUMNS} FROM conversation_logs WHERE tenant_id = %s AND user_id = %s"
        f" AND conversation_id = %s AND {LIVE} ORDER BY turn_index",
        (tenant_id, user_id, conversation_id),
    )
    return await fetch_dicts(cur)
