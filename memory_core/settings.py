"""Settings for memory_core, read from the environment.

The environment variable names below are the single source of truth: `memstack env`
prints exactly these names, and the Kubernetes Deployment sets exactly these names.
The tuning fields after the connection fields take their env names from the field name
with the `MEMORY_` prefix (e.g. `MEMORY_EMBEDDING_DIM`); they are not connection settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

# The embedders memory_core.embeddings.make_embedder builds.
EmbeddingProvider = Literal["hashing", "sentence-transformers", "openai"]


def _tuning(default: Any, env: str, **kwargs: Any) -> Any:
    # Tuning fields accept both the bare field name and the MEMORY_-prefixed env var. Their
    # alias is an AliasChoices (not a str), which keeps them out of CONNECTION_ENV_VARS.
    return Field(default=default, validation_alias=AliasChoices(env, f"MEMORY_{env.upper()}"), **kwargs)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False, populate_by_name=True)

    redis_url: SecretStr = Field(default=SecretStr("redis://127.0.0.1:6379/0"), validation_alias="REDIS_URL")
    postgres_url: SecretStr = Field(
        default=SecretStr("postgresql://memstack@127.0.0.1:5432/memstack"), validation_alias="POSTGRES_URL"
    )
    neo4j_uri: str = Field(default="bolt://127.0.0.1:7687", validation_alias="NEO4J_URI")
    neo4j_user: str = Field(default="neo4j", validation_alias="NEO4J_USER")
    neo4j_password: SecretStr = Field(default=SecretStr(""), validation_alias="NEO4J_PASSWORD")
    prometheus_url: str | None = Field(default=None, validation_alias="PROMETHEUS_URL")

    # --- embeddings -------------------------------------------------------------------------
    embedding_dim: int = _tuning(384, "embedding_dim", ge=8, le=4096)
    # "hashing" (default, dependency-free), "sentence-transformers", or "openai".
    embedding_provider: EmbeddingProvider = _tuning("hashing", "embedding_provider")
    embedding_model: str = _tuning("all-MiniLM-L6-v2", "embedding_model")
    embedding_api_url: str | None = _tuning(None, "embedding_api_url")
    embedding_api_key: SecretStr | None = _tuning(None, "embedding_api_key")

    # --- pools ------------------------------------------------------------------------------
    postgres_pool_min: int = _tuning(1, "postgres_pool_min", ge=0)
    postgres_pool_max: int = _tuning(10, "postgres_pool_max", ge=1)
    neo4j_connect_timeout_s: float = _tuning(2.0, "neo4j_connect_timeout_s", gt=0)
    # A hung store (paused, or its network cut) fails the operation after about this long, well
    # inside the service's request deadline, so the answer is a quick 503 naming that store.
    # Redis: socket connect and read timeout of every command (blocking reads must block less).
    redis_timeout_s: float = _tuning(1.0, "redis_timeout_s", gt=0)
    # Postgres: libpq connect_timeout (whole seconds, libpq's minimum is 2) and tcp_user_timeout.
    postgres_connect_timeout_s: int = _tuning(2, "postgres_connect_timeout_s", ge=2)
    # After a failed Neo4j projection, skip inline projection for this long (the worker replays).
    neo4j_retry_after_s: float = _tuning(5.0, "neo4j_retry_after_s", ge=0)
    # Background projection (MEMSTACK_GRAPH_PROJECTION=background) waits this long for more
    # writes' rows before one Neo4j transaction applies them all: the graph lags by about this
    # much (no route reads the graph), and Neo4j's CPU per row falls as the batches grow (mixed
    # profile at 600 req/s: 40-55 us of Neo4j CPU per request at 0.2 s, 23-30 us at 1 s).
    graph_linger_s: float = _tuning(1.0, "graph_linger_s", ge=0, le=60)

    # --- working memory (Redis) -------------------------------------------------------------
    working_key_prefix: str = _tuning("mc", "working_key_prefix", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    working_max_turns: int = _tuning(50, "working_max_turns", ge=1)
    working_max_thoughts: int = _tuning(100, "working_max_thoughts", ge=1)
    working_max_context_keys: int = _tuning(256, "working_max_context_keys", ge=1)
    working_max_value_bytes: int = _tuning(65536, "working_max_value_bytes", ge=1)
    working_ttl_s: int = _tuning(3600, "working_ttl_s", ge=1)
    working_max_ttl_s: int = _tuning(7 * 86400, "working_max_ttl_s", ge=1)

    # --- limits on stored text ----------------------------------------------------------------
    max_text_chars: int = _tuning(1_048_576, "max_text_chars", ge=1)

    # --- retrieval --------------------------------------------------------------------------
    # Score of an item = weight of its kind * relevance; see memory_core.retrieval.
    weight_episodic: float = _tuning(0.30, "weight_episodic", ge=0)
    weight_facts: float = _tuning(0.25, "weight_facts", ge=0)
    weight_entities: float = _tuning(0.20, "weight_entities", ge=0)
    weight_procedural: float = _tuning(0.15, "weight_procedural", ge=0)
    weight_recency: float = _tuning(0.10, "weight_recency", ge=0)
    recency_half_life_h: float = _tuning(24.0, "recency_half_life_h", gt=0)
    max_turns_per_conversation: int = _tuning(3, "max_turns_per_conversation", ge=1)
    graph_max_depth: int = _tuning(2, "graph_max_depth", ge=0, le=2)
    graph_max_fanout: int = _tuning(10, "graph_max_fanout", ge=1)
    hnsw_ef_search: int = _tuning(100, "hnsw_ef_search", ge=1, le=1000)

    # --- consolidation worker ----------------------------------------------------------------
    reflection_stream: str = _tuning("mc:reflections", "reflection_stream")
    reflection_group: str = _tuning("memory-workers", "reflection_group")
    reflection_max_deliveries: int = _tuning(5, "reflection_max_deliveries", ge=1)
    reflection_stream_maxlen: int = _tuning(100_000, "reflection_stream_maxlen", ge=1)
    job_claim_idle_ms: int = _tuning(60_000, "job_claim_idle_ms", ge=1)
    outbox_batch: int = _tuning(500, "outbox_batch", ge=1)
    # Rows Neo4j rejected this many times stay in graph_outbox (with last_error) for an operator.
    outbox_max_attempts: int = _tuning(5, "outbox_max_attempts", ge=1)
    salience_decay_rate: float = _tuning(0.95, "salience_decay_rate", gt=0, le=1)
    episodic_retention_days: int = _tuning(90, "episodic_retention_days", ge=1)
    orphan_entity_salience: float = _tuning(0.1, "orphan_entity_salience", ge=0, le=1)
    orphan_entity_idle_days: int = _tuning(30, "orphan_entity_idle_days", ge=0)
    periodic_interval_s: float = _tuning(3600.0, "periodic_interval_s", gt=0)
    # The worker's /health, /ready and /metrics; the Kubernetes probes read this default too.
    worker_probe_port: int = _tuning(8081, "worker_probe_port", ge=1024, le=65535)


# The variables `memstack env` exports, in order. Derived from the model so that a renamed
# field cannot drift from what the CLI prints.
CONNECTION_ENV_VARS: tuple[str, ...] = tuple(
    f.validation_alias for f in Settings.model_fields.values() if isinstance(f.validation_alias, str)
)


def settings_error(exc: ValidationError) -> str:
    """The first problem of a failed `Settings()` as one line, named by its environment variable
    (the MEMORY_-prefixed one for tuning fields)."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    alias = Settings.model_fields[field].validation_alias if field in Settings.model_fields else None
    name = alias if isinstance(alias, str) else f"MEMORY_{field.upper()}"
    return f"{name}: {first['msg']}"
