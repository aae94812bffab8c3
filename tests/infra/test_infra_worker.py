"""The worker listens for its probes and metrics on the port the Deployment probes and scrapes."""

from __future__ import annotations

import pytest

from infra import names
from infra.config import settings_env


@pytest.mark.parametrize("port", [None, 9191])
def test_the_worker_listens_on_its_configured_health_port(run_program, port):
    merges = [f'memstack:memoryService={{"contract": {{"workerHealthPort": {port}}}}}'] if port else []
    run = run_program("dev", merges=merges)
    assert run.error is None, run.error and run.error["traceback"]
    (worker,) = run.one("Deployment", names.WORKER).manifest["spec"]["template"]["spec"]["containers"]
    expected = port or 8081
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env[settings_env("worker_probe_port")] == str(expected)
    assert [p["containerPort"] for p in worker["ports"]] == [expected]
    assert worker["livenessProbe"]["httpGet"]["port"] == expected
    assert worker["readinessProbe"]["httpGet"]["port"] == expected
