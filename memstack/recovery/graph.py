"""Rebuild the Neo4j projection from Postgres, the source of truth.

Every row that Postgres holds becomes the outbox event that would have projected it, applied
with memory_core's own statements (`memory_core.stores.graph`), batched. Turns, the bulk of
any graph, go set-wise instead (_TURN_* below): memory_core's per-turn statement looks up its
neighbours by position once per turn, which made the rebuild of 100k turns take minutes; here
users and conversations are merged once per batch and the FOLLOWED_BY chain is joined in
Postgres and merged by id, for the same nodes, relationships and properties (a test compares
the two graphs property by property). All events carry, as their
version, the outbox position read in the same snapshot, so that outbox rows still pending
from before it (already reflected in the rows) can change nothing and are dropped, and newer
ones win. One known gap: which conversations a strategy succeeded or failed in is not kept
in Postgres, so SUCCEEDED_IN / FAILED_IN edges do not come back.
"""

from __future__ import annotations

import asyncio
import json
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

BATCH = 5000


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


# The statements memory_core projects each event with, keyed by event (relations by type).
# One round trip per batch, not per row, is what makes a rebuild of 100k turns take minutes.
_STATEMENTS = projection._BATCHED
_RELATIONS = projection._BATCHED_RELATE
_LABELS = projection._BATCHED_LABEL


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


# Turns, set-wise: the conversations (and users) of a batch once each, in the order memory_core
# would first have met them (so a conversation's user_id and started_at are its first turn's),
# then the turns, then, once every turn exists, the FOLLOWED_BY chain.
_TURN_CONVERSATIONS = """
UNWIND $rows AS row
MERGE (u:User {tenant_id: row.tenant_id, id: row.user_id})
MERGE (c:Conversation {tenant_id: row.tenant_id, id: row.conversation_id})
  ON CREATE SET c.user_id = row.user_id, c.started_at = datetime(row.timestamp)
MERGE (u)-[:HAD_CONVERSATION]->(c)
"""
_TURN_NODES = """
UNWIND $rows AS row
MATCH (c:Conversation {tenant_id: row.tenant_id, id: row.conversation_id})
MERGE (t:Turn {id: row.turn_id})
WITH row, c, t WHERE coalesce(t.version, -1) <= row.version
SET t.version = row.version, t.tenant_id = row.tenant_id, t.conversation_id = row.conversation_id,
    t.index = row.index, t.role = row.role, t.timestamp = datetime(row.timestamp), t.content_preview = row.preview
MERGE (c)-[:HAS_TURN]->(t)
"""
_TURN_CHAIN = """
UNWIND $rows AS row
MATCH (a:Turn {id: row.a})
MATCH (b:Turn {id: row.b})
MERGE (a)-[:FOLLOWED_BY]->(b)
"""
# Consecutive turns of a conversation (by position, as memory_core links them).
_TURN_PAIRS = (
    "SELECT a.turn_id::text, b.turn_id::text FROM conversation_logs a JOIN conversation_logs b"
    " ON b.tenant_id = a.tenant_id AND b.conversation_id = a.conversation_id AND b.turn_index = a.turn_index + 1"
)


async def _apply_turns(driver, rows: list[dict[str, Any]]) -> None:
    conversations: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        conversations.setdefault((row["tenant_id"], row["user_id"], row["conversation_id"]), row)

    async def write(tx) -> None:
        await (await tx.run(_TURN_CONVERSATIONS, rows=list(conversations.values()))).consume()
        await (await tx.run(_TURN_NODES, rows=rows)).consume()

    async with driver.session() as session:
        await session.execute_write(write)


async def _apply_chain(driver, rows: list[dict[str, str]]) -> None:
    async def write(tx) -> None:
        await (await tx.run(_TURN_CHAIN, rows=rows)).consume()

    async with driver.session() as session:
        await session.execute_write(write)


async def _batches(conn: psycopg.AsyncConnection, version: int) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """(event, rows) in the order a projection applies them; turns' FOLLOWED_BY pairs as the
    pseudo-event `chain`, after every turn."""
    for event, query in _QUERIES:
        async with conn.cursor(name=f"rebuild_{event}") as cur:
            await cur.execute(query)
            while batch := await cur.fetchmany(BATCH):
                yield event, [_params(event, *_payload(event, r), version) for r in batch]
        if event == "turn":
            async with conn.cursor(name="rebuild_chain") as cur:
                await cur.execute(_TURN_PAIRS)
                while batch := await cur.fetchmany(BATCH):
                    yield "chain", [{"a": a, "b": b} for a, b in batch]


async def _prefetched(batches: AsyncIterator[tuple[str, list[dict[str, Any]]]], depth: int = 2):
    """`batches`, read ahead while the caller writes the previous ones to Neo4j: Postgres and
    Python's share of the work overlap with Neo4j's."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=depth)

    async def produce() -> None:
        try:
            async for item in batches:
                await queue.put(item)
        finally:
            await queue.put(None)

    task = asyncio.create_task(produce())
    try:
        while (item := await queue.get()) is not None:
            yield item
        await task
    finally:
        if not task.done():
            task.cancel()


async def rebuild(postgres_url: str, neo4j_uri: str, neo4j_user: str, neo4j_password: str) -> dict[str, Any]:
    """Project every Postgres row into the (empty or stale) graph; returns what was applied.
    Reads across tenants, as the worker's maintenance jobs do (row-level security allows it
    with `app.maintenance`), so it runs as the application role too: in a Kubernetes Job."""
    started = time.monotonic()
    applied: dict[str, int] = {}
    # Per event, the time spent writing to Neo4j (reading Postgres overlaps it).
    seconds: dict[str, float] = {}
    driver = AsyncGraphDatabase.driver(neo4j_uri, auth=(neo4j_user, neo4j_password), notifications_min_severity="OFF")
    try:
        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.maintenance', 'cross-tenant', true)")
                cur = await conn.execute("SELECT last_value FROM graph_outbox_id_seq")
                (version,) = await cur.fetchone()
                async for event, rows in _prefetched(_batches(conn, version)):
                    clock = time.monotonic()
                    if event == "turn":
                        await _apply_turns(driver, rows)
                    elif event == "chain":
                        await _apply_chain(driver, rows)
                    else:
                        await _apply(driver, event, rows)
                    applied[event] = applied.get(event, 0) + len(rows)
                    seconds[event] = seconds.get(event, 0.0) + time.monotonic() - clock
                # Pending rows this snapshot sees are in the rows just projected. Deleted after
                # the snapshot ends, by id: a worker or the service draining the outbox meanwhile
                # deletes some of them too, which a repeatable-read DELETE would fail on
                # ("could not serialize access due to concurrent delete"); and a row with a lower
                # id that committed after the snapshot is not in the graph, so it stays.
                cur = await conn.execute("SELECT id FROM graph_outbox WHERE id <= %s", (version,))
                projected = [row[0] for row in await cur.fetchall()]
            await conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.maintenance', 'cross-tenant', true)")
                cur = await conn.execute("DELETE FROM graph_outbox WHERE id = ANY(%s)", (projected,))
                dropped = cur.rowcount
    finally:
        await driver.close()
    chain = applied.pop("chain", 0)
    return {
        "events": applied,
        "followed_by": chain,
        "neo4j_seconds": {k: round(v, 3) for k, v in seconds.items()},
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
