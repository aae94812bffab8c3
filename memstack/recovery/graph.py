"""Rebuild the Neo4j projection from Postgres, the source of truth.

Every row that Postgres holds becomes the outbox event that would have projected it, applied
with memory_core's own statements (`memory_core.stores.graph`), batched. All events carry, as their
version, the outbox position read in the same snapshot, so that outbox rows still pending
from before it (already reflected in the rows) can change nothing and are dropped, and newer
ones win. One known gap: which conversations a strategy succeeded or failed in is not kept
in Postgres, so SUCCEEDED_IN / FAILED_IN edges do not come back.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from array import array
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from neo4j import AsyncGraphDatabase

from memory_core.stores import graph as projection
from memstack.local.neo4j_server import USER as NEO4J_USER
from memstack.recovery.stack import LocalStack

BATCH = 500


def _scope(space: str | None, user_id: str) -> str:
    return "s:" + space if space else "u:" + user_id


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def _vector(text: str) -> list[float]:
    # Postgres prints the shortest text of each float4; read back as float4, as the driver does.
    return array("f", json.loads(text)).tolist()


_QUERIES: list[tuple[str, str]] = [
    (
        "turn",
        'SELECT tenant_id, user_id, conversation_id, turn_id::text, turn_index, role, "timestamp",'
        " left(content, 1000) FROM conversation_logs ORDER BY id",
    ),
    (
        "entity",
        "SELECT tenant_id, user_id, item_id::text, space, importance_score, attributes, embedding::text"
        " FROM memory_timeline WHERE memory_type = 'entity' ORDER BY id",
    ),
    (
        "fact",
        "SELECT tenant_id, user_id, item_id::text, space, summary, importance_score, attributes, event_time"
        " FROM memory_timeline WHERE memory_type = 'fact' ORDER BY id",
    ),
    ("relation", "SELECT tenant_id, source_id::text, target_id::text, rel_type, weight FROM entity_relations"),
    (
        "goal",
        "SELECT tenant_id, user_id, item_id::text, summary, priority, attributes, event_time"
        " FROM memory_timeline WHERE memory_type = 'goal' ORDER BY id",
    ),
    # The average as jsonb, as the outbox row carries it (a whole number comes back an integer).
    (
        "tool",
        "SELECT s.tenant_id, s.tool_name, s.usage_count, s.success_count,"
        " to_jsonb(s.total_latency_ms::float8 / s.usage_count), c.conversation_id"
        " FROM tool_stats s LEFT JOIN LATERAL (SELECT DISTINCT i.conversation_id FROM tool_invocations i"
        "  WHERE i.tenant_id = s.tenant_id AND i.tool_name = s.tool_name) c ON true",
    ),
    (
        "strategy",
        "SELECT tenant_id, item_id::text, summary, attributes, embedding::text"
        " FROM memory_timeline WHERE memory_type = 'strategy' ORDER BY id",
    ),
    (
        "reflection",
        "SELECT tenant_id, item_id::text, summary, attributes, event_time"
        " FROM memory_timeline WHERE memory_type = 'reflection' ORDER BY id",
    ),
    (
        "archive",
        "SELECT tenant_id, array_agg(conversation_id ORDER BY conversation_id) FROM conversations"
        " WHERE archived GROUP BY tenant_id",
    ),
]


def _payload(event: str, r: tuple) -> tuple[str, dict[str, Any]]:
    """(tenant, payload) of the event that projects row `r`: the payload keys are the
    parameters of that event's statement."""
    if event == "turn":
        t, user, conv, turn_id, index, role, ts, content = r
        return t, {
            "user_id": user,
            "conversation_id": conv,
            "turn_id": turn_id,
            "index": index,
            "role": role,
            "timestamp": _iso(ts),
            "content": content,
        }
    if event == "entity":
        t, user, item, space, salience, a, emb = r
        return t, {
            "id": item,
            "name": a["name"],
            "type": a["type"],
            "aliases": a.get("aliases", []),
            "description": a.get("description"),
            "salience": salience,
            "properties": a.get("properties", {}),
            "scope": _scope(space, user),
            "embedding": _vector(emb),
        }
    if event == "fact":
        t, user, item, space, claim, confidence, a, created = r
        return t, {
            "id": item,
            "claim": claim,
            "confidence": confidence,
            "source": a["source"],
            "scope": _scope(space, user),
            "created_at": _iso(created),
            "source_turn_id": a.get("source_turn_id"),
            "entity_ids": a.get("entity_ids", []),
        }
    if event == "relation":
        t, source, target, rel_type, weight = r
        return t, {"source_id": source, "target_id": target, "rel_type": rel_type, "weight": weight}
    if event == "goal":
        t, user, item, description, priority, a, created = r
        return t, {
            "user_id": user,
            "id": item,
            "created_at": _iso(created),
            "description": description,
            "status": a["status"],
            "priority": priority,
            "parent_goal_id": a.get("parent_goal_id"),
            "blocked_by": a.get("blocked_by", []),
            "deadline": a.get("deadline"),
        }
    if event == "tool":
        t, name, usage, success, avg_latency, conv = r
        return t, {
            "name": name,
            "usage_count": usage,
            "success_count": success,
            "avg_latency_ms": avg_latency,
            "conversation_id": conv,
        }
    if event == "strategy":
        t, item, description, a, emb = r
        return t, {
            "id": item,
            "description": description,
            "context_pattern": a.get("context_pattern", ""),
            "tool_sequence": a.get("tool_sequence", []),
            "success_count": a.get("success_count", 0),
            "failure_count": a.get("failure_count", 0),
            "embedding": _vector(emb),
            "conversation_id": None,
            "success": True,
        }
    if event == "reflection":
        t, item, content, a, created = r
        return t, {
            "id": item,
            "created_at": _iso(created),
            "content": content,
            "type": a.get("type"),
            "conversation_id": a.get("conversation_id"),
        }
    t, conversation_ids = r
    return t, {"conversation_ids": conversation_ids}


def unwound(statement: str) -> str:
    """One of memory_core's per-event statements, run once per element of `$rows`: each
    `$param` becomes `row.param`, and every WITH carries `row` along. One round trip per
    batch instead of per row is what makes a rebuild of 100k turns take minutes, not an hour."""
    body = re.sub(r"\$(\w+)", r"row.\1", statement)
    body = re.sub(r"\bWITH (DISTINCT )?", lambda m: f"WITH {m.group(1) or ''}row, ", body)
    return f"UNWIND $rows AS row CALL {{ WITH row {body} }}"


# The statements memory_core projects each event with, keyed by event (relations by type).
_STATEMENTS = {event: unwound(q) for event, q in projection._QUERIES.items()}
_RELATIONS = {rel: unwound(q) for rel, q in projection._RELATE.items()}
_LABELS = {label: unwound(q) for label, q in projection._ENTITY_LABEL.items()}


def _params(event: str, tenant: str, payload: dict[str, Any], version: int) -> dict[str, Any]:
    """The statement's parameters for one row, prepared as memory_core's `_apply` does."""
    params = {**payload, "tenant_id": tenant, "version": version}
    if event == "turn":
        params["preview"] = params.pop("content")[: projection.TURN_PREVIEW_CHARS]
    elif event == "entity":
        params["properties_json"] = json.dumps(params.pop("properties"))
    return params


async def _apply(driver, event: str, rows: list[dict[str, Any]]) -> None:
    work: list[tuple[str, list[dict[str, Any]]]] = []
    if event == "relation":
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_type[row["rel_type"]].append(row)
        work = [(_RELATIONS[rel], batch) for rel, batch in by_type.items()]
    else:
        work = [(_STATEMENTS[event], rows)]
        if event == "entity":
            by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                if row["type"] in _LABELS:
                    by_label[row["type"]].append(row)
            work += [(_LABELS[label], batch) for label, batch in by_label.items()]

    async def write(tx) -> None:
        for statement, batch in work:
            await (await tx.run(statement, rows=batch)).consume()

    async with driver.session() as session:
        await session.execute_write(write)


async def _batches(conn: psycopg.AsyncConnection, version: int) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    for event, query in _QUERIES:
        async with conn.cursor(name=f"rebuild_{event}") as cur:
            await cur.execute(query)
            while batch := await cur.fetchmany(BATCH):
                yield event, [_params(event, *_payload(event, r), version) for r in batch]


async def rebuild(postgres_url: str, neo4j_uri: str, neo4j_user: str, neo4j_password: str) -> dict[str, Any]:
    """Project every Postgres row into the (empty or stale) graph; returns what was applied.
    Reads across tenants, as the worker's maintenance jobs do (row-level security allows it
    with `app.maintenance`), so it runs as the application role too: in a Kubernetes Job."""
    started = time.monotonic()
    applied: dict[str, int] = {}
    driver = AsyncGraphDatabase.driver(neo4j_uri, auth=(neo4j_user, neo4j_password), notifications_min_severity="OFF")
    try:
        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.maintenance', 'cross-tenant', true)")
                cur = await conn.execute("SELECT last_value FROM graph_outbox_id_seq")
                (version,) = await cur.fetchone()
                async for event, rows in _batches(conn, version):
                    await _apply(driver, event, rows)
                    applied[event] = applied.get(event, 0) + len(rows)
                # Pending rows up to the snapshot's position are in the rows just projected.
                cur = await conn.execute("DELETE FROM graph_outbox WHERE id <= %s", (version,))
                dropped = cur.rowcount
    finally:
        await driver.close()
    return {
        "events": applied,
        "outbox_position": version,
        "pending_rows_dropped": dropped,
        "seconds": round(time.monotonic() - started, 3),
    }


def rebuild_stack(stack: LocalStack) -> dict[str, Any]:
    """Rebuild the graph of a local stack (as the Postgres superuser)."""
    state = stack.state()
    return asyncio.run(
        rebuild(stack.admin_url(), state.services["neo4j"].url, NEO4J_USER, state.credentials.neo4j_password)
    )
