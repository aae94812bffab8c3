"""Per-environment shape, the memory service contract, credentials handling and stack outputs."""

from __future__ import annotations

import json

from infra.config import StackConfig, quantity_value
from memory_core.settings import CONNECTION_ENV_VARS

SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"


def pod(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def api_container(run) -> dict:
    return pod(run.one("Deployment", "memstack-api").manifest)["containers"][0]


# --- per environment ------------------------------------------------------------------------


def test_prod_is_highly_available(runs):
    prod = runs["prod"]
    assert prod.one("Cluster", "memstack-pg").manifest["spec"]["instances"] >= 3
    assert prod.one("Cluster", "memstack-pg").manifest["spec"]["affinity"]["podAntiAffinityType"] == "required"
    hpa = prod.one("HorizontalPodAutoscaler", "memstack-api").manifest["spec"]
    assert hpa["minReplicas"] >= 3
    budgets = {r.name for r in prod.kinds("PodDisruptionBudget")}
    assert {"memstack-api", "memstack-worker", "memstack-redis"} <= budgets
    assert prod.one("PodDisruptionBudget", "memstack-redis").manifest["spec"] == {
        "selector": {
            "matchLabels": {"app.kubernetes.io/name": "memstack-redis", "app.kubernetes.io/part-of": "memstack"}
        },
        "minAvailable": 1,
    }
    spread = pod(prod.one("Deployment", "memstack-api").manifest)["topologySpreadConstraints"]
    assert {c["topologyKey"]: c["whenUnsatisfiable"] for c in spread} == {
        "topology.kubernetes.io/zone": "ScheduleAnyway",
        "kubernetes.io/hostname": "DoNotSchedule",
    }
    assert all(c["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == "memstack-api" for c in spread)


def test_prod_uses_the_seed_autoscaling_policy(runs):
    hpa = runs["prod"].one("HorizontalPodAutoscaler", "memstack-api").manifest["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "memstack-api"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    assert hpa["behavior"]["scaleUp"] == {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15},
        ],
    }
    assert hpa["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 300,
        "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}],
    }


def test_dev_and_local_are_small(runs):
    for stack in ("dev", "local"):
        run = runs[stack]
        assert run.one("Cluster", "memstack-pg").manifest["spec"]["instances"] == 1
        assert run.one("HorizontalPodAutoscaler", "memstack-api").manifest["spec"]["minReplicas"] == 1
        assert run.one("Deployment", "memstack-api").manifest["spec"]["replicas"] == 1
        assert run.one("Deployment", "memstack-worker").manifest["spec"]["replicas"] == 1
        for resource in run.kinds("Deployment", "StatefulSet", "Job"):
            for container in pod(resource.manifest)["containers"]:
                requests = container["resources"]["requests"]
                assert quantity_value(requests["cpu"]) <= 0.1, (stack, resource.name)
                assert quantity_value(requests["memory"]) <= 128 * 2**20, (stack, resource.name)
        quota = run.one("ResourceQuota", "namespace-quota").manifest["spec"]["hard"]
        assert quantity_value(quota["requests.cpu"]) <= 4


def test_local_targets_kind(runs):
    local = runs["local"]
    assert api_container(local)["image"] == "memstack:0.1.0"
    assert local.one("Cluster", "memstack-pg").manifest["spec"]["storage"]["storageClass"] == "standard"
    assert not local.kinds("ObjectStore") and not [r for r in local.kinds("Release") if r.name == "cert-manager"]


def test_the_service_starts_only_after_stores_and_migrations(run):
    deployment = run.one("Deployment", "memstack-api")
    assert deployment.ignore_changes == ["spec.replicas"]
    job = run.one("Job", "memstack-migrate")
    assert job.delete_before_replace
    assert run.depends_on(deployment, job)
    assert run.depends_on(run.one("Deployment", "memstack-worker"), job)
    assert run.depends_on(job, run.one("Cluster", "memstack-pg"))
    assert run.depends_on(job, run.release("memstack-neo4j"))
    assert run.depends_on(deployment, run.one("StatefulSet", "memstack-redis"))


# --- the memory service contract ------------------------------------------------------------


def test_deployment_follows_the_contract_in_config(run):
    contract = StackConfig(environment="local").memory_service.contract
    container = api_container(run)
    assert container["command"] == ["memstack", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8080}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8080}
    assert contract.metrics_path == "/metrics"
    assert not container["image"].endswith(":latest") and ":" in container["image"]
    worker = pod(run.one("Deployment", "memstack-worker").manifest)["containers"][0]
    assert worker["command"] == ["memstack", "worker", "--host", "0.0.0.0"]
    assert worker["image"] == container["image"]
    migrate = pod(run.one("Job", "memstack-migrate").manifest)["containers"][0]
    assert migrate["command"] == ["memstack", "migrate"]


def test_env_names_are_the_ones_memory_core_reads(run):
    read_by_settings = set(CONNECTION_ENV_VARS)
    embedder = {"MEMORY_EMBEDDING_PROVIDER", "MEMORY_EMBEDDING_MODEL", "MEMORY_EMBEDDING_DIM"}
    tuning = {"memstack-api": embedder, "memstack-worker": embedder | {"MEMORY_WORKER_PROBE_PORT"}}
    for name, expected in tuning.items():
        names = {v["name"] for v in pod(run.one("Deployment", name).manifest)["containers"][0]["env"]}
        connection = {n for n in names if not n.startswith(("OTEL_", "MEMSTACK_", "MEMORY_"))}
        assert connection == {"REDIS_URL", "POSTGRES_URL", "NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD"}
        assert connection <= read_by_settings
        assert {n for n in names if n.startswith("MEMORY_")} == expected


def test_credentials_reach_pods_only_by_secret_reference(run):
    for resource in run.kinds("Deployment", "StatefulSet", "Job", "CronJob"):
        manifest = resource.manifest
        template = (
            manifest["spec"]["jobTemplate"]["spec"]["template"]
            if resource.kind == "CronJob"
            else manifest["spec"]["template"]
        )
        for container in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            for variable in container.get("env", []):
                if variable["name"] in {
                    "REDIS_URL",
                    "POSTGRES_URL",
                    "NEO4J_PASSWORD",
                    "REDIS_PASSWORD",
                    "REDISCLI_AUTH",
                }:
                    assert "value" not in variable, (resource.name, variable)
                    assert variable["valueFrom"]["secretKeyRef"]["name"].startswith("memstack-")


def test_token_file_is_mounted_read_only_from_its_secret(run):
    container = api_container(run)
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["MEMSTACK_TOKENS_FILE"] == "/etc/memstack/tokens/tokens"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/memstack/tokens")
    assert mount["readOnly"] is True
    volume = next(
        v for v in pod(run.one("Deployment", "memstack-api").manifest)["volumes"] if v["name"] == mount["name"]
    )
    assert volume["secret"]["secretName"] == "memstack-api-tokens"
    assert "tokens" in run.one("Secret", "memstack-api-tokens").manifest["stringData"]


def test_every_secret_value_is_a_pulumi_secret(run):
    secrets = run.kinds("Secret")
    # The kit's six, and Alertmanager's configuration where Alertmanager runs.
    assert len(secrets) == (7 if run.stack in ("staging", "prod") else 6)
    for secret in secrets:
        # Pulumi marks the whole map secret when its values are secrets.
        data = secret.raw_inputs["stringData"]
        assert SECRET_SIGNATURE in data or all(SECRET_SIGNATURE in value for value in data.values()), secret.name
        assert secret.manifest["stringData"], secret.name
    connections = run.one("Secret", "memstack-connections").manifest["stringData"]
    assert connections["REDIS_URL"].startswith("redis://:mock-redis-password-value@memstack-redis.")
    assert connections["POSTGRES_URL"].startswith("postgresql://memstack:mock-postgres-password-value@memstack-pg-rw.")
    assert run.one("Secret", "memstack-neo4j-auth").manifest["stringData"] == {
        "NEO4J_AUTH": "neo4j/mock-neo4j-password-value"
    }


def test_stack_outputs_carry_endpoints_and_secret_names_never_values(run):
    outputs = run.outputs
    namespace = outputs["namespace"]
    assert outputs["memoryServiceUrl"] == f"http://memstack-api.{namespace}.svc.cluster.local:80"
    assert outputs["grafanaUrl"] == "http://kps-grafana.monitoring.svc.cluster.local:80"
    assert outputs["jaegerUrl"] == "http://jaeger.monitoring.svc.cluster.local:16686"
    assert outputs["secretNames"]["connections"] == "memstack-connections"
    assert {r.name for r in run.kinds("Secret")} == set(outputs["secretNames"].values())
    text = json.dumps(outputs)
    assert "mock-" not in text and SECRET_SIGNATURE not in text


# --- network ----------------------------------------------------------------------------


def policy(run, name: str) -> dict:
    return run.one("NetworkPolicy", name).manifest["spec"]


def test_namespace_denies_by_default_and_allows_dns(run):
    assert policy(run, "default-deny") == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = policy(run, "allow-dns-egress")["egress"][0]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}


def test_only_labelled_clients_reach_the_service_and_it_reaches_only_its_backends(run):
    spec = policy(run, "memstack-api-traffic")
    clients, scrapers = spec["ingress"]
    assert clients["from"] == [
        {"podSelector": {"matchLabels": {"memstack.dev/memory-client": "true"}}, "namespaceSelector": {}}
    ]
    assert scrapers["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert all(rule["ports"] == [{"protocol": "TCP", "port": 8080}] for rule in spec["ingress"])
    destinations = {
        (json.dumps(rule["to"][0].get("podSelector", {}), sort_keys=True), port["port"])
        for rule in spec["egress"]
        for port in rule["ports"]
    }
    assert {port for _, port in destinations} == {6379, 5432, 7687, 4317, 4318}
    assert all(rule["to"] for rule in spec["egress"]), "every egress rule names its destination"


def test_api_pods_stay_ready_while_neo4j_is_down(run, monkeypatch):
    from memory_core.service.config import ServiceSettings

    assert ServiceSettings().ready_requires_neo4j  # the default the Deployment overrides
    for entry in api_container(run)["env"]:
        if "value" in entry:
            monkeypatch.setenv(entry["name"], entry["value"])
    assert not ServiceSettings().ready_requires_neo4j
