"""Every expression of every generated dashboard panel runs on real metrics: the local stack's
Prometheus scrapes the service, the worker and both store exporters (and evaluates the kit's
recording rules) while a short load runs; then each query must parse and return data."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request

import pytest

from dashboards.build import GENERATED
from dashboards.external_metrics import KUBERNETES_ONLY
from dashboards.rules import RULE_FILES
from memstack import load as load_runner
from memstack import observability


def substitute(expr: str) -> str:
    """As Grafana would (memstack.observability.SUBSTITUTIONS), leaving no variable behind."""
    expr = observability.substitute(expr)
    assert "$" not in expr.replace('"$1"', ""), f"unsubstituted variable in {expr}"
    return expr


def kubernetes_only(expr: str) -> bool:
    """The query reads only series that exist on Kubernetes alone (HPA, CloudNativePG backups)."""
    names = {
        n
        for n in re.findall(r"\b[a-z][a-z0-9_]*_[a-z0-9_]+\b", expr)
        if n.startswith(("memstack_", "redis_", "pg_", "cnpg_", "kube_", "kubelet_", "barman_"))
    }
    return bool(names) and names <= KUBERNETES_ONLY


def panels():
    for path in sorted(GENERATED.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield board["title"], panel["title"], target["refId"], target["expr"]


def query(prometheus_url: str, expr: str) -> dict:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        return json.load(exc)


def wait_for_targets(prometheus_url: str, jobs: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{prometheus_url}/api/v1/targets", timeout=10) as resp:
            active = json.load(resp)["data"]["activeTargets"]
        up = {t["labels"]["job"] for t in active if t["health"] == "up"}
        if jobs <= up:
            return
        assert time.monotonic() < deadline, f"Prometheus does not scrape {sorted(jobs - up)}: {active}"
        time.sleep(1)


@pytest.mark.slow
def test_every_panel_query_returns_data_on_the_local_stack(stack, prometheus_url, service_and_worker, tmp_path):
    assert len(list(panels())) > 40  # never a pass over an empty set
    with service_and_worker(stack, tmp_path) as (url, tokens):
        wait_for_targets(
            prometheus_url, {observability.SERVICE_JOB, observability.WORKER_JOB, "redis-exporter", "postgres-exporter"}
        )
        load_runner.run(
            load_runner.LoadOptions(
                url=url, tokens_file=tokens, duration="20s", warmup_s=0, rate=100, users=10, results=tmp_path / "load"
            )
        )
        time.sleep(12)  # two more scrapes and rule evaluations after the load
        failures, with_data, allowed_empty = [], 0, []
        for dashboard, panel, ref, expr in panels():
            answer = query(prometheus_url, substitute(expr))
            where = f"{dashboard} / {panel} / query {ref}"
            if answer.get("status") != "success":
                failures.append(f"{where}: does not run: {answer.get('error')}: {expr}")
            elif answer["data"]["result"]:
                with_data += 1
            elif kubernetes_only(expr):
                allowed_empty.append(where)
            else:
                failures.append(f"{where}: no data: {expr}")
    # The local Prometheus evaluates the kit's rules too (the burn-rate panels read them).
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/rules", timeout=10) as resp:
        groups = json.load(resp)["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {g["name"] for g in groups} >= {g["name"] for build in RULE_FILES.values() for g in build()["groups"]}
    assert [r["name"] for r in rules if r["health"] != "ok"] == []
    total = len(list(panels()))
    print(
        f"\npanel queries: {total} run on real metrics, {with_data} returned data, "
        f"{len(allowed_empty)} empty as Kubernetes-only: {allowed_empty}"
    )
    assert not failures, "\n".join(failures)
    assert with_data + len(allowed_empty) == total

    # `memstack dashboards snapshot` draws the same panels from the same Prometheus.
    pictures = observability.snapshot(prometheus_url, tmp_path / "snapshots", minutes=5, step_s=5)
    assert sorted(p.name for p in pictures) == sorted(
        f"{json.loads(p.read_text())['uid']}.png" for p in GENERATED.glob("*.json")
    )
    for picture in pictures:
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 20_000
