"""The stack config model: every stack file loads; every bad setting fails with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pulumi_runs import deploy_values

from infra.config import ConfigError, StackConfig, load_config, raw_project_config

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_FILES = sorted(REPO_ROOT.glob("Pulumi.*.yaml"))


def stack_values(stack: str) -> dict:
    """A stack's config as the CLI hands it to the program (every value a string), with its deploy inputs."""
    return deploy_values(stack)


def error_for(values: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(values)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_there_are_exactly_the_five_stacks():
    assert [p.name for p in STACK_FILES] == [
        "Pulumi.dev.yaml",
        "Pulumi.local.yaml",
        "Pulumi.prod-dr.yaml",
        "Pulumi.prod.yaml",
        "Pulumi.staging.yaml",
    ]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod", "local", "prod-dr"])
def test_every_stack_file_loads_and_names_its_environment(stack):
    cfg = load_config(stack_values(stack))
    assert cfg.environment == stack.removesuffix("-dr")
    assert cfg.standby is (stack == "prod-dr")


def test_project_file_points_at_the_program():
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "memstack"
    assert project["runtime"]["name"] == "python"
    assert project["main"] == "infra/"
    assert (REPO_ROOT / project["main"] / "__main__.py").is_file()


def test_no_credentials_in_stack_files():
    for path in STACK_FILES:
        text = path.read_text().lower()
        assert "password" not in text and "secure:" not in text, path.name


def test_only_the_project_namespace_is_read():
    values = raw_project_config(
        {"memstack:environment": "dev", "kubernetes:context": "kind-kind", "memstack:worker": '{"replicas": 2}'}
    )
    assert values == {"environment": "dev", "worker": {"replicas": 2}}


def test_top_level_scalars_arrive_as_strings_and_still_type_check():
    cfg = load_config(raw_project_config({"memstack:environment": "local", "memstack:storageClass": "fast"}))
    assert cfg.storage_class == "fast"


def test_unknown_key():
    assert error_for({"environment": "local", "replicaz": 3}) == (
        "memstack:replicaz: unknown key; allowed keys here: alertReceiverSecrets, alertsDir, apiTokenHashes,"
        " certManager, charts, dashboardsDir, embeddingApiKey, embeddings, environment, imagePullPolicy,"
        " loadtest, loadtestTokens, memoryService, metricsServer, migrations, namespace, neo4j, observability,"
        " postgres, quota, redis, storageClass, worker"
    )


def test_unknown_nested_key_names_its_path_and_the_allowed_keys():
    message = error_for({"environment": "dev", "memoryService": {"autoscaling": {"minReplica": 2}}})
    assert message.startswith("memstack:memoryService.autoscaling.minReplica: unknown key; allowed keys here: ")
    assert "minReplicas" in message and "maxReplicas" in message


def test_wrong_type():
    assert error_for({"environment": "dev", "worker": {"replicas": "many"}}) == (
        "memstack:worker.replicas: Input should be a valid integer, unable to parse string as an integer (got 'many')"
    )


def test_value_outside_the_allowed_set():
    assert error_for({"environment": "qa"}) == (
        "memstack:environment: Input should be 'dev', 'staging', 'prod' or 'local' (got 'qa')"
    )


def test_missing_environment():
    assert error_for({}) == "memstack:environment: required key is missing"


def test_hpa_min_above_max():
    assert (
        error_for({"environment": "dev", "memoryService": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}})
        == "memstack:memoryService.autoscaling.minReplicas: must be <= maxReplicas (3), got 5"
    )


def test_prod_without_backups():
    values = stack_values("prod")
    del values["postgres"]["backup"]["objectStore"]
    assert error_for(values) == (
        "memstack:postgres.backup.objectStore: prod requires an object store for Postgres backups"
    )
    values = stack_values("prod")
    values["neo4j"].update(edition="enterprise", acceptLicenseAgreement=True)
    assert error_for(values) == "memstack:neo4j.backup.enabled: prod requires true for the enterprise edition"
    values = stack_values("prod")
    values["redis"]["snapshot"]["enabled"] = False
    assert error_for(values) == "memstack:redis.snapshot.enabled: prod requires true"


def test_prod_below_high_availability():
    values = stack_values("prod")
    values["postgres"]["instances"] = 2
    assert error_for(values) == "memstack:postgres.instances: prod requires at least 3, got 2"


@pytest.mark.parametrize(
    "values, expected",
    [
        (
            {"memoryService": {"image": {"repository": "memstack", "tag": "latest"}}},
            "memstack:memoryService.image.tag: must be a pinned version, not 'latest'",
        ),
        (
            {
                "worker": {
                    "resources": {"cpuRequest": "2", "memoryRequest": "1Gi", "cpuLimit": "1", "memoryLimit": "1Gi"}
                }
            },
            "memstack:worker.resources.cpuRequest: must be <= cpuLimit (1), got 2",
        ),
        (
            {
                "worker": {
                    "resources": {"cpuRequest": "lots", "memoryRequest": "1Gi", "cpuLimit": 1, "memoryLimit": "1Gi"}
                }
            },
            "memstack:worker.resources.cpuRequest: 'lots' is not a Kubernetes quantity such as 250m, 1, 512Mi or 2Gi",
        ),
        (
            {"redis": {"maxMemory": "1Gi"}},
            "memstack:redis.maxMemory: must be below resources.memoryLimit (512Mi), got 1Gi",
        ),
        (
            {"neo4j": {"edition": "enterprise"}},
            "memstack:neo4j.acceptLicenseAgreement: enterprise edition requires true (a Neo4j licence)",
        ),
        ({"neo4j": {"servers": 3}}, "memstack:neo4j.servers: community edition runs exactly 1 server, got 3"),
        (
            {"postgres": {"backup": {"objectStore": {"destinationPath": "s3://b/p"}}}},
            "memstack:postgres.backup.objectStore.credentialsSecret: set exactly one of credentialsSecret or"
            " inheritFromIamRole=true",
        ),
        (
            {"postgres": {"backup": {"schedule": "0 3 * * *"}}},
            "memstack:postgres.backup.schedule: '0 3 * * *' is not a cron schedule of 6 fields",
        ),
        (
            {"namespace": "Memstack_Prod"},
            "memstack:namespace: 'Memstack_Prod' is not a DNS label (lowercase letters, digits and '-', at most 63)",
        ),
    ],
)
def test_impossible_combinations(values, expected):
    assert error_for({"environment": "dev", **values}) == expected


def test_several_problems_still_give_one_line():
    message = error_for({"environment": "dev", "a": 1, "b": 2})
    assert message.startswith("memstack:a: unknown key") and message.endswith("(and 1 more problem(s))")


def test_the_program_stops_on_bad_config_with_that_one_error(run_program):
    run = run_program("dev", 'memstack:memoryService={"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}')
    assert run.error["type"] == "ConfigError"
    assert run.error["message"] == "memstack:memoryService.autoscaling.minReplicas: must be <= maxReplicas (2), got 4"
    assert not [r for r in run.resources if r.type.startswith("kubernetes:")]


def test_defaults_are_the_seed_policy_and_the_service_contract():
    cfg = StackConfig(environment="local")
    hpa = cfg.memory_service.autoscaling
    assert (hpa.min_replicas, hpa.max_replicas, hpa.cpu_utilization, hpa.memory_utilization) == (3, 10, 70, 80)
    assert (hpa.scale_up.percent, hpa.scale_up.pods, hpa.scale_up.period_seconds) == (100, 4, 15)
    assert (hpa.scale_down.percent, hpa.scale_down.period_seconds, hpa.scale_down.stabilization_window_seconds) == (
        10,
        60,
        300,
    )
    contract = cfg.memory_service.contract
    assert (contract.port, contract.liveness_path, contract.readiness_path, contract.metrics_path) == (
        8080,
        "/health",
        "/ready",
        "/metrics",
    )
    assert cfg.memory_service.image is None and cfg.memstack_image.ref == "memstack:0.1.0"
