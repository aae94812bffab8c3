"""Goals (rows in `memory_timeline`, hierarchy and blockers projected as SUBGOAL_OF / BLOCKED_BY)
and the user profile."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import psycopg

from ..errors import InvalidInput, NotFound
from ..models import GoalStatus
from .semantic import (
    ITEM_COLUMNS,
    VISIBLE,
    WRITABLE,
    Caller,
    insert_item,
    item_uuid,
    require_items,
)
from .sql import Conn, Pending, fetch_dicts


def goal_payload(row: dict[str, Any], user_id: str) -> dict[str, Any]:
    g = as_goal(row)
    return {
        "user_id": user_id,
        "id": g["id"],
        "created_at": g["created_at"].isoformat(),
        "description": g["description"],
        "status": g["status"],
        "priority": g["priority"],
        "parent_goal_id": g["parent_goal_id"],
        "blocked_by": g["blocked_by"],
        "deadline": g["deadline"],
    }


def as_goal(row: dict[str, Any]) -> dict[str, Any]:
    a = row["attributes"]
    return {
        "id": row["id"],
        "description": row["summary"],
        "status": a["status"],
        "priority": row["priority"],
        "parent_goal_id": a.get("parent_goal_id"),
        "blocked_by": a.get("blocked_by", []),
        "deadline": a.get("deadline"),
        "conversation_id": a.get("conversation_id"),
        "created_at": row["event_time"],
        "space": row["space"],
    }


async def add_goal(
    conn: Conn,
    caller: Caller,
    *,
    description: str,
    priority: int,
    parent_goal_id: str | None,
    blocked_by: list[str],
    deadline: datetime | None,
    conversation_id: str | None,
    embedding: list[float],
    ttl_seconds: float | None,
    space: str | None,
) -> dict[str, Any]:
    related = ([parent_goal_id] if parent_goal_id else []) + blocked_by
    await require_items(conn, caller, related, "goal")
    return await insert_item(
        conn,
        caller,
        memory_type="goal",
        summary=description,
        embedding=embedding,
        importance=0.5,
        priority=priority,
        ttl_seconds=ttl_seconds,
        space=space,
        attributes={
            "status": GoalStatus.ACTIVE.value,
            "parent_goal_id": parent_goal_id,
            "blocked_by": blocked_by,
            "deadline": deadline.isoformat() if deadline else None,
            "conversation_id": conversation_id,
        },
    )


# Whether `goal` is reachable from `starts` along one kind of edge between the tenant's goals:
# a goal whose parent is its own descendant, or which waits on a goal that waits on it, would
# never be reachable from a root or never become unblocked. UNION ends the walk on a cycle.
_REACHES = """
WITH RECURSIVE reach(id) AS (
    SELECT unnest(%(starts)s::text[])
    UNION
    SELECT edge.id FROM reach
    JOIN memory_timeline g ON g.tenant_id = %(tenant_id)s AND g.memory_type = 'goal' AND g.item_id::text = reach.id
    CROSS JOIN LATERAL {edges} AS edge(id)
)
SELECT EXISTS (SELECT 1 FROM reach WHERE id = %(goal)s)
"""
_PARENT_EDGES = "(SELECT g.attributes->>'parent_goal_id')"
_BLOCKER_EDGES = (
    "jsonb_array_elements_text(CASE jsonb_typeof(g.attributes->'blocked_by')"
    " WHEN 'array' THEN g.attributes->'blocked_by' ELSE '[]' END)"
)


async def _reaches(conn: Conn, caller: Caller, edges: str, starts: list[str], goal: str) -> bool:
    cur = await conn.execute(
        _REACHES.replace("{edges}", edges), {"tenant_id": caller.tenant_id, "starts": starts, "goal": goal}
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def update_goal(
    conn: Conn,
    caller: Caller,
    goal_id: str,
    *,
    status: GoalStatus | None,
    priority: int | None,
    parent_goal_id: str | None,
    blocked_by: list[str] | None,
) -> dict[str, Any]:
    goal_id = item_uuid(goal_id)
    parent_goal_id = item_uuid(parent_goal_id) if parent_goal_id else parent_goal_id
    blocked_by = [item_uuid(b) for b in blocked_by] if blocked_by is not None else None
    related = ([parent_goal_id] if parent_goal_id else []) + (blocked_by or [])
    if goal_id in related:
        raise InvalidInput("a goal cannot be its own parent or blocker")
    await require_items(conn, caller, related, "goal")
    if parent_goal_id and await _reaches(conn, caller, _PARENT_EDGES, [parent_goal_id], goal_id):
        raise InvalidInput(f"goal {parent_goal_id!r} descends from goal {goal_id!r}: it cannot be its parent")
    if blocked_by and await _reaches(conn, caller, _BLOCKER_EDGES, blocked_by, goal_id):
        raise InvalidInput(f"goal {goal_id!r} would wait on itself through blocked_by")
    changes: dict[str, Any] = {}
    if status is not None:
        changes["status"] = GoalStatus(status).value
    if parent_goal_id is not None:
        changes["parent_goal_id"] = parent_goal_id
    if blocked_by is not None:
        changes["blocked_by"] = blocked_by
    cur = await conn.execute(
        f"UPDATE memory_timeline SET updated_at = now(), attributes = attributes || %(changes)s::jsonb,"
        f" priority = coalesce(%(priority)s::int, priority)"
        f" WHERE {WRITABLE} AND memory_type = 'goal' AND item_id = %(id)s::uuid RETURNING {ITEM_COLUMNS}",
        {**caller.params, "changes": json.dumps(changes), "priority": priority, "id": goal_id},
    )
    rows = await fetch_dicts(cur)
    if not rows:
        raise NotFound(f"unknown goal id {goal_id!r}")
    return rows[0]


async def active_goals(conn: Conn, caller: Caller, limit: int = 50) -> list[dict[str, Any]]:
    pending = await start_active_goals(conn, caller, limit)
    return await pending()


async def start_active_goals(conn: Conn, caller: Caller, limit: int = 50) -> Pending:
    """active_goals, its statement sent (see semantic.start_search_items)."""
    cur = await conn.execute(
        f"SELECT {ITEM_COLUMNS} FROM memory_timeline WHERE {VISIBLE} AND memory_type = 'goal'"
        " AND attributes->>'status' = 'active' ORDER BY priority DESC, event_time LIMIT %(limit)s",
        {**caller.params, "limit": limit},
    )

    async def goals() -> list[dict[str, Any]]:
        return [as_goal(r) for r in await fetch_dicts(cur)]

    return goals


# --- user profile ---------------------------------------------------------------------------

PROFILE_FIELDS = ("preferences", "communication_style", "metadata")


async def update_profile(conn: Conn, caller: Caller, field: str, values: dict[str, Any]) -> None:
    if field not in PROFILE_FIELDS:
        raise ValueError(f"unknown profile field {field!r}")
    # `field` is one of the constant column names above, never caller text.
    await conn.execute(
        f"INSERT INTO user_profiles (tenant_id, user_id, {field}) VALUES (%(tenant_id)s, %(user_id)s, %(values)s)"
        f" ON CONFLICT (tenant_id, user_id) DO UPDATE SET {field} = user_profiles.{field} || EXCLUDED.{field},"
        " updated_at = now()",
        {**caller.params, "values": json.dumps(values, allow_nan=False)},
    )


async def set_expertise(conn: Conn, caller: Caller, areas: list[str]) -> None:
    await conn.execute(
        "INSERT INTO user_profiles (tenant_id, user_id, expertise_areas) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id, user_id) DO UPDATE SET expertise_areas = EXCLUDED.expertise_areas, updated_at = now()",
        (caller.tenant_id, caller.user_id, json.dumps(areas)),
    )


async def user_context(conn: Conn, caller: Caller) -> dict[str, Any]:
    pending = await start_user_context(conn, caller)
    return await pending()


async def start_user_context(conn: Conn, caller: Caller) -> Callable[[], Awaitable[dict[str, Any]]]:
    """user_context, its statement sent (see semantic.start_search_items)."""
    cur = await conn.execute(
        "SELECT preferences, expertise_areas, communication_style, metadata, created_at, updated_at"
        " FROM user_profiles WHERE tenant_id = %s AND user_id = %s",
        (caller.tenant_id, caller.user_id),
    )
    return lambda: _profile(caller, cur)


async def _profile(caller: Caller, cur: psycopg.AsyncCursor[Any]) -> dict[str, Any]:
    rows = await fetch_dicts(cur)
    if not rows:
        return {"user_id": caller.user_id, "preferences": {}, "expertise": [], "communication_style": {}}
    r = rows[0]
    return {
        "user_id": caller.user_id,
        "preferences": r["preferences"],
        "expertise": r["expertise_areas"],
        "communication_style": r["communication_style"],
        "metadata": r["metadata"],
    }
