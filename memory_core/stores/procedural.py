"""Procedural memory: the tool-invocation audit trail, per-tool aggregates, and strategies
(found by vector similarity x smoothed success rate)."""

from __future__ import annotations

from typing import Any

from ..errors import NotFound
from ..validation import check_json
from .graph import OutboxRow
from .semantic import (
    ITEM_COLUMNS,
    WRITABLE,
    Caller,
    ItemSearch,
    insert_item,
    item_uuid,
    start_search_item_groups,
)
from .sql import Conn, Pending, fetch_dicts, fetch_row

_RECORD_TOOL = """
WITH invocation AS (
    INSERT INTO tool_invocations (tenant_id, user_id, conversation_id, turn_index, tool_name, tool_input,
                                  tool_output, success, latency_ms, error_message)
    VALUES (%(tenant_id)s, %(user_id)s, %(conversation_id)s, %(turn_index)s, %(tool_name)s, %(tool_input)s,
            %(tool_output)s, %(success)s, %(latency_ms)s, %(error_message)s)
    RETURNING id
), stats AS (
    INSERT INTO tool_stats AS s (tenant_id, tool_name, usage_count, success_count, total_latency_ms)
    VALUES (%(tenant_id)s, %(tool_name)s, 1, %(success)s::boolean::int, %(latency_ms)s)
    ON CONFLICT (tenant_id, tool_name) DO UPDATE SET
        usage_count = s.usage_count + 1,
        success_count = s.success_count + EXCLUDED.success_count,
        total_latency_ms = s.total_latency_ms + EXCLUDED.total_latency_ms
    RETURNING usage_count, success_count, total_latency_ms
)
INSERT INTO graph_outbox (tenant_id, event, payload)
SELECT %(tenant_id)s, 'tool', jsonb_build_object(
    'name', %(tool_name)s::text, 'usage_count', usage_count, 'success_count', success_count,
    'avg_latency_ms', total_latency_ms::float8 / usage_count, 'conversation_id', %(conversation_id)s::text)
FROM stats, invocation
RETURNING id, payload
"""


async def record_tool_usage(
    conn: Conn,
    caller: Caller,
    *,
    conversation_id: str | None,
    turn_index: int | None,
    tool_name: str,
    tool_input: Any,
    tool_output: Any,
    success: bool,
    latency_ms: int,
    error_message: str | None,
) -> OutboxRow:
    cur = await conn.execute(
        _RECORD_TOOL,
        {
            **caller.params,
            "conversation_id": conversation_id,
            "turn_index": turn_index,
            "tool_name": tool_name,
            "tool_input": check_json(tool_input, "tool_input"),
            "tool_output": None if tool_output is None else check_json(tool_output, "tool_output"),
            "success": bool(success),
            "latency_ms": latency_ms,
            "error_message": error_message,
        },
    )
    outbox_id, payload = await fetch_row(cur)
    return OutboxRow(outbox_id, caller.tenant_id, "tool", payload)


async def tool_stats(conn: Conn, caller: Caller) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT tool_name AS name, usage_count, success_count,"
        " total_latency_ms::float8 / greatest(usage_count, 1) AS avg_latency_ms"
        " FROM tool_stats WHERE tenant_id = %s ORDER BY usage_count DESC, tool_name",
        (caller.tenant_id,),
    )
    return await fetch_dicts(cur)


def strategy_payload(
    row: dict[str, Any], embedding: list[float], conversation_id: str | None, success: bool
) -> dict[str, Any]:
    a = row["attributes"]
    return {
        "id": row["id"],
        "description": row["summary"],
        "context_pattern": a["context_pattern"],
        "tool_sequence": a["tool_sequence"],
        "success_count": a["success_count"],
        "failure_count": a["failure_count"],
        "embedding": embedding,
        "conversation_id": conversation_id,
        "success": success,
    }


async def learn_strategy(
    conn: Conn,
    caller: Caller,
    *,
    description: str,
    context_pattern: str,
    tool_sequence: list[str],
    success: bool,
    embedding: list[float],
    space: str | None,
) -> dict[str, Any]:
    return await insert_item(
        conn,
        caller,
        memory_type="strategy",
        summary=description,
        embedding=embedding,
        importance=0.5,
        priority=0,
        ttl_seconds=None,
        space=space,
        attributes={
            "context_pattern": context_pattern,
            "tool_sequence": tool_sequence,
            "success_count": int(success),
            "failure_count": int(not success),
        },
    )


async def check_strategy(conn: Conn, caller: Caller, strategy_id: str) -> None:
    """NotFound unless `caller` can reinforce the strategy: what a queued reflection will do."""
    cur = await conn.execute(
        f"SELECT 1 FROM memory_timeline WHERE {WRITABLE} AND memory_type = 'strategy' AND item_id = %(id)s::uuid",
        {**caller.params, "id": item_uuid(strategy_id)},
    )
    if await cur.fetchone() is None:
        raise NotFound(f"unknown strategy id {strategy_id!r}")


async def reinforce_strategy(
    conn: Conn, caller: Caller, strategy_id: str, success: bool
) -> tuple[dict[str, Any], list[float]]:
    counter = "success_count" if success else "failure_count"
    cur = await conn.execute(
        f"UPDATE memory_timeline SET updated_at = now(), last_accessed = now(),"
        f" attributes = jsonb_set(attributes, %(path)s, to_jsonb((attributes->>%(counter)s)::int + 1))"
        f" WHERE {WRITABLE} AND memory_type = 'strategy' AND item_id = %(id)s::uuid"
        f" RETURNING {ITEM_COLUMNS}, embedding",
        {**caller.params, "path": [counter], "counter": counter, "id": item_uuid(strategy_id)},
    )
    rows = await fetch_dicts(cur)
    if not rows:
        raise NotFound(f"unknown strategy id {strategy_id!r}")
    row = rows[0]
    return row, row.pop("embedding").to_list()


async def find_strategies(conn: Conn, caller: Caller, embedding: list[float], top_k: int) -> list[dict[str, Any]]:
    pending = await start_find_strategies(conn, caller, embedding, top_k)
    return await pending()


def strategy_search(top_k: int) -> ItemSearch:
    """The candidates find_strategies ranks: four times the strategies it returns, since the
    ranking weighs similarity by the success rate."""
    return ItemSearch(("strategy",), top_k * 4)


async def start_find_strategies(conn: Conn, caller: Caller, embedding: list[float], top_k: int) -> Pending:
    """find_strategies, its statement sent (see semantic.start_search_items)."""
    (pending,) = await start_search_item_groups(conn, caller, embedding, [strategy_search(top_k)])
    return ranked_strategies(pending, top_k)


def ranked_strategies(candidates: Pending, top_k: int) -> Pending:
    """The `top_k` best of the candidates (strategy_search) by similarity x success rate."""
    return lambda: _ranked_strategies(candidates, top_k)


async def _ranked_strategies(pending: Pending, top_k: int) -> list[dict[str, Any]]:
    found = []
    for row in await pending():
        s = as_strategy(row)
        if s["success_count"] == 0:
            continue
        # Laplace-smoothed success rate, so one lucky success does not outrank a proven record.
        smoothed = (s["success_count"] + 1) / (s["success_count"] + s["failure_count"] + 2)
        s["score"] = row["similarity"] * smoothed
        found.append(s)
    found.sort(key=lambda s: s["score"], reverse=True)
    return found[:top_k]


def as_strategy(row: dict[str, Any]) -> dict[str, Any]:
    a = row["attributes"]
    total = a["success_count"] + a["failure_count"]
    return {
        "id": row["id"],
        "description": row["summary"],
        "context_pattern": a["context_pattern"],
        "tool_sequence": a["tool_sequence"],
        "success_count": a["success_count"],
        "failure_count": a["failure_count"],
        "success_rate": a["success_count"] / total if total else 0.0,
        "space": row["space"],
    }
