"""Bad input and missing prerequisites end in one line on stderr and exit code 2.

Each test uses its own MEMSTACK_HOME, so none of them touches the session's stack.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import redis

from memstack.local.neo4j_server import launcher_dir
from memstack.local.process import ProcessBackend

MEMSTACK = str(Path(sys.executable).parent / "memstack")


def run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "MEMSTACK_HOME": str(home), **env}
    full_env.pop("MEMSTACK_BACKEND", None)
    full_env.update(env)
    return subprocess.run([MEMSTACK, *args], env=full_env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0]


def bin_dir_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only the named tools (plus what the scripts themselves need)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_unknown_backend(tmp_path):
    assert_one_line_error(run(tmp_path, "up", "--backend", "kubernetes"), "unknown backend 'kubernetes'", "process")


def test_unknown_backend_from_environment(tmp_path):
    assert_one_line_error(run(tmp_path, "status", MEMSTACK_BACKEND="nomad"), "unknown backend 'nomad'")


def test_status_when_nothing_runs(tmp_path):
    assert_one_line_error(run(tmp_path, "status"), "no local stack is running", "memstack up")


def test_env_when_nothing_runs(tmp_path):
    assert_one_line_error(run(tmp_path, "env"), "no local stack is running")


def test_unknown_service(tmp_path):
    assert_one_line_error(run(tmp_path, "kill", "mysql"), "unknown service 'mysql'")


def test_bad_port_option(tmp_path):
    assert_one_line_error(run(tmp_path, "up", "--port", "redis=99999"), "--port")


def test_containers_without_docker_engine(tmp_path):
    result = run(tmp_path, "up", "--backend", "containers", DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    assert_one_line_error(result, "containers", "Docker engine")


def test_missing_java(tmp_path):
    path = bin_dir_with(tmp_path, "redis-server", "prometheus", "mvn")
    assert_one_line_error(run(tmp_path, "up", PATH=path), "java not found")
    assert not (tmp_path / "redis" / "redis.conf").exists(), "nothing may start when a prerequisite is missing"


def test_missing_maven_when_launcher_is_not_built(tmp_path):
    unbuilt = tmp_path / "launcher"
    unbuilt.mkdir()
    shutil.copy(launcher_dir() / "pom.xml", unbuilt / "pom.xml")
    path = bin_dir_with(tmp_path, "redis-server", "prometheus", "java")
    result = run(tmp_path, "up", PATH=path, MEMSTACK_NEO4J_LAUNCHER=str(unbuilt))
    assert_one_line_error(result, "not built", "mvn")


def test_external_backend_without_urls(tmp_path):
    env = dict.fromkeys(("REDIS_URL", "POSTGRES_URL", "NEO4J_URI", "NEO4J_PASSWORD"), "")
    assert_one_line_error(run(tmp_path, "up", "--backend", "external", **env), "REDIS_URL")


def test_pinned_port_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(tmp_path, "up", "--port", f"redis={port}")
    assert_one_line_error(result, f"port {port}", "redis", "taken")


def test_kill_on_external_backend(tmp_path):
    assert_one_line_error(run(tmp_path, "kill", "redis", "--backend", "external"), "external backend cannot kill")


def test_automatic_port_moves_when_taken_and_data_stays(tmp_path):
    """A port chosen by memstack that someone else took meanwhile is replaced; the data dir is reused."""
    backend = ProcessBackend(tmp_path)
    backend.up(("redis",))
    try:
        first = backend.status()[0]
        redis.Redis.from_url(first.url).set("survives", "yes")
        old_port = int(first.url.rsplit(":", 1)[1].split("/")[0])
        backend.down()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", old_port))
            taken.listen()
            backend.up(("redis",))
        second = backend.status()[0]
        assert second.running and second.url != first.url
        assert redis.Redis.from_url(second.url).get("survives") == b"yes"
    finally:
        backend.down()


def test_state_file_is_private(tmp_path):
    backend = ProcessBackend(tmp_path)
    backend.up(("redis",))
    try:
        assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "redis" / "redis.conf").stat().st_mode & 0o777 == 0o600
    finally:
        backend.down()
