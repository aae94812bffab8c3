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

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from neo4j import AsyncDriver, AsyncManagedTransaction
from neo4j.exceptions import ServiceUnavailable, SessionExpired

try:
    from neo4j.exceptions import ConnectionPoolError
except ImportError:  # older 5.x drivers report an acquisition timeout as a ClientError
    ConnectionPoolError = ServiceUnavailable  # type: ignore[misc,assignment]

from .. import metrics
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
    # Unix time the row was written (the outbox's created_at): the projection lag counts from it.
    created_at: float = field(default_factory=time.time)


async def record(conn: Conn, tenant_id: str, event: str, payload: dict[str, Any]) -> OutboxRow:
    if event not in EVENTS:
        raise ValueError(f"unknown graph event {event!r}")
    cur = await conn.execute(
        "INSERT INTO graph_outbox (tenant_id, event, payload) VALUES (%s, %s, %s) RETURNING id",
        (tenant_id, event, json.dumps(payload)),
    )
    (outbox_id,) = await fetch_row(cur)
    return OutboxRow(outbox_id, tenant_id, event, payload)


async def apply_rows(driver: AsyncDriver, rows: list[OutboxRow], *, retry: bool = True, path: str = "worker") -> None:
    """Apply rows to Neo4j in one transaction of one statement, in id order. `retry=False` is for
    the service process: one attempt, no driver back-off, the outbox covers a failure; the
    statement then commits by itself (no BEGIN and COMMIT round trips). Observed as backend
    operation `project` of Neo4j, and each applied row's lag since its write under `path`
    (one of metrics.PROJECTION_PATHS)."""
    statement, params = batch_statement(rows)

    async def work(tx: AsyncManagedTransaction) -> None:
        await (await tx.run(statement, rows=params)).consume()

    started, outcome = time.perf_counter(), "error"
    try:
        async with driver.session() as session:
            if retry:
                await session.execute_write(work)
            else:
                await (await session.run(statement, rows=params)).consume()
        outcome = "ok"
    finally:
        metrics.backend_operation_duration.labels("neo4j", "project", outcome).observe(time.perf_counter() - started)
    now, lag = time.time(), metrics.graph_projection_lag.labels(path)
    for row in rows:
        lag.observe(max(0.0, now - row.created_at))


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


def _per_row(statement: str) -> str:
    """A per-event statement's text for one element `row` of `$rows`: each `$param` becomes
    `row.param`, and every WITH carries `row` along."""
    body = re.sub(r"\$(\w+)", r"row.\1", statement)
    return re.sub(r"\bWITH (DISTINCT )?", lambda m: f"WITH {m.group(1) or ''}row, ", body)


def unwound(statement: str) -> str:
    """A per-event statement run once per element of `$rows`, in list order. The subquery runs
    each row to the end before the next, so a batch means what its rows applied one by one
    mean, in one round trip instead of one per row."""
    return f"UNWIND $rows AS row CALL (row) {{ {_per_row(statement)} }}"


_BATCHED = {event: unwound(query) for event, query in _QUERIES.items()}
_BATCHED_RELATE = {rel: unwound(query) for rel, query in _RELATE.items()}
_BATCHED_LABEL = {label: unwound(query) for label, query in _ENTITY_LABEL.items()}

# What a row applies, as named parts, each one per-event statement: an event's own, a relation's
# by type, and an entity's label after the entity. The dict's order is the order of the parts
# within a row (an entity before its label).
_PARTS: dict[str, str] = {
    **_QUERIES,
    **{f"relation:{rel}": query for rel, query in _RELATE.items()},
    **{f"label:{label}": query for label, query in _ENTITY_LABEL.items()},
}


def _parts(row: OutboxRow) -> list[str]:
    if row.event == "relation":
        parts = [f"relation:{row.payload['rel_type']}"]
    elif row.event == "entity" and row.payload["type"] in _ENTITY_LABEL:
        parts = ["entity", f"label:{row.payload['type']}"]
    else:
        parts = [row.event]
    unknown = [part for part in parts if part not in _PARTS]
    if unknown:  # an event or relationship type of another version, or a bug
        raise ValueError(f"outbox row {row.id}: no graph statement for {unknown[0]!r}")
    return parts


@functools.cache
def _combined(parts: tuple[str, ...]) -> str:
    """One statement applying rows of several parts in list order: per row, the part statements
    it names in `row.parts`, each skipped for rows that name another. The per-row subquery holds
    the parts: at the top level, Cypher would finish each part for every row before the next."""
    if len(parts) == 1:
        return unwound(_PARTS[parts[0]])
    body = " ".join(f"CALL (row) {{ WITH row WHERE '{part}' IN row.parts {_per_row(_PARTS[part])} }}" for part in parts)
    return f"UNWIND $rows AS row CALL (row) {{ {body} }}"


def batch_statement(rows: list[OutboxRow]) -> tuple[str, list[dict[str, Any]]]:
    """The statement that applies `rows` in id order, and its `$rows`. Neo4j's cost per statement
    and per transaction is many times its cost per row, so a batch is one statement whatever its
    events; its text depends only on which parts occur (in a fixed order), so Neo4j plans each
    combination once and finds it in its query cache afterwards."""
    ordered = sorted(rows, key=lambda r: r.id)
    params, present = [], set()
    for row in ordered:
        parts = _parts(row)
        present.update(parts)
        params.append({**_params(row), "parts": parts})
    return _combined(tuple(part for part in _PARTS if part in present)), params


def _params(row: OutboxRow) -> dict[str, Any]:
    """An event's statement parameters: its payload (the keys are the statement's parameter
    names), plus `tenant_id` and `version` (the outbox id)."""
    params = {**row.payload, "tenant_id": row.tenant_id, "version": row.id}
    if row.event == "turn":
        params["preview"] = params.pop("content")[:TURN_PREVIEW_CHARS]
    elif row.event == "entity":
        params["properties_json"] = json.dumps(params.pop("properties"))
    return params


async def project_now(clients: MemoryClients, rows: list[OutboxRow], *, path: str = "inline") -> bool:
    """Best-effort projection of committed rows (of any tenants). On success the outbox rows are
    deleted; on failure they stay for the worker. Returns whether the graph is up to date."""
    if not rows or clients.graph_circuit.is_open:
        return not rows
    try:
        # A hung Neo4j answers nothing and fails nothing: the bound makes it a TimeoutError (an
        # OSError), which trips the circuit like an unreachable one.
        async with asyncio.timeout(clients.settings.neo4j_connect_timeout_s * 2):
            await apply_rows(clients.neo4j, rows, retry=False, path=path)
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
    tenants = {r.tenant_id for r in rows}
    # Rows of one tenant are deleted under that tenant's row-level security; a batch of several
    # tenants' rows (the background projector's) only by id, as the worker's replay does.
    transaction = (
        clients.tenant_transaction(rows[0].tenant_id) if len(tenants) == 1 else clients.maintenance_transaction()
    )
    async with transaction as conn:
        await conn.execute("DELETE FROM graph_outbox WHERE id = ANY(%s)", ([r.id for r in rows],))
    return True


class BackgroundProjector:
    """Projects committed outbox rows after their request has answered, in the service process.

    A write hands its rows over and returns; one task waits `linger_s` (default: the
    `graph_linger_s` setting) for more rows, then
    applies every row handed over meanwhile in one Neo4j transaction and one outbox delete, so
    the graph's cost per row falls as the batches grow, and no request waits on Neo4j. A Neo4j
    transaction costs several rows' worth of CPU, and a few dozen durable writes a second would
    otherwise each commit alone. Rows it cannot apply (Neo4j down, a rejected event, the
    process ending first) stay in the outbox for the worker's replay. A write and its
    projection are ordered by the outbox id, as with the worker. While Neo4j falls behind, at
    most `max_pending` rows wait here; the rest wait in the outbox only."""

    def __init__(
        self, clients: MemoryClients, max_batch: int = 200, max_pending: int = 10_000, linger_s: float | None = None
    ):
        self._clients = clients
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._linger_s = clients.settings.graph_linger_s if linger_s is None else linger_s
        self._rows: list[OutboxRow] = []
        self._task: asyncio.Task[None] | None = None
        # Set when waiting for more rows is pointless: a full batch, or a flush waiting.
        self._hurry = asyncio.Event()

    def submit(self, rows: list[OutboxRow]) -> None:
        if not rows or len(self._rows) + len(rows) > self._max_pending:
            return
        self._rows.extend(rows)
        if len(self._rows) >= self._max_batch:
            self._hurry.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._rows:
                if not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), self._linger_s)
                batch, self._rows = self._rows[: self._max_batch], self._rows[self._max_batch :]
                try:
                    await project_now(self._clients, batch, path="background")
                except Exception as exc:  # Postgres failed the delete: the worker's replay finishes it
                    log.warning("outbox rows %s projected, not deleted: %s", [r.id for r in batch], exc)
        finally:
            self._task = None
            self._hurry.clear()

    async def flush(self) -> None:
        """Wait until every row handed over so far has been projected (or left to the worker)."""
        while self._task is not None:
            self._hurry.set()
            await asyncio.shield(self._task)


# Where a durable write's rows reach Neo4j: `inline` in the request, after the Postgres commit;
# `background` by the process's BackgroundProjector once the request has answered; `worker`
# only by the worker's outbox replay (the process never projects).
Projection = Literal["inline", "background", "worker"]
_projection: weakref.WeakKeyDictionary[MemoryClients, Projection] = weakref.WeakKeyDictionary()
_projectors: weakref.WeakKeyDictionary[MemoryClients, BackgroundProjector] = weakref.WeakKeyDictionary()


def set_projection(clients: MemoryClients, projection: Projection) -> None:
    """Choose how writes through `clients` reach the graph (default: `inline`, or `background`
    where `clients.project_inline` is False)."""
    _projection[clients] = projection
    clients.project_inline = projection == "inline"


def projection_of(clients: MemoryClients) -> Projection:
    return _projection.get(clients) or ("inline" if clients.project_inline else "background")


def background_projector(clients: MemoryClients) -> BackgroundProjector:
    projector = _projectors.get(clients)
    if projector is None:
        projector = _projectors[clients] = BackgroundProjector(clients)
    return projector


async def project(clients: MemoryClients, rows: list[OutboxRow]) -> None:
    """Project a committed write's rows the way `clients` are set to (see `Projection`)."""
    projection = projection_of(clients)
    if projection == "inline":
        await project_now(clients, rows)
    elif projection == "background":
        background_projector(clients).submit(rows)
