"""Goals (rows in `memory_timeline`, hierarchy and blockers projected as SUBGOAL_OF / BLOCKED_BY)
and the user profile."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

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
from .sql import Conn, fetch_dicts


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
    related = ([parent_goal_id] if parent_goal_id else []) + (blocked_by or [])
    if goal_id in related:
        raise InvalidInput("a goal cannot be its own parent or blocker")
    await require_items(conn, caller, related, "goal")
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
    cur = await conn.execute(
        f"SELECT {ITEM_COLUMNS} FROM memory_timeline WHERE {VISIBLE} AND memory_type = 'goal'"
        " AND attributes->>'status' = 'active' ORDER BY priority DESC, event_time LIMIT %(limit)s",
        {**caller.params, "limit": limit},
    )
    return [as_goal(r) for r in await fetch_dicts(cur)]


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
    cur = await conn.execute(
        "SELECT preferences, expertise_areas, communication_style, metadata, created_at, updated_at"
        " FROM user_profiles WHERE tenant_id = %s AND user_id = %s",
        (caller.tenant_id, caller.user_id),
    )
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
