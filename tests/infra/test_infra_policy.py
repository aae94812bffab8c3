"""The policy pack: the kit's own objects pass every rule, and each rule catches a bad object."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from infra.policy import rules
from infra.policy.pack import build_policies, is_kubernetes_object


def test_the_kits_objects_pass_every_object_rule(run):
    violations = [
        message for manifest in run.manifests for rule in rules.OBJECT_RULES.values() for message in rule(manifest)
    ]
    assert not violations, "\n".join(violations)
    assert len(run.manifests) > 30


def test_the_kits_objects_pass_every_stack_rule(run):
    violations = [message for rule in rules.STACK_RULES.values() for message in rule(run.manifests)]
    assert not violations, "\n".join(violations)


def test_rules_look_at_every_workload_kind_the_kit_creates(run):
    workloads = [m for m in run.manifests if rules.pod_template(m) is not None]
    assert {m["kind"] for m in workloads} >= {"Deployment", "StatefulSet", "Job"}
    assert all(rules.containers(m) for m in workloads)


# --- one deliberately bad object per rule ---------------------------------------------------


@pytest.fixture
def deployment(runs) -> dict:
    """A compliant Deployment taken from the prod run, to break one rule at a time."""
    return copy.deepcopy(runs["prod"].one("Deployment", "memstack-api").manifest)


def first_container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def test_compliant_deployment_starts_clean(deployment):
    assert all(rule(deployment) == [] for rule in rules.OBJECT_RULES.values())


def test_missing_limits_are_caught(deployment):
    del first_container(deployment)["resources"]["limits"]["memory"]
    assert rules.check_resources(deployment) == [
        "Deployment memstack/memstack-api: container api has no limits for memory"
    ]


def test_missing_probes_are_caught(deployment):
    del first_container(deployment)["readinessProbe"]
    del first_container(deployment)["livenessProbe"]
    assert len(rules.check_probes(deployment)) == 2


def test_jobs_need_no_probes(runs):
    job = runs["prod"].one("Job", "memstack-migrate").manifest
    assert "readinessProbe" not in first_container(job)
    assert rules.check_probes(job) == []


@pytest.mark.parametrize("image", ["memstack", "memstack:latest", "registry:5000/memstack", "ghcr.io/x/y:"])
def test_unpinned_images_are_caught(deployment, image):
    first_container(deployment)["image"] = image
    assert rules.check_image_tags(deployment)


@pytest.mark.parametrize("image", ["registry:5000/memstack:1.2.3", "x/y@sha256:" + "a" * 64])
def test_pinned_images_pass(image):
    assert rules.image_is_pinned(image)


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("runAsNonRoot", False, "may run as root"),
        ("readOnlyRootFilesystem", False, "writable root filesystem"),
        ("allowPrivilegeEscalation", True, "allows privilege escalation"),
        ("capabilities", {"drop": ["NET_RAW"]}, "does not drop ALL capabilities"),
    ],
)
def test_weak_security_contexts_are_caught(deployment, field, value, expected):
    first_container(deployment)["securityContext"][field] = value
    if field == "runAsNonRoot":
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
    problems = rules.check_security_context(deployment)
    assert len(problems) == 1 and expected in problems[0]


@pytest.mark.parametrize("field", ["hostNetwork", "hostPID", "hostIPC"])
def test_host_namespaces_are_caught(deployment, field):
    deployment["spec"]["template"]["spec"][field] = True
    assert rules.check_host_namespaces(deployment) == [f"Deployment memstack/memstack-api: pod uses {field}"]


@pytest.mark.parametrize("account", [None, "default"])
def test_default_service_account_is_caught(deployment, account):
    pod = deployment["spec"]["template"]["spec"]
    pod.pop("serviceAccountName")
    if account:
        pod["serviceAccountName"] = account
    assert rules.check_service_account(deployment)


@pytest.mark.parametrize(
    "variable",
    [
        {"name": "NEO4J_PASSWORD", "value": "hunter2"},
        {"name": "API_TOKEN", "value": "abc"},
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"},
        {"name": "POSTGRES_URL", "value": "postgresql://memstack:hunter2@db:5432/memstack"},
    ],
)
def test_plain_secret_env_is_caught(deployment, variable):
    first_container(deployment)["env"].append(variable)
    assert len(rules.check_plain_secret_env(deployment)) == 1


def test_secret_file_paths_and_secret_refs_are_not_flagged(deployment):
    env = {v["name"]: v for v in first_container(deployment)["env"]}
    assert env["MEMSTACK_TOKENS_FILE"]["value"].startswith("/")
    assert "valueFrom" in env["NEO4J_PASSWORD"]
    assert rules.check_plain_secret_env(deployment) == []


def test_workload_without_its_own_network_policy_is_caught(runs):
    manifests = [m for m in runs["prod"].manifests if m["metadata"]["name"] != "memstack-api-traffic"]
    # The namespace's default-deny (empty podSelector) is still there, and does not count.
    assert any(m["kind"] == "NetworkPolicy" and m["spec"]["podSelector"] == {} for m in manifests)
    assert rules.check_network_policy_coverage(manifests) == [
        "Deployment memstack/memstack-api: no NetworkPolicy selects its pods"
    ]


def test_replicated_workload_without_pdb_is_caught(runs):
    manifests = [m for m in runs["prod"].manifests if m["kind"] != "PodDisruptionBudget"]
    problems = rules.check_pdb_coverage(manifests)
    assert "Deployment memstack/memstack-api: runs several replicas but no PodDisruptionBudget selects it" in problems
    assert (
        "Deployment memstack/memstack-worker: runs several replicas but no PodDisruptionBudget selects it" in problems
    )
    # Redis runs one replica: it needs none.
    assert not any("memstack-redis" in p for p in problems)


def test_hpa_makes_a_single_replica_deployment_count_as_replicated(runs):
    manifests = [m for m in runs["dev"].manifests if m["kind"] != "PodDisruptionBudget"]
    api = next(m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "memstack-api")
    assert api["spec"]["replicas"] == 1
    assert any("memstack-api" in p for p in rules.check_pdb_coverage(manifests))


def test_hpa_with_missing_target_is_caught(runs):
    manifests = copy.deepcopy(runs["prod"].manifests)
    hpa = next(m for m in manifests if m["kind"] == "HorizontalPodAutoscaler")
    hpa["spec"]["scaleTargetRef"]["name"] = "no-such-deployment"
    assert rules.check_hpa_targets(manifests) == [
        "HorizontalPodAutoscaler memstack/memstack-api: scale target Deployment/no-such-deployment does not exist"
    ]


def test_selector_semantics():
    labels = {"app": "a", "tier": "api"}
    assert rules.selector_matches({"matchLabels": {"app": "a"}}, labels)
    assert not rules.selector_matches({"matchLabels": {"app": "b"}}, labels)
    assert rules.selector_matches({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["api"]}]}, labels)
    assert not rules.selector_matches({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)
    assert rules.selector_matches({}, labels)
    assert not rules.selector_matches(None, labels)


# --- the pulumi_policy wrappers -------------------------------------------------------------


def test_pack_has_one_policy_per_rule():
    assert [p.name for p in build_policies()] == [*rules.OBJECT_RULES, *rules.STACK_RULES]


def test_resource_policy_reports_violations_of_kubernetes_objects_only(deployment):
    del first_container(deployment)["resources"]
    policy = next(p for p in build_policies() if p.name == "requests-and-limits")
    reported: list[str] = []
    args = SimpleNamespace(resource_type="kubernetes:apps/v1:Deployment", props=deployment)
    policy.validate(args, lambda message, urn=None: reported.append(message))
    assert len(reported) == 2
    helm = SimpleNamespace(resource_type="kubernetes:helm.sh/v3:Release", props=deployment)
    policy.validate(helm, lambda message, urn=None: reported.append(message))
    assert len(reported) == 2
    assert not is_kubernetes_object("kubernetes:helm.sh/v3:Release")


def test_stack_policy_sees_the_whole_stack(runs):
    policy = next(p for p in build_policies() if p.name == "hpa-target-exists")
    resources = [
        SimpleNamespace(resource_type=r.type, props=r.raw_inputs)
        for r in runs["prod"].resources
        if not (r.kind == "Deployment" and r.name == "memstack-api")
    ]
    reported: list[str] = []
    policy.validate(SimpleNamespace(resources=resources), lambda message, urn=None: reported.append(message))
    assert reported == [
        "HorizontalPodAutoscaler memstack/memstack-api: scale target Deployment/memstack-api does not exist"
    ]
