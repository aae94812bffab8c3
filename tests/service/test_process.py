"""The service and the worker as real processes: graceful shutdown on SIGTERM, worker probes,
and the CLI's token and startup errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from memory_core import AgentMemory, MemoryClients
from memory_core.service.auth import TokenTable
from memstack.load import free_port, wait_ready

CLI = [sys.executable, "-c", "from memstack.cli import main; main()"]


def start(args: list[str], env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(CLI + args, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def token_env(tmp_path, tenant_id):
    tokens = tmp_path / "tokens"
    result = subprocess.run(
        CLI + ["token", "create", "--tenant", tenant_id, "--file", str(tokens)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip(), {"MEMSTACK_TOKENS_FILE": str(tokens)}


def test_token_create_prints_the_token_once_and_stores_its_hash(token_env, tenant_id, tmp_path):
    token, _ = token_env
    stored = (tmp_path / "tokens").read_text()
    assert token.startswith("mst_") and token not in stored
    assert oct((tmp_path / "tokens").stat().st_mode & 0o777) == "0o600"
    assert TokenTable.parse(stored, "tokens").tenant_for(token) == tenant_id


def test_serve_with_a_bad_tokens_file_is_one_line_and_exit_2(tmp_path, stack):
    bad = tmp_path / "tokens"
    bad.write_text("not a hash line\n")
    result = subprocess.run(
        CLI + ["serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **stack.env(), "MEMSTACK_TOKENS_FILE": str(bad)},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"memstack: {bad}:1: expected 'sha256:<64 hex> <tenant>'"]


def test_sigterm_drains_in_flight_requests_then_closes_pools(stack, migrated, token_env, tenant_id, tmp_path):
    token, env = token_env
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process = start(["serve", "--port", str(port)], {**stack.env(), **env}, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log_path)
        body = json.dumps({"value": "written during shutdown"}).encode()
        head = (
            f"PUT /v1/working/u/c/context/drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(head + body[:10])  # the request is in flight: its body is not complete
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert process.poll() is None, "the server exited with a request in flight"
            with pytest.raises(OSError):  # no new connections once draining
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            slow.sendall(body[10:])
            slow.settimeout(10)
            answer = slow.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 204"), answer
        # uvicorn re-raises the SIGTERM it captured once shutdown completed, and the CLI exits
        # on it with 128 + SIGTERM, as it does on any SIGTERM.
        assert process.wait(timeout=30) in (0, 128 + signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    messages = [json.loads(line)["message"] for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert "pools closed" in messages
    assert messages.index("pools closed") > messages.index("Shutting down")

    async def stored():
        async with await MemoryClients.connect(migrated) as clients:
            return await AgentMemory(tenant_id, "u", "c", clients=clients).get_working_context("drain")

    assert asyncio.run(stored()) == "written during shutdown"


def test_worker_serves_probes_and_stops_on_sigterm(stack, migrated, tmp_path):
    port = free_port()
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        process = start(["worker", "--host", "127.0.0.1", "--port", str(port)], stack.env(), log)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, process, log_path)
        assert get(f"{base}/health") == (200, '{"status":"ok"}')
        status, body = get(f"{base}/ready")
        assert status == 200 and json.loads(body)["checks"]["postgres"] == "ok"
        status, text = get(f"{base}/metrics")
        assert status == 200 and "memstack_build_info" in text and "memstack_pool_connections" in text
        assert get(f"{base}/nope")[0] == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_migrate_prints_what_it_applied(stack, migrated):
    result = subprocess.run(
        CLI + ["migrate"], capture_output=True, text=True, timeout=120, env={**os.environ, **stack.env()}
    )
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == {"postgres", "neo4j"}


@contextlib.contextmanager
def serving_in(cwd, env: dict):
    """`memstack serve` started in `cwd` with exactly `env`; yields its URL and log path."""
    port = free_port()
    log_path = cwd / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            CLI + ["serve", "--port", str(port)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log_path)
        yield f"http://127.0.0.1:{port}", log_path
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_reads_the_tokens_file_token_create_wrote_by_default(stack, migrated, tenant_id, tmp_path):
    """The README's order of commands, with no MEMSTACK_TOKENS_FILE anywhere: the token works."""
    env = {k: v for k, v in os.environ.items() if k not in ("MEMSTACK_TOKENS_FILE", "MEMSTACK_TOKENS")}
    env["MEMSTACK_HOME"] = str(tmp_path / "home")
    created = subprocess.run(
        CLI + ["token", "create", "--tenant", tenant_id],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = created.stdout.strip()
    assert (tmp_path / "home" / "tokens").exists() and not (tmp_path / "tokens").exists()
    with serving_in(tmp_path, {**env, **stack.env()}) as (base, log_path):
        request = urllib.request.Request(f"{base}/v1/users/u/context", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    assert "no bearer tokens" not in log_path.read_text()


def test_serve_without_tokens_warns_once(stack, migrated, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MEMSTACK_TOKENS_FILE", "MEMSTACK_TOKENS")}
    with serving_in(tmp_path, {**env, **stack.env()}) as (base, log_path):
        status, body = get(f"{base}/v1/users/u/context")
        assert status == 401 and json.loads(body) == {"detail": "missing bearer token"}
    warnings = [
        json.loads(line)
        for line in log_path.read_text().splitlines()
        if line.startswith("{") and "no bearer tokens" in line
    ]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning", warnings
    assert "memstack token create" in warnings[0]["message"]


def test_serve_started_before_the_first_token_takes_it(stack, migrated, tenant_id, tmp_path):
    """No tokens file when `serve` starts; `token create` afterwards: the service picks the file
    up (its watcher looks every 5 s) without a restart."""
    env = {k: v for k, v in os.environ.items() if k not in ("MEMSTACK_TOKENS_FILE", "MEMSTACK_TOKENS")}
    env["MEMSTACK_HOME"] = str(tmp_path / "home")
    with serving_in(tmp_path, {**env, **stack.env()}) as (base, _):
        created = subprocess.run(
            CLI + ["token", "create", "--tenant", tenant_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        request = urllib.request.Request(
            f"{base}/v1/users/u/context", headers={"Authorization": f"Bearer {created.stdout.strip()}"}
        )
        status = None
        deadline = time.monotonic() + 30
        while status != 200 and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
                time.sleep(0.5)
        assert status == 200


def test_up_applies_pending_migrations_idempotently(stack, migrated):
    """`memstack up` on a running stack: nothing to start, the schema is checked and already current."""
    if stack.home is None:
        pytest.skip("the external backend has no state directory for `memstack up`")
    result = subprocess.run(
        CLI + ["up", "--backend", stack.backend.name],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MEMSTACK_HOME": str(stack.home)},
    )
    assert result.returncode == 0, result.stderr
    assert "schema: up to date" in result.stdout


def test_a_request_the_http_server_cannot_parse_gets_a_documented_answer(stack, migrated, tmp_path):
    """uvicorn refuses an oversized request line before the app sees it; the OpenAPI documents that answer."""
    env = {k: v for k, v in os.environ.items() if k not in ("MEMSTACK_TOKENS_FILE", "MEMSTACK_TOKENS")}
    with serving_in(tmp_path, {**env, **stack.env()}) as (base, _):
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            target = "/v1/procedural/u/strategies?task=" + "%F3%A9%A3%A3" * 30_000
            conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = conn.recv(65536).decode(errors="replace").split("\r\n\r\n")[0].lower()
        status = int(head.split()[1])
        content_type = next(
            line.split(":", 1)[1].strip() for line in head.splitlines() if line.startswith("content-type")
        )
        _, spec = get(f"{base}/openapi.json")
        documented = json.loads(spec)["paths"]["/v1/procedural/{user_id}/strategies"]["get"]["responses"][str(status)]
        assert content_type.split(";")[0] in documented["content"], (status, content_type, documented)
