"""Postgres with pgvector: the CloudNativePG operator, a `Cluster`, backups to an object store.

Order: operator chart (it brings the CRDs and the webhook) -> Barman Cloud plugin and its
`ObjectStore`s (only when an object store is configured) -> `Cluster` -> `ScheduledBackup`.

A cluster starts empty (`initdb`), from a restore (`postgres.restore`: `bootstrap.recovery`
from the object store, optionally to a point in time) or as a replica cluster that follows
another region's object store (`postgres.replica`). It archives under `postgres.backup.serverName`,
which a restored cluster changes, so it never writes into the WAL history it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import names
from infra.components.common import (
    Component,
    egress_to,
    helm_release,
    ingress_from,
    metadata,
    monitor,
    namespace,
    network_policy,
    peer,
    selector_labels,
)
from infra.config import ObjectStore, StackConfig, quantity_value
from memstack.local.postgres_server import tuned_parameters

COMPONENT = "memstack-postgres"
API_SERVER_PORTS = (443, 6443)
BARMAN_PLUGIN_PORT = 9090
DATABASE_CLIENTS = (names.MEMORY_SERVICE, names.WORKER, names.MIGRATIONS, names.NEO4J_REBUILD)
# The `externalClusters` entry a restore or a replica cluster reads from.
SOURCE_CLUSTER = "origin"


@dataclass(frozen=True)
class PostgresArgs:
    cfg: StackConfig
    # The release that installs the prometheus-operator CRDs (PodMonitor).
    monitoring_crds: pulumi.Resource


class Postgres(Component):
    def __init__(self, name: str, args: PostgresArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Postgres", name, opts)
        cfg = args.cfg
        pg = cfg.postgres
        store = pg.backup.object_store

        operator_ns = namespace(pg.operator_namespace, cfg, self)
        self.operator = helm_release(
            "cloudnative-pg",
            cfg.charts.cloudnative_pg,
            release_name=names.CNPG_RELEASE,
            namespace=pg.operator_namespace,
            values={"monitoring": {"podMonitorEnabled": True}, "config": {"clusterWide": True}},
            parent=self,
            depends_on=[operator_ns, args.monitoring_crds],
        )
        cluster_deps: list[pulumi.Resource] = [self.operator]
        source = pg.restore or pg.replica
        if store is not None or source is not None:
            plugin = self._barman_plugin(cfg, operator_ns)
            if store is not None:
                self.object_store = self._object_store(cfg, names.POSTGRES_OBJECT_STORE, store, plugin)
                cluster_deps.append(self.object_store)
            if source is not None and source.object_store is not None:
                cluster_deps.append(self._object_store(cfg, names.POSTGRES_SOURCE_STORE, source.object_store, plugin))

        self.cluster = k8s.apiextensions.CustomResource(
            names.POSTGRES_CLUSTER,
            api_version="postgresql.cnpg.io/v1",
            kind="Cluster",
            # Pulumi waits for the operator to report the cluster Ready before dependents start.
            metadata=metadata(
                names.POSTGRES_CLUSTER,
                cfg.namespace,
                COMPONENT,
                cfg,
                annotations={"pulumi.com/waitFor": "condition=Ready"},
            ),
            spec=self._cluster_spec(cfg),
            opts=self.child_opts(*cluster_deps),
        )
        if store is not None and not cfg.standby:
            self.scheduled_backup = k8s.apiextensions.CustomResource(
                f"{names.POSTGRES_CLUSTER}-daily",
                api_version="postgresql.cnpg.io/v1",
                kind="ScheduledBackup",
                metadata=metadata(f"{names.POSTGRES_CLUSTER}-daily", cfg.namespace, COMPONENT, cfg),
                spec={
                    "schedule": pg.backup.schedule,
                    "immediate": True,
                    "backupOwnerReference": "self",
                    "cluster": {"name": names.POSTGRES_CLUSTER},
                    "method": "plugin",
                    "pluginConfiguration": {"name": names.BARMAN_PLUGIN},
                },
                opts=self.child_opts(self.cluster),
            )
        self.pod_monitor = monitor(
            "PodMonitor",
            names.POSTGRES_CLUSTER,
            cfg.namespace,
            cfg,
            self,
            pod_labels=names.POSTGRES_POD_LABELS,
            port="metrics",
            path="/metrics",
            crds=args.monitoring_crds,
        )
        self._network_policy(cfg)
        self.register_outputs({"cluster": names.POSTGRES_CLUSTER, "backups": store is not None})

    def _barman_plugin(self, cfg: StackConfig, operator_ns: pulumi.Resource) -> pulumi.Resource:
        """The Barman Cloud plugin; it needs cert-manager for its TLS."""
        plugin_deps: list[pulumi.Resource] = [self.operator]
        if cfg.cert_manager.install:
            cert_manager_ns = namespace(cfg.cert_manager.namespace, cfg, self)
            plugin_deps.append(
                helm_release(
                    "cert-manager",
                    cfg.charts.cert_manager,
                    release_name=names.CERT_MANAGER_RELEASE,
                    namespace=cfg.cert_manager.namespace,
                    values={"crds": {"enabled": True}},
                    parent=self,
                    depends_on=[cert_manager_ns],
                )
            )
        # The plugin must live in the operator's namespace.
        return helm_release(
            "barman-cloud-plugin",
            cfg.charts.barman_cloud_plugin,
            release_name=names.BARMAN_PLUGIN_RELEASE,
            namespace=cfg.postgres.operator_namespace,
            values={},
            parent=self,
            depends_on=[operator_ns, *plugin_deps],
        )

    def _object_store(
        self,
        cfg: StackConfig,
        name: str,
        store: ObjectStore,
        plugin: pulumi.Resource,
    ) -> pulumi.Resource:
        """An `ObjectStore` the plugin reads: where base backups and WAL are, and how to reach it."""
        if store.inherit_from_iam_role:
            credentials: dict[str, Any] = {"inheritFromIAMRole": True}
        else:
            credentials = {
                "accessKeyId": {"name": store.credentials_secret, "key": "ACCESS_KEY_ID"},
                "secretAccessKey": {"name": store.credentials_secret, "key": "ACCESS_SECRET_KEY"},
            }
        configuration: dict[str, Any] = {
            "destinationPath": store.destination_path,
            "s3Credentials": credentials,
            "wal": {"compression": "gzip"},
            "data": {"compression": "gzip"},
        }
        if store.endpoint_url:
            configuration["endpointURL"] = store.endpoint_url
        return k8s.apiextensions.CustomResource(
            name,
            api_version="barmancloud.cnpg.io/v1",
            kind="ObjectStore",
            metadata=metadata(name, cfg.namespace, COMPONENT, cfg),
            spec={
                "retentionPolicy": store.retention_policy,
                "configuration": configuration,
                "instanceSidecarConfiguration": {"resources": cfg.postgres.backup.sidecar_resources.to_k8s()},
            },
            opts=self.child_opts(plugin),
        )

    @staticmethod
    def _cluster_spec(cfg: StackConfig) -> dict[str, Any]:
        pg = cfg.postgres
        storage: dict[str, Any] = {"size": pg.storage_size}
        if cfg.storage_class:
            storage["storageClass"] = cfg.storage_class
        spec: dict[str, Any] = {
            "instances": pg.instances,
            # The "standard" operand image ships pgvector.
            "imageName": pg.image.ref,
            "primaryUpdateStrategy": "unsupervised",
            "storage": storage,
            "resources": pg.resources.to_k8s(),
            # Sized to the pod's memory limit by the rule the local stack uses for the machine's.
            "postgresql": {
                "parameters": tuned_parameters(int(quantity_value(pg.resources.memory_limit)) // (1024 * 1024))
            },
            "affinity": {
                "enablePodAntiAffinity": True,
                "topologyKey": "kubernetes.io/hostname",
                "podAntiAffinityType": "required" if cfg.environment == "prod" else "preferred",
            },
        }
        source = pg.restore or pg.replica
        if source is None:
            spec["bootstrap"] = {
                "initdb": {
                    "database": pg.database,
                    "owner": pg.owner,
                    "secret": {"name": names.SECRET_POSTGRES_APP},
                    "postInitApplicationSQL": ["CREATE EXTENSION IF NOT EXISTS vector"],
                }
            }
        else:
            recovery: dict[str, Any] = {
                "source": SOURCE_CLUSTER,
                # The owner's password is set from the kit's Secret once recovery is done.
                "database": pg.database,
                "owner": pg.owner,
                "secret": {"name": names.SECRET_POSTGRES_APP},
            }
            if pg.restore is not None and pg.restore.target_time is not None:
                recovery["recoveryTarget"] = {"targetTime": pg.restore.target_time}
            spec["bootstrap"] = {"recovery": recovery}
            source_store = names.POSTGRES_SOURCE_STORE if source.object_store else names.POSTGRES_OBJECT_STORE
            spec["externalClusters"] = [
                {
                    "name": SOURCE_CLUSTER,
                    "plugin": {
                        "name": names.BARMAN_PLUGIN,
                        "parameters": {"barmanObjectName": source_store, "serverName": source.server_name},
                    },
                }
            ]
        if pg.replica is not None:
            spec["replica"] = {"enabled": pg.replica.enabled, "source": SOURCE_CLUSTER}
        if pg.backup.object_store is not None:
            spec["plugins"] = [
                {
                    "name": names.BARMAN_PLUGIN,
                    "isWALArchiver": True,
                    "parameters": {
                        "barmanObjectName": names.POSTGRES_OBJECT_STORE,
                        "serverName": pg.backup.server_name,
                    },
                }
            ]
        return spec

    def _network_policy(self, cfg: StackConfig) -> None:
        instances = peer(names.POSTGRES_POD_LABELS)
        operator = peer(None, cfg.postgres.operator_namespace)
        clients = [peer(selector_labels(client)) for client in DATABASE_CLIENTS]
        network_policy(
            f"{names.POSTGRES_CLUSTER}-traffic",
            cfg.namespace,
            COMPONENT,
            cfg,
            self,
            pod_labels=names.POSTGRES_POD_LABELS,
            ingress=[
                ingress_from(clients, [names.POSTGRES_PORT]),
                ingress_from([instances, operator], [names.POSTGRES_PORT, names.CNPG_STATUS_PORT]),
                ingress_from([peer(None, cfg.observability.namespace)], [names.POSTGRES_METRICS_PORT]),
            ],
            egress=[
                egress_to([instances], [names.POSTGRES_PORT, names.CNPG_STATUS_PORT]),
                egress_to([operator], [BARMAN_PLUGIN_PORT]),
                # The instance manager calls the Kubernetes API; Barman reaches the object stores.
                egress_to([], sorted({*API_SERVER_PORTS, *object_store_ports(cfg)})),
            ],
        )


def object_store_ports(cfg: StackConfig) -> set[int]:
    """The ports of every object store the cluster writes to or reads from."""
    pg = cfg.postgres
    stores = [pg.backup.object_store] + [
        pg.source_store(source) for source in (pg.restore, pg.replica) if source is not None
    ]
    return {store.egress_port for store in stores if store is not None}
