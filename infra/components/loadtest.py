"""An in-cluster load test: a Locust master Job and N worker pods running the repository's profile.

The master waits for its workers, runs headless for `runTime`, prints the per-route-group
summary and exits 1 when the SLO gate (working-memory p99, failure ratio) is missed; Pulumi
waits for the Job, so a missed gate fails `pulumi up`. Workers quit when the master does. The
workers carry the memory-client label, so the service's NetworkPolicy admits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import names
from infra.components.common import (
    Component,
    container,
    egress_to,
    ingress_from,
    labels,
    metadata,
    network_policy,
    peer,
    pod_spec,
    selector_labels,
    service_account,
)
from infra.config import StackConfig
from infra.names import Endpoints
from memstack.load import PROFILES

LOCUST_MASTER_PORT = 5557
MASTER = f"{names.LOADTEST}-master"
WORKER = f"{names.LOADTEST}-worker"
TOKENS_VOLUME = "load-tokens"
TOKENS_DIR = "/etc/memstack-load"
TOKENS_FILE_KEY = "tokens"
# Where the image keeps the profile (Dockerfile: COPY loadtests).
LOCUSTFILE = "/opt/memstack/loadtests/locustfile.py"
RUN_ANNOTATION = "memstack.dev/loadtest-run"
# Locust's workers and master write nothing outside /tmp.
LOCUST_HOME = "/tmp"


@dataclass(frozen=True)
class LoadtestArgs:
    cfg: StackConfig
    # The memory service Deployment: the load starts once it has rolled out.
    service: pulumi.Resource


class Loadtest(Component):
    def __init__(self, name: str, args: LoadtestArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Loadtest", name, opts)
        cfg = args.cfg
        ns = cfg.namespace
        load = cfg.loadtest
        service_account(names.LOADTEST, ns, names.LOADTEST, cfg, self)
        tokens = k8s.core.v1.Secret(
            f"{names.LOADTEST}-tokens",
            metadata=metadata(f"{names.LOADTEST}-tokens", ns, names.LOADTEST, cfg),
            type="Opaque",
            string_data={TOKENS_FILE_KEY: pulumi.Output.secret(cfg.loadtest_tokens)},
            opts=self.child_opts(),
        )
        self.master_service = k8s.core.v1.Service(
            MASTER,
            metadata=metadata(MASTER, ns, MASTER, cfg),
            spec={
                "type": "ClusterIP",
                "selector": selector_labels(MASTER),
                "ports": [{"name": "workers", "port": LOCUST_MASTER_PORT, "target_port": LOCUST_MASTER_PORT}],
            },
            opts=self.child_opts(),
        )
        client_label = {cfg.memory_service.client_label: "true"}
        self.master = self._job(
            cfg,
            MASTER,
            self._master_args(cfg),
            load.master_resources,
            parallelism=1,
            extra_labels={},
            depends=[args.service, tokens, self.master_service],
            ports={"workers": LOCUST_MASTER_PORT},
        )
        self.workers = self._job(
            cfg,
            WORKER,
            ["--worker", "--master-host", MASTER, "--master-port", str(LOCUST_MASTER_PORT)],
            load.worker_resources,
            parallelism=load.workers,
            extra_labels=client_label,
            depends=[args.service, tokens, self.master_service],
        )
        network_policy(
            f"{MASTER}-traffic",
            ns,
            MASTER,
            cfg,
            self,
            pod_labels=selector_labels(MASTER),
            ingress=[ingress_from([peer(selector_labels(WORKER))], [LOCUST_MASTER_PORT])],
        )
        network_policy(
            f"{WORKER}-traffic",
            ns,
            WORKER,
            cfg,
            self,
            pod_labels=selector_labels(WORKER),
            egress=[
                egress_to([peer(selector_labels(MASTER))], [LOCUST_MASTER_PORT]),
                egress_to([peer(selector_labels(names.MEMORY_SERVICE))], [cfg.memory_service.contract.port]),
            ],
        )
        self.register_outputs({"master": MASTER, "workers": load.workers, "run": load.run_id})

    @staticmethod
    def _master_args(cfg: StackConfig) -> list[str]:
        load = cfg.loadtest
        return [
            "--master", "--master-bind-port", str(LOCUST_MASTER_PORT),
            "--expect-workers", str(load.workers), "--expect-workers-max-wait", "300",
            "--headless", "--only-summary",
            "-u", str(load.users), "-r", str(load.spawn_rate), "-t", load.run_time,
            "--host", Endpoints(cfg).memory_service_url,
            "--rate", f"{load.rate:g}", "--warmup-s", str(load.warmup_seconds),
            PROFILES[load.profile],
        ]  # fmt: skip

    def _job(
        self,
        cfg: StackConfig,
        name: str,
        role_args: list[str],
        resources: Any,
        *,
        parallelism: int,
        extra_labels: dict[str, str],
        depends: list[pulumi.Resource],
        ports: dict[str, int] | None = None,
    ) -> k8s.batch.v1.Job:
        load = cfg.loadtest
        image = (load.image or cfg.memstack_image).ref
        step = container(
            "locust",
            image,
            resources,
            pull_policy=cfg.pull_policy,
            command=["locust", "-f", LOCUSTFILE, "--tokens-file", f"{TOKENS_DIR}/{TOKENS_FILE_KEY}", *role_args],
            env=[{"name": "HOME", "value": LOCUST_HOME}],
            ports=ports or {},
            volume_mounts=[{"name": TOKENS_VOLUME, "mount_path": TOKENS_DIR, "read_only": True}],
        )
        secret_volume = {"secret_name": f"{names.LOADTEST}-tokens", "default_mode": 0o440}
        return k8s.batch.v1.Job(
            name,
            metadata=metadata(
                name, cfg.namespace, name, cfg,
                # Pulumi waits for the run: its length plus the workers' start and the summary.
                annotations={"pulumi.com/timeoutSeconds": str(run_seconds(load.run_time) + 900)},
            ),
            spec={
                "backoff_limit": 0,
                "parallelism": parallelism,
                "completions": parallelism,
                "active_deadline_seconds": run_seconds(load.run_time) + 900,
                "template": {
                    "metadata": {
                        "labels": {**labels(name, cfg), **extra_labels},
                        "annotations": {RUN_ANNOTATION: load.run_id},
                    },
                    "spec": pod_spec(
                        names.LOADTEST, [step], run_as_user=cfg.memory_service.contract.run_as_user,
                        restart_policy="Never", volumes=[{"name": TOKENS_VOLUME, "secret": secret_volume}],
                    ),
                },
            },
            opts=self.child_opts(*depends, delete_before_replace=True),
        )  # fmt: skip


def run_seconds(run_time: str) -> int:
    """Locust's `-t` (`90s`, `5m`, `1h`) in seconds."""
    return int(run_time[:-1]) * {"s": 1, "m": 60, "h": 3600}[run_time[-1]]
