"""Settings of the service process itself (the stores are configured by memory_core.Settings).

Environment names carry the MEMSTACK_ prefix: MEMSTACK_TOKENS_FILE (the name the Kubernetes
Deployment sets, checked against infra's contract by a test), MEMSTACK_TOKENS, MEMSTACK_MAX_BODY_BYTES, MEMSTACK_GRAPH_PROJECTION...
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEMSTACK_", extra="ignore", case_sensitive=False)

    # Token hash lines as `memstack token create` writes them, from a file or the variable itself.
    tokens_file: Path | None = None
    tokens: SecretStr | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_top_k: int = Field(100, ge=1, le=1000)
    max_list_limit: int = Field(1000, ge=1)
    # A backend call that takes longer than this answers 503 naming the store.
    request_timeout_s: float = Field(10.0, gt=0)
    ready_timeout_s: float = Field(1.0, gt=0)
    # /ready fails when Neo4j is down, so that a pod in rotation can answer every route in full
    # (recall expands through the graph projection). False keeps pods in rotation while only the
    # graph is down, since working memory and episodic writes keep working then.
    ready_requires_neo4j: bool = True
    graceful_shutdown_s: float = Field(25.0, ge=0)
    # Where durable writes reach the Neo4j projection (every route reads Postgres, never the
    # graph, so a caller reads its own writes whichever is chosen). `inline`: after the Postgres
    # commit, inside the request (the graph is current when the answer leaves; a write costs a
    # Neo4j transaction and a second Postgres one). `background`: this process projects the
    # rows once the request has answered, many writes' rows per Neo4j transaction (the graph
    # lags by MEMORY_GRAPH_LINGER_S, 1 s by default; memstack_graph_projection_lag_seconds).
    # `worker`: only the worker's outbox replay projects (the graph lags by the worker's loop;
    # no Neo4j work here at all).
    # In every mode the worker replays what could not be projected (Neo4j down, a crash).
    graph_projection: Literal["inline", "background", "worker"] = "background"
