"""A SIGTERM to the CLI (a `timeout`, a CI job cancelled) leaves nothing running that `down` cannot stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-c", "from memstack.cli import main; main()"]


def _processes_of(home: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(home) in cmdline and entry.name != str(os.getpid()):
                found.append(cmdline)
    return found


def test_sigterm_while_neo4j_starts_leaves_no_process_behind(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "MEMSTACK_HOME": str(home)}
    up = subprocess.Popen([*CLI, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any("neo4j-local.jar" in p for p in _processes_of(home)):
            assert up.poll() is None, up.stderr.read() if up.stderr else ""
            assert time.monotonic() < deadline, "Neo4j was never started"
            time.sleep(0.05)
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if up.poll() is None:
            up.kill()
    down = subprocess.run([*CLI, "down"], env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 30
    while (left := _processes_of(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []
