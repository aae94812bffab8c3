"""The /v1 routes: one per AgentMemory operation. The tenant comes only from the bearer token,
so no path, body or header can name another tenant's data.

Working-memory routes answer with pre-encoded JSON (no response-model pass) because they
are the hot path; the others return memory_core's models.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import lru_cache, partial
from typing import Annotated, Any, TypeVar

from fastapi import (
    APIRouter,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
)
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from ..errors import InvalidInput, NotFound
from ..memory import AgentMemory
from ..models import (
    Entity,
    Fact,
    FactSource,
    Goal,
    GoalStatus,
    MemoryBundle,
    Role,
    Strategy,
    Turn,
)
from ..stores.working import WorkingMemory
from ..validation import (
    MAX_ID_CHARS,
    MAX_TURN_INDEX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    check_id,
    check_not_blank,
    check_text,
    check_utc_offset,
)
from .auth import bearer_token
from .errors import documented
from .runtime import Runtime

T = TypeVar("T")

# Identifiers and keys: memory_core checks their content; these bound their size up front.
MAX_KEY_CHARS = 256
# TTLs beyond this are a mistake, not a retention policy (ten years).
MAX_TTL_S = 10 * 365 * 86400

# Declared in the OpenAPI document by app.py; read here directly, because one flat dependency
# per request costs a fraction of FastAPI's nested security-dependency machinery.
BEARER_SCHEME = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "A token made by `memstack token create`"}
}


class Caller:
    """The runtime and the tenant the bearer token maps to."""

    __slots__ = ("rt", "tenant")

    def __init__(self, rt: Runtime, tenant: str):
        self.rt = rt
        self.tenant = tenant

    def working(self, user_id: str, conversation_id: str) -> AgentMemory:
        """The conversation's AgentMemory for a working-memory operation, reused across requests."""
        return _conversation_memory(self.rt, self.tenant, user_id, conversation_id)


@lru_cache(maxsize=4096)
def _conversation_memory(rt: Runtime, tenant: str, user_id: str, conversation_id: str) -> AgentMemory:
    # Checking the ids and deriving the Redis keys cost a working-memory request about as much
    # as its route function does; an AgentMemory keeps no per-request state, so one instance
    # serves every request to the conversation. Invalid ids raise, and raising is not cached.
    # Keyed by the runtime too: each app (tests make several per process) has its own clients.
    return rt.memory(tenant, user_id, conversation_id)


async def caller(request: Request) -> Caller:
    rt: Runtime = request.app.state.runtime
    # The raw header, as the working-memory fast path reads it: one parser, one cache.
    header = next((value for name, value in request.scope["headers"] if name == b"authorization"), b"")
    found = rt.tokens.tenant_for_authorization(header)
    if found is None:
        detail = "missing bearer token" if bearer_token(header) is None else "invalid bearer token"
        raise HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})
    return Caller(rt, found)


def _checked(check: Callable[[Any, str], Any], name: str) -> AfterValidator:
    """memory_core's check of a parameter, run under the name the client sends it by: the library
    names a refused value by its own argument (`task_description` for `task`, `agent_id` for
    X-Agent-Id), which a client of the API never sent."""
    return AfterValidator(lambda value: value if value is None else check(value, name))


Auth = Annotated[Caller, Depends(caller)]
UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)]
ConversationId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)]
# Blank keys are refused here, before the store, as blank ids are (`check_id`).
Key = Annotated[str, Path(min_length=1, max_length=MAX_KEY_CHARS), _checked(check_not_blank, "key")]
AgentId = Annotated[
    str | None,
    Header(
        alias="X-Agent-Id",
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="The calling agent; needed for shared spaces",
    ),
    _checked(check_id, "X-Agent-Id"),
]
Ttl = Annotated[float | None, Field(gt=0, le=MAX_TTL_S)]
Priority = Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)]
OptionalId = Annotated[str | None, Field(min_length=1, max_length=MAX_ID_CHARS)]
# A reference to a stored item (entity, fact, turn, goal, strategy): memory_core's ids are UUIDs.
ItemId = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]


def _date_time_text(value: object) -> object:
    # Pydantic would also take a number as seconds since the epoch; the schema promises a string.
    if isinstance(value, (int, float)):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


# With its UTC offset: a naive time would be compared against stored times in an unknown zone.
Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_date_time_text), AfterValidator(check_utc_offset), Field(strict=False)
]


# Enum members and date-times arrive as JSON strings: the only fields parsed from text.
Lax = Field(strict=False)


class Body(BaseModel):
    # Strict: a JSON value of the wrong type is refused, never coerced ("1" to 1, 0 to false),
    # so what the service accepts is what the schema documents.
    model_config = ConfigDict(extra="forbid", strict=True)


# Built once: `json.dumps` with options makes a new encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


class JsonText(Response):
    """A response whose body is JSON text already, with the status, headers and body that
    `Response(body, status_code, media_type="application/json")` has: built without its header
    logic, which costs a working-memory request about 0.5 us. For statuses with a body only
    (not 1xx, 204 or 304)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200):
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]


def _json(payload: Any, status: int = 200) -> Response:
    return JsonText(_encode(payload).encode(), status)


def _json_text(body: bytes) -> Response:
    """A 200 whose body is JSON text already (working memory's stored values, spliced)."""
    return JsonText(body)


async def _stored_json(m: AgentMemory, read: Callable[[WorkingMemory], Awaitable[T]]) -> T:
    """Working-memory values as the JSON text Redis holds, for the response to embed without
    parsing and encoding them again: they were stored compact by `json.dumps`, as `_json`
    writes, so the body is the same byte for byte. Awaited by `Runtime.run` of redis, which
    turns a Redis failure into `StoreUnavailable` as AgentMemory's `store_errors` would."""
    return await read(await m.working())


def _at_most(value: float | None, limit: float, field: str, setting: str) -> None:
    if value is not None and value > limit:
        raise InvalidInput(f"{field}: must be at most {limit:g} ({setting})")


NO_CONTENT = Response(status_code=204)

# Every error status any /v1 operation can answer, each with the one error body shape.
router = APIRouter(prefix="/v1", responses=documented())

# --- working memory (Redis) -----------------------------------------------------------------

WORKING = "/working/{user_id}/{conversation_id}"


class ContextValue(Body):
    value: Any = Field(description="Any JSON value except null")
    ttl_seconds: Ttl = None
    priority: Priority = 0


class WorkingTurn(Body):
    role: Annotated[Role, Lax]
    content: str = Field(min_length=1)


class Thought(Body):
    thought: str = Field(min_length=1)


@router.put(WORKING + "/context/{key}", status_code=204, tags=["working"])
async def put_context(
    c: Auth, user_id: UserId, conversation_id: ConversationId, key: Key, body: ContextValue
) -> Response:
    if body.value is None:
        raise InvalidInput("value: must not be null (DELETE the key instead)")
    _at_most(body.ttl_seconds, c.rt.clients.settings.working_max_ttl_s, "ttl_seconds", "MEMORY_WORKING_MAX_TTL_S")
    m = c.working(user_id, conversation_id)
    await c.rt.run(
        "redis", "set_working_context", m.set_working_context(key, body.value, body.ttl_seconds, body.priority)
    )
    return NO_CONTENT


@router.get(WORKING + "/context/{key}", tags=["working"])
async def get_context(c: Auth, user_id: UserId, conversation_id: ConversationId, key: Key) -> Response:
    m = c.working(user_id, conversation_id)
    value = await c.rt.run("redis", "get_working_context", _stored_json(m, lambda w: w.get_json(key)))
    if value is None:
        raise NotFound(f"no working-memory key {key!r}")
    return _json_text(b'{"value":' + value + b"}")


@router.delete(WORKING + "/context/{key}", status_code=204, tags=["working"])
async def delete_context_key(c: Auth, user_id: UserId, conversation_id: ConversationId, key: Key) -> Response:
    m = c.working(user_id, conversation_id)
    if not await c.rt.run("redis", "delete_working_context", m.delete_working_context(key)):
        raise NotFound(f"no working-memory key {key!r}")
    return NO_CONTENT


@router.get(WORKING + "/context", tags=["working"])
async def get_all_context(c: Auth, user_id: UserId, conversation_id: ConversationId) -> Response:
    """Every live value, plus the recent turns and thoughts."""
    m = c.working(user_id, conversation_id)
    return _json_text(await c.rt.run("redis", "get_working_context", _stored_json(m, lambda w: w.snapshot_json())))


@router.delete(WORKING + "/context", status_code=204, tags=["working"])
async def clear_context(c: Auth, user_id: UserId, conversation_id: ConversationId) -> Response:
    """Drop the conversation's working memory: every key, its recent turns and thoughts."""
    m = c.working(user_id, conversation_id)
    await c.rt.run("redis", "clear_working", m.clear_working())
    return NO_CONTENT


@router.post(WORKING + "/turns", status_code=201, tags=["working"])
async def add_working_turn(c: Auth, user_id: UserId, conversation_id: ConversationId, body: WorkingTurn) -> Response:
    """Append a turn to working memory only (Redis); POST /v1/episodic/... stores it durably."""
    _at_most(
        len(body.content),
        c.rt.clients.settings.working_max_value_bytes // 4,
        "content",
        "MEMORY_WORKING_MAX_VALUE_BYTES / 4",
    )
    m = c.working(user_id, conversation_id)
    turn = await c.rt.run("redis", "add_working_turn", m.add_working_turn(body.role, body.content))
    return _json({"turn": turn}, 201)


@router.get(WORKING + "/turns", tags=["working"])
async def get_working_turns(
    c: Auth, user_id: UserId, conversation_id: ConversationId, limit: Annotated[int, Query(ge=1)] = 10
) -> Response:
    _at_most(limit, c.rt.clients.settings.working_max_turns, "limit", "MEMORY_WORKING_MAX_TURNS")
    m = c.working(user_id, conversation_id)
    turns = await c.rt.run("redis", "recent_turns", _stored_json(m, lambda w: w.recent_turns_json(limit)))
    return _json_text(b'{"turns":[' + b",".join(turns) + b"]}")


@router.post(WORKING + "/thoughts", status_code=204, tags=["working"])
async def push_thought(c: Auth, user_id: UserId, conversation_id: ConversationId, body: Thought) -> Response:
    m = c.working(user_id, conversation_id)
    await c.rt.run("redis", "push_thought", m.push_thought(body.thought))
    return NO_CONTENT


@router.get(WORKING + "/thoughts", tags=["working"])
async def get_thoughts(
    c: Auth, user_id: UserId, conversation_id: ConversationId, limit: Annotated[int, Query(ge=1)] = 10
) -> Response:
    _at_most(limit, c.rt.clients.settings.working_max_thoughts, "limit", "MEMORY_WORKING_MAX_THOUGHTS")
    m = c.working(user_id, conversation_id)
    thoughts = await c.rt.run("redis", "get_thoughts", _stored_json(m, lambda w: w.thoughts_json(limit)))
    return _json_text(b'{"thoughts":[' + b",".join(thoughts) + b"]}")


# --- episodic (Postgres, projected to Neo4j) --------------------------------------------------


class EpisodicTurn(Body):
    role: Annotated[Role, Lax]
    content: str = Field(min_length=1)
    turn_index: Annotated[
        int | None,
        Field(
            ge=0,
            le=MAX_TURN_INDEX,
            description="Where the turn goes (default: after the last). An index that holds a turn is "
            "replaced, and the answer keeps that turn's id: a retry is idempotent, and a turn can be edited.",
        ),
    ] = None
    token_count: Annotated[int | None, Field(ge=0, lt=2**31)] = None
    metadata: dict[str, Any] | None = None
    ttl_seconds: Ttl = None


class TurnList(BaseModel):
    turns: list[Turn]
    next_after_index: int | None = Field(
        None, description="When the page is full: pass it as after_index to read the turns after it"
    )


@router.post("/episodic/{user_id}/{conversation_id}/turns", status_code=201, response_model=Turn, tags=["episodic"])
async def store_turn(c: Auth, user_id: UserId, conversation_id: ConversationId, body: EpisodicTurn) -> Turn:
    """Store a turn durably (Postgres, then the graph), and in working memory."""
    m = c.rt.memory(c.tenant, user_id, conversation_id)
    return await c.rt.run(
        "postgres",
        "store_turn",
        m.store_turn(
            body.role,
            body.content,
            turn_index=body.turn_index,
            token_count=body.token_count,
            metadata=body.metadata,
            ttl_seconds=body.ttl_seconds,
        ),
    )


@router.get("/episodic/{user_id}/{conversation_id}/turns", response_model=TurnList, tags=["episodic"])
async def get_conversation(
    c: Auth,
    user_id: UserId,
    conversation_id: ConversationId,
    limit: Annotated[int | None, Query(ge=1, description="default and most: MEMSTACK_MAX_LIST_LIMIT")] = None,
    after_index: Annotated[int | None, Query(ge=0, le=MAX_TURN_INDEX)] = None,
) -> TurnList:
    """The conversation's turns in order, a page at a time: the first `limit`, then those after
    `next_after_index` of the previous page."""
    _at_most(limit, c.rt.settings.max_list_limit, "limit", "MEMSTACK_MAX_LIST_LIMIT")
    page = limit or c.rt.settings.max_list_limit
    m = c.rt.memory(c.tenant, user_id, conversation_id)
    turns = await c.rt.run("postgres", "get_conversation", m.get_conversation(after_index=after_index, limit=page))
    return TurnList(turns=turns, next_after_index=turns[-1].index if len(turns) == page else None)


# --- retrieval ----------------------------------------------------------------------------------


class RememberQuery(Body):
    query: str = Field(min_length=1)
    top_k: Annotated[int, Field(ge=1, le=1000)] = 10
    conversation_id: OptionalId = None
    include_episodic: bool = True
    include_semantic: bool = True
    include_procedural: bool = True
    time_window_hours: Annotated[float | None, Field(gt=0, le=MAX_TTL_S / 3600)] = None
    since: Timestamp | None = None
    until: Timestamp | None = None


@router.post("/remember/{user_id}", response_model=MemoryBundle, tags=["retrieval"])
async def remember(c: Auth, user_id: UserId, body: RememberQuery, agent_id: AgentId = None) -> MemoryBundle:
    """Relevant memories for a query, ranked across the episodic, semantic and procedural stores."""
    _at_most(body.top_k, c.rt.settings.max_top_k, "top_k", "MEMSTACK_MAX_TOP_K")
    m = c.rt.memory(c.tenant, user_id, body.conversation_id, agent_id)
    return await c.rt.run(
        "postgres",
        "remember",
        m.remember(
            body.query,
            top_k=body.top_k,
            include_episodic=body.include_episodic,
            include_semantic=body.include_semantic,
            include_procedural=body.include_procedural,
            time_window_hours=body.time_window_hours,
            since=body.since,
            until=body.until,
        ),
    )


# --- semantic -----------------------------------------------------------------------------------


class EntityIn(Body):
    name: str = Field(min_length=1, max_length=1000)
    type: str = "Concept"
    aliases: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(default_factory=list, max_length=100)
    description: str | None = None
    salience: Annotated[float, Field(ge=0, le=1)] = 0.5
    properties: dict[str, Any] | None = None
    ttl_seconds: Ttl = None
    priority: Priority = 0
    space: OptionalId = None


class FactIn(Body):
    claim: str = Field(min_length=1)
    source: Annotated[FactSource, Lax] = FactSource.EXTRACTION
    confidence: Annotated[float, Field(ge=0, le=1)] = 0.8
    entity_ids: list[ItemId] = Field(default_factory=list, max_length=100)
    source_turn_id: ItemId | None = None
    ttl_seconds: Ttl = None
    priority: Priority = 0
    space: OptionalId = None


class RelationIn(Body):
    source_id: ItemId
    target_id: ItemId
    rel_type: str = Field("RELATED_TO", max_length=64)
    # Strength of the relation, on the scale of salience and confidence (the seeds give it no
    # range of its own): 1 is the default and the strongest.
    weight: Annotated[float, Field(ge=0, le=1)] = 1.0


@router.post("/semantic/{user_id}/entities", status_code=201, response_model=Entity, tags=["semantic"])
async def upsert_entity(c: Auth, user_id: UserId, body: EntityIn, agent_id: AgentId = None) -> Entity:
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    return await c.rt.run(
        "postgres",
        "upsert_entity",
        m.upsert_entity(
            body.name,
            body.type,
            aliases=body.aliases,
            description=body.description,
            salience=body.salience,
            properties=body.properties,
            ttl_seconds=body.ttl_seconds,
            priority=body.priority,
            space=body.space,
        ),
    )


@router.post("/semantic/{user_id}/facts", status_code=201, response_model=Fact, tags=["semantic"])
async def learn_fact(c: Auth, user_id: UserId, body: FactIn, agent_id: AgentId = None) -> Fact:
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    return await c.rt.run(
        "postgres",
        "learn_fact",
        m.learn_fact(
            body.claim,
            source=body.source,
            confidence=body.confidence,
            entity_ids=body.entity_ids,
            source_turn_id=body.source_turn_id,
            ttl_seconds=body.ttl_seconds,
            priority=body.priority,
            space=body.space,
        ),
    )


@router.post("/semantic/{user_id}/relations", status_code=204, tags=["semantic"])
async def relate(c: Auth, user_id: UserId, body: RelationIn) -> Response:
    m = c.rt.memory(c.tenant, user_id)
    await c.rt.run("postgres", "relate", m.relate(body.source_id, body.target_id, body.rel_type, weight=body.weight))
    return NO_CONTENT


# --- goals --------------------------------------------------------------------------------------


class GoalIn(Body):
    description: str = Field(min_length=1)
    priority: Priority = 3
    parent_goal_id: ItemId | None = None
    blocked_by: list[ItemId] = Field(default_factory=list, max_length=100)
    deadline: Timestamp | None = None
    conversation_id: OptionalId = None
    ttl_seconds: Ttl = None
    space: OptionalId = None


class GoalUpdate(Body):
    status: Annotated[GoalStatus, Lax] | None = None
    priority: Priority | None = None
    parent_goal_id: ItemId | None = None
    blocked_by: list[ItemId] | None = Field(None, max_length=100)


class GoalList(BaseModel):
    goals: list[Goal]


@router.post("/goals/{user_id}", status_code=201, response_model=Goal, tags=["goals"])
async def add_goal(c: Auth, user_id: UserId, body: GoalIn, agent_id: AgentId = None) -> Goal:
    m = c.rt.memory(c.tenant, user_id, body.conversation_id, agent_id)
    return await c.rt.run(
        "postgres",
        "add_goal",
        m.add_goal(
            body.description,
            priority=body.priority,
            parent_goal_id=body.parent_goal_id,
            blocked_by=body.blocked_by,
            deadline=body.deadline,
            ttl_seconds=body.ttl_seconds,
            space=body.space,
        ),
    )


@router.get("/goals/{user_id}", response_model=GoalList, tags=["goals"])
async def get_active_goals(
    c: Auth, user_id: UserId, limit: Annotated[int, Query(ge=1)] = 50, agent_id: AgentId = None
) -> GoalList:
    _at_most(limit, c.rt.settings.max_list_limit, "limit", "MEMSTACK_MAX_LIST_LIMIT")
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    return GoalList(goals=await c.rt.run("postgres", "get_active_goals", m.get_active_goals(limit)))


@router.patch("/goals/{user_id}/{goal_id}", response_model=Goal, tags=["goals"])
async def update_goal(
    c: Auth, user_id: UserId, goal_id: Annotated[str, Path(max_length=64)], body: GoalUpdate, agent_id: AgentId = None
) -> Goal:
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    return await c.rt.run(
        "postgres",
        "update_goal",
        m.update_goal(
            goal_id,
            status=body.status,
            priority=body.priority,
            parent_goal_id=body.parent_goal_id,
            blocked_by=body.blocked_by,
        ),
    )


# --- procedural ---------------------------------------------------------------------------------


class ToolInvocation(Body):
    tool_name: str = Field(min_length=1, max_length=200)
    tool_input: Any = None
    tool_output: Any = None
    success: bool
    latency_ms: Annotated[int, Field(ge=0, lt=2**31)]
    conversation_id: OptionalId = None
    turn_index: Annotated[int | None, Field(ge=0, lt=2**31)] = None
    error_message: str | None = None


class StrategyIn(Body):
    description: str = Field(min_length=1)
    context_pattern: str = Field("", max_length=10_000)
    tool_sequence: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=100
    )
    success: bool = True
    space: OptionalId = None


class Outcome(Body):
    success: bool


class ToolStatsList(BaseModel):
    tools: list[dict[str, Any]]


class StrategyList(BaseModel):
    strategies: list[Strategy]


@router.post("/procedural/{user_id}/tool-invocations", status_code=204, tags=["procedural"])
async def record_tool_usage(c: Auth, user_id: UserId, body: ToolInvocation, agent_id: AgentId = None) -> Response:
    m = c.rt.memory(c.tenant, user_id, body.conversation_id, agent_id)
    await c.rt.run(
        "postgres",
        "record_tool_usage",
        m.record_tool_usage(
            body.tool_name,
            body.tool_input,
            body.tool_output,
            body.success,
            body.latency_ms,
            turn_index=body.turn_index,
            error_message=body.error_message,
        ),
    )
    return NO_CONTENT


@router.get("/procedural/{user_id}/tool-stats", response_model=ToolStatsList, tags=["procedural"])
async def get_tool_stats(c: Auth, user_id: UserId, agent_id: AgentId = None) -> ToolStatsList:
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    stats = await c.rt.run("postgres", "get_tool_stats", m.get_tool_stats())
    return ToolStatsList(tools=[s.model_dump() for s in stats])


@router.post("/procedural/{user_id}/strategies", status_code=201, response_model=Strategy, tags=["procedural"])
async def learn_strategy(c: Auth, user_id: UserId, body: StrategyIn, agent_id: AgentId = None) -> Strategy:
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    return await c.rt.run(
        "postgres",
        "learn_strategy",
        m.learn_strategy(
            body.description,
            context_pattern=body.context_pattern,
            tool_sequence=body.tool_sequence,
            success=body.success,
            space=body.space,
        ),
    )


@router.post("/procedural/{user_id}/strategies/{strategy_id}/outcomes", response_model=Strategy, tags=["procedural"])
async def reinforce_strategy(
    c: Auth, user_id: UserId, strategy_id: Annotated[str, Path(max_length=64)], body: Outcome, agent_id: AgentId = None
) -> Strategy:
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    return await c.rt.run("postgres", "reinforce_strategy", m.reinforce_strategy(strategy_id, body.success))


@router.get("/procedural/{user_id}/strategies", response_model=StrategyList, tags=["procedural"])
async def what_worked_for(
    c: Auth,
    user_id: UserId,
    task: Annotated[
        str, Query(min_length=1, max_length=10_000), _checked(partial(check_text, max_chars=10_000), "task")
    ],
    top_k: Annotated[int, Query(ge=1)] = 5,
    agent_id: AgentId = None,
) -> StrategyList:
    _at_most(top_k, c.rt.settings.max_top_k, "top_k", "MEMSTACK_MAX_TOP_K")
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    return StrategyList(strategies=await c.rt.run("postgres", "what_worked_for", m.what_worked_for(task, top_k)))


# --- user model ---------------------------------------------------------------------------------


class Preferences(Body):
    preferences: dict[str, Any] = Field(max_length=200)


class Expertise(Body):
    areas: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(max_length=200)


@router.patch("/users/{user_id}/preferences", status_code=204, tags=["users"])
async def set_preferences(c: Auth, user_id: UserId, body: Preferences, agent_id: AgentId = None) -> Response:
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    await c.rt.run("postgres", "set_preferences", m.set_preferences(**body.preferences))
    return NO_CONTENT


@router.put("/users/{user_id}/expertise", status_code=204, tags=["users"])
async def set_expertise(c: Auth, user_id: UserId, body: Expertise, agent_id: AgentId = None) -> Response:
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    await c.rt.run("postgres", "set_expertise", m.set_expertise(body.areas))
    return NO_CONTENT


@router.get("/users/{user_id}/context", tags=["users"])
async def get_user_context(c: Auth, user_id: UserId, agent_id: AgentId = None) -> dict[str, Any]:
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    return await c.rt.run("postgres", "get_user_context", m.get_user_context())


# --- reflections (queued for the consolidation worker) -----------------------------------------


class ReflectionIn(Body):
    conversation_id: OptionalId = None
    success: bool = True
    summary: str | None = None
    task_type: Annotated[str | None, Field(max_length=200)] = None
    tools: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=100)
    strategy_id: ItemId | None = None


@router.post("/reflections/{user_id}", status_code=202, tags=["reflections"])
async def reflect(c: Auth, user_id: UserId, body: ReflectionIn, agent_id: AgentId = None) -> dict[str, str]:
    """Queue a reflection for the worker; answers with the job id."""
    # Checked here under their own names: memory_core checks the outcome as one value, `outcome`.
    # (Not as field validators: with one on `summary`, schemathesis's coverage phase took the
    # optional field for a required one.)
    for name, limit in (("summary", 10_000), ("task_type", 200)):
        if (value := getattr(body, name)) is not None:
            check_text(value, name, limit)
    m = c.rt.memory(c.tenant, user_id, body.conversation_id, agent_id)
    outcome = body.model_dump(exclude={"conversation_id"}, exclude_none=True)
    return {"job_id": await c.rt.run("redis", "reflect", m.reflect(outcome))}


# --- shared spaces ------------------------------------------------------------------------------

SpaceName = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)]
# The agent granted a space: memory_core checks it as `agent_id`.
Grantee = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS), _checked(check_id, "grantee")]


class Grant(Body):
    read: bool = True
    write: bool = False


@router.put("/spaces/{user_id}/{space}", status_code=204, tags=["spaces"])
async def create_space(c: Auth, user_id: UserId, space: SpaceName, agent_id: AgentId = None) -> Response:
    """Create a shared space owned by the calling agent (X-Agent-Id).

    A space belongs to the tenant, not to the user in the path (the user the agent acts for): an
    agent granted the space reads its memories whichever of the tenant's users it acts for."""
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    await c.rt.run("postgres", "create_space", m.create_space(space))
    return NO_CONTENT


@router.put("/spaces/{user_id}/{space}/grants/{grantee}", status_code=204, tags=["spaces"])
async def grant(
    c: Auth,
    user_id: UserId,
    space: SpaceName,
    grantee: Grantee,
    body: Grant,
    agent_id: AgentId = None,
) -> Response:
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    await c.rt.run("postgres", "grant", m.grant(space, grantee, read=body.read, write=body.write))
    return NO_CONTENT


@router.delete("/spaces/{user_id}/{space}/grants/{grantee}", status_code=204, tags=["spaces"])
async def revoke(
    c: Auth,
    user_id: UserId,
    space: SpaceName,
    grantee: Grantee,
    agent_id: AgentId = None,
) -> Response:
    m = c.rt.memory(c.tenant, user_id, agent_id=agent_id)
    await c.rt.run("postgres", "revoke", m.revoke(space, grantee))
    return NO_CONTENT
