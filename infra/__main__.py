"""The memstack Pulumi program: read the stack's config, compose the components, export outputs.

Order on a fresh cluster: namespaces and guard rails -> Secrets -> CRDs -> operators and
charts -> custom resources and stores -> schema migration -> memory service and worker (and a
graph rebuild when asked for). A standby stack (a Postgres replica cluster following another
region) stops after Postgres: nothing may write until it is promoted.
"""

import sys
from pathlib import Path

# Pulumi puts infra/ on the path; the repository root makes `infra` and `memory_core` packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi

from infra.components.base import Base, BaseArgs
from infra.components.graph_rebuild import GraphRebuild, GraphRebuildArgs, rebuild_requested
from infra.components.loadtest import Loadtest, LoadtestArgs
from infra.components.memory_service import MemoryService, MemoryServiceArgs
from infra.components.metrics_server import MetricsServer, MetricsServerArgs
from infra.components.migrations import Migrations, MigrationsArgs
from infra.components.neo4j import Neo4j, Neo4jArgs
from infra.components.observability import Observability, ObservabilityArgs
from infra.components.postgres import Postgres, PostgresArgs
from infra.components.redis import Redis, RedisArgs
from infra.components.secrets import Secrets, SecretsArgs
from infra.components.worker import Worker, WorkerArgs
from infra.config import load_config
from infra.names import Endpoints


def after(*resources: pulumi.Resource) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(depends_on=list(resources))


def main() -> None:
    cfg = load_config()
    base = Base("base", BaseArgs(cfg))
    secrets = Secrets("secrets", SecretsArgs(cfg), after(base))
    observability = Observability("observability", ObservabilityArgs(cfg), after(base, secrets))
    crds = observability.crds

    if cfg.metrics_server.install:
        MetricsServer("metrics-server", MetricsServerArgs(cfg))
    postgres = Postgres("postgres", PostgresArgs(cfg, monitoring_crds=crds), after(base, secrets))

    endpoints = Endpoints(cfg)
    pulumi.export("environment", cfg.environment)
    pulumi.export("namespace", cfg.namespace)
    pulumi.export("standby", cfg.standby)
    pulumi.export("secretNames", {**secrets.names, **observability.secret_names})
    if cfg.standby:
        return

    neo4j = Neo4j("neo4j", Neo4jArgs(cfg, monitoring_crds=crds), after(base, secrets))
    redis = Redis("redis", RedisArgs(cfg, monitoring_crds=crds), after(base, secrets))

    migrations = Migrations("migrations", MigrationsArgs(cfg), after(secrets, postgres.cluster, *neo4j.releases))
    if rebuild_requested(cfg):
        GraphRebuild("graph-rebuild", GraphRebuildArgs(cfg, migration=migrations.job), after(secrets))
    stores_ready = after(secrets, redis.statefulset)
    service = MemoryService("memory-service", MemoryServiceArgs(cfg, crds, migration=migrations.job), stores_ready)
    Worker("worker", WorkerArgs(cfg, crds, migration=migrations.job), stores_ready)
    if cfg.loadtest.enabled:
        Loadtest("loadtest", LoadtestArgs(cfg, service=service.deployment), after(secrets))

    pulumi.export("memoryServiceUrl", endpoints.memory_service_url)
    pulumi.export("grafanaUrl", endpoints.grafana_url)
    pulumi.export("jaegerUrl", endpoints.jaeger_ui_url)
    pulumi.export("otlpEndpoint", endpoints.otlp_endpoint)


main()
