"""Prometheus exporters for the stores, from Debian: `prometheus-redis-exporter` and
`prometheus-postgres-exporter`. They run with Prometheus (`memstack up --with prometheus`),
each registered as a scrape target once it answers.

Credentials reach them through the environment, never the command line (`ps` shows that).
The Postgres exporter logs in as its own role with `pg_monitor`, not as the superuser.
"""

from __future__ import annotations

import os
import secrets
import shutil

import psycopg
from psycopg import sql

from memstack.errors import MemstackError
from memstack.local.http_probe import http_ok
from memstack.local.processes import Launch
from memstack.local.prometheus_server import register_target
from memstack.local.service import ContainerSpec, LocalService
from memstack.local.state import load

MONITOR_ROLE = "memstack_monitor"
# postgres_exporter's built-in queries have no replication lag; this one gives 0 on a primary,
# so the panel that shows it on Kubernetes (from CloudNativePG) has a series here too.
EXTRA_QUERIES = """\
pg_replication:
  master: true
  query: "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 ELSE GREATEST(0, EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())) END AS lag"
  metrics:
    - lag:
        usage: "GAUGE"
        description: "Replication lag behind the primary in seconds (0 on a primary)"
"""


def probe(url: str) -> bool:
    return http_ok(f"{url}/metrics")


class Exporter(LocalService):
    """An exporter of one store: started after that store, scraped at /metrics."""

    binary: str
    store: str
    ready_timeout = 20.0
    stop_timeout = 10.0

    def check_prerequisites(self) -> None:
        if shutil.which(self.binary) is None:
            raise MemstackError(
                f"{self.binary} not found on PATH; install it with `apt-get install {self.binary}` or run `make setup`"
            )

    def store_port(self) -> int:
        state = load(self.home)
        record = state.services.get(self.store) if state else None
        if record is None:
            raise MemstackError(f"{self.name} needs {self.store} running first; run `memstack up`")
        return record.port

    def probe(self, port: int) -> bool:
        return probe(self.url(port))

    def after_ready(self, port: int) -> None:
        register_target(self.home, self.name, f"127.0.0.1:{port}")

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def container_spec(self) -> ContainerSpec:
        # A container would reach the stores by the host's loopback addresses, which it cannot.
        raise MemstackError(f"{self.name} runs only with the process backend")


class RedisExporter(Exporter):
    name = "redis-exporter"
    binary = "prometheus-redis-exporter"
    store = "redis"

    def launch(self, port: int) -> Launch:
        return Launch(
            argv=[
                self.binary,
                f"--redis.addr=redis://127.0.0.1:{self.store_port()}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            env={**os.environ, "REDIS_PASSWORD": self.credentials.redis_password},
            log=self.log,
        )


class PostgresExporter(Exporter):
    name = "postgres-exporter"
    binary = "prometheus-postgres-exporter"
    store = "postgres"

    @property
    def password_file(self):
        return self.data_dir / "monitor.pw"

    def _monitor_password(self) -> str:
        """The monitoring role's password, made once per home and kept in a 0600 file."""
        if self.password_file.exists():
            return self.password_file.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        return password

    def prepare(self, port: int) -> None:
        from memstack.local.postgres_server import admin_url

        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "queries.yaml").write_text(EXTRA_QUERIES)
        password = self._monitor_password()
        with psycopg.connect(admin_url(self.store_port(), self.credentials, "postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (MONITOR_ROLE,)).fetchone()
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN NOSUPERUSER PASSWORD {}").format(
                    sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(MONITOR_ROLE), sql.Literal(password)
                )
            )
            conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(MONITOR_ROLE)))

    def _dsn(self) -> str:
        from memstack.local.postgres_server import APP_DATABASE

        return (
            f"postgresql://{MONITOR_ROLE}:{self._monitor_password()}@127.0.0.1:{self.store_port()}"
            f"/{APP_DATABASE}?sslmode=disable"
        )

    def launch(self, port: int) -> Launch:
        return Launch(
            argv=[
                self.binary,
                f"--web.listen-address=127.0.0.1:{port}",
                f"--extend.query-path={self.data_dir / 'queries.yaml'}",
            ],
            env={**os.environ, "DATA_SOURCE_NAME": self._dsn()},
            log=self.log,
        )


EXPORTERS = (RedisExporter, PostgresExporter)
