"""Helm charts: pinned versions, the values each chart gets, dashboards, and install order."""

from __future__ import annotations

import json

import pytest

from infra.config import Charts

PINS = Charts()


def values(run, release_name: str) -> dict:
    return run.release(release_name).manifest["values"]


@pytest.mark.parametrize(
    "release_name, pin",
    [
        ("cnpg", PINS.cloudnative_pg),
        ("memstack-neo4j", PINS.neo4j),
        ("prometheus-operator-crds", PINS.prometheus_operator_crds),
        ("kube-prometheus-stack", PINS.kube_prometheus_stack),
        ("jaeger", PINS.jaeger),
    ],
)
def test_every_release_installs_its_pinned_chart(run, release_name, pin):
    release = run.release(release_name).manifest
    assert (release["chart"], release["version"], release["repositoryOpts"]) == (
        pin.chart,
        pin.version,
        {"repo": pin.repository},
    )
    assert release["version"][0].isdigit() or release["version"].startswith("v")


def test_chart_versions_and_repositories_are_the_real_ones():
    assert (PINS.cloudnative_pg.chart, PINS.cloudnative_pg.repository) == (
        "cloudnative-pg",
        "https://cloudnative-pg.github.io/charts",
    )
    assert (PINS.neo4j.chart, PINS.neo4j.repository) == ("neo4j", "https://helm.neo4j.com/neo4j")
    assert (
        PINS.kube_prometheus_stack.repository
        == PINS.prometheus_operator_crds.repository
        == ("https://prometheus-community.github.io/helm-charts")
    )
    assert (PINS.jaeger.chart, PINS.jaeger.repository) == ("jaeger", "https://jaegertracing.github.io/helm-charts")
    assert int(PINS.jaeger.version.split(".")[0]) >= 4, "Jaeger v2 comes with chart 4.x"


def test_stack_files_can_override_a_chart_version(run_program):
    run = run_program(
        "dev",
        'memstack:charts={"jaeger": {"chart": "jaeger", '
        '"repository": "https://jaegertracing.github.io/helm-charts", "version": "4.13.0"}}',
    )
    assert run.error is None
    assert run.release("jaeger").manifest["version"] == "4.13.0"
    assert run.release("cnpg").manifest["version"] == PINS.cloudnative_pg.version


def test_kube_prometheus_stack_leaves_crds_to_their_chart_and_selects_every_monitor(run):
    kps = values(run, "kube-prometheus-stack")
    assert kps["crds"] == {"enabled": False}
    spec = kps["prometheus"]["prometheusSpec"]
    for kind in ("serviceMonitor", "podMonitor", "probe"):
        assert spec[f"{kind}SelectorNilUsesHelmValues"] is False
    assert spec["serviceMonitorNamespaceSelector"] == {} and spec["podMonitorNamespaceSelector"] == {}
    # Rules: the chart's own (labelled with the release) and the kit's, from any namespace.
    assert spec["ruleSelector"] == {"matchLabels": {"release": "kube-prometheus-stack"}}
    assert spec["ruleNamespaceSelector"] == {}
    sidecar = kps["grafana"]["sidecar"]["dashboards"]
    assert (sidecar["enabled"], sidecar["label"], sidecar["labelValue"]) == (True, "grafana_dashboard", "1")
    assert kps["grafana"]["admin"]["existingSecret"] == "memstack-grafana-admin"
    assert kps["grafana"]["fullnameOverride"] == "kps-grafana"


def test_environment_sizes_reach_the_charts(runs):
    prod = values(runs["prod"], "kube-prometheus-stack")["prometheus"]["prometheusSpec"]
    dev = values(runs["dev"], "kube-prometheus-stack")["prometheus"]["prometheusSpec"]
    assert (prod["retention"], dev["retention"]) == ("15d", "2d")
    assert prod["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert values(runs["dev"], "kube-prometheus-stack")["alertmanager"] == {"enabled": False}
    assert values(runs["prod"], "kube-prometheus-stack")["alertmanager"] == {
        "enabled": True,
        "alertmanagerSpec": {"useExistingSecret": True, "configSecret": "memstack-alertmanager"},
    }


def test_jaeger_is_v2_in_memory_and_takes_otlp_from_every_pod(run):
    jaeger = values(run, "jaeger")
    # Chart 4.x passes `userconfig` whole to the collector; `config`, `storage` and
    # `provisionDataStore` are gone from it (removed in 4.4.0), so a value there is ignored.
    assert not {"config", "storage", "provisionDataStore"} & jaeger.keys()
    collector = jaeger["userconfig"]
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert protocols == {"grpc": {"endpoint": "0.0.0.0:4317"}, "http": {"endpoint": "0.0.0.0:4318"}}
    assert jaeger["jaeger"]["securityContext"]["readOnlyRootFilesystem"] is True
    assert jaeger["jaeger"]["podSecurityContext"]["runAsNonRoot"] is True
    assert run.outputs["otlpEndpoint"] == "http://jaeger.monitoring.svc.cluster.local:4317"


def test_neo4j_is_community_with_auth_from_the_secret(run):
    neo4j = values(run, "memstack-neo4j")
    assert neo4j["neo4j"]["edition"] == "community"
    assert neo4j["neo4j"]["passwordFromSecret"] == "memstack-neo4j-auth"
    assert neo4j["neo4j"]["name"] == "memstack-neo4j"
    assert set(neo4j["neo4j"]["resources"]) == {"requests", "limits"}
    assert neo4j["services"]["neo4j"]["enabled"] is False
    assert neo4j["logInitialPassword"] is False
    assert neo4j["volumes"]["data"]["mode"] in {"dynamic", "defaultStorageClass"}
    assert "password" not in neo4j["neo4j"]
    assert neo4j["config"]["dbms.cypher.min_replan_interval"] == "2m"


def test_neo4j_enterprise_is_a_cluster_with_online_backup(run_program):
    run = run_program(
        "staging",
        'memstack:neo4j={"edition": "enterprise", "servers": 3, "acceptLicenseAgreement": true,'
        ' "backup": {"enabled": true}}',
    )
    assert run.error is None
    releases = sorted(r.raw_inputs["name"] for r in run.kinds("Release") if r.raw_inputs["chart"] == "neo4j")
    assert releases == ["memstack-neo4j-1", "memstack-neo4j-2", "memstack-neo4j-3"]
    chart = values(run, "memstack-neo4j-2")
    assert chart["neo4j"]["edition"] == "enterprise" and chart["neo4j"]["minimumClusterSize"] == 3
    assert chart["neo4j"]["acceptLicenseAgreement"] == "yes"
    assert chart["config"]["server.metrics.prometheus.enabled"] == "true"
    job = run.one("CronJob", "memstack-neo4j-backup").manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = job["containers"][0]["command"][-1]
    assert "neo4j-admin database backup --from=memstack-neo4j-1-admin." in script
    assert "initContainers" not in job
    env = {
        v["name"]: v.get("value")
        for v in run.one("Deployment", "memstack-api").manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["NEO4J_URI"].startswith("neo4j://memstack-neo4j-lb-neo4j.")


def test_redis_is_durable_bounded_and_authenticated(run):
    statefulset = run.one("StatefulSet", "memstack-redis").manifest
    server, exporter = statefulset["spec"]["template"]["spec"]["containers"]
    args = server["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "everysec"
    assert args[0] == "/etc/memstack-redis/auth.conf"
    assert int(args[args.index("--maxmemory") + 1]) > 0
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert exporter["image"].startswith("oliver006/redis_exporter:")
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert statefulset["spec"]["serviceName"] == "memstack-redis"
    assert run.one("Service", "memstack-redis").manifest["spec"]["clusterIP"] == "None"


def test_operator_plugin_and_cert_manager_only_where_backups_go_to_an_object_store(runs):
    prod = runs["prod"]
    assert prod.release("barman-cloud").manifest["namespace"] == prod.release("cnpg").manifest["namespace"]
    assert prod.release("cert-manager").manifest["values"] == {"crds": {"enabled": True}}
    assert prod.depends_on(prod.release("barman-cloud"), prod.release("cert-manager"))
    assert prod.depends_on(prod.release("barman-cloud"), prod.release("cnpg"))
    for stack in ("dev", "local"):
        names = {r.raw_inputs["name"] for r in runs[stack].kinds("Release")} - {"metrics-server"}
        assert names == {"cnpg", "memstack-neo4j", "prometheus-operator-crds", "kube-prometheus-stack", "jaeger"}


# --- ordering ---------------------------------------------------------------------------


def test_crds_come_before_everything_that_uses_them(run):
    crds = run.release("prometheus-operator-crds")
    monitors = run.kinds("ServiceMonitor", "PodMonitor")
    assert len(monitors) >= 4
    for monitor in monitors:
        assert run.depends_on(monitor, crds), monitor.name
    assert run.depends_on(run.release("kube-prometheus-stack"), crds)
    assert run.depends_on(run.release("cnpg"), crds)


def test_operators_come_before_their_custom_resources(run):
    operator = run.release("cnpg")
    cluster = run.one("Cluster", "memstack-pg")
    assert run.depends_on(cluster, operator)
    if run.stack in ("staging", "prod"):
        store = run.one("ObjectStore", "memstack-pg-store")
        assert run.depends_on(store, run.release("barman-cloud"))
        assert run.depends_on(cluster, store)
        assert run.depends_on(run.one("ScheduledBackup", "memstack-pg-daily"), cluster)


def test_namespaces_and_secrets_come_first(run):
    namespace = next(r for r in run.kinds("Namespace") if r.manifest["metadata"]["name"] == run.outputs["namespace"])
    connections = run.one("Secret", "memstack-connections")
    assert run.depends_on(connections, namespace)
    for resource in (
        run.one("StatefulSet", "memstack-redis"),
        run.one("Cluster", "memstack-pg"),
        run.release("memstack-neo4j"),
    ):
        assert run.depends_on(resource, namespace), resource.name
        assert run.depends_on(resource, connections), resource.name


def test_every_object_is_parented_to_its_component(run):
    components = {r.urn: r for r in run.resources if r.type.startswith("memstack:infra:")}
    assert {c.type.split(":")[-1] for c in components.values()} == {
        "Base",
        "Secrets",
        "Observability",
        "Postgres",
        "Neo4j",
        "Redis",
        "Migrations",
        "MemoryService",
        "Worker",
    } | ({"MetricsServer"} if run.stack == "local" else set())
    orphans = [r.name for r in run.resources if r.custom and r.parent not in components]
    assert not orphans


# --- dashboards -------------------------------------------------------------------------


def test_every_dashboard_in_the_directory_becomes_a_labelled_configmap(run_program, tmp_path):
    (tmp_path / "memory").mkdir()
    dashboard = {"title": "Memory service", "panels": [{"type": "timeseries", "title": "p99"}]}
    (tmp_path / "memory" / "Service Overview.json").write_text(json.dumps(dashboard))
    (tmp_path / "alerts.json").write_text(json.dumps({"groups": []}))  # not a dashboard
    (tmp_path / "notes.md").write_text("# not json")
    run = run_program("dev", f"memstack:dashboardsDir={tmp_path}")
    assert run.error is None
    maps = run.kinds("ConfigMap")
    assert [m.name for m in maps] == ["memstack-dashboard-memory-service-overview"]
    manifest = maps[0].manifest
    assert manifest["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert manifest["metadata"]["namespace"] == "monitoring"
    assert json.loads(manifest["data"]["Service Overview.json"]) == dashboard


def test_a_missing_dashboards_directory_is_refused(run_program, tmp_path):
    run = run_program("local", f"memstack:dashboardsDir={tmp_path / 'absent'}")
    assert run.error["type"] == "ConfigError"
    assert run.error["message"] == f"memstack:dashboardsDir: {tmp_path / 'absent'} is not a directory"


def test_a_broken_dashboard_fails_with_one_clear_error(run_program, tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    run = run_program("dev", f"memstack:dashboardsDir={tmp_path}")
    assert run.error["type"] == "ConfigError"
    assert run.error["message"].startswith("memstack:dashboardsDir: ") and "broken.json" in run.error["message"]
