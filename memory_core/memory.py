"""AgentMemory: the per-request view of one tenant's user (and conversation) over the stores.

Construction does no I/O. Pass a process-wide `MemoryClients` (a service does); without one,
the first operation connects a private set of clients that `close()` releases.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from . import retrieval
from .clients import MemoryClients
from .errors import Forbidden, InvalidInput, NotFound, StoreUnavailable, store_errors
from .models import (
    ENTITY_RELATIONS,
    Entity,
    Fact,
    FactSource,
    Goal,
    GoalStatus,
    MemoryBundle,
    Role,
    Strategy,
    ToolStats,
    Turn,
    utc_text,
)
from .settings import Settings
from .stores import episodic, goals, procedural, reflections, semantic
from .stores.graph import OutboxRow, project, record
from .stores.semantic import Caller
from .stores.sql import Conn
from .stores.working import WorkingMemory
from .validation import (
    MAX_TURN_INDEX,
    check_embedding,
    check_id,
    check_index,
    check_json,
    check_limit,
    check_positive,
    check_priority,
    check_text,
    check_time,
    check_ttl,
    check_unit_interval,
)

log = logging.getLogger(__name__)
# One for every working-memory operation: it holds no state of a block.
_REDIS_ERRORS = store_errors("redis")
T = TypeVar("T")
E = TypeVar("E", bound=Enum)
_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")


class AgentMemory:
    def __init__(
        self,
        tenant_id: str,
        user_id: str,
        conversation_id: str | None = None,
        *,
        agent_id: str | None = None,
        settings: Settings | None = None,
        clients: MemoryClients | None = None,
    ):
        self.tenant_id = check_id(tenant_id, "tenant_id")
        self.user_id = check_id(user_id, "user_id")
        self.conversation_id = None if conversation_id is None else check_id(conversation_id, "conversation_id")
        self.agent_id = None if agent_id is None else check_id(agent_id, "agent_id")
        if clients is not None and settings is not None and settings is not clients.settings:
            raise TypeError("pass settings or clients, not both: the clients carry their own settings")
        # Only for connecting private clients; `settings` then reads the clients' own.
        self._settings = settings
        self._clients = clients
        self._owns_clients = clients is None
        self._working: WorkingMemory | None = None
        self.caller = Caller(self.tenant_id, self.user_id, self.agent_id)

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings of this instance's clients: limits checked here are the stores' own."""
        if self._clients is not None:
            return self._clients.settings
        if self._settings is None:
            self._settings = Settings()
        return self._settings

    async def clients(self) -> MemoryClients:
        if self._clients is None:
            with store_errors("postgres"):
                self._clients = await MemoryClients.connect(self.settings)
        return self._clients

    async def working(self) -> WorkingMemory:
        if self._working is None:
            c = await self.clients()
            self._working = WorkingMemory(
                c.redis, c.working_scripts, self.settings, self.tenant_id, self.user_id, self.conversation_id
            )
        return self._working

    async def _redis(self, operation: Callable[[WorkingMemory], Awaitable[T]]) -> T:
        """Run one working-memory operation; a Redis failure becomes `StoreUnavailable`."""
        with _REDIS_ERRORS:
            return await operation(self._working or await self.working())

    async def __aenter__(self) -> AgentMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, *, clear_working: bool = False) -> None:
        """Release clients this instance created; optionally drop the conversation's working memory."""
        if clear_working:
            await self.clear_working()
        if self._owns_clients and self._clients is not None:
            await self._clients.close()
            self._clients = None
            self._working = None

    async def _embed(self, text: str, given: list[float] | None = None) -> list[float]:
        if given is not None:
            return check_embedding(given, self.settings.embedding_dim)
        (vector,) = await (await self.clients()).embedder.embed([text])
        return check_embedding(vector, self.settings.embedding_dim)

    def _text(self, value: object, name: str, *, allow_empty: bool = False) -> str:
        return check_text(value, name, self.settings.max_text_chars, allow_empty=allow_empty)

    def _space(self, space: str | None) -> str | None:
        return None if space is None else self._shared_space(space)

    def _shared_space(self, space: str) -> str:
        if self.agent_id is None:
            raise Forbidden("shared spaces need an agent_id (the X-Agent-Id header)")
        return check_id(space, "space")

    async def _write_and_project(self, work: Callable[[Any], Awaitable[tuple[T, list[OutboxRow]]]]) -> T:
        """Run `work` in one tenant transaction, then project its outbox rows to the graph as
        the clients are set to: inline, in the background, or by the worker's outbox replay."""
        c = await self.clients()
        async with c.tenant_transaction(self.tenant_id) as conn:
            result, rows = await work(conn)
        await project(c, rows)
        return result

    async def _in_transaction(self, work: Callable[[Any], Awaitable[T]]) -> T:
        async with (await self.clients()).tenant_transaction(self.tenant_id) as conn:
            return await work(conn)

    def _require_conversation(self) -> str:
        if self.conversation_id is None:
            raise InvalidInput("this operation needs an AgentMemory with a conversation_id")
        return self.conversation_id

    # --- episodic -----------------------------------------------------------------------------

    async def store_turn(
        self,
        role: Role | str,
        content: str,
        *,
        turn_index: int | None = None,
        token_count: int | None = None,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
        embedding: list[float] | None = None,
        timestamp: datetime | None = None,
    ) -> Turn:
        """Store a turn: Postgres first (with its outbox row), then the graph, then working memory."""
        conversation_id = self._require_conversation()
        role = _member(Role, role, "role").value
        content = self._text(content, "content")
        if turn_index is not None:
            check_index(turn_index, "turn_index", MAX_TURN_INDEX)
        if token_count is not None:
            check_index(token_count, "token_count")
        if timestamp is not None:
            check_time(timestamp, "timestamp")
        meta = json.loads(check_json(metadata or {}, "metadata"))
        vector = await self._embed(content, embedding)
        ttl = check_ttl(ttl_seconds)

        async def work(conn: Conn) -> tuple[Any, list[OutboxRow]]:
            turn, row = await episodic.store_turn(
                conn,
                tenant_id=self.tenant_id,
                user_id=self.user_id,
                conversation_id=conversation_id,
                role=role,
                content=content,
                embedding=vector,
                turn_index=turn_index,
                token_count=token_count,
                metadata=meta,
                ttl_seconds=ttl,
                timestamp=timestamp,
            )
            return turn, [row]

        turn = Turn(**await self._write_and_project(work))
        entry = {
            "id": turn.id,
            "index": turn.index,
            "role": turn.role.value,
            "content": turn.content,
            "timestamp": utc_text(turn.timestamp),
        }
        try:
            await self._redis(lambda w: w.add_turn(entry))
        except StoreUnavailable as exc:  # the turn is durable in Postgres; working memory is a cache
            log.warning("working memory not updated for turn %s: %s", turn.id, exc)
        return turn

    async def get_conversation(self, *, after_index: int | None = None, limit: int | None = None) -> list[Turn]:
        """The conversation's turns in order: all of them, or a page of at most `limit` after the
        turn at `after_index` (the last index of the previous page)."""
        conversation_id = self._require_conversation()
        if after_index is not None:
            check_index(after_index, "after_index", MAX_TURN_INDEX)
        if limit is not None:
            check_limit(limit, "limit", 2**31 - 1)
        rows = await self._in_transaction(
            lambda conn: episodic.conversation_turns(
                conn,
                tenant_id=self.tenant_id,
                user_id=self.user_id,
                conversation_id=conversation_id,
                after_index=after_index,
                limit=limit,
            )
        )
        return [Turn(**r) for r in rows]

    # --- semantic -----------------------------------------------------------------------------

    async def upsert_entity(
        self,
        name: str,
        type: str = "Concept",
        *,
        aliases: list[str] | None = None,
        description: str | None = None,
        salience: float = 0.5,
        properties: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
        priority: int = 0,
        space: str | None = None,
    ) -> Entity:
        """Create or update the entity named `name` of `type` (case-insensitive); aliases merge."""
        name = check_text(name, "name", 1000)
        if not isinstance(type, str) or not _TYPE_NAME.match(type):
            raise InvalidInput(f"entity type must match {_TYPE_NAME.pattern}")
        alias_list = [check_text(a, "alias", 1000) for a in (aliases or [])]
        description = None if description is None else self._text(description, "description")
        salience = check_unit_interval(salience, "salience")
        check_priority(priority)
        props = json.loads(check_json(properties or {}, "properties"))
        vector = await self._embed(f"{name}: {description or type}")
        space = self._space(space)

        async def work(conn: Conn) -> tuple[Any, list[OutboxRow]]:
            row = await semantic.upsert_entity(
                conn,
                self.caller,
                name=name,
                type=type,
                aliases=alias_list,
                description=description,
                salience=salience,
                properties=props,
                embedding=vector,
                priority=priority,
                ttl_seconds=check_ttl(ttl_seconds),
                space=space,
            )
            stored_vector = row.pop("embedding").to_list()
            entity = semantic.as_entity(row)
            payload = {
                **entity,
                "scope": "s:" + row["space"] if row["space"] else "u:" + self.user_id,
                "embedding": stored_vector,
            }
            payload.pop("space")
            return entity, [await record(conn, self.tenant_id, "entity", payload)]

        return Entity(**await self._write_and_project(work))

    async def learn_fact(
        self,
        claim: str,
        *,
        source: FactSource | str = FactSource.EXTRACTION,
        confidence: float = 0.8,
        entity_ids: list[str] | None = None,
        source_turn_id: str | None = None,
        ttl_seconds: float | None = None,
        priority: int = 0,
        space: str | None = None,
    ) -> Fact:
        claim = self._text(claim, "claim")
        source = _member(FactSource, source, "source").value
        confidence = check_unit_interval(confidence, "confidence")
        check_priority(priority)
        entity_ids = list(dict.fromkeys(entity_ids or []))
        vector = await self._embed(claim)
        space = self._space(space)

        async def work(conn: Conn) -> tuple[Any, list[OutboxRow]]:
            await semantic.require_items(conn, self.caller, entity_ids, "entity")
            if source_turn_id is not None:
                await _require_turn(conn, self.tenant_id, self.user_id, source_turn_id)
            row = await semantic.insert_item(
                conn,
                self.caller,
                memory_type="fact",
                summary=claim,
                embedding=vector,
                importance=confidence,
                priority=priority,
                ttl_seconds=check_ttl(ttl_seconds),
                space=space,
                attributes={"source": source, "entity_ids": entity_ids, "source_turn_id": source_turn_id},
                # The statement adds the fact's id and created_at to the payload.
                outbox=(
                    "fact",
                    {
                        "claim": claim,
                        "confidence": confidence,
                        "source": source,
                        "scope": "s:" + space if space else "u:" + self.user_id,
                        "source_turn_id": source_turn_id,
                        "entity_ids": entity_ids,
                    },
                ),
            )
            outbox = row.pop("outbox")
            fact = semantic.as_fact(row)
            await semantic.link_fact(conn, self.caller, fact["id"], entity_ids)
            return fact, [outbox]

        return Fact(**await self._write_and_project(work))

    async def relate(
        self, source_id: str, target_id: str, rel_type: str = "RELATED_TO", *, weight: float = 1.0
    ) -> None:
        """Connect two entities with a relationship type from `ENTITY_RELATIONS`."""
        if rel_type not in ENTITY_RELATIONS:
            raise InvalidInput(f"relationship type must be one of {sorted(ENTITY_RELATIONS)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise InvalidInput("weight must be a finite number")
        weight = float(weight)

        async def work(conn: Conn) -> tuple[Any, list[OutboxRow]]:
            await semantic.require_items(conn, self.caller, list({source_id, target_id}), "entity")
            await semantic.relate(conn, self.caller, source_id, target_id, rel_type, weight)
            payload = {"source_id": source_id, "target_id": target_id, "rel_type": rel_type, "weight": weight}
            return None, [await record(conn, self.tenant_id, "relation", payload)]

        await self._write_and_project(work)

    # --- goals --------------------------------------------------------------------------------

    async def add_goal(
        self,
        description: str,
        *,
        priority: int = 3,
        parent_goal_id: str | None = None,
        blocked_by: list[str] | None = None,
        deadline: datetime | None = None,
        ttl_seconds: float | None = None,
        space: str | None = None,
    ) -> Goal:
        description = self._text(description, "description")
        check_priority(priority)
        if deadline is not None:
            check_time(deadline, "deadline")
        vector = await self._embed(description)
        space = self._space(space)

        async def work(conn: Conn) -> tuple[Any, list[OutboxRow]]:
            row = await goals.add_goal(
                conn,
                self.caller,
                description=description,
                priority=priority,
                parent_goal_id=parent_goal_id,
                blocked_by=list(blocked_by or []),
                deadline=deadline,
                conversation_id=self.conversation_id,
                embedding=vector,
                ttl_seconds=check_ttl(ttl_seconds),
                space=space,
            )
            return goals.as_goal(row), [
                await record(conn, self.tenant_id, "goal", goals.goal_payload(row, self.user_id))
            ]

        return Goal(**await self._write_and_project(work))

    async def update_goal(
        self,
        goal_id: str,
        *,
        status: GoalStatus | str | None = None,
        priority: int | None = None,
        parent_goal_id: str | None = None,
        blocked_by: list[str] | None = None,
    ) -> Goal:
        if priority is not None:
            check_priority(priority)
        status = None if status is None else _member(GoalStatus, status, "status")

        async def work(conn: Conn) -> tuple[Any, list[OutboxRow]]:
            row = await goals.update_goal(
                conn,
                self.caller,
                goal_id,
                status=status,
                priority=priority,
                parent_goal_id=parent_goal_id,
                blocked_by=blocked_by,
            )
            return goals.as_goal(row), [
                await record(conn, self.tenant_id, "goal", goals.goal_payload(row, self.user_id))
            ]

        return Goal(**await self._write_and_project(work))

    async def get_active_goals(self, limit: int = 50) -> list[Goal]:
        check_limit(limit, "limit", 2**31 - 1)
        return [
            Goal(**g) for g in await self._in_transaction(lambda conn: goals.active_goals(conn, self.caller, limit))
        ]

    # --- procedural ---------------------------------------------------------------------------

    async def record_tool_usage(
        self,
        tool_name: str,
        tool_input: Any,
        tool_output: Any,
        success: bool,
        latency_ms: int,
        *,
        turn_index: int | None = None,
        error_message: str | None = None,
    ) -> None:
        tool_name = check_text(tool_name, "tool_name", 200)
        if turn_index is not None:
            check_index(turn_index, "turn_index")
        check_index(latency_ms, "latency_ms")
        error_message = None if error_message is None else self._text(error_message, "error_message")

        async def work(conn: Conn) -> tuple[Any, list[OutboxRow]]:
            row = await procedural.record_tool_usage(
                conn,
                self.caller,
                conversation_id=self.conversation_id,
                turn_index=turn_index,
                tool_name=tool_name,
                tool_input=tool_input,
                tool_output=tool_output,
                success=success,
                latency_ms=latency_ms,
                error_message=error_message,
            )
            return None, [row]

        await self._write_and_project(work)

    async def get_tool_stats(self) -> list[ToolStats]:
        return [
            ToolStats(**r) for r in await self._in_transaction(lambda conn: procedural.tool_stats(conn, self.caller))
        ]

    async def learn_strategy(
        self,
        description: str,
        *,
        context_pattern: str = "",
        tool_sequence: list[str] | None = None,
        success: bool = True,
        space: str | None = None,
    ) -> Strategy:
        description = self._text(description, "description")
        context_pattern = check_text(context_pattern, "context_pattern", 10_000, allow_empty=True)
        tools = [check_text(t, "tool name", 200) for t in (tool_sequence or [])]
        vector = await self._embed(description)
        space = self._space(space)

        async def work(conn: Conn) -> tuple[Any, list[OutboxRow]]:
            row = await procedural.learn_strategy(
                conn,
                self.caller,
                description=description,
                context_pattern=context_pattern,
                tool_sequence=tools,
                success=success,
                embedding=vector,
                space=space,
            )
            payload = procedural.strategy_payload(row, vector, self.conversation_id, success)
            return procedural.as_strategy(row), [await record(conn, self.tenant_id, "strategy", payload)]

        return Strategy(**await self._write_and_project(work))

    async def reinforce_strategy(self, strategy_id: str, success: bool) -> Strategy:
        async def work(conn: Conn) -> tuple[Any, list[OutboxRow]]:
            row, vector = await procedural.reinforce_strategy(conn, self.caller, strategy_id, success)
            payload = procedural.strategy_payload(row, vector, self.conversation_id, success)
            return procedural.as_strategy(row), [await record(conn, self.tenant_id, "strategy", payload)]

        return Strategy(**await self._write_and_project(work))

    async def what_worked_for(self, task_description: str, top_k: int = 5) -> list[Strategy]:
        check_limit(top_k, "top_k")
        vector = await self._embed(self._text(task_description, "task_description"))
        rows = await self._in_transaction(lambda conn: procedural.find_strategies(conn, self.caller, vector, top_k))
        return [Strategy(**r) for r in rows]

    # --- user model ---------------------------------------------------------------------------

    async def set_preferences(self, **preferences: Any) -> None:
        for key in preferences:
            check_text(key, "preference name", 200)
        values = json.loads(check_json(preferences, "preferences"))
        await self._in_transaction(lambda conn: goals.update_profile(conn, self.caller, "preferences", values))

    async def set_expertise(self, areas: list[str]) -> None:
        checked = [check_text(a, "expertise area", 200) for a in areas]
        await self._in_transaction(lambda conn: goals.set_expertise(conn, self.caller, checked))

    async def get_user_context(self) -> dict[str, Any]:
        return await self._in_transaction(lambda conn: goals.user_context(conn, self.caller))

    # --- retrieval ----------------------------------------------------------------------------

    async def remember(
        self,
        query: str,
        *,
        top_k: int = 10,
        include_episodic: bool = True,
        include_semantic: bool = True,
        include_procedural: bool = True,
        time_window_hours: float | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> MemoryBundle:
        """Relevant memories for `query`; see `memory_core.retrieval` for the ranking."""
        check_limit(top_k, "top_k")
        for value, name in ((since, "since"), (until, "until")):
            if value is not None:
                check_time(value, name)
        if since is not None and until is not None and since > until:
            raise InvalidInput(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
        if time_window_hours is not None:
            hours = check_positive(time_window_hours, "time_window_hours")
            window_start = datetime.fromtimestamp(datetime.now(UTC).timestamp() - hours * 3600, UTC)
            since = max(since, window_start) if since else window_start
        vector = await self._embed(self._text(query, "query"))
        return await retrieval.remember(
            await self.clients(),
            self.caller,
            vector,
            top_k=top_k,
            include_episodic=include_episodic,
            include_semantic=include_semantic,
            include_procedural=include_procedural,
            since=since,
            until=until,
        )

    # --- working memory -----------------------------------------------------------------------

    # The hottest operations run their store call in place of `_redis(lambda w: ...)`: the same
    # error mapping without a closure and a coroutine per call.

    async def set_working_context(
        self, key: str, value: Any, ttl_seconds: float | None = None, priority: int = 0
    ) -> None:
        check_priority(priority)
        with _REDIS_ERRORS:
            await (self._working or await self.working()).set(key, value, ttl_seconds, priority)

    async def get_working_context(self, key: str | None = None) -> Any:
        """One value by key, or (no key) every live value plus recent turns and thoughts."""
        with _REDIS_ERRORS:
            w = self._working or await self.working()
            return await (w.get(key) if key is not None else w.snapshot())

    async def delete_working_context(self, key: str) -> bool:
        return await self._redis(lambda w: w.delete(key))

    async def add_working_turn(self, role: Role | str, content: str) -> dict[str, Any]:
        """Append a turn to working memory only (no durable copy); returns the stored entry."""
        turn = {
            "id": str(uuid.uuid4()),
            "role": _member(Role, role, "role").value,
            "content": self._text(content, "content"),
            "timestamp": utc_text(datetime.now(UTC)),
        }
        await self._redis(lambda w: w.add_turn(turn))
        return turn

    async def recent_working_turns(self, limit: int = 10) -> list[dict[str, Any]]:
        return await self._redis(lambda w: w.recent_turns(limit))

    async def clear_working(self) -> None:
        """Drop the conversation's working memory: every key, its recent turns and thoughts."""
        await self._redis(lambda w: w.clear())

    async def push_thought(self, thought: str) -> None:
        with _REDIS_ERRORS:
            await (self._working or await self.working()).push_thought(thought, utc_text(datetime.now(UTC)))

    async def get_thoughts(self, limit: int = 10) -> list[dict[str, Any]]:
        return await self._redis(lambda w: w.thoughts(limit))

    async def set_active_goal(self, goal: Goal) -> None:
        await self.set_working_context("active_goal", {"id": goal.id, "description": goal.description}, priority=100)

    # --- lifecycle ----------------------------------------------------------------------------

    async def reflect(self, outcome: dict[str, Any]) -> str:
        """Queue a reflection job for the consolidation worker; returns the job id.

        `outcome` may hold: success (bool), summary (str), task_type (str), tools (list[str]),
        strategy_id (str, reinforced by the outcome)."""
        if isinstance(outcome, dict) and outcome.get("strategy_id") is not None:
            # Refused now rather than by the worker: a job that cannot succeed would be retried,
            # dead-lettered, and page an operator.
            strategy_id = str(outcome["strategy_id"])
            await self._in_transaction(lambda conn: procedural.check_strategy(conn, self.caller, strategy_id))
        clients = await self.clients()
        with store_errors("redis"):
            return await reflections.enqueue_reflection(
                clients.redis, self.settings, self.caller, self.conversation_id, outcome
            )

    # --- shared spaces: memories several agents of one tenant read, by grant ---------------------

    async def create_space(self, space: str) -> None:
        name = self._shared_space(space)
        await self._in_transaction(lambda conn: semantic.create_space(conn, self.caller, name))

    async def grant(self, space: str, agent_id: str, *, read: bool = True, write: bool = False) -> None:
        name, grantee = self._shared_space(space), check_id(agent_id, "agent_id")
        await self._in_transaction(lambda conn: semantic.set_grant(conn, self.caller, name, grantee, read, write))

    async def revoke(self, space: str, agent_id: str) -> None:
        await self.grant(space, agent_id, read=False, write=False)


def _member(enum: type[E], value: object, name: str) -> E:
    try:
        return enum(value)
    except ValueError:
        raise InvalidInput(f"{name} must be one of {[m.value for m in enum]}, not {value!r}") from None


async def _require_turn(conn: Conn, tenant_id: str, user_id: str, turn_id: str) -> None:
    try:
        uuid.UUID(turn_id)
    except (ValueError, TypeError, AttributeError):
        raise InvalidInput(f"source_turn_id is not a turn id: {turn_id!r}") from None
    cur = await conn.execute(
        "SELECT 1 FROM conversation_logs WHERE tenant_id = %s AND user_id = %s AND turn_id = %s::uuid",
        (tenant_id, user_id, turn_id),
    )
    if await cur.fetchone() is None:
        raise NotFound(f"unknown turn id {turn_id!r}")
