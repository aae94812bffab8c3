"""Episodic memory: conversation turns in Postgres (the source of truth) with a graph outbox row
written by the same statement. Search is exact or HNSW cosine over `conversation_logs.embedding`,
always filtered by tenant and user."""

from __future__ import annotations

import hashlib
import json
import uuid
import weakref
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from ..errors import Conflict, Forbidden
from ..validation import MAX_TURN_INDEX
from .graph import OutboxRow
from .sql import LIVE, Conn, Pending, fetch_dicts, fetch_row, vector

# One statement: allocate the turn index (or honour the caller's), upsert the turn on (tenant,
# conversation, turn_index), and queue its projection. An explicit index that holds a turn
# replaces it in place, keeping its id: a retry is idempotent, and the conversation's user can
# edit a turn (the outbox replay keeps the newest version in the graph).
_STORE_TURN = """
WITH conv AS (
    INSERT INTO conversations AS c (tenant_id, conversation_id, user_id, next_turn_index)
    VALUES (%(tenant_id)s, %(conversation_id)s, %(user_id)s, coalesce(%(turn_index)s::int, 0) + 1)
    ON CONFLICT (tenant_id, conversation_id) DO UPDATE
        SET next_turn_index = greatest(c.next_turn_index, coalesce(%(turn_index)s::int, c.next_turn_index) + 1),
            last_turn_at = now(), archived = false  -- a new turn reopens it; the archival job can archive it again
        WHERE c.user_id = %(user_id)s AND (%(turn_index)s::int IS NOT NULL OR c.next_turn_index <= %(max_index)s)
    RETURNING coalesce(%(turn_index)s::int, next_turn_index - 1) AS turn_index
), turn AS (
    INSERT INTO conversation_logs AS l
        (tenant_id, user_id, conversation_id, turn_index, turn_id, "timestamp", role, content, content_hash,
         token_count, metadata, embedding, expires_at)
    SELECT %(tenant_id)s, %(user_id)s, %(conversation_id)s, conv.turn_index, %(turn_id)s,
           coalesce(%(timestamp)s::timestamptz, now()), %(role)s, %(content)s, %(content_hash)s,
           %(token_count)s, %(metadata)s, %(embedding)s, now() + %(ttl_seconds)s::float8 * interval '1 second'
    FROM conv
    ON CONFLICT (tenant_id, conversation_id, turn_index) DO UPDATE
        SET role = EXCLUDED.role, content = EXCLUDED.content, content_hash = EXCLUDED.content_hash,
            token_count = EXCLUDED.token_count, metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding,
            expires_at = EXCLUDED.expires_at
        WHERE l.user_id = EXCLUDED.user_id
    RETURNING turn_id, turn_index, "timestamp"
), outbox AS (
    INSERT INTO graph_outbox (tenant_id, event, payload)
    SELECT %(tenant_id)s, 'turn', jsonb_build_object(
        'user_id', %(user_id)s::text, 'conversation_id', %(conversation_id)s::text, 'turn_id', turn.turn_id,
        'index', turn.turn_index, 'role', %(role)s::text, 'timestamp', turn."timestamp", 'content', %(content)s::text)
    FROM turn
    RETURNING id, payload
)
SELECT turn.turn_id, turn.turn_index, turn."timestamp", outbox.id, outbox.payload FROM turn, outbox
"""

_TURN_COLUMNS = """turn_id::text AS id, conversation_id, turn_index AS index, role, content, "timestamp",
                   token_count, metadata"""


async def store_turn(
    conn: Conn,
    *,
    tenant_id: str,
    user_id: str,
    conversation_id: str,
    role: str,
    content: str,
    embedding: list[float],
    turn_index: int | None,
    token_count: int | None,
    metadata: dict[str, Any],
    ttl_seconds: float | None,
    timestamp: datetime | None,
) -> tuple[dict[str, Any], OutboxRow]:
    cur = await conn.execute(
        _STORE_TURN,
        {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "conversation_id": conversation_id,
            "turn_index": turn_index,
            "turn_id": uuid.uuid4(),
            "timestamp": timestamp,
            "role": role,
            "content": content,
            "content_hash": hashlib.sha256(content.encode()).hexdigest(),
            "token_count": token_count,
            "metadata": json.dumps(metadata),
            "embedding": vector(embedding),
            "ttl_seconds": ttl_seconds,
            "max_index": MAX_TURN_INDEX,
        },
    )
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute(
            "SELECT user_id = %s FROM conversations WHERE tenant_id = %s AND conversation_id = %s",
            (user_id, tenant_id, conversation_id),
        )
        if (owner := await cur.fetchone()) is not None and owner[0]:
            raise Conflict(
                f"conversation {conversation_id!r} has used every turn index up to {MAX_TURN_INDEX};"
                " store the turn in a new conversation, or give an explicit turn_index to replace one"
            )
        raise Forbidden(f"conversation {conversation_id!r} belongs to another user of this tenant")
    turn_id, index, ts, outbox_id, payload = row
    turn = {
        "id": str(turn_id),
        "conversation_id": conversation_id,
        "index": index,
        "role": role,
        "content": content,
        "timestamp": ts,
        "token_count": token_count,
        "metadata": metadata,
    }
    return turn, OutboxRow(outbox_id, tenant_id, "turn", payload)


def time_filter(since: datetime | None, until: datetime | None) -> tuple[str, dict[str, Any]]:
    return (
        ' AND (%(since)s::timestamptz IS NULL OR "timestamp" >= %(since)s) '
        'AND (%(until)s::timestamptz IS NULL OR "timestamp" < %(until)s)',
        {"since": since, "until": until},
    )


# Vector search of one user's turns, fair to small tenants. The HNSW index is shared by every
# tenant, and pgvector before 0.8 filters by tenant only after the index scan has produced its
# `hnsw.ef_search` nearest candidates of all tenants: a user holding a small share of the index
# keeps few of them, and gets fewer than `limit` turns, or wrong ones. So:
#   - a user with fewer than EXACT_SEARCH_BELOW turns in the time window (counted by a probe that
#     stops there, on the (tenant, user, timestamp) index) is searched exactly: every one of
#     their turns is compared, which costs less than the index scan below this size (at 1M
#     turns: 8 ms for 2,000 turns, 28 ms for 5,000, where a tenant's own index takes 10 ms);
#   - a bigger user is searched through HNSW, always: the planner, which underestimates how many
#     rows pass the tenant, user and liveness filters (by 40x at 1M turns), would otherwise sort
#     all of a 20k-turn user's rows (measured 32-190 ms) where the index scan takes 3-13 ms. With
#     pgvector >= 0.8 the scan iterates until it has `limit` rows that pass the filter (strict
#     order, so the rows stay ranked);
#   - a tenant with at least TENANT_INDEX_MIN_TURNS turns has an HNSW index of its own (a partial
#     index, `create_tenant_index`), which the planner takes for that tenant's scans: its
#     candidates are all the tenant's, so the scan is as fair as exact search and stays cheap
#     (in the shared index, a tenant holding 1% of it needs 100x the candidates). Every partial
#     index adds to the planning of each statement on the table (measured with 53 of them:
#     +0.3 to 0.5 ms; the search itself runs a cached generic plan, see _SEARCH_PLANNING), so
#     only tenants of that size get one;
#   - a scan that comes back short means the user holds too small a share of the nearest
#     candidates: the search is exact if the user has fewer than EXACT_FALLBACK_BELOW turns in
#     the window (cheaper than the widest scan, ef_search 1000, which is often still short for
#     such a user); a bigger user's scan is repeated with the widest candidate list, and a result
#     still short stands: it is the user's nearest among the index's nearest 1,000.
# A scan that returns `limit` rows has them from the nearest candidates of the whole index, so
# they are the user's nearest up to the index's own approximation.
EXACT_SEARCH_BELOW = 2500
EXACT_FALLBACK_BELOW = 20_000
TENANT_INDEX_MIN_TURNS = EXACT_SEARCH_BELOW
_WIDEST_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
_ITERATIVE_SCAN = weakref.WeakKeyDictionary[Conn, bool]()


def tenant_index_name(tenant_id: str) -> str:
    """The name of the tenant's own HNSW index: a digest, since a tenant id is any text and an
    identifier holds at most 63 bytes."""
    return f"conversation_logs_embedding_t_{hashlib.sha256(tenant_id.encode()).hexdigest()[:24]}"


def tenant_index_statements(tenant_id: str) -> list[sql.Composed]:
    """The statements that give `tenant_id` its own HNSW index over its turns, replacing an
    invalid one an interrupted build left. CONCURRENTLY: writes go on while it builds, so they
    run outside a transaction (autocommit)."""
    name = sql.Identifier(tenant_index_name(tenant_id))
    return [
        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {name}").format(name=name),
        sql.SQL(
            "CREATE INDEX CONCURRENTLY {name} ON conversation_logs USING hnsw (embedding vector_cosine_ops)"
            " WHERE tenant_id = {tenant}"
        ).format(name=name, tenant=sql.Literal(tenant_id)),
    ]


async def tenants_without_index(conn: Conn) -> list[tuple[str, int]]:
    """(tenant, turns) of the tenants holding at least TENANT_INDEX_MIN_TURNS turns that have no
    valid index of their own, the largest first. `conn` in autocommit mode: the cross-tenant
    count runs in a transaction of its own."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.maintenance', 'cross-tenant', true)")
        cur = await conn.execute(
            "SELECT tenant_id, count(*) FROM conversation_logs GROUP BY tenant_id HAVING count(*) >= %s"
            " ORDER BY count(*) DESC",
            (TENANT_INDEX_MIN_TURNS,),
        )
        large = await cur.fetchall()
        cur = await conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'conversation_logs'::regclass AND i.indisvalid"
        )
        valid = {name for (name,) in await cur.fetchall()}
    return [(tenant, turns) for tenant, turns in large if tenant_index_name(tenant) not in valid]


async def index_large_tenants(conn: Conn, *, only: str | None = None, limit: int | None = None) -> list[str]:
    """Gives every tenant that has reached TENANT_INDEX_MIN_TURNS turns its own HNSW index (a
    maintenance job: each build reads the table once and takes seconds to minutes), the largest
    first: all of them, `only` that tenant, or at most `limit` of them. `conn` in autocommit
    mode. The tenants indexed."""
    done = []
    due = [tenant for tenant, _ in await tenants_without_index(conn) if only is None or tenant == only]
    for tenant in due[:limit]:
        for statement in tenant_index_statements(tenant):
            await conn.execute(statement)
        done.append(tenant)
    return done


async def _has_iterative_scan(conn: Conn) -> bool:
    """pgvector >= 0.8, asked once per connection (a pool may span a version upgrade)."""
    known = _ITERATIVE_SCAN.get(conn)
    if known is None:
        cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = await cur.fetchone()
        major, minor = (int(x) for x in (row[0] if row else "0.0").split(".")[:2])
        known = _ITERATIVE_SCAN[conn] = (major, minor) >= (0, 8)
    return known


# Sorting disabled for the statement sent next, so that its ORDER BY on the embedding's distance
# is an HNSW index scan; the transaction's own setting is saved beside it.
_SORT_OFF = (
    "SELECT set_config('memstack.saved_sort', current_setting('enable_sort'), true),"
    " set_config('enable_sort', 'off', true)"
)
# _SORT_OFF, and the search's plan generic, cached by its prepared statement, unless the tenant
# has an HNSW index of its own (the index named %(index)s) that the statement cannot name:
# planning the search considers every index of the table, each tenant index among them, and
# costs more than running it for most users (measured with 59 indexes: 0.6-0.7 ms of planning,
# 0.15 ms of execution for a user of 40 turns; a cached generic plan, 0.04 ms). A generic plan
# takes a partial index only if the statement holds its tenant id as a literal
# (%(tenant_named)s): a statement that has the id as a parameter is planned anew for a tenant
# with an index; for the others both plans are the same: the exact search, or the shared index.
# Whether the index exists is the server's answer, as it runs this statement (the last column),
# so an index counts from the moment it is valid (a build under way leaves an invalid one:
# custom plans, slower, as correct).
_SEARCH_PLANNING = (
    _SORT_OFF + ", set_config('memstack.saved_plan_cache_mode', current_setting('plan_cache_mode'), true),"
    " set_config('plan_cache_mode', CASE WHEN %(tenant_named)s OR to_regclass(%(index)s) IS NULL"
    " THEN 'force_generic_plan' ELSE current_setting('plan_cache_mode') END, true),"
    " to_regclass(%(index)s) IS NOT NULL"
)
# Per connection, the tenants whose search it sends with their id as a literal: those the last
# search on it found with an index of their own. One prepared statement each; psycopg keeps 100
# per connection (`prepared_max`), so at most this many, beyond which a tenant's search is planned
# anew each time, as before.
_TENANTS_NAMED = weakref.WeakKeyDictionary[Conn, set[str]]()
_MAX_TENANTS_NAMED = 50
# The saved settings back, run by the statement planned with them, in a one-row subquery: a
# setting changed while a statement executes applies from the next statement's planning, so that
# statement's own plan keeps the index scan and the ones after it are planned with the
# transaction's settings. One statement, where a separate restore would be a second.
_SORT_RESTORED = "set_config('enable_sort', current_setting('memstack.saved_sort'), true)"
_PLANNING_RESTORED = (
    f"{_SORT_RESTORED}, set_config('plan_cache_mode', current_setting('memstack.saved_plan_cache_mode'), true)"
)


async def _send_planned(
    conn: Conn, query: str, params: dict[str, Any], ef_search: int | None
) -> psycopg.AsyncCursor[Any]:
    """Sends `query` planned with sorting disabled, so that an ORDER BY on the embedding's
    distance is an HNSW index scan (with `ef_search` candidates, if given); the transaction's
    own settings are restored after it. In pipeline mode the three statements share the round
    trip of the next result awaited. (ef_search is read by the scan as it runs, so it cannot be
    restored by the statement itself, as _SORT_RESTORED is.)"""
    saved = ["enable_sort", *(["hnsw.ef_search"] if ef_search is not None else [])]
    changed = {"enable_sort": "off", "hnsw.ef_search": str(ef_search)}
    await conn.execute(
        "SELECT "
        + ", ".join(
            f"set_config('memstack.saved_{i}', current_setting('{name}'), true), set_config('{name}', %s, true)"
            for i, name in enumerate(saved)
        ),
        [changed[name] for name in saved],
    )
    cur = await conn.execute(query, params)
    await conn.execute(
        "SELECT "
        + ", ".join(
            f"set_config('{name}', current_setting('memstack.saved_{i}'), true)" for i, name in enumerate(saved)
        )
    )
    return cur


async def search_turns(
    conn: Conn,
    *,
    tenant_id: str,
    user_id: str,
    embedding: list[float],
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """The user's `limit` live turns nearest to `embedding` (cosine), nearest first."""
    async with conn.pipeline():
        pending = await start_search_turns(
            conn, tenant_id=tenant_id, user_id=user_id, embedding=embedding, limit=limit, since=since, until=until
        )
        return await pending()


def _nearest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [{k: v for k, v in r.items() if k != "turns"} for r in rows if r["id"] is not None]
    return sorted(found, key=lambda r: r["similarity"], reverse=True)


async def start_search_turns(
    conn: Conn,
    *,
    tenant_id: str,
    user_id: str,
    embedding: list[float],
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
    recent: int = 0,
) -> Pending:
    """search_turns, its statements sent: in pipeline mode they share a round trip with the
    statements sent before the result is awaited. A small user's exact search and a big user's
    index scan are one statement (after the one that disables sorting for it), so either costs
    one round trip; only a short scan costs more. With `recent`, the same statement also reads
    the user's `recent` newest turns (start_recent_turns, with their similarity), which follow
    the nearest ones in the result."""
    where, params = time_filter(since, until)
    params = {
        **params,
        "tenant_id": tenant_id,
        "user_id": user_id,
        "q": vector(embedding),
        "limit": limit,
        "recent": recent,
        "conversation_id": None,
        "exact_below": EXACT_SEARCH_BELOW,
        "fallback_below": EXACT_FALLBACK_BELOW,
    }
    mine = f"tenant_id = %(tenant_id)s AND user_id = %(user_id)s{where}"
    scored = f"SELECT {_TURN_COLUMNS}, 1 - (embedding <=> %(q)s) AS similarity FROM conversation_logs WHERE {mine} AND {LIVE}"
    named = _TENANTS_NAMED.setdefault(conn, set())
    tenant_named = tenant_id in named
    # The tenant's id as a literal in the index scan only (`%` doubled: psycopg reads the text
    # for placeholders), so that its generic plan takes the tenant's own index.
    scored_in_scan = scored
    if tenant_named:
        literal = sql.Literal(tenant_id).as_string(conn).replace("%", "%%")
        scored_in_scan = scored.replace("tenant_id = %(tenant_id)s", f"tenant_id = {literal}")

    def counted(below: str, settings: str = "") -> str:
        """The user's turns in the window, counted up to `below`, and their exact search when
        there are fewer. The count gates the search from inside its WHERE (a one-time filter):
        as the LATERAL join's ON condition it would be checked only after an exact search of
        every user. The OFFSET 0 fence keeps the ORDER BY out of the scan, so it cannot become
        an HNSW scan."""
        return (
            f"WITH probe AS (SELECT count(*) AS turns FROM (SELECT FROM conversation_logs WHERE {mine}"
            f" LIMIT %({below})s) window_turns)"
            f" SELECT probe.turns, found.* FROM probe{settings} LEFT JOIN LATERAL ("
            f"(SELECT * FROM ({scored} AND probe.turns < %({below})s OFFSET 0) mine"
            " ORDER BY similarity DESC LIMIT %(limit)s)"
        )

    # The index scan, gated by the same count: it runs only when the exact search does not.
    scanned = (
        f" UNION ALL ({scored_in_scan} AND probe.turns >= %(exact_below)s ORDER BY embedding <=> %(q)s LIMIT %(limit)s)"
    )
    iterative = await _has_iterative_scan(conn)
    # Set by the statement that probes: the iterative scan mode for the transaction, and the
    # settings it was planned with, restored.
    settings = ", ".join(
        [_PLANNING_RESTORED, *(["set_config('hnsw.iterative_scan', 'strict_order', true)"] if iterative else [])]
    )
    # The newest turns, in rows whose `turns` is NULL (planned without sorting too: the same
    # rows, from a backward scan of the (tenant, user, timestamp) index).
    newest = f" UNION ALL ({_newest_turns('NULL, ', ', 1 - (embedding <=> %(q)s)', 'recent')})" if recent else ""
    planning = await conn.execute(
        _SEARCH_PLANNING, {"index": tenant_index_name(tenant_id), "tenant_named": tenant_named}
    )
    # Prepared at once: a generic plan is planned once per connection only if the statement is.
    first = await conn.execute(
        counted("exact_below", f" CROSS JOIN (SELECT {settings}) settings") + scanned + ") found ON true" + newest,
        params,
        prepare=True,
    )

    async def finish() -> list[dict[str, Any]]:
        (*_, has_index) = await fetch_row(planning)
        if not has_index:
            named.discard(tenant_id)
        elif len(named) < _MAX_TENANTS_NAMED:
            named.add(tenant_id)
        rows = await fetch_dicts(first)
        newest = [{k: v for k, v in r.items() if k != "turns"} for r in rows if r["turns"] is None]
        rows = [r for r in rows if r["turns"] is not None]
        return await nearest(rows) + newest

    async def nearest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found = _nearest_first(rows)
        if rows[0]["turns"] < EXACT_SEARCH_BELOW or len(found) >= limit:
            return found
        fallback = await conn.execute(counted("fallback_below") + ") found ON true", params)
        rows = await fetch_dicts(fallback)
        if rows[0]["turns"] < EXACT_FALLBACK_BELOW:
            return _nearest_first(rows)
        if iterative:
            return found
        widest = await _send_planned(
            conn, f"{scored} ORDER BY embedding <=> %(q)s LIMIT %(limit)s", params, _WIDEST_EF_SEARCH
        )
        return await fetch_dicts(widest)

    return finish


def _newest_turns(before: str, after: str, limit: str) -> str:
    """The user's newest live turns in the time window (and the conversation, if one is given),
    at most %(`limit`)s, with the columns `before` and `after` the turn's."""
    where, _ = time_filter(None, None)
    return (
        f"SELECT {before}{_TURN_COLUMNS}{after} FROM conversation_logs"
        f" WHERE tenant_id = %(tenant_id)s AND user_id = %(user_id)s AND {LIVE}{where}"
        " AND (%(conversation_id)s::text IS NULL OR conversation_id = %(conversation_id)s)"
        f' ORDER BY "timestamp" DESC LIMIT %({limit})s'
    )


async def start_recent_turns(
    conn: Conn,
    *,
    tenant_id: str,
    user_id: str,
    limit: int,
    conversation_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    embedding: list[float] | None = None,
) -> Pending:
    """The user's newest live turns, newest first; with `embedding`, each row also carries its
    `similarity` to it. Its statement sent (see start_search_turns)."""
    _, params = time_filter(since, until)
    similarity = ", 1 - (embedding <=> %(q)s) AS similarity" if embedding is not None else ""
    cur = await conn.execute(
        _newest_turns("", similarity, "limit"),
        {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "conversation_id": conversation_id,
            "limit": limit,
            "q": vector(embedding) if embedding is not None else None,
            **params,
        },
    )
    return lambda: fetch_dicts(cur)


async def conversation_turns(
    conn: Conn,
    *,
    tenant_id: str,
    user_id: str,
    conversation_id: str,
    after_index: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The conversation's live turns in order, those after `after_index`, at most `limit` (None:
    all of them; LIMIT NULL is no limit)."""
    cur = await conn.execute(
        f"SELECT {_TURN_COLUMNS} FROM conversation_logs WHERE tenant_id = %s AND user_id = %s"
        f" AND conversation_id = %s AND turn_index > %s AND {LIVE} ORDER BY turn_index LIMIT %s",
        (tenant_id, user_id, conversation_id, -1 if after_index is None else after_index, limit),
    )
    return await fetch_dicts(cur)
