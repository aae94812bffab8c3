"""Redis for working memory and the worker's streams: one primary, AOF every second, snapshots."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from infra import names
from infra.components.common import (
    Component, backup_cron_job, container, egress_to, http_probe, ingress_from, labels, metadata, monitor,
    network_policy, peer, persistent_volume_claim, pod_disruption_budget, pod_spec, secret_env, selector_labels,
    service_account,
)
from infra.config import StackConfig, quantity_value
from infra.names import Endpoints

REDIS_UID = 999
REDIS_CLIENTS = (names.MEMORY_SERVICE, names.WORKER)
DATA_VOLUME = "data"


@dataclass(frozen=True)
class RedisArgs:
    cfg: StackConfig
    monitoring_crds: pulumi.Resource


class Redis(Component):
    def __init__(self, name: str, args: RedisArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("Redis", name, opts)
        cfg = args.cfg
        ns = cfg.namespace
        pod_labels = selector_labels(names.REDIS)
        service_account(names.REDIS, ns, names.REDIS, cfg, self)
        self.service = k8s.core.v1.Service(
            names.REDIS,
            metadata=metadata(names.REDIS, ns, names.REDIS, cfg),
            spec={
                # Headless: the StatefulSet's stable name; clients resolve the single primary.
                "cluster_ip": "None",
                "selector": pod_labels,
                "ports": [
                    {"name": "redis", "port": names.REDIS_PORT, "target_port": "redis"},
                    {"name": "metrics", "port": names.REDIS_EXPORTER_PORT, "target_port": "metrics"},
                ],
            },
            opts=self.child_opts(),
        )
        self.statefulset = k8s.apps.v1.StatefulSet(
            names.REDIS,
            metadata=metadata(names.REDIS, ns, names.REDIS, cfg),
            spec={
                "service_name": names.REDIS,
                "replicas": 1,
                "selector": {"match_labels": pod_labels},
                "template": {"metadata": {"labels": labels(names.REDIS, cfg)}, "spec": self._pod(cfg)},
                "volume_claim_templates": [self._data_claim(cfg)],
            },
            opts=self.child_opts(self.service),
        )
        protect = cfg.redis.block_voluntary_eviction
        pod_disruption_budget(
            names.REDIS, ns, names.REDIS, cfg, self, pod_labels=pod_labels,
            **({"min_available": 1} if protect else {"max_unavailable": 1}),
        )
        monitor("ServiceMonitor", names.REDIS, ns, cfg, self, pod_labels=pod_labels, port="metrics",
                path="/metrics", crds=args.monitoring_crds)
        if cfg.redis.snapshot.enabled:
            self._snapshot(cfg)
        self._network_policies(cfg)
        self.register_outputs({"service": names.REDIS})

    @staticmethod
    def _pod(cfg: StackConfig) -> dict[str, Any]:
        redis = cfg.redis
        password = secret_env("REDIS_PASSWORD", names.SECRET_REDIS, "password")
        server = container(
            "redis", redis.image.ref, redis.resources,
            command=["redis-server"],
            args=[
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--dir", "/data",
                "--maxmemory", str(int(quantity_value(redis.max_memory))),
                "--maxmemory-policy", redis.max_memory_policy,
                # Kubernetes expands $(REDIS_PASSWORD) from the Secret-backed variable.
                "--requirepass", "$(REDIS_PASSWORD)",
            ],
            env=[password, secret_env("REDISCLI_AUTH", names.SECRET_REDIS, "password")],
            ports={"redis": names.REDIS_PORT},
            liveness={"tcp_socket": {"port": names.REDIS_PORT}, "period_seconds": 10, "failure_threshold": 3},
            readiness={"exec": {"command": ["redis-cli", "ping"]}, "period_seconds": 5, "failure_threshold": 3},
            volume_mounts=[{"name": DATA_VOLUME, "mount_path": "/data"}],
        )
        exporter = container(
            "redis-exporter", redis.exporter_image.ref, redis.exporter_resources,
            env=[{"name": "REDIS_ADDR", "value": f"redis://localhost:{names.REDIS_PORT}"}, password],
            ports={"metrics": names.REDIS_EXPORTER_PORT},
            liveness=http_probe("/health", names.REDIS_EXPORTER_PORT),
            readiness=http_probe("/health", names.REDIS_EXPORTER_PORT),
        )
        return pod_spec(names.REDIS, [server, exporter], run_as_user=REDIS_UID, termination_grace_period_seconds=30)

    @staticmethod
    def _data_claim(cfg: StackConfig) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "access_modes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": cfg.redis.storage_size}},
        }
        if cfg.storage_class:
            spec["storage_class_name"] = cfg.storage_class
        return {"metadata": {"name": DATA_VOLUME}, "spec": spec}

    def _snapshot(self, cfg: StackConfig) -> None:
        """An RDB copy of the live dataset, taken over the wire, kept for `retainDays`."""
        snapshot = cfg.redis.snapshot
        ns = cfg.namespace
        claim = f"{names.REDIS_SNAPSHOT}s"
        persistent_volume_claim(claim, ns, names.REDIS_SNAPSHOT, cfg, self, size=snapshot.storage_size)
        service_account(names.REDIS_SNAPSHOT, ns, names.REDIS_SNAPSHOT, cfg, self)
        script = (
            f"redis-cli -h {Endpoints(cfg).redis_host} -p {names.REDIS_PORT}"
            " --rdb /backups/dump-$(date +%Y%m%dT%H%M%S).rdb"
            f" && find /backups -name 'dump-*.rdb' -mtime +{snapshot.retain_days} -delete"
        )
        step = container(
            "snapshot", cfg.redis.image.ref, snapshot.resources, command=["sh", "-c", script],
            env=[secret_env("REDISCLI_AUTH", names.SECRET_REDIS, "password")],
            volume_mounts=[{"name": "backups", "mount_path": "/backups"}],
        )
        pod = pod_spec(
            names.REDIS_SNAPSHOT, [step], run_as_user=REDIS_UID, restart_policy="Never",
            volumes=[{"name": "backups", "persistent_volume_claim": {"claim_name": claim}}],
        )
        backup_cron_job(names.REDIS_SNAPSHOT, ns, cfg, self, schedule=snapshot.schedule, pod=pod)

    def _network_policies(self, cfg: StackConfig) -> None:
        ns = cfg.namespace
        clients = [peer(selector_labels(client)) for client in REDIS_CLIENTS]
        if cfg.redis.snapshot.enabled:
            clients.append(peer(selector_labels(names.REDIS_SNAPSHOT)))
            network_policy(
                f"{names.REDIS_SNAPSHOT}-traffic", ns, names.REDIS_SNAPSHOT, cfg, self,
                pod_labels=selector_labels(names.REDIS_SNAPSHOT),
                egress=[egress_to([peer(selector_labels(names.REDIS))], [names.REDIS_PORT])],
            )
        network_policy(
            f"{names.REDIS}-traffic", ns, names.REDIS, cfg, self, pod_labels=selector_labels(names.REDIS),
            ingress=[
                ingress_from(clients, [names.REDIS_PORT]),
                ingress_from([peer(None, cfg.observability.namespace)], [names.REDIS_EXPORTER_PORT]),
            ],
        )
