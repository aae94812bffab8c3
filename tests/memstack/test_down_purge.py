"""`memstack down --purge`: a containers stack's containers, volumes and network go; a process
or an external stack is refused, and so is a home that holds another backend's stack. And what
`down` says it did."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memstack.errors import MemstackError
from memstack.local.containers import docker_client, stack_prefix
from memstack.local.process import ProcessBackend
from memstack.local.processes import is_running
from memstack.local.state import ServiceState, StackState, load, save

CLI = [sys.executable, "-c", "from memstack.cli import main; main()"]


def _down_purge(home, backend: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMSTACK_HOME": str(home), "MEMSTACK_BACKEND": backend}
    return subprocess.run([*CLI, "down", "--purge"], env=env, capture_output=True, text=True, timeout=120)


def test_purge_deletes_the_containers_stack_s_volumes_and_network(tmp_path):
    try:
        engine = docker_client()
    except MemstackError as exc:
        pytest.skip(str(exc))
    home = tmp_path / "home"
    save(
        home,
        StackState(
            backend="containers",
            images="local",
            services={"redis": ServiceState(port=1, data_dir="/x", log="/x.log", url="redis://x", handle="gone")},
        ),
    )
    prefix = stack_prefix(home)
    other = engine.volumes.create(f"memstack-other-{prefix[-8:]}")
    try:
        engine.networks.create(prefix)
        engine.volumes.create(f"{prefix}-redis")
        result = _down_purge(home, "containers")
        assert result.returncode == 0, result.stderr
        assert engine.volumes.list(filters={"name": prefix + "-"}) == []
        assert engine.networks.list(names=[prefix]) == []
        assert engine.volumes.get(other.name)  # another stack's volume stays
        state = load(home)  # the home no longer records what was deleted
        assert state is not None and state.services == {} and state.images == "local"
    finally:
        other.remove(force=True)


def test_purge_refuses_a_process_stack_in_one_line(tmp_path):
    result = _down_purge(tmp_path / "home", "process")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--purge applies to a containers stack" in result.stderr


def test_purge_as_containers_refuses_a_home_holding_a_process_stack_and_leaves_it_running(tmp_path):
    """It used to delete this home's (absent) containers, say the stack was removed, exit 0 and
    leave the process stack running."""
    try:
        docker_client()
    except MemstackError as exc:
        pytest.skip(str(exc))
    home = tmp_path / "home"
    backend = ProcessBackend(home)
    try:
        backend.up(("redis",))
        result = _down_purge(home, "containers")
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert result.stderr.strip().count("\n") == 0
        assert f"{home} holds a 'process' stack" in result.stderr
        assert "memstack down --backend process" in result.stderr
        state = load(home)
        assert state is not None and is_running(state.services["redis"].pid, state.services["redis"].started)
    finally:
        backend.down()


def test_purge_refuses_an_external_stack_saying_its_data_is_not_memstack_s(tmp_path):
    result = _down_purge(tmp_path / "home", "external")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "external servers and their data are not memstack's to delete" in result.stderr
    assert "a external" not in result.stderr


def test_down_of_an_external_stack_says_it_stopped_nothing(tmp_path):
    env = {**os.environ, "MEMSTACK_HOME": str(tmp_path / "home"), "MEMSTACK_BACKEND": "external"}
    result = subprocess.run([*CLI, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "nothing stopped: external servers are not memstack's"
