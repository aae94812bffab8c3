"""Consolidation jobs. Each one is idempotent: running it twice, or on two replicas at once,
leaves the same state as running it once.

- reflections: a Redis Stream job per `AgentMemory.reflect`; the Reflection row's id is derived
  from the job id, so a redelivered job finds its row and does nothing.
- outbox replay: rows locked with SKIP LOCKED, applied with MERGE and absolute values.
- salience decay: only rows not decayed in the last day (`attributes.decayed_at`).
- archival: conversations idle past retention; archived rows stay archived.
- cleanup: expired rows (turns included) and orphan low-salience entities, deleted in Postgres
  with a `forget` outbox row in the same transaction, so the graph follows even if Neo4j is down
  right now.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from ..clients import MemoryClients
from ..stores import episodic, procedural
from ..stores.graph import GRAPH_UNAVAILABLE, OutboxRow, apply_rows, project_now, record
from ..stores.semantic import Caller
from ..stores.sql import vector as sql_vector
from ..validation import check_id

log = logging.getLogger(__name__)
_REFLECTION_NAMESPACE = uuid.UUID("6f1c7c1e-8a59-4c55-9a64-0d6b1f0b2b61")


async def process_reflection(clients: MemoryClients, fields: dict[str, str]) -> bool:
    """Apply one reflection job; returns False when it had already been applied."""
    caller = Caller(
        check_id(fields["tenant_id"], "tenant_id"),
        check_id(fields["user_id"], "user_id"),
        fields.get("agent_id") or None,
    )
    conversation_id = fields.get("conversation_id") or None
    outcome = json.loads(fields["outcome"])
    success = bool(outcome.get("success", True))
    task_type = str(outcome.get("task_type") or "general")
    summary = str(outcome.get("summary") or f"{task_type} task {'succeeded' if success else 'failed'}")
    tools = [str(t) for t in outcome.get("tools") or []]
    (vector,) = await clients.embedder.embed([summary])
    reflection_id = uuid.uuid5(_REFLECTION_NAMESPACE, fields["job_id"])

    async with clients.tenant_transaction(caller.tenant_id) as conn:
        cur = await conn.execute(
            "INSERT INTO memory_timeline (tenant_id, user_id, item_id, memory_type, summary, embedding, attributes)"
            " VALUES (%s, %s, %s, 'reflection', %s, %s, %s) ON CONFLICT (item_id) DO NOTHING RETURNING event_time",
            (
                caller.tenant_id,
                caller.user_id,
                reflection_id,
                summary,
                sql_vector(vector),
                json.dumps(
                    {
                        "type": "success_pattern" if success else "failure_analysis",
                        "outcome": outcome,
                        "conversation_id": conversation_id,
                    }
                ),
            ),
        )
        inserted = await cur.fetchone()
        if inserted is None:
            return False
        rows = [
            await record(
                conn,
                caller.tenant_id,
                "reflection",
                {
                    "id": str(reflection_id),
                    "created_at": inserted[0].isoformat(),
                    "content": summary,
                    "type": "success_pattern" if success else "failure_analysis",
                    "conversation_id": conversation_id,
                },
            )
        ]
        if outcome.get("strategy_id"):
            row, strategy_vector = await procedural.reinforce_strategy(
                conn, caller, str(outcome["strategy_id"]), success
            )
            rows.append(
                await record(
                    conn,
                    caller.tenant_id,
                    "strategy",
                    procedural.strategy_payload(row, strategy_vector, conversation_id, success),
                )
            )
        elif tools:
            description = f"Use {', '.join(tools)} for {task_type} tasks"
            (strategy_vector,) = await clients.embedder.embed([description])
            row = await procedural.learn_strategy(
                conn,
                caller,
                description=description,
                context_pattern=task_type,
                tool_sequence=tools,
                success=success,
                embedding=strategy_vector,
                space=None,
            )
            rows.append(
                await record(
                    conn,
                    caller.tenant_id,
                    "strategy",
                    procedural.strategy_payload(row, strategy_vector, conversation_id, success),
                )
            )
    await project_now(clients, rows, path="worker")
    return True


async def replay_outbox(
    clients: MemoryClients, max_rows: int | None = None, *, stop: asyncio.Event | None = None
) -> int:
    """Project pending outbox rows to Neo4j; returns how many were applied. Safe to run on
    several replicas (SKIP LOCKED) and again after a crash (MERGE, versions). Once `stop` is
    set, the batch under way finishes and no other starts (a backlog may take minutes)."""
    s = clients.settings
    applied = 0
    while max_rows is None or applied < max_rows:
        batch = s.outbox_batch if max_rows is None else min(s.outbox_batch, max_rows - applied)
        async with clients.maintenance_transaction() as conn:
            cur = await conn.execute(
                "SELECT id, tenant_id, event, payload, extract(epoch FROM created_at)::float8 FROM graph_outbox"
                " WHERE attempts < %s"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (s.outbox_max_attempts, batch),
            )
            rows = [OutboxRow(*r) for r in await cur.fetchall()]
            if not rows:
                break
            failed: dict[int, str] = {}
            try:
                await apply_rows(clients.neo4j, rows)
            except GRAPH_UNAVAILABLE:
                raise
            except Exception:
                # One bad row must not block the rest: apply singly and count the failures.
                for row in rows:
                    try:
                        await apply_rows(clients.neo4j, [row])
                    except GRAPH_UNAVAILABLE:
                        raise
                    except Exception as exc:
                        failed[row.id] = f"{type(exc).__name__}: {exc}"[:1000]
            done = [r.id for r in rows if r.id not in failed]
            await conn.execute("DELETE FROM graph_outbox WHERE id = ANY(%s)", (done,))
            for row_id, error in failed.items():
                await conn.execute(
                    "UPDATE graph_outbox SET attempts = attempts + 1, last_error = %s WHERE id = %s", (error, row_id)
                )
                log.error("outbox row %s failed to project: %s", row_id, error)
            applied += len(done)
            if len(rows) < batch or (stop is not None and stop.is_set()):
                break
    return applied


# Periodic jobs take an optional tenant_id to confine them (tests, per-tenant maintenance).
_ONLY_TENANT = "(%(only_tenant)s::text IS NULL OR tenant_id = %(only_tenant)s)"


async def decay_salience(clients: MemoryClients, tenant_id: str | None = None) -> int:
    rate = clients.settings.salience_decay_rate
    async with clients.maintenance_transaction() as conn:
        cur = await conn.execute(
            "UPDATE memory_timeline SET importance_score = importance_score * %(rate)s,"
            " attributes = attributes || jsonb_build_object('decayed_at', now())"
            f" WHERE {_ONLY_TENANT} AND memory_type = 'entity' AND NOT archived AND priority <= 0"
            " AND coalesce((attributes->>'decayed_at')::timestamptz, last_accessed, updated_at) < now() - interval '1 day'"
            " RETURNING tenant_id, item_id::text, importance_score",
            {"rate": rate, "only_tenant": tenant_id},
        )
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for tenant_id, item_id, salience in await cur.fetchall():
            by_tenant.setdefault(tenant_id, []).append({"id": item_id, "salience": salience})
        rows = [await record(conn, t, "salience", {"items": items}) for t, items in by_tenant.items()]
    await _project_maintenance(clients, rows)
    return sum(len(v) for v in by_tenant.values())


async def index_large_tenants(clients: MemoryClients, tenant_id: str | None = None) -> list[str]:
    """A tenant that has grown past episodic.TENANT_INDEX_MIN_TURNS turns gets its own HNSW index,
    so that its searches stop sharing candidates with every other tenant. One build per run: a
    build of a large tenant's index takes minutes, and the job's lease must outlast it."""
    async with clients.pg_pool.connection() as conn:
        return await episodic.index_large_tenants(conn, only=tenant_id, limit=1)


async def archive_old_conversations(clients: MemoryClients, tenant_id: str | None = None) -> int:
    days = clients.settings.episodic_retention_days
    async with clients.maintenance_transaction() as conn:
        cur = await conn.execute(
            f"UPDATE conversations SET archived = true WHERE {_ONLY_TENANT} AND NOT archived"
            " AND last_turn_at < now() - %(days)s * interval '1 day' RETURNING tenant_id, conversation_id",
            {"days": days, "only_tenant": tenant_id},
        )
        by_tenant: dict[str, list[str]] = {}
        for tenant_id, conversation_id in await cur.fetchall():
            by_tenant.setdefault(tenant_id, []).append(conversation_id)
        for tenant_id, ids in by_tenant.items():
            await conn.execute(
                "UPDATE conversation_logs SET archived = true WHERE tenant_id = %s AND conversation_id = ANY(%s)",
                (tenant_id, ids),
            )
        rows = [await record(conn, t, "archive", {"conversation_ids": ids}) for t, ids in by_tenant.items()]
    await _project_maintenance(clients, rows)
    return sum(len(v) for v in by_tenant.values())


async def cleanup(clients: MemoryClients, tenant_id: str | None = None) -> dict[str, int]:
    """Delete expired rows and orphan low-salience entities; returns counts taken before deleting."""
    s = clients.settings
    async with clients.maintenance_transaction() as conn:
        only = {"only_tenant": tenant_id}
        cur = await conn.execute(
            f"DELETE FROM conversation_logs WHERE {_ONLY_TENANT} AND expires_at < now() RETURNING tenant_id, turn_id::text",
            only,
        )
        expired_turns = await cur.fetchall()  # their Turn nodes hold a content preview: forget them too
        cur = await conn.execute(
            f"DELETE FROM memory_timeline WHERE {_ONLY_TENANT} AND expires_at < now() RETURNING tenant_id, item_id::text",
            only,
        )
        expired = await cur.fetchall()
        cur = await conn.execute(
            "DELETE FROM memory_timeline e WHERE (%(only_tenant)s::text IS NULL OR e.tenant_id = %(only_tenant)s)"
            " AND e.memory_type = 'entity' AND e.importance_score < %(salience)s AND e.priority <= 0"
            " AND coalesce(e.last_accessed, e.updated_at) < now() - %(idle_days)s * interval '1 day'"
            " AND NOT EXISTS (SELECT 1 FROM fact_entities f JOIN memory_timeline m"
            "   ON m.item_id = f.fact_id AND m.tenant_id = f.tenant_id"
            "   WHERE f.tenant_id = e.tenant_id AND f.entity_id = e.item_id)"
            " RETURNING e.tenant_id, e.item_id::text",
            {**only, "salience": s.orphan_entity_salience, "idle_days": s.orphan_entity_idle_days},
        )
        orphans = await cur.fetchall()
        if expired or orphans:
            # Links to or from a deleted item go with it (facts ABOUT entities, entity relations).
            gone = ([t for t, _ in expired + orphans], [i for _, i in expired + orphans])
            for table, a, b in (
                ("fact_entities", "fact_id", "entity_id"),
                ("entity_relations", "source_id", "target_id"),
            ):
                await conn.execute(
                    f"DELETE FROM {table} l USING unnest(%s::text[], %s::uuid[]) AS x(tenant_id, id)"
                    f" WHERE l.tenant_id = x.tenant_id AND (l.{a} = x.id OR l.{b} = x.id)",
                    gone,
                )
        by_tenant: dict[str, list[str]] = {}
        for tenant_id, item_id in expired_turns + expired + orphans:
            by_tenant.setdefault(tenant_id, []).append(item_id)
        rows = [await record(conn, t, "forget", {"ids": ids}) for t, ids in by_tenant.items()]
    await _project_maintenance(clients, rows)
    return {"expired_turns": len(expired_turns), "expired_items": len(expired), "orphan_entities": len(orphans)}


async def _project_maintenance(clients: MemoryClients, rows: list[OutboxRow]) -> None:
    # Rows of several tenants: project per tenant so each delete runs under that tenant.
    for row in rows:
        await project_now(clients, [row], path="worker")
