"""Redis for working memory and the worker's streams: one primary, AOF every second, snapshots.

The password reaches Redis in a config file mounted from the Secret, so it never shows in a
process's command line (`/proc/*/cmdline`) or environment. A restore (`redis.restore`) is an init
container that rebuilds the AOF from one snapshot before Redis starts, once per snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import names
from infra.components.common import (
    Component,
    backup_cron_job,
    container,
    egress_to,
    http_probe,
    ingress_from,
    labels,
    metadata,
    monitor,
    network_policy,
    peer,
    persistent_volume_claim,
    plain_env,
    pod_disruption_budget,
    pod_spec,
    selector_labels,
    service_account,
)
from infra.components.secrets import (
    REDIS_AUTH_CONF_KEY,
    REDIS_EXPORTER_ADDRESS,
    REDIS_EXPORTER_PASSWORDS_KEY,
    REDIS_PASSWORD_KEY,
)
from infra.config import StackConfig, quantity_value
from infra.names import Endpoints

# Above 10000, so that it matches no user of the node.
REDIS_UID = 10999
REDIS_CLIENTS = (names.MEMORY_SERVICE, names.WORKER)
DATA_VOLUME = "data"
AUTH_VOLUME = "auth"
AUTH_DIR = "/etc/memstack-redis"
SNAPSHOTS_VOLUME = "snapshots"
SNAPSHOTS_DIR = "/snapshots"
SNAPSHOT_CLAIM = f"{names.REDIS_SNAPSHOT}s"
# `redis-cli` takes the password from REDISCLI_AUTH, set for that one process from the file.
WITH_PASSWORD = f'REDISCLI_AUTH="$(cat {AUTH_DIR}/{REDIS_PASSWORD_KEY})"'


def auth_volume() -> dict[str, Any]:
    return {"name": AUTH_VOLUME, "secret": {"secret_name": names.SECRET_REDIS, "default_mode": 0o440}}


AUTH_MOUNT = {"name": AUTH_VOLUME, "mount_path": AUTH_DIR, "read_only": True}


RESTORE_STEP_TIMEOUT_SECONDS = 1800


def bounded(loop: str) -> str:
    """A wait that gives up (and fails the init container) instead of hanging the pod forever."""
    return f"timeout {RESTORE_STEP_TIMEOUT_SECONDS} sh -c '{loop}'"


def restore_script(snapshot: str) -> str:
    """Rebuild the AOF from one snapshot, once: a marker file keeps a restarted pod from restoring again.

    The current AOF is moved aside, never deleted. A private Redis (no TCP port) loads the
    snapshot, rewrites it as the AOF, and shuts down; the real server then starts from that AOF.
    """
    marker = f"/data/.restored-{snapshot}"
    socket = "/tmp/restore.sock"
    cli = f"redis-cli -s {socket}"
    return " && ".join(
        [
            "set -e",
            f'if [ -e "{marker}" ]; then echo "{snapshot} already restored"; exit 0; fi',
            f"test -s {SNAPSHOTS_DIR}/{snapshot}",
            "stamp=$(date +%Y%m%dT%H%M%S)",
            'if [ -d /data/appendonlydir ]; then mv /data/appendonlydir "/data/appendonlydir.before-restore-$stamp"; fi',
            'if [ -e /data/dump.rdb ]; then mv /data/dump.rdb "/data/dump.rdb.before-restore-$stamp"; fi',
            f"cp {SNAPSHOTS_DIR}/{snapshot} /data/dump.rdb",
            # The root filesystem is read-only: the pid file goes to /tmp.
            f"redis-server --port 0 --unixsocket {socket} --dir /data --appendonly no --daemonize yes"
            " --pidfile /tmp/restore.pid",
            bounded(f"until {cli} ping 2>/dev/null | grep -q PONG; do sleep 1; done"),
            f"{cli} config set appendonly yes",
            bounded(
                f"until {cli} info persistence | grep -q aof_rewrite_in_progress:0"
                f" && {cli} info persistence | grep -q aof_rewrite_scheduled:0"
                f" && {cli} info persistence | grep -q aof_enabled:1; do sleep 1; done"
            ),
            f"{cli} shutdown save",
            f'touch "{marker}"',
            f'echo "restored {snapshot}"',
        ]
    )


@dataclass(frozen=True)
class RedisArgs:
    cfg: StackConfig
    monitoring_crds: pulumi.Resource


class Redis(Component):
    def __init__(self, name: str, args: RedisArgs, opts: pulumi.ResourceOptions | None = None) -> None:
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
            names.REDIS,
            ns,
            names.REDIS,
            cfg,
            self,
            pod_labels=pod_labels,
            **({"min_available": 1} if protect else {"max_unavailable": 1}),
        )
        monitor(
            "ServiceMonitor",
            names.REDIS,
            ns,
            cfg,
            self,
            pod_labels=pod_labels,
            port="metrics",
            path="/metrics",
            crds=args.monitoring_crds,
        )
        if cfg.redis.snapshot.enabled:
            self._snapshot(cfg)
        self._network_policies(cfg)
        self.register_outputs({"service": names.REDIS})

    @staticmethod
    def _pod(cfg: StackConfig) -> dict[str, Any]:
        redis = cfg.redis
        data_mount = {"name": DATA_VOLUME, "mount_path": "/data"}
        server = container(
            "redis",
            redis.image.ref,
            redis.resources,
            pull_policy=cfg.pull_policy,
            command=["redis-server"],
            args=[
                # The first argument is a config file: it holds `requirepass`, from the Secret.
                f"{AUTH_DIR}/{REDIS_AUTH_CONF_KEY}",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                "/data",
                "--maxmemory",
                str(int(quantity_value(redis.max_memory))),
                "--maxmemory-policy",
                redis.max_memory_policy,
            ],
            ports={"redis": names.REDIS_PORT},
            liveness={"tcp_socket": {"port": names.REDIS_PORT}, "period_seconds": 10, "failure_threshold": 3},
            readiness={
                "exec": {"command": ["sh", "-c", f"{WITH_PASSWORD} redis-cli ping | grep -q PONG"]},
                "period_seconds": 5,
                "failure_threshold": 3,
                "timeout_seconds": 2,
            },
            volume_mounts=[data_mount, AUTH_MOUNT],
        )
        exporter = container(
            "redis-exporter",
            redis.exporter_image.ref,
            redis.exporter_resources,
            pull_policy=cfg.pull_policy,
            env=[
                plain_env("REDIS_ADDR", REDIS_EXPORTER_ADDRESS),
                plain_env("REDIS_PASSWORD_FILE", f"{AUTH_DIR}/{REDIS_EXPORTER_PASSWORDS_KEY}"),
            ],
            ports={"metrics": names.REDIS_EXPORTER_PORT},
            liveness=http_probe("/health", names.REDIS_EXPORTER_PORT),
            readiness=http_probe("/health", names.REDIS_EXPORTER_PORT),
            volume_mounts=[AUTH_MOUNT],
        )
        volumes = [auth_volume()]
        init_containers = []
        if redis.restore is not None:
            init_containers.append(
                container(
                    "restore",
                    redis.image.ref,
                    redis.snapshot.resources,
                    pull_policy=cfg.pull_policy,
                    command=["sh", "-c", restore_script(redis.restore.snapshot)],
                    volume_mounts=[
                        data_mount,
                        {"name": SNAPSHOTS_VOLUME, "mount_path": SNAPSHOTS_DIR, "read_only": True},
                    ],
                )
            )
            volumes.append({"name": SNAPSHOTS_VOLUME, "persistent_volume_claim": {"claim_name": SNAPSHOT_CLAIM}})
        return pod_spec(
            names.REDIS,
            [server, exporter],
            run_as_user=REDIS_UID,
            termination_grace_period_seconds=30,
            volumes=volumes,
            init_containers=init_containers,
        )

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
        persistent_volume_claim(SNAPSHOT_CLAIM, ns, names.REDIS_SNAPSHOT, cfg, self, size=snapshot.storage_size)
        service_account(names.REDIS_SNAPSHOT, ns, names.REDIS_SNAPSHOT, cfg, self)
        script = (
            f"{WITH_PASSWORD} redis-cli -h {Endpoints(cfg).redis_host} -p {names.REDIS_PORT}"
            f" --rdb {SNAPSHOTS_DIR}/dump-$(date +%Y%m%dT%H%M%S).rdb"
            f" && find {SNAPSHOTS_DIR} -name 'dump-*.rdb' -mtime +{snapshot.retain_days} -delete"
        )
        step = container(
            "snapshot",
            cfg.redis.image.ref,
            snapshot.resources,
            pull_policy=cfg.pull_policy,
            command=["sh", "-c", script],
            volume_mounts=[{"name": SNAPSHOTS_VOLUME, "mount_path": SNAPSHOTS_DIR}, AUTH_MOUNT],
        )
        # The snapshot volume is ReadWriteOnce and a restoring Redis pod mounts it too: the job
        # runs on Redis's node (it needs a running Redis anyway), so the two never Multi-Attach.
        same_node_as_redis = {
            "pod_affinity": {
                "required_during_scheduling_ignored_during_execution": [
                    {
                        "label_selector": {"match_labels": selector_labels(names.REDIS)},
                        "topology_key": "kubernetes.io/hostname",
                    }
                ]
            }
        }
        pod = pod_spec(
            names.REDIS_SNAPSHOT,
            [step],
            run_as_user=REDIS_UID,
            restart_policy="Never",
            volumes=[
                {"name": SNAPSHOTS_VOLUME, "persistent_volume_claim": {"claim_name": SNAPSHOT_CLAIM}},
                auth_volume(),
            ],
            affinity=same_node_as_redis,
        )
        backup_cron_job(names.REDIS_SNAPSHOT, ns, cfg, self, schedule=snapshot.schedule, pod=pod)

    def _network_policies(self, cfg: StackConfig) -> None:
        ns = cfg.namespace
        clients = [peer(selector_labels(client)) for client in REDIS_CLIENTS]
        if cfg.redis.snapshot.enabled:
            clients.append(peer(selector_labels(names.REDIS_SNAPSHOT)))
            network_policy(
                f"{names.REDIS_SNAPSHOT}-traffic",
                ns,
                names.REDIS_SNAPSHOT,
                cfg,
                self,
                pod_labels=selector_labels(names.REDIS_SNAPSHOT),
                egress=[egress_to([peer(selector_labels(names.REDIS))], [names.REDIS_PORT])],
            )
        network_policy(
            f"{names.REDIS}-traffic",
            ns,
            names.REDIS,
            cfg,
            self,
            pod_labels=selector_labels(names.REDIS),
            ingress=[
                ingress_from(clients, [names.REDIS_PORT]),
                ingress_from([peer(None, cfg.observability.namespace)], [names.REDIS_EXPORTER_PORT]),
            ],
        )
