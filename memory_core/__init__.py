"""memory_core: async agent memory over Redis (working), Postgres + pgvector (episodic, source of
truth, vector search) and Neo4j (the relationship graph).

    async with await MemoryClients.connect(settings) as clients:
        await migrate(settings, clients.neo4j)
        memory = AgentMemory("tenant", "user", "conversation", clients=clients)
        await memory.store_turn("user", "hello")
        bundle = await memory.remember("hello")
"""

from .clients import MemoryClients
from .embeddings import Embedder, HashingEmbedder
from .errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MemoryCoreError,
    NotFound,
    SchemaNotMigrated,
    StoreUnavailable,
)
from .memory import AgentMemory
from .migrations import EmbeddingDimensionMismatch, migrate
from .models import (
    ENTITY_LABELS,
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
)
from .settings import Settings
from .stores.working import WorkingMemoryFull

__all__ = [
    "ENTITY_LABELS",
    "ENTITY_RELATIONS",
    "AgentMemory",
    "Conflict",
    "Embedder",
    "EmbeddingDimensionMismatch",
    "Entity",
    "Fact",
    "FactSource",
    "Forbidden",
    "Goal",
    "GoalStatus",
    "HashingEmbedder",
    "InvalidInput",
    "MemoryBundle",
    "MemoryClients",
    "MemoryCoreError",
    "NotFound",
    "Role",
    "SchemaNotMigrated",
    "Settings",
    "StoreUnavailable",
    "Strategy",
    "ToolStats",
    "Turn",
    "WorkingMemoryFull",
    "migrate",
]
