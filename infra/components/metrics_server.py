"""metrics-server, for clusters that come without it (kind, k3d): the HPA reads CPU and memory from it.

Managed clusters run their own; the config allows this component on `local` and `dev` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from infra import names
from infra.components.common import Component, helm_release
from infra.config import StackConfig

# The metrics API is served to the API server from kube-system, where kind and kubeadm expect it.
METRICS_SERVER_NAMESPACE = "kube-system"


@dataclass(frozen=True)
class MetricsServerArgs:
    cfg: StackConfig


class MetricsServer(Component):
    def __init__(self, name: str, args: MetricsServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("MetricsServer", name, opts)
        cfg = args.cfg
        self.release = helm_release(
            "metrics-server",
            cfg.charts.metrics_server,
            release_name=names.METRICS_SERVER_RELEASE,
            namespace=METRICS_SERVER_NAMESPACE,
            values=self.chart_values(cfg),
            parent=self,
        )
        self.register_outputs({"release": names.METRICS_SERVER_RELEASE})

    @staticmethod
    def chart_values(cfg: StackConfig) -> dict[str, Any]:
        server = cfg.metrics_server
        return {
            # Added to the chart's defaultArgs (cert dir, preferred address types, resolution).
            "args": ["--kubelet-insecure-tls"] if server.kubelet_insecure_tls else [],
            "resources": server.resources.to_k8s(),
            "image": {"pullPolicy": cfg.pull_policy},
        }
