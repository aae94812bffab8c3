"""Neo4j from the official chart (community by default, enterprise cluster as an option).

The graph is a projection of Postgres, so its recovery is a rebuild from Postgres: a Job
(`neo4j.rebuild`, and always after a Postgres restore) runs the re-projection against the
running server. Nothing stops Neo4j, mounts its data volume or scales its StatefulSet, so a
recovery can neither leave it down nor take the memory service's readiness with it.
Enterprise clusters can add online backups (`neo4j-admin database backup`), which stop nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from infra import names
from infra.components.common import (
    Component,
    backup_cron_job,
    camel_keys,
    container,
    container_security_context,
    egress_to,
    helm_release,
    ingress_from,
    monitor,
    network_policy,
    peer,
    persistent_volume_claim,
    plain_env,
    pod_spec,
    selector_labels,
    service_account,
)
from infra.config import StackConfig

COMPONENT = "memstack-neo4j"
# The kit's own jobs run above 10000, so they match no user of the node.
NEO4J_JOB_UID = 17474
METRICS_PORT = 2004
CLUSTER_PORTS = (5000, 6000, 7000, 7688)
API_SERVER_PORTS = (443, 6443)
GRAPH_CLIENTS = (names.MEMORY_SERVICE, names.WORKER, names.MIGRATIONS, names.NEO4J_REBUILD)
BACKUP_VOLUME = "backups"
BACKUP_MOUNT = "/backups"


@dataclass(frozen=True)
class Neo4jArgs:
    cfg: StackConfig
    monitoring_crds: pulumi.Resource


class Neo4j(Component):
    def __init__(self, name: str, args: Neo4jArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Neo4j", name, opts)
        cfg = args.cfg
        self.releases = [
            helm_release(
                release,
                cfg.charts.neo4j,
                release_name=release,
                namespace=cfg.namespace,
                values=self.chart_values(cfg),
                parent=self,
            )
            for release in names.neo4j_release_names(cfg)
        ]
        enterprise = cfg.neo4j.edition == "enterprise"
        if enterprise:
            # Prometheus metrics are an enterprise feature; community exposes none.
            monitor(
                "PodMonitor",
                names.NEO4J,
                cfg.namespace,
                cfg,
                self,
                pod_labels=names.NEO4J_POD_LABELS,
                port=METRICS_PORT,
                path="/metrics",
                crds=args.monitoring_crds,
            )
        if cfg.neo4j.backup.enabled:
            self._online_backup(cfg)
        self._network_policy(cfg, enterprise)
        self.register_outputs({"releases": names.neo4j_release_names(cfg)})

    @staticmethod
    def chart_values(cfg: StackConfig) -> dict[str, Any]:
        neo = cfg.neo4j
        enterprise = neo.edition == "enterprise"
        if cfg.storage_class:
            data = {
                "mode": "dynamic",
                "dynamic": {
                    "storageClassName": cfg.storage_class,
                    "requests": {"storage": neo.storage_size},
                },
            }
        else:
            data = {"mode": "defaultStorageClass", "defaultStorageClass": {"requests": {"storage": neo.storage_size}}}
        config = {
            "server.config.strict_validation.enabled": "false",
            # A graph growing from empty under the projection's load replanned its statements at
            # every 10 s check (50-130 ms of CPU each); as the local stack's launcher sets it.
            "dbms.cypher.min_replan_interval": "2m",
        }
        if enterprise:
            config.update(
                {
                    "server.metrics.prometheus.enabled": "true",
                    "server.metrics.prometheus.endpoint": f"0.0.0.0:{METRICS_PORT}",
                    "server.backup.enabled": "true",
                    "server.backup.listen_address": f"0.0.0.0:{names.NEO4J_BACKUP_PORT}",
                }
            )
        hardened = container_security_context()
        # Neo4j writes its rendered configuration under its home directory.
        hardened["read_only_root_filesystem"] = False
        return {
            "neo4j": {
                "name": names.NEO4J,
                "edition": neo.edition,
                "acceptLicenseAgreement": "yes" if enterprise else "no",
                "passwordFromSecret": names.SECRET_NEO4J_AUTH,
                "minimumClusterSize": neo.servers,
                "resources": neo.resources.to_k8s(),
            },
            "volumes": {"data": data},
            # The chart's load-balancer Service is the cluster's routing entry point; ClusterIP only.
            "services": {"neo4j": {"enabled": neo.servers > 1, "spec": {"type": "ClusterIP"}}},
            "config": config,
            "containerSecurityContext": camel_keys(hardened),
            "image": {"imagePullPolicy": cfg.pull_policy},
            "logInitialPassword": False,
        }

    def _online_backup(self, cfg: StackConfig) -> None:
        """Enterprise: `neo4j-admin database backup` against the first server's backup port, online.

        The job mounts only its own backup volume, never a server's data volume, and stops nothing.
        """
        neo = cfg.neo4j
        ns = cfg.namespace
        claim = f"{names.NEO4J_BACKUP}s"
        persistent_volume_claim(claim, ns, names.NEO4J_BACKUP, cfg, self, size=neo.backup.storage_size)
        service_account(names.NEO4J_BACKUP, ns, names.NEO4J_BACKUP, cfg, self)
        source = f"{names.neo4j_release_names(cfg)[0]}-admin.{ns}.svc.cluster.local:{names.NEO4J_BACKUP_PORT}"
        prune = f"find /backups -mindepth 1 -maxdepth 1 -type d -mtime +{neo.backup.retain_days} -exec rm -rf {{}} +"
        backup_step = container(
            "backup",
            neo.admin_image.ref,
            neo.backup.resources,
            pull_policy=cfg.pull_policy,
            command=[
                "sh",
                "-c",
                'dir=/backups/$(date +%Y%m%dT%H%M%S) && mkdir -p "$dir"'
                f' && neo4j-admin database backup --from={source} --to-path="$dir" --include-metadata=all'
                f" '*' && {prune}",
            ],
            env=[plain_env("NEO4J_ACCEPT_LICENSE_AGREEMENT", "yes")],
            volume_mounts=[{"name": BACKUP_VOLUME, "mount_path": BACKUP_MOUNT}, {"name": "tmp", "mount_path": "/logs"}],
        )
        pod = pod_spec(
            names.NEO4J_BACKUP,
            [backup_step],
            run_as_user=NEO4J_JOB_UID,
            restart_policy="Never",
            volumes=[{"name": BACKUP_VOLUME, "persistent_volume_claim": {"claim_name": claim}}],
        )
        backup_cron_job(names.NEO4J_BACKUP, ns, cfg, self, schedule=neo.backup.schedule, pod=pod)

    def _network_policy(self, cfg: StackConfig, enterprise: bool) -> None:
        ns = cfg.namespace
        servers = peer(names.NEO4J_POD_LABELS)
        backup_job = peer(selector_labels(names.NEO4J_BACKUP))
        ingress = [ingress_from([peer(selector_labels(c)) for c in GRAPH_CLIENTS], [names.NEO4J_BOLT_PORT])]
        egress = []
        if enterprise:
            ingress += [
                ingress_from([servers], [*CLUSTER_PORTS, names.NEO4J_BOLT_PORT]),
                ingress_from([backup_job], [names.NEO4J_BACKUP_PORT]),
                ingress_from([peer(None, cfg.observability.namespace)], [METRICS_PORT]),
            ]
            # Cluster members find each other through the Kubernetes API.
            egress += [egress_to([servers], [*CLUSTER_PORTS, names.NEO4J_BOLT_PORT]), egress_to([], API_SERVER_PORTS)]
        network_policy(
            f"{names.NEO4J}-traffic",
            ns,
            COMPONENT,
            cfg,
            self,
            pod_labels=names.NEO4J_POD_LABELS,
            ingress=ingress,
            egress=egress,
        )
        if cfg.neo4j.backup.enabled:
            network_policy(
                f"{names.NEO4J_BACKUP}-traffic",
                ns,
                names.NEO4J_BACKUP,
                cfg,
                self,
                pod_labels=selector_labels(names.NEO4J_BACKUP),
                egress=[egress_to([servers], [names.NEO4J_BACKUP_PORT])],
            )
