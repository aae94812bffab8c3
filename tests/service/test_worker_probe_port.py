"""The worker's probe port: memory_core's `worker_probe_port` setting, unless `--port` says otherwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

from memstack.load import free_port, stop, wait_ready

CLI = [sys.executable, "-c", "from memstack.cli import main; main()"]


def test_a_bad_probe_port_setting_is_one_line_and_exit_2():
    result = subprocess.run(
        CLI + ["worker"],
        env={**os.environ, "MEMORY_WORKER_PROBE_PORT": "80"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "MEMORY_WORKER_PROBE_PORT" in lines[0], result.stderr
    assert "1024" in lines[0]


def test_without_port_the_worker_probes_listen_on_the_setting(stack, migrated, tmp_path):
    port = free_port()
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            CLI + ["worker", "--host", "127.0.0.1"],
            env={**os.environ, **stack.env(), "MEMORY_WORKER_PROBE_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log_path)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
            assert json.loads(response.read())["checks"]["redis"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            # The store pings of the shared health checks are timed, as the dashboards expect.
            assert 'operation="ping"' in response.read().decode()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        stop(process)
