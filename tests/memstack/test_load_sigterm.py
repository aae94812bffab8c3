"""`memstack load --url` against a stand-in HTTP server (the tests here are about the CLI and
Locust, not the service). A SIGTERM to `memstack load` stops Locust and its worker processes
too, not only the CLI: Locust runs in a session of its own, so nothing but the CLI's cleanup
reaches it."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_cli_errors import MEMSTACK


class _Answering(http.server.BaseHTTPRequestHandler):
    """Any request: 200 and an empty JSON object (/ready is all the CLI checks before Locust starts)."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


def _parent(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def _alive(pid: int) -> bool:
    """Running (a zombie has ended; it waits only for its new parent to reap it)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2] != "Z"


def _descendants(root: int) -> set[int]:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    parents = {pid: _parent(pid) for pid in pids}
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_locust_and_its_workers(tmp_path, workers):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tokens = tmp_path / "tokens"
    tokens.write_text("tenant-a token-a\n")
    env = {**os.environ, "MEMSTACK_HOME": str(tmp_path / "home")}
    cli = subprocess.Popen(
        [
            MEMSTACK,
            "load",
            "--url",
            f"http://127.0.0.1:{server.server_address[1]}",
            "--tokens-file",
            str(tokens),
            "--duration",
            "60s",
            "--rate",
            "20",
            "--users",
            "5",
            "--warmup",
            "0",
            "--workers",
            str(workers),
            "--results",
            str(tmp_path / "results"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Locust and (with --workers 2) the worker processes it forks, once they all run.
        deadline = time.monotonic() + 60
        locust: set[int] = set()
        while time.monotonic() < deadline:
            locust = {pid for pid in _descendants(cli.pid) if "locust" in _cmdline(pid)}
            if len(locust) >= (1 if workers == 1 else 1 + workers):
                break
            assert cli.poll() is None, cli.communicate()
            time.sleep(0.2)
        assert locust, "Locust never started"
        time.sleep(1)  # past its start-up, into the load
        cli.send_signal(signal.SIGTERM)
        _, stderr = cli.communicate(timeout=60)
        assert cli.returncode == 143, stderr
        assert "Traceback" not in stderr.decode()
        time.sleep(0.5)
        assert [_cmdline(pid) for pid in locust if _alive(pid)] == []
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        for pid in locust if "locust" in locals() else ():
            if _alive(pid) and "locust" in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)
        server.shutdown()


def test_a_relative_tokens_file_is_read_from_where_the_cli_runs(tmp_path):
    # Locust works in the results directory: a path relative to the CLI's directory was not found
    # there, and every user failed on an empty token list.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "tokens").write_text("tenant-a token-a\n")
    try:
        result = subprocess.run(
            [
                MEMSTACK,
                "load",
                "--url",
                f"http://127.0.0.1:{server.server_address[1]}",
                "--tokens-file",
                "tokens",
                "--duration",
                "2s",
                "--rate",
                "20",
                "--users",
                "2",
                "--warmup",
                "0",
                "--results",
                "results",
            ],
            env={**os.environ, "MEMSTACK_HOME": str(tmp_path / "home")},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.shutdown()
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["total"]["requests"] > 0 and summary["total"]["failures"] == 0, result.stderr
