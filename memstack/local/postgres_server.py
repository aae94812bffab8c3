"""PostgreSQL 16 with pgvector, from the binaries the `pgserver` wheel ships.

Two roles: `postgres`, the superuser, used only here to create the database and the
`vector` extension (pgvector is not a trusted extension); and `memstack`, an ordinary role
that owns the `memstack` database. POSTGRES_URL names `memstack`, so row-level security
applies to the application as it does in Kubernetes, where CloudNativePG's `app` user
is likewise a non-superuser owner.
"""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from memstack.errors import MemstackError
from memstack.local.processes import Launch
from memstack.local.service import ContainerSpec, LocalService
from memstack.local.state import Credentials

APP_ROLE = "memstack"
APP_DATABASE = "memstack"
ADMIN_ROLE = "postgres"
# Postgres refuses to run as root; when we are root it runs as this system user.
SYSTEM_USER = "memstack"


def bin_dir() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise MemstackError("the pgserver package is not installed; run `make setup` (pip install 'memstack[local]')")
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise MemstackError(f"pgserver is installed but has no postgres binary at {path}")
    return path


def app_url(port: int, credentials: Credentials, host: str = "127.0.0.1") -> str:
    return f"postgresql://{APP_ROLE}:{credentials.postgres_password}@{host}:{port}/{APP_DATABASE}"


def admin_url(port: int, credentials: Credentials, dbname: str = APP_DATABASE, host: str = "127.0.0.1") -> str:
    return f"postgresql://{ADMIN_ROLE}:{credentials.postgres_admin_password}@{host}:{port}/{dbname}"


def probe(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def bootstrap(port: int, credentials: Credentials, host: str = "127.0.0.1") -> None:
    """Create (or re-password) the application role, its database, and the vector extension."""
    with psycopg.connect(admin_url(port, credentials, "postgres", host), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEROLE PASSWORD {}").format(
                sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(APP_ROLE), sql.Literal(credentials.postgres_password)
            )
        )
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(APP_DATABASE), sql.Identifier(APP_ROLE)))
    with psycopg.connect(admin_url(port, credentials, APP_DATABASE, host), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def _ensure_system_user() -> str:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


class PostgresServer(LocalService):
    name = "postgres"
    ready_timeout = 60.0
    # SIGINT is Postgres' "fast" shutdown; SIGTERM would wait for every client to leave.
    stop_signal = signal.SIGINT

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "data"

    @property
    def run_as(self) -> str | None:
        return _ensure_system_user() if os.geteuid() == 0 else None

    def check_prerequisites(self) -> None:
        bin_dir()

    def _chown(self, path: Path) -> None:
        user = self.run_as
        if user:
            for p in [path, *path.rglob("*")]:
                shutil.chown(p, user, user)

    def prepare(self, port: int) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The log directory is shared with other services; the postgres user only writes its own file.
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        pwfile = self.data_dir / "initdb.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.credentials.postgres_admin_password + "\n")
        self._chown(self.data_dir)
        self._chown(self.log)
        try:
            result = subprocess.run(
                [
                    str(bin_dir() / "initdb"),
                    "-D", str(self.pgdata),
                    "-U", ADMIN_ROLE,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                capture_output=True,
                text=True,
                user=self.run_as,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            last = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise MemstackError(f"postgres initdb failed: {' '.join(last)}")

    def launch(self, port: int) -> Launch:
        return Launch(
            argv=[
                str(bin_dir() / "postgres"),
                "-D", str(self.pgdata),
                "-p", str(port),
                "-c", "listen_addresses=127.0.0.1",
                # No Unix socket: every client, tests included, goes through TCP and a password.
                "-c", "unix_socket_directories=",
                "-c", "shared_buffers=256MB",
                "-c", "max_connections=200",
                "-c", "logging_collector=off",
            ],
            log=self.log,
            cwd=self.data_dir,
            user=self.run_as,
        )

    def probe(self, port: int) -> bool:
        return probe(admin_url(port, self.credentials, "postgres"))

    def after_ready(self, port: int) -> None:
        bootstrap(port, self.credentials)

    def url(self, port: int) -> str:
        return app_url(port, self.credentials)

    def container_spec(self) -> ContainerSpec:
        return ContainerSpec(
            image="pgvector/pgvector:pg16",
            port=5432,
            data_path="/var/lib/postgresql/data",
            env={"POSTGRES_USER": ADMIN_ROLE, "POSTGRES_PASSWORD": self.credentials.postgres_admin_password, "POSTGRES_DB": "postgres"},
        )
