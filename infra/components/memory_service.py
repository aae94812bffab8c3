"""The memory service: the HTTP API agents call, scaled by an HPA, reachable only by labelled clients."""

from __future__ import annotations

from typing import Any

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
from infra.config import Autoscaling, ScalingPolicy, StackConfig

TOKENS_VOLUME = "api-tokens"


MemoryServiceArgs = AppWorkloadArgs


class MemoryService(Component):
    def __init__(self, name: str, args: MemoryServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("MemoryService", name, opts)
        cfg = args.cfg
        svc = cfg.memory_service
        ns = cfg.namespace
        pod_labels = selector_labels(names.MEMORY_SERVICE)

        service_account(names.MEMORY_SERVICE, ns, names.MEMORY_SERVICE, cfg, self)
        self.deployment = k8s.apps.v1.Deployment(
            names.MEMORY_SERVICE,
            metadata=metadata(names.MEMORY_SERVICE, ns, names.MEMORY_SERVICE, cfg),
            spec={
                # The HPA owns the replica count after creation.
                "replicas": svc.autoscaling.min_replicas,
                "selector": {"match_labels": pod_labels},
                "strategy": {"type": "RollingUpdate", "rolling_update": {"max_surge": "25%", "max_unavailable": 0}},
                "template": {"metadata": {"labels": labels(names.MEMORY_SERVICE, cfg)}, "spec": self._pod(cfg)},
            },
            opts=self.child_opts(args.migration, ignore_changes=["spec.replicas"]),
        )
        self.service = k8s.core.v1.Service(
            names.MEMORY_SERVICE,
            metadata=metadata(names.MEMORY_SERVICE, ns, names.MEMORY_SERVICE, cfg),
            spec={
                "type": "ClusterIP",
                "selector": pod_labels,
                "ports": [{"name": "http", "port": names.SERVICE_PORT, "target_port": "http"}],
            },
            opts=self.child_opts(),
        )
        self.autoscaler = k8s.autoscaling.v2.HorizontalPodAutoscaler(
            names.MEMORY_SERVICE,
            metadata=metadata(names.MEMORY_SERVICE, ns, names.MEMORY_SERVICE, cfg),
            spec=autoscaler_spec(svc.autoscaling, names.MEMORY_SERVICE),
            opts=self.child_opts(self.deployment),
        )
        pod_disruption_budget(
            names.MEMORY_SERVICE,
            ns,
            names.MEMORY_SERVICE,
            cfg,
            self,
            pod_labels=pod_labels,
            max_unavailable=svc.pdb_max_unavailable,
        )
        monitor(
            "ServiceMonitor",
            names.MEMORY_SERVICE,
            ns,
            cfg,
            self,
            pod_labels=pod_labels,
            port="http",
            path=svc.contract.metrics_path,
            crds=args.monitoring_crds,
        )
        port = svc.contract.port
        network_policy(
            f"{names.MEMORY_SERVICE}-traffic",
            ns,
            names.MEMORY_SERVICE,
            cfg,
            self,
            pod_labels=pod_labels,
            ingress=[
                ingress_from([peer({svc.client_label: "true"}, "*")], [port]),
                ingress_from([peer(None, cfg.observability.namespace)], [port]),
            ],
            egress=app_egress(cfg),
        )
        self.register_outputs({"deployment": names.MEMORY_SERVICE})

    @staticmethod
    def _pod(cfg: StackConfig) -> dict[str, Any]:
        svc = cfg.memory_service
        contract = svc.contract
        api = container(
            "api",
            cfg.memstack_image.ref,
            svc.resources,
            pull_policy=cfg.pull_policy,
            command=contract.serve_command,
            env=[
                *app_env(cfg, names.MEMORY_SERVICE),
                plain_env(contract.tokens_file_env, contract.tokens_file),
                plain_env(contract.ready_requires_neo4j_env, "false"),
            ],
            ports={"http": contract.port},
            liveness=http_probe(contract.liveness_path, contract.port, period=10, failures=3),
            readiness=http_probe(contract.readiness_path, contract.port, period=5, failures=2),
            volume_mounts=[{"name": TOKENS_VOLUME, "mount_path": contract.tokens_mount_dir, "read_only": True}],
        )
        pod_labels = selector_labels(names.MEMORY_SERVICE)
        spread = [
            {
                "max_skew": 1,
                "topology_key": key,
                "when_unsatisfiable": mode,
                "label_selector": {"match_labels": pod_labels},
            }
            for key, mode in (
                ("topology.kubernetes.io/zone", svc.topology_spread.zone),
                ("kubernetes.io/hostname", svc.topology_spread.hostname),
            )
        ]
        return pod_spec(
            names.MEMORY_SERVICE,
            [api],
            run_as_user=contract.run_as_user,
            volumes=[
                {"name": TOKENS_VOLUME, "secret": {"secret_name": names.SECRET_API_TOKENS, "default_mode": 0o440}}
            ],
            topology_spread_constraints=spread,
            termination_grace_period_seconds=30,
        )


def autoscaler_spec(policy: Autoscaling, deployment: str) -> dict[str, Any]:
    """autoscaling/v2: CPU and memory targets; fast scale-up (Max of the two rules), slow scale-down."""
    up, down = policy.scale_up, policy.scale_down
    return {
        "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment", "name": deployment},
        "min_replicas": policy.min_replicas,
        "max_replicas": policy.max_replicas,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": resource, "target": {"type": "Utilization", "average_utilization": target}},
            }
            for resource, target in (("cpu", policy.cpu_utilization), ("memory", policy.memory_utilization))
        ],
        "behavior": {
            "scale_up": {
                "stabilization_window_seconds": up.stabilization_window_seconds,
                "select_policy": "Max",
                "policies": _rate_rules(up),
            },
            "scale_down": {
                "stabilization_window_seconds": down.stabilization_window_seconds,
                "policies": _rate_rules(down),
            },
        },
    }


def _rate_rules(rate: ScalingPolicy) -> list[dict[str, Any]]:
    rules = [{"type": "Percent", "value": rate.percent, "period_seconds": rate.period_seconds}]
    if rate.pods is not None:
        rules.append({"type": "Pods", "value": rate.pods, "period_seconds": rate.period_seconds})
    return rules
