"""`memstack up --with jaeger` without Go, and no Jaeger built: one line naming Go, exit 2, and
nothing started."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_up_with_jaeger_without_go_says_so_in_one_line(tmp_path):
    go = shutil.which("go")
    if go is not None and Path(go).parent == Path(shutil.which("redis-server") or "/").parent:
        pytest.skip("go shares a directory with redis-server here, so PATH cannot hide it alone")
    directories = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "go").exists()]
    (tmp_path / "jaeger").mkdir()
    (tmp_path / "jaeger" / "go.mod").write_text("module example.com/jaeger\n")
    env = {
        **os.environ,
        "PATH": os.pathsep.join(directories),
        "MEMSTACK_HOME": str(tmp_path / "home"),
        "MEMSTACK_JAEGER_DIR": str(tmp_path / "jaeger"),
    }
    result = subprocess.run(
        [sys.executable, "-c", "from memstack.cli import main; main()", "up", "--with", "jaeger"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memstack: go not found"), result.stderr
    assert not (tmp_path / "home" / "redis").exists(), "a service started before the missing tool was found"
