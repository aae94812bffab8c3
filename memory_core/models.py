"""The records memory_core returns. Inputs are plain arguments to AgentMemory's methods."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field


def utc_text(moment: datetime) -> str:
    """A moment as the models' datetimes are written in answers (RFC 3339 in UTC, `Z`), for the
    answers built from dicts: one format for the same turn whichever route returns it."""
    return moment.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


class Role(str, Enum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class GoalStatus(str, Enum):
    ACTIVE = "active"
    COMPLETED = "completed"
    ABANDONED = "abandoned"
    BLOCKED = "blocked"


class FactSource(str, Enum):
    EXTRACTION = "extraction"
    USER_STATED = "user_stated"
    INFERRED = "inferred"


# Relationship types `relate` may create between entities. Cypher cannot take a relationship
# type as a parameter, so this whitelist is what keeps caller text out of the query.
ENTITY_RELATIONS: frozenset[str] = frozenset(
    {"RELATED_TO", "PART_OF", "LOCATED_IN", "WORKS_FOR", "KNOWS", "CREATED_BY", "REFERENCES", "CAUSED", "PRECEDES"}
)
# Entity types that also become a node label (the property `type` always holds the type). Not
# "Tool": that label belongs to procedural memory's Tool nodes and their uniqueness constraint.
ENTITY_LABELS: frozenset[str] = frozenset(
    {"Person", "Organization", "Concept", "Location", "Event", "Document", "Product", "Topic"}
)


class Turn(BaseModel):
    id: str
    conversation_id: str
    index: int
    role: Role
    content: str
    timestamp: datetime
    token_count: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Entity(BaseModel):
    id: str
    name: str
    type: str
    aliases: list[str] = Field(default_factory=list)
    description: str | None = None
    salience: float = 0.5
    properties: dict[str, Any] = Field(default_factory=dict)


class Fact(BaseModel):
    id: str
    claim: str
    confidence: float
    source: FactSource
    entity_ids: list[str] = Field(default_factory=list)
    source_turn_id: str | None = None
    space: str | None = None
    created_at: datetime


class Goal(BaseModel):
    id: str
    description: str
    status: GoalStatus = GoalStatus.ACTIVE
    priority: int = 3
    parent_goal_id: str | None = None
    blocked_by: list[str] = Field(default_factory=list)
    deadline: datetime | None = None
    created_at: datetime


class Strategy(BaseModel):
    id: str
    description: str
    context_pattern: str = ""
    tool_sequence: list[str] = Field(default_factory=list)
    success_count: int = 0
    failure_count: int = 0
    score: float | None = None

    @property
    def success_rate(self) -> float:
        total = self.success_count + self.failure_count
        return self.success_count / total if total else 0.0


class ToolStats(BaseModel):
    name: str
    usage_count: int
    success_count: int
    avg_latency_ms: float


class MemoryBundle(BaseModel):
    """What `remember` returns: each list is ranked best first and already deduplicated."""

    relevant_turns: list[dict[str, Any]] = Field(default_factory=list)
    facts: list[dict[str, Any]] = Field(default_factory=list)
    entities: list[dict[str, Any]] = Field(default_factory=list)
    strategies: list[dict[str, Any]] = Field(default_factory=list)
    active_goals: list[dict[str, Any]] = Field(default_factory=list)
    user_context: dict[str, Any] = Field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.relevant_turns or self.facts or self.entities or self.strategies or self.active_goals)

    def to_context_string(self, max_chars: int = 4000) -> str:
        """Format for an LLM prompt, most important sections first, never longer than max_chars."""
        sections: list[tuple[str, list[str]]] = [
            ("Active Goals", [f"- [p{g['priority']}] {g['description']} ({g['status']})" for g in self.active_goals]),
            ("Known Facts", [f"- {f['claim']} (confidence: {f['confidence']:.0%})" for f in self.facts]),
            (
                "Relevant Entities",
                [f"- {e['name']} ({e['type']}): {e.get('description') or 'N/A'}" for e in self.entities],
            ),
            (
                "Relevant Past Conversations",
                [f"[{t['timestamp']}] {t['role']}: {t['content']}" for t in self.relevant_turns],
            ),
            (
                "What Worked Before",
                [f"- {s['description']} (success rate: {s['success_rate']:.0%})" for s in self.strategies],
            ),
            ("User Preferences", [f"- {k}: {v}" for k, v in self.user_context.get("preferences", {}).items()]),
        ]
        out: list[str] = []
        used = 0
        for title, lines in sections:
            if not lines:
                continue
            header = ("\n\n" if out else "") + f"## {title}"
            if used + len(header) + 1 > max_chars:
                break
            out.append(header)
            used += len(header)
            for line in lines:
                piece = "\n" + line
                if used + len(piece) > max_chars:
                    room = max_chars - used
                    if room > 4:
                        out.append(piece[: room - 3] + "...")
                        used += room
                    return "".join(out)
                out.append(piece)
                used += len(piece)
        return "".join(out)
