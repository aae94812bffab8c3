"""What every memstack pod (service, worker, migration) is given: connection env and egress rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import pulumi

from infra import names
from infra.components.common import egress_to, peer, plain_env, secret_env, selector_labels
from infra.config import StackConfig, url_port
from infra.names import Endpoints

Store = Literal["redis", "postgres", "neo4j"]


@dataclass(frozen=True)
class AppWorkloadArgs:
    """Inputs of a workload that runs the memstack image after the schema migration."""

    cfg: StackConfig
    # The release that installs the prometheus-operator CRDs (its monitor needs them).
    monitoring_crds: pulumi.Resource
    # The schema migration Job; the workload starts only after it completed.
    migration: pulumi.Resource


ALL_STORES: tuple[Store, ...] = ("redis", "postgres", "neo4j")


def app_env(cfg: StackConfig, component: str, stores: Iterable[Store] = ALL_STORES) -> list[dict[str, Any]]:
    """Connection variables (credentials from the Secret, by reference), the embedder, OpenTelemetry."""
    env = cfg.memory_service.contract.env
    endpoints = Endpoints(cfg)
    wanted = set(stores)
    variables: list[dict[str, Any]] = []
    if "redis" in wanted:
        variables.append(secret_env(env.redis_url, names.SECRET_CONNECTIONS, env.redis_url))
    if "postgres" in wanted:
        variables.append(secret_env(env.postgres_url, names.SECRET_CONNECTIONS, env.postgres_url))
    if "neo4j" in wanted:
        variables += [
            plain_env(env.neo4j_uri, endpoints.neo4j_uri),
            plain_env(env.neo4j_user, "neo4j"),
            secret_env(env.neo4j_password, names.SECRET_CONNECTIONS, env.neo4j_password),
        ]
    return (
        variables
        + embedding_env(cfg)
        + [
            plain_env("OTEL_SERVICE_NAME", component),
            plain_env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoints.otlp_endpoint),
            plain_env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            plain_env("OTEL_RESOURCE_ATTRIBUTES", f"deployment.environment={cfg.environment}"),
        ]
    )


def embedding_env(cfg: StackConfig) -> list[dict[str, Any]]:
    """The embedder: every pod that writes or migrates vectors must use the same one."""
    env = cfg.memory_service.contract.env
    embeddings = cfg.embeddings
    variables = [
        plain_env(env.embedding_provider, embeddings.provider),
        plain_env(env.embedding_model, embeddings.model),
        plain_env(env.embedding_dim, str(embeddings.dimension)),
    ]
    if embeddings.api_url:
        variables.append(plain_env(env.embedding_api_url, embeddings.api_url))
    if cfg.embedding_api_key:
        variables.append(secret_env(env.embedding_api_key, names.SECRET_EMBEDDINGS, env.embedding_api_key))
    return variables


def app_egress(cfg: StackConfig, stores: Iterable[Store] = ALL_STORES) -> list[dict[str, Any]]:
    """Egress to the named stores and to the OTLP collector; DNS comes from the namespace policy."""
    targets = {
        "redis": (selector_labels(names.REDIS), names.REDIS_PORT),
        "postgres": (names.POSTGRES_POD_LABELS, names.POSTGRES_PORT),
        "neo4j": (names.NEO4J_POD_LABELS, names.NEO4J_BOLT_PORT),
    }
    rules = [egress_to([peer(targets[store][0])], [targets[store][1]]) for store in stores]
    collector = peer(names.JAEGER_POD_LABELS, cfg.observability.namespace)
    rules.append(egress_to([collector], [names.OTLP_GRPC_PORT, names.OTLP_HTTP_PORT]))
    if cfg.embeddings.api_url:
        # The embeddings endpoint is outside the cluster: its port, to any address.
        rules.append(egress_to([], [url_port(cfg.embeddings.api_url)]))
    return rules
