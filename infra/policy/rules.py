"""Kubernetes policy rules as plain functions over manifest dicts.

Each rule returns a list of violation messages (empty: compliant). Object rules look at one
manifest; stack rules look at every manifest of a stack at once. `__main__.py` wraps them into
a `pulumi_policy` PolicyPack; the tests call them directly. This module imports nothing from
Pulumi, so it runs anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Manifest = Mapping[str, Any]
ObjectRule = Callable[[Manifest], list[str]]
StackRule = Callable[[list[Manifest]], list[str]]

# Pulumi marks a secret value with this signature key when it crosses the RPC boundary.
_SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"
WORKLOAD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod"}
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL", re.I)
# A variable that names where a secret lives, not the secret itself.
_SECRET_REFERENCE = re.compile(r"_(FILE|PATH|DIR|NAME|REF)$", re.I)
_URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@:\s]*:[^/@\s]+@", re.I)


# --- manifests ------------------------------------------------------------------------------


def normalize(value: Any) -> Any:
    """Plain JSON: secrets unwrapped, integral floats (as numbers cross gRPC) made ints again."""
    if isinstance(value, Mapping):
        if _SECRET_SIGNATURE in value and "value" in value:
            return normalize(value["value"])
        return {key: normalize(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if hasattr(value, "value") and type(value).__name__ == "Secret":
        return normalize(value.value)
    return value


def describe(manifest: Manifest) -> str:
    meta = manifest.get("metadata") or {}
    return f"{manifest.get('kind')} {meta.get('namespace', '-')}/{meta.get('name', '?')}"


def pod_template(manifest: Manifest) -> Mapping[str, Any] | None:
    """The pod (metadata + spec) a workload runs, or None for objects that run no pods."""
    kind = manifest.get("kind")
    spec = manifest.get("spec") or {}
    if kind == "Pod":
        return manifest
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    if kind in WORKLOAD_KINDS:
        return spec.get("template")
    return None


def pod_spec(manifest: Manifest) -> Mapping[str, Any]:
    template = pod_template(manifest)
    return (template or {}).get("spec") or {}


def pod_labels(manifest: Manifest) -> Mapping[str, str]:
    template = pod_template(manifest)
    return ((template or {}).get("metadata") or {}).get("labels") or {}


def containers(manifest: Manifest, *, init: bool = True) -> list[Mapping[str, Any]]:
    spec = pod_spec(manifest)
    found = list(spec.get("containers") or [])
    return found + list(spec.get("initContainers") or []) if init else found


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Label-selector semantics for matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _namespace(manifest: Manifest) -> str:
    return (manifest.get("metadata") or {}).get("namespace", "default")


def _workloads(manifests: Iterable[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") in WORKLOAD_KINDS]


# --- object rules ---------------------------------------------------------------------------


def check_resources(manifest: Manifest) -> list[str]:
    """Every container requests and limits CPU and memory."""
    problems = []
    for item in containers(manifest):
        resources = item.get("resources") or {}
        for section in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if r not in (resources.get(section) or {})]
            if missing:
                problems.append(
                    f"{describe(manifest)}: container {item.get('name')} has no {section} for {', '.join(missing)}"
                )
    return problems


def check_probes(manifest: Manifest) -> list[str]:
    """Long-running containers have readiness and liveness probes (run-to-completion pods do not need them)."""
    if manifest.get("kind") not in LONG_RUNNING_KINDS:
        return []
    problems = []
    for item in containers(manifest, init=False):
        for probe in ("readinessProbe", "livenessProbe"):
            if not item.get(probe):
                problems.append(f"{describe(manifest)}: container {item.get('name')} has no {probe}")
    return problems


def image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in ("", "latest")


def check_image_tags(manifest: Manifest) -> list[str]:
    """No `latest` and no untagged images: a pinned tag or a digest."""
    return [
        f"{describe(manifest)}: container {item.get('name')} image {item.get('image')!r} is not pinned to a version"
        for item in containers(manifest)
        if not image_is_pinned(str(item.get("image") or ""))
    ]


def check_security_context(manifest: Manifest) -> list[str]:
    """runAsNonRoot, readOnlyRootFilesystem, allowPrivilegeEscalation false, capabilities dropped."""
    if pod_template(manifest) is None:
        return []
    pod_context = pod_spec(manifest).get("securityContext") or {}
    problems = []
    for item in containers(manifest):
        context = item.get("securityContext") or {}
        where = f"{describe(manifest)}: container {item.get('name')}"
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            problems.append(f"{where} may run as root (runAsNonRoot is not true)")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where} has a writable root filesystem")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} allows privilege escalation")
        dropped = [str(c).upper() for c in ((context.get("capabilities") or {}).get("drop") or [])]
        if "ALL" not in dropped:
            problems.append(f"{where} does not drop ALL capabilities")
        if context.get("privileged"):
            problems.append(f"{where} is privileged")
    return problems


def check_host_namespaces(manifest: Manifest) -> list[str]:
    """No hostNetwork, hostPID or hostIPC."""
    spec = pod_spec(manifest)
    return [
        f"{describe(manifest)}: pod uses {field}" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)
    ]


def check_service_account(manifest: Manifest) -> list[str]:
    """Pods run under their own ServiceAccount, not `default`."""
    if pod_template(manifest) is None:
        return []
    spec = pod_spec(manifest)
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    return [f"{describe(manifest)}: pod runs as the default ServiceAccount"] if account == "default" else []


def check_plain_secret_env(manifest: Manifest) -> list[str]:
    """Secret-looking variables come from a Secret (valueFrom), never a literal value."""
    problems = []
    for item in containers(manifest):
        for variable in item.get("env") or []:
            name, value = str(variable.get("name", "")), variable.get("value")
            if value is None or value == "":
                continue
            looks_secret = bool(_SECRET_NAME.search(name)) and not _SECRET_REFERENCE.search(name)
            if looks_secret or _URL_WITH_PASSWORD.match(str(value)):
                problems.append(
                    f"{describe(manifest)}: container {item.get('name')} sets {name} as a literal value;"
                    " use valueFrom.secretKeyRef"
                )
    return problems


# --- stack rules ----------------------------------------------------------------------------


def check_network_policy_coverage(manifests: list[Manifest]) -> list[str]:
    """Every workload's pods are selected by a NetworkPolicy written for them (a non-empty podSelector).

    A namespace-wide default-deny alone does not count: it isolates a workload, but a
    workload with no policy of its own is either unreachable or nobody decided what it may do.
    """
    policies = [m for m in manifests if m.get("kind") == "NetworkPolicy"]
    problems = []
    for workload in _workloads(manifests):
        labels = pod_labels(workload)
        covered = any(
            _namespace(policy) == _namespace(workload)
            and ((policy.get("spec") or {}).get("podSelector") or {})
            and selector_matches((policy.get("spec") or {}).get("podSelector"), labels)
            for policy in policies
        )
        if not covered:
            problems.append(f"{describe(workload)}: no NetworkPolicy selects its pods")
    return problems


def _max_replicas(workload: Manifest, autoscalers: list[Manifest]) -> int:
    replicas = int((workload.get("spec") or {}).get("replicas", 1))
    for hpa in autoscalers:
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if (
            _namespace(hpa) == _namespace(workload)
            and target.get("kind") == workload.get("kind")
            and target.get("name") == (workload.get("metadata") or {}).get("name")
        ):
            replicas = max(replicas, int((hpa.get("spec") or {}).get("maxReplicas", 1)))
    return replicas


def check_pdb_coverage(manifests: list[Manifest]) -> list[str]:
    """Every workload that can run more than one replica (itself or through an HPA) has a PDB."""
    autoscalers = [m for m in manifests if m.get("kind") == "HorizontalPodAutoscaler"]
    budgets = [m for m in manifests if m.get("kind") == "PodDisruptionBudget"]
    problems = []
    for workload in manifests:
        if workload.get("kind") not in {"Deployment", "StatefulSet", "ReplicaSet"}:
            continue
        if _max_replicas(workload, autoscalers) <= 1:
            continue
        labels = pod_labels(workload)
        if not any(
            _namespace(pdb) == _namespace(workload)
            and selector_matches((pdb.get("spec") or {}).get("selector"), labels)
            for pdb in budgets
        ):
            problems.append(f"{describe(workload)}: runs several replicas but no PodDisruptionBudget selects it")
    return problems


def check_hpa_targets(manifests: list[Manifest]) -> list[str]:
    """Every HorizontalPodAutoscaler scales an object that exists in the stack."""
    present = {
        (_namespace(m), m.get("kind"), (m.get("metadata") or {}).get("name"))
        for m in manifests
        if m.get("kind") in {"Deployment", "StatefulSet", "ReplicaSet"}
    }
    problems = []
    for hpa in (m for m in manifests if m.get("kind") == "HorizontalPodAutoscaler"):
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if (_namespace(hpa), target.get("kind"), target.get("name")) not in present:
            problems.append(f"{describe(hpa)}: scale target {target.get('kind')}/{target.get('name')} does not exist")
    return problems


OBJECT_RULES: dict[str, ObjectRule] = {
    "requests-and-limits": check_resources,
    "readiness-and-liveness-probes": check_probes,
    "pinned-images": check_image_tags,
    "hardened-security-context": check_security_context,
    "no-host-namespaces": check_host_namespaces,
    "own-service-account": check_service_account,
    "no-plain-secret-env": check_plain_secret_env,
}

STACK_RULES: dict[str, StackRule] = {
    "network-policy-coverage": check_network_policy_coverage,
    "pdb-for-replicated-workloads": check_pdb_coverage,
    "hpa-target-exists": check_hpa_targets,
}
