"""`remember`: merge every store into one ranked, deduplicated MemoryBundle.

Ranking (weights are settings, `MEMORY_WEIGHT_*`):
  turn      weight_episodic * similarity + weight_recency * 0.5 ** (age_hours / recency_half_life_h)
            Candidates: the top 3*top_k turns by vector similarity plus the top_k most recent.
            At most `max_turns_per_conversation` turns per conversation; identical content once.
  fact      weight_facts * similarity * (0.5 + 0.5 * confidence) * priority_boost
  entity    weight_entities * similarity * (0.5 + 0.5 * salience) * priority_boost
  neighbour an entity reached through entity_relations from the top 5 entities, or a fact ABOUT
            one of them: the best seed's score * 0.5 ** hops (facts: * 0.5); depth <=
            graph_max_depth, at most graph_max_fanout neighbours per node per hop. The expansion
            runs in Postgres, where relations are stored first, inside the transaction that
            searched the items; Neo4j holds the same graph as a projection for graph queries.
  strategy  weight_procedural * similarity * smoothed success rate
priority_boost = 1 + 0.05 * clamp(priority, -10, 10). Goals come ordered by priority; the
user context is attached as is. Each list is cut to top_k. Scores are returned in `score`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from .clients import MemoryClients
from .models import MemoryBundle, utc_text
from .settings import Settings
from .stores import episodic, goals, procedural, semantic
from .stores.semantic import Caller
from .stores.sql import Conn

log = logging.getLogger(__name__)


def _priority_boost(priority: int) -> float:
    return 1 + 0.05 * max(-10, min(10, priority))


def rank_turns(turns: list[dict[str, Any]], settings: Settings, top_k: int, now: datetime) -> list[dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for t in turns:
        age_h = max(0.0, (now - t["timestamp"]).total_seconds() / 3600)
        t["score"] = settings.weight_episodic * float(t["similarity"]) + settings.weight_recency * 0.5 ** (
            age_h / settings.recency_half_life_h
        )
        if t["id"] not in best or best[t["id"]]["score"] < t["score"]:
            best[t["id"]] = t
    ranked: list[dict[str, Any]] = []
    seen_content: set[str] = set()
    per_conversation: dict[str, int] = {}
    for t in sorted(best.values(), key=lambda t: t["score"], reverse=True):
        content_key = " ".join(t["content"].split()).lower()
        if content_key in seen_content:
            continue
        if per_conversation.get(t["conversation_id"], 0) >= settings.max_turns_per_conversation:
            continue
        seen_content.add(content_key)
        per_conversation[t["conversation_id"]] = per_conversation.get(t["conversation_id"], 0) + 1
        ranked.append(t)
        if len(ranked) == top_k:
            break
    return ranked


async def remember(
    clients: MemoryClients,
    caller: Caller,
    vector: list[float],
    *,
    top_k: int,
    include_episodic: bool,
    include_semantic: bool,
    include_procedural: bool,
    since: datetime | None,
    until: datetime | None,
) -> MemoryBundle:
    """One pipelined transaction on one pooled connection: every independent statement (the
    turns' search with the most recent turns, the fact, entity and strategy search, goals, the
    user context) goes out with the BEGIN, in one round trip; what depends on those results
    follows (a short index scan's fallback, the entities' graph neighbourhood). At 1M turns the
    server's work for a small tenant is about a millisecond, less than a second connection's
    checkout, BEGIN and COMMIT: two concurrent transactions (the turns' search overlapping the
    rest) were no faster for any group of tenants, and held two connections per call."""
    s = clients.settings
    bundle = MemoryBundle()
    candidates: list[dict[str, Any]] = []
    facts: list[dict[str, Any]] = []
    entities: list[dict[str, Any]] = []
    async with clients.tenant_transaction(caller.tenant_id, pipeline=True) as conn:
        if include_episodic:
            turns = await episodic.start_search_turns(
                conn,
                tenant_id=caller.tenant_id,
                user_id=caller.user_id,
                embedding=vector,
                limit=top_k * 3,
                since=since,
                until=until,
                recent=top_k,
            )
        searches = [
            *([semantic.ItemSearch(("fact", "entity"), top_k * 2, since, until)] if include_semantic else []),
            *([procedural.strategy_search(top_k)] if include_procedural else []),
        ]
        found = iter(await semantic.start_search_item_groups(conn, caller, vector, searches) if searches else [])
        items = next(found) if include_semantic else None
        strategies = procedural.ranked_strategies(next(found), top_k) if include_procedural else None
        active_goals = await goals.start_active_goals(conn, caller, limit=top_k)
        user_context = await goals.start_user_context(conn, caller)
        if include_episodic:
            candidates = await turns()
        if strategies is not None:
            bundle.strategies = [{**st, "score": s.weight_procedural * st["score"]} for st in await strategies()]
        bundle.active_goals = [{**g, "created_at": utc_text(g["created_at"])} for g in await active_goals()]
        bundle.user_context = await user_context()
        if items is not None:
            facts, entities = await _semantic(conn, caller, s, await items())
    if include_episodic:
        bundle.relevant_turns = [
            {**t, "timestamp": utc_text(t["timestamp"]), "similarity": float(t["similarity"])}
            for t in rank_turns(candidates, s, top_k, datetime.now(UTC))
        ]
    if include_semantic:
        bundle.facts = [
            {**semantic.as_fact(r), "score": r["score"], "via_graph": r.get("via_graph", False)}
            for r in sorted(facts, key=lambda r: r["score"], reverse=True)[:top_k]
        ]
        bundle.entities = [
            {**semantic.as_entity(r), "score": r["score"], "via_graph": r.get("via_graph", False)}
            for r in sorted(entities, key=lambda r: r["score"], reverse=True)[:top_k]
        ]
    return bundle


async def _semantic(
    conn: Conn, caller: Caller, s: Settings, items: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(facts, entities) scored, with the visible graph neighbours of the top 5 entities."""
    facts: list[dict[str, Any]] = []
    entities: list[dict[str, Any]] = []
    for row in items:
        weight = s.weight_facts if row["memory_type"] == "fact" else s.weight_entities
        row["score"] = (
            weight * float(row["similarity"]) * (0.5 + 0.5 * row["importance_score"]) * _priority_boost(row["priority"])
        )
        (facts if row["memory_type"] == "fact" else entities).append(row)
    seeds = sorted(entities, key=lambda r: r["score"], reverse=True)[:5]
    if seeds:
        neighbours, about = await semantic.neighbourhood(
            conn, caller, [e["id"] for e in seeds], s.graph_max_depth, s.graph_max_fanout
        )
        known = {r["id"] for r in entities + facts}
        for row in neighbours:
            if row["id"] not in known:
                entities.append({**row, "score": seeds[0]["score"] * 0.5 ** row["hops"], "via_graph": True})
        for row in about:
            if row["id"] not in known:
                facts.append({**row, "score": seeds[0]["score"] * 0.5, "via_graph": True})
    return facts, entities
