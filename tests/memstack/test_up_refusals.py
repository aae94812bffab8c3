"""`up` refuses what it can before anything starts, and a failed `up` leaves running only what ran
before it; `start` on a running service says so."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from memstack.errors import MemstackError
from memstack.local import process
from memstack.local.process import ProcessBackend
from memstack.local.processes import is_running
from memstack.local.redis_server import RedisServer
from memstack.local.state import load

MEMSTACK = str(Path(sys.executable).parent / "memstack")


def run(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMSTACK_HOME": str(home)}
    env.pop("MEMSTACK_BACKEND", None)
    return subprocess.run([MEMSTACK, *args], env=env, capture_output=True, text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def running_services(home: Path) -> list[str]:
    state = load(home)
    if state is None:
        return []
    records = {**state.services, **state.starting}
    return [name for name, record in records.items() if is_running(record.pid, record.started)]


@pytest.fixture
def taken_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_taken_pinned_port_is_refused_before_anything_starts(tmp_path, taken_port):
    home = tmp_path / "home"
    try:
        line = one_line_error(run(home, "up", "--port", f"neo4j={taken_port}"))
        assert f"port {taken_port} for neo4j is taken" in line
        assert running_services(home) == []  # Redis and Postgres, started first, were left running
    finally:
        run(home, "down")


def test_images_with_a_process_stack_is_refused(tmp_path):
    """A process stack runs no images: `--images` would be accepted and never used."""
    home = tmp_path / "home"
    try:
        line = one_line_error(run(home, "up", "-b", "process", "--images", "local"))
        assert "--images applies to the containers backend" in line and "process" in line
        assert running_services(home) == []
        state = load(home)
        assert state is None or state.images is None
    finally:
        run(home, "down")


def test_a_port_pinned_twice_is_refused(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "home"
    try:
        line = one_line_error(run(home, "up", "--port", f"redis={port}", "--port", f"postgres={port}"))
        assert f"--port pins {port} for both redis and postgres" in line
        assert running_services(home) == []
    finally:
        run(home, "down")


def test_a_pinned_port_taken_after_the_check_stops_what_up_started(tmp_path, monkeypatch):
    """Between the check and Postgres's start, another process takes its port: the Redis this
    `up` started is stopped again."""
    home = tmp_path / "home"
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
    squatter = socket.socket()

    class RedisThenPortTaken(RedisServer):
        def after_ready(self, port_: int) -> None:
            super().after_ready(port_)
            squatter.bind(("127.0.0.1", port))
            squatter.listen()

    monkeypatch.setitem(process.SERVICE_TYPES, "redis", RedisThenPortTaken)
    backend = ProcessBackend(home, ports={"postgres": port})
    try:
        with pytest.raises(MemstackError, match=f"port {port} for postgres is taken"):
            backend.up(("redis", "postgres"))
        state = load(home)
        assert state is not None and "redis" in state.services  # it did start
        assert running_services(home) == []
    finally:
        squatter.close()
        backend.down()


def test_with_takes_a_comma_separated_list(tmp_path):
    """Each name is checked on its own (a list was one unknown service 'prometheus,jaeger')."""
    line = one_line_error(run(tmp_path / "home", "up", "--with", "prometheus,mysql", "--with", "jaeger"))
    assert "unknown service 'mysql'" in line


def test_start_on_a_running_service_says_it_was_running_and_leaves_it(tmp_path):
    home = tmp_path / "home"
    backend = ProcessBackend(home)
    try:
        backend.up(("redis",))
        state = load(home)
        assert state is not None
        before = state.services["redis"].pid

        result = run(home, "start", "redis")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "redis was already running"
        state = load(home)
        assert state is not None and state.services["redis"].pid == before

        assert run(home, "kill", "redis").returncode == 0
        result = run(home, "start", "redis")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "redis started"
    finally:
        backend.down()


def test_an_image_the_engine_cannot_get_is_one_line_naming_it(tmp_path, monkeypatch):
    # Official images without a registry (or a mistyped one): the engine's refusal, not a traceback.
    from memstack.images.build import IMAGES_ENV
    from memstack.local.containers import ContainersBackend

    try:
        backend = ContainersBackend(tmp_path)
    except MemstackError as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv(IMAGES_ENV, "official")
    image = "memstack-test.invalid/nothing:0"
    monkeypatch.setattr(ContainersBackend, "_image", lambda self, service, state: (image, None))
    try:
        with pytest.raises(MemstackError) as refused:
            backend.up(("redis",))
    finally:
        backend.remove()
    message = str(refused.value)
    assert message.startswith(f"redis: the Docker engine could not run {image}: "), message
    assert "memstack images build --images local" in message and "\n" not in message
