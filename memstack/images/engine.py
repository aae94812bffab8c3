"""A Docker engine for the container suites: the one that answers, or Debian's docker.io started
here when the run is root (CI machines have none running). Never fails: without an engine the
reason is returned, and the container tests skip with it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

DOCKERD_LOG = Path("/var/log/memstack-dockerd.log")
# Debian packages: the engine, and the tools the local images are built with.
PACKAGES = ("docker.io", "debootstrap", "iptables")


def answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def _apt_install(packages: list[str]) -> str | None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:]
            return f"`{' '.join(command[:2])}` failed: {' '.join(last)}"
    return None


def ensure_engine(timeout_s: float = 90.0) -> tuple[bool, str]:
    """(True, how) when an engine answers, started here if needed; (False, why) otherwise."""
    if answers():
        return True, "a Docker engine answers"
    if os.geteuid() != 0:
        return False, "no Docker engine answers and starting one needs root"
    missing = [p for p, binary in zip(PACKAGES, ("dockerd", "debootstrap", "iptables")) if shutil.which(binary) is None]
    if missing:
        if shutil.which("apt-get") is None:
            return False, f"no Docker engine answers and there is no apt-get to install {', '.join(missing)}"
        failure = _apt_install(missing)
        if failure:
            return False, failure
    with open(DOCKERD_LOG, "ab") as log:
        # Its own session: the engine outlives this command, as a service would.
        subprocess.Popen(
            ["dockerd"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answers():
            return True, f"started dockerd (log {DOCKERD_LOG})"
        time.sleep(0.5)
    tail = DOCKERD_LOG.read_text(errors="replace").strip().splitlines()[-1:]
    return False, f"dockerd did not answer within {timeout_s:.0f}s: {' '.join(tail)}"
