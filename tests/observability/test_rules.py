"""The committed dashboards and rule files are what their source generates; every rule file
passes `promtool check rules`, every alert has promtool tests where it fires and where it does
not, and every alert links to its runbook section."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dashboards import external_metrics
from dashboards.alert_tests import TEST_FILES
from dashboards.build import ALERTS, GENERATED, rendered
from dashboards.rules import RULE_FILES, anchor
from memory_core import metrics
from memory_core.worker.consumer import PERIODIC_JOBS

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "alerts.md"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: it comes with Debian's prometheus package (make setup)")
    return path


def _alerts() -> list[dict]:
    return [r for build in RULE_FILES.values() for g in build()["groups"] for r in g["rules"] if "alert" in r]


def test_committed_files_are_what_the_source_generates():
    stale = [str(p.relative_to(ROOT)) for p, text in rendered().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"run `python -m dashboards` and commit: {stale}"
    generated = {p.name for p in GENERATED.glob("*.json")} | {p.name for p in ALERTS.glob("*.yaml")}
    expected = {p.name for p in rendered() if p.parent in (GENERATED, ALERTS)}
    assert generated == expected, "a generated file has no source left: remove it"


def test_promtool_checks_every_rule_file():
    files = sorted(ALERTS.glob("*.yaml"))
    assert len(files) == len(RULE_FILES)
    result = subprocess.run([_promtool(), "check", "rules", *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    tests = sorted((ALERTS / "tests").glob("*.yaml"))
    assert len(tests) == len(TEST_FILES)
    result = subprocess.run(
        [_promtool(), "test", "rules", *map(str, tests)], capture_output=True, text=True, cwd=ALERTS / "tests"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


def test_every_alert_has_a_firing_and_a_silent_test():
    firing, silent = set(), set()
    for path in (ALERTS / "tests").glob("*.yaml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test["alert_rule_test"]:
                (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), "alerts never seen firing in a test"
    assert names - silent == set(), "alerts never seen silent in a test"
    assert len(names) == 13  # never a pass over an empty set


def test_every_alert_is_routed_and_has_a_runbook_section():
    headings = {anchor(h) for h in re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.M)}
    for rule in _alerts():
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        path, _, section = rule["annotations"]["runbook_url"].partition("#")
        assert path == "docs/alerts.md" and section in headings, f"{rule['alert']}: no section {section!r} in {path}"


_OURS = re.compile(r"\bmemstack_[a-z_]+")


def _expressions():
    for path in GENERATED.glob("*.json"):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield target["expr"]
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                yield variable["query"]
    for rule in (r for build in RULE_FILES.values() for g in build()["groups"] for r in g["rules"]):
        yield rule["expr"]


def test_every_metric_name_comes_from_the_definitions():
    known_ours = {f"{name}{suffix}" for name in metrics.ALL_METRICS for suffix in ("", "_bucket", "_count", "_sum")}
    known_theirs = {v for k, v in vars(external_metrics).items() if k.isupper() and isinstance(v, str)}
    used = set()
    for expr in _expressions():
        used |= set(_OURS.findall(expr))
        assert not (set(_OURS.findall(expr)) - known_ours), expr
        used |= {name for name in known_theirs if re.search(rf"\b{name}\b", expr)}
    # Every definition is used somewhere, so none is left behind when a panel goes.
    assert known_theirs - used == set()
    assert {n for n in metrics.ALL_METRICS if n != metrics.PROCESS_RESIDENT_MEMORY} - {
        u.removesuffix("_bucket").removesuffix("_count") for u in used
    } == set()


def test_worker_tasks_name_every_periodic_job():
    assert set(PERIODIC_JOBS) <= set(metrics.WORKER_TASKS)
