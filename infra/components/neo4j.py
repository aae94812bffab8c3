"""Neo4j from the official chart (community by default, enterprise cluster as an option), and its backups.

Backups:
- community: a CronJob takes an OFFLINE dump. Community edition has no online backup, and
  `neo4j-admin database dump` needs the database stopped, so the job scales the StatefulSet
  to 0, dumps every database from the data volume, and scales it back to 1. Neo4j is DOWN for
  the length of the dump; if the dump fails the StatefulSet stays at 0 until an operator runs
  `kubectl scale statefulset/memstack-neo4j --replicas=1` (the job's last step never ran).
  Schedule it in a quiet hour; the memory service keeps serving working and episodic memory
  while Neo4j is away (the graph projection catches up from the outbox).
- enterprise: a CronJob runs `neo4j-admin database backup` against the backup port, online.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from infra import names
from infra.components.common import (
    Component, backup_cron_job, camel_keys, container, container_security_context, egress_to, helm_release,
    ingress_from, metadata, monitor, network_policy, peer, persistent_volume_claim, plain_env, pod_spec,
    selector_labels, service_account,
)
from infra.config import StackConfig

COMPONENT = "memstack-neo4j"
NEO4J_UID = 7474
METRICS_PORT = 2004
CLUSTER_PORTS = (5000, 6000, 7000, 7688)
API_SERVER_PORTS = (443, 6443)
GRAPH_CLIENTS = (names.MEMORY_SERVICE, names.WORKER, names.MIGRATIONS)
BACKUP_VOLUME = "backups"
BACKUP_MOUNT = "/backups"


@dataclass(frozen=True)
class Neo4jArgs:
    cfg: StackConfig
    monitoring_crds: pulumi.Resource


class Neo4j(Component):
    def __init__(self, name: str, args: Neo4jArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("Neo4j", name, opts)
        cfg = args.cfg
        self.releases = [
            helm_release(
                release, cfg.charts.neo4j, release_name=release, namespace=cfg.namespace,
                values=self.chart_values(cfg), parent=self,
            )
            for release in names.neo4j_release_names(cfg)
        ]
        enterprise = cfg.neo4j.edition == "enterprise"
        if enterprise:
            # Prometheus metrics are an enterprise feature; community exposes none.
            monitor(
                "PodMonitor", names.NEO4J, cfg.namespace, cfg, self, pod_labels=names.NEO4J_POD_LABELS,
                port=METRICS_PORT, path="/metrics", crds=args.monitoring_crds,
            )
        if cfg.neo4j.backup.enabled:
            self._backup(cfg, enterprise)
        self._network_policy(cfg, enterprise)
        self.register_outputs({"releases": names.neo4j_release_names(cfg)})

    @staticmethod
    def chart_values(cfg: StackConfig) -> dict[str, Any]:
        neo = cfg.neo4j
        enterprise = neo.edition == "enterprise"
        if cfg.storage_class:
            data = {"mode": "dynamic", "dynamic": {
                "storageClassName": cfg.storage_class, "requests": {"storage": neo.storage_size},
            }}
        else:
            data = {"mode": "defaultStorageClass", "defaultStorageClass": {"requests": {"storage": neo.storage_size}}}
        config = {"server.config.strict_validation.enabled": "false"}
        if enterprise:
            config.update({
                "server.metrics.prometheus.enabled": "true",
                "server.metrics.prometheus.endpoint": f"0.0.0.0:{METRICS_PORT}",
                "server.backup.enabled": "true",
                "server.backup.listen_address": f"0.0.0.0:{names.NEO4J_BACKUP_PORT}",
            })
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
            "logInitialPassword": False,
        }

    def _backup(self, cfg: StackConfig, enterprise: bool) -> None:
        neo = cfg.neo4j
        ns = cfg.namespace
        persistent_volume_claim(f"{names.NEO4J_BACKUP}s", ns, names.NEO4J_BACKUP, cfg, self, size=neo.backup.storage_size)
        account = service_account(names.NEO4J_BACKUP, ns, names.NEO4J_BACKUP, cfg, self, automount=not enterprise)
        dated_dir = 'dir=/backups/$(date +%Y%m%dT%H%M%S) && mkdir -p "$dir"'
        prune = f"find /backups -mindepth 1 -maxdepth 1 -type d -mtime +{neo.backup.retain_days} -exec rm -rf {{}} +"
        volumes: list[dict[str, Any]] = [
            {"name": BACKUP_VOLUME, "persistent_volume_claim": {"claim_name": f"{names.NEO4J_BACKUP}s"}}
        ]
        mounts = [{"name": BACKUP_VOLUME, "mount_path": BACKUP_MOUNT}]
        logs = [{"name": "tmp", "mount_path": "/logs"}]
        if enterprise:
            source = f"{names.neo4j_release_names(cfg)[0]}-admin.{ns}.svc.cluster.local:{names.NEO4J_BACKUP_PORT}"
            backup_step = container(
                "backup", f"{neo.admin_image.ref}-enterprise", neo.backup.resources,
                command=["sh", "-c", f"{dated_dir} && neo4j-admin database backup --from={source}"
                         f" --to-path=\"$dir\" --include-metadata=all '*' && {prune}"],
                env=[plain_env("NEO4J_ACCEPT_LICENSE_AGREEMENT", "yes")],
                volume_mounts=[*mounts, *logs],
            )
            pod = pod_spec(names.NEO4J_BACKUP, [backup_step], run_as_user=NEO4J_UID, volumes=volumes,
                           restart_policy="Never")
        else:
            pod = self._offline_dump_pod(cfg, account, volumes, mounts + logs, f"{dated_dir} && neo4j-admin "
                                         f"database dump --to-path=\"$dir\" '*' && {prune}")
        backup_cron_job(names.NEO4J_BACKUP, ns, cfg, self, schedule=neo.backup.schedule, pod=pod)

    def _offline_dump_pod(
        self, cfg: StackConfig, account: k8s.core.v1.ServiceAccount, volumes: list[dict[str, Any]],
        mounts: list[dict[str, Any]], dump_script: str,
    ) -> dict[str, Any]:
        neo = cfg.neo4j
        ns = cfg.namespace
        statefulset = f"statefulset/{names.NEO4J}"
        role = k8s.rbac.v1.Role(
            names.NEO4J_BACKUP,
            metadata=metadata(names.NEO4J_BACKUP, ns, names.NEO4J_BACKUP, cfg),
            rules=[
                {"api_groups": ["apps"], "resources": ["statefulsets", "statefulsets/scale"],
                 "resource_names": [names.NEO4J], "verbs": ["get", "patch", "update"]},
                {"api_groups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            ],
            opts=self.child_opts(),
        )
        k8s.rbac.v1.RoleBinding(
            names.NEO4J_BACKUP,
            metadata=metadata(names.NEO4J_BACKUP, ns, names.NEO4J_BACKUP, cfg),
            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": names.NEO4J_BACKUP},
            subjects=[{"kind": "ServiceAccount", "name": names.NEO4J_BACKUP, "namespace": ns}],
            opts=self.child_opts(role, account),
        )
        kubectl_home = [plain_env("HOME", "/tmp")]

        def kubectl(step: str, *arguments: str) -> dict[str, Any]:
            return container(step, neo.kubectl_image.ref, neo.backup.resources,
                             command=["kubectl", "--namespace", ns, *arguments], env=kubectl_home)

        # Init containers run in order and must all succeed: stop, wait, dump; then restart.
        steps = [
            kubectl("stop-neo4j", "scale", statefulset, "--replicas=0"),
            kubectl("wait-stopped", "wait", "--for=delete", f"pod/{names.NEO4J}-0", "--timeout=600s"),
            container("dump", neo.admin_image.ref, neo.backup.resources, command=["sh", "-c", dump_script],
                      volume_mounts=[*mounts, {"name": "data", "mount_path": "/data"}]),
        ]
        data = {"name": "data", "persistent_volume_claim": {"claim_name": f"data-{names.NEO4J}-0"}}
        return pod_spec(
            names.NEO4J_BACKUP, [kubectl("start-neo4j", "scale", statefulset, "--replicas=1")],
            run_as_user=NEO4J_UID, volumes=[*volumes, data], init_containers=steps,
            automount_token=True, restart_policy="Never",
        )

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
        network_policy(f"{names.NEO4J}-traffic", ns, COMPONENT, cfg, self,
                       pod_labels=names.NEO4J_POD_LABELS, ingress=ingress, egress=egress)
        if cfg.neo4j.backup.enabled:
            backup_egress = (
                egress_to([servers], [names.NEO4J_BACKUP_PORT]) if enterprise else egress_to([], API_SERVER_PORTS)
            )
            network_policy(f"{names.NEO4J_BACKUP}-traffic", ns, names.NEO4J_BACKUP, cfg, self,
                           pod_labels=selector_labels(names.NEO4J_BACKUP), egress=[backup_egress])
