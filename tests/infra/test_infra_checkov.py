"""checkov over the rendered manifests of every stack (and of a prod restore): only allow-listed findings.

checkov runs from its own virtualenv (`make checkov`): its pins (packaging<24 among them)
cannot share one with pulumi's. Each finding that stays is listed, with its reason, in
infra/checkov-allowlist.yaml; an entry that no stack produces any more fails the test too.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from pulumi_runs import REPO_ROOT, STACKS, Run

ALLOWLIST = REPO_ROOT / "infra" / "checkov-allowlist.yaml"
CHECKOV = Path(os.environ.get("CHECKOV", REPO_ROOT / ".venv-checkov" / "bin" / "checkov"))
# Every optional recovery path (and the load test) on, so that their objects are scanned as well.
RESTORE_SCENARIO = "prod-restore"
# The second production stack (a standby region), which the `runs` fixture does not cover.
STANDBY_STACK = "prod-dr"
RESTORE_OVERRIDES = ("memstack:loadtestTokens=tenant-a mock-load-token",)
RESTORE_MERGES = (
    'memstack:postgres={"restore": {"serverName": "memstack-pg", "targetTime": "2026-12-01T10:00:00Z"},'
    ' "backup": {"serverName": "memstack-pg-r1"}}',
    'memstack:redis={"restore": {"snapshot": "dump-20261201T030000.rdb"}}',
    'memstack:neo4j={"rebuild": {"enabled": true}}',
    'memstack:loadtest={"enabled": true}',
)


def allowlist() -> list[dict]:
    return yaml.safe_load(ALLOWLIST.read_text())


def allowed_triples() -> set[tuple[str, str, str]]:
    return {
        (entry["check"], stack, resource)
        for entry in allowlist()
        for stack in entry["stacks"]
        for resource in entry["resources"]
    }


def render(run: Run, directory: Path) -> Path:
    directory.mkdir(parents=True)
    for index, manifest in enumerate(run.manifests):
        name = f"{index:03d}-{manifest['kind']}-{manifest['metadata']['name']}.yaml"
        (directory / name).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return directory


def checkov(root: Path) -> tuple[set[tuple[str, str, str]], int]:
    """(check, stack, Kind.name) of every failed check below `root/<stack>/`, and how many checks ran."""
    assert CHECKOV.exists(), f"checkov is not installed at {CHECKOV}: run `make checkov`"
    command = [
        str(CHECKOV),
        "--framework",
        "kubernetes",
        "--quiet",
        "--compact",
        "--skip-download",
        "--output",
        "json",
        "--directory",
        str(root),
    ]
    # No network here: checkov must not try to fetch its guideline mappings.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = set()
    for finding in report["results"]["failed_checks"]:
        stack = Path(finding["file_abs_path"]).resolve().relative_to(root.resolve()).parts[0]
        kind, _, name = finding["resource"].partition(".")
        failed.add((finding["check_id"], stack, f"{kind}.{name.partition('.')[2] or name}"))
    checked = report["summary"]["passed"] + report["summary"]["failed"]
    return failed, checked


@pytest.fixture(scope="module")
def findings(runs, run_program_module, tmp_path_factory) -> tuple[set[tuple[str, str, str]], int]:
    root = tmp_path_factory.mktemp("rendered")
    for stack in STACKS:
        render(runs[stack], root / stack)
    restore = run_program_module("prod", *RESTORE_OVERRIDES, merges=RESTORE_MERGES)
    assert restore.error is None, restore.error
    render(restore, root / RESTORE_SCENARIO)
    standby = run_program_module(STANDBY_STACK)
    assert standby.error is None, standby.error
    render(standby, root / STANDBY_STACK)
    return checkov(root)


def test_every_allowlist_entry_gives_its_reason():
    for entry in allowlist():
        assert set(entry) == {"check", "stacks", "resources", "reason"}, entry
        assert entry["check"].startswith("CKV") and len(entry["reason"].split()) >= 8, entry
        assert set(entry["stacks"]) <= {*STACKS, RESTORE_SCENARIO, STANDBY_STACK}, entry


def test_checkov_finds_nothing_outside_the_allowlist(findings):
    failed, checked = findings
    assert checked > 1000, f"checkov ran only {checked} checks"
    unexpected = sorted(failed - allowed_triples())
    assert not unexpected, "\n".join(" ".join(item) for item in unexpected)


def test_the_allowlist_holds_nothing_that_no_longer_fails(findings):
    failed, _ = findings
    stale = sorted(allowed_triples() - failed)
    assert not stale, "allow-listed but passing now (remove them):\n" + "\n".join(" ".join(i) for i in stale)


def test_checkov_catches_a_hardening_regression(runs, tmp_path):
    """A pod that mounts the API token and runs as a low UID is reported: the scan is live."""
    run = runs["dev"]
    directory = render(run, tmp_path / "dev")
    worker = next(p for p in directory.iterdir() if p.name.endswith("Deployment-memstack-worker.yaml"))
    manifest = yaml.safe_load(worker.read_text())
    spec = manifest["spec"]["template"]["spec"]
    spec["automountServiceAccountToken"] = True
    spec["securityContext"]["runAsUser"] = 1000
    worker.write_text(yaml.safe_dump(manifest))
    failed, _ = checkov(tmp_path)
    assert ("CKV_K8S_38", "dev", "Deployment.memstack-worker") in failed
    assert ("CKV_K8S_40", "dev", "Deployment.memstack-worker") in failed
