"""One typed model of every stack setting of the `memstack` Pulumi project.

Every key under the `memstack:` namespace of a stack file is read here and nowhere else.
An unknown key, a wrong type or an impossible combination raises `ConfigError`, whose
message is one line naming the key and what is allowed.

The memory service's contract (port, probe paths, metrics path, image, commands, the
environment variable names it reads) lives in `MemoryServiceContract`: the Deployment,
the Job, the probes and the NetworkPolicies all read it from here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from memory_core.settings import EmbeddingProvider, Settings
from memstack.local.redis_server import MAXMEMORY_POLICY

PROJECT = "memstack"
REPO_ROOT = Path(__file__).resolve().parent.parent
Environment = Literal["dev", "staging", "prod", "local"]
# Environments that serve real users: they refuse settings that only make sense on a laptop.
SHARED_ENVIRONMENTS = ("staging", "prod")
PullPolicy = Literal["Always", "IfNotPresent", "Never"]


class ConfigError(ValueError):
    """A stack setting is wrong. `str(error)` is one line: `memstack:<key>: <what is allowed>`."""


# --- value types -------------------------------------------------------------------------

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_QUANTITY_FACTORS = {
    None: 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def quantity_value(text: str) -> float:
    """The number a Kubernetes quantity stands for: cores for CPU, bytes for memory."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as 250m, 1, 512Mi or 2Gi")
    return float(match.group(1)) * _QUANTITY_FACTORS[match.group(2)]


def _check_quantity(text: str) -> str:
    quantity_value(text)
    return text


def _number_as_text(value: Any) -> Any:
    """`cpuLimit: 1` in a stack file arrives as a number; a quantity is text."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _check_dns_label(text: str) -> str:
    if not _DNS_LABEL.match(text):
        raise ValueError(f"{text!r} is not a DNS label (lowercase letters, digits and '-', at most 63)")
    return text


def _cron_checker(fields: int):
    def check(text: str) -> str:
        if len(text.split()) != fields:
            raise ValueError(f"{text!r} is not a cron schedule of {fields} fields")
        return text

    return check


Quantity = Annotated[str, BeforeValidator(_number_as_text), AfterValidator(_check_quantity)]
DnsLabel = Annotated[str, AfterValidator(_check_dns_label)]
# Kubernetes CronJobs take 5 fields; CloudNativePG's ScheduledBackup takes 6 (seconds first).
CronSchedule = Annotated[str, AfterValidator(_cron_checker(5))]
CnpgSchedule = Annotated[str, AfterValidator(_cron_checker(6))]
PositiveInt = Annotated[int, Field(ge=1)]
# A HorizontalPodAutoscaler's replica counts are int32.
Replicas = Annotated[int, Field(ge=1, le=2**31 - 1)]
Percent = Annotated[int, Field(ge=1, le=100)]


def camel_case(name: str) -> str:
    """`storage_class` -> `storageClass`; `neo4j` stays `neo4j`."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class Model(BaseModel):
    """Stack files spell keys in camelCase, like every Pulumi config key."""

    model_config = ConfigDict(extra="forbid", alias_generator=camel_case, populate_by_name=True, frozen=True)


class Image(Model):
    repository: str = Field(min_length=1)
    tag: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    # `sha256:<64 hex>`: the image is then pulled by digest, the tag kept for people.
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _pinned(self) -> Image:
        if self.tag == "latest":
            raise ValueError("tag: must be a pinned version, not 'latest'")
        return self

    @property
    def ref(self) -> str:
        pinned = f"@{self.digest}" if self.digest else ""
        return f"{self.repository}:{self.tag}{pinned}"


class Resources(Model):
    cpu_request: Quantity
    memory_request: Quantity
    cpu_limit: Quantity
    memory_limit: Quantity

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        if quantity_value(self.cpu_request) > quantity_value(self.cpu_limit):
            raise ValueError(f"cpuRequest: must be <= cpuLimit ({self.cpu_limit}), got {self.cpu_request}")
        if quantity_value(self.memory_request) > quantity_value(self.memory_limit):
            raise ValueError(f"memoryRequest: must be <= memoryLimit ({self.memory_limit}), got {self.memory_request}")
        return self

    def to_k8s(self) -> dict:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


def _resources(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> Resources:
    return Resources(
        cpu_request=cpu_request, memory_request=memory_request, cpu_limit=cpu_limit, memory_limit=memory_limit
    )


class ChartPin(Model):
    chart: str
    repository: str
    version: str = Field(min_length=1)
    # How long Helm waits for the release's objects to be ready (Helm's own default is 300 s,
    # which a first Neo4j or kube-prometheus-stack install on a cold cluster can exceed).
    timeout_seconds: Annotated[int, Field(ge=60, le=3600)] = 600


class Charts(Model):
    """Every Helm chart the kit installs, pinned. Stack files may override a version."""

    cloudnative_pg: ChartPin = ChartPin(
        chart="cloudnative-pg", repository="https://cloudnative-pg.github.io/charts", version="0.26.0"
    )
    barman_cloud_plugin: ChartPin = ChartPin(
        chart="plugin-barman-cloud", repository="https://cloudnative-pg.github.io/charts", version="0.5.0"
    )
    cert_manager: ChartPin = ChartPin(chart="cert-manager", repository="https://charts.jetstack.io", version="v1.16.2")
    # The Neo4j image version follows the chart version.
    neo4j: ChartPin = ChartPin(
        chart="neo4j", repository="https://helm.neo4j.com/neo4j", version="5.26.21", timeout_seconds=900
    )
    # The CRD chart and kube-prometheus-stack must carry the same prometheus-operator
    # release (v0.79.x for these two); bump them together.
    prometheus_operator_crds: ChartPin = ChartPin(
        chart="prometheus-operator-crds",
        repository="https://prometheus-community.github.io/helm-charts",
        version="17.0.2",
    )
    kube_prometheus_stack: ChartPin = ChartPin(
        chart="kube-prometheus-stack",
        repository="https://prometheus-community.github.io/helm-charts",
        version="67.8.0",
        timeout_seconds=900,
    )
    jaeger: ChartPin = ChartPin(
        chart="jaeger", repository="https://jaegertracing.github.io/helm-charts", version="4.11.1"
    )
    metrics_server: ChartPin = ChartPin(
        chart="metrics-server", repository="https://kubernetes-sigs.github.io/metrics-server/", version="3.12.2"
    )


# --- the memory service ---------------------------------------------------------------------


def settings_env(field: str) -> str:
    """The environment variable `memory_core.settings.Settings` reads `field` from.

    Connection fields have one name; tuning fields accept the bare field name and a
    `MEMORY_`-prefixed one, and pods get the prefixed one (it cannot collide with anything else).
    """
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, str):
        return alias
    return next(choice for choice in alias.choices if isinstance(choice, str) and choice.startswith("MEMORY_"))


def settings_default(field: str) -> Any:
    return Settings.model_fields[field].default


def settings_bound(field: str, bound: str) -> Any:
    return next(getattr(item, bound) for item in Settings.model_fields[field].metadata if hasattr(item, bound))


class ConnectionEnv(Model):
    """The names of the variables the pods receive, taken from `memory_core.settings`."""

    redis_url: str = settings_env("redis_url")
    postgres_url: str = settings_env("postgres_url")
    neo4j_uri: str = settings_env("neo4j_uri")
    neo4j_user: str = settings_env("neo4j_user")
    neo4j_password: str = settings_env("neo4j_password")
    embedding_provider: str = settings_env("embedding_provider")
    embedding_model: str = settings_env("embedding_model")
    embedding_dim: str = settings_env("embedding_dim")
    embedding_api_url: str = settings_env("embedding_api_url")
    embedding_api_key: str = settings_env("embedding_api_key")


class MemoryServiceContract(Model):
    """What the memory service image promises; the Dockerfile must agree with it."""

    port: int = Field(default=8080, ge=1024, le=65535)
    liveness_path: str = "/health"
    readiness_path: str = "/ready"
    metrics_path: str = "/metrics"
    run_as_user: int = Field(default=10001, ge=1)
    tokens_file_env: str = "MEMSTACK_TOKENS_FILE"
    tokens_mount_dir: str = "/etc/memstack/tokens"
    tokens_file_name: str = "tokens"
    # Neo4j is a projection that the outbox catches up: with it down the API still serves every
    # route, so a Neo4j crash must not take every API pod out of the Service.
    ready_requires_neo4j_env: str = "MEMSTACK_READY_REQUIRES_NEO4J"
    env: ConnectionEnv = ConnectionEnv()
    # The consolidation worker serves the same probe paths on its own port.
    worker_health_port: int = Field(
        default=settings_default("worker_probe_port"),
        ge=settings_bound("worker_probe_port", "ge"),
        le=settings_bound("worker_probe_port", "le"),
    )

    @property
    def serve_command(self) -> list[str]:
        return ["memstack", "serve", "--host", "0.0.0.0", "--port", str(self.port)]

    @property
    def worker_command(self) -> list[str]:
        return ["memstack", "worker", "--host", "0.0.0.0"]

    @property
    def migrate_command(self) -> list[str]:
        return ["memstack", "migrate"]

    @property
    def graph_rebuild_command(self) -> list[str]:
        """Re-project every Postgres row into Neo4j (POSTGRES_URL and NEO4J_* from the environment)."""
        return ["memstack", "graph", "rebuild"]

    @property
    def tokens_file(self) -> str:
        return f"{self.tokens_mount_dir}/{self.tokens_file_name}"


class ScalingPolicy(Model):
    percent: Percent
    pods: PositiveInt | None = None
    period_seconds: Annotated[int, Field(ge=1, le=1800)]
    stabilization_window_seconds: Annotated[int, Field(ge=0, le=3600)]


class Autoscaling(Model):
    """The default policy: 3 to 10 pods, CPU 70 %, memory 80 %; scale up fast, down slowly, so a
    burst is absorbed at once and a lull does not drop capacity the next burst needs."""

    min_replicas: Replicas = 3
    max_replicas: Replicas = 10
    cpu_utilization: Percent = 70
    memory_utilization: Percent = 80
    scale_up: ScalingPolicy = ScalingPolicy(percent=100, pods=4, period_seconds=15, stabilization_window_seconds=0)
    scale_down: ScalingPolicy = ScalingPolicy(percent=10, period_seconds=60, stabilization_window_seconds=300)

    @model_validator(mode="after")
    def _min_within_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas: must be <= maxReplicas ({self.max_replicas}), got {self.min_replicas}")
        return self


SpreadMode = Literal["DoNotSchedule", "ScheduleAnyway"]


class TopologySpread(Model):
    zone: SpreadMode = "ScheduleAnyway"
    hostname: SpreadMode = "ScheduleAnyway"


class MemoryService(Model):
    # Required outside `local`: no public registry publishes the memstack image, so every
    # shared stack names the one its CI pushed (`pulumi config set --path memoryService.image.tag`).
    image: Image | None = None
    contract: MemoryServiceContract = MemoryServiceContract()
    resources: Resources = _resources("250m", "256Mi", "1", "512Mi")
    autoscaling: Autoscaling = Autoscaling()
    pdb_max_unavailable: PositiveInt = 1
    topology_spread: TopologySpread = TopologySpread()
    client_label: str = "memstack.dev/memory-client"


class Worker(Model):
    replicas: PositiveInt = 1
    resources: Resources = _resources("100m", "128Mi", "500m", "256Mi")


class Migrations(Model):
    resources: Resources = _resources("100m", "128Mi", "500m", "256Mi")
    backoff_limit: Annotated[int, Field(ge=0, le=10)] = 4


# Models that the image's `embeddings` extra bakes in, with the dimension they produce.
BAKED_MODELS = {"all-MiniLM-L6-v2": 384}
# pgvector's HNSW index (the schema indexes every embedding column with it) takes at most 2000 dimensions.
HNSW_MAX_DIMENSIONS = 2000


class Embeddings(Model):
    """The embedder of the service, worker and migration pods (`memory_core.embeddings.make_embedder`)."""

    provider: EmbeddingProvider = settings_default("embedding_provider")
    model: str = Field(default=settings_default("embedding_model"), min_length=1)
    dimension: Annotated[
        int,
        Field(
            ge=settings_bound("embedding_dim", "ge"), le=min(settings_bound("embedding_dim", "le"), HNSW_MAX_DIMENSIONS)
        ),
    ] = settings_default("embedding_dim")
    # An OpenAI-compatible endpoint, e.g. https://api.openai.com/v1; its key is the secret `embeddingApiKey`.
    api_url: str | None = Field(default=None, pattern=r"^https?://\S+$")

    @model_validator(mode="after")
    def _provider_fits(self) -> Embeddings:
        if self.provider == "openai" and not self.api_url:
            raise ValueError("apiUrl: provider openai needs the endpoint's URL")
        if self.provider != "openai" and self.api_url:
            raise ValueError(f"apiUrl: only provider openai calls an endpoint, got provider {self.provider}")
        if self.provider == "sentence-transformers":
            if self.model not in BAKED_MODELS:
                raise ValueError(f"model: the image bakes in {', '.join(sorted(BAKED_MODELS))}, not {self.model!r}")
            if self.dimension != BAKED_MODELS[self.model]:
                raise ValueError(
                    f"dimension: {self.model} produces {BAKED_MODELS[self.model]}-dimensional vectors,"
                    f" got {self.dimension}"
                )
        return self


# --- the stores ---------------------------------------------------------------------------


class ObjectStore(Model):
    """Where Barman Cloud sends base backups and WAL (S3 or S3-compatible)."""

    destination_path: str = Field(pattern=r"^(s3|gs|https?)://.+")
    endpoint_url: str | None = None
    # Name of a Secret (created outside the kit) with keys ACCESS_KEY_ID and ACCESS_SECRET_KEY.
    credentials_secret: DnsLabel | None = None
    inherit_from_iam_role: bool = False
    retention_policy: str = Field(default="30d", pattern=r"^[1-9]\d*[dwm]$")

    @model_validator(mode="after")
    def _one_credential_source(self) -> ObjectStore:
        if (self.credentials_secret is None) == (not self.inherit_from_iam_role):
            raise ValueError("credentialsSecret: set exactly one of credentialsSecret or inheritFromIamRole=true")
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"endpointUrl: must be an http(s) URL with a host, got {self.endpoint_url!r}")
            try:
                url_port(self.endpoint_url)
            except ValueError:
                raise ValueError(f"endpointUrl: has an invalid port, got {self.endpoint_url!r}") from None
        return self

    @property
    def egress_port(self) -> int:
        """The TCP port Barman Cloud connects to: the endpoint's, or HTTPS for the cloud's own."""
        return 443 if self.endpoint_url is None else url_port(self.endpoint_url)


class PostgresBackup(Model):
    schedule: CnpgSchedule = "0 0 3 * * *"
    object_store: ObjectStore | None = None
    # The folder under destinationPath this cluster archives into. A restored cluster takes a
    # new one, so that it never writes into the WAL history it was restored from.
    server_name: DnsLabel = "memstack-pg"
    # The Barman Cloud sidecar in every instance pod (without it, the namespace default applies).
    sidecar_resources: Resources = _resources("50m", "128Mi", "500m", "256Mi")


def _check_instant(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as 2026-12-01T10:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; write it in UTC, e.g. 2026-12-01T10:00:00Z")
    return text


Instant = Annotated[str, AfterValidator(_check_instant)]


class PostgresSource(Model):
    """A cluster's backups in an object store: where a restore or a replica reads from."""

    server_name: DnsLabel
    # Unset: the object store of `postgres.backup`.
    object_store: ObjectStore | None = None


class PostgresRestore(PostgresSource):
    # Point-in-time recovery; unset: replay every archived WAL.
    target_time: Instant | None = None


class PostgresReplica(PostgresSource):
    """A CloudNativePG replica cluster that follows another cluster's object store (another region)."""

    # false promotes the replica cluster to a primary (the disaster-recovery switch-over).
    enabled: bool = True


class Postgres(Model):
    instances: PositiveInt = 3
    image: Image = Image(repository="ghcr.io/cloudnative-pg/postgresql", tag="17.5-standard-bookworm")
    storage_size: Quantity = "20Gi"
    resources: Resources = _resources("500m", "1Gi", "2", "2Gi")
    database: DnsLabel = "memstack"
    owner: DnsLabel = "memstack"
    operator_namespace: DnsLabel = "cnpg-system"
    backup: PostgresBackup = PostgresBackup()
    # The dimension of the schema's vector columns, fixed by the first migration: the embedder
    # must produce exactly this many (a new dimension needs a new database).
    vector_dimension: int = settings_default("embedding_dim")
    restore: PostgresRestore | None = None
    replica: PostgresReplica | None = None

    @model_validator(mode="after")
    def _one_bootstrap(self) -> Postgres:
        if self.restore is not None and self.replica is not None:
            raise ValueError("restore: a cluster is bootstrapped from a restore or as a replica, not both")
        for source_key, source in (("restore", self.restore), ("replica", self.replica)):
            if source is None:
                continue
            store = source.object_store or self.backup.object_store
            if store is None:
                raise ValueError(f"{source_key}.objectStore: set it, or postgres.backup.objectStore, to read from")
            same_path = self.backup.object_store is not None and (
                store.destination_path == self.backup.object_store.destination_path
            )
            if same_path and source.server_name == self.backup.server_name:
                raise ValueError(
                    f"backup.serverName: must differ from {source_key}.serverName ({source.server_name}), so that"
                    " this cluster never archives into the WAL history it reads from"
                )
        return self

    def source_store(self, source: PostgresSource) -> ObjectStore:
        store = source.object_store or self.backup.object_store
        assert store is not None  # checked by _one_bootstrap
        return store


class StoreBackup(Model):
    enabled: bool = False
    schedule: CronSchedule = "30 3 * * *"
    storage_size: Quantity = "20Gi"
    retain_days: PositiveInt = 7
    resources: Resources = _resources("100m", "256Mi", "1", "1Gi")


class Neo4jRebuild(Model):
    """Rebuild the graph from Postgres, its source of truth (after a restore, or on demand)."""

    enabled: bool = False
    # Change it to run the rebuild again: the Job is replaced and runs once more.
    run_id: str = Field(default="1", pattern=r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
    resources: Resources = _resources("100m", "256Mi", "1", "512Mi")
    active_deadline_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600


class RedisRestore(Model):
    """Start Redis from one snapshot of the snapshot volume (a file name such as dump-20261201T030000.rdb)."""

    snapshot: str = Field(pattern=r"^dump-[0-9T]+\.rdb$")


class Neo4j(Model):
    edition: Literal["community", "enterprise"] = "community"
    servers: PositiveInt = 1
    accept_license_agreement: bool = False
    # The chart's minimum is 0.5 CPU and 2Gi; it sets requests from these values.
    resources: Resources = _resources("500m", "2Gi", "1", "2Gi")
    storage_size: Quantity = "20Gi"
    # Online backups: enterprise only. Community edition has no online backup; the graph is a
    # projection of Postgres and is rebuilt from it (`rebuild`).
    backup: StoreBackup = StoreBackup()
    rebuild: Neo4jRebuild = Neo4jRebuild()
    admin_image: Image = Image(repository="neo4j", tag="5.26.21-enterprise")

    @model_validator(mode="after")
    def _edition_fits(self) -> Neo4j:
        if self.edition == "community" and self.servers != 1:
            raise ValueError(f"servers: community edition runs exactly 1 server, got {self.servers}")
        if self.edition == "community" and self.backup.enabled:
            raise ValueError(
                "backup.enabled: community edition has no online backup; the graph is rebuilt from Postgres"
                " (neo4j.rebuild), or use the enterprise edition"
            )
        if self.edition == "enterprise" and not self.accept_license_agreement:
            raise ValueError("acceptLicenseAgreement: enterprise edition requires true (a Neo4j licence)")
        if self.edition == "enterprise" and self.servers == 2:
            raise ValueError("servers: an enterprise cluster needs 1 or at least 3 servers, got 2")
        return self


MaxMemoryPolicy = Literal[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]


class Redis(Model):
    image: Image = Image(repository="redis", tag="7.4.2")
    exporter_image: Image = Image(repository="oliver006/redis_exporter", tag="v1.67.0")
    resources: Resources = _resources("100m", "256Mi", "1", "512Mi")
    exporter_resources: Resources = _resources("20m", "32Mi", "100m", "64Mi")
    storage_size: Quantity = "5Gi"
    max_memory: Quantity = "384Mi"
    # As on the local stack: a full Redis refuses writes (the service answers 503) rather than
    # evicting working memory it acknowledged; every working-memory key has a TTL, so even a
    # volatile-* policy would drop them. The RedisMemoryNearMax alert warns before it is full.
    max_memory_policy: MaxMemoryPolicy = MAXMEMORY_POLICY
    # A PDB with minAvailable 1 makes a node drain wait for an operator on the single primary.
    block_voluntary_eviction: bool = False
    snapshot: StoreBackup = StoreBackup()
    restore: RedisRestore | None = None

    @model_validator(mode="after")
    def _max_memory_fits(self) -> Redis:
        if quantity_value(self.max_memory) >= quantity_value(self.resources.memory_limit):
            raise ValueError(
                f"maxMemory: must be below resources.memoryLimit ({self.resources.memory_limit}), got {self.max_memory}"
            )
        if self.restore is not None and not self.snapshot.enabled:
            raise ValueError("restore: snapshots live on the snapshot volume; it needs snapshot.enabled true")
        return self


# --- platform -----------------------------------------------------------------------------

Severity = Literal["page", "ticket"]


class AlertReceiver(Model):
    """Where alerts of some severities go; its URL (or PagerDuty routing key) is the secret
    `alertReceiverSecrets.<name>`, never a stack-file value."""

    name: DnsLabel
    kind: Literal["webhook", "slack", "pagerduty"]
    severities: list[Severity] = Field(min_length=1)
    # Slack only: the channel the webhook posts to (the webhook's own default if unset).
    channel: str | None = None

    @model_validator(mode="after")
    def _channel_for_slack(self) -> AlertReceiver:
        if self.channel is not None and self.kind != "slack":
            raise ValueError(f"channel: only a slack receiver has a channel, got kind {self.kind}")
        return self


class Observability(Model):
    namespace: DnsLabel = "monitoring"
    prometheus_retention: str = Field(default="7d", pattern=r"^\d+[hdwy]$")
    prometheus_storage_size: Quantity = "20Gi"
    prometheus_resources: Resources = _resources("250m", "1Gi", "1", "2Gi")
    grafana_resources: Resources = _resources("100m", "128Mi", "500m", "256Mi")
    alertmanager_enabled: bool = True
    alert_receivers: list[AlertReceiver] = []
    jaeger_max_traces: PositiveInt = 100000
    jaeger_resources: Resources = _resources("100m", "256Mi", "500m", "1Gi")

    @model_validator(mode="after")
    def _receivers_fit(self) -> Observability:
        names = [receiver.name for receiver in self.alert_receivers]
        if len(set(names)) != len(names):
            raise ValueError(f"alertReceivers: names must be unique, got {', '.join(names)}")
        return self


class Quota(Model):
    requests_cpu: Quantity = "16"
    requests_memory: Quantity = "32Gi"
    limits_cpu: Quantity = "32"
    limits_memory: Quantity = "64Gi"
    pods: PositiveInt = 100
    # What a container that names no resources gets (chart internals, mostly).
    default_container: Resources = _resources("100m", "128Mi", "500m", "512Mi")


class CertManager(Model):
    # The Barman Cloud plugin needs cert-manager; clusters that already run it set false.
    install: bool = True
    namespace: DnsLabel = "cert-manager"


class MetricsServer(Model):
    """metrics-server, which the HPA reads CPU and memory from; managed clusters bring their own."""

    install: bool = False
    # kind's and k3d's kubelets serve self-signed certificates.
    kubelet_insecure_tls: bool = True
    resources: Resources = _resources("50m", "64Mi", "250m", "128Mi")


class Loadtest(Model):
    """Locust from inside the cluster against the deployed service: a master Job and N workers.

    It runs the repository's `loadtests/` profile with its SLO gate; the master exits non-zero on
    a miss, so `pulumi up` fails, which is how CI gates a staging environment. The image must
    carry Locust and `loadtests/` (`docker build --build-arg EXTRAS=load`).
    """

    enabled: bool = False
    # Unset: the memstack image the service runs.
    image: Image | None = None
    profile: Literal["mixed", "working"] = "mixed"
    workers: Annotated[int, Field(ge=1, le=100)] = 2
    users: PositiveInt = 100
    spawn_rate: PositiveInt = 20
    # Total requests/s over all users; 0 = as fast as the users go.
    rate: Annotated[float, Field(ge=0)] = 0
    run_time: str = Field(default="5m", pattern=r"^\d+[smh]$")
    warmup_seconds: Annotated[int, Field(ge=0)] = 15
    # Change it to run the load test again.
    run_id: str = Field(default="1", pattern=r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
    master_resources: Resources = _resources("200m", "256Mi", "1", "512Mi")
    worker_resources: Resources = _resources("500m", "256Mi", "1", "512Mi")


class StackConfig(Model):
    environment: Environment
    namespace: DnsLabel = "memstack"
    storage_class: str | None = None
    # Relative paths are taken from the repository root. Every *.json dashboard in the first
    # becomes a Grafana ConfigMap; every *.yaml rule file directly in the second a PrometheusRule.
    dashboards_dir: str = "dashboards/generated"
    alerts_dir: str = "dashboards/alerts"
    # Contents of the bearer-token hash file that `memstack token create` writes; set it with
    # `pulumi config set --secret apiTokenHashes "$(cat "$MEMSTACK_HOME/tokens")"`. Empty: no token is accepted.
    api_token_hashes: str = ""
    # Secret: the key of the OpenAI-compatible embeddings endpoint.
    embedding_api_key: str = ""
    # Secret: {receiver name: webhook URL, Slack webhook URL or PagerDuty routing key}.
    alert_receiver_secrets: dict[str, str] = {}
    # Unset: Always where images come from a registry, IfNotPresent on `local` (images loaded into kind).
    image_pull_policy: PullPolicy | None = None
    charts: Charts = Charts()
    memory_service: MemoryService = MemoryService()
    embeddings: Embeddings = Embeddings()
    worker: Worker = Worker()
    migrations: Migrations = Migrations()
    postgres: Postgres = Postgres()
    neo4j: Neo4j = Neo4j()
    redis: Redis = Redis()
    observability: Observability = Observability()
    quota: Quota = Quota()
    cert_manager: CertManager = CertManager()
    metrics_server: MetricsServer = MetricsServer()
    loadtest: Loadtest = Loadtest()
    # Secret: lines `<tenant> <token>` the load test authenticates with (their hashes must be in apiTokenHashes).
    loadtest_tokens: str = ""

    @model_validator(mode="after")
    def _deployable(self) -> StackConfig:
        if self.memory_service.image is None and self.environment != "local":
            raise ValueError(
                f"memoryService.image: required on {self.environment}: the {{repository, tag}} your CI pushed"
                " (`pulumi config set --path memoryService.image.repository ...` and `.tag`)"
            )
        if self.embeddings.dimension != self.postgres.vector_dimension:
            raise ValueError(
                f"embeddings.dimension: must equal postgres.vectorDimension ({self.postgres.vector_dimension}),"
                f" the dimension of the schema's vector columns, got {self.embeddings.dimension}"
            )
        missing = sorted({r.name for r in self.observability.alert_receivers} - set(self.alert_receiver_secrets))
        if missing:
            raise ValueError(
                f"alertReceiverSecrets: no secret for receiver {', '.join(missing)}"
                ' (`pulumi config set --secret alertReceiverSecrets \'{"<name>": "<url>"}\'`)'
            )
        if self.metrics_server.install and self.environment not in ("local", "dev"):
            raise ValueError(
                f"metricsServer.install: only for local and dev clusters; {self.environment} clusters bring their own"
            )
        if self.loadtest.enabled and not self.loadtest_tokens.strip():
            raise ValueError(
                'loadtestTokens: the load test needs tokens (`pulumi config set --secret loadtestTokens "$(cat f)"`,'
                " lines `<tenant> <token>`)"
            )
        if self.environment in SHARED_ENVIRONMENTS:
            if self.embeddings.provider == "hashing":
                raise ValueError(
                    f"embeddings.provider: {self.environment} refuses the hashing embedder (not a semantic model);"
                    " use sentence-transformers or openai"
                )
            if not self.api_token_hashes.strip():
                raise ValueError(
                    f"apiTokenHashes: {self.environment} requires at least one token hash, or every request gets 401"
                    ' (`pulumi config set --secret apiTokenHashes "$(cat "$MEMSTACK_HOME/tokens")"`)'
                )
        return self

    @model_validator(mode="after")
    def _production_is_durable(self) -> StackConfig:
        if self.environment != "prod":
            return self
        if self.postgres.backup.object_store is None:
            raise ValueError("postgres.backup.objectStore: prod requires an object store for Postgres backups")
        if self.neo4j.edition == "enterprise" and not self.neo4j.backup.enabled:
            raise ValueError("neo4j.backup.enabled: prod requires true for the enterprise edition")
        if self.observability.alertmanager_enabled and not self.observability.alert_receivers:
            raise ValueError(
                "observability.alertReceivers: prod runs Alertmanager, which needs at least one receiver"
                " (or set alertmanagerEnabled false)"
            )
        if not self.redis.snapshot.enabled:
            raise ValueError("redis.snapshot.enabled: prod requires true")
        if self.postgres.instances < 3:
            raise ValueError(f"postgres.instances: prod requires at least 3, got {self.postgres.instances}")
        if self.memory_service.autoscaling.min_replicas < 3:
            raise ValueError(
                "memoryService.autoscaling.minReplicas: prod requires at least 3,"
                f" got {self.memory_service.autoscaling.min_replicas}"
            )
        return self

    @property
    def dashboards_path(self) -> Path:
        return _from_repo_root(self.dashboards_dir)

    @property
    def alerts_path(self) -> Path:
        return _from_repo_root(self.alerts_dir)

    @property
    def pull_policy(self) -> str:
        if self.image_pull_policy is not None:
            return self.image_pull_policy
        return "IfNotPresent" if self.environment == "local" else "Always"

    @property
    def memstack_image(self) -> Image:
        """The image of the service, worker and migration pods (`local`: the one loaded into kind)."""
        return self.memory_service.image or LOCAL_IMAGE

    @property
    def standby(self) -> bool:
        """A replica stack: Postgres follows another region; nothing writes until it is promoted."""
        return self.postgres.replica is not None and self.postgres.replica.enabled

    @property
    def backups_to_object_store(self) -> bool:
        return self.postgres.backup.object_store is not None


def url_port(url: str) -> int:
    """The TCP port an http(s) URL connects to."""
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _from_repo_root(text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else REPO_ROOT / path


# `docker build -t memstack:0.1.0 . && kind load docker-image memstack:0.1.0`
LOCAL_IMAGE = Image(repository="memstack", tag="0.1.0")


# --- reading and reporting ----------------------------------------------------------------


def _decode(value: Any) -> Any:
    """The CLI hands every top-level value over as a string; objects arrive as JSON text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def raw_project_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `memstack:*` keys of a flat Pulumi config map, without the namespace."""
    prefix = f"{PROJECT}:"
    return {key[len(prefix) :]: _decode(value) for key, value in config.items() if key.startswith(prefix)}


def pulumi_config_map() -> dict[str, Any]:
    """Every config key the Pulumi runtime was handed (by the CLI, or set by tests)."""
    from pulumi.runtime import config as runtime_config

    merged = dict(runtime_config.get_config_env())
    merged.update(runtime_config.CONFIG.get())
    return merged


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: Any = StackConfig
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            return None
        annotation = field.annotation
        for arg in getattr(annotation, "__args__", ()) or ():
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                annotation = arg
        model = annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = sorted(f.alias or n for n, f in parent.model_fields.items()) if parent else []
        return f"{'.'.join(loc)}: unknown key; allowed keys here: {', '.join(allowed)}"
    if kind == "missing":
        return f"{'.'.join(loc)}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    head, sep, rest = message.partition(": ")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9.]*", head):
        loc, message = loc + (head,), rest
    if kind not in ("value_error", "assertion_error"):
        message = f"{message} (got {error.get('input')!r})"
    return f"{'.'.join(loc)}: {message}"


def load_config(raw: Mapping[str, Any] | None = None) -> StackConfig:
    """Validate the stack's `memstack:*` settings (from the Pulumi runtime unless given)."""
    values = raw_project_config(pulumi_config_map()) if raw is None else dict(raw)
    try:
        return StackConfig.model_validate(values)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(errors[0])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{PROJECT}:{first}{more}") from None
