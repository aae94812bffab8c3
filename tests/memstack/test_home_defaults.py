"""Commands with no explicit setting use the stack's home ($MEMSTACK_HOME): `token create`
writes its hash file there (never into the current directory), `migrate` migrates the stack
the home holds, with no `eval "$(memstack env)"` first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from memory_core.settings import CONNECTION_ENV_VARS

MEMSTACK = str(Path(sys.executable).parent / "memstack")


def _env(**extra: str) -> dict[str, str]:
    drop = {*CONNECTION_ENV_VARS, "MEMSTACK_TOKENS_FILE", "MEMSTACK_TOKENS", "MEMSTACK_BACKEND", "MEMSTACK_HOME"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def test_token_create_writes_a_private_file_in_the_home_not_the_current_directory(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    result = subprocess.run(
        [MEMSTACK, "token", "create", "--tenant", "acme"],
        cwd=cwd,
        env=_env(MEMSTACK_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert list(cwd.iterdir()) == []
    tokens = home / "tokens"
    assert oct(tokens.stat().st_mode & 0o777) == "0o600"
    assert str(tokens) in result.stderr and tokens.read_text().strip().endswith(" acme")


def test_migrate_uses_the_stack_in_the_home(stack):
    if stack.home is None:
        import pytest

        pytest.skip("the external backend keeps no stack in a home")
    result = subprocess.run(
        [MEMSTACK, "migrate"],
        env=_env(MEMSTACK_HOME=str(stack.home), MEMSTACK_BACKEND=stack.backend.name),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    applied = json.loads(result.stdout)
    assert set(applied) == {"postgres", "neo4j"}, applied
