"""`memstack serve` and `memstack worker` refuse what they cannot run with before starting:
one line on stderr naming the problem, exit 2, never a traceback or a 30 s wait on a pool."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from memstack.load import free_port

CLI = [sys.executable, "-c", "from memstack.cli import main; main()"]


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    # Well inside the 30 s a connection pool would wait before giving up.
    return subprocess.run(CLI + args, env={**os.environ, **env}, capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["serve", "--log-level", "loud"], "--log-level"),
        (["worker", "--log-level", "loud"], "--log-level"),
        (["serve", "--port", "70000"], "--port"),
        (["worker", "--port", "0"], "--port"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args, named):
    result = run(args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_taken_port_or_a_foreign_host_is_one_line_before_the_stores(command, tmp_path):
    # No store answers in this home: the address is refused before they are asked for.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, named in (
            (
                ["--host", "127.0.0.1", "--port", str(port)],
                f"cannot listen on 127.0.0.1:{port}: Address already in use",
            ),
            (["--host", "999.1.1.1", "--port", str(free_port())], "cannot listen on 999.1.1.1"),
        ):
            result = run([command, *args], MEMSTACK_HOME=str(tmp_path))
            assert result.returncode == 2, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"memstack: {command}: {named}"), result.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_an_unreachable_postgres_is_one_line_naming_it(command, tmp_path):
    nothing_listens = f"postgresql://memstack@127.0.0.1:{free_port()}/memstack"
    result = run([command, "--port", str(free_port())], POSTGRES_URL=nothing_listens, MEMSTACK_HOME=str(tmp_path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach a store: postgres" in lines[0], result.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize(
    ("variable", "value"), [("REDIS_URL", "localhost:6379"), ("NEO4J_URI", "localhost:7687"), ("NEO4J_URI", "http://x")]
)
def test_a_malformed_store_address_is_one_line_naming_its_variable(command, variable, value, tmp_path):
    result = run([command, "--port", str(free_port())], **{variable: value}, MEMSTACK_HOME=str(tmp_path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr


def test_migrate_with_a_wrong_neo4j_password_names_the_credentials(stack):
    result = run(["migrate"], **{**stack.env(), "NEO4J_PASSWORD": "not-the-password"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NEO4J_PASSWORD" in lines[0], result.stderr


@pytest.mark.parametrize(
    ("args", "home_is_a_file"),
    [(["up"], True), (["load", "--results", "/proc/no-such-dir", "--url", "http://127.0.0.1:9"], False)],
)
def test_a_path_that_cannot_be_used_is_one_line_naming_it(args, home_is_a_file, tmp_path):
    home = tmp_path / "home"
    if home_is_a_file:
        home.write_text("not a directory")
    tokens = tmp_path / "tokens"
    tokens.write_text("acme token\n")
    extra = ["--tokens-file", str(tokens)] if "--url" in args else []
    result = run(args + extra, MEMSTACK_HOME=str(home))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and (str(home) in lines[0] or "/proc/no-such-dir" in lines[0]), result.stderr
