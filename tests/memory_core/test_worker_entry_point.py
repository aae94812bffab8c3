"""`python -m memory_core.worker` refuses bad arguments and settings in one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def worker(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "memory_core.worker", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--port", "abc"], {}, "--port"),
        (["--port", "70000"], {}, "--port"),
        (["--no-such-option"], {}, "--no-such-option"),
        ([], {"EMBEDDING_PROVIDER": "nosuch"}, "MEMORY_EMBEDDING_PROVIDER"),
        ([], {"MEMORY_WORKER_PROBE_PORT": "80"}, "MEMORY_WORKER_PROBE_PORT"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, env, named):
    result = worker(*args, **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "usage:" not in result.stderr and "Traceback" not in result.stderr
