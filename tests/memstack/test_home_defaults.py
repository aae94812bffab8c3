"""Commands with no explicit setting use the stack's home ($MEMSTACK_HOME): `token create`
writes its hash file there (never into the current directory), `migrate` migrates the stack
the home holds, with no `eval "$(memstack env)"` first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def test_graph_rebuild_and_serve_use_the_stack_in_the_home(stack):
    """`migrate`, `graph rebuild`, `serve` and `worker` agree on the stores: with none named in
    the environment, each takes the home's stack (they used to try 127.0.0.1:5432)."""
    if stack.home is None:
        import pytest

        pytest.skip("the external backend keeps no stack in a home")
    import httpx

    from memstack.load import free_port

    env = _env(MEMSTACK_HOME=str(stack.home), MEMSTACK_BACKEND=stack.backend.name)
    rebuilt = subprocess.run([MEMSTACK, "graph", "rebuild"], env=env, capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "outbox_position" in json.loads(rebuilt.stdout), rebuilt.stdout

    port = free_port()
    serve = subprocess.Popen(
        [MEMSTACK, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert serve.poll() is None, serve.communicate()[1]
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
            except httpx.TransportError:
                ready = None
            if ready is not None and ready.status_code == 200:
                break
            assert time.monotonic() < deadline, ready and ready.text
            time.sleep(0.2)
    finally:
        serve.terminate()
        serve.wait(timeout=60)


def test_with_no_stack_anywhere_the_error_says_how_to_get_one(tmp_path):
    from memstack.load import free_port

    result = subprocess.run(
        [MEMSTACK, "serve", "--port", str(free_port())],
        env=_env(MEMSTACK_HOME=str(tmp_path), POSTGRES_URL=f"postgresql://x@127.0.0.1:{free_port()}/x"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "memstack up" not in result.stderr  # the environment named a store: no stack hint
    result = subprocess.run(
        [MEMSTACK, "graph", "rebuild"],
        env=_env(MEMSTACK_HOME=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_external_backend_with_a_bad_address_is_one_line_naming_it(tmp_path):
    result = subprocess.run(
        [MEMSTACK, "up", "--backend", "external"],
        env=_env(
            MEMSTACK_HOME=str(tmp_path),
            REDIS_URL="notaurl",
            POSTGRES_URL="postgresql://x@127.0.0.1:1/x",
            NEO4J_URI="bolt://127.0.0.1:1",
            NEO4J_USER="neo4j",
            NEO4J_PASSWORD="x",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memstack: REDIS_URL: "), result.stderr
