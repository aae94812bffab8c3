"""The run-to-completion Jobs of the memstack image: the schema migration and the graph rebuild.

Both come from one builder; these tests hold each Job to what that builder promises, so a Job
built another way (or a builder that drops a piece) fails here.
"""

from __future__ import annotations

import pytest

from infra import names
from infra.components.migrations import SCHEMA_STORES
from infra.config import StackConfig

JOBS = (names.MIGRATIONS, names.NEO4J_REBUILD)
STORE_PODS = {
    "postgres": (names.POSTGRES_POD_LABELS, names.POSTGRES_PORT),
    "neo4j": (names.NEO4J_POD_LABELS, names.NEO4J_BOLT_PORT),
    "redis": ({"app.kubernetes.io/name": names.REDIS, "app.kubernetes.io/part-of": "memstack"}, names.REDIS_PORT),
}


@pytest.fixture(scope="module")
def rebuilding(run_program_module):
    """dev with a graph rebuild requested: both Jobs in one run."""
    run = run_program_module("dev", 'memstack:neo4j={"rebuild": {"enabled": true, "runId": "r7"}}')
    assert run.error is None, run.error
    return run


@pytest.mark.parametrize("job_name", JOBS)
def test_each_job_runs_once_under_its_own_identity(rebuilding, job_name):
    job = rebuilding.one("Job", job_name)
    manifest = job.manifest
    pod = manifest["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == job_name
    assert pod["automountServiceAccountToken"] is False
    assert rebuilding.one("ServiceAccount", job_name).manifest["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert [c["securityContext"]["readOnlyRootFilesystem"] for c in pod["containers"]] == [True]
    # Pulumi waits exactly as long as Kubernetes lets the Job run, not its own ten-minute default.
    deadline = manifest["spec"]["activeDeadlineSeconds"]
    assert manifest["metadata"]["annotations"]["pulumi.com/timeoutSeconds"] == str(deadline)
    # The pod template is immutable: a change replaces the Job, which then runs again.
    assert job.delete_before_replace


@pytest.mark.parametrize("job_name", JOBS)
def test_each_job_reaches_only_the_schema_stores(rebuilding, job_name):
    policy = rebuilding.one("NetworkPolicy", f"{job_name}-traffic").manifest["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == job_name
    assert policy["ingress"] == []
    reached = {
        (tuple(sorted(rule["to"][0]["podSelector"]["matchLabels"].items())), int(rule["ports"][0]["port"]))
        for rule in policy["egress"]
    }
    for store, (pod_labels, port) in STORE_PODS.items():
        assert ((tuple(sorted(pod_labels.items())), port) in reached) == (store in SCHEMA_STORES), store
    env = {
        v["name"] for v in rebuilding.one("Job", job_name).manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    contract = StackConfig(environment="local").memory_service.contract.env
    assert {contract.postgres_url, contract.neo4j_uri, contract.neo4j_password} <= env
    assert contract.redis_url not in env


def test_the_jobs_differ_only_where_their_work_does(rebuilding):
    migrate, rebuild = (rebuilding.one("Job", name).manifest for name in JOBS)
    assert [c["command"] for c in migrate["spec"]["template"]["spec"]["containers"]] == [["memstack", "migrate"]]
    assert [c["command"] for c in rebuild["spec"]["template"]["spec"]["containers"]] == [
        ["memstack", "graph", "rebuild"]
    ]
    assert rebuild["spec"]["template"]["metadata"]["annotations"] == {"memstack.dev/rebuild-run": "r7"}
    assert "annotations" not in migrate["spec"]["template"]["metadata"]
    assert rebuilding.depends_on(rebuilding.one("Job", names.NEO4J_REBUILD), rebuilding.one("Job", names.MIGRATIONS))
