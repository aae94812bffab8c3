"""Prometheus from Debian, optional. Scrape targets are files under `prometheus/targets/`,
which Prometheus re-reads on change: later components drop a JSON file there to be scraped."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from memstack.errors import MemstackError
from memstack.local.http_probe import http_ok
from memstack.local.processes import Launch
from memstack.local.service import ContainerSpec, LocalService

SCRAPE_INTERVAL = "5s"
TARGETS_DIR = Path("prometheus") / "targets"  # under the stack's home
# The kit's recording and alerting rules, evaluated locally as on Kubernetes (dashboards read
# the recording rules).
RULES_DIR = Path(__file__).resolve().parents[2] / "dashboards" / "alerts"


def register_target(home: Path, name: str, address: str, job: str | None = None) -> Path:
    """Have the stack's Prometheus scrape `address` (host:port, path /metrics) as `job`.

    Prometheus re-reads the directory on change, so this works whether it runs yet or not; the
    file is written whole and renamed, so Prometheus never reads half of it."""
    directory = home / TARGETS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [address], "labels": {"job": job or name}}]))
    os.replace(tmp, path)
    return path


def unregister_target(home: Path, name: str) -> None:
    (home / TARGETS_DIR / f"{name}.json").unlink(missing_ok=True)


def probe(url: str) -> bool:
    return http_ok(f"{url}/-/ready")


class PrometheusServer(LocalService):
    name = "prometheus"
    ready_timeout = 60.0

    @property
    def targets_dir(self):
        return self.home / TARGETS_DIR

    def check_prerequisites(self) -> None:
        if shutil.which("prometheus") is None:
            raise MemstackError(
                "prometheus not found on PATH; install it with `apt-get install prometheus` or run `make setup`"
            )

    def prepare(self, port: int) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "prometheus.yml").write_text(
            "\n".join(
                [
                    "global:",
                    f"  scrape_interval: {SCRAPE_INTERVAL}",
                    f"  evaluation_interval: {SCRAPE_INTERVAL}",
                    *(["rule_files:", f"  - '{RULES_DIR}/*.yaml'"] if RULES_DIR.is_dir() else []),
                    "scrape_configs:",
                    "  - job_name: memstack",
                    "    file_sd_configs:",
                    # Relative to this file, so the same config serves a process and a container.
                    "      - files: ['targets/*.json']",
                    "        refresh_interval: 5s",
                    "",
                ]
            )
        )

    def launch(self, port: int) -> Launch:
        return Launch(
            argv=[
                "prometheus",
                f"--config.file={self.data_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=2d",
            ],
            log=self.log,
            cwd=self.data_dir,
        )

    def probe(self, port: int) -> bool:
        return probe(self.url(port))

    def container_spec(self) -> ContainerSpec:
        return ContainerSpec(
            image="prom/prometheus:v2.53.0",
            port=9090,
            data_path="/prometheus",
            command=["--config.file=/etc/memstack/prometheus.yml", "--storage.tsdb.path=/prometheus"],
            files={str(self.data_dir): "/etc/memstack"},
        )

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"
