"""The Neo4j projection of what Postgres holds, driven by the `graph_outbox` table.

Each write to Postgres inserts an outbox row (event name + JSON payload) in the same
transaction. `project` applies rows to Neo4j and deletes them; rows left behind (Neo4j down,
circuit open, crash) are replayed by the worker in id order. Every event is applied with MERGE
and absolute values, so applying a row twice, or after a newer row, changes nothing: a node
records the outbox id (`version`) of the state it holds and ignores older ones.

Every statement is a constant with parameters. Node labels and relationship types that vary
come from the whitelists in `memory_core.models`, looked up in dicts built at import time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from neo4j import AsyncDriver, AsyncManagedTransaction, AsyncTransaction
from neo4j.exceptions import ServiceUnavailable, SessionExpired

try:
    from neo4j.exceptions import ConnectionPoolError
except ImportError:  # older 5.x drivers report an acquisition timeout as a ClientError
    ConnectionPoolError = ServiceUnavailable  # type: ignore[misc,assignment]

from ..models import ENTITY_LABELS, ENTITY_RELATIONS
from .sql import Conn, fetch_row

if TYPE_CHECKING:
    from ..clients import MemoryClients

log = logging.getLogger(__name__)

# Neo4j being unreachable or saturated (no pooled connection within the acquisition timeout), as
# opposed to a bug in an event: only these leave rows for replay without counting against them.
GRAPH_UNAVAILABLE = (ServiceUnavailable, SessionExpired, ConnectionPoolError, OSError)
TURN_PREVIEW_CHARS = 1000


@dataclass(frozen=True)
class OutboxRow:
    id: int
    tenant_id: str
    event: str
    payload: dict[str, Any]


async def record(conn: Conn, tenant_id: str, event: str, payload: dict[str, Any]) -> OutboxRow:
    if event not in EVENTS:
        raise ValueError(f"unknown graph event {event!r}")
    cur = await conn.execute(
        "INSERT INTO graph_outbox (tenant_id, event, payload) VALUES (%s, %s, %s) RETURNING id",
        (tenant_id, event, json.dumps(payload)),
    )
    (outbox_id,) = await fetch_row(cur)
    return OutboxRow(outbox_id, tenant_id, event, payload)


async def apply_rows(driver: AsyncDriver, rows: list[OutboxRow], *, retry: bool = True) -> None:
    """Apply rows to Neo4j in one transaction, in id order. `retry=False` is for the request
    path: one attempt, no driver back-off, the outbox covers a failure."""

    async def work(tx: AsyncManagedTransaction | AsyncTransaction) -> None:
        for row in sorted(rows, key=lambda r: r.id):
            await _apply(tx, row)

    async with driver.session() as session:
        if retry:
            await session.execute_write(work)
            return
        tx = await session.begin_transaction()
        try:
            await work(tx)
            await tx.commit()
        finally:
            if not tx.closed():
                await tx.rollback()


# --- event handlers -------------------------------------------------------------------------

_TURN = """
MERGE (u:User {tenant_id: $tenant_id, id: $user_id})
MERGE (c:Conversation {tenant_id: $tenant_id, id: $conversation_id})
  ON CREATE SET c.user_id = $user_id, c.started_at = datetime($timestamp)
MERGE (u)-[:HAD_CONVERSATION]->(c)
MERGE (t:Turn {id: $turn_id})
WITH c, t WHERE coalesce(t.version, -1) <= $version
SET t.version = $version, t.tenant_id = $tenant_id, t.conversation_id = $conversation_id, t.index = $index,
    t.role = $role, t.timestamp = datetime($timestamp), t.content_preview = $preview
MERGE (c)-[:HAS_TURN]->(t)
WITH t
OPTIONAL MATCH (prev:Turn {tenant_id: $tenant_id, conversation_id: $conversation_id, index: $index - 1})
OPTIONAL MATCH (next:Turn {tenant_id: $tenant_id, conversation_id: $conversation_id, index: $index + 1})
FOREACH (p IN CASE WHEN prev IS NULL THEN [] ELSE [prev] END | MERGE (p)-[:FOLLOWED_BY]->(t))
FOREACH (n IN CASE WHEN next IS NULL THEN [] ELSE [next] END | MERGE (t)-[:FOLLOWED_BY]->(n))
"""


_ENTITY = """
MERGE (e:Entity {id: $id})
ON CREATE SET e.tenant_id = $tenant_id
WITH e WHERE e.tenant_id = $tenant_id AND coalesce(e.version, -1) <= $version
SET e.version = $version, e.name = $name, e.type = $type, e.aliases = $aliases,
    e.aliases_text = reduce(s = '', a IN $aliases | s + ' ' + a), e.description = $description,
    e.salience = $salience, e.scope = $scope, e.properties_json = $properties_json,
    e.embedding = $embedding, e.last_accessed = datetime()
"""
_ENTITY_LABEL = {label: f"MATCH (e:Entity {{id: $id, tenant_id: $tenant_id}}) SET e:{label}" for label in ENTITY_LABELS}


_FACT = """
MERGE (f:Fact {id: $id})
ON CREATE SET f.tenant_id = $tenant_id
WITH f WHERE f.tenant_id = $tenant_id
SET f.claim = $claim, f.confidence = $confidence, f.source = $source, f.scope = $scope,
    f.created_at = datetime($created_at)
FOREACH (turn_id IN CASE WHEN $source_turn_id IS NULL THEN [] ELSE [$source_turn_id] END |
  MERGE (t:Turn {id: turn_id}) ON CREATE SET t.tenant_id = $tenant_id
  MERGE (f)-[:DERIVED_FROM]->(t))
FOREACH (entity_id IN $entity_ids |
  MERGE (e:Entity {id: entity_id}) ON CREATE SET e.tenant_id = $tenant_id
  MERGE (f)-[:ABOUT]->(e))
"""


_RELATE = {
    rel: f"""
MERGE (s:Entity {{id: $source_id}}) ON CREATE SET s.tenant_id = $tenant_id
MERGE (t:Entity {{id: $target_id}}) ON CREATE SET t.tenant_id = $tenant_id
WITH s, t WHERE s.tenant_id = $tenant_id AND t.tenant_id = $tenant_id
MERGE (s)-[r:{rel}]->(t)
WITH r WHERE coalesce(r.version, -1) <= $version
SET r.version = $version, r.tenant_id = $tenant_id, r.weight = $weight
"""
    for rel in ENTITY_RELATIONS
}


_GOAL = """
MERGE (u:User {tenant_id: $tenant_id, id: $user_id})
MERGE (g:Goal {id: $id})
ON CREATE SET g.tenant_id = $tenant_id, g.created_at = datetime($created_at)
WITH u, g WHERE g.tenant_id = $tenant_id AND coalesce(g.version, -1) <= $version
SET g.version = $version, g.description = $description, g.status = $status, g.priority = $priority,
    g.deadline = CASE WHEN $deadline IS NULL THEN null ELSE datetime($deadline) END
MERGE (u)-[:HAS_GOAL]->(g)
WITH g
OPTIONAL MATCH (g)-[old:SUBGOAL_OF|BLOCKED_BY]->()
DELETE old
WITH DISTINCT g
FOREACH (parent_id IN CASE WHEN $parent_goal_id IS NULL THEN [] ELSE [$parent_goal_id] END |
  MERGE (parent:Goal {id: parent_id}) ON CREATE SET parent.tenant_id = $tenant_id
  MERGE (g)-[:SUBGOAL_OF]->(parent))
FOREACH (blocker_id IN $blocked_by |
  MERGE (b:Goal {id: blocker_id}) ON CREATE SET b.tenant_id = $tenant_id
  MERGE (g)-[:BLOCKED_BY]->(b))
"""


_TOOL = """
MERGE (t:Tool {tenant_id: $tenant_id, name: $name})
WITH t WHERE coalesce(t.version, -1) <= $version
SET t.version = $version, t.usage_count = $usage_count, t.success_count = $success_count,
    t.success_rate = CASE WHEN $usage_count = 0 THEN 0.0 ELSE toFloat($success_count) / $usage_count END,
    t.avg_latency_ms = $avg_latency_ms
WITH t
FOREACH (conversation_id IN CASE WHEN $conversation_id IS NULL THEN [] ELSE [$conversation_id] END |
  MERGE (c:Conversation {tenant_id: $tenant_id, id: conversation_id})
  MERGE (c)-[:USED_TOOL]->(t))
"""


_STRATEGY = """
MERGE (s:Strategy {id: $id})
ON CREATE SET s.tenant_id = $tenant_id
WITH s WHERE s.tenant_id = $tenant_id AND coalesce(s.version, -1) <= $version
SET s.version = $version, s.description = $description, s.context_pattern = $context_pattern,
    s.tool_sequence = $tool_sequence, s.success_count = $success_count, s.failure_count = $failure_count,
    s.embedding = $embedding, s.last_used = datetime()
FOREACH (tool_name IN $tool_sequence |
  MERGE (t:Tool {tenant_id: $tenant_id, name: tool_name})
  MERGE (s)-[:USES_TOOL]->(t))
FOREACH (conversation_id IN CASE WHEN $conversation_id IS NULL OR NOT $success THEN [] ELSE [$conversation_id] END |
  MERGE (c:Conversation {tenant_id: $tenant_id, id: conversation_id})
  MERGE (s)-[:SUCCEEDED_IN]->(c))
FOREACH (conversation_id IN CASE WHEN $conversation_id IS NULL OR $success THEN [] ELSE [$conversation_id] END |
  MERGE (c:Conversation {tenant_id: $tenant_id, id: conversation_id})
  MERGE (s)-[:FAILED_IN]->(c))
"""


_REFLECTION = """
MERGE (r:Reflection {id: $id})
ON CREATE SET r.tenant_id = $tenant_id, r.created_at = datetime($created_at)
WITH r WHERE r.tenant_id = $tenant_id
SET r.type = $type, r.content = $content
FOREACH (conversation_id IN CASE WHEN $conversation_id IS NULL THEN [] ELSE [$conversation_id] END |
  MERGE (c:Conversation {tenant_id: $tenant_id, id: conversation_id})
  MERGE (c)-[:HAS_REFLECTION]->(r))
"""


_FORGET = """
MATCH (n) WHERE n.id IN $ids AND n.tenant_id = $tenant_id
  AND (n:Entity OR n:Fact OR n:Goal OR n:Strategy OR n:Reflection OR n:Turn)
DETACH DELETE n
"""


_SALIENCE = """
UNWIND $items AS item
MATCH (e:Entity {id: item.id}) WHERE e.tenant_id = $tenant_id
SET e.salience = item.salience
"""


_ARCHIVE = """
MATCH (c:Conversation) WHERE c.tenant_id = $tenant_id AND c.id IN $conversation_ids
SET c.archived = true
"""


_QUERIES: dict[str, str] = {
    "turn": _TURN,
    "entity": _ENTITY,
    "fact": _FACT,
    "goal": _GOAL,
    "tool": _TOOL,
    "strategy": _STRATEGY,
    "reflection": _REFLECTION,
    "forget": _FORGET,
    "salience": _SALIENCE,
    "archive": _ARCHIVE,
}
EVENTS = frozenset(_QUERIES) | {"relation"}


async def _apply(tx: AsyncManagedTransaction | AsyncTransaction, row: OutboxRow) -> None:
    """Run an event's statement with its payload as parameters, plus `tenant_id` and `version`
    (the outbox id). The payload keys are the statement's parameter names."""
    params = dict(row.payload)
    if row.event == "turn":
        params["preview"] = params.pop("content")[:TURN_PREVIEW_CHARS]
    elif row.event == "entity":
        params["properties_json"] = json.dumps(params.pop("properties"))
    query = _RELATE[params["rel_type"]] if row.event == "relation" else _QUERIES[row.event]
    await tx.run(query, tenant_id=row.tenant_id, version=row.id, **params)
    if row.event == "entity" and params["type"] in _ENTITY_LABEL:
        await tx.run(_ENTITY_LABEL[params["type"]], id=params["id"], tenant_id=row.tenant_id)


async def project_now(clients: MemoryClients, rows: list[OutboxRow]) -> bool:
    """Best-effort inline projection after the Postgres commit. On success the outbox rows are
    deleted; on failure they stay for the worker. Returns whether the graph is up to date."""
    if not rows or clients.graph_circuit.is_open:
        return not rows
    try:
        await apply_rows(clients.neo4j, rows, retry=False)
    except GRAPH_UNAVAILABLE as exc:
        clients.graph_circuit.trip()
        log.warning("graph projection deferred to the outbox: %s", exc)
        return False
    except Exception as exc:
        # The graph is up but rejected these rows: leave them for the worker, which retries
        # them singly and records the error, rather than pausing projection for everyone.
        # Nothing may propagate from here: the caller's write is committed already, and an
        # error would make it retry a write that succeeded.
        log.error("graph projection of outbox rows %s failed: %s", [r.id for r in rows], exc)
        return False
    clients.graph_circuit.reset()
    async with clients.tenant_transaction(rows[0].tenant_id) as conn:
        await conn.execute("DELETE FROM graph_outbox WHERE id = ANY(%s)", ([r.id for r in rows],))
    return True
