"""The chart-values guard: every Helm values key the program sets was checked against the pinned chart.

The list of checked keys, per chart and version, is infra/chart-values-reviewed.yaml. A key
the program sets that is not on it fails (a misspelt or removed key is silently ignored by
Helm); a pin that moved without the list being reviewed fails too. No chart repository is
reachable from the tests, so the list is the record of what a person read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pulumi_runs import REPO_ROOT

from infra.config import Charts

REVIEWED = yaml.safe_load((REPO_ROOT / "infra" / "chart-values-reviewed.yaml").read_text())


def key_paths(values: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths to the leaves of a values tree (an empty map or a list is a leaf)."""
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from key_paths(value, f"{prefix}.{key}" if prefix else str(key))
    elif prefix:
        yield prefix


def reviewed(chart: str, path: str) -> bool:
    for key in REVIEWED[chart]["keys"]:
        if key.endswith(".*") and (path + ".").startswith(key[:-1]):
            return True
        if path == key:
            return True
    return False


def unreviewed_keys(chart: str, values: dict) -> list[str]:
    return [path for path in key_paths(values) if not reviewed(chart, path)]


def test_every_pinned_chart_was_reviewed_at_its_pinned_version():
    pins = Charts()
    moved = []
    for field in Charts.model_fields:
        pin = getattr(pins, field)
        assert pin.chart in REVIEWED, f"{pin.chart}: no reviewed values list in infra/chart-values-reviewed.yaml"
        if REVIEWED[pin.chart]["version"] != pin.version:
            moved.append(f"{pin.chart}: pinned {pin.version}, values reviewed at {REVIEWED[pin.chart]['version']}")
    assert not moved, "review the chart's values at the new pin, then update the list:\n" + "\n".join(moved)
    assert set(REVIEWED) == {getattr(pins, field).chart for field in Charts.model_fields}


def test_every_values_key_the_program_sets_exists_in_the_pinned_chart(run):
    releases = run.kinds("Release")
    assert releases
    problems = []
    for release in releases:
        inputs = release.manifest
        chart = inputs["chart"]
        assert inputs["version"] == REVIEWED[chart]["version"], chart
        problems += [
            f"{chart} {inputs['version']}: {path}" for path in unreviewed_keys(chart, inputs.get("values") or {})
        ]
    assert not problems, "values keys not checked against the chart:\n" + "\n".join(problems)


def test_the_enterprise_neo4j_values_are_reviewed_too(run_program):
    run = run_program(
        "staging", 'memstack:neo4j={"edition": "enterprise", "servers": 3, "acceptLicenseAgreement": true}'
    )
    assert run.error is None
    for release in run.kinds("Release"):
        assert not unreviewed_keys(release.manifest["chart"], release.manifest.get("values") or {})


@pytest.mark.parametrize(
    "chart, values",
    [
        # What the program sent to Jaeger 4.12.0 before: keys that chart 4.4.0 removed.
        ("jaeger", {"config": {"receivers": {"otlp": {}}}, "storage": {"type": "memory"}}),
        ("jaeger", {"provisionDataStore": {"cassandra": False}}),
        # A near miss of a reviewed key.
        ("kube-prometheus-stack", {"grafana": {"sidecar": {"dashboard": {"enabled": True}}}}),
        ("neo4j", {"neo4j": {"password": "x"}}),
    ],
)
def test_a_key_that_was_not_reviewed_is_caught(chart, values):
    assert unreviewed_keys(chart, values)


def test_a_pass_through_map_admits_its_children_and_nothing_beside_it():
    assert reviewed("jaeger", "userconfig.receivers.otlp.protocols.grpc.endpoint")
    assert not reviewed("jaeger", "userconfigs.receivers")
    assert reviewed("jaeger", "jaeger.resources.limits.cpu")
    assert not reviewed("jaeger", "jaeger.resourcesExtra")
