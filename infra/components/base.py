"""The application namespace and its guard rails: default-deny traffic, DNS, quotas."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.common import Component, dns_egress, metadata, namespace
from infra.config import StackConfig

COMPONENT = "memstack-base"


@dataclass(frozen=True)
class BaseArgs:
    cfg: StackConfig


class Base(Component):
    """Namespace; default-deny NetworkPolicy plus DNS egress; LimitRange and ResourceQuota.

    Every workload in the namespace then needs its own NetworkPolicy to talk to anything.
    The observability namespace is created here too, bare: its charts own their pods' traffic.
    """

    def __init__(self, name: str, args: BaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Base", name, opts)
        cfg = args.cfg
        ns = cfg.namespace
        self.namespace = namespace(ns, cfg, self)
        self.observability_namespace = namespace(cfg.observability.namespace, cfg, self)
        in_namespace = self.child_opts(self.namespace)

        self.default_deny = k8s.networking.v1.NetworkPolicy(
            "default-deny",
            metadata=metadata("default-deny", ns, COMPONENT, cfg),
            spec={"pod_selector": {}, "policy_types": ["Ingress", "Egress"]},
            opts=in_namespace,
        )
        self.allow_dns = k8s.networking.v1.NetworkPolicy(
            "allow-dns-egress",
            metadata=metadata("allow-dns-egress", ns, COMPONENT, cfg),
            spec={"pod_selector": {}, "policy_types": ["Egress"], "egress": [dns_egress()]},
            opts=in_namespace,
        )
        quota = cfg.quota
        self.limit_range = k8s.core.v1.LimitRange(
            "container-defaults",
            metadata=metadata("container-defaults", ns, COMPONENT, cfg),
            spec={
                "limits": [
                    {
                        "type": "Container",
                        "default": quota.default_container.to_k8s()["limits"],
                        "default_request": quota.default_container.to_k8s()["requests"],
                    }
                ]
            },
            opts=in_namespace,
        )
        self.resource_quota = k8s.core.v1.ResourceQuota(
            "namespace-quota",
            metadata=metadata("namespace-quota", ns, COMPONENT, cfg),
            spec={
                "hard": {
                    "requests.cpu": quota.requests_cpu,
                    "requests.memory": quota.requests_memory,
                    "limits.cpu": quota.limits_cpu,
                    "limits.memory": quota.limits_memory,
                    "pods": str(quota.pods),
                }
            },
            opts=in_namespace,
        )
        self.register_outputs({"namespace": ns})
