"""What a first real `pulumi up` would hit: one test per defect, each on the objects the program registers."""

from __future__ import annotations

import json
import re

import pytest
from pulumi_runs import Run, check_config

from infra.config import settings_env
from memory_core.settings import Settings

APP_WORKLOADS = (("Deployment", "memstack-api"), ("Deployment", "memstack-worker"), ("Job", "memstack-migrate"))


def pod(manifest: dict) -> dict:
    spec = manifest["spec"]
    return (spec["jobTemplate"]["spec"] if manifest["kind"] == "CronJob" else spec)["template"]["spec"]


def containers(manifest: dict) -> list[dict]:
    spec = pod(manifest)
    return spec["containers"] + spec.get("initContainers", [])


def workloads(run: Run) -> list[dict]:
    return [r.manifest for r in run.kinds("Deployment", "StatefulSet", "Job", "CronJob")]


def plain_env(container: dict) -> dict[str, str]:
    return {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}


# --- 1. the embedder ---------------------------------------------------------------------------

EMBEDDING_ENV = {settings_env(f) for f in ("embedding_provider", "embedding_model", "embedding_dim")}


def test_embedding_env_names_are_memory_core_settings_names():
    assert {"MEMORY_EMBEDDING_PROVIDER", "MEMORY_EMBEDDING_MODEL", "MEMORY_EMBEDDING_DIM"} == EMBEDDING_ENV
    for name in EMBEDDING_ENV:
        field = name.removeprefix("MEMORY_").lower()
        assert name in Settings.model_fields[field].validation_alias.choices


@pytest.mark.parametrize(
    "stack, provider",
    [("staging", "sentence-transformers"), ("prod", "sentence-transformers"), ("dev", "hashing"), ("local", "hashing")],
)
def test_every_app_pod_gets_the_stacks_embedder_and_memory_core_reads_it(runs, stack, provider):
    run = runs[stack]
    for kind, name in APP_WORKLOADS:
        env = plain_env(pod(run.one(kind, name).manifest)["containers"][0])
        assert env.keys() >= EMBEDDING_ENV, name
        # memory_core, given exactly these variables, configures this embedder.
        settings = Settings.model_validate({key: env[key] for key in EMBEDDING_ENV})
        assert (settings.embedding_provider, settings.embedding_dim) == (provider, 384), name
        assert settings.embedding_model == "all-MiniLM-L6-v2"


def test_shared_stacks_refuse_the_hashing_embedder():
    for stack in ("staging", "prod"):
        run = check_config(stack, 'memstack:embeddings={"provider": "hashing"}')
        assert run.error["type"] == "ConfigError"
        assert run.error["message"] == (
            f"memstack:embeddings.provider: {stack} refuses the hashing embedder (not a semantic model);"
            " use sentence-transformers or openai"
        )


def test_a_dimension_the_schema_does_not_have_is_refused():
    run = check_config("dev", 'memstack:embeddings={"provider": "hashing", "dimension": 768}')
    assert run.error["message"] == (
        "memstack:embeddings.dimension: must equal postgres.vectorDimension (384), the dimension of the schema's"
        " vector columns, got 768"
    )
    run = check_config("prod", 'memstack:embeddings={"provider": "sentence-transformers", "dimension": 768}')
    assert run.error["message"] == (
        "memstack:embeddings.dimension: all-MiniLM-L6-v2 produces 384-dimensional vectors, got 768"
    )


def test_an_openai_compatible_endpoint_gets_its_key_as_a_secret(run_program):
    run = run_program(
        "staging",
        'memstack:embeddings={"provider": "openai", "model": "text-embedding-3-small", "dimension": 1536,'
        ' "apiUrl": "https://api.openai.example/v1"}',
        'memstack:postgres={"vectorDimension": 1536}',
        "memstack:embeddingApiKey=sk-mock-embedding-key",
    )
    assert run.error is None, run.error
    secret = run.one("Secret", "memstack-embeddings")
    assert "4dabf18193072939515e22adb298388d" in json.dumps(secret.raw_inputs["stringData"])
    for kind, name in APP_WORKLOADS:
        container = pod(run.one(kind, name).manifest)["containers"][0]
        key = next(v for v in container["env"] if v["name"] == "MEMORY_EMBEDDING_API_KEY")
        assert key["valueFrom"]["secretKeyRef"] == {"name": "memstack-embeddings", "key": "MEMORY_EMBEDDING_API_KEY"}
        assert plain_env(container)["MEMORY_EMBEDDING_API_URL"] == "https://api.openai.example/v1"
    egress = run.one("NetworkPolicy", "memstack-api-traffic").manifest["spec"]["egress"]
    assert {"to": [], "ports": [{"protocol": "TCP", "port": 443}]} in egress


# --- 2. Jaeger ------------------------------------------------------------------------------------


def test_jaeger_collector_config_is_complete_and_bounded(runs):
    for stack, max_traces in (("dev", 10000), ("local", 5000), ("prod", 100000)):
        values = runs[stack].release("jaeger").manifest["values"]
        assert runs[stack].release("jaeger").manifest["version"] == "4.11.1"
        config = values["userconfig"]
        service = config["service"]
        for extension in service["extensions"]:
            assert extension in config["extensions"], extension
        for pipeline in service["pipelines"].values():
            for section in ("receivers", "processors", "exporters"):
                for component in pipeline.get(section, []):
                    assert component in config[section], (section, component)
        store = config["exporters"]["jaeger_storage_exporter"]["trace_storage"]
        assert config["extensions"]["jaeger_storage"]["backends"][store] == {"memory": {"max_traces": max_traces}}
        assert config["extensions"]["jaeger_query"]["storage"]["traces"] == store
        # The chart's probes ask for /status on 13133 of the pod IP, not localhost.
        assert config["extensions"]["healthcheckv2"]["http"]["endpoint"] == "0.0.0.0:13133"


# --- 3. Helm timeouts ----------------------------------------------------------------------------


def test_every_release_waits_longer_than_helms_default(run):
    for release in run.kinds("Release"):
        inputs = release.manifest
        assert inputs["timeout"] >= 600, inputs["name"]
    assert run.release("memstack-neo4j").manifest["timeout"] == 900
    assert run.release("kube-prometheus-stack").manifest["timeout"] == 900


def test_a_stack_can_give_a_release_more_time(run_program):
    run = run_program(
        "dev",
        'memstack:charts={"neo4j": {"chart": "neo4j", "repository": "https://helm.neo4j.com/neo4j",'
        ' "version": "5.26.21", "timeoutSeconds": 1800}}',
    )
    assert run.error is None
    assert run.release("memstack-neo4j").manifest["timeout"] == 1800


# --- 4. the Redis password ------------------------------------------------------------------------


def test_the_redis_password_is_on_no_command_line_and_in_no_environment(run):
    redis_workloads = [m for m in workloads(run) if m["metadata"]["name"].startswith("memstack-redis")]
    assert redis_workloads
    for manifest in redis_workloads:
        for container in containers(manifest):
            argv = " ".join(container.get("command", []) + container.get("args", []))
            # Kubernetes expands $(NAME) from the environment into the argv the process shows.
            assert not re.search(r"\$\([A-Z_]+\)", argv), container["name"]
            assert "--requirepass" not in argv and "mock-redis-password" not in argv, container["name"]
            assert not [v for v in container.get("env", []) if "valueFrom" in v], container["name"]
    secret = run.one("Secret", "memstack-redis-auth").manifest["stringData"]
    assert secret["auth.conf"] == "requirepass mock-redis-password-value\n"
    server = pod(run.one("StatefulSet", "memstack-redis").manifest)["containers"][0]
    assert server["args"][0] == "/etc/memstack-redis/auth.conf"
    exporter = pod(run.one("StatefulSet", "memstack-redis").manifest)["containers"][1]
    env = plain_env(exporter)
    assert json.loads(secret["exporter-passwords.json"]) == {env["REDIS_ADDR"]: "mock-redis-password-value"}
    assert env["REDIS_PASSWORD_FILE"] == "/etc/memstack-redis/exporter-passwords.json"


# --- 5. tokens --------------------------------------------------------------------------------------


def test_shared_stacks_refuse_to_deploy_without_a_token_hash():
    for stack in ("staging", "prod"):
        run = check_config(stack, "memstack:apiTokenHashes= ")
        assert run.error["type"] == "ConfigError"
        assert run.error["message"].startswith(
            f"memstack:apiTokenHashes: {stack} requires at least one token hash, or every request gets 401"
        )
    assert check_config("dev").error is None


# --- 6. Postgres egress to the object store --------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint, port",
    [
        ("http://minio.storage.svc:9000", 9000),
        ("https://s3.example.net", 443),
        ("http://ceph-rgw.storage", 80),
    ],
)
def test_postgres_may_reach_the_object_store_on_its_port(run_program, endpoint, port):
    store = {"destinationPath": "s3://b/p", "endpointUrl": endpoint, "credentialsSecret": "s3"}
    run = run_program("staging", merges=[f"memstack:postgres={json.dumps({'backup': {'objectStore': store}})}"])
    assert run.error is None, run.error
    egress = run.one("NetworkPolicy", "memstack-pg-traffic").manifest["spec"]["egress"]
    open_ports = {p["port"] for rule in egress if rule["to"] == [] for p in rule["ports"]}
    assert port in open_ports
    assert run.one("ObjectStore", "memstack-pg-store").manifest["spec"]["configuration"]["endpointURL"] == endpoint


def test_an_endpoint_that_is_not_a_url_is_refused():
    store = {"destinationPath": "s3://b/p", "endpointUrl": "minio:9000", "credentialsSecret": "s3"}
    run = check_config("staging", merges=[f"memstack:postgres={json.dumps({'backup': {'objectStore': store}})}"])
    assert run.error["message"] == (
        "memstack:postgres.backup.objectStore.endpointUrl: must be an http(s) URL with a host, got 'minio:9000'"
    )


# --- 7. the Barman Cloud sidecar ------------------------------------------------------------------


def test_the_barman_sidecar_gets_its_own_resources(runs, run_program):
    spec = runs["prod"].one("ObjectStore", "memstack-pg-store").manifest["spec"]
    assert spec["instanceSidecarConfiguration"]["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    run = run_program(
        "prod",
        merges=[
            'memstack:postgres={"backup": {"sidecarResources": {"cpuRequest": "100m",'
            ' "memoryRequest": "256Mi", "cpuLimit": 1, "memoryLimit": "1Gi"}}}'
        ],
    )
    assert run.one("ObjectStore", "memstack-pg-store").manifest["spec"]["instanceSidecarConfiguration"]["resources"][
        "limits"
    ] == {"cpu": "1", "memory": "1Gi"}


# --- 8. metrics-server -------------------------------------------------------------------------------


def test_local_gets_metrics_server_for_its_hpa(runs):
    local = runs["local"]
    release = local.release("metrics-server").manifest
    assert release["namespace"] == "kube-system"
    assert release["values"]["args"] == ["--kubelet-insecure-tls"]
    for stack in ("dev", "staging", "prod"):
        assert "metrics-server" not in {r.raw_inputs["name"] for r in runs[stack].kinds("Release")}


def test_shared_clusters_bring_their_own_metrics_server():
    run = check_config("prod", 'memstack:metricsServer={"install": true}')
    assert run.error["message"] == (
        "memstack:metricsServer.install: only for local and dev clusters; prod clusters bring their own"
    )


# --- 9. image references ----------------------------------------------------------------------------


def test_shared_stacks_need_the_image_ci_pushed():
    for stack in ("dev", "staging", "prod"):
        overrides = () if stack == "dev" else ("memstack:apiTokenHashes=t",)
        run = check_config(stack, *overrides, bare=True)
        assert run.error["type"] == "ConfigError", stack
        assert run.error["message"].startswith(f"memstack:memoryService.image: required on {stack}: "), run.error
    assert check_config("local", bare=True).error is None


def test_the_released_image_runs_everywhere_and_a_digest_pins_it(runs, run_program):
    for kind, name in APP_WORKLOADS:
        assert pod(runs["prod"].one(kind, name).manifest)["containers"][0]["image"] == (
            "registry.example.com/memstack/memstack:0.1.0"
        )
        assert pod(runs["local"].one(kind, name).manifest)["containers"][0]["image"] == "memstack:0.1.0"
    digest = "sha256:" + "0123456789abcdef" * 4
    run = run_program("prod", merges=[f'memstack:memoryService={{"image": {{"digest": "{digest}"}}}}'])
    assert pod(run.one("Deployment", "memstack-api").manifest)["containers"][0]["image"] == (
        f"registry.example.com/memstack/memstack:0.1.0@{digest}"
    )


# --- 10. hardening ------------------------------------------------------------------------------------


def test_pull_policy_follows_the_environment(runs):
    for stack, policy in (("dev", "Always"), ("staging", "Always"), ("prod", "Always"), ("local", "IfNotPresent")):
        for manifest in workloads(runs[stack]):
            for container in containers(manifest):
                assert container["imagePullPolicy"] == policy, (stack, manifest["metadata"]["name"])


def test_no_pod_mounts_an_api_token_or_runs_at_a_low_uid(run):
    for manifest in workloads(run):
        spec = pod(manifest)
        assert spec["automountServiceAccountToken"] is False, manifest["metadata"]["name"]
        assert spec["securityContext"]["runAsUser"] > 10000, manifest["metadata"]["name"]
