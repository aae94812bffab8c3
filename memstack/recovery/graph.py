"""Rebuild the Neo4j projection from Postgres, the source of truth.

Every row that Postgres holds becomes the outbox event that would have projected it, applied
with memory_core's own statements (`memory_core.stores.graph`). All events carry, as their
version, the outbox position read in the same snapshot, so that outbox rows still pending
from before it (already reflected in the rows) can change nothing and are dropped, and newer
ones win. One known gap: which conversations a strategy succeeded or failed in is not kept
in Postgres, so SUCCEEDED_IN / FAILED_IN edges do not come back.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from neo4j import AsyncGraphDatabase

from memory_core.stores.graph import OutboxRow, apply_rows
from memstack.local.neo4j_server import USER as NEO4J_USER
from memstack.recovery.stack import LocalStack

BATCH = 500


def _scope(space: str | None, user_id: str) -> str:
    return "s:" + space if space else "u:" + user_id


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def _vector(text: str) -> list[float]:
    return json.loads(text)


_QUERIES: list[tuple[str, str]] = [
    ("turn", 'SELECT tenant_id, user_id, conversation_id, turn_id::text, turn_index, role, "timestamp",'
             " left(content, 1000) FROM conversation_logs ORDER BY id"),
    ("entity", "SELECT tenant_id, user_id, item_id::text, space, importance_score, attributes, embedding::text"
               " FROM memory_timeline WHERE memory_type = 'entity' ORDER BY id"),
    ("fact", "SELECT tenant_id, user_id, item_id::text, space, summary, importance_score, attributes, event_time"
             " FROM memory_timeline WHERE memory_type = 'fact' ORDER BY id"),
    ("relation", "SELECT tenant_id, source_id::text, target_id::text, rel_type, weight FROM entity_relations"),
    ("goal", "SELECT tenant_id, user_id, item_id::text, summary, priority, attributes, event_time"
             " FROM memory_timeline WHERE memory_type = 'goal' ORDER BY id"),
    ("tool", "SELECT s.tenant_id, s.tool_name, s.usage_count, s.success_count,"
             " s.total_latency_ms::float8 / greatest(s.usage_count, 1), c.conversation_id"
             " FROM tool_stats s LEFT JOIN LATERAL (SELECT DISTINCT i.conversation_id FROM tool_invocations i"
             "  WHERE i.tenant_id = s.tenant_id AND i.tool_name = s.tool_name) c ON true"),
    ("strategy", "SELECT tenant_id, item_id::text, summary, attributes, embedding::text"
                 " FROM memory_timeline WHERE memory_type = 'strategy' ORDER BY id"),
    ("reflection", "SELECT tenant_id, item_id::text, summary, attributes, event_time"
                   " FROM memory_timeline WHERE memory_type = 'reflection' ORDER BY id"),
    ("archive", "SELECT tenant_id, array_agg(conversation_id ORDER BY conversation_id) FROM conversations"
                " WHERE archived GROUP BY tenant_id"),
]


def _payload(event: str, r: tuple) -> tuple[str, dict[str, Any]]:
    """(tenant, payload) of the event that projects row `r`: the payload keys are the
    parameters of that event's statement."""
    if event == "turn":
        t, user, conv, turn_id, index, role, ts, content = r
        return t, {"user_id": user, "conversation_id": conv, "turn_id": turn_id, "index": index, "role": role,
                   "timestamp": _iso(ts), "content": content}
    if event == "entity":
        t, user, item, space, salience, a, emb = r
        return t, {"id": item, "name": a["name"], "type": a["type"], "aliases": a.get("aliases", []),
                   "description": a.get("description"), "salience": salience, "properties": a.get("properties", {}),
                   "scope": _scope(space, user), "embedding": _vector(emb)}
    if event == "fact":
        t, user, item, space, claim, confidence, a, created = r
        return t, {"id": item, "claim": claim, "confidence": confidence, "source": a["source"],
                   "scope": _scope(space, user), "created_at": _iso(created),
                   "source_turn_id": a.get("source_turn_id"), "entity_ids": a.get("entity_ids", [])}
    if event == "relation":
        t, source, target, rel_type, weight = r
        return t, {"source_id": source, "target_id": target, "rel_type": rel_type, "weight": weight}
    if event == "goal":
        t, user, item, description, priority, a, created = r
        return t, {"user_id": user, "id": item, "created_at": _iso(created), "description": description,
                   "status": a["status"], "priority": priority, "parent_goal_id": a.get("parent_goal_id"),
                   "blocked_by": a.get("blocked_by", []), "deadline": a.get("deadline")}
    if event == "tool":
        t, name, usage, success, avg_latency, conv = r
        return t, {"name": name, "usage_count": usage, "success_count": success, "avg_latency_ms": avg_latency,
                   "conversation_id": conv}
    if event == "strategy":
        t, item, description, a, emb = r
        return t, {"id": item, "description": description, "context_pattern": a.get("context_pattern", ""),
                   "tool_sequence": a.get("tool_sequence", []), "success_count": a.get("success_count", 0),
                   "failure_count": a.get("failure_count", 0), "embedding": _vector(emb),
                   "conversation_id": None, "success": True}
    if event == "reflection":
        t, item, content, a, created = r
        return t, {"id": item, "created_at": _iso(created), "content": content, "type": a.get("type"),
                   "conversation_id": a.get("conversation_id")}
    t, conversation_ids = r
    return t, {"conversation_ids": conversation_ids}


async def _rows(conn: psycopg.AsyncConnection, version: int) -> AsyncIterator[list[OutboxRow]]:
    for event, query in _QUERIES:
        async with conn.cursor(name=f"rebuild_{event}") as cur:
            await cur.execute(query)
            while batch := await cur.fetchmany(BATCH):
                rows = []
                for r in batch:
                    tenant, payload = _payload(event, r)
                    rows.append(OutboxRow(version, tenant, event, payload))
                yield rows


async def rebuild(stack: LocalStack) -> dict[str, Any]:
    """Project every Postgres row into the (empty or stale) graph; returns what was applied."""
    state = stack.state()
    started = time.monotonic()
    applied: dict[str, int] = {}
    driver = AsyncGraphDatabase.driver(state.services["neo4j"].url, auth=(NEO4J_USER, state.credentials.neo4j_password),
                                       notifications_min_severity="OFF")
    try:
        async with await psycopg.AsyncConnection.connect(stack.admin_url()) as conn:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            async with conn.transaction():
                cur = await conn.execute("SELECT last_value FROM graph_outbox_id_seq")
                (version,) = await cur.fetchone()
                async for rows in _rows(conn, version):
                    await apply_rows(driver, rows)
                    applied[rows[0].event] = applied.get(rows[0].event, 0) + len(rows)
                # Pending rows up to the snapshot's position are in the rows just projected.
                cur = await conn.execute("DELETE FROM graph_outbox WHERE id <= %s", (version,))
                dropped = cur.rowcount
    finally:
        await driver.close()
    return {"events": applied, "outbox_position": version, "pending_rows_dropped": dropped,
            "seconds": round(time.monotonic() - started, 3)}


def rebuild_sync(stack: LocalStack) -> dict[str, Any]:
    return asyncio.run(rebuild(stack))
