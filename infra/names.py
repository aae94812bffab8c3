"""Names of the objects the kit creates, and the in-cluster addresses they answer on.

Components, the connection Secret and the stack outputs all derive names and URLs from
here, so a renamed Service cannot leave a stale URL behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import StackConfig

PART_OF = "memstack"

MEMORY_SERVICE = "memstack-api"
WORKER = "memstack-worker"
MIGRATIONS = "memstack-migrate"
REDIS = "memstack-redis"
REDIS_SNAPSHOT = "memstack-redis-snapshot"
POSTGRES_CLUSTER = "memstack-pg"
POSTGRES_OBJECT_STORE = "memstack-pg-store"
# The object store a restore or a replica reads from, when it is not the one backups go to.
POSTGRES_SOURCE_STORE = "memstack-pg-source-store"
NEO4J = "memstack-neo4j"
NEO4J_BACKUP = "memstack-neo4j-backup"
NEO4J_REBUILD = "memstack-neo4j-rebuild"
METRICS_SERVER_RELEASE = "metrics-server"
LOADTEST = "memstack-loadtest"

CNPG_RELEASE = "cnpg"
BARMAN_PLUGIN_RELEASE = "barman-cloud"
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
CERT_MANAGER_RELEASE = "cert-manager"
PROMETHEUS_CRDS_RELEASE = "prometheus-operator-crds"
KUBE_PROMETHEUS_RELEASE = "kube-prometheus-stack"
KUBE_PROMETHEUS_FULLNAME = "kps"
GRAFANA = "kps-grafana"
JAEGER = "jaeger"

SECRET_CONNECTIONS = "memstack-connections"
SECRET_REDIS = "memstack-redis-auth"
SECRET_POSTGRES_APP = "memstack-postgres-app"
SECRET_NEO4J_AUTH = "memstack-neo4j-auth"
SECRET_API_TOKENS = "memstack-api-tokens"
SECRET_GRAFANA_ADMIN = "memstack-grafana-admin"
SECRET_EMBEDDINGS = "memstack-embeddings"
SECRET_ALERTMANAGER = "memstack-alertmanager"

REDIS_PORT = 6379
REDIS_EXPORTER_PORT = 9121
POSTGRES_PORT = 5432
POSTGRES_METRICS_PORT = 9187
CNPG_STATUS_PORT = 8000
NEO4J_BOLT_PORT = 7687
NEO4J_HTTP_PORT = 7474
NEO4J_BACKUP_PORT = 6362
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318
JAEGER_UI_PORT = 16686
GRAFANA_PORT = 80
SERVICE_PORT = 80

# Labels that the charts and the operator put on the pods they run (used by NetworkPolicies).
POSTGRES_POD_LABELS = {"cnpg.io/cluster": POSTGRES_CLUSTER}
NEO4J_POD_LABELS = {"app": NEO4J}
JAEGER_POD_LABELS = {"app.kubernetes.io/name": JAEGER, "app.kubernetes.io/component": "all-in-one"}


def service_host(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def neo4j_release_names(cfg: StackConfig) -> list[str]:
    """One Helm release per Neo4j server: the chart installs one server per release."""
    if cfg.neo4j.servers == 1:
        return [NEO4J]
    return [f"{NEO4J}-{index}" for index in range(1, cfg.neo4j.servers + 1)]


@dataclass(frozen=True)
class Endpoints:
    """Where each part of the stack answers, inside the cluster."""

    cfg: StackConfig

    @property
    def redis_host(self) -> str:
        return service_host(REDIS, self.cfg.namespace)

    @property
    def postgres_host(self) -> str:
        return service_host(f"{POSTGRES_CLUSTER}-rw", self.cfg.namespace)

    @property
    def neo4j_uri(self) -> str:
        if self.cfg.neo4j.servers == 1:
            return f"bolt://{service_host(NEO4J, self.cfg.namespace)}:{NEO4J_BOLT_PORT}"
        # The chart's load-balancer Service spans every server of the cluster; neo4j:// routes.
        return f"neo4j://{service_host(f'{NEO4J}-lb-neo4j', self.cfg.namespace)}:{NEO4J_BOLT_PORT}"

    @property
    def otlp_endpoint(self) -> str:
        return f"http://{service_host(JAEGER, self.cfg.observability.namespace)}:{OTLP_GRPC_PORT}"

    @property
    def memory_service_url(self) -> str:
        return f"http://{service_host(MEMORY_SERVICE, self.cfg.namespace)}:{SERVICE_PORT}"

    @property
    def grafana_url(self) -> str:
        return f"http://{service_host(GRAFANA, self.cfg.observability.namespace)}:{GRAFANA_PORT}"

    @property
    def jaeger_ui_url(self) -> str:
        return f"http://{service_host(JAEGER, self.cfg.observability.namespace)}:{JAEGER_UI_PORT}"
