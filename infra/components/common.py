"""Builders shared by every component: labels, hardened pod specs, probes, network rules.

Kubernetes objects built here are typed `pulumi_kubernetes` inputs, so their dict keys are
written in snake_case and the SDK sends them in camelCase. Custom resources and Helm values
are sent verbatim and are written in camelCase where they are built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import ChartPin, Resources, StackConfig, camel_case
from infra.names import PART_OF

TMP_VOLUME = "tmp"
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}


def selector_labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": PART_OF}


def labels(component: str, cfg: StackConfig) -> dict[str, str]:
    return {
        **selector_labels(component),
        "app.kubernetes.io/managed-by": "pulumi",
        "memstack.dev/environment": cfg.environment,
    }


def metadata(
    name: str,
    namespace: str | None,
    component: str,
    cfg: StackConfig,
    extra_labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**labels(component, cfg), **(extra_labels or {})}}
    if namespace is not None:
        meta["namespace"] = namespace
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


class Component(pulumi.ComponentResource):
    """A memstack component whose children wait for whatever the component waits for.

    Pulumi does not hand a component's `depends_on` down to its children, so a child created
    with `self.child_opts()` names them itself; ordering (CRDs, operators, custom resources,
    migrations) then holds for the objects that reach the cluster, not only for the wrapper.
    """

    def __init__(self, kind: str, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"memstack:infra:{kind}", name, None, opts)
        inherited = opts.depends_on if opts is not None and opts.depends_on is not None else []
        self._inherited: list[pulumi.Resource] = (
            list(inherited) if isinstance(inherited, (list, tuple)) else [inherited]
        )

    def child_opts(self, *depends_on: pulumi.Resource, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=[*self._inherited, *depends_on], **kwargs)


# --- containers and pods ------------------------------------------------------------------


def container_security_context() -> dict[str, Any]:
    return {
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "run_as_non_root": True,
        "capabilities": {"drop": ["ALL"]},
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def pod_security_context(run_as_user: int) -> dict[str, Any]:
    return {
        "run_as_non_root": True,
        "run_as_user": run_as_user,
        "run_as_group": run_as_user,
        "fs_group": run_as_user,
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def http_probe(path: str, port: int, *, period: int = 10, failures: int = 3, delay: int = 0) -> dict[str, Any]:
    return {
        "http_get": {"path": path, "port": port},
        "period_seconds": period,
        "failure_threshold": failures,
        "initial_delay_seconds": delay,
        "timeout_seconds": 2,
    }


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "value_from": {"secret_key_ref": {"name": secret, "key": key}}}


def plain_env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def container(
    name: str,
    image: str,
    resources: Resources,
    *,
    pull_policy: str,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Sequence[Mapping[str, Any]] = (),
    ports: Mapping[str, int] = {},
    liveness: Mapping[str, Any] | None = None,
    readiness: Mapping[str, Any] | None = None,
    volume_mounts: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A container with requests, limits and the hardened security context; /tmp is writable."""
    spec: dict[str, Any] = {
        "name": name,
        "image": image,
        "image_pull_policy": pull_policy,
        "resources": resources.to_k8s(),
        "security_context": container_security_context(),
        "volume_mounts": [{"name": TMP_VOLUME, "mount_path": "/tmp"}, *volume_mounts],
    }
    optional = {
        "command": list(command) if command else None,
        "args": list(args) if args else None,
        "env": list(env) or None,
        "ports": [{"name": port_name, "container_port": port} for port_name, port in ports.items()] or None,
        "liveness_probe": liveness,
        "readiness_probe": readiness,
    }
    spec.update({key: value for key, value in optional.items() if value is not None})
    return spec


def pod_spec(
    service_account: str,
    containers: Sequence[Mapping[str, Any]],
    *,
    run_as_user: int,
    volumes: Sequence[Mapping[str, Any]] = (),
    init_containers: Sequence[Mapping[str, Any]] = (),
    automount_token: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "service_account_name": service_account,
        "automount_service_account_token": automount_token,
        "security_context": pod_security_context(run_as_user),
        "containers": list(containers),
        "volumes": [{"name": TMP_VOLUME, "empty_dir": {"size_limit": "64Mi"}}, *volumes],
        **extra,
    }
    if init_containers:
        spec["init_containers"] = list(init_containers)
    return spec


def service_account(
    name: str,
    namespace: str,
    component: str,
    cfg: StackConfig,
    parent: Component,
    *,
    automount: bool = False,
) -> k8s.core.v1.ServiceAccount:
    """One ServiceAccount per workload; no API token unless the workload calls the API."""
    return k8s.core.v1.ServiceAccount(
        name,
        metadata=metadata(name, namespace, component, cfg),
        automount_service_account_token=automount,
        opts=parent.child_opts(),
    )


def pod_disruption_budget(
    name: str,
    namespace: str,
    component: str,
    cfg: StackConfig,
    parent: Component,
    *,
    pod_labels: Mapping[str, str],
    min_available: int | None = None,
    max_unavailable: int | None = None,
) -> k8s.policy.v1.PodDisruptionBudget:
    budget = {"min_available": min_available} if min_available is not None else {"max_unavailable": max_unavailable}
    return k8s.policy.v1.PodDisruptionBudget(
        name,
        metadata=metadata(name, namespace, component, cfg),
        spec={"selector": {"match_labels": dict(pod_labels)}, **budget},
        opts=parent.child_opts(),
    )


def persistent_volume_claim(
    name: str,
    namespace: str,
    component: str,
    cfg: StackConfig,
    parent: Component,
    *,
    size: str,
) -> k8s.core.v1.PersistentVolumeClaim:
    spec: dict[str, Any] = {"access_modes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if cfg.storage_class:
        spec["storage_class_name"] = cfg.storage_class
    return k8s.core.v1.PersistentVolumeClaim(
        name, metadata=metadata(name, namespace, component, cfg), spec=spec, opts=parent.child_opts()
    )


def namespace(name: str, cfg: StackConfig, parent: Component) -> k8s.core.v1.Namespace:
    return k8s.core.v1.Namespace(name, metadata=metadata(name, None, name, cfg), opts=parent.child_opts())


# --- network policies ---------------------------------------------------------------------


def peer(pod_labels: Mapping[str, str] | None = None, namespace: str | None = None) -> dict[str, Any]:
    """Pods with these labels, in this namespace (None: the policy's own; "*": any namespace)."""
    selected: dict[str, Any] = {}
    if pod_labels is not None:
        selected["pod_selector"] = {"match_labels": dict(pod_labels)}
    if namespace == "*":
        selected["namespace_selector"] = {}
    elif namespace is not None:
        selected["namespace_selector"] = {"match_labels": {"kubernetes.io/metadata.name": namespace}}
    return selected


def tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def ingress_from(peers: Iterable[Mapping[str, Any]], ports: Sequence[int]) -> dict[str, Any]:
    return {"from_": list(peers), "ports": tcp(*ports)}


def egress_to(peers: Iterable[Mapping[str, Any]], ports: Sequence[int]) -> dict[str, Any]:
    return {"to": list(peers), "ports": tcp(*ports)}


def network_policy(
    name: str,
    namespace: str,
    component: str,
    cfg: StackConfig,
    parent: Component,
    *,
    pod_labels: Mapping[str, str],
    ingress: Sequence[Mapping[str, Any]] = (),
    egress: Sequence[Mapping[str, Any]] = (),
) -> k8s.networking.v1.NetworkPolicy:
    """Allow exactly these flows for the selected pods; the namespace default-denies the rest."""
    return k8s.networking.v1.NetworkPolicy(
        name,
        metadata=metadata(name, namespace, component, cfg),
        spec={
            "pod_selector": {"match_labels": dict(pod_labels)},
            "policy_types": ["Ingress", "Egress"],
            "ingress": list(ingress),
            "egress": list(egress),
        },
        opts=parent.child_opts(),
    )


def dns_egress() -> dict[str, Any]:
    return {
        "to": [peer(DNS_POD_LABELS, DNS_NAMESPACE)],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


# --- charts and monitors ------------------------------------------------------------------


def camel_keys(value: Any) -> Any:
    """Helm values are sent verbatim, so dicts from the snake_case builders are converted."""
    if isinstance(value, dict):
        return {camel_case(key): camel_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [camel_keys(item) for item in value]
    return value


def helm_release(
    resource_name: str,
    pin: ChartPin,
    *,
    release_name: str,
    namespace: str,
    values: Mapping[str, Any],
    parent: Component,
    depends_on: Sequence[pulumi.Resource] = (),
) -> k8s.helm.v3.Release:
    """A Helm release as one Pulumi resource.

    `helm.v3.Release` (not `helm.v4.Chart`) because it is a single custom resource whose
    chart, version, repository and values reach the engine as plain inputs: under Pulumi
    mocks they are captured and asserted without a cluster or the helm binary, whereas
    `Chart` renders templates locally (needs helm and the chart) or is a remote component.
    The price: the objects inside the chart are invisible to mocks and to policy packs.
    """
    return k8s.helm.v3.Release(
        resource_name,
        name=release_name,
        chart=pin.chart,
        version=pin.version,
        repository_opts={"repo": pin.repository},
        namespace=namespace,
        values=dict(values),
        timeout=pin.timeout_seconds,
        opts=parent.child_opts(*depends_on),
    )


def monitor(
    kind: str,
    name: str,
    namespace: str,
    cfg: StackConfig,
    parent: Component,
    *,
    pod_labels: Mapping[str, str],
    port: str | int,
    path: str,
    crds: pulumi.Resource,
) -> k8s.apiextensions.CustomResource:
    """A ServiceMonitor or PodMonitor; it depends on the release that installs its CRD.

    `port` is a port name, or a number for pods whose chart leaves the metrics port unnamed.
    """
    endpoints = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
    target = {"port": port} if isinstance(port, str) else {"targetPort": port}
    return k8s.apiextensions.CustomResource(
        f"{name}-{kind.lower()}",
        api_version="monitoring.coreos.com/v1",
        kind=kind,
        metadata=metadata(name, namespace, name, cfg),
        spec={
            "selector": {"matchLabels": dict(pod_labels)},
            endpoints: [{**target, "path": path, "interval": "30s"}],
        },
        opts=parent.child_opts(crds),
    )


def app_job(
    name: str,
    cfg: StackConfig,
    parent: Component,
    *,
    step: str,
    command: Sequence[str],
    resources: Resources,
    env: Sequence[Mapping[str, Any]],
    egress: Sequence[Mapping[str, Any]],
    backoff_limit: int,
    active_deadline_seconds: int,
    run_annotations: Mapping[str, str] | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
) -> k8s.batch.v1.Job:
    """A run-to-completion Job of the memstack image, with its own ServiceAccount and NetworkPolicy.

    Pulumi waits for a Job to complete, and waits as long as the Job itself may run (its own
    default would give up after ten minutes). A Job's pod template is immutable, so a change to
    it (a new image, new `run_annotations`) replaces the Job, which then runs again.
    """
    contract = cfg.memory_service.contract
    service_account(name, cfg.namespace, name, cfg, parent)
    step_container = container(
        step, cfg.memstack_image.ref, resources, pull_policy=cfg.pull_policy, command=command, env=env
    )
    template_metadata: dict[str, Any] = {"labels": labels(name, cfg)}
    if run_annotations:
        template_metadata["annotations"] = dict(run_annotations)
    job = k8s.batch.v1.Job(
        name,
        metadata=metadata(
            name, cfg.namespace, name, cfg, annotations={"pulumi.com/timeoutSeconds": str(active_deadline_seconds)}
        ),
        spec={
            "backoff_limit": backoff_limit,
            "active_deadline_seconds": active_deadline_seconds,
            "template": {
                "metadata": template_metadata,
                "spec": pod_spec(name, [step_container], run_as_user=contract.run_as_user, restart_policy="Never"),
            },
        },
        opts=parent.child_opts(*depends_on, delete_before_replace=True),
    )
    network_policy(f"{name}-traffic", cfg.namespace, name, cfg, parent, pod_labels=selector_labels(name), egress=egress)
    return job


def backup_cron_job(
    name: str,
    namespace: str,
    cfg: StackConfig,
    parent: Component,
    *,
    schedule: str,
    pod: Mapping[str, Any],
) -> k8s.batch.v1.CronJob:
    """A backup CronJob: never two at once, one try per run, a bounded run time."""
    return k8s.batch.v1.CronJob(
        name,
        metadata=metadata(name, namespace, name, cfg),
        spec={
            "schedule": schedule,
            "concurrency_policy": "Forbid",
            "successful_jobs_history_limit": 3,
            "failed_jobs_history_limit": 3,
            "job_template": {
                "spec": {
                    "backoff_limit": 0,
                    "active_deadline_seconds": 3600,
                    "template": {"metadata": {"labels": labels(name, cfg)}, "spec": dict(pod)},
                }
            },
        },
        opts=parent.child_opts(),
    )
