"""Metrics, dashboards, alerts and traces: prometheus-operator CRDs, kube-prometheus-stack, Jaeger v2.

Dashboards (`dashboardsDir`, generated Grafana JSON) become ConfigMaps that Grafana's sidecar
loads; rule files (`alertsDir`, Prometheus `groups:` files) become PrometheusRules that the
Prometheus rule selector picks; Alertmanager routes each severity to the receivers configured
for it, from a Secret the kit renders (the receivers' URLs are Pulumi secrets).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra import names
from infra.components.common import (
    Component,
    camel_keys,
    container_security_context,
    helm_release,
    metadata,
    pod_security_context,
)
from infra.config import PROJECT, AlertReceiver, ConfigError, StackConfig

COMPONENT = "memstack-observability"
DASHBOARD_LABEL = "grafana_dashboard"
DASHBOARD_LABEL_VALUE = "1"
CONFIGMAP_LIMIT_BYTES = 1_000_000
# Jaeger's image runs as this user; the chart does not set it for v2.
JAEGER_UID = 10001
JAEGER_HEALTH_PORT = 13133
# Prometheus loads the PrometheusRules carrying these labels (the chart's own rules carry them too).
RULE_SELECTOR_LABELS = {"release": names.KUBE_PROMETHEUS_RELEASE}
ALERTMANAGER_CONFIG_KEY = "alertmanager.yaml"
SEVERITIES = ("page", "ticket")


@dataclass(frozen=True)
class Dashboard:
    configmap_name: str
    file_name: str
    content: str


@dataclass(frozen=True)
class RuleFile:
    name: str
    file_name: str
    groups: list[dict[str, Any]]


def _object_name(prefix: str, relative: Path) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", str(relative.with_suffix("")).lower()).strip("-")
    return f"{prefix}-{slug}"[:63].rstrip("-")


def find_rule_files(directory: Path) -> list[RuleFile]:
    """Every Prometheus rule file (`groups:`) directly in `directory`; subdirectories (promtool tests) are not rules."""
    if not directory.is_dir():
        raise ConfigError(f"{PROJECT}:alertsDir: {directory} is not a directory")
    found: dict[str, RuleFile] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{PROJECT}:alertsDir: {path} is not valid YAML ({' '.join(str(exc).split())})") from None
        groups = document.get("groups") if isinstance(document, dict) else None
        if not isinstance(groups, list) or not groups:
            raise ConfigError(f"{PROJECT}:alertsDir: {path} is not a Prometheus rule file (no `groups:` list)")
        name = _object_name("memstack-rules", path.relative_to(directory))
        if name in found:
            raise ConfigError(f"{PROJECT}:alertsDir: {path} and {found[name].file_name} map to one name {name}")
        found[name] = RuleFile(name=name, file_name=path.name, groups=groups)
    return list(found.values())


def find_dashboards(directory: Path) -> list[Dashboard]:
    """Every Grafana dashboard (a JSON object with `panels`, or wrapping a `dashboard`) below `directory`."""
    if not directory.is_dir():
        raise ConfigError(f"{PROJECT}:dashboardsDir: {directory} is not a directory")
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
        name = _object_name("memstack-dashboard", path.relative_to(directory))
        if name in found:
            raise ConfigError(f"{PROJECT}:dashboardsDir: {path} and {found[name].file_name} map to one name {name}")
        found[name] = Dashboard(configmap_name=name, file_name=path.name, content=text)
    return list(found.values())


@dataclass(frozen=True)
class ObservabilityArgs:
    cfg: StackConfig


class Observability(Component):
    """CRDs first; then kube-prometheus-stack (its own CRDs off) and Jaeger; dashboards and rules."""

    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Observability", name, opts)
        cfg = args.cfg
        obs = cfg.observability
        charts = cfg.charts

        self.crds = helm_release(
            "prometheus-operator-crds",
            charts.prometheus_operator_crds,
            release_name=names.PROMETHEUS_CRDS_RELEASE,
            namespace=obs.namespace,
            values={},
            parent=self,
        )
        alertmanager_deps: list[pulumi.Resource] = []
        if obs.alertmanager_enabled:
            alertmanager_deps.append(
                k8s.core.v1.Secret(
                    names.SECRET_ALERTMANAGER,
                    metadata=metadata(names.SECRET_ALERTMANAGER, obs.namespace, COMPONENT, cfg),
                    type="Opaque",
                    string_data={
                        ALERTMANAGER_CONFIG_KEY: pulumi.Output.secret(
                            pulumi.Output.from_input(cfg.alert_receiver_secrets).apply(
                                lambda secrets: yaml.safe_dump(
                                    alertmanager_config(obs.alert_receivers, secrets), sort_keys=False
                                )
                            )
                        )
                    },
                    opts=self.child_opts(),
                )
            )
        self.kube_prometheus_stack = helm_release(
            "kube-prometheus-stack",
            charts.kube_prometheus_stack,
            release_name=names.KUBE_PROMETHEUS_RELEASE,
            namespace=obs.namespace,
            values=self._kube_prometheus_values(cfg),
            parent=self,
            depends_on=[self.crds, *alertmanager_deps],
        )
        self.jaeger = helm_release(
            "jaeger",
            charts.jaeger,
            release_name=names.JAEGER,
            namespace=obs.namespace,
            values=self._jaeger_values(cfg),
            parent=self,
        )
        dashboards = find_dashboards(cfg.dashboards_path)
        self.dashboards = [
            k8s.core.v1.ConfigMap(
                dashboard.configmap_name,
                metadata=metadata(
                    dashboard.configmap_name,
                    obs.namespace,
                    COMPONENT,
                    cfg,
                    extra_labels={DASHBOARD_LABEL: DASHBOARD_LABEL_VALUE},
                ),
                data={dashboard.file_name: dashboard.content},
                opts=self.child_opts(),
            )
            for dashboard in dashboards
        ]
        rule_files = find_rule_files(cfg.alerts_path)
        self.rules = [
            k8s.apiextensions.CustomResource(
                f"{rule_file.name}-prometheusrule",
                api_version="monitoring.coreos.com/v1",
                kind="PrometheusRule",
                metadata=metadata(rule_file.name, obs.namespace, COMPONENT, cfg, extra_labels=RULE_SELECTOR_LABELS),
                spec={"groups": rule_file.groups},
                opts=self.child_opts(self.crds),
            )
            for rule_file in rule_files
        ]
        self.secret_names = {"alertmanager": names.SECRET_ALERTMANAGER} if obs.alertmanager_enabled else {}
        self.register_outputs(
            {
                "dashboards": [d.configmap_name for d in dashboards],
                "rules": [r.name for r in rule_files],
            }
        )

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
            # Select every ServiceMonitor, PodMonitor and probe, not only this release's.
            f"{kind}SelectorNilUsesHelmValues": False
            for kind in ("serviceMonitor", "podMonitor", "probe")
        }
        if obs.alertmanager_enabled:
            alertmanager: dict[str, Any] = {
                "enabled": True,
                # The kit renders the configuration (receivers hold secrets) into its own Secret.
                "alertmanagerSpec": {"useExistingSecret": True, "configSecret": names.SECRET_ALERTMANAGER},
            }
        else:
            alertmanager = {"enabled": False}
        return {
            "fullnameOverride": names.KUBE_PROMETHEUS_FULLNAME,
            "crds": {"enabled": False},
            "prometheus": {
                "prometheusSpec": {
                    **open_selectors,
                    "serviceMonitorNamespaceSelector": {},
                    "podMonitorNamespaceSelector": {},
                    # Rules from any namespace that carry the release label: the chart's and the kit's.
                    "ruleSelector": {"matchLabels": dict(RULE_SELECTOR_LABELS)},
                    "ruleNamespaceSelector": {},
                    "retention": obs.prometheus_retention,
                    "resources": obs.prometheus_resources.to_k8s(),
                    "storageSpec": {"volumeClaimTemplate": {"spec": volume_spec}},
                }
            },
            "alertmanager": alertmanager,
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
            "jaeger": {
                "resources": obs.jaeger_resources.to_k8s(),
                "podSecurityContext": camel_keys(pod_security_context(JAEGER_UID)),
                "securityContext": camel_keys(container_security_context()),
                "image": {"pullPolicy": cfg.pull_policy},
                # Jaeger never calls the Kubernetes API.
                "serviceAccount": {"automountServiceAccountToken": False},
            },
            # The chart passes this, whole, as the collector's configuration (`--config`).
            "userconfig": jaeger_collector_config(obs.jaeger_max_traces),
        }


def jaeger_collector_config(max_traces: int) -> dict[str, Any]:
    """A complete Jaeger v2 configuration: OTLP in from every pod, a bounded in-memory store, the query UI."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["jaeger_storage_exporter"]},
            },
        },
        "extensions": {
            # The chart's probes ask for /status on this port.
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"0.0.0.0:{JAEGER_HEALTH_PORT}"}},
            "jaeger_query": {
                "storage": {"traces": "primary_store"},
                "http": {"endpoint": f"0.0.0.0:{names.JAEGER_UI_PORT}"},
            },
            # max_traces bounds the store: without it, it grows until the pod's memory limit kills it.
            "jaeger_storage": {"backends": {"primary_store": {"memory": {"max_traces": max_traces}}}},
        },
        # OTLP from every pod, not only localhost (the collector's default bind).
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"0.0.0.0:{names.OTLP_GRPC_PORT}"},
                    "http": {"endpoint": f"0.0.0.0:{names.OTLP_HTTP_PORT}"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "primary_store"}},
    }


def _receiver_config(receiver: AlertReceiver, secret: str) -> dict[str, Any]:
    if receiver.kind == "webhook":
        return {"webhook_configs": [{"url": secret, "send_resolved": True}]}
    if receiver.kind == "slack":
        slack: dict[str, Any] = {"api_url": secret, "send_resolved": True}
        if receiver.channel:
            slack["channel"] = receiver.channel
        return {"slack_configs": [slack]}
    return {"pagerduty_configs": [{"routing_key": secret, "send_resolved": True}]}


def alertmanager_config(receivers: list[AlertReceiver], secrets: dict[str, str]) -> dict[str, Any]:
    """Alertmanager's configuration: one route per severity, to every receiver that takes it.

    Alerts of no known severity, or of a severity no receiver takes, go to the first receiver
    (Alertmanager needs a root receiver; with none configured, a receiver that drops them).
    """
    if not receivers:
        return {"route": {"receiver": "none"}, "receivers": [{"name": "none"}]}
    routes = [
        {"receiver": receiver.name, "matchers": [f'severity="{severity}"'], "continue": True}
        for severity in SEVERITIES
        for receiver in receivers
        if severity in receiver.severities
    ]
    return {
        "route": {
            "receiver": receivers[0].name,
            "group_by": ["alertname", "namespace"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "receivers": [{"name": r.name, **_receiver_config(r, secrets[r.name])} for r in receivers],
    }
