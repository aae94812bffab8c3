"""The consolidation worker: consumes the Redis stream, replays the outbox, consolidates memories."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra import names
from infra.components.app_pod import AppWorkloadArgs, app_egress, app_env
from infra.components.common import (
    Component,
    container,
    http_probe,
    ingress_from,
    labels,
    metadata,
    monitor,
    network_policy,
    peer,
    plain_env,
    pod_disruption_budget,
    pod_spec,
    selector_labels,
    service_account,
)
from infra.config import settings_env

WorkerArgs = AppWorkloadArgs


class Worker(Component):
    def __init__(self, name: str, args: WorkerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Worker", name, opts)
        cfg = args.cfg
        ns = cfg.namespace
        contract = cfg.memory_service.contract
        health_port = contract.worker_health_port
        pod_labels = selector_labels(names.WORKER)

        service_account(names.WORKER, ns, names.WORKER, cfg, self)
        worker = container(
            "worker",
            cfg.memstack_image.ref,
            cfg.worker.resources,
            pull_policy=cfg.pull_policy,
            command=contract.worker_command,
            # The probe port the worker listens on is the one its probes and PodMonitor use.
            env=app_env(cfg, names.WORKER) + [plain_env(settings_env("worker_probe_port"), str(health_port))],
            ports={"health": health_port},
            liveness=http_probe(contract.liveness_path, health_port, period=15, failures=4),
            readiness=http_probe(contract.readiness_path, health_port, period=10, failures=3),
        )
        self.deployment = k8s.apps.v1.Deployment(
            names.WORKER,
            metadata=metadata(names.WORKER, ns, names.WORKER, cfg),
            spec={
                "replicas": cfg.worker.replicas,
                "selector": {"match_labels": pod_labels},
                "template": {
                    "metadata": {"labels": labels(names.WORKER, cfg)},
                    "spec": pod_spec(
                        names.WORKER, [worker], run_as_user=contract.run_as_user, termination_grace_period_seconds=60
                    ),
                },
            },
            opts=self.child_opts(args.migration),
        )
        if cfg.worker.replicas > 1:
            pod_disruption_budget(names.WORKER, ns, names.WORKER, cfg, self, pod_labels=pod_labels, max_unavailable=1)
        monitor(
            "PodMonitor",
            names.WORKER,
            ns,
            cfg,
            self,
            pod_labels=pod_labels,
            port="health",
            path=contract.metrics_path,
            crds=args.monitoring_crds,
        )
        network_policy(
            f"{names.WORKER}-traffic",
            ns,
            names.WORKER,
            cfg,
            self,
            pod_labels=pod_labels,
            ingress=[ingress_from([peer(None, cfg.observability.namespace)], [health_port])],
            egress=app_egress(cfg),
        )
        self.register_outputs({"deployment": names.WORKER})
