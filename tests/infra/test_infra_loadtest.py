"""The optional in-cluster load test: a Locust master and N workers, under the mocks like the rest."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
from pulumi_runs import REPO_ROOT, Run, check_config

from infra.policy import rules
from memstack.load import PROFILES

LOADTEST = 'memstack:loadtest={"enabled": true, "workers": 3, "users": 60, "runTime": "2m", "profile": "working"}'
TOKENS = "memstack:loadtestTokens=tenant-a mock-load-token"


@pytest.fixture(scope="module")
def loaded(run_program_module) -> Run:
    run = run_program_module("staging", LOADTEST, TOKENS)
    assert run.error is None, run.error
    return run


def pod(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def test_off_by_default(runs):
    for run in runs.values():
        assert not [r for r in run.resources if "loadtest" in r.name]


def test_a_master_and_n_workers_run_the_profile_against_the_service(loaded):
    master = loaded.one("Job", "memstack-loadtest-master").manifest
    workers = loaded.one("Job", "memstack-loadtest-worker").manifest
    master_argv = pod(master)["containers"][0]["command"]
    assert master_argv[:3] == ["locust", "-f", "/opt/memstack/loadtests/locustfile.py"]
    assert master_argv[master_argv.index("--expect-workers") + 1] == "3"
    assert master_argv[master_argv.index("--host") + 1] == loaded.outputs["memoryServiceUrl"]
    assert master_argv[master_argv.index("-t") + 1] == "2m" and master_argv[-1] == PROFILES["working"]
    assert (workers["spec"]["parallelism"], workers["spec"]["completions"]) == (3, 3)
    worker_argv = pod(workers)["containers"][0]["command"]
    service = loaded.one("Service", "memstack-loadtest-master").manifest
    assert worker_argv[worker_argv.index("--master-host") + 1] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= master["spec"]["template"]["metadata"]["labels"].items()
    for job in (master, workers):
        assert job["spec"]["backoffLimit"] == 0  # a missed SLO gate fails the Job, and `pulumi up` with it
    api = loaded.one("Deployment", "memstack-api")
    for job in ("memstack-loadtest-master", "memstack-loadtest-worker"):
        assert loaded.depends_on(loaded.one("Job", job), api)


def test_the_profile_and_its_image_path_exist():
    locustfile = (REPO_ROOT / "loadtests" / "locustfile.py").read_text()
    for user_class in PROFILES.values():
        assert re.search(rf"^class {user_class}\(", locustfile, re.M), user_class
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "COPY loadtests /opt/memstack/loadtests" in dockerfile


def test_the_network_lets_workers_reach_the_service_and_the_master_only(loaded):
    workers = loaded.one("Job", "memstack-loadtest-worker").manifest
    worker_labels = workers["spec"]["template"]["metadata"]["labels"]
    api_ingress = loaded.one("NetworkPolicy", "memstack-api-traffic").manifest["spec"]["ingress"]
    assert any(
        rules.selector_matches(source.get("podSelector"), worker_labels)
        for rule in api_ingress
        for source in rule["from"]
    )
    egress = loaded.one("NetworkPolicy", "memstack-loadtest-worker-traffic").manifest["spec"]["egress"]
    assert sorted(port["port"] for rule in egress for port in rule["ports"]) == [5557, 8080]
    master_ingress = loaded.one("NetworkPolicy", "memstack-loadtest-master-traffic").manifest["spec"]["ingress"]
    assert master_ingress == [{"from": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "memstack-loadtest-worker", "app.kubernetes.io/part-of": "memstack"}}}],
        "ports": [{"protocol": "TCP", "port": 5557}]}]  # fmt: skip


def test_tokens_reach_locust_as_a_file_from_a_pulumi_secret(loaded):
    secret = loaded.one("Secret", "memstack-loadtest-tokens")
    assert "4dabf18193072939515e22adb298388d" in str(secret.raw_inputs["stringData"])
    for job in ("memstack-loadtest-master", "memstack-loadtest-worker"):
        container = pod(loaded.one("Job", job).manifest)["containers"][0]
        argv = container["command"]
        assert argv[argv.index("--tokens-file") + 1] == "/etc/memstack-load/tokens"
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/memstack-load")
        volume = next(v for v in pod(loaded.one("Job", job).manifest)["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == "memstack-loadtest-tokens" and mount["readOnly"] is True
        assert not [v for v in container["env"] if "valueFrom" in v]


def test_the_load_test_objects_are_valid_and_pass_the_policy(loaded):
    objects = [r for r in loaded.resources if "loadtest" in r.name and r.is_core_object]
    assert {r.kind for r in objects} == {"ServiceAccount", "Secret", "Service", "Job", "NetworkPolicy"}
    for resource in objects:
        kubernetes_validate.validate(resource.manifest, "1.31", strict=True)
        for rule in rules.OBJECT_RULES.values():
            assert rule(resource.manifest) == [], resource.name
    assert [m for rule in rules.STACK_RULES.values() for m in rule(loaded.manifests)] == []


def test_a_load_test_without_tokens_is_refused():
    run = check_config("staging", LOADTEST)
    assert run.error["type"] == "ConfigError"
    assert run.error["message"].startswith("memstack:loadtestTokens: the load test needs tokens")
