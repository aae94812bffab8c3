"""Semantic memory rows (facts, entities) and the shared `memory_timeline` access that the
procedural and goal stores reuse: visibility, insertion, vector search, shared spaces.

Visibility of a row to a caller (tenant T, user U, agent A):
    tenant_id = T, live (not archived, not expired), and either private to U (`scope = 'u:' || U`)
    or in a shared space where A holds a read grant. Writing into a space needs a
    write grant; only a space's owner grants and revokes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import Conflict, Forbidden, InvalidInput, NotFound
from .graph import OutboxRow
from .sql import LIVE, Conn, Pending, fetch_dicts, fetch_row, vector


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    user_id: str
    agent_id: str | None

    @property
    def params(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "user_scope": "u:" + self.user_id,
        }


VISIBLE = f"""tenant_id = %(tenant_id)s AND {LIVE} AND (
    scope = %(user_scope)s OR space IN (
        SELECT g.space FROM space_grants g
        WHERE g.tenant_id = %(tenant_id)s AND g.agent_id = %(agent_id)s::text AND g.can_read))"""

# Rows the caller may modify: its own, or in a space where its agent holds a write grant.
WRITABLE = f"""tenant_id = %(tenant_id)s AND {LIVE} AND (
    scope = %(user_scope)s OR space IN (
        SELECT g.space FROM space_grants g
        WHERE g.tenant_id = %(tenant_id)s AND g.agent_id = %(agent_id)s::text AND g.can_write))"""

_CAN_WRITE = """(%(space)s::text IS NULL OR EXISTS (
    SELECT 1 FROM space_grants g WHERE g.tenant_id = %(tenant_id)s AND g.space = %(space)s
      AND g.agent_id = %(agent_id)s::text AND g.can_write))"""

ITEM_COLUMNS = """item_id::text AS id, memory_type, space, summary, importance_score, priority, attributes,
                  event_time, updated_at"""

_INSERT = f"""
INSERT INTO memory_timeline (tenant_id, user_id, item_id, memory_type, space, natural_key, summary, embedding,
                             importance_score, priority, expires_at, attributes)
SELECT %(tenant_id)s, %(user_id)s, %(item_id)s, %(memory_type)s, %(space)s, NULL, %(summary)s, %(embedding)s,
       %(importance)s, %(priority)s, now() + %(ttl_seconds)s::float8 * interval '1 second', %(attributes)s
WHERE {_CAN_WRITE}
RETURNING {ITEM_COLUMNS}
"""

# The item and the outbox row that projects it, in one statement (one round trip): the row's
# payload is the caller's plus the item's id and creation time.
_INSERT_WITH_OUTBOX = f"""
WITH item AS ({_INSERT}), outbox AS (
    INSERT INTO graph_outbox (tenant_id, event, payload)
    SELECT %(tenant_id)s, %(event)s,
           %(payload)s::jsonb || jsonb_build_object('id', item.id, 'created_at', item.event_time)
    FROM item
    RETURNING id, payload
)
SELECT item.*, outbox.id AS outbox_id, outbox.payload AS outbox_payload FROM item, outbox
"""

# Entities are unique per (scope, type, lower(name)); a second upsert merges aliases, keeps the
# old description and embedding unless a new description is given, and raises salience only.
_UPSERT_ENTITY = f"""
INSERT INTO memory_timeline AS m (tenant_id, user_id, item_id, memory_type, space, natural_key, summary, embedding,
                                  importance_score, priority, expires_at, attributes, last_accessed)
SELECT %(tenant_id)s, %(user_id)s, %(item_id)s, 'entity', %(space)s, %(natural_key)s, %(summary)s, %(embedding)s,
       %(importance)s, %(priority)s, now() + %(ttl_seconds)s::float8 * interval '1 second', %(attributes)s, now()
WHERE {_CAN_WRITE}
ON CONFLICT (tenant_id, scope, memory_type, natural_key) DO UPDATE SET
    summary = CASE WHEN %(description)s::text IS NULL THEN m.summary ELSE EXCLUDED.summary END,
    embedding = CASE WHEN %(description)s::text IS NULL THEN m.embedding ELSE EXCLUDED.embedding END,
    importance_score = greatest(m.importance_score, EXCLUDED.importance_score),
    priority = greatest(m.priority, EXCLUDED.priority),
    expires_at = EXCLUDED.expires_at,
    archived = false,
    updated_at = now(),
    last_accessed = now(),
    access_count = m.access_count + 1,
    attributes = m.attributes || jsonb_build_object(
        'name', EXCLUDED.attributes->'name',
        'description', CASE WHEN %(description)s::text IS NULL THEN m.attributes->'description'
                            ELSE EXCLUDED.attributes->'description' END,
        'properties', coalesce(m.attributes->'properties', '{{}}'::jsonb) || (EXCLUDED.attributes->'properties'),
        'aliases', (SELECT coalesce(jsonb_agg(DISTINCT a ORDER BY a), '[]'::jsonb)
                    FROM jsonb_array_elements_text((m.attributes->'aliases') || (EXCLUDED.attributes->'aliases')) a
                    WHERE a <> EXCLUDED.attributes->>'name'))
RETURNING {ITEM_COLUMNS}, embedding
"""


async def insert_item(
    conn: Conn,
    caller: Caller,
    *,
    memory_type: str,
    summary: str,
    embedding: list[float],
    importance: float,
    priority: int,
    ttl_seconds: float | None,
    attributes: dict[str, Any],
    space: str | None,
    outbox: tuple[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The new item's row. With `outbox` (event, payload), the same statement queues the outbox
    row that projects it, returned under the key `outbox` (see _INSERT_WITH_OUTBOX)."""
    params = {
        "memory_type": memory_type,
        "summary": summary,
        "embedding": vector(embedding),
        "importance": importance,
        "priority": priority,
        "ttl_seconds": ttl_seconds,
        "attributes": json.dumps(attributes),
    }
    if outbox is None:
        return await _write_item(conn, caller, space, _INSERT, params)
    event, payload = outbox
    row = await _write_item(
        conn, caller, space, _INSERT_WITH_OUTBOX, {**params, "event": event, "payload": json.dumps(payload)}
    )
    row["outbox"] = OutboxRow(row.pop("outbox_id"), caller.tenant_id, event, row.pop("outbox_payload"))
    return row


async def upsert_entity(
    conn: Conn,
    caller: Caller,
    *,
    name: str,
    type: str,
    aliases: list[str],
    description: str | None,
    salience: float,
    properties: dict[str, Any],
    embedding: list[float],
    priority: int,
    ttl_seconds: float | None,
    space: str | None,
) -> dict[str, Any]:
    attributes = {
        "name": name,
        "type": type,
        "aliases": sorted(set(aliases) - {name}),
        "description": description,
        "properties": properties,
    }
    return await _write_item(
        conn,
        caller,
        space,
        _UPSERT_ENTITY,
        {
            "natural_key": f"{type.lower()}:{name.lower()}",
            "summary": f"{name}: {description or type}",
            "embedding": vector(embedding),
            "importance": salience,
            "priority": priority,
            "ttl_seconds": ttl_seconds,
            "attributes": json.dumps(attributes),
            "description": description,
        },
    )


async def _write_item(
    conn: Conn, caller: Caller, space: str | None, query: str, params: dict[str, Any]
) -> dict[str, Any]:
    cur = await conn.execute(query, {**caller.params, "item_id": uuid.uuid4(), "space": space, **params})
    row = await cur.fetchone()
    if row is None:
        raise Forbidden(f"agent {caller.agent_id!r} has no write grant on space {space!r}")
    return dict(zip([d.name for d in cur.description or ()], row, strict=True))


@dataclass(frozen=True)
class ItemSearch:
    """The visible items of `memory_types` nearest to a vector: at most `limit`, created in the
    window [since, until)."""

    memory_types: tuple[str, ...]
    limit: int
    since: datetime | None = None
    until: datetime | None = None


async def start_search_items(
    conn: Conn,
    caller: Caller,
    *,
    memory_types: list[str],
    embedding: list[float],
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Pending:
    """The visible items of `memory_types` nearest to `embedding`, its statement sent: in
    pipeline mode it shares a round trip with the statements sent before the result is awaited."""
    (pending,) = await start_search_item_groups(
        conn, caller, embedding, [ItemSearch(tuple(memory_types), limit, since, until)]
    )
    return pending


async def start_search_item_groups(
    conn: Conn, caller: Caller, embedding: list[float], searches: list[ItemSearch]
) -> list[Pending]:
    """Each search's items (see ItemSearch), nearest first, from one statement: each search is a
    branch of a UNION ALL, planned as it would be alone. The searches' memory types must not
    overlap: the rows are told apart by their type."""
    types = [t for search in searches for t in search.memory_types]
    if len(types) != len(set(types)):
        raise ValueError(f"item searches overlap in their memory types: {types}")
    branches = [
        f"(SELECT {ITEM_COLUMNS}, 1 - (embedding <=> %(q)s) AS similarity FROM memory_timeline"
        f" WHERE {VISIBLE} AND memory_type = ANY(%(types_{i})s)"
        f" AND (%(since_{i})s::timestamptz IS NULL OR event_time >= %(since_{i})s)"
        f" AND (%(until_{i})s::timestamptz IS NULL OR event_time < %(until_{i})s)"
        f" ORDER BY embedding <=> %(q)s LIMIT %(limit_{i})s)"
        for i in range(len(searches))
    ]
    params: dict[str, Any] = {**caller.params, "q": vector(embedding)}
    for i, search in enumerate(searches):
        params |= {
            f"types_{i}": list(search.memory_types),
            f"limit_{i}": search.limit,
            f"since_{i}": search.since,
            f"until_{i}": search.until,
        }
    cur = await conn.execute(" UNION ALL ".join(branches), params)
    fetched: list[list[dict[str, Any]]] = []

    def reader(memory_types: tuple[str, ...]) -> Pending:
        async def rows() -> list[dict[str, Any]]:
            if not fetched:  # the statement's rows, read once for every search
                fetched.append(await fetch_dicts(cur))
            return [r for r in fetched[0] if r["memory_type"] in memory_types]

        return rows

    return [reader(search.memory_types) for search in searches]


async def get_items(conn: Conn, caller: Caller, ids: list[str], memory_type: str | None = None) -> list[dict[str, Any]]:
    if not ids:
        return []
    cur = await conn.execute(
        f"SELECT {ITEM_COLUMNS} FROM memory_timeline WHERE {VISIBLE} AND item_id = ANY(%(ids)s::uuid[])"
        " AND (%(memory_type)s::text IS NULL OR memory_type = %(memory_type)s)",
        {**caller.params, "ids": [item_uuid(i) for i in ids], "memory_type": memory_type},
    )
    return await fetch_dicts(cur)


async def require_items(conn: Conn, caller: Caller, ids: list[str], memory_type: str) -> list[dict[str, Any]]:
    """The visible items with these ids, or `NotFound` naming the ones that are not."""
    found = await get_items(conn, caller, ids, memory_type)
    missing = set(ids) - {r["id"] for r in found}
    if missing:
        raise NotFound(f"unknown {memory_type} id(s): {sorted(missing)}")
    return found


async def relate(conn: Conn, caller: Caller, source_id: str, target_id: str, rel_type: str, weight: float) -> None:
    await conn.execute(
        "INSERT INTO entity_relations (tenant_id, source_id, target_id, rel_type, weight) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, source_id, target_id, rel_type) DO UPDATE SET weight = EXCLUDED.weight",
        (caller.tenant_id, source_id, target_id, rel_type, weight),
    )


def _adjacent(node: str) -> str:
    """At most %(fanout)s entities related to `node` in either direction."""
    return f"""CROSS JOIN LATERAL (
        SELECT r.target_id AS id FROM entity_relations r WHERE r.tenant_id = %(tenant_id)s AND r.source_id = {node}
        UNION ALL
        SELECT r.source_id FROM entity_relations r WHERE r.tenant_id = %(tenant_id)s AND r.target_id = {node}
        LIMIT %(fanout)s) n"""


# Visible entities one and two hops from the seeds (bounded fan-out per node per hop); the second
# hop only walks on from visible first-hop entities.
_NEIGHBOURS = f"""
WITH hop1 AS (
    SELECT DISTINCT n.id FROM unnest(%(seeds)s::uuid[]) AS s(id) {_adjacent("s.id")}
), visible1 AS (
    SELECT {ITEM_COLUMNS}, 1 AS hops FROM memory_timeline
    WHERE {VISIBLE} AND memory_type = 'entity' AND item_id IN (SELECT id FROM hop1)
      AND NOT item_id = ANY(%(seeds)s::uuid[])
), hop2 AS (
    SELECT DISTINCT n.id FROM visible1 v {_adjacent("v.id::uuid")} WHERE %(depth)s >= 2
)
SELECT * FROM visible1
UNION ALL
SELECT {ITEM_COLUMNS}, 2 FROM memory_timeline
WHERE {VISIBLE} AND memory_type = 'entity' AND item_id IN (SELECT id FROM hop2)
  AND NOT item_id = ANY(%(seeds)s::uuid[]) AND item_id::text NOT IN (SELECT id FROM visible1)
"""

# The entities above and, in the same statement, the visible facts about the seeds or them.
_NEIGHBOURHOOD = f"""
WITH neighbours AS ({_NEIGHBOURS})
SELECT 'entity' AS found, * FROM neighbours
UNION ALL
(SELECT 'fact', {ITEM_COLUMNS}, NULL FROM memory_timeline
WHERE {VISIBLE} AND memory_type = 'fact' AND item_id IN (
    SELECT fact_id FROM fact_entities WHERE tenant_id = %(tenant_id)s
      AND entity_id = ANY(%(seeds)s::uuid[] || ARRAY(SELECT id::uuid FROM neighbours)))
ORDER BY importance_score DESC, event_time DESC LIMIT %(facts)s)
"""


async def link_fact(conn: Conn, caller: Caller, fact_id: str, entity_ids: list[str]) -> None:
    if entity_ids:
        await conn.execute(
            "INSERT INTO fact_entities (tenant_id, entity_id, fact_id)"
            " SELECT %s, unnest(%s::uuid[]), %s ON CONFLICT DO NOTHING",
            (caller.tenant_id, entity_ids, fact_id),
        )


async def neighbourhood(
    conn: Conn, caller: Caller, seed_ids: list[str], depth: int, fanout: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(visible entities within `depth` <= 2 hops of the seeds, each with `hops`;
    visible facts ABOUT the seeds or those entities)."""
    if not seed_ids or depth <= 0:
        return [], []
    cur = await conn.execute(
        _NEIGHBOURHOOD,
        {**caller.params, "seeds": seed_ids, "fanout": fanout, "depth": depth, "facts": fanout * 4},
    )
    entities: list[dict[str, Any]] = []
    facts: list[dict[str, Any]] = []
    for row in await fetch_dicts(cur):
        if row.pop("found") == "fact":
            del row["hops"]
            facts.append(row)
        else:
            entities.append(row)
    return entities, facts


def item_uuid(value: str) -> str:
    """`value` as a canonical uuid string. Anything else is `InvalidInput`, as an id in a request
    body is: a malformed id is the caller's mistake, unlike a well-formed id nothing has."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidInput(f"{str(value)[:80]!r} is not a memory item id (a UUID)") from None


def as_fact(row: dict[str, Any]) -> dict[str, Any]:
    a = row["attributes"]
    return {
        "id": row["id"],
        "claim": row["summary"],
        "confidence": row["importance_score"],
        "source": a["source"],
        "entity_ids": a.get("entity_ids", []),
        "source_turn_id": a.get("source_turn_id"),
        "space": row["space"],
        "created_at": row["event_time"],
    }


def as_entity(row: dict[str, Any]) -> dict[str, Any]:
    a = row["attributes"]
    return {
        "id": row["id"],
        "name": a["name"],
        "type": a["type"],
        "aliases": a.get("aliases", []),
        "description": a.get("description"),
        "salience": row["importance_score"],
        "properties": a.get("properties", {}),
        "space": row["space"],
    }


# --- shared spaces --------------------------------------------------------------------------


async def create_space(conn: Conn, caller: Caller, space: str) -> None:
    cur = await conn.execute(
        "INSERT INTO memory_spaces (tenant_id, space, owner_agent) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (caller.tenant_id, space, caller.agent_id),
    )
    if cur.rowcount == 0:
        cur = await conn.execute(
            "SELECT owner_agent FROM memory_spaces WHERE tenant_id = %s AND space = %s", (caller.tenant_id, space)
        )
        (owner,) = await fetch_row(cur)
        if owner != caller.agent_id:
            raise Conflict(f"space {space!r} already exists and is owned by another agent")
    await conn.execute(
        "INSERT INTO space_grants (tenant_id, space, agent_id, can_read, can_write) VALUES (%s, %s, %s, true, true)"
        " ON CONFLICT (tenant_id, space, agent_id) DO UPDATE SET can_read = true, can_write = true",
        (caller.tenant_id, space, caller.agent_id),
    )


async def set_grant(conn: Conn, caller: Caller, space: str, agent_id: str, read: bool, write: bool) -> None:
    owner_check = "EXISTS (SELECT 1 FROM memory_spaces WHERE tenant_id = %(tenant_id)s AND space = %(space)s AND owner_agent = %(agent_id)s::text)"
    params = {**caller.params, "space": space, "grantee": agent_id, "read": read, "write": write}
    if read or write:
        cur = await conn.execute(
            "INSERT INTO space_grants (tenant_id, space, agent_id, can_read, can_write)"
            f" SELECT %(tenant_id)s, %(space)s, %(grantee)s, %(read)s, %(write)s WHERE {owner_check}"
            " ON CONFLICT (tenant_id, space, agent_id) DO UPDATE SET can_read = EXCLUDED.can_read, can_write = EXCLUDED.can_write",
            params,
        )
    else:
        cur = await conn.execute(
            f"DELETE FROM space_grants WHERE tenant_id = %(tenant_id)s AND space = %(space)s AND agent_id = %(grantee)s AND {owner_check}",
            params,
        )
        if cur.rowcount:
            return
        cur = await conn.execute(f"SELECT 1 WHERE {owner_check}", params)
    if cur.rowcount == 0:
        raise Forbidden(f"only the owner of space {space!r} can change its grants")
