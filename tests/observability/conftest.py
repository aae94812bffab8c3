"""A memory service and a worker on the test stack, scraped by its Prometheus."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memory_core import migrate
from memstack import load as load_runner
from memstack.local.http_probe import http_ok
from memstack.local.processes import free_port

CLI = [sys.executable, "-c", "from memstack.cli import main; main()"]


@contextlib.contextmanager
def _service_and_worker(stack, workdir: Path, extra_env: dict[str, str] | None = None):
    """Run `memstack serve` and `memstack worker` on free ports (each registers itself as a scrape
    target of the stack's Prometheus); yields (service url, plain tokens file)."""
    asyncio.run(migrate(stack.endpoints.settings()))
    hashes, plain = load_runner.write_tokens(workdir, tenants=5)
    service_port, worker_port = free_port(), free_port()
    # MEMSTACK_HOME: `serve` and `worker` register themselves with that stack's Prometheus.
    env = {
        **os.environ,
        **stack.env(),
        "MEMSTACK_TOKENS_FILE": str(hashes),
        **(extra_env or {}),
        "MEMSTACK_HOME": str(stack.home or ""),
    }
    processes = []
    try:
        for name, argv in (
            ("service", ["serve", "--port", str(service_port), "--log-level", "warning"]),
            ("worker", ["worker", "--host", "127.0.0.1", "--port", str(worker_port)]),
        ):
            with open(workdir / f"{name}.log", "w") as log:  # the child keeps its own descriptor
                processes.append(subprocess.Popen(CLI + argv, env=env, stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{service_port}"
        load_runner.wait_ready(url, processes[0], workdir / "service.log")
        deadline = time.monotonic() + 60
        while not http_ok(f"http://127.0.0.1:{worker_port}/ready"):
            assert processes[1].poll() is None, (workdir / "worker.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the worker was not ready within 60 s"
            time.sleep(0.2)
        yield url, plain
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def service_and_worker():
    """`with service_and_worker(stack, workdir, extra_env) as (url, tokens_file):`"""
    return _service_and_worker


@pytest.fixture
def prometheus_url(stack) -> str:
    if stack.prometheus_url is None:
        pytest.fail("the stack has no Prometheus: run with the process backend (it starts one)")
    return stack.prometheus_url
