"""Every core Kubernetes object the program creates is a valid Kubernetes 1.31 object (strict schema)."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from infra.config import quantity_value

KUBERNETES_VERSION = "1.31"
EXPECTED_KINDS = {
    "Namespace",
    "NetworkPolicy",
    "LimitRange",
    "ResourceQuota",
    "Secret",
    "ServiceAccount",
    "Deployment",
    "StatefulSet",
    "Service",
    "Job",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
}


def validate(manifest: dict) -> str:
    return kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_schemas_for_1_31_are_the_ones_used():
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    assert validate(namespace) == KUBERNETES_VERSION


def test_strict_validation_rejects_an_unknown_field_and_a_wrong_type():
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {"bogus": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(namespace)
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": "lots"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(quota)


def test_every_core_object_is_valid_against_kubernetes_1_31(run):
    failures = []
    for resource in run.core_objects:
        try:
            validate(resource.manifest)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            failures.append(f"{resource.kind} {resource.name}: {path}: {error.message}")
    assert not failures, "\n".join(failures)
    assert {r.kind for r in run.core_objects} >= EXPECTED_KINDS


def test_backup_cronjobs_exist_where_backups_are_enabled(runs):
    # Neo4j community has no online backup: its graph is rebuilt from Postgres instead.
    for stack in ("staging", "prod"):
        assert {r.name for r in runs[stack].kinds("CronJob")} == {"memstack-redis-snapshot"}
    for stack in ("dev", "local"):
        assert runs[stack].kinds("CronJob") == []


def test_a_validation_failure_in_a_captured_object_would_be_caught(runs):
    deployment = copy.deepcopy(runs["prod"].one("Deployment", "memstack-api").manifest)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"bad": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_postgres_cluster_is_a_well_formed_cloudnative_pg_cluster(run):
    cluster = run.one("Cluster", "memstack-pg").manifest
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Ready"
    assert spec["imageName"].startswith("ghcr.io/cloudnative-pg/postgresql:") and "standard" in spec["imageName"]
    initdb = spec["bootstrap"]["initdb"]
    assert initdb["secret"]["name"] == "memstack-postgres-app"
    assert run.one("Secret", "memstack-postgres-app").manifest["type"] == "kubernetes.io/basic-auth"
    assert "CREATE EXTENSION IF NOT EXISTS vector" in initdb["postInitApplicationSQL"]
    assert set(spec["resources"]) == {"requests", "limits"}
    assert spec["storage"]["size"].endswith("Gi")


def test_postgres_buffer_pool_is_a_quarter_of_the_pod_memory_limit(runs):
    for run in runs.values():
        spec = run.one("Cluster", "memstack-pg").manifest["spec"]
        limit_mb = quantity_value(spec["resources"]["limits"]["memory"]) // (1024 * 1024)
        parameters = spec["postgresql"]["parameters"]
        assert parameters["shared_buffers"] == f"{max(128, int(limit_mb) // 4)}MB", parameters
        assert parameters["effective_cache_size"] == f"{int(limit_mb) * 3 // 4}MB"
        assert parameters["jit"] == "off"


def test_object_store_backups_are_wired_to_the_cluster_when_configured(runs):
    for stack in ("staging", "prod"):
        run = runs[stack]
        store = run.one("ObjectStore", "memstack-pg-store").manifest
        assert store["apiVersion"] == "barmancloud.cnpg.io/v1"
        configuration = store["spec"]["configuration"]
        assert configuration["destinationPath"].startswith("s3://")
        assert configuration["s3Credentials"]["accessKeyId"] == {"name": "memstack-backup-s3", "key": "ACCESS_KEY_ID"}
        plugins = run.one("Cluster", "memstack-pg").manifest["spec"]["plugins"]
        assert plugins == [
            {
                "name": "barman-cloud.cloudnative-pg.io",
                "isWALArchiver": True,
                "parameters": {"barmanObjectName": "memstack-pg-store", "serverName": "memstack-pg"},
            }
        ]
        backup = run.one("ScheduledBackup", "memstack-pg-daily").manifest["spec"]
        assert backup["cluster"] == {"name": "memstack-pg"}
        assert backup["method"] == "plugin"
        assert backup["pluginConfiguration"] == {"name": "barman-cloud.cloudnative-pg.io"}
        assert len(backup["schedule"].split()) == 6
    for stack in ("dev", "local"):
        run = runs[stack]
        assert run.kinds("ObjectStore", "ScheduledBackup") == []
        assert "plugins" not in run.one("Cluster", "memstack-pg").manifest["spec"]


def test_monitors_select_pods_that_expose_the_named_port(run):
    service = run.one("Service", "memstack-api").manifest
    monitor = run.one("ServiceMonitor", "memstack-api").manifest
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"

    redis_service = run.one("Service", "memstack-redis").manifest
    redis_monitor = run.one("ServiceMonitor", "memstack-redis").manifest
    assert redis_monitor["spec"]["selector"]["matchLabels"].items() <= redis_service["metadata"]["labels"].items()
    assert redis_monitor["spec"]["endpoints"][0]["port"] == "metrics"

    worker = run.one("Deployment", "memstack-worker").manifest
    worker_monitor = run.one("PodMonitor", "memstack-worker").manifest
    worker_ports = {p["name"] for p in worker["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert worker_monitor["spec"]["podMetricsEndpoints"][0]["port"] in worker_ports
    pg_monitor = run.one("PodMonitor", "memstack-pg").manifest
    assert pg_monitor["spec"]["selector"]["matchLabels"] == {"cnpg.io/cluster": "memstack-pg"}
