"""Dashboards, alert rules and Alertmanager under the mocks: what Grafana, Prometheus and Alertmanager pick up.

Each check runs on a small fixture directory (known contents) and on the repository's own
`dashboards/generated` and `dashboards/alerts`, which must not be empty: a test over an empty
set proves nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pulumi_runs import RECEIVER_SECRETS, REPO_ROOT, Run, check_config

from infra.components.observability import find_dashboards, find_rule_files

FIXTURES = Path(__file__).with_name("fixtures") / "observability"
FIXTURE_DASHBOARDS = FIXTURES / "dashboards"
FIXTURE_ALERTS = FIXTURES / "alerts"
REPO_DASHBOARDS = REPO_ROOT / "dashboards" / "generated"
REPO_ALERTS = REPO_ROOT / "dashboards" / "alerts"


def kps_values(run: Run) -> dict:
    return run.release("kube-prometheus-stack").manifest["values"]


def selector_matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are expected here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def alertmanager_config(run: Run) -> dict:
    secret = run.one("Secret", "memstack-alertmanager").manifest
    return yaml.safe_load(secret["stringData"]["alertmanager.yaml"])


@pytest.fixture(scope="module")
def fixture_run(run_program_module) -> Run:
    run = run_program_module(
        "prod",
        f"memstack:dashboardsDir={FIXTURE_DASHBOARDS}",
        f"memstack:alertsDir={FIXTURE_ALERTS}",
    )
    assert run.error is None, run.error
    return run


# --- the directories ---------------------------------------------------------------------------


def test_the_repository_has_dashboards_and_rule_files():
    dashboards = sorted(REPO_DASHBOARDS.glob("*.json"))
    rules = sorted(REPO_ALERTS.glob("*.yaml"))
    assert dashboards, f"no generated dashboard in {REPO_DASHBOARDS}"
    assert rules, f"no rule file in {REPO_ALERTS}"
    assert len(find_dashboards(REPO_DASHBOARDS)) == len(dashboards)
    assert len(find_rule_files(REPO_ALERTS)) == len(rules)


@pytest.mark.parametrize("directory, alerts", [(FIXTURE_DASHBOARDS, FIXTURE_ALERTS), (REPO_DASHBOARDS, REPO_ALERTS)])
def test_finders_see_every_file_and_never_the_promtool_tests(directory, alerts):
    dashboards = find_dashboards(directory)
    assert dashboards and {d.file_name for d in dashboards} == {p.name for p in directory.glob("*.json")}
    rule_files = find_rule_files(alerts)
    assert rule_files and {r.file_name for r in rule_files} == {p.name for p in alerts.glob("*.yaml")}
    assert not [r for r in rule_files if "tests" in r.name.split("-")]


# --- dashboards: ConfigMaps the Grafana sidecar loads ----------------------------------------------


def check_dashboards(run: Run, directory: Path) -> None:
    sidecar = kps_values(run)["grafana"]["sidecar"]["dashboards"]
    assert sidecar["enabled"] is True
    maps = run.kinds("ConfigMap")
    expected = {d.configmap_name: d for d in find_dashboards(directory)}
    assert expected and {m.name for m in maps} == set(expected)
    for configmap in maps:
        manifest = configmap.manifest
        assert manifest["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
        assert manifest["metadata"]["namespace"] == sidecar["searchNamespace"]
        ((file_name, content),) = manifest["data"].items()
        assert json.loads(content) == json.loads((directory / file_name).read_text())


def test_fixture_dashboards_become_configmaps_grafana_watches(fixture_run):
    check_dashboards(fixture_run, FIXTURE_DASHBOARDS)
    assert len(fixture_run.kinds("ConfigMap")) == 2


def test_the_repositorys_dashboards_become_configmaps_grafana_watches(run):
    check_dashboards(run, REPO_DASHBOARDS)


# --- rules: PrometheusRules the Prometheus rule selector picks -----------------------------------


def check_rules(run: Run, directory: Path) -> None:
    spec = kps_values(run)["prometheus"]["prometheusSpec"]
    rules = run.kinds("PrometheusRule")
    expected = {r.name: r for r in find_rule_files(directory)}
    assert expected and {r.manifest["metadata"]["name"] for r in rules} == set(expected)
    crds = run.release("prometheus-operator-crds")
    for rule in rules:
        manifest = rule.manifest
        assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
        assert selector_matches(spec["ruleSelector"], manifest["metadata"]["labels"]), manifest["metadata"]
        # An empty namespace selector selects every namespace.
        assert spec["ruleNamespaceSelector"] == {}
        assert run.depends_on(rule, crds)
        source = yaml.safe_load((directory / expected[manifest["metadata"]["name"]].file_name).read_text())
        assert manifest["spec"] == {"groups": source["groups"]}


def test_fixture_rule_files_become_prometheus_rules_the_selector_picks(fixture_run):
    check_rules(fixture_run, FIXTURE_ALERTS)
    assert len(fixture_run.kinds("PrometheusRule")) == 2


def test_the_repositorys_rule_files_become_prometheus_rules_the_selector_picks(run):
    check_rules(run, REPO_ALERTS)


def test_a_file_without_groups_is_refused(run_program, tmp_path):
    (tmp_path / "broken.yaml").write_text("rules: []\n")
    run = run_program("dev", f"memstack:alertsDir={tmp_path}")
    assert run.error["type"] == "ConfigError"
    assert (
        run.error["message"]
        == f"memstack:alertsDir: {tmp_path / 'broken.yaml'} is not a Prometheus rule file (no `groups:` list)"
    )


# --- Alertmanager ----------------------------------------------------------------------------------


def severities(directory: Path) -> set[str]:
    found = set()
    for rule_file in find_rule_files(directory):
        for group in rule_file.groups:
            found |= {rule["labels"]["severity"] for rule in group["rules"] if "alert" in rule}
    return found


def test_prod_alertmanager_routes_each_severity_to_its_receiver(runs):
    prod = runs["prod"]
    values = kps_values(prod)["alertmanager"]
    assert values["alertmanagerSpec"] == {"useExistingSecret": True, "configSecret": "memstack-alertmanager"}
    config = alertmanager_config(prod)
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["oncall"]["pagerduty_configs"][0]["routing_key"] == RECEIVER_SECRETS["oncall"]
    assert receivers["tickets"]["slack_configs"][0]["api_url"] == RECEIVER_SECRETS["tickets"]
    assert receivers["tickets"]["slack_configs"][0]["channel"] == "#memstack-alerts"
    routes = {route["matchers"][0]: route["receiver"] for route in config["route"]["routes"]}
    assert routes == {'severity="page"': "oncall", 'severity="ticket"': "tickets"}
    assert config["route"]["receiver"] in receivers
    # Every severity the repository's alerts use reaches a receiver.
    used = severities(REPO_ALERTS)
    assert used and {f'severity="{s}"' for s in used} <= routes.keys()


def test_the_alertmanager_config_is_a_pulumi_secret(runs):
    secret = runs["prod"].one("Secret", "memstack-alertmanager")
    assert "4dabf18193072939515e22adb298388d" in json.dumps(secret.raw_inputs["stringData"])
    assert "mock-pagerduty-routing-key" not in json.dumps(runs["prod"].outputs)


def test_a_webhook_receiver_renders(run_program):
    run = run_program(
        "staging",
        'memstack:observability={"alertReceivers": [{"name": "hooks", "kind": "webhook", "severities": ["page", "ticket"]}]}',
        'memstack:alertReceiverSecrets={"hooks": "https://hooks.example/alert"}',
    )
    assert run.error is None, run.error
    config = alertmanager_config(run)
    assert config["receivers"] == [
        {"name": "hooks", "webhook_configs": [{"url": "https://hooks.example/alert", "send_resolved": True}]}
    ]
    assert [r["receiver"] for r in config["route"]["routes"]] == ["hooks", "hooks"]


def test_prod_refuses_alertmanager_without_a_receiver(run_program):
    run = run_program("prod", 'memstack:observability={"alertmanagerEnabled": true}')
    assert run.error["type"] == "ConfigError"
    assert run.error["message"] == (
        "memstack:observability.alertReceivers: prod runs Alertmanager, which needs at least one receiver"
        " (or set alertmanagerEnabled false)"
    )
    assert not [r for r in run.resources if r.type.startswith("kubernetes:")]


def test_a_receiver_without_its_secret_is_refused():
    run = check_config("prod", "memstack:alertReceiverSecrets={}")
    assert run.error["type"] == "ConfigError"
    assert run.error["message"].startswith("memstack:alertReceiverSecrets: no secret for receiver oncall, tickets")
