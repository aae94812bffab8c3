"""Commands that start the local stack for their own run (`load`, `capacity storage`, and through
them `capacity measure`, `bench service`; `drill` likewise) stop it again and say so; a stack
that ran before them is left running, untouched."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memstack.errors import MemstackError
from memstack.local.backend import get_backend

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-c", "from memstack.cli import main; main()"]
STORAGE = ["capacity", "storage", "--conversations", "1", "--turns", "2", "--facts", "2", "--thoughts", "1"]


def _run(home, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MEMSTACK_BACKEND"}
    env |= {"MEMSTACK_HOME": str(home), "MEMSTACK_BACKEND": "process"}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=600)


def _running(home) -> list[str]:
    try:
        return [row.name for row in get_backend("process", home=home).status() if row.running]
    except MemstackError:  # nothing runs
        return []


def test_a_stack_the_command_started_is_stopped_after_it(tmp_path):
    home = tmp_path / "home"
    for args in (
        [*STORAGE, "--results", str(tmp_path / "storage")],
        ["load", "--duration", "2s", "--warmup", "0", "--rate", "20", "--users", "2", "--results", str(tmp_path / "l")],
    ):
        result = _run(home, *args)
        assert result.returncode in (0, 1), result.stderr  # 1: the SLO gate on a busy machine
        said = [line for line in result.stderr.splitlines() if "for this run; stopped it" in line]
        assert said == [f"memstack: started the process stack in {home} for this run; stopped it"], result.stderr
        assert _running(home) == []


def test_a_stack_that_ran_before_is_left_running(tmp_path):
    home = tmp_path / "home"
    backend = get_backend("process", home=home)
    backend.up(("redis", "postgres", "neo4j"))
    try:
        result = _run(home, *STORAGE, "--results", str(tmp_path / "storage"))
        assert result.returncode == 0, result.stderr
        assert "stopped it" not in result.stderr
        assert _running(home) == ["redis", "postgres", "neo4j"]
    finally:
        backend.down()
