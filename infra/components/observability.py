"""Metrics, dashboards and traces: prometheus-operator CRDs, kube-prometheus-stack, Jaeger v2."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from infra import names
from infra.components.common import (
    Component, camel_keys, container_security_context, helm_release, metadata, pod_security_context,
)
from infra.config import PROJECT, ConfigError, StackConfig

COMPONENT = "memstack-observability"
DASHBOARD_LABEL = "grafana_dashboard"
DASHBOARD_LABEL_VALUE = "1"
CONFIGMAP_LIMIT_BYTES = 1_000_000
# Jaeger's image runs as this user; the chart does not set it for v2.
JAEGER_UID = 10001


@dataclass(frozen=True)
class Dashboard:
    configmap_name: str
    file_name: str
    content: str


def find_dashboards(directory: Path) -> list[Dashboard]:
    """Every Grafana dashboard (a JSON object with `panels`, or wrapping a `dashboard`) below `directory`."""
    if not directory.is_dir():
        return []
    found: dict[str, Dashboard] = {}
    for path in sorted(directory.rglob("*.json")):
        text = path.read_text(encoding="utf-8")
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{PROJECT}:dashboardsDir: {path} is not valid JSON ({exc})") from None
        if not isinstance(document, dict) or not ({"panels", "dashboard"} & document.keys()):
            continue
        if len(text.encode()) > CONFIGMAP_LIMIT_BYTES:
            raise ConfigError(f"{PROJECT}:dashboardsDir: {path} is over the 1 MB a ConfigMap holds")
        slug = re.sub(r"[^a-z0-9]+", "-", str(path.relative_to(directory).with_suffix("")).lower()).strip("-")
        name = f"memstack-dashboard-{slug}"[:63].rstrip("-")
        if name in found:
            raise ConfigError(f"{PROJECT}:dashboardsDir: {path} and {found[name].file_name} map to one name {name}")
        found[name] = Dashboard(configmap_name=name, file_name=path.name, content=text)
    return list(found.values())


@dataclass(frozen=True)
class ObservabilityArgs:
    cfg: StackConfig


class Observability(Component):
    """CRDs first; then kube-prometheus-stack (its own CRDs off) and Jaeger; dashboards as ConfigMaps."""

    def __init__(self, name: str, args: ObservabilityArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("Observability", name, opts)
        cfg = args.cfg
        obs = cfg.observability
        charts = cfg.charts

        self.crds = helm_release(
            "prometheus-operator-crds", charts.prometheus_operator_crds,
            release_name=names.PROMETHEUS_CRDS_RELEASE, namespace=obs.namespace, values={}, parent=self,
        )
        self.kube_prometheus_stack = helm_release(
            "kube-prometheus-stack", charts.kube_prometheus_stack,
            release_name=names.KUBE_PROMETHEUS_RELEASE, namespace=obs.namespace,
            values=self._kube_prometheus_values(cfg), parent=self, depends_on=[self.crds],
        )
        self.jaeger = helm_release(
            "jaeger", charts.jaeger, release_name=names.JAEGER, namespace=obs.namespace,
            values=self._jaeger_values(cfg), parent=self,
        )
        dashboards = find_dashboards(cfg.dashboards_path)
        self.dashboards = [
            k8s.core.v1.ConfigMap(
                dashboard.configmap_name,
                metadata=metadata(
                    dashboard.configmap_name, obs.namespace, COMPONENT, cfg,
                    extra_labels={DASHBOARD_LABEL: DASHBOARD_LABEL_VALUE},
                ),
                data={dashboard.file_name: dashboard.content},
                opts=self.child_opts(),
            )
            for dashboard in dashboards
        ]
        self.register_outputs({"dashboards": [d.configmap_name for d in dashboards]})

    @staticmethod
    def _kube_prometheus_values(cfg: StackConfig) -> dict[str, Any]:
        obs = cfg.observability
        volume_spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": obs.prometheus_storage_size}},
        }
        if cfg.storage_class:
            volume_spec["storageClassName"] = cfg.storage_class
        open_selectors = {
            # Select every ServiceMonitor, PodMonitor, rule and probe, not only this release's.
            f"{kind}SelectorNilUsesHelmValues": False for kind in ("serviceMonitor", "podMonitor", "rule", "probe")
        }
        return {
            "fullnameOverride": names.KUBE_PROMETHEUS_FULLNAME,
            "crds": {"enabled": False},
            "prometheus": {
                "prometheusSpec": {
                    **open_selectors,
                    "serviceMonitorNamespaceSelector": {},
                    "podMonitorNamespaceSelector": {},
                    "retention": obs.prometheus_retention,
                    "resources": obs.prometheus_resources.to_k8s(),
                    "storageSpec": {"volumeClaimTemplate": {"spec": volume_spec}},
                }
            },
            "alertmanager": {"enabled": obs.alertmanager_enabled},
            "grafana": {
                "fullnameOverride": names.GRAFANA,
                "admin": {
                    "existingSecret": names.SECRET_GRAFANA_ADMIN,
                    "userKey": "admin-user",
                    "passwordKey": "admin-password",
                },
                "resources": obs.grafana_resources.to_k8s(),
                "sidecar": {
                    "dashboards": {
                        "enabled": True,
                        "label": DASHBOARD_LABEL,
                        "labelValue": DASHBOARD_LABEL_VALUE,
                        "searchNamespace": obs.namespace,
                    }
                },
            },
        }

    @staticmethod
    def _jaeger_values(cfg: StackConfig) -> dict[str, Any]:
        obs = cfg.observability
        return {
            "fullnameOverride": names.JAEGER,
            "provisionDataStore": {"cassandra": False, "elasticsearch": False, "kafka": False},
            "storage": {"type": "memory"},
            "jaeger": {
                "resources": obs.jaeger_resources.to_k8s(),
                "podSecurityContext": camel_keys(pod_security_context(JAEGER_UID)),
                "securityContext": camel_keys(container_security_context()),
            },
            "config": {
                # OTLP from every pod, not only localhost (the collector's default bind).
                "receivers": {
                    "otlp": {
                        "protocols": {
                            "grpc": {"endpoint": f"0.0.0.0:{names.OTLP_GRPC_PORT}"},
                            "http": {"endpoint": f"0.0.0.0:{names.OTLP_HTTP_PORT}"},
                        }
                    }
                },
                "extensions": {
                    "jaeger_storage": {
                        "backends": {"primary_store": {"memory": {"max_traces": obs.jaeger_max_traces}}}
                    }
                },
            },
        }

