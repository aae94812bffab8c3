"""The Neo4j launcher on a fresh home, probed the way `memstack up` probes it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from memstack.local.neo4j_server import Neo4jServer
from memstack.local.processes import free_port, kill_pid, spawn
from memstack.local.state import Credentials

ROOT = Path(__file__).resolve().parents[2]


def test_a_password_starting_with_a_dash_survives_readiness_probes_from_the_first_second(tmp_path):
    # One token_urlsafe password in 64 starts with "-". The launcher once passed it to
    # set-initial-password as an option, which failed; Neo4j then came up with neo4j/neo4j,
    # the readiness probe's logins locked the user, and the launcher exited 1 (a CI run's
    # recovery fixture, 10 errors).
    server = Neo4jServer(tmp_path, Credentials(neo4j_password="-" + "p" * 23))
    server.check_prerequisites()
    port = free_port()
    proc = spawn(server.launch(port))
    try:
        deadline = time.monotonic() + server.ready_timeout
        while not server.probe(port):
            assert proc.poll() is None, server.log.read_text()[-2000:]
            assert time.monotonic() < deadline, "Neo4j did not answer within its ready timeout"
            time.sleep(0.05)
        # The password was set before Bolt served anyone: no default-password window.
        created = [
            line for line in (tmp_path / "neo4j" / "neo4j-debug.log").read_text().splitlines() if "CREATE USER" in line
        ]
        assert len(created) == 1 and created[0].endswith("CREATE USER neo4j PASSWORD ****** CHANGE NOT REQUIRED")
    finally:
        kill_pid(proc.pid, None)


@pytest.mark.skipif(shutil.which("mvn") is None or shutil.which("make") is None, reason="needs mvn and make")
def test_make_builds_the_launcher_without_escape_codes(tmp_path):
    """`make setup` builds the launcher with Maven; its output goes to a log or a terminal as is,
    and Maven 3.8 writes colour resets ("[0m[0m") even in batch mode unless told not to."""
    launcher = tmp_path / "neo4j-local"
    shutil.copytree(ROOT / "tools" / "neo4j-local", launcher, ignore=shutil.ignore_patterns("target"))
    result = subprocess.run(
        ["make", "--no-print-directory", "neo4j-launcher", f"NEO4J_LAUNCHER={launcher}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (launcher / "target" / "neo4j-local.jar").exists()
    assert "\x1b" not in result.stdout + result.stderr, repr(result.stdout + result.stderr)
