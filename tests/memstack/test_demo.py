"""`memstack demo` (what `make demo` runs) shows live data: Prometheus scraped the service and the
worker during the run, and the figures it prints come from those scrapes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

CLI = [sys.executable, "-c", "from memstack.cli import main; main()"]


def run_demo(stack, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack.env(), "MEMSTACK_BACKEND": stack.backend.name}
    if stack.home is not None:
        env["MEMSTACK_HOME"] = str(stack.home)
    return subprocess.run(CLI + ["demo", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def figure(output: str, label: str) -> str:
    found = re.search(rf"^  {re.escape(label)}: (.+)$", output, re.MULTILINE)
    assert found, f"no {label!r} line in:\n{output}"
    return found.group(1)


def test_the_demo_shows_what_prometheus_recorded_of_the_service_and_the_worker(stack, tmp_path):
    # Long enough for Prometheus to discover the service (file_sd every 5 s) and scrape it twice.
    result = run_demo(stack, tmp_path, "--duration", "12s", "--rate", "50", "--users", "10")
    # This machine may miss the SLO under other load; that is exit 1 with the violations named.
    assert result.returncode in (0, 1), result.stderr
    assert all(line.startswith("memstack: SLO violated") for line in result.stderr.splitlines()), result.stderr
    if stack.backend.name == "external" and stack.prometheus_url is None:
        assert "this stack has no Prometheus" in result.stdout
        return
    scraped = figure(result.stdout, "scraped")
    assert "memory-service up" in scraped and "memstack-worker up" in scraped, scraped
    assert int(figure(result.stdout, "requests served (service)").replace(",", "")) > 0
    assert figure(result.stdout, "worker jobs run") != "no data"
    assert figure(result.stdout, "outbox rows pending, at most (worker)") != "no data"
    assert "route group" in result.stdout and "memstack local stack" in result.stdout
    if stack.home is not None:  # a stack memstack runs: left running for the dashboards, and said so
        assert "the stack keeps running" in result.stdout and "`memstack down` stops it" in result.stdout


def test_a_bad_duration_is_refused_before_anything_starts(tmp_path):
    env = {**os.environ, "MEMSTACK_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        CLI + ["demo", "--duration", "soon"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--duration" in result.stderr, result.stderr
    assert not (tmp_path / "home").exists()
