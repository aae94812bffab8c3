"""A SIGTERM to the CLI (a `timeout`, a CI job cancelled) leaves nothing running that `down` cannot stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memstack.local.postgres_server import relocation_dir
from memstack.local.processes import is_running

CLI = [sys.executable, "-c", "from memstack.cli import main; main()"]


def _stat(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat from its third field on: [1] is the parent, [19] the start time."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and int(entry) != os.getpid()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(parent: int) -> dict[int, int]:
    """The processes `parent` started (the services are its children until it exits), pid -> start time."""
    found = {}
    for pid in _pids():
        fields = _stat(pid)
        if fields and fields[1] == str(parent):
            found[pid] = int(fields[19])
    return found


def _state(home: Path) -> dict:
    try:
        return json.loads((home / "state.json").read_text())
    except FileNotFoundError:
        return {}


def _recorded(home: Path) -> tuple[dict[int, int], set[int]]:
    """The pids (with start times) and ports the stack's state file records, ready or starting."""
    state = _state(home)
    records = [*state.get("services", {}).values(), *state.get("starting", {}).values()]
    return {r["pid"]: r["started"] for r in records if r.get("pid")}, {r["port"] for r in records}


def _listening(ports: set[int]) -> set[int]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) in ports:
                found.add(int(local.rsplit(":", 1)[1], 16))
    return found


def leftovers(home: Path, pids: dict[int, int], ports: set[int]) -> list[str]:
    """What of the stack in `home` still runs: any of `pids`, any process working in the home or
    in the data directories moved out of it (Postgres's, when the home is 0700), or mentioning
    either on its command line, and any of `ports` still listened on. By pid, working directory
    and port, since Redis rewrites its command line and Postgres's data may be outside the home."""
    roots = [str(home), str(home.resolve()), str(relocation_dir(home))]
    found = [f"pid {pid}: {_cmdline(pid)[:120]}" for pid, started in pids.items() if is_running(pid, started)]
    for pid in _pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        cmdline = _cmdline(pid)
        if any(cwd == root or cwd.startswith(root + "/") or root + "/" in cmdline for root in roots):
            found.append(f"pid {pid} (cwd {cwd}): {cmdline[:120]}")
    found += [f"port {port} listened on" for port in sorted(_listening(ports))]
    return found


def test_sigterm_while_neo4j_starts_leaves_no_process_behind(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "MEMSTACK_HOME": str(home)}
    up = subprocess.Popen([*CLI, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 300
        while not any("neo4j-local.jar" in _cmdline(pid) for pid in started):
            assert up.poll() is None, up.stderr.read() if up.stderr else ""
            assert time.monotonic() < deadline, "Neo4j was never started"
            started.update(_children(up.pid))
            time.sleep(0.05)
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if up.poll() is None:
            up.kill()
    recorded, ports = _recorded(home)
    assert len(ports) >= 2, "Redis and Postgres were up before Neo4j started"
    down = subprocess.run([*CLI, "down"], env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 30
    while (left := leftovers(home, {**started, **recorded}, ports)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []


def test_down_stops_a_service_an_up_killed_outright_left_starting(tmp_path):
    """SIGKILL gives `up` no cleanup: the pid it recorded before waiting is what `down` stops."""
    home = tmp_path / "home"
    env = {**os.environ, "MEMSTACK_HOME": str(home)}
    up = subprocess.Popen([*CLI, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (starting := _state(home).get("starting", {}).get("neo4j")):
            assert up.poll() is None, up.stderr.read() if up.stderr else ""
            assert time.monotonic() < deadline, "Neo4j was never started"
            time.sleep(0.05)
        up.kill()
        up.wait(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
    assert is_running(starting["pid"], starting["started"])
    recorded, ports = _recorded(home)
    down = subprocess.run([*CLI, "down"], env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    assert leftovers(home, recorded, ports) == []
    assert _state(home)["starting"] == {}


# A command whose cleanup, interrupted by SIGTERM, raises its own error or swallows the SystemExit
# (as the Neo4j driver did during migrations: `ClientError ... BeginMessage cannot ...`, exit 1).
_INTERRUPTED_CLEANUP = """
import sys, time
from memstack import cli

cleanup = sys.argv.pop(1)

@cli.app.command("wait")
def wait() -> None:
    try:
        print("ready", flush=True)
        time.sleep(60)
    except BaseException:
        if cleanup == "raises":
            raise RuntimeError("the driver's own error while closing")
    print("finished", flush=True)

cli.main()
"""


@pytest.mark.parametrize("cleanup", ["raises", "swallows"])
def test_sigterm_exits_143_whatever_the_cleanup_raises(cleanup):
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_CLEANUP, cleanup, "wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
