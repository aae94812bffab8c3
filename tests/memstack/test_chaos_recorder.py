"""The chaos run's request recorder (a Locust plugin): one CSV row per request, and none after
Locust's quitting closed the file (requests still end while Locust stops its users)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from memstack.chaos.run import RECORDER

# Locust patches the interpreter (gevent) when imported: the plugin runs in a process of its own.
SCRIPT = f"""
import importlib.util
from locust import events
spec = importlib.util.spec_from_file_location("recorder", {str(RECORDER)!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
events.request.fire(request_type="GET", name="working get", response_time=2.5, response_length=10,
                    response=None, exception=None, start_time=1000.0, context={{}})
events.quitting.fire(environment=None)
events.request.fire(request_type="GET", name="working get", response_time=3.0, response_length=10,
                    response=None, exception=None, start_time=1001.0, context={{}})
"""


def test_recorder_writes_each_request_and_nothing_after_quitting(tmp_path: Path) -> None:
    log = tmp_path / "requests.csv"
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, "MEMSTACK_CHAOS_REQUESTS": str(log)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "closed file" not in run.stderr, run.stderr[-2000:]
    rows = list(csv.reader(log.open()))
    assert rows == [["1000.0000", "working get", "0", "2.500", "0", ""]]
